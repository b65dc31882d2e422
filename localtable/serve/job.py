"""The worker process of `localtable serve`: one debate, its events as JSON lines.

The server starts it (jobs.py) with a DebateSpec; it runs the debate exactly as
`localtable debate` does (the same library call, the same models.toml defaults) and
writes each progress event and each piece of streamed text to stdout, one JSON
object a line. SIGTERM (the page's stop button, the server's Ctrl-C, or the server's
death: its parent-death signal) stops it as Ctrl-C stops the CLI: the record is
kept, interrupted, and `localtable resume` finishes it.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
from pathlib import Path

from pydantic import BaseModel, ConfigDict

PR_SET_PDEATHSIG = 1


class DebateSpec(BaseModel):
    """What the page's form asks for, with the server's run id, folder and config."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    run_id: str
    question: str
    panel: str
    rounds: int
    seed: int
    runs_dir: Path
    config: Path


class Emitter:
    """JSON lines on stdout, one writer at a time (turns and the engine's receiver)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, kind: str, **fields: object) -> None:
        line = json.dumps({"kind": kind, **fields}, default=str)
        with self.lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


def _stop_with_parent(parent_pid: int) -> None:
    """SIGTERM when the server dies (Linux): stopped as by Ctrl-C, the record is kept."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def run(spec: DebateSpec, emit: Emitter) -> int:
    from localtable.config import load_config
    from localtable.debate.protocol import ProgressEvent, TextEvent
    from localtable.errors import LocaltableError
    from localtable.protocols import chosen_protocol
    from localtable.session.run import DebateRequest, RunFailed, RunInterrupted, run_debate
    from localtable.stopsignals import exit_status, stop_on_signals
    from localtable.templates import TemplateSet

    def progress(event: ProgressEvent) -> None:
        emit("progress", **event.model_dump())

    def text(event: TextEvent) -> None:
        emit("text", **event.model_dump())

    with stop_on_signals() as received:
        try:
            loaded = load_config(spec.config)
            defaults = loaded.config.debate
            req = DebateRequest(
                question=spec.question, panel=spec.panel, rounds=spec.rounds, seed=spec.seed,
                runs_dir=spec.runs_dir, run_id=spec.run_id, reuse_prefix=True,
                parallel_turns=defaults.parallel_turns, decode=defaults.decode,
                protocol=chosen_protocol(None, loaded),
            )  # fmt: skip
            _, record = run_debate(
                req, loaded, TemplateSet(), progress, text=text,
                notice=lambda note: emit("note", text=note),
            )  # fmt: skip
        except LocaltableError as exc:  # stopped (its record kept), failed, or refused
            status = {RunInterrupted: "interrupted", RunFailed: "failed"}.get(type(exc), "error")
            emit("end", status=status, error=str(exc))
            return exit_status(received) or exc.exit_code
        except KeyboardInterrupt as exc:
            emit("end", status="interrupted", error=str(exc) or "interrupted")
            return exit_status(received) or 130
    emit("end", status=record.status, error=record.error, sha256=record.transcript_sha256)
    return 0 if record.status == "complete" else 1


def main(argv: list[str]) -> None:
    """argv: the DebateSpec as JSON, the server's pid."""
    # a terminal's Ctrl-C reaches the server too, which stops this with SIGTERM: one
    # signal, handled once (stopsignals.py), while the record is written
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _stop_with_parent(int(argv[1]))
    sys.exit(run(DebateSpec.model_validate_json(argv[0]), Emitter()))
