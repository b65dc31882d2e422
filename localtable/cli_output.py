"""What the command line prints: progress lines, the batch's live line, tables, summaries.

cli.py is the only module that knows click; this one knows only text. A printer
writes through the `write` callable it is given (text as it goes to the stream,
line breaks included; cli.py's writes to stderr through click), and the other
functions return lines for cli.py to print. Text that may hold someone else's
words (records, servers, GGUFs) goes through `shown` first, so that the terminal
shows its escape sequences instead of obeying them.
"""

from __future__ import annotations

import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from localtable.templates import text_value

if TYPE_CHECKING:  # not imported at start: `serve` and `runs` start faster without them
    from localtable.batch.run import BatchEvent, BatchProgress, BatchResult
    from localtable.debate.protocol import ProgressEvent, ProgressSink, TextEvent, TextSink
    from localtable.models.hub import ModelPull, PullSummary
    from localtable.models.status import ModelStatus
    from localtable.record import RunListing, RunRecord
    from localtable.session.rerun import ReplayReport

Write = Callable[[str], None]
Step = tuple[str, int, str]  # (stage, round, panelist): one generation of a debate

# C0 and C1 control characters: what a terminal acts on (escape sequences, carriage
# returns, backspaces). Text from records, servers and GGUFs may hold them.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_OR_BREAK = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Rewrite the terminal's current line: back to its start, then erase it.
CLEAR_LINE = "\r\x1b[K"


def shown(text: str, *, one_line: bool = False) -> str:
    """Text as the terminal gets it: every control character written out as \\xNN (so a
    server's or a record's escape sequence is seen, never obeyed); one_line: line breaks
    and tabs too."""
    pattern = _CONTROL_OR_BREAK if one_line else _CONTROL
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as aligned lines: each column but the last padded to its widest cell, two
    spaces apart (the last is not padded, so no line ends in spaces)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
    return lines


def models_table(statuses: list[ModelStatus]) -> list[str]:
    """`localtable models`: a line per model, then the notes of those that have one."""

    def short(source: str) -> str:
        parts = source.split(", ")
        return parts[0] + (f" (+{len(parts) - 1} parts)" if len(parts) > 1 else "")

    rows = [("MODEL", "SOURCE", "REVISION", "SIZE", "SHA256", "STATE")] + [
        (
            r.name,
            short(r.source),
            (f"{r.revision}@{r.commit[:12]}" if r.commit else r.revision) or "-",
            f"{r.size:,}" if r.size else "-",
            (r.sha256 or "")[:12] or "-",
            r.state,
        )
        for r in statuses
    ]
    notes = [f"{r.name}: {r.detail}" for r in statuses if r.detail]
    return table(rows) + ([""] + notes if notes else [])


def runs_table(listing: list[RunListing]) -> list[str]:
    """`localtable runs`: a line per run folder, readable or not."""
    rows = [("RUN", "DATE", "STATUS", "PANEL", "ROUNDS", "TRANSCRIPT", "QUESTION")]
    for item in listing:
        r = item.record
        if r is None:
            rows.append((item.run_dir.name, "-", item.status, "-", "-", "-", item.problem or ""))
            continue
        question = " ".join(r.question.split())
        question = question if len(question) <= 60 else question[:57] + "..."
        folder = item.run_dir.name
        # a copied or renamed folder keeps its record's id: show the folder, which is what
        # `render` and `resume` take, and the id it holds
        shown_id = folder if folder == r.run_id else f"{folder} (run {r.run_id})"
        rows.append(
            (
                shown_id,
                f"{r.created_at:%Y-%m-%d %H:%M}",
                item.status,
                r.panel,
                str(r.rounds),
                (r.transcript_sha256 or "-")[:12],
                question,
            )
        )
    return table([[" ".join(text_value(c).split()) for c in row] for row in rows])  # shared


def pull_line(result: ModelPull) -> str:
    return f"{result.name}: {result.state}" + (f" - {result.detail}" if result.detail else "")


def pull_summary(summary: PullSummary) -> str:
    """`localtable pull`'s last line: how many models ended how, and the bytes fetched."""
    counts = {
        state: sum(m.state == state for m in summary.models)
        for state in ("pulled", "present", "skipped", "failed")
    }
    return (
        ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        + f"; {summary.bytes_downloaded:,} bytes downloaded"
    )


def run_end(run_dir: Path, record: RunRecord, *, failure: bool = True) -> list[str]:
    """Where a finished run's record is, its transcript's hash and (failure) why it did
    not complete."""
    lines = [f"Run record: {run_dir / 'record.json'}"]
    if record.transcript_sha256:
        lines.append(f"Transcript sha256: {record.transcript_sha256}")
    if record.status != "complete" and failure:
        lines.append(f"Error: run {record.status}: {record.error}")
    return lines


def replay_lines(report: ReplayReport) -> tuple[list[str], list[str]]:
    """`localtable replay`: what goes to stderr, and the verdict for stdout (identical,
    or where the replay diverges and its likely cause)."""
    err = [f"engine differs: {diff}" for diff in report.engine_differences]
    err.append(f"Replay record: {report.replay_dir / 'record.json'}")
    if report.identical:
        return err, [f"identical {report.replay.transcript_sha256}"]
    d = report.divergence
    if d is None:
        out = [
            f"different transcript hash: {report.original.transcript_sha256} (original) "
            f"vs {report.replay.transcript_sha256} (replay)"
        ]
    else:
        out = [
            f"diverges at {d.where}, token {d.token_index} (character {d.char_index})",
            f"  common:   ...{d.common!r}",
            f"  original: {d.original!r}...",
            f"  replay:   {d.replayed!r}...",
        ]
    return err, [*out, f"likely cause: {report.likely_cause}"]


def turn_printers(quiet: bool, write: Write) -> tuple[ProgressSink, TextSink | None]:
    """A debate's progress and text listeners: on a terminal each turn's text as it is
    written (StreamPrinter), else a line per turn (ProgressPrinter; nothing with quiet)."""
    if not quiet and sys.stderr.isatty():
        stream = StreamPrinter(write)
        return stream, stream.text
    return ProgressPrinter(quiet, write), None


class ProgressPrinter:
    """One line per turn: which round and panelist, then how it ended. Turns that run
    at the same time (--parallel-turns) each end on a line of their own."""

    def __init__(self, quiet: bool, write: Write) -> None:
        self.quiet = quiet
        self.write = write
        self.running: dict[Step, tuple[str, float]] = {}  # -> (line, start)
        self.open: Step | None = None  # whose line awaits its status

    def __call__(self, event: ProgressEvent) -> None:
        if self.quiet:
            return
        key = (event.stage, event.round, event.panelist)
        if event.status == "generating":
            number = event.done + 1 + len(self.running)  # counting those still running
            if event.stage == "turn":
                what = f"[{number}/{event.total}] round {event.round}/{event.rounds}"
            elif event.stage == "labels":  # not counted in total: only open questions have it
                what = f"{' ' * len(f'[{event.done}/{event.total}]')} labels of round {event.round}"
            elif event.stage == "sample":  # vote mode: a round-1 answer drawn again
                what = f"[{number}/{event.total}] sample of round 1"
            else:
                what = f"[{number}/{event.total}] summary"
            line = f"{what} · {event.panelist} ... "
            if self.open is not None:
                self.write("\n")  # the turn before it is still running
            self.write(shown(line))
            self.running[key] = (line, time.monotonic())
            self.open = key
            return
        line, started = self.running.pop(key, ("", time.monotonic()))
        status = f"{event.status} ({time.monotonic() - started:.1f}s)"
        if self.open == key:
            self.write(shown(status) + "\n")
        else:
            if self.open is not None:
                self.write("\n")
            self.write(shown(f"{line}{status}") + "\n")
        self.open = None


class StreamPrinter:
    """On a terminal: each turn's text as the model writes it, under a header naming
    its round and panelist, then how it ended (stderr; stdout gets the report as
    always). Turns that run at the same time do not interleave: one is shown live,
    the others' text waits and is shown whole (or caught up) when it ends."""

    def __init__(self, write: Write) -> None:
        self.out = write
        self.owner: Step | None = None  # the step shown live
        self.started: dict[Step, tuple[str, float]] = {}  # header, start
        self.waiting: dict[Step, list[str]] = {}  # text of the others
        self.ended: dict[Step, str] = {}  # waiting ones that ended: status
        self.line_open = False  # the live text has not ended its line
        # text comes on the engine's receiver thread, progress on the turns' threads
        self.lock = threading.Lock()

    def _write(self, text: str) -> None:
        if text:
            self.out(shown(text))
            self.line_open = not text.endswith("\n")

    def _end_line(self) -> None:
        if self.line_open:
            self.out("\n")
            self.line_open = False

    def __call__(self, event: ProgressEvent) -> None:
        with self.lock:
            self._progress(event)

    def _progress(self, event: ProgressEvent) -> None:
        key = (event.stage, event.round, event.panelist)
        if event.status == "generating":
            if event.stage == "turn":
                number = event.done + 1 + len(self.started)  # counting those still running
                what = f"[{number}/{event.total}] round {event.round}/{event.rounds}"
            elif event.stage == "labels":
                what = f"labels of round {event.round}"
            elif event.stage == "sample":
                what = f"[{event.done + 1 + len(self.started)}/{event.total}] sample of round 1"
            else:
                what = f"[{event.done + 1}/{event.total}] summary"
            self.started[key] = (f"── {what} · {event.panelist} ──", time.monotonic())
            self.waiting[key] = []
            if self.owner is None:
                self._show(key)
            return
        _, began = self.started.get(key, ("", time.monotonic()))
        status = f"→ {event.status} ({time.monotonic() - began:.1f}s)"
        if key != self.owner:
            self.ended[key] = status
            return
        self._finish(key, status)
        while self.owner is None and self.waiting:  # the next one, caught up
            nxt = next(iter(self.waiting))
            self._show(nxt)
            if nxt in self.ended:
                self._finish(nxt, self.ended.pop(nxt))

    def _show(self, key: Step) -> None:
        self._end_line()
        self.out(shown(self.started[key][0]) + "\n")
        self.owner = key
        self._write("".join(self.waiting.get(key, [])))

    def _finish(self, key: Step, status: str) -> None:
        self._end_line()
        self.out(shown(status) + "\n")
        self.started.pop(key, None)
        self.waiting.pop(key, None)
        self.owner = None

    def text(self, event: TextEvent) -> None:
        with self.lock:
            self._text(event)

    def _text(self, event: TextEvent) -> None:
        key = (event.stage, event.round, event.panelist)
        piece = event.text
        if event.restart:  # a continuation or another attempt: say so, show it from here
            again = "continued after its finished fields" if piece else "tried again"
            piece = f"\n[{again}]\n"
        if key == self.owner:
            self._write(piece)
        elif key in self.waiting:
            self.waiting[key].append(piece)


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
    )


def batch_line(p: BatchProgress) -> str:
    """The batch's live line: counts, each worker, debates per hour, time left."""
    parts = [f"{p.finished}/{p.total} done", f"{p.running} running", f"{p.failed} failed"]
    if p.errors:
        parts.append(f"{p.errors} errors")
    for w in p.workers:
        what = f"{w.run_id} ({w.turns} turns)" if w.state == "busy" else w.state
        parts.append(f"w{w.worker} {what}")
    if p.per_hour is not None:
        parts.append(f"{p.per_hour:.0f} debates/h")
    if p.eta_seconds is not None:
        parts.append(f"ETA {duration(p.eta_seconds)}")
    return " · ".join(parts)


# Batch events that --quiet still prints: each needs the user's attention (a worker
# that refused or died, a debate that erred or went back to the queue).
WARNINGS = frozenset({"refused", "lost", "requeue", "error"})


class BatchPrinter:
    """Batch progress: a line per debate started and finished and per worker event,
    and on a terminal one live line for the whole batch, rewritten in place."""

    def __init__(self, quiet: bool, write: Write, live: bool | None = None) -> None:
        self.quiet = quiet
        self.write = write
        self.live = sys.stderr.isatty() if live is None else live
        self.shown = False

    def _line(self, text: str) -> None:
        if self.shown:
            self.write(CLEAR_LINE)
            self.shown = False
        self.write(shown(text) + "\n")

    def __call__(self, event: BatchEvent) -> None:
        if self.quiet and event.action not in WARNINGS:
            return
        line = self._event_line(event)
        if line:
            self._line(line)
        if self.live and event.progress is not None and not self.quiet:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.write(CLEAR_LINE + shown(batch_line(event.progress))[:width])
            self.shown = True

    def _event_line(self, event: BatchEvent) -> str | None:
        p = event.progress
        several = p is not None and len(p.workers) > 1
        on = f" on worker {event.worker}" if several and event.worker else ""
        if event.position == 0:  # a worker event
            where = f" on {event.where}" if event.where else ""
            if event.action == "refused":  # alone, it stops the batch with this reason
                return f"worker {event.worker}{where} refused: {event.error}" if several else None
            if event.action == "lost":
                return f"worker {event.worker}{where} died: {event.error}"
            return (
                f"worker {event.worker} ready{where}"
                if several and event.status == "ready"
                else None
            )
        head = f"[{event.position}/{event.total}] {event.question_id} seed {event.seed}"
        if event.action == "skip":
            return f"{head}: {event.status}, skipped"
        if event.action in ("run", "resume"):
            left = f" (about {duration(event.eta_seconds)} left)" if event.eta_seconds else ""
            verb = "resuming" if event.action == "resume" else "running"
            return f"{head}: {verb}{on}{left}"
        if event.action == "error":
            return f"{head}: error{on}: {event.error}"
        if event.action == "requeue":
            return (
                f"{head}: its worker {event.worker} died ({event.error}); back in the queue, "
                "to resume from its last finished turn"
            )
        tail = f"; {batch_line(p)}" if p is not None and not self.live else ""
        return f"{head}: {event.status} ({event.seconds or 0:.1f}s{on.replace(' on', ',')}){tail}"

    def close(self) -> None:
        if self.shown:
            self.write("\n")
            self.shown = False


def batch_summary(result: BatchResult) -> list[str]:
    """What a batch ended with: counts, each worker, and every debate that failed or
    erred, with what to do next."""
    complete, failed, errors = (result.count(s) for s in ("complete", "failed", "error"))
    lines = [
        f"Batch {result.index.name}: {complete} complete, {failed} failed, {errors} errors; "
        f"index {result.batch_dir / 'batch.json'}"
    ]
    if len(result.workers) > 1:
        for w in result.workers:
            where = f" on {w.where}" if w.where else ""
            state = f", {w.state}: {w.message}" if w.state in ("refused", "gone") else ""
            lines.append(f"  worker {w.worker}{where}: {w.finished} debates{state}")
    if result.requeued:
        lines.append(f"  {result.requeued} debates went back to the queue after their worker "
                     "died, and were resumed from their last finished turn")  # fmt: skip
    entries = result.index.entries
    lines += [f"  failed: {e.run_dir}: {e.error}" for e in entries if e.status == "failed"]
    if failed:
        lines.append(
            "  (a failed debate is finished and recorded as such; `localtable render "
            f"{result.batch_dir}/RUN` shows why)"
        )
    lines += [f"  error: {e.run_dir}: {e.error}" for e in entries if e.status == "error"]
    if errors:
        lines.append(
            "  Fix the cause, then run the same command again: it runs only the debates "
            "that are not finished."
        )
    return lines
