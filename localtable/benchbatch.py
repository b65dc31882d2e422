"""`make bench-batch`: the same batch five ways, side by side.

A fixed batch (arithmetic questions on a panel, by default models.toml's tiny
panel, the one docs/benchmarks.md's figures were measured on; one seed) runs
(a) through the localtable of an earlier git revision (by default d1000e0,
    which started a new engine and reloaded every model for every debate),
(b) through this tree with one worker (one Session for the whole batch),
(c) through this tree with `--workers 2` (two worker processes, each with
    its models and half the cores),
(d) through this tree with `--ray ADDRESS --workers 2`, on a Ray cluster
    that the benchmark starts on 127.0.0.1 before the first batch (its start
    is not counted) and stops at the end (skipped when Ray is not installed),
(e) through this tree with `--decode batched --group N` (issue #28: one
    worker decoding the rounds of N debates together, as sequences of one
    llama.cpp context per model), against (c), the best on 2 cores before it,
interleaved (a, b, c, d, e, a, b, ...) so that a change of load on a shared
machine hits all alike (`--sides c,e` runs only those). It prints the wall
time per batch (median and range), debates per hour, peak memory of the
batch's processes, and whether every debate gave the same transcript sha256
every way ((e)'s text differs by design, llama.cpp not being batch-invariant:
it is compared across its own repetitions). Each side runs as the CLI, in a
process of its own. Peak memory is the largest process the CLI
waited for (itself, its engine, its workers); Ray's actors are the raylet's
children, so (d) reports the driver alone.

Usage: python -m localtable.benchbatch [--before d1000e0] [--limit 8] [--rounds 2]
           [--repeat 2] [--panel tiny] [--workers 2] [--group 2] [--sides a,b,c,d,e]
           [--no-ray] [--json out.json]
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
from typing import Any

from pydantic import BaseModel

from localtable.machine import available_cores, cpu_model
from localtable.research.batchindex import read_index

REPO = Path(__file__).resolve().parent.parent
# Ray on loopback only (a node address of 127.0.0.1), without a token to share.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip
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


def run_batch_cli(
    side: str, tree: Path, args: argparse.Namespace, runs: Path, extra: list[str]
) -> BatchRun:
    env = dict(os.environ, PYTHONPATH=str(tree))
    command = [
        sys.executable, "-m", "localtable", "batch", "--task", "arithmetic",
        "--limit", str(args.limit), "--seeds", str(args.seed), "--rounds", str(args.rounds),
        "--panel", args.panel, "--config", str(args.config.resolve()), "--runs-dir", str(runs),
        "--name", "bench", "--quiet", *extra,
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


def ray_cluster(cpus: int) -> Any:
    """A one-node Ray cluster on 127.0.0.1 for side (d), or None without Ray."""
    os.environ.update(RAY_ENV)
    os.environ["PYTHONPATH"] = str(REPO)
    try:
        from ray.cluster_utils import Cluster
    except ImportError:
        print("Ray is not installed (pip install 'localtable[ray]'): no side (d)", file=sys.stderr)
        return None
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": cpus, "include_dashboard": False})  # fmt: skip
    cluster.wait_for_nodes(timeout=120)
    return cluster


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

    def median(side: str) -> float:
        return statistics.median(r.seconds for r in runs if r.side == side)

    for side in sides[1:]:
        lines.append(f"  {side} / {sides[0]}: {median(side) / median(sides[0]):.2f}x wall time "
                     "(medians)")  # fmt: skip
    by_letter = {side[1]: side for side in sides}
    if "c" in by_letter and "d" in by_letter:
        c, d = by_letter["c"], by_letter["d"]
        lines.append(f"  {d} / {c}: {median(d) / median(c):.2f}x wall time (medians)")
    if "c" in by_letter and "e" in by_letter:
        c, e = by_letter["c"], by_letter["e"]
        lines.append(f"  {e} against {c}: {median(c) / median(e):.2f}x the debates per hour "
                     "(medians)")  # fmt: skip
    plain = [s for s in sides if s[1] != "e"]  # (e) decodes in groups: other text
    same = all(first[s].transcripts == first[plain[0]].transcripts for s in plain)
    complete = {s: sum(v == "complete" for v in first[s].statuses.values()) for s in sides}
    lines.append(f"debates complete: {complete}")
    named = ", ".join(s[:3] for s in plain)
    lines.append(f"transcript sha256 identical per debate across sides {named}: "
                 f"{'yes' if same else 'NO'}")  # fmt: skip
    for side in (s for s in sides if s[1] == "e"):
        texts = [r.transcripts for r in runs if r.side == side]
        steady = all(t == texts[0] for t in texts)
        lines.append(f"{side[:3]}: transcripts identical across its repetitions: "
                     f"{'yes' if steady else 'NO'}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localtable.benchbatch", description=__doc__)
    parser.add_argument("--before", default="d1000e0", help="git revision to compare with")
    parser.add_argument("--config", type=Path, default=REPO / "models.toml")
    parser.add_argument(
        "--panel", default="tiny", help="panel (default tiny, that of the published figures)"
    )
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="workers of sides (c) and (d)")
    parser.add_argument("--group", type=int, default=2, help="debates decoded together in (e)")
    parser.add_argument("--sides", default="abcde", help="the sides to run, e.g. c,e")
    parser.add_argument("--no-ray", action="store_true", help="leave out side (d)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    runs: list[BatchRun] = []
    chosen = set(args.sides.replace(",", ""))
    cluster = None if args.no_ray or "d" not in chosen else ray_cluster(available_cores())
    n = str(args.workers)
    with tempfile.TemporaryDirectory(prefix="localtable-bench-batch-") as tmp:
        old_tree = checkout(args.before, Path(tmp) / "before") if "a" in chosen else REPO
        sides = [
            (f"(a) before ({args.before})", old_tree, []),
            ("(b) now, 1 worker", REPO, []),
            (f"(c) now, --workers {n}", REPO, ["--workers", n]),
        ]
        if cluster is not None:
            sides.append((f"(d) now, Ray, {n} workers", REPO,
                          ["--ray", cluster.address, "--workers", n]))  # fmt: skip
        group = str(args.group)
        sides.append((f"(e) now, --decode batched --group {group}", REPO,
                      ["--decode", "batched", "--group", group]))  # fmt: skip
        sides = [side for side in sides if side[0][1] in chosen]
        try:
            for rep in range(1, args.repeat + 1):
                for side, tree, extra in sides:
                    print(f"{rep}/{args.repeat}: {side}", file=sys.stderr)
                    out = Path(tmp) / f"runs-{len(runs)}"
                    runs.append(run_batch_cli(side, tree, args, out, extra))
        finally:
            if old_tree != REPO:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                str(old_tree)], capture_output=True)  # fmt: skip
            if cluster is not None:
                cluster.shutdown()
    print(render(runs, args, available_cores()))
    if args.json is not None:
        args.json.write_text(
            "[" + ",\n".join(r.model_dump_json() for r in runs) + "]\n", encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
