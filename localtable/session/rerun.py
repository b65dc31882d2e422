"""Run a stored record again: resume what is missing, or replay it all and compare.

Both rebuild the run from its record alone (models found by sha256, the recorded
protocol read again from where it was and its files and the prompts checked by
hash, the recorded parameters, seeds and template date),
never from today's models.toml, so what they produce is comparable byte for
byte with the original. Where to connect and with which key is the exception:
a record is shared, so a backend reaches a server only if today's models.toml
has it or the user allowed its URL (`allow_urls`, --allow-url), and sends a key
only if models.toml names one for it (Backend.open).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from localtable.backends.urls import plain_server_url, public_url
from localtable.config import LoadedConfig
from localtable.debate.protocol import ProgressSink, TextSink
from localtable.errors import ConfigError
from localtable.protocols import Protocol, check_recorded, recorded_protocol
from localtable.record import RunRecord, read_record
from localtable.runlock import hold
from localtable.session.run import execute, new_run_id, open_run
from localtable.session.session import Session, SessionSpeaker
from localtable.templates import TemplateSet

CONTEXT_CHARS = 60


def allowed_urls(urls: tuple[str, ...]) -> frozenset[str]:
    """--allow-url values, checked as models.toml's server URLs are, as records show them."""
    allowed = set()
    for url in urls:
        try:
            allowed.add(public_url(plain_server_url(url)))
        except ValueError as exc:
            raise ConfigError(f"--allow-url {url!r}: {exc}") from None
    return frozenset(allowed)


def parallel_turns(loaded: LoadedConfig | None) -> int:
    """models.toml's [debate] parallel_turns: how many turns of a round run at once
    changes the speed only, so a rerun follows today's setting, not the record."""
    return loaded.config.debate.parallel_turns if loaded is not None else 0


class EngineChanged(ConfigError):
    """This engine build is not the one that made the record: refused (exit 2)."""


def check_templates(record: RunRecord, templates: TemplateSet) -> Protocol:
    """The record's protocol, read again; refused when a file it recorded changed."""
    protocol = recorded_protocol(record)
    check_recorded(record, protocol, templates)
    return protocol


def refuse_engine_change(record: RunRecord, session: Session, allow: bool) -> list[str]:
    diffs = session.replay_differences(record)
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
    allow_urls: frozenset[str] = frozenset(),
    session: Session | None = None,  # default: a new one, closed at the end
    text: TextSink | None = None,  # each generation's text as it comes
) -> RunRecord:
    """Continue an interrupted, crashed or failed run from its last finished turn.

    Refused while another process holds the run (the debate that started it, or
    another resume): two processes would generate the same turns into one record."""
    with hold(run_dir, f"run {run_dir.name}"):
        record = read_record(run_dir)
        if record.status == "complete":
            raise ConfigError(f"run {record.run_id} is already complete; nothing to resume")
        refuse_alone(record, "resumed")
        protocol = check_templates(record, templates)
        own = session is None
        session = session or Session(templates, loaded, allow_urls)
        try:
            refuse_engine_change(record, session, allow_engine_change)
            lanes = parallel_turns(loaded)
            debate_templates = protocol.templates()
            return _resume(record, run_dir, session, debate_templates, progress, lanes, text)
        finally:
            if own:
                session.close()


def _resume(
    record: RunRecord,
    run_dir: Path,
    session: Session,
    templates: TemplateSet,  # the protocol's
    progress: ProgressSink,
    lanes: int,
    text: TextSink | None = None,
) -> RunRecord:
    unfinished(record)
    speaker = open_run(session, record, describe=False)  # as recorded: settings, memory plan
    return execute(record, run_dir, speaker, templates, progress, lanes, text)


def unfinished(record: RunRecord) -> None:
    """A record made ready to resume: what was interrupted dropped (it runs again), the
    run running again."""
    record.turns = [t for t in record.turns if t.status != "interrupted"]
    if record.summary is not None and record.summary.status == "interrupted":
        record.summary = None
    record.status, record.error, record.finished_at = "running", None, None
    record.transcript_sha256 = None


def refuse_alone(record: RunRecord, what: str) -> None:
    """A debate of a batch's --group decodes with its group: not alone (grouprun.py)."""
    if len(record.decode_group) > 1:
        others = [r for r in record.decode_group if r != record.run_id]
        raise ConfigError(
            f"run {record.run_id} was decoded together with {len(others)} other debates of "
            f"its batch ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}; "
            f"--group), and its text depends on theirs: it cannot be {what} alone; run the "
            "same `localtable batch` command again, which resumes its group together (or "
            "into another --name, which runs the group anew)"
        )


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

    @property
    def likely_cause(self) -> str:
        """Why a replay that diverged probably did: what changed, else what the record
        cannot see."""
        if self.engine_differences:
            return "the engine changed: " + "; ".join(self.engine_differences)
        return (
            "nothing the record holds changed (build, model, settings); something it cannot "
            "see did: e.g. a server started with other flags than models.toml declares "
            "(batch sizes, flash attention), or one whose slots other clients share"
        )


def _outputs(record: RunRecord) -> list[tuple[str, str, str]]:
    """(key, label, raw output or status) for every turn, sample and the summary, in order."""
    out = []
    for t in sorted(record.turns, key=lambda t: (t.round, t.panelist)):
        text = t.generation.raw_output if t.generation else f"<{t.status}: {t.error}>"
        out.append((f"{t.round}/{t.panelist}", f"round {t.round}, {t.panelist}", text))
    seen: dict[str, int] = {}
    for t in record.samples:  # vote mode, a seat's in order
        n = seen[t.panelist] = seen.get(t.panelist, 0) + 1
        text = t.generation.raw_output if t.generation else f"<{t.status}: {t.error}>"
        out.append((f"sample {n}/{t.panelist}", f"sample {n} of {t.panelist}", text))
    if record.summary is not None:
        s = record.summary
        text = s.generation.raw_output if s.generation else f"<{s.status}: {s.error}>"
        out.append(("summary", f"summary by {s.summarizer}", text))
    return out


def first_divergence(
    original: RunRecord, replay: RunRecord, speaker: SessionSpeaker
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
        token_index = speaker.count_text_tokens(panelist, text[:i])
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
    allow_urls: frozenset[str] = frozenset(),
) -> ReplayReport:
    """Run the recorded configuration again from scratch and compare every output."""
    original = read_record(run_dir)
    if original.status not in ("complete", "failed"):
        raise ConfigError(
            f"run {original.run_id} is {original.status}; resume it first "
            f"(`localtable resume {original.run_id}`), then replay it"
        )
    refuse_alone(original, "replayed")
    protocol = check_templates(original, templates)
    with Session(templates, loaded, allow_urls) as session:
        diffs = refuse_engine_change(original, session, allow_engine_change)
        now = datetime.now(UTC).replace(microsecond=0)
        replay = original.model_copy(deep=True)
        replay.run_id = f"{original.run_id}-replay-{new_run_id(now)}"
        replay.created_at, replay.finished_at = now, None
        replay.status, replay.error = "running", None
        replay.turns, replay.summary, replay.transcript_sha256 = [], None, None
        replay.samples = []  # vote mode: drawn again, with their recorded seeds
        # an open question's labels are generated too (after each round): kept, they
        # would skip the labelling and leave the replayed turns without positions
        replay.positions, replay.labelings = [], []
        replay_dir = runs_dir / replay.run_id
        # on another build the replay's record describes the build it ran on
        speaker = open_run(session, replay, describe=bool(diffs))
        with hold(replay_dir, f"run {replay.run_id}"):
            lanes = parallel_turns(loaded)
            replay = execute(replay, replay_dir, speaker, protocol.templates(), progress, lanes)
        divergence = first_divergence(original, replay, speaker)
    return ReplayReport(original=original, replay=replay, replay_dir=replay_dir,
                        engine_differences=diffs, divergence=divergence)  # fmt: skip
