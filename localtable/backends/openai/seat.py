"""One model on one OpenAI-compatible server, as the debate uses it.

A turn is one chat request: the conversation with control-token text broken
(markup.py), the seed and every sampling parameter the server takes, and the
turn's grammar as a JSON schema of its fields (form.py) in the form the server
takes. The answer's JSON comes back as the turn's lines, so the debate reads it
as it reads any backend's text. The record keeps the request (without the
streaming fields) as the generation's prompt and its sha256 as the prompt's hash.

llama-server gets the start of the JSON object as the last, assistant message, up
to the opening of the first value (`{"Reasoning": "`, form.json_start), and goes on
from it: the model decodes no key it cannot choose, and writes its JSON as compactly
as it was begun. Left to start the object itself, the tiny panel's models spent
tokens on whitespace that llama.cpp's schema grammar allows between any two tokens
(`{\n  "Reasoning"\n    : "`, a blank line after a key), and Gemma 3 270M wrote 2.9
times the tokens of its native-server turns (docs/benchmarks.md).

A turn that max_tokens cut goes on after its whole lines (TurnRequest.prefill). A
server asked for text goes on from them as the last, assistant message. Asked for
JSON, a server cannot go on from lines: llama-server primes the schema's grammar
with the reply's start and refuses one that is not JSON ("Failed to initialize
samplers"), others apply the schema to what they generate only. So the schema is
that of the whole reply, its kept lines fields of one allowed value each
(form.Form.after); llama-server gets them in the start of the JSON object, which it
goes on from; the others write them again, with max_tokens grown by what they take.
Either way the text is cut after them.

Failures: a 400 fails the turn (the same request would be refused again);
anything else is BackendDown (the run stops, `localtable resume` runs the turn
again). A request the server dropped is sent again, at most twice, when the
server still lists the same model (and, for llama-server, the same build); a 429
is sent again after the wait it asks for, if that is short.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from localtable.backends.base import (
    BackendDown,
    ChatMessage,
    TurnFailed,
    TurnRequest,
    TurnResult,
)
from localtable.backends.httpjson import (
    ServerBusy,
    ServerDown,
    ServerError,
    ServerRejected,
    turn_request,
)
from localtable.backends.openai import dialects
from localtable.backends.openai.client import OpenAIClient, Reply
from localtable.backends.openai.form import Form, FormError, form_of, json_start, kept_lines
from localtable.backends.openai.jsonlines import JsonLines
from localtable.backends.openai.markup import plain, plain_messages
from localtable.backends.openai.settings import OpenAISettings, identity_now
from localtable.errors import LocaltableError

RETRIES = 2  # repeats of a request the server dropped or was too busy for
BUSY_WAIT_MAX = 60.0  # seconds: a 429 asking for a longer wait stops the run instead
PER_MESSAGE = 16  # tokens a chat template adds per message, at most (bytes counting)
STREAM_FIELDS = ("stream", "stream_options")  # how an answer travels, not what is asked


class Server(Protocol):
    """What a seat needs of its backend."""

    def server_lock(self, url: str) -> threading.Lock: ...

    def count_retry(self) -> None: ...


def request_text(body: dict[str, Any]) -> str:
    """The request as the record keeps it: canonical JSON, without the streaming fields,
    so a streamed turn and an unstreamed one have the same prompt and hash."""
    kept = {k: v for k, v in body.items() if k not in STREAM_FIELDS}
    return json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class OpenAISeat:
    """One model on one server."""

    def __init__(
        self, backend: Server, name: str, settings: OpenAISettings, client: OpenAIClient
    ) -> None:
        self.backend = backend
        self.name = name
        self.settings = settings
        self.client = client
        self.api = dialects.api_of(settings.server, settings.structure)
        self._plain: dict[str, bool] = {}  # text -> whether the server reads it as plain
        self._lock = threading.Lock()

    # -- counting ------------------------------------------------------------------

    def context_size(self) -> int:
        return self.settings.n_ctx

    def _count(self, messages: list[dict[str, str]]) -> int:
        if self.settings.counting == "bytes":
            text = sum(len(m["content"].encode("utf-8")) for m in messages)
            return text + PER_MESSAGE * (len(messages) + 1)
        if self.settings.server == "llama-server":
            return turn_request(lambda: self.client.llama_count(messages))
        return turn_request(lambda: self.client.vllm_count(self.settings.model, messages))

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return self._count(plain_messages(messages, "")[0])

    def count_text_tokens(self, text: str) -> int:
        if self.settings.counting == "bytes":
            return len(text.encode("utf-8"))
        if self.settings.server == "llama-server":
            return len(turn_request(lambda: self.client.llama_tokenize(text, special=False)))
        return turn_request(lambda: self.client.vllm_count(self.settings.model, None, text))

    def _check_plain(self, messages: list[dict[str, str]]) -> None:
        """llama-server: no text sent may hold a control token (with control tokens
        read, it tokenizes as without)."""
        if self.settings.server != "llama-server":
            return
        for message in messages:
            text = message["content"]
            with self._lock:
                known = self._plain.get(text)
            if known is None:
                special = turn_request(lambda t=text: self.client.llama_tokenize(t, special=True))  # type: ignore[misc]
                known = special == turn_request(
                    lambda t=text: self.client.llama_tokenize(t, special=False)  # type: ignore[misc]
                )
                with self._lock:
                    if len(self._plain) > 1024:
                        self._plain.clear()
                    self._plain[text] = known
            if not known:
                raise TurnFailed(
                    f"{self.client.url}: a {message['role']} message holds text the server "
                    "reads as a control token, in a form localtable does not know to break; "
                    "remove it from the question"
                )

    # -- requests ------------------------------------------------------------------

    def changed_server(self) -> list[str] | None:
        """What changed on the server since the record (its version, model, fingerprint);
        None when it does not answer."""
        try:
            return identity_now(self.client, self.settings, self.name).changes(self.settings)
        except (LocaltableError, ServerError):
            return None

    def _send(self, body: dict[str, Any], on_text: Callable[[str], None] | None) -> Reply:
        send = self.client.ollama_chat if self.settings.structure == "ollama_format" else (
            self.client.chat
        )  # fmt: skip
        for attempt in range(RETRIES + 1):
            last = attempt == RETRIES
            try:
                return send(body, on_text)
            except ServerBusy as exc:
                wait = 1.0 if exc.retry_after is None else exc.retry_after
                if wait > BUSY_WAIT_MAX:
                    raise BackendDown(f"{exc}, longer than localtable waits") from None
                if last:
                    raise BackendDown(f"{exc}, {attempt + 1} times") from None
                time.sleep(wait)
            except ServerDown as exc:
                # sent again only to the same server and model: the same request
                changed = None if last else self.changed_server()
                if changed is None:  # down, or asked enough
                    raise BackendDown(str(exc)) from None
                if changed:
                    why = f"the server changed ({'; '.join(changed)})"
                    raise BackendDown(f"{exc}; not sent again: {why}") from None
            except ServerRejected as exc:
                raise TurnFailed(str(exc)) from None
            except ServerError as exc:
                raise BackendDown(str(exc)) from None
            self.backend.count_retry()
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _form(self, grammar: str, prefill: str) -> Form | None:
        """The turn's JSON form (None: no structure asked for); after a cut, that of the
        whole reply, its kept lines fixed (Form.after)."""
        if self.settings.structure == "text":
            return None
        try:
            form = form_of(grammar)
            return form.after(prefill) if prefill else form
        except FormError as exc:
            raise TurnFailed(f"the turn's grammar has no JSON schema: {exc}") from None

    def generate(self, request: TurnRequest) -> TurnResult:
        # One generation at a time per server, as on llama-server's own backend: a
        # server batches concurrent requests together, which changes the numbers.
        with self.backend.server_lock(self.client.url):
            return self._generate(request)

    def _generate(self, request: TurnRequest) -> TurnResult:
        s = self.settings
        form = self._form(request.grammar, request.prefill)
        sampling, prefill, again, start = request.sampling, request.prefill, "", ""
        if form is not None:
            # the reply's start asked for as JSON (the module's docstring says how)
            prefill, again = "", request.prefill
            if s.server == "llama-server":
                start = json_start(again, form.next_key(len(kept_lines(again)) if again else 0))
                if plain(start)[1]:
                    start = ""
            if again and not start:
                grown = self.count_text_tokens(again) + 8 * again.count("\n") + 8
                sampling = sampling.model_copy(update={"max_tokens": sampling.max_tokens + grown})
        messages, notes = plain_messages(request.messages, prefill or start)
        self._check_plain(messages)
        counted = self._count(messages)
        if counted + sampling.max_tokens > s.n_ctx:
            raise TurnFailed(
                f"prompt of {counted} tokens + {sampling.max_tokens} to generate "
                f"exceeds the context of {s.n_ctx}"
            )
        body = dialects.request_body(
            kind=self.api, structure=s.structure, model=s.model, fixed=s.request,
            messages=messages, seed=request.seed, sampling=sampling,
            schema=form.json_schema() if form is not None else None,
            continues=bool(prefill or start),
        )  # fmt: skip
        lines = JsonLines(form.labels()) if form is not None else None
        if lines is not None and start:
            lines.feed(start)
        listener = _listener(request.on_text, lines, seen=len(again))
        started = time.monotonic()
        reply = self._send(body, listener)
        seconds = time.monotonic() - started
        self._check_reply(reply, body)
        sent = prefill or start
        content = reply.content
        if sent and content.startswith(sent):  # a server that echoes the reply's start
            content = content[len(sent) :]
        reply = reply.model_copy(update={"content": start + content})
        text = self._text(reply, form)
        if again:
            if again.startswith(text):  # max_tokens came inside the fixed fields
                text = again
            if not text.startswith(again):
                raise BackendDown(
                    f"{self.client.url}: the answer does not repeat the fixed fields of the "
                    "turn's JSON schema"
                )
            text = text[len(again) :]
        prompt = request_text(body)
        return TurnResult(
            prompt=prompt,
            prompt_tokens=reply.prompt_tokens or counted,
            prompt_sha256=hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
            notes=notes,
            text=text,
            finish_reason="length" if reply.finish_reason == "length" else "stop",
            completion_tokens=reply.completion_tokens,
            prompt_eval_tokens=(
                reply.prompt_eval_tokens
                if reply.prompt_eval_tokens is not None
                else reply.prompt_tokens
            ),  # fmt: skip
            seconds=seconds,
            prompt_eval_seconds=reply.prompt_seconds,
            decode_seconds=reply.decode_seconds,
        )

    def _check_reply(self, reply: Reply, body: dict[str, Any]) -> None:
        """The answer came from the recorded model and server, and, where the server
        says which parameters it used (llama-server), from the request as sent."""
        s, url = self.settings, self.client.url
        if reply.finish_reason not in ("stop", "length"):
            raise BackendDown(
                f"{url}: the generation stopped ({reply.finish_reason or 'no reason'})"
            )
        if reply.model and reply.model not in (s.model, s.model.removesuffix(":latest")):
            raise BackendDown(f"{url}: answered with model {reply.model!r}, not {s.model!r}")
        fp = reply.system_fingerprint
        if s.system_fingerprint and fp and fp != s.system_fingerprint:
            raise BackendDown(
                f"{url}: the server's system_fingerprint is {fp!r}, the record's "
                f"{s.system_fingerprint!r}: it runs another build or configuration"
            )
        if s.server == "llama-server":
            if reply.applied is None:
                raise BackendDown(f"{url}: the answer does not say which parameters it used")
            problems = dialects.not_applied(reply.applied, body)
            if problems:
                raise BackendDown(
                    f"{url}: the server did not apply the request ({'; '.join(problems)})"
                )

    def _text(self, reply: Reply, form: Form | None) -> str:
        """The turn's text: the lines of a JSON answer (those it got to, when max_tokens
        cut it off), or a text answer as it is."""
        if form is None:
            return reply.content
        try:
            if reply.finish_reason != "length":
                return form.text(reply.content)
        except FormError as exc:
            raise BackendDown(
                f"{self.client.url}: the answer does not match the turn's JSON schema ({exc}); "
                'if the server does not apply response_format, set structure = "text" for '
                f"model {self.name!r}"
            ) from None
        lines = JsonLines(form.labels())
        lines.feed(reply.content)
        if lines.broken or not reply.content.lstrip().startswith("{"):
            raise BackendDown(
                f"{self.client.url}: the answer cut off by max_tokens is not the start of "
                f"the turn's JSON object: {reply.content[:60]!r}"
            )
        return lines.text


def _listener(
    on_text: Callable[[str], None] | None, lines: JsonLines | None, seen: int = 0
) -> Callable[[str], None] | None:
    """What receives the answer's pieces: the watcher itself, or through the JSON reader
    that turns them into the turn's lines. The watcher has seen the first `seen`
    characters (the kept lines of a cut turn); the rest of the reply's start, fed to
    the reader already, goes with the first piece."""
    if on_text is None or lines is None:
        return on_text
    shown = seen

    def piece(text: str) -> None:
        nonlocal shown
        lines.feed(text)
        if len(lines.text) > shown:
            on_text(lines.text[shown:])
            shown = len(lines.text)

    return piece
