"""`localtable models`: each model's line, from the backend that runs its source kind.

A registration may name a light status function (the llama.cpp backend's file
sources: models/status.py), so that listing models never imports an engine;
otherwise the backend is created and its `status` asked (Backend.status:
"unchecked" unless the backend checks something). Nothing is generated.
"""

from __future__ import annotations

from localtable import backends
from localtable.backends.base import create
from localtable.config import LoadedConfig
from localtable.errors import ConfigError
from localtable.models.status import ModelStatus


def model_status(name: str, loaded: LoadedConfig, *, verify: bool = False) -> ModelStatus:
    """One model of models.toml: where it is and whether it is usable (verify: re-hash
    files in full)."""
    if name not in loaded.config.models:
        raise ConfigError(
            f"unknown model {name!r}: {loaded.path} defines "
            f"{', '.join(sorted(loaded.config.models))}"
        )
    spec = loaded.config.models[name]
    entry = backends.registration(backends.backend_for_source(spec.source.kind))
    if entry.status is not None:
        status = backends.load(entry.status)
        if not callable(status):
            raise ConfigError(
                f"backend {entry.name!r}: its status {entry.status} is not a function"
            )
        answer = status(name, spec, loaded, verify=verify)
    else:
        backend = create(entry.name)
        try:
            answer = backend.status(name, spec, loaded, verify=verify)
        finally:
            backend.close()
    if not isinstance(answer, ModelStatus):
        raise ConfigError(f"backend {entry.name!r}: its status of {name!r} is not a ModelStatus")
    return answer


def model_statuses(loaded: LoadedConfig, *, verify: bool = False) -> list[ModelStatus]:
    """model_status for every model of models.toml, in file order."""
    return [model_status(name, loaded, verify=verify) for name in loaded.config.models]
