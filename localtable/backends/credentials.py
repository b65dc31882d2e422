"""Where a backend may connect for a recorded run, and with which key: on the user's word.

A record is shared and untrusted, so a server it names is reached only when the
user's own models.toml has a model there or --allow-url names it, and a key is
sent only when models.toml names one for that URL: a record's api_key_env is never
read on its own (it would let a record send any variable anywhere). Every backend
that talks to a server (llama-server, OpenAI-compatible) decides the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Protocol

from localtable.backends.base import BackendUnavailable
from localtable.config import LoadedConfig
from localtable.errors import ConfigError

DEFAULT_TIMEOUT = 600.0


class ServerSourceLike(Protocol):
    """What a server's source table in models.toml gives for a connection."""

    @property
    def api_key_env(self) -> str | None: ...

    @property
    def timeout(self) -> float: ...


class UntrustedServer(ConfigError):
    """A record names a server that the user's own config does not (exit 2)."""


def api_key(env: str | None, model: str) -> str | None:
    """The key in the environment variable `env`; one that cannot go in an HTTP header
    is refused naming the variable, never showing the key."""
    if env is None:
        return None
    key = os.environ.get(env)
    if not key:
        raise BackendUnavailable(
            f"model {model!r}: the environment variable {env} (its api_key_env) is not set"
        )
    if "\r" in key or "\n" in key:
        raise ConfigError(
            f"model {model!r}: the API key in {env} holds a line break (a .env file saved "
            f"with Windows line ends?); set {env} to the key alone"
        )
    if not all(" " <= c <= "~" for c in key):
        raise ConfigError(
            f"model {model!r}: the API key in {env} holds a control character or one "
            f"outside ASCII, which cannot go in an HTTP header; set {env} to the key alone"
        )
    return key


def trusted_connection(
    model: str,
    url: str,
    *,
    recorded_key_env: str | None,
    recorded_timeout: float,
    sources: Iterable[ServerSourceLike],
    loaded: LoadedConfig | None,
    allow_urls: frozenset[str],
) -> tuple[str | None, float]:
    """The variable a recorded server model's key comes from and the timeout to use,
    given `sources`: the user's models.toml sources at that URL (of the backend's own
    kind). UntrustedServer when neither they nor --allow-url name the URL."""
    found = list(sources)
    if not found and url not in allow_urls:
        where = f"a server of {loaded.path}" if loaded is not None else "in models.toml"
        raise UntrustedServer(
            f"model {model!r} of this run is on {url}, which is not {where}; a record does "
            "not choose where localtable connects: add the server to models.toml, or pass "
            f"--allow-url {url} if you trust it"
        )
    envs = sorted({s.api_key_env for s in found if s.api_key_env is not None})
    if len(envs) > 1 and recorded_key_env not in envs:
        raise ConfigError(
            f"model {model!r}: models.toml names several API key variables for {url} "
            f"({', '.join(envs)}); give its models one api_key_env"
        )
    key_env = recorded_key_env if recorded_key_env in envs else next(iter(envs), None)
    # models.toml's timeout; for an --allow-url server the record's, if in models.toml's range
    recorded = recorded_timeout if 0 < recorded_timeout <= 86400 else DEFAULT_TIMEOUT
    return key_env, found[0].timeout if found else recorded
