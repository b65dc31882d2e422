"""A debate run from start to record: config -> model sources -> backends -> protocol -> record.

This is the library entry point the CLI calls. A Session plans the run's models
with their backends and opens them; everything the run did is in the record on
disk after every turn; Ctrl-C marks it interrupted.
"""

from __future__ import annotations

import io
import secrets
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from localtable import __version__
from localtable.backends.base import BackendDown, BackendUnavailable
from localtable.config import LoadedConfig
from localtable.debate.protocol import (
    Debate,
    ProgressSink,
    RedoDiffers,
    SpeakerFailed,
    TextSink,
    anonymous_label,
)
from localtable.errors import ConfigError, LocaltableError
from localtable.protocols import BACKEND_TEMPLATES, Protocol, builtin_protocol
from localtable.record import (
    PanelistRecord,
    QuestionKind,
    RunRecord,
    SamplingRecord,
    transcript_sha256,
    write_record,
)
from localtable.runlock import hold
from localtable.session.session import Session, SessionSpeaker
from localtable.stopsignals import stop_reason
from localtable.templates import TemplateSet

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
    question_id: str | None = None  # scored questions: research/questions.py
    question_kind: QuestionKind = "open"
    options: list[str] = []
    answer_key: str | None = None
    memory_budget: int | None = None  # bytes; default: most of MemAvailable (memory.py)
    # turns of a round run at once, at most; 0: as many as the backends run well
    # (SessionSpeaker.lanes). It changes the speed, never the transcript. The CLI
    # passes models.toml's [debate] parallel_turns (0 unless set).
    parallel_turns: int = 1
    # a round's turns decoded together or one by one (RunRecord.decode); the CLI passes
    # --decode or models.toml's [debate] decode
    decode: Literal["sequential", "batched"] = "sequential"
    # a batch's --group: the debates (run ids, this one among them) whose rounds decode
    # together with this one's (RunRecord.decode_group); empty: this debate alone
    decode_group: list[str] = []
    # the debate protocol, read (protocols.load_protocol); None: roundtable
    protocol: Protocol | None = None
    # vote mode: k of SC@k, each seat answering round 1 k / seats times (RunRecord.vote)
    vote: int = 0


class RunInterrupted(LocaltableError):
    exit_code = 130


class RunFailed(LocaltableError):
    exit_code = 1


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


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


def read_question(question: str | None, question_file: Path | None, default: str) -> str:
    """The question from the argument, stdin ('-') or a file, read up to its length limit
    + 1 characters (so /dev/zero or `yes |` end at once) and checked before anything
    loads."""
    if question is not None and question_file is not None:
        raise ConfigError("give the question as an argument ('-' for stdin) or --file, not both")
    limit = MAX_QUESTION_CHARS + 1
    if question_file is not None:
        try:
            with question_file.open(encoding="utf-8", errors="strict") as fh:
                text = fh.read(limit)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{question_file}: cannot read the question ({exc})") from None
    elif question == "-":
        stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="strict")
        try:
            text = stdin.read(limit)
        except UnicodeDecodeError as exc:
            raise ConfigError(f"stdin: the question is not UTF-8 text ({exc})") from None
        finally:
            stdin.detach()
    else:
        text = question if question is not None else default
    return check_question(text)


def check_vote(vote: int, seats: int, rounds: int) -> None:
    """--vote K: 0 (none), or SC@K's K answers drawn K / seats a seat, more than round 1 has."""
    if vote and (vote % seats or vote <= seats):
        raise ConfigError(
            f"--vote {vote}: give a multiple of the panel's {seats} seats above {seats} (each "
            f"seat answers round 1 K / {seats} times), e.g. --vote {seats * max(rounds, 2)} "
            f"for SC@{seats * max(rounds, 2)}"
        )


def record_templates(protocol: Protocol, templates: TemplateSet) -> dict[str, str]:
    """The sha256 of every file a debate renders: the protocol's, and the backend's prompt
    layout for models without a chat template (a replay refuses a changed one)."""
    return {**protocol.hashes(), **{n: templates.sha256(n) for n in BACKEND_TEMPLATES}}


def prepare(
    req: DebateRequest,
    loaded: LoadedConfig,
    session: Session,
    templates: TemplateSet,
    now: datetime,
    notice: Callable[[str], None] = lambda text: None,
) -> RunRecord:
    """The record header of a new run: question, panel, protocol and models as planned."""
    panel = loaded.config.panel(req.panel)
    question = check_question(req.question)
    protocol = req.protocol or builtin_protocol()
    protocol.check_question(req.question_kind)
    check_vote(req.vote, len(panel.panelists), req.rounds)
    peers = protocol.settings.peers
    anonymous = panel.anonymous if peers == "panel" else peers == "anonymous"
    planned = session.plan(
        panel, loaded, verify=req.verify, reuse_prefix=req.reuse_prefix,
        memory_budget=req.memory_budget, decode=req.decode, debates=max(1, len(req.decode_group)),
    )  # fmt: skip
    for note in planned.notes:
        notice(note)
    panelists = [
        PanelistRecord(
            index=i,
            name=p.name,
            label=anonymous_label(i) if anonymous else p.name,
            model=p.model,
            persona=p.persona,
            sampling=SamplingRecord.model_validate(p.sampling.model_dump()),
        )
        for i, p in enumerate(panel.panelists)
    ]
    return RunRecord(
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
        anonymous=anonymous,
        template_date=now.date().isoformat(),
        reuse_prefix=req.reuse_prefix,
        decode=req.decode,
        decode_group=list(req.decode_group),
        localtable_version=__version__,
        config_path=str(loaded.path),
        models=planned.models,
        panelists=panelists,
        summarizer=panel.summarizer_spec().name,
        protocol=protocol.record(),
        templates=record_templates(protocol, templates),
        vote=req.vote,
        memory=planned.memory,
    )


def open_run(session: Session, record: RunRecord, *, describe: bool) -> SessionSpeaker:
    try:
        return session.open(record, describe=describe)
    except BackendUnavailable as exc:
        raise RunFailed(str(exc)) from None


def execute(
    record: RunRecord,
    run_dir: Path,
    speaker: SessionSpeaker,
    templates: TemplateSet,
    progress: ProgressSink,
    parallel_turns: int = 1,
    text: TextSink | None = None,
) -> RunRecord:
    """Run the missing turns of a record, saving after each; settle its final status.
    parallel_turns: turns of a round at once, at most (0: as the backends suggest);
    text: each generation's text as it comes (streamed by the same generation)."""
    debate = open_debate(record, run_dir, speaker, templates, progress, parallel_turns, text)
    return execute_debate(debate, run_dir)


def open_debate(
    record: RunRecord,
    run_dir: Path,
    speaker: SessionSpeaker,
    templates: TemplateSet,
    progress: ProgressSink,
    parallel_turns: int = 1,
    text: TextSink | None = None,
) -> Debate:
    """The debate over a record, which it saves in run_dir after each settled step."""
    lanes = speaker.lanes(parallel_turns)
    return Debate(
        record, speaker, templates, lambda r: write_record(run_dir, r), progress, lanes=lanes,
        text=text,
    )  # fmt: skip


def execute_debate(debate: Debate, run_dir: Path) -> RunRecord:
    """As execute, for a debate already opened (run_debate preflights it first)."""
    record = debate.record
    try:
        debate.run()
    except RedoDiffers as exc:  # a resumed batched round did not reproduce the record
        record.status = "failed"
        record.error = str(exc)
        record.finished_at = datetime.now(UTC)
        write_record(run_dir, record)
        raise RunFailed(str(exc)) from None
    except BackendDown as exc:
        # A server could not answer: the turn is kept as interrupted, the run stops.
        record.status = "failed"
        record.error = f"{exc}; `localtable resume {record.run_id}` continues once it answers"
        record.finished_at = datetime.now(UTC)
        write_record(run_dir, record)
        done = len([t for t in record.turns if t.status != "interrupted"])
        raise RunFailed(f"{record.error} ({done} finished turns saved in {run_dir})") from None
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (localtable/stopsignals.py)
        debate.stop()  # every turn in flight kept as interrupted; none writes after this
        record.status = "interrupted"
        record.error = f"{stop_reason(exc)}; `localtable resume` continues it"
        record.finished_at = datetime.now(UTC)
        write_record(run_dir, record)
        done = len([t for t in record.turns if t.status != "interrupted"])
        raise RunInterrupted(
            f"interrupted; {done} finished turns saved in {run_dir} "
            f"(continue with `localtable resume {record.run_id}`)"
        ) from None
    record.finished_at = datetime.now(UTC)
    record.transcript_sha256 = transcript_sha256(record)
    summary = record.summary
    if record.protocol is not None and not record.protocol.settings.summary:
        record.status = "complete"  # its turns are the result (a failed one says so)
    elif summary is None or summary.status != "ok":
        record.status = "failed"
        record.error = summary.error if summary else "no summary"
    else:
        record.status = "complete"
    write_record(run_dir, record)
    return record


def run_debate(
    req: DebateRequest,
    loaded: LoadedConfig,
    templates: TemplateSet,  # the backends' (completion.j2); the protocol has the debate's
    progress: ProgressSink,
    session: Session | None = None,  # default: a new one, closed at the end (batches pass theirs)
    notice: Callable[[str], None] = lambda text: None,  # e.g. models loaded one at a time
    # called with the record once its models are open, before the first turn and before
    # anything is written (the CLI renders its report: a layout that fails, fails now)
    before_turns: Callable[[RunRecord], object] = lambda header: None,
    text: TextSink | None = None,  # each generation's text as it comes (watching it live)
) -> tuple[Path, RunRecord]:
    now = datetime.now(UTC).replace(microsecond=0)
    own = session is None
    session = session or Session(templates, loaded)
    protocol = req.protocol or builtin_protocol()
    try:
        record = prepare(req, loaded, session, templates, now, notice)
        debate_templates = protocol.templates()
        debate_templates.compile_soon(sorted(debate_templates.files or {}))  # while models load
        speaker = open_run(session, record, describe=True)
        run_dir = req.runs_dir / record.run_id
        debate = open_debate(
            record, run_dir, speaker, debate_templates, progress, req.parallel_turns, text
        )
        try:
            debate.preflight()  # generates and saves nothing: the run folder waits for its lock
        except SpeakerFailed as exc:
            raise RunFailed(str(exc)) from None
        before_turns(record)
        with hold(run_dir, f"run {record.run_id}"):  # one process per run, for its whole life
            write_record(run_dir, record)
            return run_dir, execute_debate(debate, run_dir)
    finally:
        if own:
            session.close()
