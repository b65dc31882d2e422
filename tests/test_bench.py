"""The benchmark's arithmetic: which prompt tokens are new, and the side-by-side table."""

from __future__ import annotations

from datetime import UTC, datetime

from localtable.bench import BenchReport, ProcessUsage, Side, new_tokens, render
from localtable.record import Consensus, Generation, SummaryRecord, TurnRecord
from tests.fakes import make_record, sampling


def gen(prompt: str, tokens: int) -> Generation:
    return Generation(seed=1, sampling=sampling(), prompt=prompt, prompt_tokens=tokens,
                      prompt_sha256="0" * 64)  # fmt: skip


def turn(round_no: int, panelist: str, prompt: str, tokens: int) -> TurnRecord:
    return TurnRecord(round=round_no, panelist=panelist, status="ok",
                      generation=gen(prompt, tokens))  # fmt: skip


def test_new_tokens_counts_only_what_a_panelists_previous_prompt_lacked() -> None:
    record = make_record(["A", "B"], rounds=2)
    record.turns = [
        turn(1, "A", "sys q", 100),
        turn(1, "B", "sys q", 100),
        turn(2, "A", "sys q A1 B1", 160),  # extends its round-1 prompt: 60 new
        turn(2, "B", "other q B1", 150),  # does not: all 150 count
    ]
    record.summary = SummaryRecord(
        status="ok", summarizer="A", generation=gen("summary", 90),
        consensus=Consensus(kind="none", agreeing=1, total=2, line="1 of 2 agreed"),
    )  # fmt: skip
    assert new_tokens(record) == 100 + 100 + 60 + 150 + 90


def side(name: str, wall: float, texts: list[str], evaluated: int) -> Side:
    return Side(
        name=name, wall_seconds=wall, usage=ProcessUsage(peak_rss_bytes=900_000_000,
        cpu_seconds=2 * wall), texts=texts, prompt_tokens=1000, prompt_eval_tokens=evaluated,
        completion_tokens=200, generate_seconds=wall - 1, prompt_eval_seconds=wall / 4,
        decode_seconds=wall / 2, kv_caches=2, transcript_sha256="h" if name != "bare" else None,
    )  # fmt: skip


def report(bare_texts: list[str]) -> BenchReport:
    sides = [
        side("on", 50, ["x"], 400),
        side("off", 60, ["x"], 1000),
        side("bare", 80, bare_texts, 1000),
    ]
    return BenchReport(
        created_at=datetime(2026, 1, 1, tzinfo=UTC), machine="cpu", cores=2,
        llama_system_info="AVX2 = 1", rounds=3, seed=42, panel="default", sides=sides,
        new_tokens=400, memory_target_bytes={"on": 950_000_000, "off": 900_000_000,
        "bare": 900_000_000}, mismatches=[] if bare_texts == ["x"] else ["call 1"],
        prompt_mismatches=0,
    )  # fmt: skip


def test_the_table_gives_ratios_to_bare_and_flags_differing_texts() -> None:
    text = render(report(["x"]))
    ratios = next(line for line in text.splitlines() if line.strip().startswith("ratio to bare"))
    assert ratios.split()[3:] == ["0.62x", "0.75x", "1.00x"]
    evaluated = next(line for line in text.splitlines() if "evaluated / new" in line)
    assert "1.00x (400 new)" in evaluated and "2.50x" in evaluated
    assert "reuse on/off transcripts identical: yes" in text
    assert "bare texts identical to localtable's: yes" in text
    assert "not like for like" in render(report(["y"]))


def test_repetitions_give_medians_of_per_repetition_ratios_with_their_range() -> None:
    """A slow repetition (the machine got busy) moves every side of it, not the ratio."""
    rep = report(["x"])
    rep.repeats = [
        [side("on", on, ["x"], 400), side("off", off, ["x"], 1000), side("bare", bare, ["x"], 1000)]
        for on, off, bare in ((50, 60, 80), (150, 180, 240), (52, 61, 78))
    ]
    text = render(rep)
    wall = next(line for line in text.splitlines() if line.startswith("wall time"))
    assert "52.0 s (50.0-150.0)" in wall and "80.0 s (78.0-240.0)" in wall
    ratios = next(line for line in text.splitlines() if line.strip().startswith("ratio to bare"))
    # on/bare per repetition: 0.625, 0.625, 0.667 -> median 0.62 (0.62-0.67)
    assert "0.62x (0.62-0.67x)" not in ratios and "0.62x (0.62-0.67)" in ratios
    assert "repetitions: 3, sides interleaved" in text
