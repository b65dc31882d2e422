"""Fewer engine threads while other programs keep this machine's cores busy.

llama.cpp's CPU threads meet at a barrier after every operation of the graph,
and wait there by spinning (ggml_barrier). When another program holds one of
the cores, one of our threads is off the CPU at each barrier and the others
spin until the scheduler brings it back. Measured on 2 cores (issue #17): one
`yes > /dev/null` made a debate 2.8x slower at 2 threads, and 1.1x at 1.

So the worker looks, before each prompt evaluation and every LOOK_SECONDS of a
generation, at how many of its CPUs the other programs used since the last
look (the busy time /proc/stat counts on those CPUs, minus this process's own
CPU time) and runs on the cores left, never more than configured. Two
localtable workers on one machine settle on sharing it. The thread count does
not change what llama.cpp computes on the CPU (tests/test_threadload.py checks
the transcript), so this changes speed only, and the record does not keep it.

LOCALTABLE_FIXED_THREADS=1 turns it off (the benchmark's "fixed threads" side).
Without /proc/stat (not Linux) the configured count is used.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

LOOK_SECONDS = 0.5  # how often a generation re-counts (a look costs ~50 us)
MIN_WINDOW = 0.1  # shorter windows are mostly rounding of /proc/stat's ticks
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def fixed_by_environment() -> bool:
    return os.environ.get("LOCALTABLE_FIXED_THREADS", "") not in ("", "0")


def busy_seconds(cpus: set[int], stat: Path = Path("/proc/stat")) -> float | None:
    """CPU seconds the given CPUs spent running anything (idle, iowait and steal not counted)."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        user, nice, system, _idle, _iowait, irq, softirq = map(int, rest.split()[:7])
        ticks += user + nice + system + irq + softirq
    return ticks / _TICKS


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class ThreadGovernor:
    """The thread count for the next steps, from what the neighbours used lately."""

    def __init__(
        self,
        cpus: set[int] | None = None,
        busy: Callable[[], float | None] | None = None,
        own: Callable[[], float] = own_cpu_seconds,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cpus is None:
            cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        self.cpus = cpus
        self._busy = busy or (lambda: busy_seconds(self.cpus))
        self._own = own
        self._clock = clock
        self._last: tuple[float, float, float] | None = None  # (when, busy, own)
        self.others = 0.0  # cores the other programs used in the last window
        self._look()  # so that the first turn's prompt has a window (the models' loading)

    def _look(self) -> None:
        busy = self._busy()
        if busy is None:
            return
        now, own = self._clock(), self._own()
        if self._last is not None:
            then, busy_then, own_then = self._last
            if now - then < MIN_WINDOW:
                return  # keep the older start: the window grows until it is long enough
            others = ((busy - busy_then) - (own - own_then)) / (now - then)
            self.others = min(max(others, 0.0), float(len(self.cpus)))
        self._last = (now, busy, own)

    def due(self) -> bool:
        return self._last is None or self._clock() - self._last[0] >= LOOK_SECONDS

    def threads(self, configured: int) -> int:
        """At most `configured`, at least 1: the cores left to this process, rounded."""
        self._look()
        free = len(self.cpus) - self.others
        return max(1, min(configured, int(free + 0.5)))
