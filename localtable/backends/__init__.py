"""The backend registry: which backend runs each models.toml source kind.

A backend is one package plus one `register()` call: its name, its class, the
source kinds it runs (each with the pydantic model of its `source` table) and,
if listing models needs no engine, a light status function. The built-in
backends register at the end of this module. Another package adds one by
calling `register()` in a module of its own and naming that module in its
pyproject.toml:

    [project.entry-points."localtable.backends"]
    mybackend = "mypackage.localtable_backend"

Those modules are imported only when a name or a kind is not among the
registered ones (or when every name is listed), so a plugin costs nothing to a
run that does not use it. Everything here is a string until it is asked for:
config.py looks up the model of a source kind (a light module), a Session
creates a backend when a run needs it (backends/base.create), and `localtable
models` imports a kind's status function or its backend only for models of that
kind. So `render`, `score`, `compare` and `models` never load llama.cpp.

This module imports nothing of localtable besides errors: config.py sits below
the backends and asks it which model validates a source.
"""

from __future__ import annotations

import importlib
from importlib import metadata

from pydantic import BaseModel, ConfigDict, Field

from localtable.errors import ConfigError

ENTRY_POINTS = "localtable.backends"  # the group a package names its backend module in


class Registration(BaseModel):
    """One backend, as registered: where its parts live ("module:attribute")."""

    model_config = ConfigDict(frozen=True)
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    backend: str = Field(description="its class, deriving from backends.base.Backend")
    sources: dict[str, str] = Field(
        description="models.toml source kind -> the pydantic model of that source "
        "(a config.Source, in a light module: config validation imports it)"
    )
    status: str | None = Field(
        default=None,
        description="a function (name, spec, loaded, *, verify) -> ModelStatus for `localtable "
        "models`, used instead of the backend's own `status` so that listing needs no engine",
    )


_BACKENDS: dict[str, Registration] = {}
_KINDS: dict[str, str] = {}  # source kind -> backend name
_plugins_loaded = False


def _target(where: str, what: str) -> None:
    module, colon, attribute = where.partition(":")
    if not (module and colon and attribute.isidentifier()):
        raise ConfigError(f"{what}: {where!r} is not 'package.module:Name'")


def _add(entry: Registration) -> None:
    """Register one backend; any clash with one registered before is refused. The very
    same registration again changes nothing: a batch worker restores the coordinator's
    registry, then may import the module that registers it (for its source model)."""
    if _BACKENDS.get(entry.name) == entry:
        return
    if entry.name in _BACKENDS:
        raise ConfigError(
            f"backend {entry.name!r} is registered twice ({_BACKENDS[entry.name].backend} and "
            f"{entry.backend}); uninstall one of the packages that provide it"
        )
    for kind in entry.sources:
        if kind in _KINDS:
            raise ConfigError(
                f"source kind {kind!r} is registered twice (by backends {_KINDS[kind]!r} and "
                f"{entry.name!r}); uninstall one of them, or give the new one another kind"
            )
    for where in [entry.backend, *entry.sources.values(), *filter(None, [entry.status])]:
        _target(where, f"backend {entry.name!r}")
    _BACKENDS[entry.name] = entry
    _KINDS.update(dict.fromkeys(entry.sources, entry.name))


def register(
    name: str, backend: str, *, sources: dict[str, str], status: str | None = None
) -> None:
    """Add a backend: `backend` its class and `sources` each source kind's model, as
    "package.module:Name" (imported when needed); `status` optional (Registration)."""
    _add(Registration(name=name, backend=backend, sources=sources, status=status))


def load_plugins() -> None:
    """Import the modules that installed packages name under `localtable.backends`
    (each registers its backend), once per process."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry_point in metadata.entry_points(group=ENTRY_POINTS):
        try:
            entry_point.load()
        except ConfigError as exc:
            raise ConfigError(f"backend plugin {entry_point.name!r}: {exc}") from None
        except Exception as exc:  # a broken plugin: say which, never a traceback
            raise ConfigError(
                f"backend plugin {entry_point.name!r} ({entry_point.value}) failed to load "
                f"({type(exc).__name__}: {exc}); upgrade or uninstall the package that "
                "provides it"
            ) from None


def names() -> list[str]:
    """Every backend this localtable has, plugins included."""
    load_plugins()
    return sorted(_BACKENDS)


def kinds() -> list[str]:
    """Every source kind this localtable runs, plugins included."""
    load_plugins()
    return sorted(_KINDS)


def registration(name: str) -> Registration:
    if name not in _BACKENDS:
        load_plugins()
    if name not in _BACKENDS:
        raise ConfigError(
            f"unknown backend {name!r} (this localtable has {', '.join(names())}); "
            "a record made with another backend needs the localtable that has it"
        )
    return _BACKENDS[name]


def backend_for_source(kind: object) -> str:
    """The name of the backend that runs models of this source kind."""
    if not isinstance(kind, str) or kind not in _KINDS:
        load_plugins()
    if not isinstance(kind, str) or kind not in _KINDS:
        known = ", ".join(kinds())
        if kind is None:
            raise ConfigError(f"the source has no kind; give kind = one of {known}")
        raise ConfigError(
            f"unknown source kind {kind!r} (this localtable runs {known}); install the "
            "package of the backend that runs it"
        )
    return _KINDS[kind]


def load(where: str) -> object:
    """The object at "package.module:Name", imported now."""
    module, _, attribute = where.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:  # a package missing, or a registered typo
        raise ConfigError(
            f"{where}, registered for a backend, cannot be loaded ({exc}); install what it "
            "needs, or fix the registration"
        ) from None


def source_model(kind: object) -> object:
    """The pydantic model of a source kind (config.py checks it is a config.Source)."""
    entry = _BACKENDS[backend_for_source(kind)]
    return load(entry.sources[str(kind)])


def registrations() -> list[Registration]:
    """Every backend registered in this process, for a worker process to restore."""
    return list(_BACKENDS.values())


def restore(entries: list[Registration]) -> None:
    """Register in this process what registrations() returned in another (a backend a
    plugin or a test registered in a batch's coordinator)."""
    for entry in entries:
        _add(entry)


register(
    "llamacpp",
    "localtable.backends.llamacpp.backend:LlamaCppBackend",
    sources={
        "package": "localtable.models.sources:PackageSource",
        "path": "localtable.models.sources:PathSource",
        "hf": "localtable.models.sources:HubSource",
    },
    status="localtable.models.status:file_status",
)
register(
    "server",
    "localtable.backends.server.backend:ServerBackend",
    sources={"server": "localtable.backends.server.source:ServerSource"},
)
register(
    "openai",
    "localtable.backends.openai.backend:OpenAIBackend",
    sources={"openai": "localtable.backends.openai.source:OpenAISource"},
)
