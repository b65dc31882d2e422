"""How much memory a panel's models need, and whether they fit in a budget.

A loaded model needs its file (mapped, and read whole on the first prompt),
one KV cache per panelist using it (see kvslots.py) and a compute
buffer per KV cache. The KV cache size comes from the GGUF header:
n_ctx x n_layer x (n_embd_k_gqa + n_embd_v_gqa) x 2 bytes (f16). The compute
buffer is estimated from what one prompt step of n_ubatch tokens touches (run.py
keeps n_ubatch small on CPUs): the attention scores (n_ubatch x n_ctx x n_head
floats) and the layer activations. llama.cpp reserves more (Gemma 3 270M:
514 MiB at n_ubatch 512, mostly room for 512 rows of logits it never computes
here), but those pages are never touched.

A run decoded in batches (`--decode batched`) also makes, for each step of a
round, a context of its own on each model with several turns in it
(batchdecode.py): one sequence per turn, each at most n_ctx cells (a prompt and
its max_tokens fit the panelist's context), so a unified KV cache of up to
n_sequences x n_ctx cells and a compute buffer over all of it, besides the
model's own KV caches, which stay loaded. A batch's `--group N` puts the turns
of N debates in one such context. The plan counts it (`group_bytes`).

When the models do not fit together, the run loads them in turn: one model at
a time, each once per round (engine.py, backend.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from localtable.models.gguf import GGUFInfo, read_gguf

CTX_PAD = 256  # llama.cpp pads n_ctx to a multiple of this


class ModelNeed(BaseModel):
    """The estimated memory of one loaded model with its KV caches."""

    model_config = ConfigDict(frozen=True)
    name: str
    file_bytes: int
    kv_bytes: int  # one KV cache (one panelist)
    compute_bytes: int  # one context's compute buffer, as touched
    kv_slots: int
    group_sequences: int = 0  # turns of a batched step on this model (0: none)
    group_bytes: int = 0  # that step's context: KV cache and compute buffer

    def total(self, kv_slots: int | None = None) -> int:
        slots = self.kv_slots if kv_slots is None else kv_slots
        return self.file_bytes + slots * (self.kv_bytes + self.compute_bytes) + self.group_bytes


class MemoryPlan(BaseModel):
    """Whether the models are loaded together or in turn, and with how many KV caches."""

    model_config = ConfigDict(frozen=True)
    budget_bytes: int | None  # None: unknown (no /proc/meminfo) and not given
    needs: list[ModelNeed]
    kv_slots: dict[str, int]  # model name -> KV caches it gets
    in_turn: bool
    note: str = ""  # what was decided and why, for stderr and the record


def _int(meta: Mapping[str, object], key: str, default: int = 0) -> int:
    value = meta.get(key, default)
    if isinstance(value, list):  # per-layer values (some architectures)
        return int(sum(v for v in value if isinstance(v, int)) / max(1, len(value)))
    return int(value) if isinstance(value, int | float) else default


def kv_bytes_per_token(info: GGUFInfo) -> int:
    """f16 K and V for one token over all layers, from the GGUF header."""
    meta, arch = info.metadata, info.architecture
    n_layer = _int(meta, f"{arch}.block_count")
    n_embd = _int(meta, f"{arch}.embedding_length")
    n_head = _int(meta, f"{arch}.attention.head_count", 1) or 1
    n_head_kv = _int(meta, f"{arch}.attention.head_count_kv", n_head) or n_head
    k_len = _int(meta, f"{arch}.attention.key_length", n_embd // n_head)
    v_len = _int(meta, f"{arch}.attention.value_length", n_embd // n_head)
    return n_layer * n_head_kv * (k_len + v_len) * 2


def padded_ctx(n_ctx: int) -> int:
    return -(-n_ctx // CTX_PAD) * CTX_PAD


def _compute_bytes(info: GGUFInfo, ctx: int, n_ubatch: int, logit_rows: int) -> int:
    """A context's compute buffer, as touched: one prompt step's attention scores and
    activations, and the rows of logits a step returns."""
    meta, arch = info.metadata, info.architecture
    n_head = _int(meta, f"{arch}.attention.head_count", 1) or 1
    n_embd = _int(meta, f"{arch}.embedding_length")
    n_ff = _int(meta, f"{arch}.feed_forward_length")
    n_vocab = _int(meta, f"{arch}.vocab_size")
    scores = n_ubatch * ctx * n_head * 4
    activations = n_ubatch * (n_embd + n_ff) * 4 * 4
    return scores + activations + logit_rows * n_vocab * 4


def estimate(
    name: str, path: Path, n_ctx: int, kv_slots: int, n_ubatch: int, group_sequences: int = 0
) -> ModelNeed:
    """group_sequences: the turns a batched step decodes together on this model (a
    context of its own, batchdecode.py); 0 or 1: none."""
    info = read_gguf(path)
    ctx = padded_ctx(n_ctx)
    per_token = kv_bytes_per_token(info)
    group = group_sequences if group_sequences > 1 else 0
    group_ctx = padded_ctx(group * n_ctx)
    return ModelNeed(
        name=name,
        file_bytes=path.stat().st_size,
        kv_bytes=ctx * per_token,
        compute_bytes=_compute_bytes(info, ctx, n_ubatch, 1),
        kv_slots=max(1, kv_slots),
        group_sequences=group,
        group_bytes=group_ctx * per_token + _compute_bytes(info, group_ctx, n_ubatch, group)
        if group
        else 0,
    )


def gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def _grouped(needs: list[ModelNeed]) -> str:
    """What the batched steps' contexts add, for a note; empty when none."""
    parts = [
        f"{n.name}, {n.group_sequences} turns, ~{gib(n.group_bytes)}"
        for n in needs
        if n.group_bytes
    ]
    return f" (with the batched decode groups' contexts: {'; '.join(parts)})" if parts else ""


def plan_memory(needs: list[ModelNeed], budget: int | None) -> MemoryPlan:
    """Together with a KV cache per panelist if that fits; else together with one KV
    cache per model; else one model at a time (each with as many caches as fit). A
    batched decode group's context (ModelNeed.group_bytes) counts in every case."""
    full = {n.name: n.kv_slots for n in needs}
    if budget is None or sum(n.total() for n in needs) <= budget:
        return MemoryPlan(budget_bytes=budget, needs=needs, kv_slots=full, in_turn=False)
    single = {n.name: 1 for n in needs}
    together_single = sum(n.total(1) for n in needs)
    groups = _grouped(needs)
    if together_single <= budget:
        note = (
            f"the models with a KV cache per panelist need ~{gib(sum(n.total() for n in needs))}"
            f"{groups} (budget {gib(budget)}): one KV cache per model, so panelists sharing a "
            "model re-evaluate their prompts"
        )
        return MemoryPlan(budget_bytes=budget, needs=needs, kv_slots=single, in_turn=False,
                          note=note)  # fmt: skip
    slots = {n.name: (n.kv_slots if n.total() <= budget else 1) for n in needs}
    largest = max(needs, key=lambda n: n.total(1))
    note = (
        f"the models need ~{gib(together_single)} together{groups} (budget {gib(budget)}): "
        "loading them one at a time, each once per round"
    )
    if largest.total(1) > budget:
        note += f"; {largest.name} alone needs ~{gib(largest.total(1))}, over the budget"
        if largest.group_bytes and largest.total(1) - largest.group_bytes <= budget:
            note += (
                f", ~{gib(largest.group_bytes)} of it for decoding {largest.group_sequences} "
                "turns in one batch: --decode sequential (or a smaller --group) fits"
            )
    return MemoryPlan(budget_bytes=budget, needs=needs, kv_slots=slots, in_turn=True, note=note)
