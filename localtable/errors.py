"""The one exception type whose message is written for the user.

The CLI turns a LocaltableError into a one-line message and its exit code;
anything else is a bug and keeps its traceback. Exit codes (docs/commands.md): 1 a
run failed, 2 the input was refused (usage, config, model file, record), 129/130/143
stopped by SIGHUP/SIGINT/SIGTERM.
"""

import errno


class LocaltableError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""

    exit_code = 1


class ConfigError(LocaltableError):
    """Bad models.toml, bad arguments, unknown panel or model: a usage error."""

    exit_code = 2


class ModelFileError(LocaltableError):
    """A model file is missing, corrupt, or does not match what was pinned."""

    exit_code = 2


class RecordError(LocaltableError):
    """A run record or batch index is missing, unreadable or invalid: bad input."""

    exit_code = 2


class RecordWriteError(RecordError):
    """A run record or batch index cannot be written: the run cannot go on."""

    exit_code = 1


def describe_write_error(exc: OSError) -> str:
    """Why a write failed, in words that point at the fix: a read-only folder is not a
    full disk."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"the disk is full ({exc.strerror})"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied or read-only file system ({exc.strerror})"
    return exc.strerror or str(exc)


def disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
