"""JSON over HTTP to a model server, with deadlines: what every backend that talks to a
server shares (the llama-server backend, the OpenAI-compatible one).

Every request has an explicit connect timeout and an overall deadline; every
failure is one line that names the server's URL (never a credential) and says
what kind of failure it was (the classes below), so that a backend can decide
what a failed turn means; an answer that is not what the API promises is a
failure too, never a guess. Nothing here retries: whether a repeat would be
identical is the backend's call.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from localtable.backends.base import BackendDown, TurnFailed
from localtable.backends.urls import public_url

CONNECT_TIMEOUT = 5.0  # seconds to open a connection
QUICK_TIMEOUT = 30.0  # seconds for an answer that generates nothing
MAX_BODY = 64 << 20  # bytes of an answer, at most
RETRY_AFTER_MAX = 3600.0  # seconds: a longer Retry-After is read as this

T = TypeVar("T", bound=BaseModel)
Result = TypeVar("Result")


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


class ServerBusy(ServerError):
    """429: the server did not run the request now; `retry_after` seconds, when it said."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerFailed(ServerError):
    """Any other HTTP error (500, 404: not the server that was expected, ...)."""


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


def error_message(body: bytes, reason: str, api: str = "the server's") -> str:
    """The server's own error message, one line: {"error": {"message": ...}} (llama-server,
    OpenAI), {"error": "..."} (Ollama), {"message": ...} (vLLM) or {"detail": "..."};
    else the HTTP reason."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    message = None
    if isinstance(answer, dict):
        error = answer.get("error")
        if isinstance(error, dict):
            error = error.get("message")
        candidates = (error, answer.get("message"), answer.get("detail"))
        message = next((m for m in candidates if isinstance(m, str) and m.strip()), None)
    if message is None:
        return f"{reason} (not {api} error format)"
    line = " ".join(message.split())
    return line[:200] + ("..." if len(line) > 200 else "")


def retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (a number; an HTTP date is not read), None when absent."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    if seconds is None or seconds != seconds or seconds < 0:  # NaN or negative
        return None
    return min(seconds, RETRY_AFTER_MAX)


class JsonClient:
    """JSON requests to one server. Stateless (a connection per request): safe to
    share between threads. `server` and `api` name it in messages."""

    server = "the server"
    api = "the server's"

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.url = public_url(url)
        self._parts = urlsplit(url)
        self._api_key = api_key
        self.timeout = timeout

    def fail(self, what: str) -> str:
        return f"{self.url}: {what}"

    def _connection(self) -> http.client.HTTPConnection:
        host, port = self._parts.hostname or "", self._parts.port
        if self._parts.scheme == "https":
            return http.client.HTTPSConnection(
                host, port, timeout=CONNECT_TIMEOUT, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT)

    def _connect(self, conn: http.client.HTTPConnection) -> None:
        try:
            conn.connect()
        except ConnectionRefusedError:
            raise ServerDown(self.fail(f"connection refused (is {self.server} running?)")) from None
        except TimeoutError:
            raise ServerDown(self.fail(f"no connection within {CONNECT_TIMEOUT:g} s")) from None
        except ssl.SSLError as exc:
            raise ServerFailed(self.fail(f"TLS failed ({exc.reason or exc})")) from None
        except OSError as exc:
            raise ServerDown(self.fail(f"cannot connect ({exc.strerror or exc})")) from None

    def request(
        self,
        method: str,
        path: str,
        body: object,
        timeout: float,
        events: Callable[[Any], None] | None = None,
        lines: Literal["sse", "ndjson"] = "sse",
    ) -> Any:
        """One request; the decoded JSON of a 200 answer, or a ServerError.

        `timeout` bounds the whole exchange, not each read: a server that drips its
        answer a byte at a time is cut off when the time is up (Deadline). events: the
        answer is a stream (server-sent events, or one JSON object a line), each decoded
        one handed to it as it comes (MAX_BODY in all, at most); returns None."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        conn = self._connection()
        try:
            self._connect(conn)
            assert conn.sock is not None
            conn.sock.settimeout(timeout)
            late = ServerTimeout(self.fail(f"no answer within {timeout:g} s"))
            with Deadline(conn.sock, timeout) as deadline:
                try:
                    conn.request(method, self._parts.path.rstrip("/") + path, data, headers)
                    response = conn.getresponse()
                    wait = retry_after(response.getheader("Retry-After"))
                    if events is not None and response.status == 200:
                        self._events(response, events, lines)
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
                    raise ServerDown(self.fail(closed)) from None
            if deadline.expired:  # cut off by the deadline at the end of a read
                raise late
        finally:
            conn.close()
        return self._decode(response.status, response.reason, raw, wait)

    def _events(
        self,
        response: http.client.HTTPResponse,
        events: Callable[[Any], None],
        lines: Literal["sse", "ndjson"],
    ) -> None:
        """Each event handed over as it comes, until the stream ends: `data: {json}`
        lines up to `data: [DONE]` (sse), or a JSON object a line (ndjson)."""
        left = MAX_BODY
        while left > 0:
            line = response.readline(left)
            if not line:
                return
            left -= len(line)
            if lines == "sse":
                if not line.startswith(b"data: "):
                    continue
                line = line[6:]
                if line.strip() == b"[DONE]":
                    return
            elif not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                raise ServerBadAnswer(self.fail("a streamed event is not JSON")) from None
            events(event)
        raise ServerBadAnswer(self.fail(f"a streamed answer over {MAX_BODY >> 20} MB"))

    def _decode(self, status: int, reason: str, raw: bytes, wait: float | None = None) -> Any:
        if status == 200:
            if len(raw) > MAX_BODY:
                raise ServerBadAnswer(self.fail(f"an answer over {MAX_BODY >> 20} MB"))
            try:
                return json.loads(raw)
            except ValueError:
                raise ServerBadAnswer(self.fail("the answer is not JSON")) from None
        message = error_message(raw, reason, self.api)
        if status in (401, 403):
            raise ServerRefused(self.fail(f"HTTP {status} {message}"))
        if status == 503:
            raise ServerDown(self.fail(f"HTTP 503 {message}"))
        if status == 400:
            raise ServerRejected(self.fail(f"HTTP 400 {message}"))
        if status == 429:
            after = f" (it asks to wait {wait:g} s)" if wait is not None else ""
            raise ServerBusy(self.fail(f"HTTP 429 {message}{after}"), wait)
        raise ServerFailed(self.fail(f"HTTP {status} {message}"))

    def typed(self, answer: Any, model: type[T], endpoint: str) -> T:
        """The answer as `model`, or ServerBadAnswer naming the first field that is not."""
        try:
            return model.model_validate(answer)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "the body"
            raise ServerBadAnswer(
                self.fail(f"{endpoint} answered outside {self.api} API ({where}: {first['msg']})")
            ) from None


def turn_request(call: Callable[[], Result]) -> Result:
    """A request whose failure is the turn's: a 400 fails the turn (the same request
    would be refused again), anything else stops the run (BackendDown: resume goes on
    once the server is back)."""
    try:
        return call()
    except ServerRejected as exc:
        raise TurnFailed(str(exc)) from None
    except ServerError as exc:
        raise BackendDown(str(exc)) from None
