"""Grammar sampling that checks the likely tokens first (engine worker side).

llama-cpp-python samples with the chain penalties -> grammar -> top_k ->
typical -> top_p -> min_p -> temp -> dist. The grammar step checks every
token of the vocabulary against the grammar at every generated token, though
top_k then keeps only the k best tokens the grammar allows. Measured on the
demo models: 13 ms per generated token for SmolLM2 (49k tokens), 67 ms for
Gemma 3 (262k tokens), more than the model's own decode step.

GrammarTopK replaces grammar + top_k with one step that leaves the very same
array top_k leaves (the same tokens with the same logits, in the same order,
the same size, flagged sorted), so that the samplers after it, and the text,
are unchanged. It sorts the candidates by logit and checks the best 64
against the grammar, then 256, 1024, ... (the grammar judges each token on its
own, so a subset gets the same verdicts) until it can decide:
- k + 1 allowed tokens found, their logits all different: the k best are
  exactly what top_k keeps.
- fewer allowed tokens found (inside a fixed literal such as "Decision: "),
  and every unchecked token's logit is over TAIL_GAP (x temperature, when
  above 1) below the best allowed one: top_k would keep the found ones plus
  tokens whose weight e^(logit - max) is under half an ulp of the running
  float sums in top_p's softmax. They change no sum, and then top_p (p < 1)
  cuts before them or min_p (over e^-20) drops them, so dist never sees them
  and the sampled token is the same. With top_p = 1 and a smaller min_p
  nothing would drop them: then this shortcut is off. (This also
  needs typical_p = 1, which skips the typical step.)
Otherwise - a tie (top_k orders equal logits in std::partial_sort's own way),
or nothing decisive within 16384 candidates - it runs the full grammar and
top_k themselves. The benchmark (localtable/bench.py) compares the texts with bare
llama-cpp-python's on every run; tests/test_grammar_topk_real.py compares
whole generations.

Used only where that reasoning holds: a grammar, temperature > 0, no
mirostat, no logits processor, top_k > 0, typical_p = 1; every other case
keeps llama-cpp-python's chain.
"""

from __future__ import annotations

import ctypes
import math
import types
from typing import Any

FIRST_CHECK = 64
GROWTH = 4
MAX_CHECK = 16384  # past this, checking everything at once is as cheap
# A token whose logit is this far below the best allowed one weighs less than half
# an ulp of 1.0 in the samplers' float sums (e^-20 < 2^-25): see the module doc.
TAIL_GAP = 20.0


class GrammarTopK:
    """A llama_sampler doing grammar + top_k, checking the likely tokens first."""

    def __init__(self, vocab: Any, grammar: str, root: str, k: int, tail_gap: float) -> None:
        import llama_cpp

        self.k = k
        self.tail_gap = tail_gap
        self.fast = 0  # steps decided from a subset
        self.full = 0  # steps that fell back to the whole vocabulary
        self.grammar = llama_cpp.llama_sampler_init_grammar(
            vocab, grammar.encode("utf-8"), root.encode("utf-8")
        )
        if not self.grammar:
            raise ValueError("invalid grammar")
        self.top_k = llama_cpp.llama_sampler_init_top_k(k)
        self._sampler_free = llama_cpp.llama_sampler_free  # usable even at interpreter exit
        iface = llama_cpp.llama_sampler_i()
        # keep the callbacks referenced for as long as llama.cpp may call them
        self._callbacks = (
            llama_cpp.llama_sampler_i_accept(self._accept),
            llama_cpp.llama_sampler_i_apply(self._apply),
            llama_cpp.llama_sampler_i_reset(self._reset),
            llama_cpp.llama_sampler_i_free(self._free),
        )
        iface.accept, iface.apply, iface.reset, iface.free = self._callbacks
        self._iface = iface
        self.sampler = llama_cpp.llama_sampler_init(ctypes.byref(iface), None)

    # -- llama_sampler_i ------------------------------------------------------------

    def _accept(self, smpl: Any, token: int) -> None:
        import llama_cpp

        llama_cpp.llama_sampler_accept(self.grammar, token)

    def _reset(self, smpl: Any) -> None:
        import llama_cpp

        llama_cpp.llama_sampler_reset(self.grammar)

    def _free(self, smpl: Any) -> None:
        if self.grammar:
            self._sampler_free(self.grammar)
            self._sampler_free(self.top_k)
            self.grammar = self.top_k = None

    def _apply(self, smpl: Any, cur_p: Any) -> None:
        import llama_cpp

        if not self._apply_fast(cur_p.contents):
            self.full += 1
            llama_cpp.llama_sampler_apply(self.grammar, cur_p)
            llama_cpp.llama_sampler_apply(self.top_k, cur_p)

    def _apply_fast(self, arr: Any) -> bool:
        """Do grammar + top_k from a subset when that is provably the same; else False."""
        import llama_cpp
        import numpy as np

        n, k = int(arr.size), self.k
        if k <= 0 or k + 1 >= n or arr.sorted:
            return False
        data = np.ctypeslib.as_array(arr.data, shape=(n,))
        logits = data["logit"]
        m = FIRST_CHECK
        while True:
            m = min(m, n)
            best = np.argpartition(logits, n - m)[n - m :] if m < n else np.arange(n)
            best = best[np.argsort(-logits[best], kind="stable")]
            sub = (llama_cpp.llama_token_data * m)()
            sub_np = np.ctypeslib.as_array(sub)
            sub_np[:] = data[best]
            sub_arr = llama_cpp.llama_token_data_array(
                data=ctypes.cast(sub, llama_cpp.llama_token_data_p), size=m, selected=-1,
                sorted=False,
            )  # fmt: skip
            llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(sub_arr))
            allowed = sub_np[sub_np["logit"] != -np.inf]
            if len(allowed):
                head = allowed[: k + 1]["logit"]
                if not np.all(np.isfinite(head)) or np.any(head[:-1] <= head[1:]):
                    return False  # a tie: top_k's order among equals is its own
                unchecked_below = logits[best[-1]] if m < n else -np.inf
                if len(allowed) > k or unchecked_below < head[0] - self.tail_gap:
                    kept = allowed[:k]
                    data[: len(kept)] = kept
                    arr.size = len(kept)
                    arr.sorted = True
                    self.fast += 1
                    return True
            if m >= n or m >= MAX_CHECK:
                return False
            m *= GROWTH


def _init_sampler(self: Any, **kw: Any) -> Any:
    """Llama._init_sampler with GrammarTopK in place of grammar + top_k where exact."""
    import llama_cpp
    from llama_cpp import _internals as internals

    grammar: Any = kw.get("grammar")
    exact = (
        grammar is not None
        and kw.get("temp", 0.8) > 0.0
        and kw.get("mirostat_mode", 0) == 0
        and kw.get("logits_processor") is None
        and kw.get("top_k", 40) > 0
        and kw.get("typical_p", 1.0) >= 1.0
    )
    if not exact:
        return type(self)._init_sampler(self, **kw)
    # The same chain as llama-cpp-python 0.3.36's Llama._init_sampler, step for step.
    sampler: Any = internals.LlamaSampler()  # type: ignore[no-untyped-call]
    sampler.add_penalties(
        n_vocab=self._n_vocab,
        penalty_last_n=self.last_n_tokens_size,
        penalty_repeat=kw.get("repeat_penalty", 1.0),
        penalty_freq=kw.get("frequency_penalty", 0.0),
        penalty_present=kw.get("presence_penalty", 0.0),
    )
    temp = kw.get("temp", 0.8)
    tail_dropped = kw.get("top_p", 0.95) < 1.0 or kw.get("min_p", 0.05) > math.exp(-TAIL_GAP)
    gap = TAIL_GAP * max(1.0, temp) if tail_dropped else float("inf")
    step = GrammarTopK(self._model.vocab, grammar._grammar, grammar._root, kw.get("top_k", 40), gap)
    llama_cpp.llama_sampler_chain_add(sampler.sampler, step.sampler)
    sampler.localtable_grammar_topk = step  # lives as long as the chain that calls it
    min_keep = 1
    sampler.add_typical(kw.get("typical_p", 1.0), min_keep)
    sampler.add_top_p(kw.get("top_p", 0.95), min_keep)
    sampler.add_min_p(kw.get("min_p", 0.05), min_keep)
    sampler.add_temp(kw.get("temp", 0.8))
    sampler.add_dist(self._seed)
    return sampler


def install(llm: Any) -> None:
    """Make this Llama (not its class) sample grammars with GrammarTopK."""
    llm._init_sampler = types.MethodType(_init_sampler, llm)


def steps(llm: Any) -> tuple[int, int]:
    """(steps decided from a subset, steps that checked the whole vocabulary) of the
    last generation."""
    step = getattr(getattr(llm, "_sampler", None), "localtable_grammar_topk", None)
    return (step.fast, step.full) if step is not None else (0, 0)
