"""The engine worker: the only process that loads llama.cpp.

llama.cpp can die in ways no `try` catches (SIGSEGV on a bad grammar, SIGABRT
on a backend assert, SIGKILL when memory runs out). Running it here, in a
child process, turns each of those into a failed turn in the parent instead of
a dead run. The worker ignores SIGINT, SIGTERM and SIGHUP: stopping is the
parent's to handle. It dies with its parent, so a killed run leaves nothing
generating behind it.

Each generation runs in a thread of its own, so that the turns of a round can
run at the same time (Debate.run); each takes a KV slot of its own (kvslots.py)
and its share of the configured threads. Counting tokens answers at once; a
load or an unload first waits for the generations in flight.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import functools
import hashlib
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from localtable.backends.llamacpp import batchdecode, grammar_topk, pieces, threadload
from localtable.backends.llamacpp.kvslots import SlotPool
from localtable.backends.llamacpp.messages import (
    BatchGenerateRequest,
    BatchGenerateResult,
    EngineFailure,
    GenerateRequest,
    GenerateResult,
    LoadRequest,
    ModelInfo,
    Request,
    TokenizeRequest,
    TokenizeResult,
    TokenizerRequest,
    UnloadRequest,
)
from localtable.backends.promptpiece import PromptPiece

# The last lines llama.cpp logged: the real reason a model failed to load is only there.
_LOG: deque[str] = deque(maxlen=40)
# Threads whose llama.cpp lines are not kept: a context made beside a load logs
# hundreds, which would push the load's own reason out of _LOG.
_UNLOGGED: set[int] = set()


# The installed callback: llama.cpp holds a raw pointer to it, so it must never be freed.
_CAPTURE: Any = None


def _install_log_capture() -> None:
    """Send llama.cpp's log lines to _LOG (once per process)."""
    global _CAPTURE
    import llama_cpp

    if _CAPTURE is not None:
        return

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        line = text.decode("utf-8", errors="replace").strip()
        if line and threading.get_ident() not in _UNLOGGED:
            _LOG.append(line)

    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
    _CAPTURE = capture


def _add_spares(pools: list[SlotPool]) -> None:
    _UNLOGGED.add(threading.get_ident())
    try:
        for pool in pools:
            pool.add_spares()
    finally:
        _UNLOGGED.discard(threading.get_ident())


def _load_failure_reason() -> str:
    keep = ("error", "failed", "invalid", "unknown", "unsupported", "corrupt", "exceed")
    for line in reversed(_LOG):
        if any(k in line.lower() for k in keep):
            return line
    return _LOG[-1] if _LOG else "no details from llama.cpp"


class Worker:
    def __init__(self) -> None:
        self.models: dict[str, Any] = {}
        self.valid_grammars: set[str] = set()
        # Per model, its KV caches: one per conversation, each holding only
        # prompt tokens evaluated in a batch (see localtable/backends/llamacpp/kvslots.py).
        self.pools: dict[str, SlotPool] = {}
        # Reuse is exact only where tested: on the CPU. A GPU's kernels depend on the
        # batch size in other ways (e.g. CUDA's matrix-vector path for <= 8 rows).
        self.cpu_only: dict[str, bool] = {}
        # Vocabulary-only models of unloaded ("parked") models, for counting tokens.
        self.tokenizers: dict[str, Any] = {}
        self.threads: dict[str, int] = {}  # per model, as configured: the most it may use
        self.governor = None if threadload.fixed_by_environment() else threadload.ThreadGovernor()
        self.lanes = 0  # generations in flight: they share the configured threads
        self._lanes_lock = threading.Lock()  # also keeps the governor's looks one at a time

    def handle(self, req: Request, on_piece: Callable[[str], None] | None = None) -> Any:
        if isinstance(req, LoadRequest):
            return self.load(req)
        if isinstance(req, TokenizeRequest):
            n = len(self.tokens(req.model_key, req.pieces)) + int(req.add_bos)
            return TokenizeResult(n_tokens=n)
        if isinstance(req, GenerateRequest):
            return self.generate(req, on_piece if req.stream else None)
        if isinstance(req, BatchGenerateRequest):
            return self.generate_group(req)
        if isinstance(req, UnloadRequest):
            path = self.models[req.model_key].model_path if req.model_key in self.models else None
            self.unload(req.model_key)
            if req.keep_tokenizer and path is not None:
                self.tokenizers[req.model_key] = self._vocab_only(path)
            return None
        if isinstance(req, TokenizerRequest):
            if req.model_key not in self.models:
                self.tokenizers[req.model_key] = self._vocab_only(str(req.path))
            return None
        raise EngineFailure(f"unknown request {type(req).__name__}")

    def load(self, req: LoadRequest) -> ModelInfo:
        import llama_cpp

        started = time.monotonic()
        _LOG.clear()
        # The models loaded before this one get their other KV caches meanwhile: loading
        # is one thread's work (mostly the vocabulary: 0.6 s for Gemma 3's 262k tokens).
        # Only on the CPU, where each panelist keeps a cache of its own (generate).
        spares = [
            pool for key, pool in self.pools.items() if key != req.model_key and self.cpu_only[key]
        ]
        filler = threading.Thread(target=_add_spares, args=(spares,))
        filler.start()
        try:
            llm = llama_cpp.Llama(
                model_path=str(req.path),
                n_ctx=req.n_ctx,
                n_batch=req.n_batch,
                n_ubatch=req.n_ubatch,
                n_threads=req.threads,
                n_threads_batch=req.threads,
                n_gpu_layers=req.gpu_layers,
                flash_attn=req.flash_attn,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise EngineFailure(
                f"llama.cpp could not load {req.path}: {_load_failure_reason()} ({exc})"
            ) from None
        finally:
            filler.join()
        self.unload(req.model_key)
        pieces.install(llm)
        self.models[req.model_key] = llm
        self.pools[req.model_key] = SlotPool(llm, req.kv_slots)
        self.cpu_only[req.model_key] = req.gpu_layers == 0
        self.threads[req.model_key] = req.threads
        vocab = llm._model.vocab
        bos, eos = llm.token_bos(), llm.token_eos()

        def text_of(tok: int) -> str:
            if tok < 0:
                return ""
            return str(llm._model.token_get_text(tok))

        return ModelInfo(
            n_ctx=llm.n_ctx(),
            n_batch=llm.n_batch,
            n_ubatch=llm.context_params.n_ubatch,
            threads=req.threads,
            type_k="f16" if llm.context_params.type_k == 1 else str(llm.context_params.type_k),
            type_v="f16" if llm.context_params.type_v == 1 else str(llm.context_params.type_v),
            bos_token=text_of(bos),
            eos_token=text_of(eos),
            add_bos=bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
            chat_template=llm.metadata.get("tokenizer.chat_template"),
            system_info=llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
            llama_cpp_python=llama_cpp.__version__,
            load_seconds=time.monotonic() - started,
        )

    def _vocab_only(self, path: str) -> Any:
        import llama_cpp
        from llama_cpp import _internals as internals

        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        try:
            return internals.LlamaModel(path_model=path, params=params, verbose=False)
        except ValueError as exc:
            raise EngineFailure(f"cannot read the vocabulary of {path}: {exc}") from None

    def unload(self, key: str) -> None:
        tokenizer = self.tokenizers.pop(key, None)
        if tokenizer is not None:
            tokenizer.close()
        pool = self.pools.pop(key, None)
        if pool is not None:
            pool.close()
        self.cpu_only.pop(key, None)
        self.threads.pop(key, None)
        llm = self.models.pop(key, None)
        if llm is not None:
            llm.close()

    def close(self) -> None:
        for key in [*self.models, *self.tokenizers]:
            self.unload(key)

    def _model(self, key: str) -> Any:
        if key not in self.models:
            raise EngineFailure(f"model {key[:12]} is not loaded in the engine")
        return self.models[key]

    def tokens(self, key: str, pieces: list[PromptPiece]) -> list[int]:
        """Tokenize piece by piece: only template text may contain control tokens."""
        vocab = self.tokenizers.get(key) or self._model(key)  # a parked model's vocabulary
        out: list[int] = []
        for piece in pieces:
            out += vocab.tokenize(piece.text.encode("utf-8"), add_bos=False, special=piece.special)
        return out

    def prepared(
        self, llm: Any, key: str, req: GenerateRequest, n_ctx: int
    ) -> tuple[list[int], Any]:
        """A request's prompt tokens and its parsed grammar (or None), alone or in a
        group: a prompt that leaves no room for max_tokens is refused before decoding."""
        import llama_cpp

        tokens = self.tokens(key, req.pieces)
        if req.add_bos:
            tokens = [llm.token_bos(), *tokens]
        if len(tokens) + req.sampling.max_tokens > n_ctx:
            raise EngineFailure(
                f"prompt of {len(tokens)} tokens + {req.sampling.max_tokens} to generate "
                f"exceeds the context of {n_ctx}"
            )
        grammar = None
        if req.grammar is not None:
            self.check_grammar(llm, req.grammar)
            grammar = llama_cpp.LlamaGrammar.from_string(req.grammar, verbose=False)  # type: ignore[attr-defined]
        return tokens, grammar

    def check_grammar(self, llm: Any, grammar: str) -> None:
        """llama.cpp returns NULL for a grammar it cannot parse; using it would segfault."""
        import llama_cpp

        digest = hashlib.sha256(grammar.encode()).hexdigest()
        if digest in self.valid_grammars:
            return
        sampler = llama_cpp.llama_sampler_init_grammar(
            llm._model.vocab, grammar.encode("utf-8"), b"root"
        )
        if not sampler:
            raise EngineFailure(f"invalid grammar (sha256 {digest[:12]}): {_load_failure_reason()}")
        llama_cpp.llama_sampler_free(sampler)
        self.valid_grammars.add(digest)

    def generate(
        self, req: GenerateRequest, on_piece: Callable[[str], None] | None = None
    ) -> GenerateResult:
        """One completion; on_piece (streaming) gets the text of each sampled token as it
        comes, decoded from the tokens' remembered pieces (pieces.py) without holding
        back a character split across tokens."""
        import llama_cpp

        llm = self._model(req.model_key)
        n_ctx = llm.n_ctx()
        tokens, grammar = self.prepared(llm, req.model_key, req, n_ctx)
        reuse = req.reuse_prefix and self.cpu_only[req.model_key]
        pool = self.pools[req.model_key]
        slot = pool.acquire(req.conversation, tokens, reuse)
        with self._lanes_lock:  # counted once it has a slot: a waiting one takes no threads
            self.lanes += 1
        try:
            llm = slot.llm
            reused = slot.prepare(tokens, reuse)
            llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
            started = time.monotonic()
            fitted = self.fit_threads(llm, req.model_key)
            slot.prefill(tokens)
            # llama.cpp's clock runs from a decode to the next synchronize, which would
            # otherwise come at the first sample: the sampler's set-up (building the
            # grammar, the prefix index at a model's first grammar) would count as
            # prompt evaluation
            llama_cpp.llama_synchronize(llm._ctx.ctx)
            sampled: list[int] = []
            plain_generate = llm.generate
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

            def recording_generate(*args: Any, **kwargs: Any) -> Any:
                # every token sampled, in order (the end-of-generation token included),
                # which create_completion itself does not return
                nonlocal fitted
                for token in plain_generate(*args, **kwargs):
                    sampled.append(int(token))
                    # a look is due, or a generation began or ended beside this one
                    if (self.governor is not None and self.governor.due()) or (
                        self.lanes != fitted
                    ):
                        fitted = self.fit_threads(llm, req.model_key)
                    if on_piece is not None and token != llm.token_eos():
                        piece = decoder.decode(llm.tokenizer_.detokenize([token]))
                        if piece:
                            on_piece(piece)
                    yield token

            llm.generate = recording_generate
            try:
                out = self._complete(llm, tokens, req, grammar)
            finally:
                del llm.generate  # back to the class's method
            seconds = time.monotonic() - started
            perf = llama_cpp.llama_perf_context(llm._ctx.ctx)
            fast_steps, full_steps = grammar_topk.steps(llm)
            grammar_seconds = grammar_topk.seconds(llm)
            llm._sampler = None  # free the sampler chain now, not at interpreter exit
            slot.keep_prompt(tokens)
        finally:
            with self._lanes_lock:
                self.lanes -= 1
            pool.release(slot)
        choice = out["choices"][0]
        return GenerateResult(
            text=choice["text"],
            finish_reason=choice.get("finish_reason") or "stop",
            prompt_tokens=len(tokens),
            completion_tokens=out["usage"]["completion_tokens"],
            prompt_eval_tokens=len(tokens) - reused,
            prompt_sha256=hashlib.sha256(",".join(map(str, tokens)).encode()).hexdigest(),
            seconds=seconds,
            prompt_eval_seconds=perf.t_p_eval_ms / 1000,
            decode_seconds=perf.t_eval_ms / 1000,
            grammar_fast_steps=fast_steps,
            grammar_full_steps=full_steps,
            grammar_seconds=grammar_seconds,
            token_ids=sampled,
        )

    def generate_group(self, group: BatchGenerateRequest) -> BatchGenerateResult:
        """Requests on one model decoded as sequences of one context (batchdecode.py).
        A request that cannot start (its prompt does not fit, its grammar is invalid)
        fails alone; the others are decoded together without it."""

        keys = {r.model_key for r in group.requests}
        if len(keys) != 1:
            raise EngineFailure("a decode group must use one model")
        key = keys.pop()
        llm = self._model(key)
        n_ctx = llm.n_ctx()
        errors: dict[int, str] = {}
        ready: list[tuple[int, list[int], Any]] = []
        for i, req in enumerate(group.requests):
            try:
                tokens, grammar = self.prepared(llm, req.model_key, req, n_ctx)
            except EngineFailure as exc:
                errors[i] = str(exc)
                continue
            ready.append((i, tokens, grammar))
        configured = self.threads.get(key, 1)
        with self._lanes_lock:  # one group takes the model's threads (as one lane)
            self.lanes += 1
            lanes = self.lanes
            n = configured if self.governor is None else self.governor.threads(configured)
        try:
            results = (
                batchdecode.decode_group(
                    llm,
                    [group.requests[i] for i, _, _ in ready],
                    [t for _, t, _ in ready],
                    [g for _, _, g in ready],
                    max(1, n // lanes),
                )
                if ready
                else []
            )
        finally:
            with self._lanes_lock:
                self.lanes -= 1
        by_index = {i: r for (i, _, _), r in zip(ready, results, strict=True)}
        return BatchGenerateResult(
            results=[by_index.get(i) or errors[i] for i in range(len(group.requests))],
            decoded=[group.names[i] for i, _, _ in ready],
        )

    def fit_threads(self, llm: Any, model_key: str) -> int:
        """Run the next steps on the cores other programs leave free (threadload.py),
        shared evenly with the other generations in flight; return how many are."""
        import llama_cpp

        configured = self.threads.get(model_key, 1)
        with self._lanes_lock:
            lanes = max(1, self.lanes)
            n = configured if self.governor is None else self.governor.threads(configured)
        n = max(1, n // lanes)
        # two ints in the context's parameters: cheaper than remembering what each has
        llama_cpp.llama_set_n_threads(llm._ctx.ctx, n, n)
        return lanes

    @staticmethod
    def _complete(llm: Any, tokens: list[int], req: GenerateRequest, grammar: Any) -> Any:
        return llm.create_completion(
            prompt=tokens,
            max_tokens=req.sampling.max_tokens,
            temperature=req.sampling.temperature,
            top_p=req.sampling.top_p,
            top_k=req.sampling.top_k,
            min_p=req.sampling.min_p,
            repeat_penalty=req.sampling.repeat_penalty,
            typical_p=req.sampling.typical_p,
            frequency_penalty=req.sampling.frequency_penalty,
            presence_penalty=req.sampling.presence_penalty,
            seed=req.seed,
            stop=req.stop or None,
            grammar=grammar,
        )


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this worker when its parent dies (Linux only).

    Without it, a run killed with SIGKILL leaves its worker finishing the current
    generation (minutes on a CPU) with nobody to read it. The signal fires when
    the thread that started the worker ends; localtable starts workers from the
    main thread, or a Ray actor's one debate thread."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # it died before prctl
        os._exit(1)


def main(args: list[str]) -> None:
    """The worker process (engine.py starts it): the pipe's descriptor, the parent's pid."""
    fd, parent_pid = (int(a) for a in args)
    _die_with_parent(parent_pid)
    serve(Connection(fd))


def serve(conn: Connection) -> None:
    """Answer requests until the parent closes the pipe. A request comes as (id, request)
    and its answer goes back as (id, "ok" | "error", payload), in the order they finish."""
    # Stopping is the parent's to handle: Ctrl-C, `timeout` and a closed terminal signal
    # the whole process group, and a worker dying first would turn the turns in flight
    # into failed ones instead of interrupted ones. The parent kills it when done.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    _install_log_capture()
    worker = Worker()
    sending = threading.Lock()
    generations: list[threading.Thread] = []

    def piece(request_id: int, text: str) -> None:
        with sending, contextlib.suppress(OSError):
            conn.send((request_id, "text", text))

    def answer(request_id: int, req: Request) -> None:
        try:
            on_piece = functools.partial(piece, request_id)
            reply: tuple[int, str, Any] = (request_id, "ok", worker.handle(req, on_piece))
        except EngineFailure as exc:
            reply = (request_id, "error", str(exc))
        except Exception as exc:  # an engine bug must not kill the run: report it
            reply = (request_id, "error", f"{type(exc).__name__}: {exc}")
        with sending, contextlib.suppress(OSError):  # else the parent is gone, and so is this
            conn.send(reply)

    while True:
        try:
            request_id, req = conn.recv()
        except (EOFError, OSError):
            if any(t.is_alive() for t in generations):
                os._exit(0)  # freeing models under running generations could crash
            # Free the models now: at interpreter exit, Llama.__del__ raises.
            worker.close()
            return
        generations = [t for t in generations if t.is_alive()]
        if isinstance(req, GenerateRequest | BatchGenerateRequest):
            thread = threading.Thread(target=answer, args=(request_id, req), daemon=True)
            thread.start()
            generations.append(thread)
            continue
        if not isinstance(req, TokenizeRequest):
            for thread in generations:  # a load or unload changes what they use
                thread.join()
        answer(request_id, req)
