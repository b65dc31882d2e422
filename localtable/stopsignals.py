"""SIGTERM and SIGHUP stop a command the way Ctrl-C does.

`timeout`, systemd, `docker stop` and a closed SSH session send SIGTERM or
SIGHUP, not SIGINT. While a command runs, both raise Terminated, a
KeyboardInterrupt, so every place that finishes a record as `interrupted`
on Ctrl-C does the same for them; the CLI then exits 128 + the signal's
number (143, 129), as a shell reports a process killed by it. A second
signal while the first is being handled is ignored: the record is being
written. A signal that was ignored when localtable started (`nohup`) stays
ignored. The engine worker ignores all three and dies with its parent.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by SIGTERM or SIGHUP."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def stop_reason(exc: KeyboardInterrupt) -> str:
    """What stopped the run, for the record: the signal, or the user's Ctrl-C."""
    if isinstance(exc, Terminated):
        return f"stopped by {signal.Signals(exc.signum).name}"
    return "interrupted by the user (Ctrl-C)"


@contextmanager
def stop_on_signals() -> Iterator[list[int]]:
    """While the block runs, SIGTERM and SIGHUP raise Terminated (once).

    Yields the list of signals received, for the exit status. Outside the main
    thread (where handlers cannot be set) it changes nothing.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:
            return  # already stopping: let the record be written
        received.append(signum)
        raise Terminated(signum)

    # nohup (or a service manager) may have set a signal to be ignored: keep that
    wanted = [sig for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, handler) for sig in wanted}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def exit_status(received: list[int]) -> int | None:
    """128 + the first stop signal received, or None."""
    return 128 + received[0] if received else None
