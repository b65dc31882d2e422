"""The in-process llama.cpp backend: GGUF files run by llama-cpp-python in a worker.

It resolves model files (models/), plans memory (memory.py: together, or one
at a time), loads each model once into the engine worker (engine.py, which
keeps a model loaded across the debates of a Session), formats prompts with
the model's own chat template (backends/chatformat.py), and reuses each
panelist's evaluated prompt prefix (kvslots.py). Everything that changes the
numbers is set explicitly and recorded in ModelRecord.settings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from localtable.backends.base import (
    Backend,
    BackendCrashed,
    BackendUnavailable,
    ChatMessage,
    PanelModels,
    Prepared,
    TurnFailed,
    TurnRequest,
    TurnResult,
)
from localtable.backends.chatformat import FormattedPrompt, format_prompt, template_sha256
from localtable.backends.llamacpp.engine import Engine, EngineCrashed
from localtable.backends.llamacpp.memory import estimate, padded_ctx, plan_memory
from localtable.backends.llamacpp.messages import (
    BatchGenerateRequest,
    BatchGenerateResult,
    EngineFailure,
    GenerateRequest,
    GenerateResult,
    LoadRequest,
    ModelInfo,
)
from localtable.backends.promptpiece import PromptPiece
from localtable.config import LoadedConfig, ModelSpec
from localtable.errors import ConfigError, ModelFileError
from localtable.machine import available_cores, default_budget
from localtable.models.files import ResolvedModel, locate, resolve
from localtable.models.local import cached_sha256
from localtable.record import MemoryRecord, ModelRecord, PanelistRecord, RunRecord
from localtable.templates import TemplateSet

# Tokens llama.cpp evaluates per step of a prompt, at most; it changes the numbers.
# On the demo question's 261-token prompt Gemma 3's logits after steps of 8..256
# tokens all agree, and after one step of 257 or more they differ (contrary to
# ENGINE-FACTS.md); kvslots.py keeps every step at 8 tokens or more.
# 128 evaluates as fast as 512 on a CPU (measured on both demo models) and,
# without flash attention, holds a quarter of the n_ubatch x n_ctx x n_head
# attention scores in each KV cache's compute buffer: 40-60 MB less per KV cache
# at n_ctx 4096. Each record keeps the value it ran with; replay and resume use it.
N_UBATCH = 128
N_BATCH = 512
# Turns of a round run at once (Debate.run) share the configured threads (worker.py),
# so "auto" gives each turn at least this many. On 2 idle cores (make bench-load,
# issue #17) two turns on one thread each took 1.12x (1.07-1.16) the time of one
# after the other on two: a lone turn uses both cores well enough, and two turns
# contend for memory bandwidth and the GIL. With a busy neighbour they were faster
# (0.80x): that is the load governor's case (threadload.py). So auto runs turns at
# once from 4 cores on, two threads each or more.
MIN_THREADS_PER_TURN = 2

T = TypeVar("T")


class LlamaCppSettings(BaseModel):
    """ModelRecord.settings for this backend: how the file was loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    chat: Literal["auto", "template", "completion"] = "auto"
    n_ctx_requested: int
    n_batch: int
    n_ubatch: int
    threads: int
    gpu_layers: int
    flash_attn: bool
    type_k: str = "f16"
    type_v: str = "f16"
    repeat_last_n: int = 64


def engine_libraries() -> dict[str, str]:
    """sha256 of llama-cpp-python's shared libraries: the build that computed the numbers."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return {}
    lib = Path(spec.origin).parent / "lib"
    by_hash: dict[str, str] = {}
    for path in sorted(lib.glob("*.so*")) if lib.is_dir() else []:
        if path.is_file() and not path.is_symlink():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            # wheels copy libfoo.so, .so.0 and .so.0.1.2: keep the most specific name
            if len(path.name) > len(by_hash.get(digest, "")):
                by_hash[digest] = path.name
    return {name: digest for digest, name in sorted(by_hash.items(), key=lambda kv: kv[1])}


def model_key(sha256: str, settings: LlamaCppSettings) -> str:
    return f"{sha256[:16]}-{settings.n_ctx_requested}-{settings.threads}-{settings.gpu_layers}"


def _has(path: Path, model: ModelRecord) -> bool:
    return (
        path.is_file() and path.stat().st_size == model.size and cached_sha256(path) == model.sha256
    )


def find_model_file(model: ModelRecord, path: str, loaded: LoadedConfig | None) -> Path:
    """The recorded file if it still has the recorded sha256, else a models.toml model
    that does."""
    recorded = Path(path)
    if _has(recorded, model):
        return recorded
    if loaded is not None:
        for name, spec in loaded.config.models.items():
            try:
                found = locate(name, spec, loaded)
            except (ModelFileError, ConfigError):
                continue
            if _has(found.path, model):
                return found.path
    sha = (model.sha256 or "")[:12]
    raise ModelFileError(
        f"model {model.name!r} (sha256 {sha}...) is not on this machine: restore "
        f"{path}, or add a model with that file to models.toml"
    )


def _chat_mode(requested: str, has_template: bool, name: str) -> Literal["template", "completion"]:
    if requested == "completion":
        return "completion"
    if not has_template:
        if requested == "template":
            raise ConfigError(
                f'model {name!r}: chat = "template" but the GGUF has no chat template; '
                'set chat = "completion" (or "auto") for this model in models.toml'
            )
        return "completion"
    return "template"


def planned_record(resolved: ResolvedModel, spec: ModelSpec) -> ModelRecord:
    settings = LlamaCppSettings(
        path=str(resolved.path),
        chat=spec.chat,
        n_ctx_requested=spec.n_ctx,
        n_batch=N_BATCH,
        n_ubatch=N_UBATCH,
        threads=spec.threads or available_cores(),
        gpu_layers=spec.gpu_layers,
        flash_attn=False,
    )
    return ModelRecord(
        name=resolved.name,
        backend="llamacpp",
        source=resolved.source,
        sha256=resolved.sha256,
        size=resolved.size,
        architecture=resolved.architecture,
        chat_mode=_chat_mode(spec.chat, resolved.has_chat_template, resolved.name),
        n_ctx=padded_ctx(spec.n_ctx),
        settings=settings.model_dump(mode="json"),
    )


def _turn(call: Callable[[], T]) -> T:
    """An engine failure during a turn is that turn's failure (the run goes on)."""
    try:
        return call()
    except EngineCrashed as exc:
        raise BackendCrashed(str(exc)) from None
    except EngineFailure as exc:
        raise TurnFailed(str(exc)) from None


class LlamaSeat:
    """One loaded model: prompts formatted with its chat template, run in the engine."""

    def __init__(
        self,
        backend: LlamaCppBackend,
        model: ModelRecord,
        key: str,
        info: ModelInfo,
    ) -> None:
        self.backend = backend
        self.model = model
        self.key = key
        self.info = info

    def _format(self, messages: list[ChatMessage], prefill: str = "") -> FormattedPrompt:
        return format_prompt(
            self.model.chat_mode,
            self.info,
            messages,
            self.backend.today,
            self.backend.templates,
            prefill,
            source=f"the chat template of model {self.model.name!r} (from its GGUF file)",
        )

    def context_size(self) -> int:
        return self.info.n_ctx

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        prompt = self._format(messages)
        engine = self.backend.engine
        return _turn(lambda: engine.count_tokens(self.key, prompt.pieces, prompt.add_bos))

    def count_text_tokens(self, text: str) -> int:
        piece = [PromptPiece(text=text, special=False)]
        return _turn(lambda: self.backend.engine.count_tokens(self.key, piece, False))

    def engine_request(self, request: TurnRequest) -> tuple[FormattedPrompt, GenerateRequest]:
        prompt = self._format(request.messages, request.prefill)
        return prompt, GenerateRequest(
            model_key=self.key,
            pieces=prompt.pieces,
            add_bos=prompt.add_bos,
            grammar=request.grammar or None,  # "": free text (a protocol's), no grammar
            seed=request.seed,
            sampling=request.sampling,
            stop=prompt.stop,
            reuse_prefix=self.backend.reuse_prefix,
            conversation=request.conversation or request.panelist,
            stream=request.on_text is not None,
        )

    def generate(self, request: TurnRequest) -> TurnResult:
        prompt, engine_request = self.engine_request(request)
        engine = self.backend.engine

        def run() -> GenerateResult:
            engine.activate(self.key)
            return engine.generate(engine_request, request.on_text)

        return turn_result(prompt, _turn(run))


def turn_result(
    prompt: FormattedPrompt, result: GenerateResult, decoded_with: list[str] | None = None
) -> TurnResult:
    return TurnResult(
        prompt=prompt.text,
        prompt_tokens=result.prompt_tokens,
        prompt_sha256=result.prompt_sha256,
        notes=prompt.notes,
        text=result.text,
        token_ids=result.token_ids,
        finish_reason=result.finish_reason,
        completion_tokens=result.completion_tokens,
        prompt_eval_tokens=result.prompt_eval_tokens,
        seconds=result.seconds,
        prompt_eval_seconds=result.prompt_eval_seconds,
        decode_seconds=result.decode_seconds,
        decoded_with=decoded_with or [],
    )


class LlamaCppBackend(Backend):
    """Models in one engine worker process; one instance per Session."""

    name = "llamacpp"

    def __init__(self, engine: Engine | None = None) -> None:
        super().__init__()
        self.engine = engine or Engine()  # the benchmark passes one that records
        self.seats: dict[str, LlamaSeat] = {}
        self.reuse_prefix = False
        self.templates = TemplateSet()
        self.today = date(2000, 1, 1)
        self.info: ModelInfo | None = None
        # per loaded model: KV caches that can generate at the same time (with reuse on
        # a CPU, one per conversation; otherwise the model's one context)
        self.generating_slots: dict[str, int] = {}

    # -- a new run --------------------------------------------------------------

    def prepare(self, panel: PanelModels) -> Prepared:
        self.engine.start()  # it imports llama.cpp (0.3 s) while this resolves and plans
        resolved = {n: resolve(n, panel.loaded, verify=panel.verify) for n in panel.specs}
        needs = [
            estimate(
                name,
                model.path,
                panel.specs[name].n_ctx,
                kv_slots=panel.users[name] if panel.reuse_prefix else 1,
                n_ubatch=N_UBATCH,
                group_sequences=panel.batched.get(name, 0),
            )
            for name, model in resolved.items()
        ]
        budget = panel.memory_budget if panel.memory_budget is not None else default_budget()
        plan = plan_memory(needs, budget)
        memory = MemoryRecord(
            budget_bytes=plan.budget_bytes,
            estimated_bytes={n.name: n.total(plan.kv_slots[n.name]) for n in plan.needs},
            kv_caches=plan.kv_slots,
            batched_bytes={n.name: n.group_bytes for n in plan.needs if n.group_bytes},
            loading="one at a time" if plan.in_turn else "together",
            note=plan.note,
        )
        models = [planned_record(resolved[n], panel.specs[n]) for n in panel.specs]
        return Prepared(models=models, memory=memory, notes=[plan.note] if plan.note else [])

    # -- loading ----------------------------------------------------------------

    def open(
        self,
        models: list[ModelRecord],
        memory: MemoryRecord | None,
        *,
        reuse_prefix: bool,
        templates: TemplateSet,
        today: str,
        loaded: LoadedConfig | None,
        allow_urls: frozenset[str] = frozenset(),
    ) -> list[ModelRecord]:
        self.reuse_prefix = reuse_prefix
        self.templates = templates
        self.today = date.fromisoformat(today)
        # the recorded plan, also on resume and replay: one at a time stays one at a time
        self.engine.one_at_a_time = memory is not None and memory.loading == "one at a time"
        kv_caches = memory.kv_caches if memory is not None else {}
        # Two models.toml entries for one file with the same settings share one loaded
        # model: it gets the KV caches of both, or their panelists would evict each
        # other's reused prefixes.
        slots: dict[str, int] = {}
        for model in models:
            if model.sha256 is not None:
                key = model_key(model.sha256, LlamaCppSettings.model_validate(model.settings))
                slots[key] = slots.get(key, 0) + kv_caches.get(model.name, 1)
        opened = []
        for model in models:
            settings = LlamaCppSettings.model_validate(model.settings)
            if model.sha256 is None:
                raise BackendUnavailable(f"model {model.name!r}: the record has no sha256")
            path = find_model_file(model, settings.path, loaded)
            key = model_key(model.sha256, settings)
            request = LoadRequest(
                model_key=key, path=path, n_ctx=settings.n_ctx_requested,
                n_batch=settings.n_batch, n_ubatch=settings.n_ubatch, threads=settings.threads,
                gpu_layers=settings.gpu_layers, flash_attn=settings.flash_attn,
                kv_slots=slots[key],
            )  # fmt: skip
            try:
                info = self.engine.load(request)
            except EngineFailure as exc:
                raise BackendUnavailable(f"model {model.name!r}: {exc}") from None
            if info.n_ctx != model.n_ctx:
                raise BackendUnavailable(
                    f"model {model.name!r}: context is {info.n_ctx} here, {model.n_ctx} in the "
                    "record"
                )
            self.info = self.info or info
            reuse = reuse_prefix and settings.gpu_layers == 0  # as worker.generate decides
            self.generating_slots[key] = slots[key] if reuse else 1
            record = model.model_copy(
                update={
                    "chat_template_sha256": template_sha256(info)
                    if model.chat_mode == "template"
                    else None,
                    "bos_token": info.bos_token,
                    "eos_token": info.eos_token,
                    "load_seconds": model.load_seconds or round(info.load_seconds, 3),
                    "settings": settings.model_copy(
                        update={"type_k": info.type_k, "type_v": info.type_v}
                    ).model_dump(mode="json"),
                }
            )
            self.seats[model.name] = LlamaSeat(self, record, key, info)
            opened.append(record)
        return opened

    def seat(self, model: str) -> LlamaSeat:
        return self.seats[model]

    def turn_order(
        self, round_no: int, panel: list[PanelistRecord], then: str | None
    ) -> list[PanelistRecord]:
        """With models loaded one at a time, a round takes each model once: the loaded
        one first, and last the model of `then`, who speaks next (the summarizer)."""
        if not self.engine.one_at_a_time:
            return panel
        key_of = {p.name: self.seats[p.model].key for p in panel}
        groups: dict[str, list[PanelistRecord]] = {}
        for p in panel:
            groups.setdefault(key_of[p.name], []).append(p)
        keys = sorted(groups, key=lambda k: k not in self.engine.active)  # stable
        last = key_of.get(then) if then is not None else None
        if last in groups and len(keys) > 1:
            keys = [k for k in keys if k != last] + [last]
        return [p for k in keys for p in groups[k]]

    def turn_lanes(self, requested: int) -> int:
        """Turns of a round to run at once: one while models load one at a time (the
        next turn may need another model); else `requested`, or for 0 one per
        MIN_THREADS_PER_TURN of the configured threads, at most as many as the KV
        caches that can generate at once (more would only wait for one)."""
        if self.engine.one_at_a_time:
            return 1
        if requested:
            return requested
        threads = min((seat.info.threads for seat in self.seats.values()), default=1)
        slots = sum(self.generating_slots.values())
        return max(1, min(threads // MIN_THREADS_PER_TURN, slots))

    def generate_group(self, turns: list[tuple[str, TurnRequest]]) -> list[TurnResult | TurnFailed]:
        """(model name, request) pairs decoded together: the requests on one loaded model
        as sequences of one context (batchdecode.py, one engine call per model, in order
        of first appearance); a model with one request generates it as usual. Each
        TurnResult names the panelists whose sequences it was decoded with."""
        out: list[TurnResult | TurnFailed | None] = [None] * len(turns)
        by_key: dict[str, list[int]] = {}
        for i, (model, _) in enumerate(turns):
            by_key.setdefault(self.seats[model].key, []).append(i)
        for key, members in by_key.items():
            if len(members) == 1:
                i = members[0]
                try:
                    out[i] = self.seats[turns[i][0]].generate(turns[i][1])
                except TurnFailed as exc:
                    out[i] = exc
                continue
            prompts, requests = [], []
            for i in members:
                prompt, request = self.seats[turns[i][0]].engine_request(turns[i][1])
                prompts.append(prompt)
                requests.append(request)
            group = BatchGenerateRequest(
                requests=requests, names=[turns[i][1].panelist for i in members]
            )

            def run(group: BatchGenerateRequest = group, key: str = key) -> BatchGenerateResult:
                self.engine.activate(key)
                return self.engine.generate_group(group)

            try:
                answer = _turn(run)
            except TurnFailed as exc:
                for i in members:
                    out[i] = exc
                continue
            for i, prompt, result in zip(members, prompts, answer.results, strict=True):
                out[i] = (
                    TurnFailed(result)
                    if isinstance(result, str)
                    else turn_result(prompt, result, answer.decoded)
                )
        return [r for r in out if r is not None]

    # -- the record -------------------------------------------------------------

    def describe(self) -> dict[str, object]:
        version = self.info.llama_cpp_python if self.info else metadata.version("llama-cpp-python")
        return {
            "llama_cpp_python": version,
            "system_info": self.info.system_info if self.info else "",
            "library_sha256": engine_libraries(),
        }

    def replay_differences(
        self,
        record: RunRecord,
        *,
        loaded: LoadedConfig | None = None,
        allow_urls: frozenset[str] = frozenset(),
    ) -> list[str]:
        """How this machine's engine build differs from the one that made the record."""
        recorded = record.backends.get(self.name)
        if recorded is None:
            return ["the record has no llama.cpp engine information"]
        diffs = []
        version = metadata.version("llama-cpp-python")
        if version != recorded.get("llama_cpp_python"):
            diffs.append(f"llama-cpp-python {recorded.get('llama_cpp_python')} -> {version}")
        before_libs = recorded.get("library_sha256")
        before = before_libs if isinstance(before_libs, dict) else {}
        libraries = engine_libraries()
        for name in sorted(set(before) | set(libraries)):
            was, now = before.get(name), libraries.get(name)
            if was != now:
                diffs.append(f"{name} {str(was or 'absent')[:12]} -> {(now or 'absent')[:12]}")
        return diffs

    def close(self) -> None:
        super().close()
        self.engine.close()
