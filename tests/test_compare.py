"""Comparing panelists' views: agreement matrix, moves, positions, and every output format."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from localtable.record import write_record
from localtable.research.batchindex import BatchEntry, BatchIndex, write_index
from localtable.research.compare import collect, compare
from localtable.research.render import heat_color, render_comparison
from localtable.templates import builtin
from tests.scored import scored_record


def records() -> list:  # type: ignore[type-arg]
    return [
        # number: A1 and B2 end on 42 (42.0 is the same number); C3 on 7
        scored_record([["42", "41", "7"], ["42.0", "42", "7"]], run_id="a-s1"),
        # number: B2 moves to C3's round-1 answer; A1 fails in the final round
        scored_record([["5", "6", "9"], [None, "9", "9"]], run_id="b-s1"),
        # open: summary groups A1 with C3
        scored_record(
            [["yes", "no", "sure"]],
            kind="open",
            key=None,
            run_id="o-s1",
            groups=[["A1", "C3"], ["B2"]],
        ),  # fmt: skip
    ]


def test_agreement_matrix_counts_only_pairs_with_valid_final_answers() -> None:
    c = compare(records()[:2])
    ab, ac, bc = (c.pair(x, y) for x, y in [("A1", "B2"), ("A1", "C3"), ("B2", "C3")])
    assert ab and (ab.agree, ab.compared) == (1, 1)  # run b: A1 failed, not compared
    assert ac and (ac.agree, ac.compared) == (0, 1)
    assert bc and (bc.agree, bc.compared) == (1, 2)


def test_open_questions_agree_by_summary_group() -> None:
    c = compare(records()[2:])
    ac, ab = c.pair("A1", "C3"), c.pair("A1", "B2")
    assert ac and (ac.agree, ac.compared) == (1, 1)
    assert ab and (ab.agree, ab.compared) == (0, 1)
    no_summary = records()[2].model_copy(update={"summary": None, "run_id": "o2-s1"})
    c2 = compare([no_summary])
    assert any("o2-s1" in s for s in c2.skipped)
    pair = c2.pair("A1", "B2")
    assert pair and pair.compared == 0 and pair.rate is None


def test_moves_count_changes_and_towards_whom() -> None:
    c = compare(records()[:2])
    moves = {m.panelist: m for m in c.moves}
    # A1: 42 -> 42.0 is no change; run b round 2 failed, not counted
    assert (moves["A1"].turns, moves["A1"].changed) == (1, 0)
    # B2: 41 -> 42 (A1's answer) and 6 -> 9 (C3's answer)
    assert (moves["B2"].turns, moves["B2"].changed) == (2, 2)
    assert moves["B2"].towards == {"A1": 1, "C3": 1}
    assert (moves["C3"].changed, moves["C3"].towards) == (0, {})


def test_positions_side_by_side_with_the_key() -> None:
    c = compare(records())
    first = c.positions[0]
    assert first.question_id == "a" and first.answer_key == "42"
    assert [(x.answer, x.correct) for x in first.cells] == [
        ("42.0", True), ("42", True), ("7", False)
    ]  # fmt: skip
    second = c.positions[1]
    assert second.cells[0].status == "failed" and second.cells[0].correct is False
    open_row = c.positions[2]
    assert [x.group for x in open_row.cells] == ["A", "B", "A"]
    assert all(x.correct is None for x in open_row.cells)


def test_every_format(tmp_path: Path) -> None:
    recs = records()
    recs[0].turns[-1].parsed.answer = "<script>alert(1)</script>"  # type: ignore[union-attr]
    c = compare(recs)
    text = render_comparison(c, "text", builtin())
    assert "A1          -  50% (1/2)  50% (1/2)\n" in text  # the open run counts too
    assert "B2         2 of 2  100%  A1 x1, C3 x1" in text
    assert "a            7   42  42.0 ✓    42 ✓" in text and "o            7    -  A: yes" in text
    md = render_comparison(c, "md", builtin())
    assert "| B2 | 50% (1/2) | - | 33% (1/3) |" in md
    assert "<script>" not in md  # model text cannot inject HTML into Markdown
    rows = list(csv.reader(io.StringIO(render_comparison(c, "csv", builtin()))))
    assert rows[0][:3] == ["table", "question_id", "seed"]
    assert ["agreement", "", "", "", "B2", "C3", "", "", "1", "3", "0.3333"] in rows
    assert ["towards", "", "", "", "B2", "A1", "", "", "1", "2", ""] in rows
    positions = [r for r in rows if r[0] == "position"]
    assert len(positions) == 9 and positions[0][6] == "42.0" and positions[0][7] == "yes"
    page = render_comparison(c, "html", builtin())
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<style>" in page
    assert "<script>" not in page and "&lt;script&gt;" in page  # autoescaped
    assert not re.search(r"(src|href)=\"?(https?:)?//", page)  # self-contained
    assert page.count("<rect") == 9 and "<title>A1 and B2: 1 of 2 runs</title>" in page


def test_heat_colours() -> None:
    assert heat_color(0.0)[0] == "#f7fbff" and heat_color(1.0)[0] == "#084594"
    assert heat_color(None)[0] == "#e5e7eb"


def test_collect_reads_batches_and_runs(tmp_path: Path) -> None:
    recs = records()
    batch = tmp_path / "demo"
    for r in recs[:2]:
        write_record(batch / r.run_id, r)
    write_record(tmp_path / "o-s1", recs[2])
    entries = [
        BatchEntry(question_id="a", seed=1, run_dir="a-s1", status="complete"),
        BatchEntry(question_id="b", seed=1, run_dir="b-s1", status="complete"),
        BatchEntry(question_id="c", seed=1, run_dir="c-s1"),
    ]
    index = BatchIndex(
        name="demo", source="x", source_sha256="0" * 64, panel="default", rounds=2, seeds=[1],
        created_at=recs[0].created_at, updated_at=recs[0].created_at, questions=[],
        entries=entries,
    )  # fmt: skip
    write_index(batch, index)
    found, skipped = collect([str(batch), "o-s1"], tmp_path)
    assert [r.run_id for r in found] == ["a-s1", "b-s1", "o-s1"]
    assert skipped == ["demo/c-s1: not run yet"]
    found, _ = collect(["demo"], tmp_path)  # a batch name under --runs-dir
    assert len(found) == 2


def test_cli_compare_and_score_on_stored_runs(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from localtable.cli import cli

    for r in records():
        write_record(tmp_path / r.run_id, r)
    runner = CliRunner()
    text = runner.invoke(
        cli, ["compare", "a-s1", "b-s1", "o-s1", "--runs-dir", str(tmp_path)],
        catch_exceptions=False,
    )  # fmt: skip
    assert text.exit_code == 0 and "Final-round agreement" in text.output
    page = tmp_path / "c.html"
    html = runner.invoke(
        cli, ["compare", str(tmp_path / "a-s1"), "--format", "html", "--output", str(page)],
        catch_exceptions=False,
    )  # fmt: skip
    assert html.exit_code == 0 and "<svg" in page.read_text()
    scored = runner.invoke(
        cli, ["score", "a-s1", "b-s1", "o-s1", "--runs-dir", str(tmp_path), "--format", "csv"],
        catch_exceptions=False,
    )  # fmt: skip
    assert scored.exit_code == 0 and scored.output.startswith("table,label,tie_rule,round")
    as_json = runner.invoke(
        cli, ["score", "a-s1", "b-s1", "--runs-dir", str(tmp_path), "--format", "json"],
        catch_exceptions=False,
    )  # fmt: skip
    assert as_json.exit_code == 0 and json.loads(as_json.output)["debates"] == 2
    only_open = runner.invoke(cli, ["score", "o-s1", "--runs-dir", str(tmp_path)])
    assert only_open.exit_code == 2 and "nothing to score" in only_open.output
    missing = runner.invoke(cli, ["compare", "nope", "--runs-dir", str(tmp_path)])
    assert missing.exit_code == 2 and "no run 'nope'" in missing.output
