"""The llama-server backend: panelists on llama.cpp's own HTTP server.

A model of models.toml with `source = { kind = "server", url = ... }` runs on a
llama-server, on this machine or on a GPU box. localtable keeps doing what
makes a turn reproducible on its side: it renders the conversation with the
model's chat template (the one the server shows), tokenizes it piece by piece
through the server's /tokenize (template text with control tokens, the
question and the panelists' text without: untrusted text stays plain text), and
sends the token ids with the grammar, the seed, every sampling parameter and
an explicit sampler order to /completion, with the server's prompt cache off.
The generated token ids come back into the record.

What the record keeps of a server (ModelRecord.settings): its URL without
credentials, the environment variable holding its API key (never the key), its
build, the model path it runs, its context and slots, the flags that change
numbers as models.toml declares them (llama-server does not report batch
sizes or flash attention), and the fixed part of every request.

A server that cannot answer a turn (refused, timed out, 401, 5xx, an answer
outside the API, died mid-turn) raises BackendDown: the run stops with the turn
marked interrupted, and `localtable resume` runs it again once the server is
back. A request is sent again only when the server answers /health and still
reports the recorded build, model and context: the repeat is then identical
(same tokens, same seed, no prompt cache).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, JsonValue

from localtable.backends.base import (
    Backend,
    BackendDown,
    BackendUnavailable,
    ChatMessage,
    PanelModels,
    Prepared,
    TurnFailed,
    TurnRequest,
    TurnResult,
)
from localtable.backends.chatformat import FormattedPrompt, format_prompt
from localtable.backends.credentials import api_key, trusted_connection
from localtable.backends.httpjson import turn_request
from localtable.backends.promptpiece import PromptPiece
from localtable.backends.server.client import (
    Completion,
    Props,
    ServerBadAnswer,
    ServerClient,
    ServerDown,
    ServerError,
    ServerRefused,
    ServerRejected,
)
from localtable.backends.server.source import ServerSource
from localtable.backends.urls import is_loopback, public_url
from localtable.config import LoadedConfig, ModelSpec
from localtable.errors import ConfigError, LocaltableError, ModelFileError
from localtable.models.gguf import read_gguf
from localtable.models.local import cached_sha256
from localtable.models.status import ModelStatus
from localtable.record import MemoryRecord, ModelRecord, RunRecord
from localtable.templates import TemplateSet

# The in-process engine's sampler order after its grammar step (llama-cpp-python
# 0.3.36, Llama._init_sampler); llama-server adds `dist` with the seed at the end.
SAMPLER_ORDER = ["penalties", "top_k", "typ_p", "top_p", "min_p", "temperature"]
REPEAT_LAST_N = 64  # llama-cpp-python's last_n_tokens_size: the in-process penalty window
RETRIES = 2  # repeats of a request the server dropped, when a repeat is identical
TOKEN_CACHE = 4096  # tokenized prompt pieces kept per server


# llama.cpp's CHATML_TEMPLATE_SRC (common/chat.cpp): what /props shows for a model
# without a chat template of its own. It is not the model's: "auto" then means
# plain completion, as in-process.
CHATML_FALLBACK = (
    "{%- for message in messages -%}\n"
    "  {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}"
)


def fixed_request() -> dict[str, JsonValue]:
    """The part of every /completion request that is the same for every turn: the
    sampler order, every sampler that is not used set to off, no prompt cache, and
    the generated token ids back."""
    return {
        "samplers": list(SAMPLER_ORDER),
        "repeat_last_n": REPEAT_LAST_N,
        "min_keep": 1,
        "top_n_sigma": -1.0,
        "xtc_probability": 0.0,
        "dry_multiplier": 0.0,
        "dynatemp_range": 0.0,
        "mirostat": 0,
        "ignore_eos": False,
        "logit_bias": [],
        "n_probs": 0,
        "n_cmpl": 1,
        "cache_prompt": False,
        "return_tokens": True,
        "stream": False,
        "backend_sampling": False,
    }


class ServerSettings(BaseModel):
    """ModelRecord.settings for this backend: which server, and what it showed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str
    api_key_env: str | None = None
    build_info: str
    model_path: str
    model_alias: str = ""
    n_ctx: int
    total_slots: int
    declared_flags: str = ""
    timeout: float = 600.0
    request: dict[str, JsonValue]


class ServerModelInfo(BaseModel):
    """What chat formatting needs (backends/chatformat.ModelInfo), from the server."""

    model_config = ConfigDict(frozen=True)
    chat_template: str | None
    bos_token: str
    eos_token: str
    add_bos: bool
    bos_id: int | None
    n_vocab: int


def trusted_client(
    model: str,
    settings: ServerSettings,
    loaded: LoadedConfig | None,
    allow_urls: frozenset[str],
) -> tuple[ServerClient, str | None]:
    """A client for a recorded server model, and the variable its key comes from: on
    the user's word only (backends/credentials.py: its URL is reached only when the
    user's models.toml has a server there or --allow-url names it, and a key is sent
    only when models.toml names one for that URL)."""
    sources = [
        spec.source
        for spec in (loaded.config.models.values() if loaded is not None else [])
        if isinstance(spec.source, ServerSource) and public_url(spec.source.url) == settings.url
    ]
    key_env, timeout = trusted_connection(
        model, settings.url, recorded_key_env=settings.api_key_env,
        recorded_timeout=settings.timeout, sources=sources, loaded=loaded, allow_urls=allow_urls,
    )  # fmt: skip
    return ServerClient(settings.url, api_key(key_env, model), timeout), key_env


def template_of(props: Props) -> str | None:
    """The model's own chat template as the server shows it (None: it has none)."""
    if not props.chat_template or props.chat_template == CHATML_FALLBACK:
        return None
    return props.chat_template


def _sha(text: str | None) -> str | None:
    return hashlib.sha256(text.encode("utf-8")).hexdigest() if text is not None else None


def _model_matches(expected: str, model_path: str) -> bool:
    return model_path == expected or model_path.endswith(("/" + expected, "\\" + expected))


class LocalFile(BaseModel):
    """The served model file, when the server is on this machine and the file is here."""

    model_config = ConfigDict(frozen=True)
    sha256: str
    size: int
    architecture: str
    has_chat_template: bool


def local_file(url: str, model_path: str) -> LocalFile | None:
    path = Path(model_path)
    if not is_loopback(url) or not path.is_file():
        return None
    try:
        info = read_gguf(path)
    except ModelFileError:
        return None
    return LocalFile(
        sha256=cached_sha256(path),
        size=path.stat().st_size,
        architecture=info.architecture,
        has_chat_template=info.chat_template is not None,
    )


class ServerSeat:
    """One model on one llama-server."""

    def __init__(
        self,
        backend: ServerBackend,
        model: ModelRecord,
        settings: ServerSettings,
        client: ServerClient,
        info: ServerModelInfo,
    ) -> None:
        self.backend = backend
        self.model = model
        self.settings = settings
        self.client = client
        self.info = info
        self._tokens: dict[tuple[str, bool], list[int]] = {}
        self._lock = threading.Lock()

    # -- prompts -----------------------------------------------------------------

    def _format(self, messages: list[ChatMessage], prefill: str = "") -> FormattedPrompt:
        return format_prompt(
            self.model.chat_mode,
            self.info,
            messages,
            self.backend.today,
            self.backend.templates,
            prefill,
            source=f"the chat template of model {self.model.name!r} "
            f"(from the /props of {self.settings.url})",
        )

    def _piece_tokens(self, piece: PromptPiece) -> list[int]:
        key = (piece.text, piece.special)
        with self._lock:
            cached = self._tokens.get(key)
        if cached is not None:
            return cached
        tokens = turn_request(
            lambda: in_vocabulary(
                self.client.url,
                "/tokenize",
                self.client.tokenize(piece.text, special=piece.special),
                self.info.n_vocab,
            )
        )
        with self._lock:
            if len(self._tokens) >= TOKEN_CACHE:
                self._tokens.clear()
            self._tokens[key] = tokens
        return tokens

    def prompt_tokens(self, prompt: FormattedPrompt) -> list[int]:
        """The prompt's token ids, piece by piece: only template text may hold control
        tokens (as the in-process engine tokenizes it)."""
        tokens = [self.info.bos_id] if prompt.add_bos and self.info.bos_id is not None else []
        for piece in prompt.pieces:
            tokens += self._piece_tokens(piece)
        return tokens

    def context_size(self) -> int:
        return self.settings.n_ctx

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return len(self.prompt_tokens(self._format(messages)))

    def count_text_tokens(self, text: str) -> int:
        return len(self._piece_tokens(PromptPiece(text=text, special=False)))

    # -- requests ------------------------------------------------------------------

    def changed_server(self) -> list[str] | None:
        """What changed on the server since the record (build, model, context, slots);
        None when it does not answer."""
        try:
            self.client.health()
            return identity_changes(self.settings, self.client.props())
        except ServerError:
            return None

    def _complete(
        self, body: dict[str, JsonValue], on_text: Callable[[str], None] | None = None
    ) -> Completion:
        for attempt in range(RETRIES + 1):
            try:
                answer = self.client.completion(body, on_text)
                in_vocabulary(self.client.url, "/completion", answer.tokens, self.info.n_vocab)
                return answer
            except ServerDown as exc:
                # Sent again only to the same server (build, model, context), with the
                # same tokens and seed and no prompt cache: an identical repeat.
                changed = self.changed_server() if attempt < RETRIES else None
                if changed is None:  # down, or asked enough
                    raise BackendDown(str(exc)) from None
                if changed:
                    why = f"the server changed ({'; '.join(changed)})"
                    raise BackendDown(f"{exc}; not sent again: {why}") from None
                self.backend.count_retry()
            except ServerRejected as exc:
                raise TurnFailed(str(exc)) from None
            except ServerError as exc:
                raise BackendDown(str(exc)) from None
        raise AssertionError("unreachable: the last attempt returns or raises")

    def generate(self, request: TurnRequest) -> TurnResult:
        # One generation at a time per server, as when turns run one after another: a
        # server with several slots would batch our own requests together, which
        # changes the numbers. Turns on other servers run meanwhile (Debate.run).
        # ServerBackend.generate_group sends a decode group at once instead.
        with self.backend.server_lock(self.client.url):
            return self.generate_unlocked(request)

    def generate_unlocked(self, request: TurnRequest) -> TurnResult:
        prompt = self._format(request.messages, request.prefill)
        tokens = self.prompt_tokens(prompt)
        s = request.sampling
        if len(tokens) + s.max_tokens > self.settings.n_ctx:
            raise TurnFailed(
                f"prompt of {len(tokens)} tokens + {s.max_tokens} to generate exceeds the "
                f"context of {self.settings.n_ctx}"
            )
        body: dict[str, JsonValue] = {
            **self.settings.request,
            "prompt": list(tokens),
            "n_predict": s.max_tokens,
            "seed": request.seed,
            "temperature": s.temperature,
            "top_k": s.top_k,
            "top_p": s.top_p,
            "min_p": s.min_p,
            "typical_p": s.typical_p,
            "repeat_penalty": s.repeat_penalty,
            "frequency_penalty": s.frequency_penalty,
            "presence_penalty": s.presence_penalty,
            "grammar": request.grammar,
            "stop": list(prompt.stop),
        }
        started = time.monotonic()
        # streamed when someone watches: the same text and tokens (checked by
        # tests/test_stream.py against a run without it)
        answer = self._complete(body, request.on_text)
        seconds = time.monotonic() - started
        check_settings(self.client.url, answer.generation_settings, body)
        if answer.stop_type not in ("eos", "word", "limit"):
            raise BackendDown(f"{self.client.url}: the generation stopped ({answer.stop_type})")
        # As in-process: the end-of-generation token is in token_ids, not in the count.
        eog = 1 if answer.stop_type == "eos" and answer.tokens else 0
        return TurnResult(
            prompt=prompt.text,
            prompt_tokens=len(tokens),
            prompt_sha256=hashlib.sha256(",".join(map(str, tokens)).encode()).hexdigest(),
            notes=prompt.notes,
            text=answer.content,
            token_ids=answer.tokens,
            finish_reason="length" if answer.stop_type == "limit" else "stop",
            completion_tokens=len(answer.tokens) - eog,
            prompt_eval_tokens=answer.timings.prompt_n,
            seconds=seconds,
            prompt_eval_seconds=answer.timings.prompt_ms / 1000,
            decode_seconds=answer.timings.predicted_ms / 1000,
        )


def _all_at_once(calls: list[Callable[[], None]]) -> None:
    """Run the calls on threads of their own (daemon: Ctrl-C abandons them) and wait."""
    if len(calls) == 1:
        calls[0]()
        return
    threads = [threading.Thread(target=call, daemon=True) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def check_settings(url: str, applied: dict[str, object], sent: dict[str, JsonValue]) -> None:
    """The server echoes the parameters it used: a server that ignored one of ours
    (an older build, a proxy) would give other numbers, so that is a failure."""
    problems = []
    for key in ("seed", "n_predict", "samplers", "repeat_last_n", "top_k", "mirostat"):
        if applied.get(key) != sent[key]:
            problems.append(f"{key} {applied.get(key)!r} instead of {sent[key]!r}")
    for key in ("temperature", "top_p", "min_p", "typical_p", "repeat_penalty"):
        value, wanted = applied.get(key), sent[key]
        if not isinstance(value, int | float) or not isinstance(wanted, int | float):
            problems.append(f"{key} missing")
        elif abs(value - wanted) > 1e-6 * max(1.0, abs(wanted)):  # float32 on the server
            problems.append(f"{key} {value!r} instead of {wanted!r}")
    if problems:
        raise BackendDown(f"{url}: the server did not apply the request ({'; '.join(problems)})")


def identity_changes(settings: ServerSettings, props: Props) -> list[str]:
    """What the server reports now that differs from the record (build, model, context,
    slots)."""
    changes = []
    if props.build_info != settings.build_info:
        changes.append(f"build {settings.build_info} -> {props.build_info}")
    if props.model_path != settings.model_path:
        changes.append(f"model {settings.model_path} -> {props.model_path}")
    if props.n_ctx != settings.n_ctx:
        changes.append(f"context {settings.n_ctx} -> {props.n_ctx}")
    if props.total_slots != settings.total_slots:
        changes.append(f"slots {settings.total_slots} -> {props.total_slots}")
    return changes


def _client(source: ServerSource, model: str) -> ServerClient:
    return ServerClient(source.url, api_key(source.api_key_env, model), source.timeout)


def _reach(client: ServerClient, model: str, key_env: str | None) -> Props:
    """/health then /props, or BackendUnavailable naming the URL and the fix."""
    try:
        client.health()
        return client.props()
    except ServerRefused as exc:
        fix = f"check the key in {key_env}" if key_env else "set api_key_env for this model"
        raise BackendUnavailable(f"model {model!r}: {exc}; {fix}") from None
    except ServerDown as exc:
        raise BackendUnavailable(
            f"model {model!r}: {exc}; start the server (docs/models.md: llama-server), "
            "then run again"
        ) from None
    except ServerError as exc:
        raise BackendUnavailable(f"model {model!r}: {exc}") from None


def _chat_mode(requested: str, has_template: bool, name: str) -> Literal["template", "completion"]:
    if requested == "completion":
        return "completion"
    if not has_template:
        if requested == "template":
            raise ConfigError(
                f'model {name!r}: chat = "template" but the server shows no chat template of '
                'the model\'s own; set chat = "completion" (or "auto") in models.toml'
            )
        return "completion"
    return "template"


def planned_record(name: str, spec: ModelSpec, props: Props) -> ModelRecord:
    """A new run's record of one server model, after checking what models.toml expects."""
    source = spec.source
    assert isinstance(source, ServerSource)
    url = public_url(source.url)
    if source.model is not None and not _model_matches(source.model, props.model_path):
        raise BackendUnavailable(
            f"model {name!r}: {url} runs {props.model_path}, models.toml expects {source.model}"
        )
    if source.build is not None and props.build_info != source.build:
        raise BackendUnavailable(
            f"model {name!r}: {url} is build {props.build_info}, models.toml expects {source.build}"
        )
    if "n_ctx" in spec.model_fields_set and spec.n_ctx != props.n_ctx:
        raise BackendUnavailable(
            f"model {name!r}: {url} has a context of {props.n_ctx} per slot, models.toml asks "
            f"for {spec.n_ctx}; start llama-server with -c {spec.n_ctx} -np 1 or change n_ctx"
        )
    found = local_file(url, props.model_path)
    if spec.sha256 is not None:
        if found is None:
            raise BackendUnavailable(
                f"model {name!r}: cannot check its sha256: {url} is not on this machine or "
                f"{props.model_path} is not here; pin it with `model` and `build` instead"
            )
        if found.sha256 != spec.sha256:
            raise BackendUnavailable(
                f"model {name!r}: {props.model_path} has sha256 {found.sha256[:12]}..., "
                f"expected {spec.sha256[:12]}..."
            )
    has_template = found.has_chat_template if found is not None else bool(template_of(props))
    settings = ServerSettings(
        url=url,
        api_key_env=source.api_key_env,
        build_info=props.build_info,
        model_path=props.model_path,
        model_alias=props.model_alias,
        n_ctx=props.n_ctx,
        total_slots=props.total_slots,
        declared_flags=source.flags,
        timeout=source.timeout,
        request=fixed_request(),
    )
    return ModelRecord(
        name=name,
        backend="server",
        source=f"llama-server {url}",
        sha256=found.sha256 if found else None,
        size=found.size if found else None,
        architecture=found.architecture if found else "",
        chat_mode=_chat_mode(spec.chat, has_template, name),
        n_ctx=props.n_ctx,
        settings=settings.model_dump(mode="json"),
    )


class ServerBackend(Backend):
    """Models on llama-servers; one instance per Session."""

    name = "server"

    def __init__(self) -> None:
        super().__init__()
        self.seats: dict[str, ServerSeat] = {}
        self.templates = TemplateSet()
        self.today = date_of("2000-01-01")
        self.retries = 0  # requests sent again (identical repeats)
        self._lock = threading.Lock()
        self._server_locks: dict[str, threading.Lock] = {}

    def server_lock(self, url: str) -> threading.Lock:
        """Held while a generation runs on the server at this URL."""
        with self._lock:
            return self._server_locks.setdefault(url, threading.Lock())

    def count_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def prepare(self, panel: PanelModels) -> Prepared:
        models, notes = [], []
        for name, spec in panel.specs.items():
            assert isinstance(spec.source, ServerSource)
            props = _reach(_client(spec.source, name), name, spec.source.api_key_env)
            models.append(planned_record(name, spec, props))
            if props.total_slots > 1:
                notes.append(
                    f"{public_url(spec.source.url)} has {props.total_slots} slots: requests of "
                    "other clients can share its batches, which changes the numbers; start it "
                    "with -np 1 for reproducible runs"
                )
        return Prepared(models=models, notes=notes)

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
        self.today = date_of(today)
        opened = []
        for model in models:
            settings = ServerSettings.model_validate(model.settings)
            client, key_env = trusted_client(model.name, settings, loaded, allow_urls)
            props = _reach(client, model.name, key_env)
            if props.model_path != settings.model_path or props.n_ctx != settings.n_ctx:
                raise BackendUnavailable(
                    f"model {model.name!r}: {settings.url} now runs {props.model_path} with a "
                    f"context of {props.n_ctx}; the record has {settings.model_path} with "
                    f"{settings.n_ctx}: start that server again"
                )
            template = template_of(props) if model.chat_mode == "template" else None
            if model.chat_mode == "template" and template is None:
                raise BackendUnavailable(
                    f"model {model.name!r}: {settings.url} shows no chat template"
                )
            if model.chat_template_sha256 is not None and _sha(template) != (
                model.chat_template_sha256
            ):
                raise BackendUnavailable(
                    f"model {model.name!r}: {settings.url} shows another chat template than "
                    "the record's (was it started with --chat-template?)"
                )
            info = server_model_info(client, props, template, model.name)
            record = model.model_copy(
                update={
                    "chat_template_sha256": _sha(template),
                    "bos_token": props.bos_token,
                    "eos_token": props.eos_token,
                }
            )
            self.seats[model.name] = ServerSeat(self, record, settings, client, info)
            opened.append(record)
        return opened

    def generate_group(self, turns: list[tuple[str, TurnRequest]]) -> list[TurnResult | TurnFailed]:
        """A decode group (`--decode batched`): each server gets its requests at once, as
        many at a time as it has slots (-np N: it decodes them as one batch); servers
        work at the same time. Each result names those sent with it. The server alone
        decides when each request joins its batch, so unlike in-process groups a replay
        may differ; with one slot this is the one-at-a-time run."""
        out: dict[int, TurnResult | TurnFailed] = {}
        by_url: dict[str, list[int]] = {}
        for i, (model, _) in enumerate(turns):
            by_url.setdefault(self.seats[model].client.url, []).append(i)

        def one(i: int) -> None:
            model, request = turns[i]
            try:
                out[i] = self.seats[model].generate_unlocked(request)
            except TurnFailed as exc:
                out[i] = exc

        def on_server(url: str, members: list[int]) -> None:
            slots = max(1, self.seats[turns[members[0]][0]].settings.total_slots)
            with self.server_lock(url):
                for lo in range(0, len(members), slots):
                    chunk = members[lo : lo + slots]
                    _all_at_once([lambda i=i: one(i) for i in chunk])  # type: ignore[misc]
                    names = [turns[i][1].panelist for i in chunk]
                    for i in chunk:
                        answer = out.get(i)
                        if isinstance(answer, TurnResult) and len(chunk) > 1:
                            out[i] = answer.model_copy(update={"decoded_with": names})

        _all_at_once([lambda u=u, m=m: on_server(u, m) for u, m in by_url.items()])  # type: ignore[misc]
        return [out.get(i) or TurnFailed("the request got no answer") for i in range(len(turns))]

    def turn_lanes(self, requested: int) -> int:
        """Turns of a round to run at once: `requested`, or for 0 one per server (each
        runs one generation at a time, ServerSeat.generate)."""
        return requested or max(1, len({seat.client.url for seat in self.seats.values()}))

    def status(
        self, name: str, spec: ModelSpec, loaded: LoadedConfig, *, verify: bool
    ) -> ModelStatus:
        """A server model's line of `localtable models`: up (build, model) or why not,
        from /health and /props only (nothing is generated)."""
        source = spec.source
        assert isinstance(source, ServerSource)
        base = ModelStatus(name=name, kind="server", source=source.label(), state="down")
        try:
            client = _client(source, name)
            client.health()
            props = client.props()
        except (ServerError, LocaltableError) as exc:  # down, or a key that cannot be sent
            return base.model_copy(update={"detail": str(exc)})
        slots = f"{props.total_slots} slot{'s' if props.total_slots != 1 else ''}"
        detail = f"build {props.build_info}, model {props.model_path}, n_ctx {props.n_ctx}, {slots}"
        update: dict[str, object] = {"state": "up", "detail": detail, "path": props.model_path}
        if source.model is not None and not _model_matches(source.model, props.model_path):
            update = {
                "state": "mismatch",
                "detail": f"{detail}; models.toml expects {source.model}",
            }
        elif source.build is not None and props.build_info != source.build:
            update = {
                "state": "mismatch",
                "detail": f"{detail}; models.toml expects build {source.build}",
            }
        return base.model_copy(update=update)

    def describe(self) -> dict[str, object]:
        servers: dict[str, object] = {}
        for seat in self.seats.values():
            s = seat.settings
            servers[s.url] = {
                "build_info": s.build_info,
                "model_path": s.model_path,
                "model_alias": s.model_alias,
                "n_ctx": s.n_ctx,
                "total_slots": s.total_slots,
                "declared_flags": s.declared_flags,
            }
        return {"servers": servers}

    def replay_differences(
        self, record: RunRecord, *, loaded: LoadedConfig | None, allow_urls: frozenset[str]
    ) -> list[str]:
        """What the servers report now that differs from the record. A server that does
        not answer is not a difference: it is BackendUnavailable."""
        diffs = []
        for model in record.models:
            if model.backend != self.name:
                continue
            settings = ServerSettings.model_validate(model.settings)
            client, key_env = trusted_client(model.name, settings, loaded, allow_urls)
            props = _reach(client, model.name, key_env)
            diffs += [f"{settings.url} {change}" for change in identity_changes(settings, props)]
        return diffs


def date_of(text: str) -> date:
    return date.fromisoformat(text)


def server_model_info(
    client: ServerClient, props: Props, template: str | None, name: str
) -> ServerModelInfo:
    """Whether the model adds a BOS token, and its id, from the server's own tokenizer,
    and the size of its vocabulary."""
    try:
        n_vocab = client.n_vocab()
        plain = in_vocabulary(client.url, "/tokenize", client.tokenize("a", special=False), n_vocab)
        marked = in_vocabulary(
            client.url, "/tokenize", client.tokenize("a", special=False, add_special=True), n_vocab
        )
    except ServerError as exc:
        raise BackendUnavailable(f"model {name!r}: {exc}") from None
    add_bos = len(marked) > len(plain) and marked[1 : 1 + len(plain)] == plain
    return ServerModelInfo(
        chat_template=template,
        bos_token=props.bos_token,
        eos_token=props.eos_token,
        add_bos=add_bos,
        bos_id=marked[0] if add_bos else None,
        n_vocab=n_vocab,
    )


def in_vocabulary(url: str, endpoint: str, tokens: list[int], n_vocab: int) -> list[int]:
    """tokens, when every id is one of the model's; an id outside its vocabulary is an
    answer outside the API (it would crash or corrupt whatever reads it next)."""
    bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
    if bad is not None:
        raise ServerBadAnswer(
            f"{url}: {endpoint} answered token id {bad}, outside the model's vocabulary "
            f"(0-{n_vocab - 1})"
        )
    return tokens
