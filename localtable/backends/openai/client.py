"""A client for OpenAI-compatible servers: /v1/models and /v1/chat/completions, and the
few endpoints of their own that localtable reads to know what it talks to (llama-server's
/props, /tokenize and token count, vLLM's /version and /tokenize, Ollama's /api/version,
/api/tags and /api/chat).

Field names are those of the OpenAI chat API as these servers implement it
(llama-server: the llama.cpp commit vendored in llama-cpp-python 0.3.36,
tools/server/server-task.cpp; Ollama: docs/api.md). Every answer is checked against
the API (pydantic); a streamed answer is put together from its pieces into the same
Reply as an unstreamed one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from localtable.backends.httpjson import (
    QUICK_TIMEOUT,
    JsonClient,
    ServerBadAnswer,
    ServerDown,
    ServerFailed,
)

TextListener = Callable[[str], None]


class Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class ModelEntry(Answer):
    id: str
    owned_by: str = ""
    max_model_len: int | None = Field(default=None, ge=1)  # vLLM, SGLang
    root: str | None = None  # vLLM: the weights it loaded


class ModelList(Answer):
    data: list[ModelEntry]


class GenerationDefaults(Answer):
    n_ctx: int = Field(ge=1)


class LlamaProps(Answer):
    """llama-server's GET /props: its build and model."""

    build_info: str
    model_path: str
    total_slots: int
    default_generation_settings: GenerationDefaults


class TokenCount(Answer):
    input_tokens: int = Field(ge=0)


class Tokens(Answer):
    tokens: list[int]


class VllmTokens(Answer):
    count: int = Field(ge=0)


class Version(Answer):
    version: str


class OllamaModel(Answer):
    name: str
    model: str = ""
    digest: str = ""


class OllamaTags(Answer):
    models: list[OllamaModel]


class Reply(BaseModel):
    """One generation, as any of the servers answered it."""

    model_config = ConfigDict(frozen=True)
    content: str
    finish_reason: str  # stop, length, or what else the server said
    model: str = ""
    system_fingerprint: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_eval_tokens: int | None = None  # the prompt tokens evaluated, when said
    prompt_seconds: float = 0.0
    decode_seconds: float = 0.0
    applied: dict[str, Any] | None = None  # llama-server: the parameters it used


class Message(Answer):
    content: str | None = None


class Choice(Answer):
    message: Message
    finish_reason: str | None = None


class Usage(Answer):
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)


class Timings(Answer):
    """llama-server's own timings, beside the OpenAI fields."""

    prompt_n: int = 0
    prompt_ms: float = 0.0
    predicted_ms: float = 0.0


class Verbose(Answer):
    generation_settings: dict[str, Any]


class ChatAnswer(Answer):
    model: str = ""
    system_fingerprint: str | None = None
    choices: list[Choice] = Field(min_length=1)
    usage: Usage | None = None
    timings: Timings | None = None
    verbose: Verbose | None = Field(default=None, alias="__verbose")


class OllamaMessage(Answer):
    content: str = ""


class OllamaAnswer(Answer):
    model: str = ""
    message: OllamaMessage
    done: bool
    done_reason: str = ""
    prompt_eval_count: int = 0
    eval_count: int = 0
    prompt_eval_duration: int = 0  # nanoseconds
    eval_duration: int = 0


def _notify(on_text: TextListener | None, piece: str) -> None:
    if on_text is not None and piece:
        with contextlib.suppress(Exception):  # a listener's bug fails no turn
            on_text(piece)


class OpenAIClient(JsonClient):
    """Requests to one server, at its root (a URL given with /v1 loses it here)."""

    server = "the server"
    api = "an OpenAI-compatible server's"

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 600.0) -> None:
        root = url.rstrip("/")
        super().__init__(root.removesuffix("/v1") if root.endswith("/v1") else root, api_key,
                         timeout)  # fmt: skip

    # -- what the server is --------------------------------------------------------

    def models(self) -> list[ModelEntry]:
        answer = self.request("GET", "/v1/models", None, QUICK_TIMEOUT)
        return self.typed(answer, ModelList, "/v1/models").data

    def llama_props(self) -> LlamaProps:
        return self.typed(self.request("GET", "/props", None, QUICK_TIMEOUT), LlamaProps, "/props")

    def version(self, path: str) -> str:
        """vLLM's /version, Ollama's /api/version."""
        return self.typed(self.request("GET", path, None, QUICK_TIMEOUT), Version, path).version

    def ollama_tags(self) -> list[OllamaModel]:
        answer = self.request("GET", "/api/tags", None, QUICK_TIMEOUT)
        return self.typed(answer, OllamaTags, "/api/tags").models

    def answers(self, path: str) -> bool:
        """Whether GET path answers 200 (a probe: any failure is no)."""
        try:
            self.request("GET", path, None, QUICK_TIMEOUT)
        except (ServerFailed, ServerBadAnswer, ServerDown):
            return False
        return True

    # -- tokens --------------------------------------------------------------------

    def llama_count(self, messages: list[dict[str, str]]) -> int:
        """llama-server: the prompt tokens of a chat request, as /v1/chat/completions
        would render and tokenize it."""
        path = "/v1/chat/completions/input_tokens"
        answer = self.request("POST", path, {"messages": messages}, QUICK_TIMEOUT)
        return self.typed(answer, TokenCount, path).input_tokens

    def llama_tokenize(self, text: str, *, special: bool) -> list[int]:
        body = {"content": text, "add_special": False, "parse_special": special}
        answer = self.request("POST", "/tokenize", body, QUICK_TIMEOUT)
        return self.typed(answer, Tokens, "/tokenize").tokens

    def vllm_count(self, model: str, messages: list[dict[str, str]] | None, text: str = "") -> int:
        """vLLM: the tokens of a chat prompt (messages) or of plain text."""
        body: dict[str, Any] = {"model": model}
        if messages is not None:
            body["messages"] = messages
        else:
            body.update(prompt=text, add_special_tokens=False)
        answer = self.request("POST", "/tokenize", body, QUICK_TIMEOUT)
        return self.typed(answer, VllmTokens, "/tokenize").count

    # -- generating ----------------------------------------------------------------

    def chat(self, body: dict[str, Any], on_text: TextListener | None = None) -> Reply:
        """POST /v1/chat/completions; with on_text, streamed: each piece of content goes
        to on_text as it comes, and the reply is put together from the chunks."""
        path = "/v1/chat/completions"
        if on_text is None:
            answer = self.typed(self.request("POST", path, body, self.timeout), ChatAnswer, path)
            return _chat_reply(answer, answer.choices[0].message.content or "",
                               answer.choices[0].finish_reason)  # fmt: skip
        pieces: list[str] = []
        final: dict[str, Any] = {"choices": [{"message": {}}]}
        finish: list[str | None] = [None]

        def event(chunk: Any) -> None:
            if not isinstance(chunk, dict):
                raise ServerBadAnswer(self.fail("a streamed chunk is not an object"))
            for key in ("model", "system_fingerprint", "usage", "timings", "__verbose"):
                if chunk.get(key) is not None:
                    final[key] = chunk[key]
            choices = chunk.get("choices") or []
            if not isinstance(choices, list):
                raise ServerBadAnswer(self.fail(f"{path} streamed outside {self.api} API"))
            for choice in choices[:1]:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                piece = delta.get("content") if isinstance(delta, dict) else None
                if piece is not None and not isinstance(piece, str):
                    raise ServerBadAnswer(self.fail(f"{path} streamed outside {self.api} API"))
                if piece:
                    pieces.append(piece)
                    _notify(on_text, piece)
                if choice.get("finish_reason"):
                    finish[0] = str(choice["finish_reason"])

        streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
        self.request("POST", path, streamed, self.timeout, event)
        if finish[0] is None:
            raise ServerDown(self.fail("the stream ended before the generation did"))
        answer = self.typed(final, ChatAnswer, path)
        return _chat_reply(answer, "".join(pieces), finish[0])

    def ollama_chat(self, body: dict[str, Any], on_text: TextListener | None = None) -> Reply:
        """Ollama's own POST /api/chat (its `format` and every sampling option);
        streamed with on_text, one JSON object a line."""
        path = "/api/chat"
        if on_text is None:
            answer = self.request("POST", path, {**body, "stream": False}, self.timeout)
            return _ollama_reply(self.typed(answer, OllamaAnswer, path), None)
        pieces: list[str] = []
        last: list[Any] = [None]

        def event(chunk: Any) -> None:
            message = chunk.get("message") if isinstance(chunk, dict) else None
            piece = message.get("content", "") if isinstance(message, dict) else None
            if not isinstance(piece, str):
                raise ServerBadAnswer(self.fail(f"{path} streamed outside Ollama's API"))
            pieces.append(piece)
            _notify(on_text, piece)
            last[0] = chunk

        self.request("POST", path, {**body, "stream": True}, self.timeout, event, lines="ndjson")
        if not isinstance(last[0], dict) or last[0].get("done") is not True:
            raise ServerDown(self.fail("the stream ended before the generation did"))
        return _ollama_reply(self.typed(last[0], OllamaAnswer, path), "".join(pieces))


def _chat_reply(answer: ChatAnswer, content: str, finish: str | None) -> Reply:
    usage = answer.usage or Usage()
    timings = answer.timings
    return Reply(
        content=content,
        finish_reason=finish or "",
        model=answer.model,
        system_fingerprint=answer.system_fingerprint,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        prompt_eval_tokens=timings.prompt_n if timings is not None else None,
        prompt_seconds=timings.prompt_ms / 1000 if timings is not None else 0.0,
        decode_seconds=timings.predicted_ms / 1000 if timings is not None else 0.0,
        applied=answer.verbose.generation_settings if answer.verbose is not None else None,
    )


def _ollama_reply(answer: OllamaAnswer, content: str | None) -> Reply:
    return Reply(
        content=answer.message.content if content is None else content,
        finish_reason=answer.done_reason or "stop",
        model=answer.model,
        prompt_tokens=answer.prompt_eval_count,
        completion_tokens=answer.eval_count,
        prompt_eval_tokens=answer.prompt_eval_count,
        prompt_seconds=answer.prompt_eval_duration / 1e9,
        decode_seconds=answer.eval_duration / 1e9,
    )
