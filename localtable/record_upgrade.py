"""Read records of every schema version as the current one.

Versions 1 and 2 were written when llama.cpp in-process was the only backend:
their models carried llama.cpp's load settings as fields, the record had one
`engine`, and renderers recomputed display limits from the code of the day.
Each upgrade below maps an old record, as raw JSON, onto version 3 without
loss, so old records still render, resume and replay (record.py reads them).
"""

from __future__ import annotations

from typing import Any

TARGET_VERSION = 3  # record.SCHEMA_VERSION, which reads through this module

# What versions 1 and 2 computed in code when they rendered (answers: about half
# the token budget, at most 400 characters; summary lines: 160 characters).
V2_ANSWER_MAX_CHARS = 400
V2_SUMMARY_LINE_MAX_CHARS = 160
_V2_MODEL_SETTINGS = (
    "path", "n_ctx_requested", "n_batch", "n_ubatch", "threads", "gpu_layers",
    "flash_attn", "type_k", "type_v", "repeat_last_n",
)  # fmt: skip
_V2_ENGINE_FIELDS = ("llama_cpp_python", "system_info", "library_sha256")
_V2_MACHINE_FIELDS = ("python", "platform", "cpu_flags")


def v2_answer_max_chars(max_tokens: int) -> int:
    return max(40, min(V2_ANSWER_MAX_CHARS, 2 * max_tokens))


def _model_v2_to_v3(model: dict[str, Any]) -> dict[str, Any]:
    settings = {k: model[k] for k in _V2_MODEL_SETTINGS if k in model}
    settings.setdefault("repeat_last_n", 64)
    common = {k: v for k, v in model.items() if k not in _V2_MODEL_SETTINGS}
    return {**common, "backend": "llamacpp", "settings": settings}


def upgrade_v2(raw: dict[str, Any]) -> dict[str, Any]:
    """A version 1 or 2 record as version 3 (version 1 is version 2 without two
    optional fields)."""
    out = dict(raw)
    out["schema_version"] = TARGET_VERSION
    out["models"] = [_model_v2_to_v3(m) for m in raw.get("models", [])]
    engine = out.pop("engine", None)
    if isinstance(engine, dict):
        out["backends"] = {"llamacpp": {k: engine[k] for k in _V2_ENGINE_FIELDS if k in engine}}
        out["machine"] = {k: engine[k] for k in _V2_MACHINE_FIELDS if k in engine}
    max_tokens = {p["name"]: p["sampling"]["max_tokens"] for p in raw.get("panelists", [])}
    out["turns"] = [
        {**t, "answer_max_chars": v2_answer_max_chars(max_tokens.get(t["panelist"], 192))}
        for t in raw.get("turns", [])
    ]
    if isinstance(raw.get("summary"), dict):
        out["summary"] = {**raw["summary"], "line_max_chars": V2_SUMMARY_LINE_MAX_CHARS}
    return out
