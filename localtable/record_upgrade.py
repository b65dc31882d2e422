"""Read records of every schema version as the current one.

Versions 1 and 2 were written when llama.cpp in-process was the only backend:
their models carried llama.cpp's load settings as fields, the record had one
`engine`, and renderers recomputed display limits from the code of the day.
Each upgrade below maps an old record, as raw JSON, onto the next version without
loss, so old records still render, resume and replay (record.py reads them).
Version 3 generated every turn answer first; version 4 records the order.
Up to version 4 the seeds did not depend on the question; version 5 names the
scheme its seeds were derived by, and a version 4 record reads as the old one.
"""

from __future__ import annotations

from typing import Any

TARGET_VERSION = 5  # record.SCHEMA_VERSION, which reads through this module

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


# Up to version 3 the grammar generated a turn's answer before its reasoning.
V3_ROUND1_ORDER = ["answer", "reasoning"]
V3_LATER_ORDER = ["decision", "answer", "influenced_by", "reasoning"]


def upgrade_v4(raw: dict[str, Any]) -> dict[str, Any]:
    """A version 4 record (or an older one upgraded to 4) as version 5: its seeds were
    derived from the run seed, step and seat alone (seed_scheme "run"), and resume and
    replay derive them the same way. Version 5 holds every field of 4 as it was."""
    return {**raw, "schema_version": TARGET_VERSION, "seed_scheme": "run"}


def upgrade_v3(raw: dict[str, Any]) -> dict[str, Any]:
    """A version 3 record as version 4: each parsed turn gets the order its fields
    were generated in (answer first); open positions were not labelled then."""
    out = dict(raw)
    out["schema_version"] = 4
    turns = []
    for t in raw.get("turns", []):
        if isinstance(t.get("parsed"), dict):
            order = V3_ROUND1_ORDER if t.get("round") == 1 else V3_LATER_ORDER
            t = {**t, "parsed": {**t["parsed"], "order": order}}
        turns.append(t)
    out["turns"] = turns
    return out


def upgrade_v2(raw: dict[str, Any]) -> dict[str, Any]:
    """A version 1 or 2 record as version 3 (version 1 is version 2 without two
    optional fields)."""
    out = dict(raw)
    out["schema_version"] = 3
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
