"""Several debates whose rounds are decoded together (a batch's `--group`).

A batch worker hands `run_group` the debates of one group, new or resumed, in
group order. Each is opened as `run_debate` or `resume_run` would open it, on
one Session (its models loaded once), and runs on a thread of its own; their
speakers share one DebateGroup (decodegroup.py), so each round's turns of all of
them on one model are decoded in one batch. Every record names the group
(`RunRecord.decode_group`).

llama.cpp is not batch-invariant, so a debate's text depends on the other
debates of its group: it resumes and replays only with them. A group resumed
after an interruption redoes, in every debate of it, the first round some debate
of it has not finished (finished turns checked against their records, as a
batched round is redone), so each round's groups are rebuilt as they ran.
`localtable resume` and `replay` refuse such a record alone (rerun.py).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from localtable.config import LoadedConfig
from localtable.debate.protocol import Debate, ProgressSink, SpeakerFailed
from localtable.errors import LocaltableError
from localtable.protocols import builtin_protocol
from localtable.record import RunRecord, read_record, write_record
from localtable.runlock import hold
from localtable.session.decodegroup import DebateGroup
from localtable.session.rerun import check_templates, refuse_engine_change, unfinished
from localtable.session.run import (
    DebateRequest,
    RunFailed,
    RunInterrupted,
    execute_debate,
    open_debate,
    open_run,
    prepare,
)
from localtable.session.session import Session
from localtable.templates import TemplateSet

# A group's debate: a new one (its request) or one to resume (its run folder).
GroupWork = DebateRequest | Path
Outcome = RunRecord | LocaltableError


def first_open_round(records: list[RunRecord]) -> int | None:
    """The first round that some debate of the group has not finished."""
    opened = [
        r
        for record in records
        for r in range(1, record.rounds + 1)
        if any(
            (t := record.turn(r, p.name)) is None or t.status == "interrupted"
            for p in record.panelists
        )
    ]
    return min(opened, default=None)


def _open_new(
    req: DebateRequest,
    loaded: LoadedConfig,
    templates: TemplateSet,
    session: Session,
    progress: ProgressSink,
) -> tuple[Debate, Path]:
    record = prepare(req, loaded, session, templates, datetime.now(UTC).replace(microsecond=0))
    speaker = open_run(session, record, describe=True)
    run_dir = req.runs_dir / record.run_id
    protocol = req.protocol or builtin_protocol()
    debate = open_debate(
        record, run_dir, speaker, protocol.templates(), progress, req.parallel_turns
    )
    try:
        debate.preflight()
    except SpeakerFailed as exc:
        raise RunFailed(str(exc)) from None
    return debate, run_dir


def _open_resumed(
    run_dir: Path,
    templates: TemplateSet,
    session: Session,
    progress: ProgressSink,
    allow_engine_change: bool,
    lanes: int,
) -> tuple[Debate, Path]:
    record = read_record(run_dir)
    protocol = check_templates(record, templates)
    refuse_engine_change(record, session, allow_engine_change)
    unfinished(record)
    speaker = open_run(session, record, describe=False)  # as recorded
    return open_debate(record, run_dir, speaker, protocol.templates(), progress, lanes), run_dir


def run_group(
    work: list[GroupWork],
    loaded: LoadedConfig,
    templates: TemplateSet,  # the backends' (completion.j2); each protocol has its own
    session: Session,
    progress_of: Callable[[str], ProgressSink],
    *,
    allow_engine_change: bool = False,
    lanes: int = 0,
) -> dict[str, Outcome]:
    """Run the group's debates together; run id -> its record, or why it could not
    run (a debate that fails to open is left out of the group, the others go on).
    Ctrl-C stops them all, each kept as interrupted (RunInterrupted)."""
    outcomes: dict[str, Outcome] = {}
    opened: list[tuple[Debate, Path]] = []
    for item in work:
        run_id = item.name if isinstance(item, Path) else (item.run_id or "")
        try:
            if isinstance(item, Path):
                opened.append(
                    _open_resumed(
                        item, templates, session, progress_of(run_id), allow_engine_change, lanes
                    )
                )
            else:
                opened.append(_open_new(item, loaded, templates, session, progress_of(run_id)))
        except LocaltableError as exc:
            outcomes[run_id] = exc
    redo = first_open_round([d.record for d, _ in opened])
    group = DebateGroup([d.record.run_id for d, _ in opened])
    for debate, _ in opened:
        debate.redo_round = redo
        debate.speaker.debates = group  # type: ignore[attr-defined]
    with contextlib.ExitStack() as held:
        for debate, run_dir in opened:  # one process per run, as for a lone debate
            held.enter_context(hold(run_dir, f"run {debate.record.run_id}"))
            write_record(run_dir, debate.record)
        _run_all(opened, group, outcomes)
    return outcomes


def _run_all(
    opened: list[tuple[Debate, Path]], group: DebateGroup, outcomes: dict[str, Outcome]
) -> None:
    def one(debate: Debate, run_dir: Path) -> None:
        run_id = debate.record.run_id
        try:
            outcomes[run_id] = execute_debate(debate, run_dir)
        except LocaltableError as exc:
            outcomes[run_id] = exc
        except BaseException as exc:  # a bug: the caller's thread raises it
            outcomes[run_id] = LocaltableError(f"{type(exc).__name__}: {exc}")
        finally:
            group.end(run_id)  # the other debates stop waiting for it

    threads = [
        threading.Thread(
            target=one, args=(d, run_dir), name=f"localtable-group-{d.record.run_id}", daemon=True
        )
        for d, run_dir in opened
    ]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:  # Ctrl-C reaches this thread only: stop every debate
        for debate, run_dir in opened:
            debate.stop()
            record = debate.record
            if record.status == "running":
                record.status, record.error = "interrupted", "interrupted; the batch resumes it"
                record.finished_at = datetime.now(UTC)
                write_record(run_dir, record)
        raise RunInterrupted("interrupted; the group's finished turns are saved") from None
