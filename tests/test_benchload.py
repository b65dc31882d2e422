"""make bench-load's table: per-repetition ratios against the targets, transcripts compared."""

from __future__ import annotations

from localtable.benchload import LoadRun, render


def run(side: str, wall: float, sha: str = "abc") -> LoadRun:
    return LoadRun(side=side, wall_seconds=wall, engine_seconds=wall / 1.2, grammar_seconds=0.5,
                   completion_tokens=500, transcript_sha256=sha)  # fmt: skip


def test_busy_over_idle_is_a_median_of_each_repetitions_ratio() -> None:
    names = ["idle-fixed", "idle", "busy-fixed", "busy"]
    runs = [
        [run("idle-fixed", 20.0), run("idle", 20.0), run("busy-fixed", 50.0), run("busy", 24.0)],
        [run("idle-fixed", 30.0), run("idle", 30.0), run("busy-fixed", 80.0), run("busy", 39.0)],
        [run("idle-fixed", 10.0), run("idle", 11.0), run("busy-fixed", 30.0), run("busy", 12.0)],
    ]
    text = render(runs, names, "header")
    assert "busy / idle (target: within 1.3x): 1.20x (1.09-1.30)" in text
    assert "busy / idle, fixed threads (before): 2.67x (2.50-3.00)" in text
    assert "idle / idle with fixed threads (target: within 1.05x): 1.00x (1.00-1.10)" in text
    assert "1.20x (1.20-1.20)" in text  # wall / engine-bound
    assert "1.00 ms" in text  # grammar per token
    assert "DIFFERS" not in text and "round-parallel /" not in text


def test_a_side_whose_transcript_differs_is_flagged() -> None:
    runs = [[run("idle", 20.0), run("parallel", 15.0, sha="other")]]
    text = render(runs, ["idle", "parallel"], "header")
    assert "DIFFERS" in text
    assert "round-parallel / one turn at a time (target: at most 1.00x): 0.75x" in text
