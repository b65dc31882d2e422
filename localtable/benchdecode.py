"""`make bench`'s decode section: a round of seats on one model, batched against one at a time.

A panel of `--seats` panelists on one model (default: 3 seats of Qwen2.5 Coder
1.5B, the default panel's model, with its personas and sampling) debates the
default question for one round, once with `decode = "batched"` (the round's turns
decoded as sequences of one llama.cpp context, backends/llamacpp/batchdecode.py)
and once with `decode = "sequential"` (one turn after another), interleaved
(batched, sequential, batched, ...) --repeat times so that a change of load on
a shared machine hits both alike. What is timed is the round: from its first
turn's start to its last turn's end (progress events), without the model load
and the summary, which run alike in both modes. Each mode's transcripts must be
identical across repetitions (a batched text depends on its group, which is
the same every time); the two modes' texts differ (llama.cpp is not
batch-invariant), so only their speed is compared.

Usage: python -m localtable.backends.llamacpp.bench --decode-round
       [--model qwen2.5-coder-1.5b] [--seats 3] [--repeat 3] [--max-tokens 256]
       [--seed 42] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from localtable.config import LoadedConfig, load_config
from localtable.debate.protocol import ProgressEvent
from localtable.session.run import DebateRequest, run_debate
from localtable.session.session import Session
from localtable.templates import TemplateSet

PANEL = "decode-bench"
PERSONAS = [
    "You are a careful, balanced policy analyst.",
    "You are a pragmatic engineer who has shipped open-source software.",
    "You are a skeptic who looks for risks and weak arguments.",
    "You are an economist who weighs costs and incentives.",
]


class RoundTiming(BaseModel):
    decode: Literal["sequential", "batched"]
    round_seconds: float
    completion_tokens: int
    texts: list[str]
    groups: list[list[str]]  # the recorded decode groups, in order


def bench_config(source: Path, model: str, seats: int, max_tokens: int, out: Path) -> Path:
    """models.toml with a panel of `seats` panelists on `model` added."""
    lines = [source.read_text(encoding="utf-8"), "", f"[panels.{PANEL}]"]
    for i in range(seats):
        lines += [
            f"[[panels.{PANEL}.panelists]]",
            f'name = "Seat {i + 1}"',
            f'model = "{model}"',
            f'persona = "{PERSONAS[i % len(PERSONAS)]}"',
            f"sampling = {{ temperature = 0.7, top_p = 0.9, max_tokens = {max_tokens} }}",
            "",
        ]
    out.write_text("\n".join(lines), encoding="utf-8")
    return out


class _RoundClock:
    """Times round 1 from its first turn's start to its last turn's end."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.end = 0.0

    def __call__(self, event: ProgressEvent) -> None:
        if event.stage != "turn" or event.round != 1:
            return
        now = time.monotonic()
        if event.status == "generating":
            self.start = self.start or now
        else:
            self.end = now
        print(f"  round 1: {event.panelist} {event.status}", file=sys.stderr)


def run_round(
    loaded: LoadedConfig,
    session: Session,
    decode: Literal["sequential", "batched"],
    seed: int,
    runs: Path,
) -> RoundTiming:
    req = DebateRequest(
        question=loaded.config.debate.question, panel=PANEL, rounds=1, seed=seed,
        runs_dir=runs, reuse_prefix=True, decode=decode,
    )  # fmt: skip
    clock = _RoundClock()
    _, record = run_debate(req, loaded, TemplateSet(), clock, session)
    assert clock.start is not None
    turns = [t for t in record.turns if t.round == 1]
    gens = [g for t in turns for g in (t.generation, t.continuation) if g is not None]
    groups = {
        (g.batch.step, tuple(g.batch.members)): list(g.batch.members)
        for g in gens
        if g.batch is not None
    }
    return RoundTiming(
        decode=decode,
        round_seconds=clock.end - clock.start,
        completion_tokens=sum(g.completion_tokens for g in gens),
        texts=[g.raw_output for g in gens],
        groups=[groups[k] for k in sorted(groups)],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localtable.backends.llamacpp.bench --decode-round"
    )
    parser.add_argument("--config", type=Path, default=Path("models.toml"))
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--seats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    modes: list[Literal["sequential", "batched"]] = ["batched", "sequential"]
    results: dict[str, list[RoundTiming]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="localtable-benchdecode-") as tmp:
        config = bench_config(
            args.config, args.model, args.seats, args.max_tokens, Path(tmp) / "models.toml"
        )
        loaded = load_config(config)
        with Session(TemplateSet(), loaded) as session:
            for rep in range(1, args.repeat + 1):
                for mode in modes:
                    print(f"{rep}/{args.repeat}: {mode}", file=sys.stderr)
                    results[mode].append(run_round(loaded, session, mode, args.seed, Path(tmp)))
    print(render(results, args))
    if args.json is not None:
        payload = {m: [r.model_dump() for r in rs] for m, rs in results.items()}
        import json

        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    unstable = [m for m, rs in results.items() if any(r.texts != rs[0].texts for r in rs)]
    return 1 if unstable else 0


def render(results: dict[str, list[RoundTiming]], args: argparse.Namespace) -> str:
    out = [
        f"A round of {args.seats} seats of {args.model} (max_tokens {args.max_tokens}, seed "
        f"{args.seed}), {args.repeat} repetitions interleaved",
        "",
        "| decode | round (median) | range | new tokens | tokens/s | identical across reps |",
        "|---|---|---|---|---|---|",
    ]
    medians: dict[str, float] = {}
    per_token: dict[str, float] = {}
    for mode, rs in results.items():
        secs = [r.round_seconds for r in rs]
        medians[mode] = statistics.median(secs)
        tokens = rs[0].completion_tokens
        same = all(r.texts == rs[0].texts for r in rs)
        per_token[mode] = tokens / medians[mode]
        out.append(
            f"| {mode} | {medians[mode]:.1f} s | {min(secs):.1f}-{max(secs):.1f} s | {tokens} | "
            f"{tokens / medians[mode]:.1f} | {'yes' if same else 'NO'} |"
        )
    ratios = [
        s.round_seconds / b.round_seconds
        for s, b in zip(results["sequential"], results["batched"], strict=True)
    ]
    out += [
        "",
        f"batched is {medians['sequential'] / medians['batched']:.2f}x as fast as one at a time "
        f"(medians; per repetition {', '.join(f'{r:.2f}x' for r in ratios)})",
        "per new token (the modes' texts, so their lengths, differ): batched "
        f"{per_token['batched']:.1f} tok/s, one at a time {per_token['sequential']:.1f} tok/s, "
        f"{per_token['batched'] / per_token['sequential']:.2f}x",
        f"batched groups: {results['batched'][0].groups}",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
