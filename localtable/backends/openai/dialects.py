"""What each OpenAI-compatible server takes and promises, and a turn's request to it.

Servers differ in three ways that change a run: which sampling parameters they take
(an OpenAI-only server takes temperature and top_p but no top_k; vLLM names the
repeat penalty `repetition_penalty`; Ollama takes every one, but only on its own
/api/chat), how a turn's structure is asked for (a JSON schema in
`response_format`, Ollama's `format`, or no constraint), and whether the same
request gives the same answer. The tables below say so per server, from each
one's documentation and, for llama-server, its source (llama-cpp-python 0.3.36's
llama.cpp: /v1/chat/completions passes every field it does not know to the native
parameters, so seed, top_k, samplers and cache_prompt apply as on /completion).
"""

from __future__ import annotations

from typing import Any

from pydantic import JsonValue

from localtable.backends.openai.client import ModelEntry, OpenAIClient
from localtable.backends.openai.source import ServerKind, Structure
from localtable.record import SamplingRecord

# the OpenAI chat API's own sampling fields: SamplingRecord field -> request field
_OPENAI = {
    "temperature": "temperature", "top_p": "top_p", "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty", "max_tokens": "max_tokens",
}  # fmt: skip
TAKES: dict[str, dict[str, str]] = {
    "llama-server": {**_OPENAI, "top_k": "top_k", "min_p": "min_p", "typical_p": "typical_p",
                     "repeat_penalty": "repeat_penalty"},
    "vllm": {**_OPENAI, "top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repetition_penalty"},
    "sglang": {**_OPENAI, "top_k": "top_k", "min_p": "min_p",
               "repeat_penalty": "repetition_penalty"},
    "lmstudio": {**_OPENAI, "top_k": "top_k", "repeat_penalty": "repeat_penalty"},
    "ollama": {**_OPENAI, "top_k": "top_k", "min_p": "min_p", "typical_p": "typical_p",
               "repeat_penalty": "repeat_penalty", "max_tokens": "num_predict"},
    "other": dict(_OPENAI),
}  # fmt: skip
# the value of each parameter that turns it off: a server that does not take it
# samples as if it were this
NEUTRAL: dict[str, float] = {
    "top_k": 0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0,
    "frequency_penalty": 0.0, "presence_penalty": 0.0, "top_p": 1.0,
}  # fmt: skip
SAMPLER_ORDER = ["penalties", "top_k", "typ_p", "top_p", "min_p", "temperature"]
REPEAT_LAST_N = 64  # llama-cpp-python's penalty window, as the in-process engine has it
# llama-server: every sampler not used set to off, the in-process sampler order, no
# prompt cache, and the parameters it applied echoed back (`verbose`)
LLAMA_FIXED: dict[str, JsonValue] = {
    "samplers": list(SAMPLER_ORDER), "repeat_last_n": REPEAT_LAST_N, "min_keep": 1,
    "top_n_sigma": -1.0, "xtc_probability": 0.0, "dry_multiplier": 0.0, "dynatemp_range": 0.0,
    "mirostat": 0, "n_probs": 0, "cache_prompt": False, "backend_sampling": False,
    "verbose": True,
}  # fmt: skip
# what llama-server echoes and must equal what was sent
ECHOED_EXACT = ("seed", "n_predict", "samplers", "repeat_last_n", "top_k", "mirostat")
ECHOED_FLOAT = ("temperature", "top_p", "min_p", "typical_p", "repeat_penalty")

PROMISES: dict[str, str] = {
    "vllm": "vLLM does not promise the same answer for the same seed: it batches the "
    "requests of all its clients together, and online only batch invariance "
    "(VLLM_BATCH_INVARIANT=1, the same hardware and version) makes an answer repeat, which "
    "it does not report",
    "sglang": "SGLang promises the same answer for the same seed only when started with "
    "--enable-deterministic-inference, which it does not report",
    "lmstudio": "LM Studio takes a seed but does not promise that it repeats an answer",
    "ollama": "Ollama takes a seed but promises the same answer only on the same build and "
    "hardware with one request at a time (OLLAMA_NUM_PARALLEL=1), which it does not report",
    "other": "this server does not say that a seed repeats an answer",
}


def promise(kind: str, slots: int | None) -> tuple[bool, str]:
    """Whether the server promises the same answer for the same request, and why (not)."""
    if kind == "llama-server":
        if slots == 1:
            return True, "llama-server with one slot and no prompt cache repeats an answer"
        return False, (
            f"llama-server has {slots} slots: requests of other clients can share its "
            "batches, which changes the numbers; start it with -np 1 for reproducible runs"
        )
    return False, PROMISES.get(kind, PROMISES["other"])


def detect(client: OpenAIClient, entry: ModelEntry) -> ServerKind:
    """Which server this is, from what /v1/models says of the model (llama-server,
    vLLM and SGLang name themselves in `owned_by`) and the endpoints of their own that
    the others answer (Ollama's /api/version, LM Studio's /api/v0/models or, from 0.4,
    /api/v1/models)."""
    owner = entry.owned_by.lower()
    if owner == "llamacpp":
        return "llama-server"
    if owner in ("vllm", "sglang"):
        return "vllm" if owner == "vllm" else "sglang"
    if client.answers("/api/version"):
        return "ollama"
    if client.answers("/api/v0/models") or client.answers("/api/v1/models"):
        return "lmstudio"
    return "other"


def api_of(kind: str, structure: str) -> str:
    """Whose parameters a request takes: Ollama's own on /api/chat, the OpenAI ones on
    its /v1; every other server's own."""
    if kind == "ollama" and structure != "ollama_format":
        return "other"
    return kind


def structure_for(kind: str) -> Structure:
    return "ollama_format" if kind == "ollama" else "response_format"


def ignored(kind: str) -> list[str]:
    """The sampling parameters this server does not take."""
    return sorted(set(NEUTRAL) - set(TAKES[kind]))


def fixed_request(kind: str, n_ctx: int) -> dict[str, JsonValue]:
    """The part of every request that is the same for every turn."""
    if kind == "llama-server":
        return dict(LLAMA_FIXED)
    if kind == "ollama":
        return {"options": {"repeat_last_n": REPEAT_LAST_N, "num_ctx": n_ctx}}
    return {}


def sampling_fields(kind: str, sampling: SamplingRecord) -> dict[str, Any]:
    values = sampling.model_dump()
    return {wire: values[name] for name, wire in TAKES[kind].items()}


def request_body(
    *,
    kind: str,
    structure: str,
    model: str,
    fixed: dict[str, JsonValue],
    messages: list[dict[str, str]],
    seed: int,
    sampling: SamplingRecord,
    schema: dict[str, Any] | None,
    continues: bool,
) -> dict[str, Any]:
    """A turn's request: the conversation (the last message the reply's start, when it
    `continues`), the seed and every sampling parameter the server takes, and the
    turn's structure in the form the server takes."""
    fields = sampling_fields(kind, sampling)
    if structure == "ollama_format":
        base = fixed.get("options")
        options = {**(base if isinstance(base, dict) else {}), **fields, "seed": seed}
        body: dict[str, Any] = {"model": model, "messages": messages, "options": options}
        if schema is not None:
            body["format"] = schema
        return body
    body = {**fixed, "model": model, "messages": messages, "seed": seed, **fields}
    if schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "turn", "strict": True, "schema": schema},
        }
    if continues and kind in ("llama-server", "vllm", "sglang"):  # the others do it unasked
        body.update(continue_final_message=True, add_generation_prompt=False)
    return body


def not_applied(applied: dict[str, Any], sent: dict[str, Any]) -> list[str]:
    """llama-server's echo of the parameters it used, against what was sent: a server
    that ignored one (an older build, a proxy) gives other numbers."""
    wanted = {**sent, "n_predict": sent["max_tokens"]}
    problems = [
        f"{key} {applied.get(key)!r} instead of {wanted[key]!r}"
        for key in ECHOED_EXACT
        if applied.get(key) != wanted[key]
    ]
    for key in ECHOED_FLOAT:
        value, want = applied.get(key), wanted[key]
        if not isinstance(value, int | float) or abs(value - want) > 1e-6 * max(1.0, abs(want)):
            problems.append(f"{key} {value!r} instead of {want!r}")
    if "response_format" in sent and not applied.get("grammar"):
        problems.append("no grammar from the response_format schema")
    return problems
