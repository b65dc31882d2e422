"""Paths from URLs, confined to the runs folder: a name is one plain folder name, and no
step of the way is a symbolic link (a shared runs folder may hold any)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from localtable.errors import ConfigError

# a run id, a batch name or a run folder in a batch: no separators, no leading dot
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")


class OutsideRuns(ConfigError):
    """A path that is not a plain folder under --runs-dir."""


def confined(runs_dir: Path, *names: str) -> Path:
    """runs_dir/names..., each a plain name of a real folder (never a link)."""
    path = runs_dir
    for name in names:
        if not NAME.fullmatch(name):
            raise OutsideRuns(f"{name!r} is not a run or batch name")
        path = path / name
        try:
            mode = path.lstat().st_mode
        except OSError:
            raise OutsideRuns(f"no run or batch {'/'.join(names)!r}") from None
        if not stat.S_ISDIR(mode):  # a symbolic link is not followed
            raise OutsideRuns(f"{'/'.join(names)!r} is not a run or batch folder")
    return path
