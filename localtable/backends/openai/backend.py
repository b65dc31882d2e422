"""The OpenAI-compatible backend: panelists on the servers people already run (Ollama,
vLLM, SGLang, LM Studio, llama-server's /v1).

A model of models.toml with `source = { kind = "openai", url = ..., model = ... }`
runs on such a server. Unlike the llama-server backend, localtable does not render
or tokenize the prompt: the server applies its chat template. What localtable still
does: it asks for each turn's fields as a JSON schema the server constrains the
answer to (seat.py, form.py), breaks control-token text before it is sent
(markup.py), sends the seed and every sampling parameter the server takes, and
keeps in the record what makes a run comparable: the URL without credentials, the
server's kind and version, the model it reports (and its file or digest where the
server says), its system_fingerprint, how a turn's structure was asked for, which
sampling parameters the server does not take, and what it promises of a seed
(settings.py). Each generation's prompt is the request itself, and its hash the
request's.

A server that promises no determinism (all but llama-server with one slot) is
said to be so when a debate starts and before a replay (a replay difference that
--allow-engine-change accepts), rather than a replay failing without a word.
"""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path

from localtable.backends.base import (
    Backend,
    BackendUnavailable,
    PanelModels,
    Prepared,
)
from localtable.backends.credentials import api_key, trusted_connection
from localtable.backends.httpjson import ServerError
from localtable.backends.openai import settings as found
from localtable.backends.openai.client import OpenAIClient
from localtable.backends.openai.seat import OpenAISeat
from localtable.backends.openai.settings import OpenAISettings
from localtable.backends.openai.source import OpenAISource
from localtable.backends.urls import is_loopback, public_url
from localtable.config import LoadedConfig, ModelSpec
from localtable.errors import LocaltableError
from localtable.models.local import cached_sha256
from localtable.models.status import ModelStatus
from localtable.record import MemoryRecord, ModelRecord, RunRecord
from localtable.templates import TemplateSet


def _client(source: OpenAISource, name: str) -> OpenAIClient:
    return OpenAIClient(source.url, api_key(source.api_key_env, name), source.timeout)


def _file_sha256(url: str, model_path: str, name: str, expected: str | None) -> str | None:
    """The served file's sha256, when models.toml pins one: only a llama-server on this
    machine names a file that is here to hash."""
    if expected is None:
        return None
    path = Path(model_path)
    if not model_path or not is_loopback(url) or not path.is_file():
        raise BackendUnavailable(
            f"model {name!r}: cannot check its sha256: {url} is not a llama-server on this "
            "machine serving a file that is here; leave sha256 out for this model"
        )
    actual = cached_sha256(path)
    if actual != expected:
        raise BackendUnavailable(
            f"model {name!r}: {model_path} has sha256 {actual[:12]}..., expected {expected[:12]}..."
        )
    return actual


def planned_record(name: str, spec: ModelSpec) -> tuple[ModelRecord, OpenAISettings]:
    """A new run's record of one model, after asking the server what it is."""
    source = spec.source
    assert isinstance(source, OpenAISource)
    url = public_url(source.url)
    client = _client(source, name)
    entry = found.entry_for(found.reach(client, name, source.api_key_env), source.model, url, name)
    identity = found.identify(client, entry, source.server, name)
    n_ctx = found.context(spec.n_ctx, "n_ctx" in spec.model_fields_set, identity.n_ctx, name, url)
    count = found.counting(client, identity.server, identity.model)
    settings = found.settings_of(source, identity, url=url, n_ctx=n_ctx, count=count)
    if settings.system_fingerprint is None and settings.structure != "ollama_format":
        fingerprint = found.fingerprint(client, identity.model, name)
        settings = settings.model_copy(update={"system_fingerprint": fingerprint})
    sha256 = _file_sha256(url, identity.model_path, name, spec.sha256)
    record = ModelRecord(
        name=name,
        backend="openai",
        source=f"{identity.server} {url} {identity.model}",
        sha256=sha256,
        chat_mode="template",  # the server applies its own chat template
        n_ctx=n_ctx,
        settings=settings.model_dump(mode="json"),
    )
    return record, settings


class OpenAIBackend(Backend):
    """Models on OpenAI-compatible servers; one instance per Session."""

    name = "openai"
    seats: dict[str, OpenAISeat]

    def __init__(self) -> None:
        super().__init__()
        self.templates = TemplateSet()
        self.today = date(2000, 1, 1)
        self.retries = 0  # requests sent again
        self._lock = threading.Lock()
        self._server_locks: dict[str, threading.Lock] = {}

    def server_lock(self, url: str) -> threading.Lock:
        with self._lock:
            return self._server_locks.setdefault(url, threading.Lock())

    def count_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def prepare(self, panel: PanelModels) -> Prepared:
        models, notes = [], []
        for name, spec in panel.specs.items():
            record, settings = planned_record(name, spec)
            models.append(record)
            if not settings.deterministic:
                notes.append(f"model {name!r} on {settings.url}: {settings.determinism}")
            if settings.ignored:
                notes.append(
                    f"model {name!r}: {settings.server} does not take "
                    f"{', '.join(settings.ignored)}; panelists sample there without them"
                )
        return Prepared(models=models, notes=notes)

    def _trusted(
        self, model: str, settings: OpenAISettings, loaded: LoadedConfig | None,
        allow_urls: frozenset[str],
    ) -> OpenAIClient:  # fmt: skip
        sources = [
            spec.source
            for spec in (loaded.config.models.values() if loaded is not None else [])
            if isinstance(spec.source, OpenAISource) and public_url(spec.source.url) == settings.url
        ]
        key_env, timeout = trusted_connection(
            model, settings.url, recorded_key_env=settings.api_key_env,
            recorded_timeout=settings.timeout, sources=sources, loaded=loaded,
            allow_urls=allow_urls,
        )  # fmt: skip
        return OpenAIClient(settings.url, api_key(key_env, model), timeout)

    def open(
        self,
        models: list[ModelRecord],
        memory: MemoryRecord | None,
        *,
        reuse_prefix: bool,
        templates: TemplateSet,
        today: str,
        loaded: LoadedConfig | None,
        allow_urls: frozenset[str],
    ) -> list[ModelRecord]:
        self.templates = templates
        self.today = date.fromisoformat(today)
        opened = []
        for model in models:
            recorded = OpenAISettings.model_validate(model.settings)
            client = self._trusted(model.name, recorded, loaded, allow_urls)
            now = found.identity_now(client, recorded, model.name)
            if recorded.server == "llama-server" and (
                now.model_path != recorded.model_path or (now.n_ctx or 0) < recorded.n_ctx
            ):
                raise BackendUnavailable(
                    f"model {model.name!r}: {recorded.url} now runs {now.model_path} with a "
                    f"context of {now.n_ctx}; the record has {recorded.model_path} with "
                    f"{recorded.n_ctx}: start that server again"
                )
            settings = now.settle(recorded)
            self.seats[model.name] = OpenAISeat(self, model.name, settings, client)
            opened.append(model.model_copy(update={"settings": settings.model_dump(mode="json")}))
        return opened

    def turn_lanes(self, requested: int) -> int:
        """Turns of a round to run at once: `requested`, or for 0 one per server (each
        runs one generation at a time, OpenAISeat.generate)."""
        return requested or max(1, len({seat.client.url for seat in self.seats.values()}))

    def describe(self) -> dict[str, object]:
        servers: dict[str, object] = {}
        for seat in self.seats.values():
            s = seat.settings
            servers[s.url] = {
                "server": s.server,
                "server_version": s.server_version,
                "system_fingerprint": s.system_fingerprint,
                "deterministic": s.deterministic,
            }
        return {"servers": servers}

    def replay_differences(
        self, record: RunRecord, *, loaded: LoadedConfig | None, allow_urls: frozenset[str]
    ) -> list[str]:
        """What the servers report now that differs from the record, and each server
        that does not promise the same answer for the same request (said up front: a
        replay there may differ without anything having changed)."""
        diffs = []
        for model in record.models:
            if model.backend != self.name:
                continue
            settings = OpenAISettings.model_validate(model.settings)
            client = self._trusted(model.name, settings, loaded, allow_urls)
            now = found.identity_now(client, settings, model.name)
            diffs += [f"{settings.url} {change}" for change in now.changes(settings)]
            if not settings.deterministic:
                diffs.append(f"{settings.url} promises no determinism: {settings.determinism}")
        return diffs

    def status(
        self, name: str, spec: ModelSpec, loaded: LoadedConfig, *, verify: bool
    ) -> ModelStatus:
        """The model's line of `localtable models`: up (the server's kind, the model id it
        reports) or why not, from /v1/models (and the server's own version endpoints);
        nothing is generated."""
        source = spec.source
        assert isinstance(source, OpenAISource)
        base = ModelStatus(name=name, kind="openai", source=source.label(), state="down")
        url = public_url(source.url)
        try:
            client = _client(source, name)
            entries = found.reach(client, name, source.api_key_env)
        except LocaltableError as exc:  # down, refused, or a key that cannot be sent
            return base.model_copy(update={"detail": str(exc)})
        try:
            entry = found.entry_for(entries, source.model, url, name)
            identity = found.identify(client, entry, source.server, name)
        except (LocaltableError, ServerError) as exc:
            return base.model_copy(update={"state": "mismatch", "detail": str(exc)})
        version = f" {identity.version}" if identity.version else ""
        detail = f"{identity.server}{version}, model {identity.model}"
        if identity.n_ctx:
            detail += f", n_ctx {identity.n_ctx}"
        return base.model_copy(update={"state": "up", "detail": detail})
