"""What the record keeps of an OpenAI-compatible server model (ModelRecord.settings),
and how it is found out: the server's kind, version and model, the context, how a
turn's structure and prompt tokens are asked for, and what it promises."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from localtable.backends.base import BackendUnavailable
from localtable.backends.httpjson import (
    ServerBadAnswer,
    ServerDown,
    ServerError,
    ServerFailed,
    ServerRefused,
    ServerRejected,
)
from localtable.backends.openai import dialects
from localtable.backends.openai.client import ModelEntry, OpenAIClient
from localtable.backends.openai.source import OpenAISource, ServerKind, Structure

Counting = Literal["server", "bytes"]


class OpenAISettings(BaseModel):
    """ModelRecord.settings for this backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = Field(description="the server as models.toml gives it, without credentials")
    api_key_env: str | None = None
    model: str = Field(description="the model asked for, as the server lists it")
    server: ServerKind
    server_version: str = Field(default="", description="llama-server's build, vLLM's or "
                                "Ollama's version, where the server says")  # fmt: skip
    model_path: str = ""  # llama-server: the file it runs
    model_digest: str = ""  # Ollama: the model's digest
    system_fingerprint: str | None = None
    total_slots: int | None = None  # llama-server
    n_ctx: int
    structure: Structure
    counting: Counting = Field(
        description="server: prompt tokens as the server counts them; bytes: an upper "
        "bound (a token holds a byte or more), where the server cannot count"
    )
    deterministic: bool
    determinism: str = Field(description="what the server promises of a seed, in words")
    ignored: list[str] = Field(description="sampling parameters the server does not take")
    timeout: float = 600.0
    request: dict[str, JsonValue] = Field(description="the fixed part of every request")


class Identity(BaseModel):
    """What a server says of itself and of the model now."""

    model_config = ConfigDict(frozen=True)
    server: ServerKind
    model: str
    version: str = ""
    model_path: str = ""
    digest: str = ""
    fingerprint: str | None = None
    n_ctx: int | None = None
    slots: int | None = None

    def changes(self, settings: OpenAISettings) -> list[str]:
        """What differs from the record."""
        pairs = [
            ("server", settings.server, self.server),
            ("version", settings.server_version, self.version),
            ("model", settings.model, self.model),
            ("model file", settings.model_path, self.model_path),
            ("model digest", settings.model_digest, self.digest),
            ("slots", settings.total_slots, self.slots),
            ("system_fingerprint", settings.system_fingerprint, self.fingerprint),
        ]
        if settings.server == "llama-server":
            pairs.append(("context", settings.n_ctx, self.n_ctx))
        return [f"{what} {old} -> {new}" for what, old, new in pairs if old and new and old != new]

    def settle(self, settings: OpenAISettings) -> OpenAISettings:
        """The record's settings with what the server says now (a replay on another
        build describes that build)."""
        deterministic, determinism = dialects.promise(self.server, self.slots)
        return settings.model_copy(
            update={
                "server_version": self.version, "model_path": self.model_path,
                "model_digest": self.digest, "total_slots": self.slots,
                "system_fingerprint": self.fingerprint or settings.system_fingerprint,
                "deterministic": deterministic, "determinism": determinism,
            }
        )  # fmt: skip


def reach(client: OpenAIClient, model: str, key_env: str | None) -> list[ModelEntry]:
    """/v1/models, or BackendUnavailable naming the URL and the fix."""
    try:
        return client.models()
    except ServerRefused as exc:
        fix = f"check the key in {key_env}" if key_env else "set api_key_env for this model"
        raise BackendUnavailable(f"model {model!r}: {exc}; {fix}") from None
    except ServerDown as exc:
        raise BackendUnavailable(
            f"model {model!r}: {exc}; start the server, then run again"
        ) from None
    except ServerError as exc:
        raise BackendUnavailable(f"model {model!r}: {exc}") from None


def entry_for(entries: list[ModelEntry], wanted: str, url: str, name: str) -> ModelEntry:
    """The model the server lists under `wanted` (Ollama's `name` means `name:latest`)."""
    for entry in entries:
        if entry.id in (wanted, f"{wanted}:latest"):
            return entry
    served = ", ".join(e.id for e in entries[:8]) or "no model"
    raise BackendUnavailable(
        f"model {name!r}: {url} serves {served}, not {wanted!r}; set `model` in models.toml "
        "to one of them"
    )


def identify(client: OpenAIClient, entry: ModelEntry, declared: str, name: str) -> Identity:
    """Which server this is and what it runs (`declared`: models.toml's `server`)."""
    kind: ServerKind = dialects.detect(client, entry) if declared == "auto" else declared  # type: ignore[assignment]
    try:
        if kind == "llama-server":
            props = client.llama_props()
            return Identity(
                server=kind, model=entry.id, version=props.build_info,
                model_path=props.model_path, fingerprint=props.build_info,
                n_ctx=props.default_generation_settings.n_ctx, slots=props.total_slots,
            )  # fmt: skip
        if kind == "ollama":
            tags = {t.name: t.digest for t in client.ollama_tags()}
            return Identity(server=kind, model=entry.id, version=client.version("/api/version"),
                            digest=tags.get(entry.id, ""))  # fmt: skip
    except ServerError as exc:
        raise BackendUnavailable(
            f"model {name!r}: {exc} (is it {kind}? set `server` in models.toml)"
        ) from None
    version = ""
    if kind == "vllm":
        try:
            version = client.version("/version")
        except ServerError:
            version = ""
    return Identity(server=kind, model=entry.id, version=version, n_ctx=entry.max_model_len)


def counting(client: OpenAIClient, kind: str, model: str) -> Counting:
    """server where the server counts a chat prompt's tokens, else bytes."""
    probe = [{"role": "user", "content": "a"}]
    try:
        if kind == "llama-server":
            client.llama_count(probe)
            return "server"
        if kind == "vllm":
            client.vllm_count(model, probe)
            return "server"
    except (ServerFailed, ServerRejected, ServerBadAnswer):  # it has no such endpoint
        return "bytes"
    except ServerError as exc:
        raise BackendUnavailable(f"{exc}") from None
    return "bytes"


def fingerprint(client: OpenAIClient, model: str, name: str) -> str | None:
    """The system_fingerprint the server sends with an answer (a one-token one)."""
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1,
            "temperature": 0.0, "seed": 0}  # fmt: skip
    try:
        return client.chat(body).system_fingerprint
    except ServerError as exc:
        raise BackendUnavailable(f"model {name!r}: a one-token answer failed: {exc}") from None


def context(source_n_ctx: int, declared: bool, reported: int | None, name: str, url: str) -> int:
    """The context a turn may fill: the server's (llama-server's per slot, vLLM's model
    length), or models.toml's n_ctx where it is smaller or the server says none."""
    if reported is None:
        return source_n_ctx
    if declared and source_n_ctx > reported:
        raise BackendUnavailable(
            f"model {name!r}: {url} has a context of {reported}, models.toml asks for "
            f"{source_n_ctx}; lower n_ctx or start the server with a larger context"
        )
    return source_n_ctx if declared else reported


def settings_of(
    source: OpenAISource,
    identity: Identity,
    *,
    url: str,
    n_ctx: int,
    count: Counting,
) -> OpenAISettings:
    kind = identity.server
    deterministic, determinism = dialects.promise(kind, identity.slots)
    structure = dialects.structure_for(kind) if source.structure == "auto" else source.structure
    if structure == "ollama_format" and kind != "ollama":
        raise BackendUnavailable(
            f'{url} is {kind}, not Ollama: structure = "ollama_format" needs Ollama\'s own '
            'API; use structure = "response_format" or "text"'
        )
    api = dialects.api_of(kind, structure)
    return OpenAISettings(
        url=url, api_key_env=source.api_key_env, model=identity.model, server=kind,
        server_version=identity.version, model_path=identity.model_path,
        model_digest=identity.digest, system_fingerprint=identity.fingerprint,
        total_slots=identity.slots, n_ctx=n_ctx, structure=structure, counting=count,
        deterministic=deterministic, determinism=determinism, ignored=dialects.ignored(api),
        timeout=source.timeout, request=dialects.fixed_request(api, n_ctx),
    )  # fmt: skip


def identity_now(client: OpenAIClient, settings: OpenAISettings, name: str) -> Identity:
    """What the server of a recorded model says now (its fingerprint asked for with a
    one-token answer where the record has one and the server shows it no other way)."""
    entries = reach(client, name, settings.api_key_env)
    now = identify(client, entry_for(entries, settings.model, settings.url, name),
                   settings.server, name)  # fmt: skip
    if now.fingerprint is None and settings.system_fingerprint is not None:
        now = now.model_copy(update={"fingerprint": fingerprint(client, settings.model, name)})
    return now
