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

    def total(self, kv_slots: int | None = None) -> int:
        slots = self.kv_slots if kv_slots is None else kv_slots
        return self.file_bytes + slots * (self.kv_bytes + self.compute_bytes)


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


def estimate(name: str, path: Path, n_ctx: int, kv_slots: int, n_ubatch: int) -> ModelNeed:
    info = read_gguf(path)
    meta, arch = info.metadata, info.architecture
    ctx = padded_ctx(n_ctx)
    n_head = _int(meta, f"{arch}.attention.head_count", 1) or 1
    n_embd = _int(meta, f"{arch}.embedding_length")
    n_ff = _int(meta, f"{arch}.feed_forward_length")
    n_vocab = _int(meta, f"{arch}.vocab_size")
    scores = n_ubatch * ctx * n_head * 4
    activations = n_ubatch * (n_embd + n_ff) * 4 * 4
    return ModelNeed(
        name=name,
        file_bytes=path.stat().st_size,
        kv_bytes=ctx * kv_bytes_per_token(info),
        compute_bytes=scores + activations + n_vocab * 4,
        kv_slots=max(1, kv_slots),
    )


def gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def plan_memory(needs: list[ModelNeed], budget: int | None) -> MemoryPlan:
    """Together with a KV cache per panelist if that fits; else together with one KV
    cache per model; else one model at a time (each with as many caches as fit)."""
    full = {n.name: n.kv_slots for n in needs}
    if budget is None or sum(n.total() for n in needs) <= budget:
        return MemoryPlan(budget_bytes=budget, needs=needs, kv_slots=full, in_turn=False)
    single = {n.name: 1 for n in needs}
    together_single = sum(n.total(1) for n in needs)
    if together_single <= budget:
        note = (
            f"the models with a KV cache per panelist need ~{gib(sum(n.total() for n in needs))}"
            f" (budget {gib(budget)}): one KV cache per model, so panelists sharing a model "
            "re-evaluate their prompts"
        )
        return MemoryPlan(budget_bytes=budget, needs=needs, kv_slots=single, in_turn=False,
                          note=note)  # fmt: skip
    slots = {n.name: (n.kv_slots if n.total() <= budget else 1) for n in needs}
    largest = max(needs, key=lambda n: n.total(1))
    note = (
        f"the models need ~{gib(together_single)} together (budget {gib(budget)}): "
        "loading them one at a time, each once per round"
    )
    if largest.total(1) > budget:
        note += f"; {largest.name} alone needs ~{gib(largest.total(1))}, over the budget"
    return MemoryPlan(budget_bytes=budget, needs=needs, kv_slots=slots, in_turn=True, note=note)
