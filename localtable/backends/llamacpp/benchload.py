"""`make bench-load`: a debate next to a busy program, and a round's turns at once.

One fixed debate (the tiny panel, 2 rounds, seed 42; `--panel default` for the
Qwen panel) several ways, interleaved and repeated so that a change of load
hits every side alike (issue #17). It measures this backend's load governor and
turns at once, so it lives beside them (a tool on top of the layers, as bench.py):

- fixed threads, 1 turn: every core whatever else runs, one turn at a time
  (LOCALTABLE_FIXED_THREADS=1 and --parallel-turns 1: localtable before #17);
- 1 turn at a time: threads fitted to the cores other programs leave free
  (localtable/backends/llamacpp/threadload.py);
- default: that, and a round's turns at once as `--parallel-turns 0` decides
  (one at a time below 4 cores);
- 2 turns at once: `--parallel-turns 2`, whatever the cores;
- the first and the default again with one `yes > /dev/null` running ("busy").

For each: wall time, engine-bound time (llama.cpp's prompt evaluation + decode
of every generation, summed: for one turn at a time the time the engine itself
needs), their ratio, the grammar's time per generated token (GrammarTopK's own
clock), and whether the transcript is the first side's. Every time is a median
over the repetitions; every ratio is the median of per-repetition ratios.

Usage: python -m localtable.backends.llamacpp.benchload [--panel tiny] [--rounds 2] [--seed 42]
       [--repeat 3] [--sides before,default,parallel,before-busy,busy] [--json FILE]
       (also: sequential, one turn at a time with load-aware threads)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from localtable.backends.llamacpp.bench import run_localtable, spread
from localtable.config import load_config
from localtable.machine import available_cores, cpu_model

SIDES = {  # name -> (label, fixed threads, turns at once (0: auto), a busy neighbour)
    "before": ("fixed threads, 1 turn", True, 1, False),
    "before-busy": ("fixed, 1 turn, busy", True, 1, True),
    "sequential": ("1 turn at a time", False, 1, False),
    "default": ("default", False, 0, False),
    "parallel": ("2 turns at once", False, 2, False),
    "busy": ("default, busy", False, 0, True),
}
DEFAULT_SIDES = ("before", "default", "parallel", "before-busy", "busy")
BUSY_TARGET = 1.3  # busy over idle (issue #17)
ENGINE_TARGET = 1.10  # wall over engine-bound time (issue #17)


class LoadRun(BaseModel):
    side: str
    wall_seconds: float
    engine_seconds: float  # prompt evaluation + decode, summed over the generations
    grammar_seconds: float
    completion_tokens: int
    transcript_sha256: str | None


def run_side(name: str, loaded: object, panel: str, rounds: int, seed: int, runs: Path) -> LoadRun:
    _, fixed, lanes, busy = SIDES[name]
    # the engine worker reads it when it starts, one worker per debate
    os.environ["LOCALTABLE_FIXED_THREADS"] = "1" if fixed else "0"
    neighbour = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) if busy else None
    try:
        side, record, engine = run_localtable(
            loaded,  # type: ignore[arg-type]
            panel, rounds, seed, True, runs, parallel_turns=lanes,
        )  # fmt: skip
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
        os.environ.pop("LOCALTABLE_FIXED_THREADS", None)
    results = [c.result for c in engine.calls]
    return LoadRun(
        side=name,
        wall_seconds=side.wall_seconds,
        engine_seconds=side.prompt_eval_seconds + side.decode_seconds,
        grammar_seconds=sum(r.grammar_seconds for r in results),
        completion_tokens=side.completion_tokens,
        transcript_sha256=record.transcript_sha256,
    )


def render(runs: list[list[LoadRun]], names: list[str], header: str) -> str:
    def column(name: str) -> list[LoadRun]:
        return [r for rep in runs for r in rep if r.side == name]

    def per_rep(name: str, over: str) -> list[float]:
        return [
            next(r for r in rep if r.side == name).wall_seconds
            / next(r for r in rep if r.side == over).wall_seconds
            for rep in runs
        ]

    def figure(label: str, value: Callable[[LoadRun], float], unit: str, digits: int) -> None:
        rows.append((label, *(spread([value(r) for r in column(n)], unit, digits) for n in names)))

    rows = [("", *(SIDES[n][0] for n in names))]
    figure("wall time", lambda r: r.wall_seconds, " s", 1)
    figure("engine-bound time", lambda r: r.engine_seconds, " s", 1)
    figure("  wall / engine-bound", lambda r: r.wall_seconds / r.engine_seconds, "x", 2)
    figure("grammar per token", lambda r: 1000 * r.grammar_seconds / r.completion_tokens, " ms", 2)
    first = runs[0][0].transcript_sha256
    rows.append(
        (
            "transcript",
            *(
                "same" if all(r.transcript_sha256 == first for r in column(n)) else "DIFFERS"
                for n in names
            ),
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [header, ""]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append("")
    comparisons = [
        ("busy", "default", f"busy / idle (target: within {BUSY_TARGET}x)"),
        ("before-busy", "before", "busy / idle before (fixed threads, 1 turn at a time)"),
        ("default", "before", "default / before, idle (target: within 1.05x)"),
        ("default", "sequential", "default / 1 turn at a time, idle (round-parallel)"),
        ("parallel", "default", "2 turns at once / default, idle (target: no slower, 1.00x)"),
    ]
    for a, b, label in comparisons:
        if a in names and b in names:
            lines.append(f"{label}: {spread(per_rep(a, b), 'x', 2)}")
    lines.append(
        f"wall / engine-bound target (one turn at a time, idle): within {ENGINE_TARGET:.2f}x; "
        "with turns at once the engine time of overlapping turns is summed: the ratio reads lower"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localtable.backends.llamacpp.benchload", description=__doc__
    )
    parser.add_argument("--config", type=Path, default=Path("models.toml"))
    parser.add_argument("--panel", default="tiny")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sides", default=",".join(DEFAULT_SIDES), help="of " + ", ".join(SIDES))
    parser.add_argument("--json", type=Path, help="also write every run here")
    args = parser.parse_args(argv)
    names = [n for n in args.sides.split(",") if n]
    unknown = [n for n in names if n not in SIDES]
    if unknown:
        parser.error(f"unknown side(s) {', '.join(unknown)}: choose from {', '.join(SIDES)}")
    loaded = load_config(args.config)
    runs: list[list[LoadRun]] = []
    with tempfile.TemporaryDirectory(prefix="localtable-benchload-") as tmp:
        for rep in range(1, args.repeat + 1):
            this: list[LoadRun] = []
            for name in names:
                print(f"{rep}/{args.repeat}: {SIDES[name][0]}", file=sys.stderr)
                this.append(run_side(name, loaded, args.panel, args.rounds, args.seed, Path(tmp)))
            runs.append(this)
    header = (
        f"machine: {cpu_model()}, {available_cores()} cores available; debate: panel "
        f"{args.panel}, {args.rounds} rounds, seed {args.seed}; {args.repeat} repetitions, "
        "sides interleaved; medians (min-max)"
    )
    print(render(runs, names, header))
    if args.json is not None:
        args.json.write_text(
            "[" + ",".join(r.model_dump_json() for rep in runs for r in rep) + "]\n",
            encoding="utf-8",
        )
    same = all(r.transcript_sha256 == runs[0][0].transcript_sha256 for rep in runs for r in rep)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
