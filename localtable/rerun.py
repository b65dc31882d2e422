"""Run a stored record again: resume what is missing, or replay it all and compare.

Both rebuild the run from its record alone (models found by sha256, prompts
checked by template hash, the recorded parameters, seeds and template date),
never from today's models.toml, so what they produce is comparable byte for
byte with the original.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from localtable.config import LoadedConfig
from localtable.engine import Engine
from localtable.engine_api import EngineFailure, LoadRequest, PromptPiece
from localtable.errors import ConfigError, ModelFileError
from localtable.modelfiles import cached_sha256, locate
from localtable.protocol import ProgressSink
from localtable.record import ModelRecord, RunRecord, read_record
from localtable.run import RunFailed, engine_libraries, execute, new_run_id
from localtable.runlock import hold
from localtable.speaker import EngineSpeaker, Seat
from localtable.templates import TemplateSet

CONTEXT_CHARS = 60


class EngineChanged(ConfigError):
    """This engine build is not the one that made the record: refused (exit 2)."""


def check_templates(record: RunRecord, templates: TemplateSet) -> None:
    for name, recorded in sorted(record.templates.items()):
        current = templates.sha256(name)
        if current != recorded:
            raise ConfigError(
                f"prompt template {name} changed since run {record.run_id} (recorded sha256 "
                f"{recorded[:12]}, now {current[:12]}); restore it to rerun this run"
            )


def engine_differences(record: RunRecord) -> list[str]:
    """How this machine's engine build differs from the one that made the record."""
    from importlib import metadata

    recorded = record.engine
    if recorded is None:
        return ["the record has no engine information"]
    diffs = []
    version = metadata.version("llama-cpp-python")
    if version != recorded.llama_cpp_python:
        diffs.append(f"llama-cpp-python {recorded.llama_cpp_python} -> {version}")
    libraries = engine_libraries()
    for name in sorted(set(recorded.library_sha256) | set(libraries)):
        before, now = recorded.library_sha256.get(name), libraries.get(name)
        if before != now:
            diffs.append(f"{name} {(before or 'absent')[:12]} -> {(now or 'absent')[:12]}")
    return diffs


def _has(path: Path, model: ModelRecord) -> bool:
    return (
        path.is_file() and path.stat().st_size == model.size and cached_sha256(path) == model.sha256
    )


def find_model_file(model: ModelRecord, loaded: LoadedConfig | None) -> Path:
    """The recorded file if it still has the recorded sha256, else a models.toml model that does."""
    recorded = Path(model.path)
    if _has(recorded, model):
        return recorded
    if loaded is not None:
        for name, spec in loaded.config.models.items():
            try:
                found = locate(name, spec, loaded)
            except ModelFileError:
                continue
            if _has(found.path, model):
                return found.path
    raise ModelFileError(
        f"model {model.name!r} (sha256 {model.sha256[:12]}...) is not on this machine: restore "
        f"{model.path}, or add a model with that file to models.toml"
    )


def load_recorded(
    record: RunRecord, engine: Engine, loaded: LoadedConfig | None
) -> dict[str, Seat]:
    """Load every model with its recorded parameters; a seat per panelist."""
    by_model: dict[str, Seat] = {}
    for m in record.models:
        path = find_model_file(m, loaded)
        req = LoadRequest(
            model_key=f"{m.sha256[:16]}-{m.n_ctx_requested}-{m.threads}-{m.gpu_layers}",
            path=path, n_ctx=m.n_ctx_requested, n_batch=m.n_batch, n_ubatch=m.n_ubatch,
            threads=m.threads, gpu_layers=m.gpu_layers, flash_attn=m.flash_attn,
        )  # fmt: skip
        try:
            info = engine.load(req)
        except EngineFailure as exc:
            raise RunFailed(f"model {m.name!r}: {exc}") from None
        if info.n_ctx != m.n_ctx:
            raise RunFailed(
                f"model {m.name!r}: context is {info.n_ctx} here, {m.n_ctx} in the record"
            )
        by_model[m.name] = Seat(model_key=req.model_key, mode=m.chat_mode, info=info)
    return {p.name: by_model[p.model] for p in record.panelists}


def _refuse_engine_change(record: RunRecord, allow: bool) -> list[str]:
    diffs = engine_differences(record)
    if diffs and not allow:
        raise EngineChanged(
            f"this engine build differs from the one that made run {record.run_id} "
            f"({'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''}), so outputs may "
            "differ; pass --allow-engine-change to run anyway"
        )
    return diffs


def resume_run(
    run_dir: Path,
    loaded: LoadedConfig | None,
    templates: TemplateSet,
    progress: ProgressSink,
    *,
    allow_engine_change: bool = False,
) -> RunRecord:
    """Continue an interrupted, crashed or failed run from its last finished turn.

    Refused while another process holds the run (the debate that started it, or
    another resume): two processes would generate the same turns into one record."""
    with hold(run_dir, f"run {run_dir.name}"):
        return _resume_held(run_dir, loaded, templates, progress, allow_engine_change)


def _resume_held(
    run_dir: Path,
    loaded: LoadedConfig | None,
    templates: TemplateSet,
    progress: ProgressSink,
    allow_engine_change: bool,
) -> RunRecord:
    record = read_record(run_dir)
    if record.status == "complete":
        raise ConfigError(f"run {record.run_id} is already complete; nothing to resume")
    check_templates(record, templates)
    _refuse_engine_change(record, allow_engine_change)
    record.turns = [t for t in record.turns if t.status != "interrupted"]
    if record.summary is not None and record.summary.status == "interrupted":
        record.summary = None
    record.status, record.error, record.finished_at = "running", None, None
    record.transcript_sha256 = None
    with Engine() as engine:
        seats = load_recorded(record, engine, loaded)
        speaker = EngineSpeaker(engine, seats, date.fromisoformat(record.template_date),
                                templates, reuse_prefix=record.reuse_prefix)  # fmt: skip
        return execute(record, run_dir, speaker, templates, progress)


class Divergence(BaseModel):
    model_config = ConfigDict(frozen=True)
    where: str  # "round 2, SmolLM2" or "summary"
    char_index: int
    token_index: int
    common: str  # the text both share just before the divergence
    original: str  # what the original said from there
    replayed: str  # what the replay said from there


class ReplayReport(BaseModel):
    model_config = ConfigDict(frozen=True)
    original: RunRecord
    replay: RunRecord
    replay_dir: Path
    engine_differences: list[str]
    divergence: Divergence | None

    @property
    def identical(self) -> bool:
        return self.divergence is None and (
            self.original.transcript_sha256 == self.replay.transcript_sha256
        )


def _outputs(record: RunRecord) -> list[tuple[str, str, str]]:
    """(key, label, raw output or status) for every turn and the summary, in order."""
    out = []
    for t in sorted(record.turns, key=lambda t: (t.round, t.panelist)):
        text = t.generation.raw_output if t.generation else f"<{t.status}: {t.error}>"
        out.append((f"{t.round}/{t.panelist}", f"round {t.round}, {t.panelist}", text))
    if record.summary is not None:
        s = record.summary
        text = s.generation.raw_output if s.generation else f"<{s.status}: {s.error}>"
        out.append(("summary", f"summary by {s.summarizer}", text))
    return out


def first_divergence(
    original: RunRecord, replay: RunRecord, speaker: EngineSpeaker
) -> Divergence | None:
    ours = {key: (label, text) for key, label, text in _outputs(replay)}
    for key, label, text in _outputs(original):
        label_now, now = ours.get(key, (label, "<missing in replay>"))
        if now == text:
            continue
        i = 0
        while i < min(len(text), len(now)) and text[i] == now[i]:
            i += 1
        panelist = key.split("/", 1)[1] if "/" in key else original.summarizer
        seat = speaker.seats[panelist]
        token_index = speaker.engine.count_tokens(
            seat.model_key, [PromptPiece(text=text[:i], special=False)], False
        )
        return Divergence(
            where=label, char_index=i, token_index=token_index,
            common=text[max(0, i - CONTEXT_CHARS) : i], original=text[i : i + CONTEXT_CHARS],
            replayed=now[i : i + CONTEXT_CHARS],
        )  # fmt: skip
    return None


def replay_run(
    run_dir: Path,
    runs_dir: Path,
    loaded: LoadedConfig | None,
    templates: TemplateSet,
    progress: ProgressSink,
    *,
    allow_engine_change: bool = False,
) -> ReplayReport:
    """Run the recorded configuration again from scratch and compare every output."""
    original = read_record(run_dir)
    if original.status not in ("complete", "failed"):
        raise ConfigError(
            f"run {original.run_id} is {original.status}; resume it first "
            f"(`localtable resume {original.run_id}`), then replay it"
        )
    check_templates(original, templates)
    diffs = _refuse_engine_change(original, allow_engine_change)
    now = datetime.now(UTC).replace(microsecond=0)
    replay = original.model_copy(deep=True)
    replay.run_id = f"{original.run_id}-replay-{new_run_id(now)}"
    replay.created_at, replay.finished_at = now, None
    replay.status, replay.error = "running", None
    replay.turns, replay.summary, replay.transcript_sha256 = [], None, None
    replay_dir = runs_dir / replay.run_id
    with Engine() as engine:
        seats = load_recorded(original, engine, loaded)
        speaker = EngineSpeaker(engine, seats, date.fromisoformat(original.template_date),
                                templates, reuse_prefix=original.reuse_prefix)  # fmt: skip
        if diffs:
            from localtable.run import engine_record

            first = next(iter(engine.infos.values()))
            replay.engine = engine_record(first)
        with hold(replay_dir, f"run {replay.run_id}"):
            replay = execute(replay, replay_dir, speaker, templates, progress)
        divergence = first_divergence(original, replay, speaker)
    return ReplayReport(original=original, replay=replay, replay_dir=replay_dir,
                        engine_differences=diffs, divergence=divergence)  # fmt: skip
