"""models.lock: what `localtable pull` fetched from the Hub, pinned to a commit and hashes.

The lock sits next to models.toml and is JSON (UTF-8, sorted keys, 2-space
indent, models sorted by name), so it diffs well and can be committed:

    {
      "lock_version": 1,
      "models": [
        {
          "commit": "<40-hex commit the revision resolved to>",
          "file": "<file as written in models.toml>",
          "files": [{"path": "<file in the repo>", "sha256": "<64 hex>", "size": 123}],
          "name": "<model key in models.toml>",
          "repo": "<org/name>",
          "revision": "<revision as written in models.toml>"
        }
      ]
    }

`files` has one entry, or every shard of a split GGUF (name-00001-of-0000N.gguf)
in order, each with its own size and sha256. The model's size and sha256 are
those of files[0], the file llama.cpp is given. A lock with another
lock_version is refused rather than guessed at.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from localtable.config import LoadedConfig
from localtable.errors import ConfigError, ModelFileError
from localtable.models.sources import HubSource
from localtable.storage import StorageError, read_versioned, write_atomic

LOCK_VERSION = 1
LOCK_FILE = "models.lock"

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Commit = Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LockedFile(_Strict):
    """One file of a pulled model, as verified after download."""

    path: str = Field(description="path of the file inside the repository")
    size: int = Field(ge=0)
    sha256: Sha256


class LockedModel(_Strict):
    """A Hub model pinned by `localtable pull`."""

    name: str
    repo: str
    file: str
    revision: str = Field(description="the revision models.toml asked for (branch, tag or commit)")
    commit: Commit = Field(description="the commit that revision pointed to when pulled")
    files: list[LockedFile] = Field(min_length=1)

    @property
    def sha256(self) -> str:
        return self.files[0].sha256

    @property
    def size(self) -> int:
        return self.files[0].size

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def matches(self, source: HubSource) -> bool:
        """Whether this pin was made for what models.toml asks for now."""
        return (self.repo, self.file, self.revision) == (source.repo, source.file, source.revision)


class LockFile(_Strict):
    lock_version: Literal[1] = 1
    models: list[LockedModel] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> LockFile:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"a model is listed twice: {sorted(names)}")
        return self

    def get(self, name: str) -> LockedModel | None:
        return next((m for m in self.models if m.name == name), None)

    def with_model(self, model: LockedModel) -> LockFile:
        """A copy with `model` added, replacing any entry of the same name."""
        others = [m for m in self.models if m.name != model.name]
        return LockFile(models=sorted([*others, model], key=lambda m: m.name))


LOCK_MAX_BYTES = 16 << 20  # a lock of thousands of models is well under 1 MiB


def lock_path(loaded: LoadedConfig) -> Path:
    return loaded.path.parent / LOCK_FILE


def read_lock(loaded: LoadedConfig) -> LockFile:
    """The lock next to models.toml; an empty one if nothing was pulled yet."""
    path = lock_path(loaded)
    if not path.exists():
        return LockFile()
    try:
        return read_versioned(
            path,
            what="lock file",
            version_key="lock_version",
            limit=LOCK_MAX_BYTES,
            readers={LOCK_VERSION: LockFile.model_validate},
        )
    except StorageError as exc:
        raise ConfigError(
            f"{exc}; delete it and run `localtable pull` again (config: {loaded.path})"
        ) from None


def lock_text(lock: LockFile) -> str:
    """The canonical text of a lock: sorted keys, 2-space indent, a final newline."""
    return json.dumps(lock.model_dump(mode="json"), sort_keys=True, indent=2) + "\n"


def write_lock(loaded: LoadedConfig, lock: LockFile) -> Path:
    """Replace models.lock atomically: a failure leaves the previous lock intact."""
    path = lock_path(loaded)
    try:
        write_atomic(path, lock_text(lock).encode("utf-8"))
    except StorageError as exc:
        raise ModelFileError(
            f"{exc}; the folder of models.toml must be writable (or copy models.toml "
            "elsewhere and pass --config)"
        ) from None
    return path


def record_pull(loaded: LoadedConfig, model: LockedModel) -> Path:
    """Merge one freshly pulled model into the lock (re-read just before writing)."""
    return write_lock(loaded, read_lock(loaded).with_model(model))
