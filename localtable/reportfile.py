"""A report written to a file (--output): checked before a debate runs, written safely.

A debate checks its --output before it runs, so the run is never lost to a path
the report cannot go to. A report written over one of localtable's own files
would destroy a run, a batch or a lock, and a new file by one of their names would
pass for one: such a path is refused, the record being rendered included under any
name.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from localtable.errors import ConfigError, LocaltableError, describe_write_error
from localtable.record import RECORD_FILE
from localtable.research.batchindex import INDEX_FILE
from localtable.runlock import LOCK_FILE

OWN_FILES = frozenset({RECORD_FILE, INDEX_FILE, LOCK_FILE})


def check_output(output: Path | None, *records: Path) -> None:
    """Refuse an --output that cannot be written, or that is one of localtable's own
    files (a run record, one of `records` under any name, a batch index, a lock).
    None (no --output: stdout) is always fine."""
    if output is None:
        return
    if output.is_symlink():
        raise ConfigError(f"--output {output} is a symbolic link; give the file itself")
    # A new file by one of these names is refused too: a report called batch.json or
    # record.json in a folder makes localtable read that folder as a batch or a run.
    if output.name in OWN_FILES or (
        output.exists() and any(r.exists() and os.path.samefile(output, r) for r in records)
    ):
        raise ConfigError(
            f"--output {output} is localtable's own {output.name}; writing a report "
            "there would destroy it or pass for it: give another file name"
        )
    if output.exists():
        if output.is_dir():
            raise ConfigError(f"--output {output} is a folder; give a file name in it")
        if not output.is_file() and str(output) != os.devnull:
            raise ConfigError(f"--output {output} is not a regular file; give a file name")
    folder = output.parent
    if not folder.is_dir():
        missing = "is not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"--output {output}: the folder {folder} {missing}; create it first")
    if not os.access(folder if not output.exists() else output, os.W_OK):
        raise ConfigError(f"--output {output}: permission denied; give a path you can write")


def write_report_file(text: str, output: Path, *records: Path) -> None:
    """Check `output` again, then write the report: never through a link that appeared
    since the check, never blocked by a FIFO."""
    check_output(output, *records)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(output, flags, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {describe_write_error(exc)}") from None


def report_not_written(
    exc: LocaltableError, run_dir: Path, run_id: str, how: list[str]
) -> LocaltableError:
    """A finished run whose report could not be written is saved all the same: the error,
    with its exit code, saying so and how to write the report later (`how`: render's
    options)."""
    again = shlex.join(["localtable", "render", str(run_dir), *how])
    error = LocaltableError(f"{exc}; the run is saved ({run_id}): `{again}` writes its report")
    error.exit_code = exc.exit_code
    return error
