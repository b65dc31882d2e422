"""Several generations on one model as sequences of one context (engine worker side).

On a CPU, a decode step reads every weight once whatever the number of tokens
in it, so N sequences stepped together cost little more than one
(docs/benchmarks.md). A group of GenerateRequests on one model becomes:

1. a fresh llama_context with one sequence per request, its unified KV cache
   sized for all of them (prompt + max_tokens each, padded to 256);
2. the prompts' common prefix evaluated once, as sequence 0, and copied to the
   others (llama_memory_seq_cp: the copies share the cells);
3. the rest of each prompt, all sequences' tokens in one batch per n_batch;
4. then one llama_decode per step carrying each unfinished sequence's last
   token, each sequence sampled from its own logits by its own chain: its own
   seed, sampling settings and grammar (grammar_topk's chain, as the one-at-a-time
   path builds it), so sequences never share random numbers.

llama.cpp is not batch-invariant: which sequences share a step, and when each
leaves, changes the floats. The text of a sequence is decided by the whole
group (its members, their order, their prompts): reproducible when the group is
reproduced, which is why the group is part of the record (Generation.batch).
Prefix reuse across turns (kvslots.py) is not used here: the group's context is
made for the group and freed after it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from localtable.backends.llamacpp import grammar_topk
from localtable.backends.llamacpp.messages import EngineFailure, GenerateRequest, GenerateResult

CTX_PAD = 256  # llama.cpp pads a context to this many cells


@dataclass
class _Sequence:
    """One request decoded as a sequence of the group's context."""

    seq: int
    req: GenerateRequest
    tokens: list[int]
    chain: Any = None
    completion: list[int] = field(default_factory=list)
    sampled: list[int] = field(default_factory=list)
    text: bytes = b""
    finish: str | None = None
    pending: int | None = None  # the token to decode in the next step
    fix: int = 0  # bytes still missing of a multi-byte character (create_completion's rule)

    @property
    def pos(self) -> int:
        return len(self.tokens) + len(self.completion)


def common_prefix(prompts: list[list[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least its last token of its own
    (the sequence's first logits come from it)."""
    n = min(len(p) for p in prompts) - 1
    for i in range(max(0, n)):
        if any(p[i] != prompts[0][i] for p in prompts):
            return i
    return max(0, n)


class _SamplerHost:
    """What Llama._init_sampler and grammar_topk's read of a Llama, with the sequence's
    own seed. Not a copy of the Llama: a copy would free the model when collected."""

    def __init__(self, llm: Any, seed: int) -> None:
        import llama_cpp

        self._model = llm._model
        self._n_vocab = llm._n_vocab
        self._token_eos = llm._token_eos
        self._token_nl = llm._token_nl
        self.last_n_tokens_size = llm.last_n_tokens_size
        self._input_ids = llm._input_ids
        self._seed = seed
        self._init_sampler_of_llama = llama_cpp.Llama._init_sampler

    def _init_sampler(self, **kw: Any) -> Any:
        return self._init_sampler_of_llama(self, **kw)  # type: ignore[arg-type]


def _sampler(llm: Any, req: GenerateRequest, grammar: Any) -> Any:
    """The sequence's chain, as create_completion(seed=...) builds it on a Llama with
    grammar_topk installed: GrammarTopK where it is exact, else llama-cpp-python's own."""
    host: Any = _SamplerHost(llm, req.seed)  # read as a Llama
    s = req.sampling
    return grammar_topk._init_sampler(
        host,
        top_k=s.top_k, top_p=s.top_p, min_p=s.min_p, typical_p=s.typical_p,
        temp=s.temperature, repeat_penalty=s.repeat_penalty,
        frequency_penalty=s.frequency_penalty, presence_penalty=s.presence_penalty,
        tfs_z=1.0, mirostat_mode=0, mirostat_tau=5.0, mirostat_eta=0.1, penalize_nl=True,
        logits_processor=None, grammar=grammar,
    )  # fmt: skip


class _Batch:
    """A llama_batch of up to `size` tokens over `n_seq` sequences."""

    def __init__(self, size: int, n_seq: int) -> None:
        import llama_cpp

        self.size = size
        self.batch = llama_cpp.llama_batch_init(size, 0, n_seq)

    def fill(self, rows: list[tuple[int, int, int, bool]]) -> None:
        """rows: (token, position, sequence, wants logits)."""
        b = self.batch
        for i, (token, pos, seq, logits) in enumerate(rows):
            b.token[i] = token
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits
        b.n_tokens = len(rows)

    def close(self) -> None:
        import llama_cpp

        llama_cpp.llama_batch_free(self.batch)


def decode_group(
    llm: Any,
    requests: list[GenerateRequest],
    prompts: list[list[int]],
    grammars: list[Any],
    threads: int,
) -> list[GenerateResult]:
    """Generate every request of the group together; results in request order."""
    import llama_cpp
    from llama_cpp import _internals as internals

    started = time.monotonic()
    n = len(requests)
    need = sum(len(p) + r.sampling.max_tokens for p, r in zip(prompts, requests, strict=True))
    params = type(llm.context_params).from_buffer_copy(llm.context_params)
    params.n_ctx = -(-need // CTX_PAD) * CTX_PAD
    params.n_seq_max = n
    params.kv_unified = True  # copied prefixes share cells; see the module doc
    params.n_threads = params.n_threads_batch = threads
    ctx = internals.LlamaContext(model=llm._model, params=params, verbose=False)
    n_batch = llm.n_batch
    batch = _Batch(max(n_batch, n), n)
    seqs = [
        _Sequence(seq=i, req=r, tokens=p, chain=_sampler(llm, r, g))
        for i, (r, p, g) in enumerate(zip(requests, prompts, grammars, strict=True))
    ]
    eog = llm._model.vocab
    try:
        shared = common_prefix(prompts) if n > 1 else 0
        rows = [(t, i, 0, False) for i, t in enumerate(prompts[0][:shared])]
        _decode_rows(ctx, batch, rows, n_batch, seqs)
        mem = llama_cpp.llama_get_memory(ctx.ctx)
        for s in seqs[1:]:
            if shared:
                llama_cpp.llama_memory_seq_cp(mem, 0, s.seq, -1, -1)
        rows = [
            (t, i, s.seq, i == len(s.tokens) - 1)
            for s in seqs
            for i, t in enumerate(s.tokens)
            if i >= shared
        ]
        prompt_done = time.monotonic()
        _decode_rows(ctx, batch, rows, n_batch, seqs)
        prompt_seconds = time.monotonic() - prompt_done
        while True:
            live = [s for s in seqs if s.finish is None]
            for s in live:
                _take(llm, s, eog)
            live = [s for s in seqs if s.finish is None]
            if not live:
                break
            rows = [(s.pending, s.pos - 1, s.seq, True) for s in live if s.pending is not None]
            _decode_rows(ctx, batch, rows, n_batch, seqs)
    finally:
        batch.close()
        ctx.close()  # type: ignore[no-untyped-call]
    seconds = time.monotonic() - started
    results = []
    for s in seqs:
        topk = getattr(s.chain, "localtable_grammar_topk", None)
        results.append(
            GenerateResult(
                text=s.text.decode("utf-8", errors="ignore"),
                finish_reason=s.finish or "stop",
                prompt_tokens=len(s.tokens),
                completion_tokens=len(s.completion),
                prompt_eval_tokens=len(s.tokens) - (shared if s.seq else 0),
                prompt_sha256=hashlib.sha256(",".join(map(str, s.tokens)).encode()).hexdigest(),
                seconds=seconds,
                prompt_eval_seconds=prompt_seconds,
                grammar_fast_steps=(topk.fast + topk.probed) if topk else 0,
                grammar_full_steps=topk.full if topk else 0,
                grammar_seconds=topk.seconds if topk else 0.0,
                token_ids=s.sampled,
            )
        )
        s.chain = None  # free the chain (and its grammar) now
    return results


def _decode_rows(
    ctx: Any, batch: _Batch, rows: list[tuple[int, int, int, bool]], n_batch: int, seqs: Any
) -> None:
    """Decode rows in steps of n_batch; after each step, sample each sequence whose
    logits it computed (its `pending` token goes into the next step)."""
    import llama_cpp

    for lo in range(0, len(rows), n_batch):
        step = rows[lo : lo + n_batch]
        batch.fill(step)
        rc = llama_cpp.llama_decode(ctx.ctx, batch.batch)
        if rc != 0:
            raise EngineFailure(f"llama_decode failed ({rc}) on a group of {len(seqs)}")
        for i, (_, _, seq, logits) in enumerate(step):
            if logits:
                s = seqs[seq]
                s.pending = int(s.chain.sample(ctx, i))
                s.sampled.append(s.pending)


def _take(llm: Any, s: _Sequence, vocab: Any) -> None:
    """The sequence's sampled token, as create_completion takes it: end of generation,
    a stop string, or max_tokens end it."""
    import llama_cpp

    token = s.pending
    if token is None:
        return
    if llama_cpp.llama_vocab_is_eog(vocab, token):
        s.finish = "stop"
        s.text = llm.detokenize(s.completion, prev_tokens=s.tokens)
        return
    s.completion.append(token)
    text = llm.detokenize(s.completion, prev_tokens=s.tokens)
    s.text = text
    for k, char in enumerate(text[-3:]):
        k = 3 - k
        for num, pattern in [(2, 192), (3, 224), (4, 240)]:
            if num > k and pattern & char == pattern:
                s.fix = num - k
    if s.fix > 0:  # create_completion skips both checks below until the character ends
        s.fix -= 1
        return
    stops = [st.encode("utf-8") for st in s.req.stop if st.encode("utf-8") in text]
    if stops:
        s.text = text[: text.index(stops[0])]
        s.finish = "stop"
        return
    if len(s.completion) >= s.req.sampling.max_tokens:
        s.finish = "length"
