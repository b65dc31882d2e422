"""The one exception type whose message is written for the user.

The CLI turns a LocaltableError into a one-line message and its exit code;
anything else is a bug and keeps its traceback.
"""


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
    """A run record cannot be read or written."""

    exit_code = 1
