"""A debate run from start to record: config -> model files -> engine -> protocol -> record.

This is the library entry point the CLI calls. Everything the run did is in
the record on disk after every turn; Ctrl-C marks it interrupted.
"""

from __future__ import annotations

import hashlib
import os
import platform
import secrets
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from localtable import __version__
from localtable.chatformat import chat_mode, template_sha256
from localtable.config import LoadedConfig, ModelSpec
from localtable.engine import Engine
from localtable.engine_api import EngineFailure, LoadRequest, ModelInfo
from localtable.errors import ConfigError, LocaltableError
from localtable.memory import MemoryPlan, default_budget, estimate, plan_memory
from localtable.modelfiles import ResolvedModel, resolve
from localtable.protocol import Debate, ProgressSink, anonymous_label
from localtable.record import (
    EngineRecord,
    MemoryRecord,
    ModelRecord,
    PanelistRecord,
    QuestionKind,
    RunRecord,
    TurnRecord,
    transcript_sha256,
    write_record,
)
from localtable.runlock import hold
from localtable.speaker import EngineSpeaker, Seat
from localtable.stopsignals import stop_reason
from localtable.templates import TemplateSet

PROMPT_TEMPLATES = [
    "system.j2", "round1.j2", "round_later.j2", "summarize.j2", "summary_system.j2",
    "completion.j2", "turn.gbnf.j2", "summary.gbnf.j2",
]  # fmt: skip
MAX_QUESTION_CHARS = 20_000


class DebateRequest(BaseModel):
    model_config = ConfigDict(frozen=True)
    question: str
    panel: str
    rounds: int
    seed: int
    runs_dir: Path
    verify: bool = False
    reuse_prefix: bool = False
    run_id: str | None = None  # default: <time>-<random>; batches name their runs
    question_id: str | None = None  # scored questions (batches): see localtable/questions.py
    question_kind: QuestionKind = "open"
    options: list[str] = []
    answer_key: str | None = None
    memory_budget: int | None = None  # bytes; default: most of MemAvailable (memory.py)


class RunInterrupted(LocaltableError):
    exit_code = 130


class RunFailed(LocaltableError):
    exit_code = 1


def available_cores() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota
    (in a container started with --cpus=2 the affinity still lists every core, and
    more threads than CPUs make llama.cpp very slow)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cores, quota)) if quota is not None else cores


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """CPUs allowed by the cgroup's quota (v2 cpu.max, v1 cfs_quota_us), rounded up."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # "max 100000" = none
        if quota != "max":
            return -(-int(quota) // int(period))
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return -(-quota_us // period_us)
    except (OSError, ValueError):
        pass
    return None


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(line.split(":", 1)[1].split())
    except OSError:
        pass
    return []


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


def engine_record(info: ModelInfo) -> EngineRecord:
    return EngineRecord(
        llama_cpp_python=info.llama_cpp_python,
        system_info=info.system_info,
        python=platform.python_version(),
        platform=platform.platform(),
        cpu_flags=cpu_flags(),
        library_sha256=engine_libraries(),
    )


# Tokens llama.cpp evaluates per step of a prompt, at most; it changes the numbers.
# On the demo question's 261-token prompt Gemma 3's logits after steps of 8..256
# tokens all agree, and after one step of 257 or more they differ (contrary to
# ENGINE-FACTS.md); localtable/kvslots.py keeps every step at 8 tokens or more.
# 128 evaluates as fast as 512 on a CPU (measured on both demo models) and,
# without flash attention, holds a quarter of the n_ubatch x n_ctx x n_head
# attention scores in each KV cache's compute buffer: 40-60 MB less per KV cache
# at n_ctx 4096. Each record keeps the value it ran with; replay and resume use it.
N_UBATCH = 128


def load_request(model: ResolvedModel, spec: ModelSpec, kv_slots: int = 1) -> LoadRequest:
    """kv_slots: the panelists using this model, each of which keeps its own KV cache."""
    threads = spec.threads or available_cores()
    # Everything that changes the numbers is set explicitly (see README: reproducibility).
    return LoadRequest(
        model_key=f"{model.sha256[:16]}-{spec.n_ctx}-{threads}-{spec.gpu_layers}",
        path=model.path,
        n_ctx=spec.n_ctx,
        threads=threads,
        gpu_layers=spec.gpu_layers,
        n_batch=512,
        n_ubatch=N_UBATCH,
        flash_attn=False,
        kv_slots=kv_slots,
    )


def model_record(
    model: ResolvedModel, spec: ModelSpec, req: LoadRequest, info: ModelInfo, mode: str
) -> ModelRecord:
    return ModelRecord(
        name=model.name,
        source=model.source,
        path=str(model.path),
        sha256=model.sha256,
        size=model.size,
        architecture=model.architecture,
        chat_mode=mode,  # type: ignore[arg-type]
        chat_template_sha256=template_sha256(info) if mode == "template" else None,
        n_ctx=info.n_ctx,
        n_ctx_requested=spec.n_ctx,
        n_batch=info.n_batch,
        n_ubatch=info.n_ubatch,
        threads=req.threads,
        gpu_layers=req.gpu_layers,
        flash_attn=req.flash_attn,
        type_k=info.type_k,
        type_v=info.type_v,
        bos_token=info.bos_token,
        eos_token=info.eos_token,
        load_seconds=round(info.load_seconds, 3),
    )


def check_question(question: str) -> str:
    """The question stripped, or a ConfigError: empty, too long, or not UTF-8 text (bytes
    that are not UTF-8 in a command-line argument arrive as lone surrogates)."""
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(
            f"the question is not valid UTF-8 text (character {exc.start + 1}); pass it as UTF-8"
        ) from None
    question = question.strip()
    if not question:
        raise ConfigError("the question is empty; pass it as an argument, a file or on stdin")
    if len(question) > MAX_QUESTION_CHARS:
        raise ConfigError(
            f"the question has more than {MAX_QUESTION_CHARS:,} characters; shorten it"
        )
    return question


class PreparedRun(BaseModel):
    """A record header and the seats, with every model loaded in the engine."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    record: RunRecord
    seats: dict[str, Seat]


def plan_models(
    req: DebateRequest, loaded: LoadedConfig, resolved: dict[str, ResolvedModel]
) -> MemoryPlan:
    """Load the models together, or one at a time when they do not fit the budget."""
    panel = loaded.config.panel(req.panel)
    needs = [
        estimate(
            name,
            model.path,
            loaded.config.models[name].n_ctx,
            kv_slots=sum(p.model == name for p in panel.panelists) if req.reuse_prefix else 1,
            n_ubatch=N_UBATCH,
        )
        for name, model in resolved.items()
    ]
    budget = req.memory_budget if req.memory_budget is not None else default_budget()
    return plan_memory(needs, budget)


def prepare(
    req: DebateRequest,
    loaded: LoadedConfig,
    engine: Engine,
    templates: TemplateSet,
    now: datetime,
    notice: Callable[[str], None] = lambda text: None,
) -> PreparedRun:
    config = loaded.config
    panel = config.panel(req.panel)
    question = check_question(req.question)
    needed = list(dict.fromkeys(p.model for p in panel.panelists))
    resolved = {name: resolve(name, loaded, verify=req.verify) for name in needed}
    plan = plan_models(req, loaded, resolved)
    engine.one_at_a_time = plan.in_turn  # then each load parks the model before it
    if plan.note:
        notice(plan.note)
    models: list[ModelRecord] = []
    seats_by_model: dict[str, Seat] = {}
    first_info: ModelInfo | None = None
    for name in needed:
        spec = config.models[name]
        load = load_request(resolved[name], spec, kv_slots=plan.kv_slots[name])
        try:
            info = engine.load(load)
        except EngineFailure as exc:
            raise RunFailed(f"model {name!r}: {exc}") from None
        first_info = first_info or info
        mode = chat_mode(spec.chat, info)
        models.append(model_record(resolved[name], spec, load, info, mode))
        seats_by_model[name] = Seat(model_key=load.model_key, mode=mode, info=info)
    assert first_info is not None
    panelists = [
        PanelistRecord(
            index=i,
            name=p.name,
            label=anonymous_label(i) if panel.anonymous else p.name,
            model=p.model,
            persona=p.persona,
            sampling=p.sampling,
        )
        for i, p in enumerate(panel.panelists)
    ]
    record = RunRecord(
        run_id=req.run_id or new_run_id(now),
        created_at=now,
        question=question,
        question_id=req.question_id,
        question_kind=req.question_kind,
        options=list(req.options),
        answer_key=req.answer_key,
        panel=req.panel,
        rounds=req.rounds,
        seed=req.seed,
        anonymous=panel.anonymous,
        template_date=now.date().isoformat(),
        reuse_prefix=req.reuse_prefix,
        localtable_version=__version__,
        config_path=str(loaded.path),
        engine=engine_record(first_info),
        models=models,
        panelists=panelists,
        summarizer=panel.summarizer_spec().name,
        templates={name: templates.sha256(name) for name in PROMPT_TEMPLATES},
        memory=MemoryRecord(
            budget_bytes=plan.budget_bytes,
            estimated_bytes={n.name: n.total(plan.kv_slots[n.name]) for n in plan.needs},
            kv_caches=plan.kv_slots,
            loading="one at a time" if plan.in_turn else "together",
            note=plan.note,
        ),
    )
    seats = {p.name: seats_by_model[p.model] for p in panel.panelists}
    return PreparedRun(record=record, seats=seats)


def preflight(debate: Debate) -> None:
    """Refuse, before any generation, a question that cannot fit a panelist's context."""
    for p in debate.panel:
        n_ctx = debate.speaker.context_size(p.name)
        n = debate.speaker.count_tokens(p.name, debate.conversation(p, 1, 0))
        if n + p.sampling.max_tokens > n_ctx:
            model = p.model
            raise ConfigError(
                f"the question is too long for {p.name} ({model}): its first prompt is {n} "
                f"tokens + {p.sampling.max_tokens} to answer > context {n_ctx}; shorten the "
                f"question or raise n_ctx for {model} in models.toml"
            )


def execute(
    record: RunRecord,
    run_dir: Path,
    speaker: EngineSpeaker,
    templates: TemplateSet,
    progress: ProgressSink,
) -> RunRecord:
    """Run the missing turns of a record, saving after each; settle its final status."""
    debate = Debate(record, speaker, templates, lambda r: write_record(run_dir, r), progress)
    try:
        debate.run()
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (localtable/stopsignals.py)
        if debate.current is not None:
            round_no, name = debate.current
            if round_no <= record.rounds:
                record.turns.append(
                    TurnRecord(
                        round=round_no,
                        panelist=name,
                        status="interrupted",
                        error="interrupted before it finished",
                    )
                )
        record.status = "interrupted"
        record.error = f"{stop_reason(exc)}; `localtable resume` continues it"
        record.finished_at = datetime.now(UTC)
        write_record(run_dir, record)
        raise RunInterrupted(
            f"interrupted; {len(record.turns)} finished turns saved in {run_dir} "
            f"(continue with `localtable resume {record.run_id}`)"
        ) from None
    record.finished_at = datetime.now(UTC)
    record.transcript_sha256 = transcript_sha256(record)
    summary = record.summary
    if summary is None or summary.status != "ok":
        record.status = "failed"
        record.error = summary.error if summary else "no summary"
    else:
        record.status = "complete"
    write_record(run_dir, record)
    return record


def run_debate(
    req: DebateRequest,
    loaded: LoadedConfig,
    templates: TemplateSet,
    progress: ProgressSink,
    engine: Engine | None = None,  # default: a new one (the benchmark passes one that records)
    notice: Callable[[str], None] = lambda text: None,  # e.g. models loaded one at a time
) -> tuple[Path, RunRecord]:
    now = datetime.now(UTC).replace(microsecond=0)
    with engine or Engine() as engine:
        prepared = prepare(req, loaded, engine, templates, now, notice)
        record = prepared.record
        speaker = EngineSpeaker(
            engine,
            prepared.seats,
            date.fromisoformat(record.template_date),
            templates,
            reuse_prefix=req.reuse_prefix,
        )
        preflight(Debate(record, speaker, templates, lambda r: None, progress))
        run_dir = req.runs_dir / record.run_id
        with hold(run_dir, f"run {record.run_id}"):  # one process per run, for its whole life
            write_record(run_dir, record)
            return run_dir, execute(record, run_dir, speaker, templates, progress)
