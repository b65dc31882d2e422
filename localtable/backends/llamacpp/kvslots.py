"""One KV cache per conversation over one loaded model (engine worker side).

From round 2 on, a panelist's prompt is its previous prompt + its answer + the
new round's messages. Keeping that prefix evaluated saves reading it again,
but a llama_context holds one prefix: with two panelists on one model file,
each turn would evict the other's. So a loaded model gets up to `max_slots`
llama_contexts, one per conversation, all sharing the model's weights.

A reused KV entry must be the very one a cold evaluation of the new prompt
would compute, bit for bit, or the transcript changes. Three rules ensure it:
- Only prompt tokens are kept, never generated ones: a generated token's
  entry (decoded alone) differs from the same token inside a prompt batch.
- llama.cpp's CPU kernels for repacked weights (Q4_0, Q4_K, IQ4_NL on AVX2:
  Gemma 3 270M's Q4_K_M) multiply prompt rows 4 at a time and the leftover
  rows of a batch one at a time, and the two round differently. Every prompt
  step starts on a multiple of 4 (prompt_steps), so only the prompt's last
  len % 4 tokens take the one-row path. So the reuse point is a multiple
  of 4 (the new part's rows then group as in a cold run), and the last len % 4
  tokens of an evaluated prompt are not reused (a longer prompt groups them 4
  at a time).
- Every prompt step has at least MIN_STEP (8) tokens and starts on a row-group
  boundary, in cold and reused evaluations alike (prompt_steps): Gemma 3's
  logits after a last step of 2, 4 or 6 tokens differed from those of the
  same prompt evaluated in larger steps; from 8 tokens on they agree. The
  worker evaluates all but the prompt's last 8-15 tokens this way (prefill),
  and llama-cpp-python's generate() the rest as one step.
Truncating a context in place keeps its cells where a cold evaluation puts
them. tests/test_reuse_real.py checks the logits bit for bit against a cold
evaluation on both demo models (the rounding rule was found there: Gemma's
logits differed when the reuse point was not a multiple of 4).

Why contexts and not the alternatives (measured, see docs/benchmarks.md):
- llama_state_seq_get/set_data snapshots restore a prefix into cells 0..n-1.
  On a sliding-window model (Gemma 3) the cells outside the window are not
  saved, the restored layout differs from a cold run's, and so do the logits.
- Sequences in one context either share a unified cache (cells of several
  sequences interleave, which changes the order of the attention sums) or
  get a stream each (the same memory as a context, plus a full-buffer copy on
  every switch and a decode loop of our own instead of llama-cpp-python's).
- A context costs its KV cache (n_ctx x n_layer x (n_embd_k_gqa + n_embd_v_gqa)
  x 2 bytes) and ~0.1 s to create; it is created only when a second
  conversation needs the model.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from dataclasses import dataclass, field
from typing import Any

from localtable.backends.llamacpp import grammar_topk

MIN_STEP = 8  # a prompt step of fewer tokens takes other kernel paths (see above)
ROW_GROUP = 4  # rows per step of llama.cpp's repacked CPU matmul (see above)


def prompt_steps(start: int, end: int, max_step: int) -> list[tuple[int, int]]:
    """[start, end) as steps of at most max_step tokens, each at least MIN_STEP long and
    starting on a ROW_GROUP boundary; none when the span is shorter than MIN_STEP."""
    assert start % ROW_GROUP == 0 and end % ROW_GROUP == 0
    size = max_step - max_step % ROW_GROUP
    assert size >= MIN_STEP + ROW_GROUP
    if end - start < MIN_STEP:
        return []
    bounds = list(range(start, end, size)) + [end]
    if bounds[-1] - bounds[-2] < MIN_STEP:  # a short last step: take it from the one before
        bounds[-2] = bounds[-1] - MIN_STEP
    return list(zip(bounds, bounds[1:], strict=False))


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# instance attributes a generation sets on a Llama for its own duration (worker.py)
TRANSIENT = ("generate",)


def share_weights(llm: Any) -> Any:
    """A Llama with its own llama_context (KV cache) over `llm`'s loaded model.

    Relies on llama-cpp-python 0.3.36 internals (the version is pinned): the
    copy shares the model, tokenizer and metadata; everything that belongs to
    a context is made anew. The context registers itself to close before the
    model does, so freeing the model first is safe.
    """
    import numpy as np
    from llama_cpp import _internals as internals

    # Not copy.copy: Llama pickles by its constructor arguments, so a copy would
    # load the model again (measured: +200 MB per panelist).
    twin = object.__new__(type(llm))
    twin.__dict__.update(llm.__dict__)
    # What a generation in flight on `llm` set on it (worker.py wraps its `generate`)
    # is not the twin's: copied, the twin's tokens would be decoded in llm's context.
    for in_flight in TRANSIENT:
        twin.__dict__.pop(in_flight, None)
    twin._stack = contextlib.ExitStack()
    twin._ctx = twin._stack.enter_context(
        contextlib.closing(
            internals.LlamaContext(model=llm._model, params=llm.context_params, verbose=False)
        )
    )
    twin._batch = twin._stack.enter_context(
        contextlib.closing(
            internals.LlamaBatch(
                n_tokens=llm.n_batch, embd=0, n_seq_max=llm.context_params.n_ctx, verbose=False
            )
        )
    )
    twin._candidates = internals.LlamaTokenDataArray(n_vocab=llm._n_vocab)
    twin.input_ids = np.ndarray(llm.input_ids.shape, dtype=np.intc)
    twin.scores = np.ndarray(llm.scores.shape, dtype=np.single)
    twin.n_tokens = 0
    twin._requires_eval = True
    twin._sampler = None
    twin._mirostat_mu = ctypes.c_float(10.0)
    twin.cache = None
    twin._lora_adapter = None
    return twin


@dataclass
class KVSlot:
    """A llama_context and the batch-evaluated prompt tokens its KV cache holds."""

    llm: Any
    owner: str | None = None
    tokens: list[int] = field(default_factory=list)  # the prompt whose KV entries it holds
    exact: int = 0  # how many of them a cold evaluation would compute the same
    last_used: int = 0

    def __post_init__(self) -> None:
        grammar_topk.install(self.llm)  # also for a twin, whose __dict__ has the original's

    def prepare(self, tokens: list[int], reuse: bool) -> int:
        """Keep in the KV cache only a prefix this prompt shares; return its length."""
        common = common_prefix(self.tokens[: self.exact], tokens) if reuse else 0
        common = max(0, min(common, len(tokens) - MIN_STEP))
        common -= common % ROW_GROUP
        if common == 0:
            self.clear()
            return 0
        self.llm.n_tokens = common
        self.llm._ctx.kv_cache_seq_rm(-1, common, -1)
        self.tokens = self.tokens[:common]
        self.exact = common
        return common

    def prefill(self, tokens: list[int]) -> None:
        """After prepare: evaluate the prompt up to its last 8-15 tokens in prompt_steps;
        create_completion then evaluates the rest (at least MIN_STEP tokens) as one step."""
        end = (len(tokens) - MIN_STEP) // ROW_GROUP * ROW_GROUP
        for lo, hi in prompt_steps(self.llm.n_tokens, end, self.llm.context_params.n_ubatch):
            self.llm.eval(tokens[lo:hi])

    def keep_prompt(self, tokens: list[int]) -> None:
        """After evaluating `tokens` (and generating): keep only the prompt's KV entries."""
        n = min(self.llm.n_tokens, len(tokens))
        self.llm.n_tokens = n
        self.llm._ctx.kv_cache_seq_rm(-1, n, -1)
        self.tokens = tokens[:n]
        evaluated_whole_prompt = n == len(tokens)
        batches_align = self.llm.context_params.n_ubatch % ROW_GROUP == 0
        self.exact = n - n % ROW_GROUP if evaluated_whole_prompt and batches_align else 0

    def clear(self) -> None:
        self.llm.reset()
        self.llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        self.tokens = []
        self.exact = 0


class SlotPool:
    """The KV slots of one loaded model: the model's own context, then up to
    max_slots - 1 more, created when another conversation needs one.

    Generations of one round may run at the same time (the worker runs each in a
    thread of its own): a slot serves one of them at a time, from acquire to
    release, and a generation that finds every slot busy waits for one."""

    def __init__(self, llm: Any, max_slots: int) -> None:
        self.slots = [KVSlot(llm)]
        self.max_slots = max(1, max_slots)
        self._clock = 0
        self._free = threading.Condition()
        self._busy: set[int] = set()  # id() of the slots in use

    def acquire(self, conversation: str, tokens: list[int], reuse: bool) -> KVSlot:
        """The slot for this turn, held until release(): the conversation's own, else a
        free or new one, else the free one whose cached prompt shares most with this one
        (then the least recently used). Without reuse, the first free slot (evaluated
        cold). Waits while every slot the turn could take is busy."""
        with self._free:
            while (slot := self._pick(conversation, tokens, reuse)) is None:
                self._free.wait()
            self._busy.add(id(slot))
            self._clock += 1
            slot.owner = conversation if reuse else None
            slot.last_used = self._clock
            return slot

    def release(self, slot: KVSlot) -> None:
        with self._free:
            self._busy.discard(id(slot))
            self._free.notify_all()

    def _pick(self, conversation: str, tokens: list[int], reuse: bool) -> KVSlot | None:
        free = [slot for slot in self.slots if id(slot) not in self._busy]
        if not reuse:
            return free[0] if free else None
        for slot in self.slots:
            if slot.owner == conversation:
                # its own prefix; a conversation has one turn in flight at a time
                return None if id(slot) in self._busy else slot
        for slot in free:
            if slot.owner is None:
                return slot
        if len(self.slots) < self.max_slots:
            slot = KVSlot(share_weights(self.slots[0].llm))
            self.slots.append(slot)
            return slot
        if not free:
            return None
        return max(free, key=lambda s: (common_prefix(s.tokens, tokens), -s.last_used))

    def add_spares(self) -> None:
        """Create the contexts a turn would otherwise create when it first needs one
        (70-80 ms each for a small model: the KV cache and the compute graph's buffers).
        The worker calls it while another model loads, on a core the load leaves idle.
        A context that cannot be made now (memory) is left to the turn that needs it,
        whose error then says so."""
        while len(self.slots) < self.max_slots:
            try:
                slot = KVSlot(share_weights(self.slots[0].llm))
            except ValueError:  # llama.cpp could not create the context
                return
            with self._free:
                self.slots.append(slot)

    def close(self) -> None:
        """Free the extra contexts; the first slot's belongs to the model's Llama."""
        for slot in self.slots[1:]:
            slot.llm.close()
        del self.slots[1:]
