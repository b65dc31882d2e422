"""`localtable models` for the file sources (package, path, hf): where each model's
file is and whether it is intact. The llama.cpp backend registers file_status for
them (backends/__init__.py), so listing them never imports the engine; other
kinds answer through their own backend (backends/status.py).

States: missing (not installed, not pulled, or the file is gone), present (the
file is there with the expected size), verified (re-hashed in full and it
matches its pin; only with verify), mismatch (wrong size, wrong sha256 or a
broken GGUF header). A backend's own kinds may add theirs (a server: up, down,
or mismatch for another model or build than models.toml expects), or leave a
model unchecked. Nothing here touches the network.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from localtable.config import LoadedConfig, ModelSpec
from localtable.errors import ModelFileError
from localtable.models.files import locate, resolve
from localtable.models.local import LocatedFile
from localtable.models.lock import read_lock
from localtable.models.sources import HubSource

State = Literal["missing", "present", "verified", "mismatch", "up", "down", "unchecked"]


class ModelStatus(BaseModel):
    """One line of `localtable models`."""

    model_config = ConfigDict(frozen=True)
    name: str
    kind: str  # the source kind
    source: str  # Source.label(): "hf <repo> <file>", "path <path>", "server <url>", ...
    revision: str | None = None  # hf: the revision models.toml asks for
    commit: str | None = None  # hf: the commit models.lock pins
    path: str | None = None  # the file the backend loads, once located
    size: int | None = None
    sha256: str | None = None  # first 12 hex digits
    state: State
    detail: str = ""


def _base(name: str, spec: ModelSpec, loaded: LoadedConfig) -> ModelStatus:
    source = spec.source
    short = spec.sha256[:12] if spec.sha256 else None
    status = ModelStatus(name=name, kind=source.kind, source=source.label(), size=spec.size,
                         sha256=short, state="missing")  # fmt: skip
    if not isinstance(source, HubSource):
        return status
    entry = read_lock(loaded).get(name)
    if entry is None or not entry.matches(source):  # not pulled: nothing known yet
        return status.model_copy(update={"revision": source.revision, "size": None,
                                         "sha256": None})  # fmt: skip
    return status.model_copy(update={"revision": source.revision, "commit": entry.commit,
                                     "size": entry.size, "sha256": entry.sha256[:12]})  # fmt: skip


def _update(status: ModelStatus, state: State, detail: str, **fields: object) -> ModelStatus:
    return status.model_copy(update={"state": state, "detail": detail, **fields})


def file_status(name: str, spec: ModelSpec, loaded: LoadedConfig, *, verify: bool) -> ModelStatus:
    """Locate one model's file and check it: sizes only, or every byte with verify."""
    status = _base(name, spec, loaded)
    try:
        found = _locate(name, spec, loaded, verify=verify)
    except ModelFileError as exc:
        return _update(status, "mismatch" if _pulled_but_changed(exc) else "missing", str(exc))
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


def _locate(name: str, spec: ModelSpec, loaded: LoadedConfig, *, verify: bool) -> LocatedFile:
    if isinstance(spec.source, HubSource):
        from localtable.models import hub  # the Hub client only for Hub models

        return hub.locate_pulled(name, spec.source, loaded, verify=verify)
    return locate(name, spec, loaded)


def _pulled_but_changed(exc: ModelFileError) -> bool:
    """A pulled file that is not what models.lock pins (hub.PulledFileMismatch)."""
    from localtable.models import hub

    return isinstance(exc, hub.PulledFileMismatch)
