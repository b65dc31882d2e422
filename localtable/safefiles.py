"""Files someone else may have made: read them bounded, write and delete without links.

A run record, a batch folder, a lock file, a questions file, models.toml,
models.lock and a GGUF header are untrusted input: records and batches are
shared, and a folder may come from a tarball. So every reader of such a file
goes through `read_bounded`: it opens without blocking (a FIFO never hangs
the open), takes only a regular file (never a device such as /dev/zero or a
FIFO), and reads at most a byte limit. `check_depth` bounds the nesting of
JSON or TOML before a recursive parser sees it (100,000 brackets would be a
RecursionError). Where localtable deletes or renames a folder, `check_inside`
makes sure that it is a real folder inside its root, reached without a
symbolic link; lock files and written files are opened with O_NOFOLLOW.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import zlib
from itertools import accumulate
from pathlib import Path

# Deeper than any file localtable writes (a record nests about 8 levels), far below
# the recursion limit of json, tomllib and pydantic.
MAX_DEPTH = 64
MiB = 1 << 20

# What a bracket inside does not nest: JSON strings; TOML strings and comments. (The
# escapes are matched unrolled, "[^"\\]*(?:\\.[^"\\]*)*", which re runs twice as fast.)
_JSON_TEXT = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_TOML_TEXT = re.compile(
    r'"""[\s\S]*?(?:"""|$)|\'\'\'[\s\S]*?(?:\'\'\'|$)|"[^"\\\n]*(?:\\.[^"\\\n]*)*"'
    r"|'[^'\n]*'|#[^\n]*"
)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class FileRefused(ValueError):
    """A file is not what its reader takes: not a regular file, too big, nested too
    deep, or a link where localtable writes. The message says which, without the path."""


def kind_of(mode: int) -> str:
    """A file type in words: 'a FIFO', 'a device', 'a folder', ..."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def open_regular(path: Path, flags: int = os.O_RDONLY) -> int:
    """An fd on `path` if it is a regular file (a link to one is followed: reading through
    it changes nothing; with O_NOFOLLOW in `flags` a link is refused). Never blocks on a
    FIFO; raises FileRefused for anything else, OSError as open() does."""
    # before opening: some devices act when opened
    mode = (os.lstat if flags & os.O_NOFOLLOW else os.stat)(path).st_mode
    if not stat.S_ISREG(mode):
        raise FileRefused(f"is {kind_of(mode)}, not a regular file")
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode  # what was opened, if it changed since
        if not stat.S_ISREG(mode):
            raise FileRefused(f"is {kind_of(mode)}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bounded(path: Path, limit: int, *, follow_links: bool = True) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. Raises FileRefused (not a
    regular file, too big; a symbolic link, with follow_links=False) or OSError
    (missing, no permission, a link loop)."""
    fd = open_regular(path, os.O_RDONLY if follow_links else os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        if os.fstat(fd).st_size > limit:
            raise FileRefused(f"is larger than {_size(limit)}, the most localtable reads")
        data = fh.read(limit + 1)  # a file that grows while it is read stops here too
    if len(data) > limit:
        raise FileRefused(f"is larger than {_size(limit)}, the most localtable reads")
    return data


def gunzip_bounded(data: bytes, limit: int) -> bytes:
    """The content of one gzip member of at most `limit` bytes (decompressed no further
    than that: a small file that would inflate to gigabytes stops there). Raises
    FileRefused (too big, not gzip, cut short, or more after it)."""
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # a gzip header and trailer
    try:
        out = inflate.decompress(data, limit + 1)
    except zlib.error as exc:
        raise FileRefused(f"is not gzip data ({exc})") from None
    if len(out) > limit or inflate.unconsumed_tail:
        raise FileRefused(f"decompresses to more than {_size(limit)}, the most localtable reads")
    if not inflate.eof or inflate.unused_data:
        raise FileRefused("is not one whole gzip member (cut short, or more data after it)")
    return out


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB else f"{n:,} bytes"


def check_depth(text: str, *, toml: bool = False, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON (or TOML) nested deeper than `limit` brackets, before a recursive
    parser sees it. Brackets inside strings (and TOML comments) do not count.

    All in the re module's C loops (a 170 MB batch index takes about 2 s, its parse 1 s): the
    strings go, then all but the brackets, and the deepest running sum is the depth. A
    stray closing bracket is never subtracted in a way that hides depth from the
    parser: the parser stops at it, before anything after it nests."""
    brackets = _NOT_BRACKET.sub("", (_TOML_TEXT if toml else _JSON_TEXT).sub("", text))
    if len(brackets) > limit and max(accumulate(map(_STEP.__getitem__, brackets))) > limit:
        raise FileRefused(f"nests deeper than {limit} levels")


# -- writing and deleting --------------------------------------------------------


def check_inside(path: Path, root: Path, what: str) -> None:
    """Refuse `path` unless it lies inside `root` through real folders, and is not itself
    a symbolic link: deleting or renaming it must never reach outside `root`."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise FileRefused(f"{what} {path}: {exc.strerror}") from None
    if mode is not None and stat.S_ISLNK(mode):
        raise FileRefused(
            f"{what} {path} is a symbolic link; localtable never writes or deletes through "
            f"one: remove the link (rm {path})"
        )
    real_root = root.resolve()
    parent = path.parent.resolve()
    if parent != real_root and not parent.is_relative_to(real_root):
        raise FileRefused(
            f"{what} {path} leads outside {root} (to {parent / path.name}) through a "
            "symbolic link; remove the link"
        )


def check_real_folder(path: Path, what: str) -> None:
    """Refuse a `path` that is there but is a symbolic link or not a folder."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise FileRefused(f"{what} {path}: {exc.strerror}") from None
    if stat.S_ISLNK(mode):
        raise FileRefused(
            f"{what} {path} is a symbolic link; localtable never writes or deletes through "
            f"one: remove the link (rm {path})"
        )
    if not stat.S_ISDIR(mode):
        raise FileRefused(f"{what} {path} is {kind_of(mode)}, not a folder; remove it")


def remove_tree(path: Path, root: Path, what: str) -> None:
    """Delete the folder `path` inside `root`, and nothing reached through a link: a link
    on the way is refused, links inside are removed as links (shutil.rmtree's fd walk)."""
    check_inside(path, root, what)
    if os.path.lexists(path):
        shutil.rmtree(path)


def refuse_special_target(path: Path) -> None:
    """Refuse to replace a `path` that is there but is not a regular file (a link, a
    FIFO, a device, a folder): localtable writes only its own regular files."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise FileRefused(f"is {kind_of(mode)}, not a regular file; remove it first")
