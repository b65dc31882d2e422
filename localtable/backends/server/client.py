"""A small client for llama.cpp's own HTTP server (llama-server), native API only.

Only what localtable needs: GET /health, /props and /v1/models, POST /tokenize,
/detokenize and /completion. Field names are those of the llama.cpp commit vendored in
llama-cpp-python 0.3.36 (tools/server/server-schema.cpp, server-context.cpp).
The HTTP part is backends/httpjson.py, shared with the OpenAI-compatible backend:
every request has an explicit connect timeout and an overall deadline; every failure
is one line that names the server's URL (never a credential); an answer that is
not what the API promises is a failure too, never a guess.

Nothing here retries: whether a repeat would be identical is the backend's call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from localtable.backends.httpjson import (
    CONNECT_TIMEOUT,
    MAX_BODY,
    QUICK_TIMEOUT,
    Deadline,
    JsonClient,
    ServerBadAnswer,
    ServerBusy,
    ServerDown,
    ServerError,
    ServerFailed,
    ServerRefused,
    ServerRejected,
    ServerTimeout,
)

__all__ = [
    "CONNECT_TIMEOUT", "MAX_BODY", "QUICK_TIMEOUT", "Deadline", "ServerBadAnswer", "ServerBusy",
    "ServerClient", "ServerDown", "ServerError", "ServerFailed", "ServerRefused",
    "ServerRejected", "ServerTimeout",
]  # fmt: skip


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


class ServerClient(JsonClient):
    """Requests to one llama-server. Stateless (a connection per request): safe to
    share between threads."""

    server = "llama-server"
    api = "llama-server's"

    # -- the endpoints -------------------------------------------------------------

    def health(self) -> None:
        answer = self.request("GET", "/health", None, QUICK_TIMEOUT)
        if not isinstance(answer, dict) or answer.get("status") != "ok":
            raise ServerBadAnswer(self.fail('/health did not answer {"status": "ok"}'))

    def props(self) -> Props:
        return self.typed(self.request("GET", "/props", None, QUICK_TIMEOUT), Props, "/props")

    def n_vocab(self) -> int:
        """The model's vocabulary size: every token id the server sends is below it."""
        answer = self.request("GET", "/v1/models", None, QUICK_TIMEOUT)
        return self.typed(answer, Models, "/v1/models").data[0].meta.n_vocab

    def tokenize(self, text: str, *, special: bool, add_special: bool = False) -> list[int]:
        """Token ids of text; special=False keeps control-token text plain (parse_special)."""
        body = {"content": text, "add_special": add_special, "parse_special": special}
        answer = self.request("POST", "/tokenize", body, QUICK_TIMEOUT)
        return self.typed(answer, Tokens, "/tokenize").tokens

    def detokenize(self, tokens: list[int]) -> str:
        answer = self.request("POST", "/detokenize", {"tokens": tokens}, QUICK_TIMEOUT)
        return self.typed(answer, Detokenized, "/detokenize").content

    def completion(
        self, body: dict[str, Any], on_text: Callable[[str], None] | None = None
    ) -> Completion:
        """The completion; with on_text, streamed (`"stream": true`): each piece of
        text goes to on_text as the server sends it, and the answer is put together
        from the pieces and the last event (the same text and tokens as unstreamed)."""
        if on_text is None:
            answer = self.request("POST", "/completion", body, self.timeout)
            return self.typed(answer, Completion, "/completion")
        texts: list[str] = []
        tokens: list[Any] = []
        last: dict[str, Any] = {}

        def event(chunk: Any) -> None:
            nonlocal last
            if not isinstance(chunk, dict):
                raise ServerBadAnswer(self.fail("a streamed event is not an object"))
            piece, ids = chunk.get("content", ""), chunk.get("tokens", [])
            if not isinstance(piece, str) or not isinstance(ids, list):
                raise ServerBadAnswer(self.fail("/completion streamed outside llama-server's API"))
            texts.append(piece)
            tokens.extend(ids)
            last = chunk
            if piece:
                with contextlib.suppress(Exception):  # a listener's bug fails no turn
                    on_text(piece)

        self.request("POST", "/completion", {**body, "stream": True}, self.timeout, event)
        if last.get("stop") is not True:
            raise ServerDown(self.fail("the stream ended before the generation did"))
        answer = {**last, "content": "".join(texts), "tokens": tokens}
        return self.typed(answer, Completion, "/completion")
