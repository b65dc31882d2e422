"""make bench-load's table: per-repetition ratios against the targets, transcripts compared."""

from __future__ import annotations

from localtable.backends.llamacpp.benchload import LoadRun, render


def run(side: str, wall: float, sha: str = "abc") -> LoadRun:
    return LoadRun(side=side, wall_seconds=wall, engine_seconds=wall / 1.2, grammar_seconds=0.5,
                   completion_tokens=500, transcript_sha256=sha)  # fmt: skip


def test_busy_over_idle_is_a_median_of_each_repetitions_ratio() -> None:
    names = ["before", "default", "before-busy", "busy"]
    runs = [
        [run("before", 20.0), run("default", 20.0), run("before-busy", 50.0), run("busy", 24.0)],
        [run("before", 30.0), run("default", 30.0), run("before-busy", 80.0), run("busy", 39.0)],
        [run("before", 10.0), run("default", 11.0), run("before-busy", 30.0), run("busy", 12.0)],
    ]
    text = render(runs, names, "header")
    assert "busy / idle (target: within 1.3x): 1.20x (1.09-1.30)" in text
    assert "busy / idle before (fixed threads, 1 turn at a time): 2.67x (2.50-3.00)" in text
    assert "default / before, idle (target: within 1.05x): 1.00x (1.00-1.10)" in text
    assert "1.20x (1.20-1.20)" in text  # wall / engine-bound
    assert "1.00 ms" in text  # grammar per token
    assert "DIFFERS" not in text and "round-parallel" not in text


def test_a_side_whose_transcript_differs_is_flagged() -> None:
    runs = [[run("sequential", 20.0), run("default", 15.0, sha="other")]]
    text = render(runs, ["sequential", "default"], "header")
    assert "DIFFERS" in text
    assert "default / 1 turn at a time, idle (round-parallel): 0.75x" in text
