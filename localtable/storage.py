"""Files localtable writes and reads back: atomic replacement and versioned JSON.

Every file the runs depend on (a run record, a batch index, models.lock, the
hash cache) is replaced atomically: written to a temporary file in the same
folder, flushed, then renamed over the old one, so a crash, Ctrl-C or a full
disk leaves the previous version intact. Versioned files (record, index,
lock) are read through one function that refuses a version it does not know
with a message that says so, instead of guessing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from localtable.errors import describe_write_error, disk_full
from localtable.safefiles import (
    FileRefused,
    check_depth,
    gunzip_bounded,
    read_bounded,
    refuse_special_target,
)

M = TypeVar("M", bound=BaseModel)


class StorageError(Exception):
    """A file could not be written or read; the message names the file and the cause."""

    def __init__(self, message: str, *, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` atomically; the file is readable as the umask allows
    (records are meant to be shared, so not mkstemp's private 0600).

    The temporary file is created new (O_EXCL, never through a link), and a `path` that
    is there as a link, a FIFO or a device is refused, not replaced.
    Raises StorageError naming the cause: a read-only folder is not a full disk."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        refuse_special_target(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~_umask())  # the file made here, whatever the name
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except FileRefused as exc:
        raise StorageError(f"cannot write {path}: it {exc}") from None
    except OSError as exc:
        message = f"cannot write {path}: {describe_write_error(exc)}"
        raise StorageError(message, disk_full=disk_full(exc)) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def temp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temps(path: Path) -> None:
    """Delete the temporary files that write_atomic left beside `path` when its process
    was killed mid-write. Call it only while no other process writes `path` (its run's
    lock held). unlink never follows a link: a link named so is removed, not its target."""
    prefix = temp_prefix(path)
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix) and name.endswith(".tmp"):
            stale = path.parent / name
            if not stale.is_dir() or stale.is_symlink():
                stale.unlink(missing_ok=True)


def read_json(path: Path, limit: int, *, follow_links: bool = True, gzipped: bool = False) -> Any:
    """A JSON file of at most `limit` bytes (gzipped: that much once decompressed), nested
    at most MAX_DEPTH levels. Raises FileRefused, OSError, or ValueError (not UTF-8, not
    JSON)."""
    data = read_bounded(path, limit, follow_links=follow_links)
    text = (gunzip_bounded(data, limit) if gzipped else data).decode("utf-8")
    check_depth(text)
    return json.loads(text)


def read_versioned(
    path: Path,
    *,
    what: str,
    version_key: str,
    label: str | None = None,
    limit: int,
    readers: dict[int, Callable[[dict[str, object]], M]],
    follow_links: bool = True,
    gzipped: bool = False,
) -> M:
    """Read a JSON file of at most `limit` bytes whose `version_key` picks the reader
    (each turns its version into the current model). Raises StorageError with one line
    naming the problem."""
    try:
        raw = read_json(path, limit, follow_links=follow_links, gzipped=gzipped)
    except FileNotFoundError:
        raise StorageError(f"{path}: no {what} here") from None
    except FileRefused as exc:
        raise StorageError(f"{path}: unreadable {what}: it {exc}") from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StorageError(f"{path}: unreadable {what} ({reason})") from None
    version = raw.get(version_key) if isinstance(raw, dict) else None
    reader = readers.get(version) if isinstance(version, int) else None
    if reader is None:
        versions = [str(v) for v in sorted(readers)]
        known = " and ".join(
            [", ".join(versions[:-1]), versions[-1]] if versions[:-1] else versions
        )
        label = label or version_key
        raise StorageError(
            f"{path}: {what} {label} {version!r} is not supported by this localtable "
            f"(it reads {label} {known}); use the localtable version that wrote it"
        )
    try:
        return reader(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise StorageError(f"{path}: invalid {what} at {where}: {first['msg']}") from None
    except (TypeError, KeyError, AttributeError, IndexError, ValueError) as exc:
        # an older version's upgrade met a field of the wrong shape: the file is shared
        # input, so this is a bad file, not a bug
        label = label or version_key
        raise StorageError(
            f"{path}: invalid {what}: not the shape of {label} {version} "
            f"({type(exc).__name__}: {exc})"
        ) from None
