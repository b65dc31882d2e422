"""The backend registry: a name -> where its class lives, imported on first use.

Adding a backend is one module with a class that follows backends/base.py's
Backend protocol, plus one `register()` line: here for the built-in ones, or
in the module that defines it (tests/fakebackend.py does that). Nothing is
imported until a run needs the backend, so `render`, `score` and `compare`
never load llama.cpp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from localtable.errors import ConfigError

if TYPE_CHECKING:
    from localtable.backends.base import Backend

_REGISTRY: dict[str, str] = {}
# models.toml source kind -> the backend that runs such a model
_SOURCE_KINDS: dict[str, str] = {}


def register(name: str, target: str, source_kinds: tuple[str, ...] = ()) -> None:
    """target: "package.module:ClassName"; source_kinds: models.toml `source.kind`s it runs."""
    _REGISTRY[name] = target
    for kind in source_kinds:
        _SOURCE_KINDS[kind] = name


def names() -> list[str]:
    return sorted(_REGISTRY)


def backend_for_source(kind: str) -> str:
    if kind not in _SOURCE_KINDS:
        raise ConfigError(f"no backend runs models with source kind {kind!r}")
    return _SOURCE_KINDS[kind]


def registry() -> dict[str, str]:
    """Every registered backend (name -> "module:Class"), for a worker process to restore."""
    return dict(_REGISTRY)


def source_kinds() -> dict[str, str]:
    """models.toml source kind -> backend name, for a worker process to restore."""
    return dict(_SOURCE_KINDS)


def restore(registered: dict[str, str], kinds: dict[str, str]) -> None:
    """Register in this process what registry() and source_kinds() returned in another
    (a backend a plugin or a test registered in a batch's coordinator)."""
    _REGISTRY.update(registered)
    _SOURCE_KINDS.update(kinds)


def create(name: str) -> Backend:
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown backend {name!r} (this localtable has {', '.join(names())}); "
            "a record made with another backend needs the localtable that has it"
        )
    module_name, class_name = _REGISTRY[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = cls()
    return backend


register(
    "llamacpp",
    "localtable.backends.llamacpp.backend:LlamaCppBackend",
    source_kinds=("package", "path", "hf"),
)
register("server", "localtable.backends.server.backend:ServerBackend", source_kinds=("server",))
