"""A small client for llama.cpp's own HTTP server (llama-server), native API only.

Only what localtable needs: GET /health, /props and /v1/models, POST /tokenize,
/detokenize and /completion. Field names are those of the llama.cpp commit vendored in
llama-cpp-python 0.3.36 (tools/server/server-schema.cpp, server-context.cpp).
Every request has an explicit connect timeout and an overall deadline; every failure
is one line that names the server's URL (never a credential); an answer that is
not what the API promises is a failure too, never a guess.

Nothing here retries: whether a repeat would be identical is the backend's call.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from localtable.backends.urls import public_url

CONNECT_TIMEOUT = 5.0  # seconds to open a connection
QUICK_TIMEOUT = 30.0  # seconds for /health, /props, /tokenize, /detokenize
MAX_BODY = 64 << 20  # bytes of an answer, at most

T = TypeVar("T", bound=BaseModel)


class ServerError(Exception):
    """A request got no usable answer; the message is one line naming the URL."""


class ServerDown(ServerError):
    """No answer at all: refused, reset, closed mid-answer, or 503 (still loading).
    The request may not have run; sending it again asks for the same thing."""


class ServerTimeout(ServerError):
    """The server took longer than the read timeout (it may still be working)."""


class ServerRefused(ServerError):
    """401/403: the API key is missing or wrong."""


class ServerRejected(ServerError):
    """400: the server refused this request itself (e.g. a grammar it cannot parse)."""


class ServerFailed(ServerError):
    """Any other HTTP error (500, 404: not a llama-server, ...)."""


class ServerBadAnswer(ServerError):
    """A 200 whose body is not what the API promises."""


class Deadline:
    """Shuts a socket down when `seconds` have passed, so that the read waiting on it
    ends: a socket timeout applies to each read, and an answer sent a byte at a time
    would never hit it. `expired` says whether it fired."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self._sock = sock
        self._fired = threading.Event()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    @property
    def expired(self) -> bool:
        return self._fired.is_set()

    def _expire(self) -> None:
        self._fired.set()
        with contextlib.suppress(OSError):
            # the plain socket's shutdown, also under TLS: SSLSocket.shutdown would drop
            # its TLS state under the reading thread, which then fails with a ValueError
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


class Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class GenerationDefaults(Answer):
    n_ctx: int


class Props(Answer):
    """GET /props: what the server says about its build and model."""

    build_info: str
    model_path: str
    model_alias: str = ""
    total_slots: int
    chat_template: str = ""
    bos_token: str = ""
    eos_token: str = ""
    default_generation_settings: GenerationDefaults

    @property
    def n_ctx(self) -> int:
        """The context of one slot (what one request can use)."""
        return self.default_generation_settings.n_ctx


class ModelMeta(Answer):
    n_vocab: int = Field(ge=1)


class ModelEntry(Answer):
    meta: ModelMeta


class Models(Answer):
    """GET /v1/models: the model the server runs, with its vocabulary size."""

    data: list[ModelEntry] = Field(min_length=1)


class Tokens(Answer):
    tokens: list[int]


class Detokenized(Answer):
    content: str


class Timings(Answer):
    prompt_n: int
    prompt_ms: float
    predicted_n: int
    predicted_ms: float


class Completion(Answer):
    """POST /completion, not streamed, with return_tokens."""

    content: str
    tokens: list[int]
    stop_type: str = Field(description="eos, word, limit or none")
    stopping_word: str = ""
    tokens_predicted: int
    tokens_evaluated: int
    truncated: bool
    timings: Timings
    generation_settings: dict[str, Any]


def _error_message(body: bytes, reason: str) -> str:
    """llama-server's {"error": {"message": ...}}, else the HTTP reason, one line."""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = None
    if not isinstance(message, str):
        return f"{reason} (not llama-server's error format)"
    line = " ".join(message.split())
    return line[:200] + ("..." if len(line) > 200 else "")


class ServerClient:
    """Requests to one llama-server. Stateless (a connection per request): safe to
    share between threads."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.url = public_url(url)
        self._parts = urlsplit(url)
        self._api_key = api_key
        self.timeout = timeout

    def _fail(self, what: str) -> str:
        return f"{self.url}: {what}"

    def _connection(self) -> http.client.HTTPConnection:
        host, port = self._parts.hostname or "", self._parts.port
        if self._parts.scheme == "https":
            return http.client.HTTPSConnection(
                host, port, timeout=CONNECT_TIMEOUT, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT)

    def request(
        self,
        method: str,
        path: str,
        body: object,
        timeout: float,
        events: Callable[[Any], None] | None = None,
    ) -> Any:
        """One request; the decoded JSON of a 200 answer, or a ServerError.

        `timeout` bounds the whole exchange, not each read: a server that drips its
        answer a byte at a time is cut off when the time is up (Deadline). events: the
        answer is a stream of server-sent events, each decoded one handed to it as it
        comes (MAX_BODY in all, at most); returns None."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        conn = self._connection()
        try:
            try:
                conn.connect()
            except ConnectionRefusedError:
                raise ServerDown(
                    self._fail("connection refused (is llama-server running?)")
                ) from None
            except TimeoutError:
                raise ServerDown(
                    self._fail(f"no connection within {CONNECT_TIMEOUT:g} s")
                ) from None
            except ssl.SSLError as exc:
                raise ServerFailed(self._fail(f"TLS failed ({exc.reason or exc})")) from None
            except OSError as exc:
                raise ServerDown(self._fail(f"cannot connect ({exc.strerror or exc})")) from None
            assert conn.sock is not None
            conn.sock.settimeout(timeout)
            late = ServerTimeout(self._fail(f"no answer within {timeout:g} s"))
            with Deadline(conn.sock, timeout) as deadline:
                try:
                    conn.request(method, self._parts.path.rstrip("/") + path, data, headers)
                    response = conn.getresponse()
                    if events is not None and response.status == 200:
                        self._events(response, events)
                        raw = b"{}"
                    else:
                        raw = response.read(MAX_BODY + 1)
                    if response.length and len(raw) <= MAX_BODY:
                        # closed before the Content-Length it promised: cut off
                        raise http.client.IncompleteRead(raw, response.length)
                except TimeoutError:
                    raise late from None
                except (http.client.HTTPException, OSError) as exc:
                    if deadline.expired:
                        raise late from None
                    reason = str(exc) or type(exc).__name__
                    closed = f"the connection closed before the answer ({reason})"
                    raise ServerDown(self._fail(closed)) from None
            if deadline.expired:  # cut off by the deadline at the end of a read
                raise late
        finally:
            conn.close()
        return self._decode(response.status, response.reason, raw)

    def _events(self, response: http.client.HTTPResponse, events: Callable[[Any], None]) -> None:
        """`data: {json}` lines, each handed over as it comes, until the stream ends."""
        left = MAX_BODY
        while left > 0:
            line = response.readline(left)
            if not line:
                return
            left -= len(line)
            if line.startswith(b"data: "):
                try:
                    event = json.loads(line[6:])
                except ValueError:
                    raise ServerBadAnswer(self._fail("a streamed event is not JSON")) from None
                events(event)
        raise ServerBadAnswer(self._fail(f"a streamed answer over {MAX_BODY >> 20} MB"))

    def _decode(self, status: int, reason: str, raw: bytes) -> Any:
        if status == 200:
            if len(raw) > MAX_BODY:
                raise ServerBadAnswer(self._fail(f"an answer over {MAX_BODY >> 20} MB"))
            try:
                return json.loads(raw)
            except ValueError:
                raise ServerBadAnswer(self._fail("the answer is not JSON")) from None
        message = _error_message(raw, reason)
        if status in (401, 403):
            raise ServerRefused(self._fail(f"HTTP {status} {message}"))
        if status == 503:
            raise ServerDown(self._fail(f"HTTP 503 {message}"))
        if status == 400:
            raise ServerRejected(self._fail(f"HTTP 400 {message}"))
        raise ServerFailed(self._fail(f"HTTP {status} {message}"))

    def _typed(self, answer: Any, model: type[T], endpoint: str) -> T:
        try:
            return model.model_validate(answer)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "the body"
            raise ServerBadAnswer(
                self._fail(f"{endpoint} answered outside llama-server's API ({where}: "
                           f"{first['msg']})")
            ) from None  # fmt: skip

    # -- the endpoints -------------------------------------------------------------

    def health(self) -> None:
        answer = self.request("GET", "/health", None, QUICK_TIMEOUT)
        if not isinstance(answer, dict) or answer.get("status") != "ok":
            raise ServerBadAnswer(self._fail('/health did not answer {"status": "ok"}'))

    def props(self) -> Props:
        return self._typed(self.request("GET", "/props", None, QUICK_TIMEOUT), Props, "/props")

    def n_vocab(self) -> int:
        """The model's vocabulary size: every token id the server sends is below it."""
        answer = self.request("GET", "/v1/models", None, QUICK_TIMEOUT)
        return self._typed(answer, Models, "/v1/models").data[0].meta.n_vocab

    def tokenize(self, text: str, *, special: bool, add_special: bool = False) -> list[int]:
        """Token ids of text; special=False keeps control-token text plain (parse_special)."""
        body = {"content": text, "add_special": add_special, "parse_special": special}
        answer = self.request("POST", "/tokenize", body, QUICK_TIMEOUT)
        return self._typed(answer, Tokens, "/tokenize").tokens

    def detokenize(self, tokens: list[int]) -> str:
        answer = self.request("POST", "/detokenize", {"tokens": tokens}, QUICK_TIMEOUT)
        return self._typed(answer, Detokenized, "/detokenize").content

    def completion(
        self, body: dict[str, Any], on_text: Callable[[str], None] | None = None
    ) -> Completion:
        """The completion; with on_text, streamed (`"stream": true`): each piece of
        text goes to on_text as the server sends it, and the answer is put together
        from the pieces and the last event (the same text and tokens as unstreamed)."""
        if on_text is None:
            answer = self.request("POST", "/completion", body, self.timeout)
            return self._typed(answer, Completion, "/completion")
        texts: list[str] = []
        tokens: list[Any] = []
        last: dict[str, Any] = {}

        def event(chunk: Any) -> None:
            nonlocal last
            if not isinstance(chunk, dict):
                raise ServerBadAnswer(self._fail("a streamed event is not an object"))
            piece, ids = chunk.get("content", ""), chunk.get("tokens", [])
            if not isinstance(piece, str) or not isinstance(ids, list):
                raise ServerBadAnswer(self._fail("/completion streamed outside llama-server's API"))
            texts.append(piece)
            tokens.extend(ids)
            last = chunk
            if piece:
                with contextlib.suppress(Exception):  # a listener's bug fails no turn
                    on_text(piece)

        self.request("POST", "/completion", {**body, "stream": True}, self.timeout, event)
        if last.get("stop") is not True:
            raise ServerDown(self._fail("the stream ended before the generation did"))
        answer = {**last, "content": "".join(texts), "tokens": tokens}
        return self._typed(answer, Completion, "/completion")
