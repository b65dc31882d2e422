"""One process per run, and per batch: an OS file lock held for the work's whole life.

A process that writes a run folder (debate, resume, replay) or a batch folder
(batch) holds an exclusive flock on `<folder>/.lock` until it ends. The kernel
releases the lock when the process dies, however it dies (SIGKILL included),
so a record marked `running` whose lock is free belongs to a process that is
gone: `localtable runs` shows it as interrupted. A second process asking for a
held lock is refused with one line naming the holder (its pid and command
line, which the holder writes into the lock file).

A batch's run folders lie inside the batch folder, each with its own lock
file, so the batch holding its lock can still lock each of its runs.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shlex
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from localtable.errors import ConfigError, RecordError, RecordWriteError, describe_write_error
from localtable.safefiles import FileRefused, check_real_folder, kind_of

LOCK_FILE = ".lock"
# lock_holder() takes the lock for a moment to test it; a process starting just then
# tries again for this long before it gives up.
WAIT_SECONDS = 1.0
HOLDER_CHARS = 200


class RunLocked(ConfigError):
    """Another living process is working on this run or batch."""


def _command_line() -> str:
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program in ("__main__.py", "localtable", "-m", "-c"):
        program = "localtable"
    text = shlex.join([program, *sys.argv[1:]])
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= HOLDER_CHARS else text[: HOLDER_CHARS - 3] + "..."


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4 * HOLDER_CHARS, 0).decode("utf-8", errors="replace").strip()
    except OSError:
        return ""
    return "".join(c if c.isprintable() else "?" for c in text)


@contextmanager
def hold(folder: Path, what: str) -> Iterator[None]:
    """Hold `<folder>/.lock` exclusively while the block runs; refuse if someone else does.

    `what` names the folder in the refusal, e.g. "run 20261126-101500-a1b2c3".
    """
    path = folder / LOCK_FILE
    fd = _open_lock(folder, path)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(fd) or "another process"
                    raise RunLocked(
                        f"{what} is in use by {holder}; wait for it to end, or stop that "
                        "process first (its lock goes with it)"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({_command_line()})\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # still ours: nobody reads a stale holder
    finally:
        os.close(fd)  # releases the lock


def _open_lock(folder: Path, path: Path) -> int:
    """The lock file, opened for writing: a regular file of its own, never a link (its
    target would be truncated), a FIFO (the open would hang) or a device. A run or batch
    folder that is itself a link is refused too: its records would land where it points."""
    try:
        check_real_folder(folder, "the folder")
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666
        )
    except FileRefused as exc:
        raise RecordError(f"cannot lock {path}: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RecordError(
                f"cannot lock {path}: it is a symbolic link; localtable never writes through "
                f"one: remove it (rm {path})"
            ) from None
        raise RecordWriteError(f"cannot lock {path}: {describe_write_error(exc)}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        what = kind_of(st.st_mode) if not stat.S_ISREG(st.st_mode) else "a hard link"
        raise RecordError(
            f"cannot lock {path}: it is {what}, not a lock file of its own; remove it (rm {path})"
        )
    return fd


def lock_holder(folder: Path) -> str | None:
    """Who holds `<folder>/.lock` now ("pid N (command)"), or None when nobody does.

    Never creates the file: works on a folder this user cannot write. A lock file that
    is a link, a FIFO or a device is nobody's lock (and never hangs the listing).
    """
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd) or "another process"
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
