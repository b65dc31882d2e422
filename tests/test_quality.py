"""`localtable quality` and `make quality`: the issue #12 metrics on records built here."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from localtable.cli import cli
from localtable.errors import LocaltableError
from localtable.record import (
    Consensus,
    Generation,
    LabelingRecord,
    ParsedTurn,
    PositionLabel,
    RunRecord,
    SummaryRecord,
    TurnRecord,
    read_record,
    write_record,
)
from localtable.research.batchindex import BatchEntry, BatchIndex, write_index
from localtable.research.quality import (
    agreement,
    engine_seconds,
    is_position,
    overlap,
    quality,
    restates,
    wall_seconds,
)
from localtable.research.render import render_quality
from localtable.research.tasks import load_task
from localtable.templates import TemplateSet
from tests.conftest import REPO
from tests.fakes import make_record, sampling
from tests.hostile import CONTROL

QUESTION = "Should cities ban private cars from their centres?"
NAMES = ["A1", "B2", "C3"]


def gen(seconds: float) -> Generation:
    return Generation(
        seed=1, sampling=sampling(), prompt="p", prompt_tokens=1, prompt_sha256="0" * 64,
        seconds=seconds,
    )  # fmt: skip


def ok(
    round_no: int,
    name: str,
    answer: str = "Yes, phased in with exemptions.",
    *,
    stated: bool | None = None,
    answer_changed: bool | None = None,
    position_changed: bool | None = None,
    seconds: float = 1.0,
) -> TurnRecord:
    stance = None if round_no == 1 else ("change" if stated else "maintain")
    return TurnRecord(
        round=round_no, panelist=name, status="ok", generation=gen(seconds),
        parsed=ParsedTurn(answer=answer, stance=stance, reasoning="because"),
        changed_mind_stated=stated, answer_changed=answer_changed,
        position_changed=position_changed,
    )  # fmt: skip


def failed(round_no: int, name: str) -> TurnRecord:
    return TurnRecord(round=round_no, panelist=name, status="failed", error="unusable answer")


def debate(
    run_id: str = "q-s1",
    *,
    panel: str = "default",
    headline: str = "Most back a phased ban; one prefers congestion pricing.",
    summary_status: str = "ok",
    status: str = "complete",
    turns: list[TurnRecord] | None = None,
    minutes: float = 2.0,
) -> RunRecord:
    record = make_record(NAMES, rounds=2, question=QUESTION)
    record.run_id = run_id
    record.panel = panel
    record.status = status  # type: ignore[assignment]
    record.finished_at = record.created_at + timedelta(minutes=minutes)
    record.turns = turns if turns is not None else [ok(r, n) for r in (1, 2) for n in NAMES]
    record.summary = SummaryRecord(
        status=summary_status,  # type: ignore[arg-type]
        summarizer=NAMES[0],
        headline=headline if summary_status == "ok" else "",
        consensus=Consensus(kind="all", agreeing=3, total=3, line="All agree"),
    )
    return record


# -- the metrics -----------------------------------------------------------------


def test_overlap_counts_distinct_casefolded_words_of_the_headline() -> None:
    assert overlap("Should cities BAN cars?", QUESTION) == 1.0
    # 4 of 5 distinct words are in the question: exactly the threshold restates
    assert overlap("cities should ban cars, mostly", QUESTION) == pytest.approx(0.8)
    assert restates("cities should ban cars, mostly", QUESTION)
    # 4 of 6: under the threshold
    assert not restates("cities should ban cars, mostly yes", QUESTION)
    assert overlap("ban ban ban cars cars", QUESTION) == 1.0  # distinct words
    assert restates("", QUESTION) and restates(" — ?! ", QUESTION)  # nothing of its own
    assert overlap("private_cars", QUESTION) == 1.0  # `_` separates words


def test_answers_that_are_not_positions() -> None:
    assert is_position("Yes, phased in over five years.")
    assert is_position("Is it? Yes: ban them.")  # one question mark, not at the end
    assert not is_position("")
    assert not is_position("   ")
    assert not is_position("Should cities ban cars? ")
    assert not is_position("Who pays? Who decides? Then we act.")  # a list of questions


def test_restated_headlines_and_failed_summaries() -> None:
    records = [
        debate("a-s1", headline="Should cities ban private cars from their centres?"),
        debate("b-s1", headline="Cities should ban private cars from centres, with exemptions."),
        debate("c-s1", summary_status="failed", status="failed"),
        debate("d-s1", headline="Should cities ban private cars?"),
    ]
    summary = records[0].summary
    assert summary is not None
    summary.rejected.extend(["seed 5: restated the question", "seed 6: empty"])
    p = quality(records).panels[0]
    assert [e.run_id for e in p.restated] == ["a-s1", "d-s1"]
    assert p.summaries_ok == 3 and p.summaries_failed == 1 and p.summary_rejected == 2
    assert p.debates == 4 and p.complete == 3 and p.failed == 1
    assert p.verdicts.restated is False


def test_answer_length_non_positions_and_failed_turns() -> None:
    turns = [
        ok(1, "A1", "Yes."),
        ok(1, "B2", "No: better buses first, then decide."),
        ok(1, "C3", "What about deliveries? And disabled drivers?"),
        ok(2, "A1", "  "),
        failed(2, "B2"),
        ok(2, "C3", "Should we?"),
    ]
    p = quality([debate(turns=turns)]).panels[0]
    assert p.ok_turns == 5 and p.turns == 6 and p.failed_turns == 1
    assert p.failed_turn_pct == pytest.approx(100 / 6)
    assert p.answer_chars.max == len("What about deliveries? And disabled drivers?")
    assert p.answer_chars.median == len("Should we?")
    assert [(e.round, e.panelist) for e in p.non_positions] == [(1, "C3"), (2, "A1"), (2, "C3")]
    assert p.verdicts.non_positions is False and p.verdicts.failed_turns is False


def test_failed_turn_target_is_two_percent_and_labelings_count_apart() -> None:
    fifty = [ok(1, "A1") for _ in range(49)] + [failed(1, "B2")]
    record = debate(turns=fifty)
    record.labelings = [
        LabelingRecord(round=1, labeller="A1", status="failed", error="no labels"),
        LabelingRecord(round=2, labeller="A1", status="ok"),
    ]
    p = quality([record]).panels[0]
    assert p.failed_turn_pct == 2.0 and p.verdicts.failed_turns is True
    assert p.labelings == 2 and p.failed_labelings == 1
    p = quality([debate(turns=fifty + [failed(2, "C3")])]).panels[0]
    assert p.verdicts.failed_turns is False


def test_agreement_uses_the_labelled_position_when_there_is_one() -> None:
    turns = [
        ok(1, "A1", "Yes."),  # round 1: no stance, never counted
        ok(1, "B2", stated=True, answer_changed=False),  # nor with one (not from the protocol)
        # said changed, reworded, same labelled position: a disagreement under schema 4
        ok(2, "A1", stated=True, answer_changed=True, position_changed=False),
        # said maintained, reworded, same position: agrees (the rewording does not count)
        ok(2, "B2", stated=False, answer_changed=True, position_changed=False),
        # said maintained, took another position
        ok(2, "C3", stated=False, answer_changed=True, position_changed=True),
        ok(3, "A1", stated=True, answer_changed=True, position_changed=True),
        ok(3, "B2", stated=None, answer_changed=True, position_changed=True),  # no stance
        ok(3, "C3", stated=False, answer_changed=None, position_changed=None),  # unknown
        failed(3, "A1"),
    ]
    a = agreement([debate(turns=turns)])
    assert (a.n, a.agree) == (4, 2) and a.rate == 0.5
    assert a.said_changed_same_position == 1 and a.said_maintained_position_changed == 1
    assert a.by_answer_text == 0


def test_agreement_falls_back_to_the_answer_text_for_older_records() -> None:
    turns = [
        ok(2, "A1", stated=False, answer_changed=True),  # a rewording counts as a change
        ok(2, "B2", stated=True, answer_changed=True),
        ok(2, "C3", stated=False, answer_changed=False),
    ]
    record = debate(turns=turns)
    a = agreement([record])
    assert (a.n, a.agree, a.said_maintained_position_changed, a.by_answer_text) == (3, 2, 1, 3)
    p = quality([record]).panels[0]
    assert p.verdicts.agreement is False  # 67% < 90%
    text = render_quality(quality([record]), "text", TemplateSet(), "Quality: t")
    assert "3 of 3 change-of-mind turns are from records without labelled positions" in text
    assert "every rewording counts as a change of position" in text


def test_seconds_per_debate_wall_and_engine() -> None:
    a = debate("a-s1", minutes=1, turns=[ok(1, "A1", seconds=2.0), ok(1, "B2", seconds=3.0)])
    a.summary = a.summary.model_copy(  # type: ignore[union-attr]
        update={"generation": gen(4.0), "rejected_generations": [gen(5.0)]}
    )
    a.labelings = [
        LabelingRecord(round=1, labeller="A1", status="ok", generation=gen(6.0),
                       rejected_generations=[gen(7.0)]),
    ]  # fmt: skip
    assert wall_seconds(a) == 60.0 and engine_seconds(a) == 27.0
    b = debate("b-s1", minutes=3, turns=[ok(1, "A1", seconds=1.0)])
    c = debate("c-s1", minutes=10, status="interrupted")  # not finished: left out
    p = quality([a, b, c]).panels[0]
    assert (p.wall_seconds.median, p.wall_seconds.max) == (120.0, 180.0)
    assert (p.engine_seconds.median, p.engine_seconds.max) == (14.0, 27.0)
    assert p.debates == 2 and p.left_out == 1


def test_records_are_grouped_per_panel_with_their_models() -> None:
    small = debate("a-s1", panel="small")
    big = debate("b-s1", panel="big", turns=[failed(1, "A1")])
    big.panelists[0] = big.panelists[0].model_copy(update={"model": "big-model"})
    report = quality([small, big, debate("c-s1", panel="small")])
    assert [p.panel for p in report.panels] == ["small", "big"]
    small_q, big_q = report.panels
    assert small_q.debates == 2 and big_q.debates == 1
    assert big_q.failed_turns == 1 and small_q.failed_turns == 0
    assert [(m.name, m.model) for m in big_q.panelists] == [
        ("A1", "big-model"), ("B2", "m"), ("C3", "m"),
    ]  # fmt: skip
    assert small_q.verdicts.failed_turns is True and big_q.verdicts.failed_turns is False


def test_nothing_finished_is_an_error_and_nothing_to_judge_is_na() -> None:
    with pytest.raises(LocaltableError, match="nothing to measure"):
        quality([debate(status="interrupted")])
    p = quality([debate(turns=[], summary_status="failed", status="failed")]).panels[0]
    assert p.verdicts.model_dump() == dict.fromkeys(
        ["restated", "non_positions", "failed_turns", "agreement", "false_claims",
         "unmarked_cuts", "unmarked_answers", "label_contradictions", "bare"]
    )  # fmt: skip
    text = render_quality(quality([debate(turns=[])]), "text", TemplateSet(), "Quality: t")
    assert "n/a" in text


def test_text_and_markdown_layouts() -> None:
    turns = [ok(1, "A1", "Why not?"), ok(2, "A1", stated=True, position_changed=True)]
    report = quality([debate("a-s1", headline="Should cities ban private cars?", turns=turns)])
    text = render_quality(report, "text", TemplateSet(), "Quality: t")
    lines = text.splitlines()
    assert lines[0] == "Quality: t"
    assert "Panel default: 1 debate measured (1 complete, 0 failed)" in lines
    assert "  A1: m" in lines
    row = next(line for line in lines if line.startswith("Headlines restating the question"))
    assert "1 of 1 summaries" in row and row.endswith("FAIL")
    row = next(line for line in lines if line.startswith("Stated change of mind"))
    assert "100.0% (1 of 1)" in row and "≥ 90%" in row and row.endswith("pass")
    row = next(line for line in lines if line.startswith("Failed turns"))
    assert "0.0% (0 of 2)" in row and "≤ 2%" in row
    assert "Restated: a-s1: 'Should cities ban private cars?'" in lines
    assert "Not a position: a-s1 round 1 A1: 'Why not?'" in lines
    md = render_quality(report, "md", TemplateSet(), "Quality: t")
    assert "#### Panel default" in md
    assert "| Answers that are not positions | 1 of 2 answers | 0 | FAIL |" in md


# -- the task and the command ---------------------------------------------------------


def test_the_quality_task_is_eight_open_questions() -> None:
    task = load_task("quality")
    assert task.source == "task:quality" and len(task.questions) == 8
    assert [q.id for q in task.questions] == [
        "car-free-centres", "basic-income", "humans-to-mars", "gain-of-function",
        "monolith-or-microservices", "rust-over-cpp", "ai-hiring", "open-training-code",
    ]  # fmt: skip
    assert all(q.kind == "open" and q.answer is None for q in task.questions)
    assert task.questions[0].question == QUESTION


def test_cli_on_a_batch_folder_and_on_run_folders(tmp_path: Path) -> None:
    batch = tmp_path / "quality-default"
    records = [debate("a-s1"), debate("b-s1", turns=[failed(1, "A1"), ok(1, "B2")])]
    for r in records:
        write_record(batch / r.run_id, r)
    entries = [
        BatchEntry(question_id="a", seed=1, run_dir="a-s1", status="complete"),
        BatchEntry(question_id="b", seed=1, run_dir="b-s1", status="complete"),
        BatchEntry(question_id="c", seed=1, run_dir="c-s1"),
    ]
    write_index(batch, BatchIndex(
        name="quality-default", source="task:quality", source_sha256="0" * 64, panel="default",
        rounds=2, seeds=[1], created_at=records[0].created_at, updated_at=records[0].created_at,
        questions=[], entries=entries,
    ))  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(cli, ["quality", str(batch)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Quality: quality-default\n")
    assert "Panel default: 2 debates measured" in result.output
    assert "12.5% (1 of 8)" in result.output  # 7 ok turns and 1 failed
    assert "Left out: quality-default/c-s1: not run yet" in result.output
    by_name = runner.invoke(
        cli, ["quality", "quality-default", "--runs-dir", str(tmp_path), "--format", "md"],
        catch_exceptions=False,
    )  # fmt: skip
    assert by_name.exit_code == 0 and "### Quality: quality-default" in by_name.output
    one_run = runner.invoke(cli, ["quality", str(batch / "a-s1")], catch_exceptions=False)
    assert one_run.exit_code == 0 and "1 debate measured" in one_run.output


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(cli, ["quality", str(empty)])
    assert result.exit_code == 2 and result.output.startswith("Error: no run ")
    assert len(result.output.splitlines()) == 1
    batch = tmp_path / "pending"
    write_index(batch, BatchIndex(
        name="pending", source="task:quality", source_sha256="0" * 64, panel="default",
        rounds=2, seeds=[1], created_at=debate().created_at, updated_at=debate().created_at,
        questions=[], entries=[BatchEntry(question_id="a", seed=1, run_dir="a-s1")],
    ))  # fmt: skip
    result = runner.invoke(cli, ["quality", str(batch)])
    assert result.exit_code == 2
    assert (
        result.output == f"Error: nothing to measure in {batch}: no debate of it has a record yet\n"
    )
    write_record(tmp_path / "running", debate("running", status="running"))
    result = runner.invoke(cli, ["quality", "running", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "nothing to measure: none of the 1 runs is finished" in (
        result.output
    )


def test_stored_records_of_every_schema_version(tmp_path: Path) -> None:
    """read_record upgrades versions 1-3; their turns carry no labelled positions."""
    for name in ("record", "record-v1-real", "record-v2-real"):
        (tmp_path / name).mkdir()
        shutil.copy(REPO / "tests" / "data" / f"{name}.json", tmp_path / name / "record.json")
    records = [read_record(tmp_path / n) for n in ("record", "record-v1-real", "record-v2-real")]
    report = quality(records)
    assert [p.panel for p in report.panels] == ["city-panel", "fast"]
    city = report.panels[0]
    assert city.turns == 12 and city.failed_turns == 2 and city.agreement.n == 6
    assert city.agreement.by_answer_text == city.agreement.n
    assert city.wall_seconds.max == 150.0


@pytest.mark.parametrize("fmt", ["text", "md"])
def test_no_terminal_control_characters_from_records(fmt: str) -> None:
    escapes = "\x1b]0;PWNED\x07 \x1b[2J\x9b31m"
    record = debate(panel=f"p{escapes}", headline=f"Should cities ban cars{escapes}?",
                    turns=[ok(1, "A1", f"Why {escapes}?")])  # fmt: skip
    record.panelists[0] = record.panelists[0].model_copy(update={"model": f"m{escapes}"})
    out = render_quality(quality([record]), fmt, TemplateSet(), "Quality: t")  # type: ignore[arg-type]
    assert "PWNED" in out and not CONTROL.search(out), CONTROL.findall(out)


# -- issue #26: what the reader is told against the record -------------------------------


def test_summary_claims_the_record_contradicts() -> None:
    r = debate("c-s1")  # nobody changed position
    assert r.summary is not None
    r.summary = r.summary.model_copy(update={"summary": "B2 changed their mind after A1 spoke."})
    kept = debate("c-s2")
    assert kept.summary is not None
    kept.summary = kept.summary.model_copy(update={"summary": "Nobody changed position."})
    p = quality([r, kept]).panels[0]
    assert [(e.run_id, e.text) for e in p.false_claims] == [
        ("c-s1", "it says B2 changed position, but B2 never did")
    ]
    assert p.verdicts.false_claims is False
    row = next(
        line
        for line in render_quality(quality([r, kept]), "text", TemplateSet(), "Q").splitlines()
        if line.startswith("Summary claims contradicted")
    )
    assert "1 in 2 summaries" in row and row.endswith("FAIL")


def test_a_false_statement_of_a_held_position_is_a_claim_the_record_contradicts() -> None:
    turns = [ok(i, n).model_copy(update={"position": "A"}) for i in (1, 2) for n in NAMES]
    r = debate("h-s1", turns=turns)  # all three hold position A
    r.positions = [PositionLabel(letter="A", label="Yes, phased in", round=1)]
    assert r.summary is not None
    false = "A1 and B2 back a phased ban, while C3 argues against it."
    r.summary = r.summary.model_copy(update={"summary": false, "headline": "Yes, phased in."})
    p = quality([r]).panels[0]
    assert [e.text for e in p.false_claims] == [
        "it says C3 holds another position, but all 3 agreed"
    ]


# the grammar's bound for max_tokens 64 (answer_max 128): 88 units after "Yes, because c"
CUT_ANSWER = "Yes, because cars crowd the centre, fill its air with fumes and noise, and push " \
             "walkers off pavements,"  # fmt: skip


def answer_turn(answer: str, *, flag: bool | None) -> TurnRecord:
    """A round-1 turn made with issue #26's grammars (reasoning_cut kept), with the answer
    cut flag `flag` (None: made before answers were flagged)."""
    g = gen(1.0).model_copy(update={"raw_output": f"Reasoning: Cars.\nAnswer: {answer}"})
    return TurnRecord(
        round=1, panelist="A1", status="ok", generation=g, reasoning_cut=False,
        answer_cut=flag, answer_max_chars=128,
        parsed=ParsedTurn(answer=answer, reasoning="Cars.", order=["reasoning", "answer"]),
    )  # fmt: skip


def test_answers_cut_without_a_mark_older_and_newer_records() -> None:
    # made at 8c8915a: nothing flagged, read off the grammar's bound, shown as generated
    older = debate("o-s1", turns=[answer_turn(CUT_ANSWER, flag=None)])
    newer = debate("n-s1", turns=[answer_turn(CUT_ANSWER, flag=True)])  # shown with "…"
    ended = debate("e-s1", turns=[answer_turn(CUT_ANSWER[:-1] + ".", flag=None)])
    p = quality([older, newer, ended]).panels[0]
    assert p.cut_answers == 2
    assert [(e.run_id, e.text) for e in p.unmarked_answers] == [("o-s1", CUT_ANSWER[-60:])]
    assert p.verdicts.unmarked_answers is False
    row = next(
        line
        for line in render_quality(quality([older, newer]), "text", TemplateSet(), "Q").splitlines()
        if line.startswith("Answers cut without a mark")
    )
    assert "1 of 2 cut" in row and row.endswith("FAIL")
    assert quality([newer]).panels[0].verdicts.unmarked_answers is True


def cut_turn(reasoning: str, *, flag: bool | None) -> TurnRecord:
    text = f"Reasoning: {reasoning}\nAnswer: Yes, phased in with exemptions."
    g = gen(1.0).model_copy(update={"raw_output": text})
    return TurnRecord(
        round=1, panelist="A1", status="ok", generation=g, reasoning_cut=flag,
        parsed=ParsedTurn(answer="Yes, phased in with exemptions.", reasoning=reasoning,
                          order=["reasoning", "answer"]),
    )  # fmt: skip


def test_reasoning_cut_without_a_mark_older_and_newer_records() -> None:
    from localtable.debate.protocol import reasoning_max_chars

    bound = reasoning_max_chars(sampling().max_tokens)
    long = ("Cars crowd the centre. " * 80)[: bound - 10] + "and if the"
    assert len(long) == bound
    peer_prompt = f"A1:\nReasoning: {long}\nAnswer: Yes, phased in with exemptions."
    later = ok(2, "B2").model_copy(
        update={"generation": gen(1.0).model_copy(update={"prompt": peer_prompt})}
    )
    # an older record (no flag): read off the grammar's bound, shown as it was
    older = debate("o-s1", turns=[cut_turn(long, flag=None), later])
    # a newer one: flagged, and shown ended at a sentence with "…" (its peers too)
    newer = debate("n-s1", turns=[cut_turn(long, flag=True), ok(2, "B2")])
    short = debate("s-s1", turns=[cut_turn("Short and done.", flag=False)])
    p = quality([older, newer, short]).panels[0]
    assert p.cut_reasonings == 2
    assert [(e.run_id, e.round) for e in p.unmarked_cuts] == [("o-s1", 1)]
    assert p.verdicts.unmarked_cuts is False
    # a newer record whose next round still showed the cut reasoning bare is counted too
    leaked = debate("l-s1", turns=[cut_turn(long, flag=True), later])
    assert [e.run_id for e in quality([leaked]).panels[0].unmarked_cuts] == ["l-s1"]


def test_answers_against_their_label_and_bare_answers() -> None:
    r = debate(
        "l-s1",
        turns=[
            ok(1, "A1", "No, because it hurts shops.").model_copy(update={"position": "A"}),
            ok(1, "B2", "Yes, phased in slowly.").model_copy(update={"position": "A"}),
            ok(1, "C3", "Yes.").model_copy(update={"position": "B"}),
        ],
    )
    r.positions = [
        PositionLabel(letter="A", label="Yes, with exemptions", round=1),
        PositionLabel(letter="B", label="Keep the cars", round=1),
    ]
    p = quality([r]).panels[0]
    assert [(e.panelist, e.text) for e in p.label_contradictions] == [
        ("A1", "No, because it hurts shops. (position A: Yes, with exemptions)")
    ]
    assert p.placed_answers == 3 and p.verdicts.label_contradictions is False
    assert [e.text for e in p.bare_answers] == ["Yes."] and p.verdicts.bare is False
    text = render_quality(quality([r]), "text", TemplateSet(), "Q")
    assert "Against its position's label: l-s1 round 1 A1:" in text
    assert "Bare: l-s1 round 1 C3: 'Yes.'" in text
    assert "not measured (--judge-reasoning)" in text


def test_reasoning_verdicts_are_counted_per_panel() -> None:
    from localtable.debate.answers import ReasoningVerdict

    def v(answer: str, concluded: str | None, panel: str = "default") -> ReasoningVerdict:
        return ReasoningVerdict(run_id="r", panel=panel, round=1, panelist="A1", answer=answer,
                                concluded=concluded)  # type: ignore[arg-type]  # fmt: skip

    verdicts = [v("Yes, because.", "no"), v("No, never ever.", "no"), v("Yes, if so.", "neither"),
                v("Yes, maybe so.", None), v("No, it is bad.", "yes", panel="other")]  # fmt: skip
    report = quality([debate("r"), debate("o", panel="other")], judged=verdicts)
    mine, other = (p.reasoning_stances for p in report.panels)
    assert mine and mine.judged == 3 and mine.neither == 1 and mine.failed == 1
    assert [e.text for e in mine.opposite] == ["Yes, because. (its reasoning concludes no)"]
    assert other and other.judged == 1 and len(other.opposite) == 1
    row = next(
        line
        for line in render_quality(report, "text", TemplateSet(), "Q").splitlines()
        if line.startswith("Answers against their own reasoning")
    )
    assert "1 of 3 yes/no answers (1 neither, 1 not asked)" in row


def test_summary_lines_cut_by_the_grammars_bound_count_among_the_cuts() -> None:
    stopped = "Qwen 1.5B Skeptic warns that releasing training code could let bad actors copy"
    newer = debate("n-s1")
    assert newer.summary is not None
    newer.summary = newer.summary.model_copy(
        update={"counterpoint": stopped, "cut": ["counterpoint"], "line_max_chars": 200}
    )
    # an older record (no flag): a line at the grammar's bound was stopped there
    older = debate("o-s1")
    assert older.summary is not None
    at_bound = ("Cities gain clean air, " * 10)[:199]
    older.summary = older.summary.model_copy(update={"headline": at_bound, "line_max_chars": 200})
    p = quality([newer, older]).panels[0]
    assert p.cut_reasonings == 2  # the reasoning row counts the summaries' lines too
    assert p.unmarked_cuts == [] and p.verdicts.unmarked_cuts is True  # shown with "…"
    assert newer.summary.shown("counterpoint") == stopped + "…"
    assert older.summary.shown("headline").endswith("…")
    row = next(
        line
        for line in render_quality(quality([newer]), "text", TemplateSet(), "Q").splitlines()
        if line.startswith("Reasoning or summary lines cut without a mark")
    )
    assert "0 of 1 cut" in row


def test_a_headline_against_the_largest_positions_stance_is_a_false_claim() -> None:
    turns = [ok(i, n).model_copy(update={"position": "A"}) for i in (1, 2) for n in NAMES]
    r = debate("h-s1", turns=turns, headline="No, only congestion pricing.")
    r.positions = [PositionLabel(letter="A", label="Yes, phased in", round=1)]
    assert [e.text for e in quality([r]).panels[0].false_claims] == [
        "the headline does not open with Yes, the stance of the largest position (3 of 3)"
    ]
