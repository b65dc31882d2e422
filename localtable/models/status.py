"""`localtable models`: where each model of models.toml is and whether it is intact.

States: missing (not installed, not pulled, or the file is gone), present (the
file is there with the expected size), verified (re-hashed in full and it
matches its pin; only with verify), mismatch (wrong size, wrong sha256 or a
broken GGUF header; for a server, another model or build than models.toml
expects). A model on a llama-server is up or down, as the probe the caller
passes finds it (the server backend asks /health and /props), else unchecked.
Nothing here touches the network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from localtable.config import (
    HubSource,
    LoadedConfig,
    ModelSpec,
    PackageSource,
    PathSource,
    ServerSource,
)
from localtable.errors import ConfigError, ModelFileError
from localtable.models import hub
from localtable.models.files import locate, resolve
from localtable.models.local import LocatedFile
from localtable.models.lock import read_lock

State = Literal["missing", "present", "verified", "mismatch", "up", "down", "unchecked"]


class ModelStatus(BaseModel):
    """One line of `localtable models`."""

    model_config = ConfigDict(frozen=True)
    name: str
    kind: Literal["package", "path", "hf", "server"]
    source: str  # "hf <repo> <file>", "path <path>", "package <name>[, ...]" or "server <url>"
    revision: str | None = None  # hf: the revision models.toml asks for
    commit: str | None = None  # hf: the commit models.lock pins
    path: str | None = None  # the file llama.cpp loads, once located
    size: int | None = None
    sha256: str | None = None  # first 12 hex digits
    state: State
    detail: str = ""


def _base(name: str, loaded: LoadedConfig) -> ModelStatus:
    if name not in loaded.config.models:
        raise ConfigError(
            f"unknown model {name!r}: {loaded.path} defines "
            f"{', '.join(sorted(loaded.config.models))}"
        )
    spec = loaded.config.models[name]
    source = spec.source
    short = spec.sha256[:12] if spec.sha256 else None
    if isinstance(source, HubSource):
        entry = read_lock(loaded).get(name)
        pinned = entry is not None and entry.matches(source)
        return ModelStatus(
            name=name, kind="hf", source=f"hf {source.repo} {source.file}",
            revision=source.revision, commit=entry.commit if entry and pinned else None,
            size=entry.size if entry and pinned else None,
            sha256=entry.sha256[:12] if entry and pinned else None, state="missing",
        )  # fmt: skip
    if isinstance(source, PathSource):
        return ModelStatus(name=name, kind="path", source=f"path {source.path}", size=spec.size,
                           sha256=short, state="missing")  # fmt: skip
    assert isinstance(source, PackageSource)
    packages = ", ".join(sorted({p.package for p in source.pieces()}))
    return ModelStatus(name=name, kind="package", source=f"package {packages}", size=spec.size,
                       sha256=short, state="missing")  # fmt: skip


def _update(status: ModelStatus, state: State, detail: str, **fields: object) -> ModelStatus:
    return status.model_copy(update={"state": state, "detail": detail, **fields})


ServerProbe = Callable[[str, ModelSpec], ModelStatus]


def model_status(
    name: str, loaded: LoadedConfig, *, verify: bool = False, probe: ServerProbe | None = None
) -> ModelStatus:
    """Locate one model and check it: sizes only, or every byte with verify."""
    spec = loaded.config.models.get(name)
    if spec is not None and isinstance(spec.source, ServerSource):
        if probe is not None:
            return probe(name, spec)
        return ModelStatus(name=name, kind="server", source=f"server {spec.source.url}",
                           state="unchecked")  # fmt: skip
    status = _base(name, loaded)
    spec = loaded.config.models[name]
    try:
        if isinstance(spec.source, HubSource):
            found: LocatedFile = hub.locate_pulled(name, spec.source, loaded, verify=verify)
        else:
            found = locate(name, spec, loaded)
    except hub.PulledFileMismatch as exc:
        return _update(status, "mismatch", str(exc))
    except ModelFileError as exc:
        return _update(status, "missing", str(exc))
    path = found.path
    status = status.model_copy(update={"path": str(path)})
    if not path.is_file():
        return _update(status, "missing", f"model {name!r}: file {path} is missing")
    size = path.stat().st_size
    if found.size is not None and size != found.size:
        return _update(
            status, "mismatch", f"model {name!r}: {path} has {size:,} bytes, expected "
            f"{found.size:,}; restore, re-install or re-pull it", size=size,
        )  # fmt: skip
    if not verify:
        return _update(status, "present", "", size=size)
    try:
        resolved = resolve(name, loaded, verify=True)
    except ModelFileError as exc:
        return _update(status, "mismatch", str(exc), size=size)
    if found.sha256 is None:
        return _update(status, "present", "no sha256 pinned in models.toml to compare with",
                       size=resolved.size, sha256=resolved.sha256[:12])  # fmt: skip
    return _update(status, "verified", "",
                   size=resolved.size, sha256=resolved.sha256[:12])  # fmt: skip


def model_statuses(
    loaded: LoadedConfig, *, verify: bool = False, probe: ServerProbe | None = None
) -> list[ModelStatus]:
    """model_status for every model of models.toml, in file order."""
    return [model_status(name, loaded, verify=verify, probe=probe) for name in loaded.config.models]
