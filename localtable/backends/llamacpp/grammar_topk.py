"""Grammar sampling that checks the likely tokens first (engine worker side).

llama-cpp-python samples with the chain penalties -> grammar -> top_k ->
typical -> top_p -> min_p -> temp -> dist. The grammar step checks every
token of the vocabulary against the grammar at every generated token, though
top_k then keeps only the k best tokens the grammar allows. Measured on the
tiny models: 13 ms per generated token for SmolLM2 (49k tokens), 67 ms for
Gemma 3 (262k tokens), more than the model's own decode step.

GrammarTopK replaces penalties + grammar + top_k with one step that leaves the very same
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
- fewer allowed tokens found, and every unchecked token's logit is under the
  best allowed one + ln(min_p): min_p (after top_p) drops each of them, and
  they reach top_p only behind the found ones, so they can change only where
  top_p cuts; the cut is computed with none of their weight and with the most
  they could add ((k - found) x e^(unchecked - best)), and must be the same.
  Seen on Gemma 3 in fixed literals the model did not expect: this decides
  most of the steps that used to check the whole vocabulary. The rungs jump
  straight to as many tokens as min_p needs.
Otherwise, past MAX_CHECK tokens, grammar_probe.PrefixIndex finds the exact
allowed set checking about a tenth of the vocabulary (a rejected token's text
rules out every text it begins), and top_k's k best of it are kept; only a
tie (top_k orders equal logits in std::partial_sort's own way) or a character
left half-written by the last token runs the full grammar and top_k
themselves. The benchmark (backends/llamacpp/bench.py) compares the texts with bare
llama-cpp-python's on every run; tests/test_grammar_topk_real.py compares
whole generations, the arrays dist draws from, and the probe's allowed set
with a whole check at every step of a reply on three vocabularies.
GrammarTopK times itself (`seconds`): the worker reports it per generation.

The repetition penalties come first in the chain, and llama.cpp's penalties
sampler looks every token of the vocabulary up in its table of recent tokens
(1 ms a token on Gemma 3's 262k, 0.2 ms on SmolLM2's 49k) although it can
change only those recent tokens, at most penalty_last_n of them. GrammarTopK
owns that sampler and hands it just the rows of the recent tokens (it keeps
its own copy of the window; the sampler itself computes the new logits, so
they are the same floats), then writes them back.

Used only where that reasoning holds: a grammar, temperature > 0, no
mirostat, no logits processor, top_k > 0, typical_p = 1; every other case
keeps llama-cpp-python's chain.
"""

from __future__ import annotations

import collections
import ctypes
import itertools
import math
import time
import types
from functools import cache
from pathlib import Path
from typing import Any

from localtable.backends.llamacpp import grammar_probe

FIRST_CHECK = 64
GROWTH = 4
MAX_CHECK = 4096  # past this, grammar_probe's check of the whole vocabulary is as cheap
AHEAD = 1024  # rows found at once over the vocabulary (candidates), for the later rungs
SAMPLE = 4096  # logits sampled for the candidates' threshold
# A token whose logit is this far below the best allowed one weighs less than half
# an ulp of 1.0 in the samplers' float sums (e^-20 < 2^-25): see the module doc.
TAIL_GAP = 20.0


class GrammarTopK:
    """A llama_sampler doing grammar + top_k, checking the likely tokens first."""

    def __init__(
        self,
        vocab: Any,
        grammar: str,
        root: str,
        k: int,
        tail_gap: float,
        top_p: float = 1.0,
        min_p: float = 0.0,
        index: grammar_probe.PrefixIndex | None = None,
        penalties: tuple[int, int, float, float, float] | None = None,
    ) -> None:
        """penalties: (n_vocab, penalty_last_n, repeat, frequency, presence) as
        llama_sampler_init_penalties takes them; None: no penalties step."""
        import llama_cpp

        self.k = k
        self.tail_gap = tail_gap
        self.top_p = top_p
        self.min_p = min_p
        self.fast = 0  # steps decided from a subset
        self.full = 0  # steps that fell back to the whole vocabulary
        self.grammar = llama_cpp.llama_sampler_init_grammar(
            vocab, grammar.encode("utf-8"), root.encode("utf-8")
        )
        if not self.grammar:
            raise ValueError("invalid grammar")
        self.top_k = llama_cpp.llama_sampler_init_top_k(k)
        self.penalties = llama_cpp.llama_sampler_init_penalties(*penalties) if penalties else None
        # the sampler's window of recent tokens: the only ones it can change
        self.recent: collections.deque[int] = collections.deque(
            maxlen=max(0, penalties[1]) if penalties else 0
        )
        self.vocab = vocab
        self.index = index
        self.grammar_text = grammar
        self.probed = 0  # steps decided by grammar_probe over the whole vocabulary
        self.seconds = 0.0  # in the grammar and top_k: applying them, accepting tokens
        self.pending = b""  # the accepted text's last character, while incomplete
        self._buf = ctypes.create_string_buffer(grammar_probe.MAX_PIECE)
        self._rows: Any = None
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

        started = time.perf_counter()
        if self.penalties:
            llama_cpp.llama_sampler_accept(self.penalties, token)
            self.recent.append(token)
        llama_cpp.llama_sampler_accept(self.grammar, token)
        if self.index is not None and not llama_cpp.llama_vocab_is_eog(self.vocab, token):
            text = grammar_probe.piece(self.vocab, token, self._buf)
            self.pending = unfinished_character(self.pending + text) if text else b"?"
        self.seconds += time.perf_counter() - started

    def _reset(self, smpl: Any) -> None:
        import llama_cpp

        llama_cpp.llama_sampler_reset(self.grammar)
        if self.penalties:
            llama_cpp.llama_sampler_reset(self.penalties)
            self.recent.clear()
        self.pending = b""

    def _free(self, smpl: Any) -> None:
        if self.grammar:
            self._sampler_free(self.grammar)
            self._sampler_free(self.top_k)
            if self.penalties:
                self._sampler_free(self.penalties)
            self.grammar = self.top_k = self.penalties = None

    def _apply(self, smpl: Any, cur_p: Any) -> None:
        import llama_cpp

        started = time.perf_counter()
        arr = cur_p.contents
        if self.penalties:
            self._penalize(arr, cur_p)
        if not self._apply_fast(arr) and not self._apply_probed(arr):
            self.full += 1
            llama_cpp.llama_sampler_apply(self.grammar, cur_p)
            llama_cpp.llama_sampler_apply(self.top_k, cur_p)
        self.seconds += time.perf_counter() - started

    def _penalize(self, arr: Any, cur_p: Any) -> None:
        """The penalties sampler applied to the rows of the recent tokens only (the
        whole array when its rows are not in token order)."""
        import llama_cpp
        import numpy as np

        if not self.recent:
            return
        n = int(arr.size)
        # a token twice in the window is two equal rows, penalized alike: no need to
        # dedupe (each numpy call costs ~20 us here: a decode has just swept the caches)
        recent = np.fromiter(self.recent, dtype=np.int64, count=len(self.recent))
        if int(recent.max()) < n:
            data = rows_view(ctypes.cast(arr.data, ctypes.c_void_p).value, n)
            small, rows = self._scratch(len(recent))
            rows[:] = data[recent]
            if (rows["id"] == recent).all():
                llama_cpp.llama_sampler_apply(self.penalties, ctypes.byref(small))
                data["logit"][recent] = rows["logit"]
                arr.sorted = False  # as the sampler leaves the array it is given
                return
        llama_cpp.llama_sampler_apply(self.penalties, cur_p)  # rows not in token order

    def _scratch(self, m: int) -> tuple[Any, Any]:
        """A token array of m rows for the grammar to judge (one buffer, reused), and its
        rows as numpy."""
        import llama_cpp

        if self._rows is None or len(self._rows) < m:
            size = max(m, MAX_CHECK)  # grows (to a probe's largest check) when needed
            self._rows_c = (llama_cpp.llama_token_data * size)()
            self._rows = rows_view(ctypes.addressof(self._rows_c), size)
            self._rows_arr = llama_cpp.llama_token_data_array(
                data=ctypes.cast(self._rows_c, llama_cpp.llama_token_data_p), size=0,
                selected=-1, sorted=False,
            )  # fmt: skip
        self._rows_arr.size, self._rows_arr.sorted, self._rows_arr.selected = m, False, -1
        return self._rows_arr, self._rows[:m]

    def _judge(self, rows: Any) -> Any:
        """The rows the grammar allows (their order kept)."""
        import llama_cpp
        import numpy as np

        arr, scratch = self._scratch(len(rows))
        scratch[:] = rows
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(arr))
        return rows[scratch["logit"] != -np.inf]

    def _check(self, ids: Any) -> Any:
        """The subset of these token ids the grammar allows now."""
        import numpy as np

        if len(ids) == 0:
            return ids
        rows = np.zeros(len(ids), dtype=token_data())
        rows["id"] = ids
        return self._judge(rows)["id"]

    def _apply_probed(self, arr: Any) -> bool:
        """grammar + top_k from the exact allowed set (grammar_probe), when it can be used."""
        import numpy as np

        n, k = int(arr.size), self.k
        index = self.index
        if index is None or self.pending or k <= 0 or arr.sorted or n != index.n_vocab:
            return False
        data = rows_view(ctypes.cast(arr.data, ctypes.c_void_p).value, n)
        allowed = index.allowed(self._check, index.groups(self.grammar_text))
        if len(allowed) == 0 or not np.array_equal(data["id"][allowed], allowed):
            return False  # (rows not in token order: the allowed tokens' rows are elsewhere)
        logits = data["logit"][allowed]
        order = allowed[np.argsort(-logits, kind="stable")]
        if not self._keep(arr, data, data[order[: k + 1]], unchecked_below=None):
            return False
        self.probed += 1
        return True

    def _keep(self, arr: Any, data: Any, allowed: Any, unchecked_below: float | None) -> bool:
        """Leave top_k's array if `allowed` (allowed rows, best first) decides it; else False.
        unchecked_below: every allowed token not in `allowed` has a logit at most this
        (None: there is none)."""
        k = self.k
        head = allowed[: k + 1]["logit"].tolist()  # a few dozen: Python is quicker here
        if not all(map(math.isfinite, head)) or any(a <= b for a, b in itertools.pairwise(head)):
            return False  # a tie: top_k's order among equals is its own
        if not (
            unchecked_below is None
            or len(allowed) > k
            or unchecked_below < head[0] - self.tail_gap
            or self._min_p_drops_the_rest(allowed["logit"], unchecked_below)
        ):
            return False
        kept = allowed[:k]
        data[: len(kept)] = kept
        arr.size = len(kept)
        arr.sorted = True
        return True

    def _apply_fast(self, arr: Any) -> bool:
        """Do grammar + top_k from a subset when that is provably the same; else False."""
        import numpy as np

        n, k = int(arr.size), self.k
        if k <= 0 or k + 1 >= n or arr.sorted:
            return False
        data = rows_view(ctypes.cast(arr.data, ctypes.c_void_p).value, n)
        logits = data["logit"]
        top = np.zeros(0, dtype=np.int64)  # rows with every other logit at most theirs
        m = FIRST_CHECK
        while True:
            m = min(m, n)
            if len(top) < m:  # one pass over the vocabulary serves a few rungs
                top = candidates(logits, min(n, max(m, AHEAD)))
            ranked = best_of(logits, top, m)
            allowed = self._judge(data[ranked])
            step = m * GROWTH
            if len(allowed):
                unchecked_below = logits[ranked[-1]] if m < n else -np.inf
                if self._keep(arr, data, allowed, unchecked_below):
                    self.fast += 1
                    return True
                if self.min_p > 0.0:  # check at once as many as min_p needs below the best
                    floor = float(allowed[0]["logit"]) + math.log(self.min_p) - 1e-3
                    step = max(step, int(np.count_nonzero(logits >= floor)) + 1)
            if m >= n or step > MAX_CHECK:
                return False  # grammar_probe decides it, or the whole vocabulary
            m = step

    def _min_p_drops_the_rest(self, found: Any, unchecked_below: float) -> bool:
        """Whether allowed tokens among the unchecked ones (all with logits at most
        unchecked_below, under every found one) cannot change the sampled token.

        top_k would keep at most k - len(found) of them, after the found ones. min_p
        (after top_p) drops every token whose logit is under the best one + ln(min_p):
        if they all are, they never reach dist, and they can change only where top_p
        cuts the found ones, by the softmax mass they add (0 up to (k - len(found)) x
        e^(unchecked_below - best)). top_p's cut only moves later with more mass, so
        the same cut at both ends of that range (and for p a little off, against
        rounding) means the same tokens reach dist, with the same logits."""
        import numpy as np

        if self.min_p <= 0.0 or len(found) > self.k:
            return False
        best = float(found[0])
        if not unchecked_below < best + math.log(self.min_p) - 1e-3:
            return False
        if self.top_p >= 1.0:
            return True  # top_p does nothing
        weights = np.exp(found.astype(np.float64) - best)
        cum = np.cumsum(weights)
        extra = (self.k - len(found)) * math.exp(unchecked_below - best) * 1.001
        cuts = {
            min(int(np.searchsorted(cum / (cum[-1] + mass), p, side="left")), len(found) - 1)
            for mass in (0.0, extra)
            for p in (self.top_p - 1e-5, self.top_p + 1e-5)
        }
        return len(cuts) == 1


@cache
def token_data() -> Any:
    """llama_token_data as a numpy dtype."""
    import llama_cpp
    import numpy as np

    dtype = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
    assert ctypes.sizeof(llama_cpp.llama_token_data) == dtype.itemsize
    return dtype


def rows_view(address: int | None, n: int) -> Any:
    """n llama_token_data rows at this address, as a numpy array over the same memory
    (np.ctypeslib.as_array parses the ctypes type at every call: slower)."""
    import numpy as np

    assert address is not None
    buffer = (ctypes.c_char * (n * token_data().itemsize)).from_address(address)
    return np.frombuffer(memoryview(buffer), dtype=token_data())


def candidates(logits: Any, want: int) -> Any:
    """Indices (ascending) of at least `want` of the highest logits: every logit at or
    above a threshold, so that all the others are under each of theirs.

    The threshold comes from a sample of 4096 logits, a quarter the cost of a partition
    of all of them (Gemma 3: 0.45 ms against 1.1 ms a step). It aims above `want` by
    four standard deviations of the sample's count: a threshold that falls short costs a
    second pass over the vocabulary, one that overshoots only a few more rows for
    best_of (aiming at `want` exactly fell short half the time, and the retry at 4x
    sorted 4096 rows: 0.64 ms a step on SmolLM2's 49k tokens)."""
    import numpy as np

    n = len(logits)
    stride = max(1, n // SAMPLE)
    sample = np.sort(logits[::stride])  # ascending
    expect = want / stride
    take = int(expect + 4.0 * math.sqrt(expect)) + 2
    while take < len(sample):
        top = np.flatnonzero(logits >= sample[-take])
        if len(top) >= want:
            return top
        take *= 2
    return np.arange(n)


def best_of(logits: Any, rows: Any, m: int) -> Any:
    """The m rows (of `rows`, ascending) with the highest logits, highest first, equal
    ones by index; every other row's logit is at most the last one's. A partition
    first: most steps need 64 of the ~2000 candidates, and sorting them all took a
    quarter of a millisecond on Gemma 3."""
    import numpy as np

    if m < len(rows):
        rows = np.sort(rows[np.argpartition(-logits[rows], m - 1)[:m]])
    return rows[np.argsort(-logits[rows], kind="stable")]


def unfinished_character(text: bytes) -> bytes:
    """The end of `text` that starts a UTF-8 character without finishing it (b"" when the
    text ends on a whole character; b"?" when it does not read as UTF-8 there)."""
    for back in range(1, min(4, len(text)) + 1):
        lead = text[-back]
        if lead & 0xC0 == 0x80:
            continue  # a continuation byte: its lead is further back
        size = 1 if lead < 0x80 else 2 if lead >> 5 == 6 else 3 if lead >> 4 == 14 else 4
        if lead >> 3 == 31 or (lead >= 0x80 and lead >> 6 != 3) or size < back:
            return b"?"  # not a lead byte, or more continuation bytes than it leads
        return text[-back:] if size > back else b""
    return b"?" if text else b""


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
    # (its penalties step, first in the chain, is done inside GrammarTopK)
    sampler: Any = internals.LlamaSampler()  # type: ignore[no-untyped-call]
    last_n, repeat = self.last_n_tokens_size, kw.get("repeat_penalty", 1.0)
    freq, present = kw.get("frequency_penalty", 0.0), kw.get("presence_penalty", 0.0)
    off = last_n <= 0 or (repeat == 1.0 and freq == 0.0 and present == 0.0)  # as llama.cpp
    penalties = None if off else (self._n_vocab, last_n, repeat, freq, present)
    temp = kw.get("temp", 0.8)
    tail_dropped = kw.get("top_p", 0.95) < 1.0 or kw.get("min_p", 0.05) > math.exp(-TAIL_GAP)
    gap = TAIL_GAP * max(1.0, temp) if tail_dropped else float("inf")
    step = GrammarTopK(
        self._model.vocab, grammar._grammar, grammar._root, kw.get("top_k", 40), gap,
        top_p=kw.get("top_p", 0.95), min_p=kw.get("min_p", 0.05), index=prefix_index(self._model),
        penalties=penalties,
    )  # fmt: skip
    llama_cpp.llama_sampler_chain_add(sampler.sampler, step.sampler)
    sampler.localtable_grammar_topk = step  # lives as long as the chain that calls it
    min_keep = 1
    sampler.add_typical(kw.get("typical_p", 1.0), min_keep)
    sampler.add_top_p(kw.get("top_p", 0.95), min_keep)
    sampler.add_min_p(kw.get("min_p", 0.05), min_keep)
    sampler.add_temp(kw.get("temp", 0.8))
    sampler.add_dist(self._seed)
    return sampler


def prefix_index(model: Any) -> grammar_probe.PrefixIndex:
    """The model's PrefixIndex, at its first grammar (from the cache on disk, else built:
    2.5 s for 262k tokens) and kept with the model: every llama_context over it shares it."""
    from localtable.models.local import cache_dir

    index = getattr(model, "localtable_prefix_index", None)
    if index is None:
        try:
            directory = cache_dir() / "prefix-index"
        except OSError:  # no cache folder to be had (a read-only home): build it each time
            index = grammar_probe.PrefixIndex(model.vocab)
        else:
            index = grammar_probe.cached(model.vocab, Path(model.path_model), directory)
        model.localtable_prefix_index = index
    return index


def install(llm: Any) -> None:
    """Make this Llama (not its class) sample grammars with GrammarTopK."""
    llm._init_sampler = types.MethodType(_init_sampler, llm)


def steps(llm: Any) -> tuple[int, int]:
    """(steps decided from a subset, steps that checked the whole vocabulary) of the
    last generation."""
    step = getattr(getattr(llm, "_sampler", None), "localtable_grammar_topk", None)
    return (step.fast + step.probed, step.full) if step is not None else (0, 0)


def seconds(llm: Any) -> float:
    """Time the last generation spent in grammar + top_k (GrammarTopK's own clock)."""
    step = getattr(getattr(llm, "_sampler", None), "localtable_grammar_topk", None)
    return step.seconds if step is not None else 0.0
