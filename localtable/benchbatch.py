"""`make bench-batch`: the same batch through an earlier localtable and through this one.

A fixed batch (arithmetic questions on a panel, one seed) runs through the
localtable of an earlier git revision (by default d1000e0, which started a new
engine and reloaded every model for every debate) and through this tree (one
Session for the whole batch), interleaved (before, now, before, now, ...) so
that a change of load on a shared machine hits both alike. It prints the
wall time per batch (median and range), debates per hour, peak memory of the
batch's processes, and whether every debate gave the same transcript sha256
both ways. Each side runs as the CLI, in a process of its own.

Usage: python -m localtable.benchbatch [--before d1000e0] [--limit 10] [--rounds 2]
           [--repeat 2] [--panel default] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from localtable.bench import cpu_model
from localtable.research.batchindex import read_index

REPO = Path(__file__).resolve().parent.parent
# Runs a command and prints the largest resident size among it and its descendants
# (ru_maxrss of the children it waited for: the CLI, which waits for its engine worker).
PEAK = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print("peak-rss-kb", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


class BatchRun(BaseModel):
    side: str
    seconds: float
    peak_rss_bytes: int  # the largest process of the batch (the CLI or its engine worker)
    transcripts: dict[str, str | None]  # run folder -> transcript sha256
    statuses: dict[str, str]


def checkout(revision: str, into: Path) -> Path:
    """The tree of `revision`, as a detached git worktree (removed by the caller)."""
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(into), revision],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return into


def run_batch_cli(side: str, tree: Path, args: argparse.Namespace, runs: Path) -> BatchRun:
    env = dict(os.environ, PYTHONPATH=str(tree))
    command = [
        sys.executable, "-m", "localtable", "batch", "--task", "arithmetic",
        "--limit", str(args.limit), "--seeds", str(args.seed), "--rounds", str(args.rounds),
        "--panel", args.panel, "--config", str(args.config.resolve()), "--runs-dir", str(runs),
        "--name", "bench", "--quiet",
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", PEAK, *command], cwd=tree, env=env, capture_output=True, text=True
    )
    seconds = time.monotonic() - started
    *errors, last = proc.stderr.rstrip("\n").split("\n")
    if proc.returncode not in (0, 1) or not last.startswith("peak-rss-kb "):
        raise SystemExit(f"{side}: batch failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    peak_kb = int(last.split()[1])
    index = read_index(runs / "bench")
    return BatchRun(
        side=side,
        seconds=seconds,
        peak_rss_bytes=peak_kb * 1024,
        transcripts={e.run_dir: e.transcript_sha256 for e in index.entries},
        statuses={e.run_dir: e.status for e in index.entries},
    )


def spread(values: list[float]) -> str:
    middle = f"{statistics.median(values):.1f}"
    return middle if len(values) < 2 else f"{middle} ({min(values):.1f}-{max(values):.1f})"


def render(runs: list[BatchRun], args: argparse.Namespace, cores: int) -> str:
    sides = list(dict.fromkeys(r.side for r in runs))
    repetitions = len(runs) // len(sides)
    lines = [
        f"batch: {args.limit} arithmetic debates, panel {args.panel}, {args.rounds} rounds, "
        f"seed {args.seed}; {repetitions} repetitions, sides interleaved"
    ]
    lines.append(f"machine: {cpu_model()}, {cores} cores")
    width = max(len(s) for s in sides)
    for side in sides:
        mine = [r for r in runs if r.side == side]
        seconds = [r.seconds for r in mine]
        per_hour = [3600 * args.limit / s for s in seconds]
        peak = max(r.peak_rss_bytes for r in mine) / 1e6
        lines.append(
            f"  {side.ljust(width)}  wall {spread(seconds)} s  debates/hour {spread(per_hour)}  "
            f"peak RSS {peak:,.0f} MB"
        )
    first = {s: next(r for r in runs if r.side == s) for s in sides}
    base = statistics.median(r.seconds for r in runs if r.side == sides[0])
    for side in sides[1:]:
        now = statistics.median(r.seconds for r in runs if r.side == side)
        lines.append(f"  {side} / {sides[0]}: {now / base:.2f}x wall time (medians)")
    same = all(first[s].transcripts == first[sides[0]].transcripts for s in sides)
    complete = {s: sum(v == "complete" for v in first[s].statuses.values()) for s in sides}
    lines.append(f"debates complete: {complete}")
    lines.append(f"transcript sha256 identical per debate across sides: {'yes' if same else 'NO'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localtable.benchbatch", description=__doc__)
    parser.add_argument("--before", default="d1000e0", help="git revision to compare with")
    parser.add_argument("--config", type=Path, default=REPO / "models.toml")
    parser.add_argument("--panel", default="default")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    from localtable.backends.llamacpp.backend import available_cores

    runs: list[BatchRun] = []
    with tempfile.TemporaryDirectory(prefix="localtable-bench-batch-") as tmp:
        old_tree = checkout(args.before, Path(tmp) / "before")
        try:
            for rep in range(1, args.repeat + 1):
                for side, tree in ((f"before ({args.before})", old_tree), ("now", REPO)):
                    print(f"{rep}/{args.repeat}: {side}", file=sys.stderr)
                    out = Path(tmp) / f"runs-{len(runs)}"
                    runs.append(run_batch_cli(side, tree, args, out))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(old_tree)], capture_output=True)  # fmt: skip
    print(render(runs, args, available_cores()))
    if args.json is not None:
        args.json.write_text(
            "[" + ",\n".join(r.model_dump_json() for r in runs) + "]\n", encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
