"""The messages between the llama.cpp backend and its worker process (both sides import this)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from localtable.backends.promptpiece import PromptPiece
from localtable.record import SamplingRecord


class EngineFailure(Exception):
    """The engine worker could not do what was asked (it survived)."""


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LoadRequest(Message):
    model_key: str
    path: Path
    n_ctx: int
    n_batch: int = 512
    n_ubatch: int = 512
    threads: int
    gpu_layers: int = 0
    flash_attn: bool = False
    # KV caches (llama_contexts) the model may hold at once: one per panelist that
    # uses it, so that each keeps its evaluated prompt (see kvslots.py).
    kv_slots: int = 1


class ModelInfo(Message):
    n_ctx: int
    n_batch: int
    n_ubatch: int
    threads: int
    type_k: str
    type_v: str
    bos_token: str
    eos_token: str
    add_bos: bool
    chat_template: str | None
    system_info: str
    llama_cpp_python: str
    load_seconds: float


class TokenizeRequest(Message):
    model_key: str
    pieces: list[PromptPiece]
    add_bos: bool = False


class TokenizeResult(Message):
    n_tokens: int


class GenerateRequest(Message):
    model_key: str
    pieces: list[PromptPiece]
    add_bos: bool = False
    grammar: str | None
    seed: int
    sampling: SamplingRecord
    stop: list[str] = []
    reuse_prefix: bool = False
    conversation: str = ""  # whose KV cache to reuse (a panelist's name)
    # send each decoded piece back as it comes, (id, "text", str), before the answer
    stream: bool = False


class GenerateResult(Message):
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    prompt_eval_tokens: int
    prompt_sha256: str
    seconds: float
    # llama.cpp's own timers: evaluating the prompt, decoding the generated tokens;
    # the rest of `seconds` is sampling (grammar included) and Python.
    prompt_eval_seconds: float = 0.0
    decode_seconds: float = 0.0
    # Sampling steps where the grammar checked only the likely tokens / the whole
    # vocabulary (localtable/backends/llamacpp/grammar_topk.py).
    grammar_fast_steps: int = 0
    grammar_full_steps: int = 0
    grammar_seconds: float = 0.0  # of `seconds`, in grammar + top_k (grammar_topk.py's clock)
    token_ids: list[int] = []  # the generated tokens, in order


class BatchGenerateRequest(Message):
    """Generations on one model decoded together, as sequences of one context
    (batchdecode.py), in this order; `names` says whose each is."""

    requests: list[GenerateRequest]
    names: list[str]


class BatchGenerateResult(Message):
    """Per request, in order: its result, or why it failed (the others went on)."""

    results: list[GenerateResult | str]
    decoded: list[str]  # the names of the sequences decoded together, in sequence order


class UnloadRequest(Message):
    model_key: str
    # Keep a vocabulary-only copy (a few MB) so that prompts can still be counted
    # while the model waits its turn (models loaded one at a time).
    keep_tokenizer: bool = False


class TokenizerRequest(Message):
    """Load only a model's vocabulary, for counting tokens (a parked model after a crash)."""

    model_key: str
    path: Path


Request = (
    LoadRequest
    | TokenizeRequest
    | GenerateRequest
    | BatchGenerateRequest
    | UnloadRequest
    | TokenizerRequest
)
