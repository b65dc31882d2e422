"""Labelled positions of open questions: labelled by the summarizer's model under a
grammar, counted in code (debate/positions.py), shown by the renderers."""

from __future__ import annotations

import re

import pytest

from localtable.backends.openai.gbnf import parse
from localtable.debate import positions as pos
from localtable.debate.parsing import ParsedLabels
from localtable.debate.protocol import Debate
from localtable.debate.seeds import Seeds
from localtable.record import ParsedTurn, RunRecord, TurnRecord
from localtable.report.render import build_view
from localtable.templates import builtin
from tests.fakes import FakeSpeaker, make_record
from tests.test_openai_form import whole_regex

R1 = "Reasoning: because {a}\nAnswer: {a}"
R2 = "Reasoning: I thought again.\nInfluenced by: {i}\nDecision: {d}\nPosition: {p}\nAnswer: {a}"
SUMMARY = "Summary: Talked.\nCounterpoint: Shops lose.\nAnswer: Yes, cities should phase it in."
NAMES = ["A1", "B2", "C3"]


def labels(positions: list[str], start: int = 0, **assigned: str) -> str:
    """The labeller's reply: new positions declared from letter number `start`, then
    each panelist's letter."""
    abc = "ABCDEFGH"
    declared = [f"Position {abc[start + k]}: {label}" for k, label in enumerate(positions)]
    return "\n".join([*declared, *(f"{name}: {letter}" for name, letter in assigned.items())])


def run(
    replies: dict[str, list[str | Exception]], rounds: int = 2
) -> tuple[RunRecord, FakeSpeaker]:
    speaker = FakeSpeaker(replies)  # type: ignore[arg-type]
    record = make_record(NAMES, rounds=rounds, question="Should cities ban cars?")
    return Debate(record, speaker, builtin(), lambda r: None, lambda e: None).run(), speaker


def label_calls(speaker: FakeSpeaker) -> list[int]:
    return [i for i, c in enumerate(speaker.calls) if c.grammar.startswith("root ::= new")]


# -- in a debate -------------------------------------------------------------------


def test_round_one_labels_give_every_valid_turn_its_position() -> None:
    record, speaker = run(
        {
            "A1": [
                R1.format(a="Ban them."),
                labels(["Ban", "Keep"], A1="A", B2="B", C3="A"),
                SUMMARY,
            ],
            "B2": [R1.format(a="Keep them.")],
            "C3": [R1.format(a="Yes, ban cars.")],
        },
        rounds=1,
    )
    assert label_calls(speaker) == [3]  # after the round, before the summary
    call = speaker.calls[3]
    assert call.panelist == "A1" and call.seed == Seeds.of(record).stage("labels1", 0)
    assert "A1: Ban them.\nB2: Keep them.\nC3: Yes, ban cars." in call.messages[-1].content
    assert "Positions already labelled" not in call.messages[-1].content
    assert [(p.letter, p.label, p.round) for p in record.positions] == [
        ("A", "Ban", 1),
        ("B", "Keep", 1),
    ]
    assert [(t.panelist, t.position, t.position_changed) for t in record.turns] == [
        ("A1", "A", None),
        ("B2", "B", None),
        ("C3", "A", None),
    ]
    # different words, one labelled position: 2 of 3, counted in code
    assert record.summary and record.summary.consensus.line == "2 of 3 agreed"
    assert [(g.position, g.members) for g in record.summary.groups] == [
        ("Ban", ["A1", "C3"]),
        ("Keep", ["B2"]),
    ]


def new_position_in_round_two() -> dict[str, list[str | Exception]]:
    """C3 leaves position B for a new one in round 2; the labeller names it C."""
    return {
        "A1": [
            R1.format(a="Ban them."),
            labels(["Ban", "Keep"], A1="A", B2="B", C3="B"),
            R2.format(d="maintained", a="Ban them.", i="nobody", p="A"),
            labels(["Tolls instead"], start=2, C3="C"),
            SUMMARY,
        ],
        "B2": [R1.format(a="Keep them."), R2.format(d="maintained", a="Keep.", i="nobody", p="B")],
        "C3": [
            R1.format(a="Keep them."),
            R2.format(d="changed", a="Charge tolls.", i="A1", p="new"),
        ],
    }


def test_a_new_position_is_labelled_after_its_round_with_only_that_panelist() -> None:
    record, speaker = run(new_position_in_round_two())
    assert label_calls(speaker) == [3, 7]
    later = speaker.calls[7]
    # only the panelist that claimed a new position, with the letters already taken
    assert (
        '"C3: "' in later.grammar
        and '"A1: "' not in later.grammar
        and '"B2: "' not in later.grammar
    )
    assert '"Position C: "' in later.grammar and '"Position A: "' not in later.grammar
    assert 'letters0m0 ::= "A" | "B"' in later.grammar  # or one of the existing ones
    prompt = later.messages[-1].content
    assert "Positions already labelled:\nPosition A: Ban\nPosition B: Keep" in prompt
    assert "C3: Charge tolls." in prompt and "Ban them." not in prompt
    assert "(new letters start at C)" in prompt
    assert later.seed == Seeds.of(record).stage("labels2", 0)
    c3 = record.turn(2, "C3")
    assert c3 and c3.parsed and c3.parsed.position_claim == "new"
    assert c3.position == "C" and c3.position_changed is True
    assert [(p.letter, p.round) for p in record.positions] == [("A", 1), ("B", 1), ("C", 2)]
    assert record.labeling(2) and record.labeling(2).assigned == {"C3": "C"}  # type: ignore[union-attr]
    assert record.summary and record.summary.consensus.line == "No consensus"
    assert pos.changes(record) == [("C3", "Keep", "Tolls instead")]


def test_a_record_cut_back_to_round_one_labels_its_later_rounds_again() -> None:
    # A record cut back by hand (as test_reuse_real does) keeps round 2's labels and
    # position C; resumed, round 2 runs again and must be labelled again, not left with
    # C3's "new" position unplaced under labels made from other turns.
    replies = new_position_in_round_two()
    whole, _ = run(new_position_in_round_two())
    cut = whole.model_copy(deep=True)
    cut.turns = [t for t in cut.turns if t.round == 1]
    cut.summary = None
    later = {"A1": replies["A1"][2:], "B2": replies["B2"][1:], "C3": replies["C3"][1:]}
    speaker = FakeSpeaker(later)
    resumed = Debate(cut, speaker, builtin(), lambda r: None, lambda e: None).run()
    assert label_calls(speaker) == [3]  # round 2 labelled again, round 1 not
    assert resumed.model_dump() == whole.model_dump()
    assert pos.changes(resumed) == [("C3", "Keep", "Tolls instead")]


def test_a_new_position_may_be_labelled_as_an_existing_one() -> None:
    record, _ = run(
        {
            "A1": [
                R1.format(a="Ban them."),
                labels(["Ban", "Keep"], A1="A", B2="B", C3="B"),
                R2.format(d="maintained", a="Ban them.", i="nobody", p="A"),
                "C3: A",  # no new label: its 'new' answer is position A after all
                SUMMARY,
            ],
            "B2": [R1.format(a="Keep them."), R2.format(d="changed", a="Ban.", i="A1", p="A")],
            "C3": [
                R1.format(a="Keep them."),
                R2.format(d="changed", a="Ban, slowly.", i="A1", p="new"),
            ],
        }
    )
    assert [p.letter for p in record.positions] == ["A", "B"]
    c3 = record.turn(2, "C3")
    assert c3 and c3.position == "A" and c3.position_changed is True
    assert record.summary and record.summary.consensus.line == "All 3 models agreed"


def test_declared_but_unused_letters_are_dropped_and_the_rest_compacted() -> None:
    record, _ = run(
        {
            "A1": [
                R1.format(a="Ban them."),
                labels(["Ban", "Unused", "Keep"], A1="A", B2="C", C3="C"),
                SUMMARY,
            ],
            "B2": [R1.format(a="Keep them.")],
            "C3": [R1.format(a="Keep them all.")],
        },
        rounds=1,
    )
    assert [(p.letter, p.label) for p in record.positions] == [("A", "Ban"), ("B", "Keep")]
    assert [t.position for t in record.turns] == ["A", "B", "B"]
    assert record.labelings[0].assigned == {"A1": "A", "B2": "B", "C3": "B"}
    assert record.summary and [g.position for g in record.summary.groups] == ["Keep", "Ban"]


def test_labels_that_fail_three_times_fall_back_to_exact_answer_text() -> None:
    unusable = [
        "Position A: ...\nA1: A\nB2: A\nC3: A",  # a label with no word
        "Position A: Ban\nA1: A\nB2: A",  # cut off before C3
        "Position A: Ban\nA1: A\nB2: B\nC3: A",  # B was not declared
    ]
    record, speaker = run(
        {
            "A1": [R1.format(a="Ban them."), *unusable, SUMMARY],
            "B2": [R1.format(a="ban them")],
            "C3": [R1.format(a="Keep them.")],
        },
        rounds=1,
    )
    assert len(label_calls(speaker)) == 3
    seeds = [Seeds.of(record).stage("labels1", attempt) for attempt in range(3)]
    assert [speaker.calls[i].seed for i in label_calls(speaker)] == seeds
    (labelling,) = record.labelings
    assert labelling.status == "failed" and labelling.generation is None
    assert labelling.error == (
        "no usable labels; positions grouped by a leading yes/no, else by exact answer text,"
        " instead"
    )
    assert [r.split(":")[0] for r in labelling.rejected] == [f"seed {s}" for s in seeds]
    assert "no letter or digit" in labelling.rejected[0]
    assert "no position given for C3" in labelling.rejected[1]
    assert "'B', which was not declared" in labelling.rejected[2]
    assert [g.raw_output for g in labelling.rejected_generations] == unusable  # work thrown away
    # the same text (case and punctuation aside) is one position; the answer is its label
    assert [(p.letter, p.label) for p in record.positions] == [
        ("A", "Ban them."),
        ("B", "Keep them."),
    ]
    assert labelling.assigned == {"A1": "A", "B2": "A", "C3": "B"}
    assert record.summary and record.summary.consensus.line == "2 of 3 agreed"


def test_labels_that_put_a_yes_and_a_no_in_one_position_are_refused() -> None:
    # the failure seen with the 1.5B labeller: "No, unless ..." lumped with two "Yes"
    lumped = labels(["Yes, with safeguards"], A1="A", B2="A", C3="A")
    record, speaker = run(
        {
            "A1": [
                R1.format(a="Yes, open it."),
                lumped,
                labels(["Yes, open it", "No, unless audited"], A1="A", B2="B", C3="A"),
                SUMMARY,
            ],
            "B2": [R1.format(a="No, unless it is audited first.")],
            "C3": [R1.format(a="Yes, with safeguards.")],
        },
        rounds=1,
    )
    assert len(label_calls(speaker)) == 2
    (labelling,) = record.labelings
    assert labelling.status == "ok" and labelling.generation is not None
    assert labelling.rejected == [
        f"seed {Seeds.of(record).stage('labels1', 0)}: position A puts A1's 'yes' with B2's 'no'"
    ]
    assert [g.raw_output for g in labelling.rejected_generations] == [lumped]
    assert [t.position for t in record.turns] == ["A", "B", "A"]
    assert record.summary and record.summary.consensus.line == "2 of 3 agreed"


def test_a_new_no_answer_is_not_placed_on_a_yes_position() -> None:
    record, _ = run(
        {
            "A1": [
                R1.format(a="Yes, it helps."),
                labels(["Yes"], A1="A", B2="A", C3="A"),
                R2.format(d="maintained", a="Yes, it helps.", i="nobody", p="A"),
                "C3: A",  # the new "No" answer placed on the "Yes" position: refused
                labels(["No, too risky"], start=1, C3="B"),
                SUMMARY,
            ],
            "B2": [
                R1.format(a="Yes, surely so."),
                R2.format(d="maintained", a="Yes, it helps.", i="nobody", p="A"),
            ],
            "C3": [
                R1.format(a="Yes, but slowly."),
                R2.format(d="changed", a="No, it is too risky.", i="A1", p="new"),
            ],
        }
    )
    second = record.labeling(2)
    assert (
        second
        and second.rejected
        and "puts C3's 'no' with its label's 'yes'" in (second.rejected[0])
    )
    c3 = record.turn(2, "C3")
    assert c3 and c3.position == "B" and c3.position_changed is True
    assert record.summary and record.summary.consensus.line == "2 of 3 agreed"


def test_position_changes_and_consensus_follow_the_letters_not_the_stated_decision() -> None:
    record, _ = run(
        {
            "A1": [
                R1.format(a="Ban them."),
                labels(["Ban", "Keep"], A1="A", B2="B", C3="B"),
                # says it changed, but holds the same position in other words
                R2.format(d="changed", a="Ban them, but slowly.", i="nobody", p="A"),
                SUMMARY,
            ],
            # says it maintained, but names another position
            "B2": [
                R1.format(a="Keep them."),
                R2.format(d="maintained", a="Keep.", i="nobody", p="A"),
            ],
            "C3": [
                R1.format(a="Keep them."),
                R2.format(d="maintained", a="Keep them.", i="nobody", p="B"),
            ],
        }
    )
    a1, b2, c3 = (record.turn(2, n) for n in NAMES)
    assert a1 and a1.changed_mind_stated is True and a1.position_changed is False
    assert b2 and b2.changed_mind_stated is False and b2.position_changed is True
    assert c3 and c3.changed_mind_stated is False and c3.position_changed is False
    assert record.summary and record.summary.consensus.line == "2 of 3 agreed"
    assert [(g.position, g.members) for g in record.summary.groups] == [
        ("Ban", ["A1", "B2"]),
        ("Keep", ["C3"]),
    ]
    assert pos.changes(record) == [("B2", "Keep", "Ban")]
    assert 'B2: from "Keep" to "Ban"' in record.summary.generation.prompt  # type: ignore[union-attr]
    # the renderers show a change of mind where the letter changed, whatever was stated
    view = build_view(record)
    finals = {t.name: t for t in view.finals}
    assert finals["A1"].changed_mind is False and finals["A1"].mark == "held"
    assert finals["B2"].changed_mind is True and finals["B2"].mark == "stated"
    assert not any(t.answer_changed for t in view.finals)  # the letters say it, not the words
    assert [(c.position, c.mark) for c in view.chart.rows[1].cells] == [
        ("B", "held"),
        ("A", "stated"),
    ]
    assert [(p.letter, p.text, p.members) for p in view.positions] == [
        ("A", "Ban", ["A1", "B2"]),
        ("B", "Keep", ["C3"]),
    ]


def test_no_labelling_for_choice_and_number_questions() -> None:
    record = make_record(NAMES, rounds=2, question="2+2?")
    record.question_kind = "number"
    r2 = "Reasoning: again.\nInfluenced by: {i}\nDecision: {d}\nAnswer: {a}"  # no Position
    speaker = FakeSpeaker(
        {
            "A1": [R1.format(a="4"), r2.format(d="maintained", a="4", i="nobody"), SUMMARY],
            "B2": [R1.format(a="4"), r2.format(d="maintained", a="4.0", i="nobody")],
            "C3": [R1.format(a="5"), r2.format(d="changed", a="4", i="A1")],
        }
    )
    record = Debate(record, speaker, builtin(), lambda r: None, lambda e: None).run()
    assert label_calls(speaker) == [] and record.labelings == [] and record.positions == []
    assert all("Position" not in c.grammar for c in speaker.calls)
    assert all(t.status == "ok" and t.position is None for t in record.turns)
    c3 = record.turn(2, "C3")
    assert c3 and c3.position_changed is None and c3.answer_changed is True
    # exact comparison: 4 and 4.0 are one answer
    assert record.summary and record.summary.consensus.line == "All 3 models agreed"
    assert build_view(record).finals[2].mark == "stated"  # stated, as before labels


# -- the counting itself ------------------------------------------------------------


def turn(
    round_no: int, name: str, answer: str, claim: str | None = None, **kw: object
) -> TurnRecord:
    parsed = ParsedTurn(answer=answer, position_claim=claim)
    return TurnRecord(round=round_no, panelist=name, status="ok", parsed=parsed, **kw)  # type: ignore[arg-type]


def test_to_label_takes_round_one_and_then_only_new_claims() -> None:
    record = make_record(NAMES, rounds=2)
    failed = TurnRecord(round=1, panelist="C3", status="failed", error="x")
    record.turns = [
        turn(1, "A1", "Yes"), turn(1, "B2", "No"), failed,
        turn(2, "A1", "Yes", "A"), turn(2, "B2", "Maybe", "new"), turn(2, "C3", "Hm", "new"),
    ]  # fmt: skip
    assert [t.panelist for t in pos.to_label(record, 1)] == ["A1", "B2"]
    assert [t.panelist for t in pos.to_label(record, 2)] == ["B2", "C3"]
    record.question_kind = "choice"
    assert pos.to_label(record, 1) == []


def test_fallback_labels_group_by_normalized_text_and_cut_long_labels() -> None:
    long = "Ban private cars from every city centre within five years, " * 3
    labels = pos.fallback_labels(
        {"A1": "Yes, ban.", "B2": "yes ban", "C3": long, "D4": "ban cars"}, existing=1
    )
    assert labels.assigned == {"A1": "B", "B2": "B", "C3": "C", "D4": "D"}
    assert labels.new["B"] == "Yes, ban."
    assert len(labels.new["C"]) <= pos.LABEL_MAX_CHARS and labels.new["C"].endswith("…")
    assert long.startswith(labels.new["C"][:-1])


def test_fallback_labels_group_a_leading_yes_or_no_whatever_follows() -> None:
    labels = pos.fallback_labels(
        {"A1": "No, unless audited.", "B2": "Yes, fully.", "C3": "**Yes**, slowly.", "D4": "no"},
        existing=0,
    )
    assert labels.assigned == {"A1": "A", "B2": "B", "C3": "B", "D4": "A"}
    assert labels.new == {"A": "No", "B": "Yes"}


def test_label_plans_never_let_a_yes_and_a_no_share_a_position() -> None:
    plans = pos.label_plans(["no", "yes", "yes"], [], max_new=3)
    # "Yes" positions first (one or two of them), then the "No" one
    assert [p.declared for p in plans] == [
        [("A", "yes"), ("B", "no")],
        [("A", "yes"), ("B", "yes"), ("C", "no")],
    ]
    assert plans[1].choices == [["C"], ["A", "B"], ["A", "B"]]
    # an answer with neither word may take any position; a later round may reuse one
    (only,) = pos.label_plans([None], ["yes"], max_new=0)
    assert only.declared == [] and only.choices == [["A"]]
    plans = pos.label_plans(["no"], ["no", "yes"], max_new=6)
    assert [(p.declared, p.choices) for p in plans] == [
        ([], [["A"]]),
        ([("C", "no")], [["A", "C"]]),
    ]
    # no room for a new position and none to reuse: no plan (the fallback applies)
    assert pos.label_plans(["no"], ["yes"], max_new=0) == []


def test_a_yes_or_no_answer_never_takes_a_new_position_of_no_stance() -> None:
    # a "Yes" and a "No" answer could both take it: the bench's labeller on /v1 put a
    # "No" answer under a free position, then labelled "Yes, ...", in every attempt, and
    # the labels fell back (its label, label-free, now opens with neither word)
    (plan,) = pos.label_plans(["no", "yes", None], [], max_new=3)
    assert plan.declared == [("A", "yes"), ("B", "no"), ("C", None)]
    assert plan.choices == [["B"], ["A"], ["A", "B", "C"]]
    for stances in (["no", None, None], ["yes", "no", None, None], [None, "yes"]):
        for plan in pos.label_plans(stances, [], max_new=len(stances)):
            stance_of = dict(plan.declared)
            for mine, letters in zip(stances, plan.choices, strict=True):
                assert mine is None or {stance_of[x] for x in letters} == {mine}
    # an existing position of no stance stays open to them (check_stances reads its holders)
    (only,) = pos.label_plans(["no", "yes"], [None], max_new=0)
    assert only.choices == [["A"], ["A"]]


def test_the_label_grammar_makes_labels_open_with_their_stance() -> None:
    record, speaker = run(
        {
            "A1": [
                R1.format(a="No, unless audited."),
                labels(["Yes, open it", "No, unless audited"], A1="B", B2="A", C3="A"),
                SUMMARY,
            ],
            "B2": [R1.format(a="Yes, open it.")],
            "C3": [R1.format(a="Yes, with safeguards.")],
        },
        rounds=1,
    )
    grammar = speaker.calls[label_calls(speaker)[0]].grammar
    assert grammar.startswith("root ::= new0 | new1\n")
    assert 'new0 ::= "Position A: " label-yes "\\n" "Position B: " label-no "\\n" "A1: "' in grammar
    assert 'letters0m0 ::= "B"\nletters0m1 ::= "A"\nletters0m2 ::= "A"\n' in grammar
    assert 'label-yes ::= "Yes"' in grammar and 'label-no ::= "No"' in grammar
    assert [t.position for t in record.turns] == ["B", "A", "A"]
    assert pos.position_stances(record) == ["yes", "no"]


def test_stance_reads_only_a_leading_yes_or_no() -> None:
    assert [
        pos.stance(a)
        for a in ["Yes, but slowly.", "NO.", '"No" - never', "Not yet.", "Maybe yes", ""]
    ] == ["yes", "no", "no", None, None, None]


def rule_pattern(grammar: str, name: str) -> str:
    """A rule of a GBNF grammar as a Python regex (the /v1 form's independent check)."""
    rules = parse(grammar)
    return whole_regex(rules, rules[name])


def test_a_label_of_no_stance_opens_with_neither_yes_nor_no() -> None:
    (plan,) = pos.label_plans([None], [], max_new=1)
    assert plan.declared == [("A", None)]
    grammar = builtin().render(
        "label.gbnf.j2", members=["A1"], plans=[plan.model_dump()], label_max=pos.LABEL_MAX_CHARS
    )
    assert 'new0 ::= "Position A: " label-free "\\n"' in grammar
    free = re.compile(rule_pattern(grammar, "label-free"), re.DOTALL)
    refused = ["Yes, open it", "yes - open it", "YES it is", "Yes", "No.", "no way", "NO",
               "nO: never", '"Yes" it is', "**No** way", "No-brainer"]  # fmt: skip
    taken = ["Yesterday's rules", "Nobody wins", "Not yet", "Nope", "Yes2k", "Open it",
             "Y/N either", "N/A"]  # fmt: skip
    assert [x for x in refused if free.fullmatch(x)] == []
    assert [x for x in taken if not free.fullmatch(x)] == []
    # the grammar and the code agree: what it writes never reads as a yes or a no
    assert [x for x in refused if pos.stance(x) is None] == []
    assert [x for x in taken if pos.stance(x) is not None] == []
    assert not free.fullmatch(" Open it") and not free.fullmatch("(Open) it")  # a word first
    # its bound: LABEL_MAX_CHARS at most, whichever first word (1 to 4 characters)
    longest = "Yesx" + "x" * (pos.LABEL_MAX_CHARS - 4)
    assert free.fullmatch(longest) and not free.fullmatch(longest + "x")
    assert free.fullmatch("x" * (pos.LABEL_MAX_CHARS - 3))
    # the same first word as a turn's answer of neither stance (turn.gbnf.j2 answer-other)
    turn = builtin().render(
        "turn.gbnf.j2", fields=["answer"], peers=[], letters=[], allow_new=False,
        own_position="", reasoning_max=300, answer_max=200, multiline=False, kind="open",
        options=[],
    )  # fmt: skip
    assert rule_pattern(turn, "other-first") == rule_pattern(grammar, "other-first")


def test_apply_labels_places_turns_and_final_groups_rank_by_size_then_letter() -> None:
    record = make_record(NAMES, rounds=2)
    record.turns = [turn(1, n, n) for n in NAMES]
    pos.apply_labels(
        record,
        1,
        ParsedLabels(new={"A": "x", "B": "y"}, assigned={"A1": "A", "B2": "B", "C3": "B"}),
    )
    assert [t.position for t in record.turns] == ["A", "B", "B"]
    groups = pos.final_groups(record)
    assert [(g.position, g.members) for g in groups] == [("y", ["B2", "C3"]), ("x", ["A1"])]
    # round 2: B2 moves to A; a tie is ranked by letter
    record.turns.append(pos.placed(record, turn(2, "B2", "x"), "A"))
    record.turns.append(pos.placed(record, turn(2, "C3", "y"), "B"))
    assert [(t.position, t.position_changed) for t in record.turns[3:]] == [
        ("A", True),
        ("B", False),
    ]
    groups = pos.final_groups(record)
    assert [(g.position, g.members) for g in groups] == [("x", ["A1", "B2"]), ("y", ["C3"])]
    assert pos.changes(record) == [("B2", "y", "x")]


def test_the_label_grammar_is_valid_gbnf() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    for stances, existing in (([None, "yes", "no"], []), (["no", None], ["yes", None])):
        plans = pos.label_plans(stances, existing, max_new=3)
        grammar = builtin().render(
            "label.gbnf.j2",
            members=["A1", 'B "2"', "C3"][: len(stances)],
            plans=[p.model_dump() for p in plans],
            label_max=pos.LABEL_MAX_CHARS,
        )
        llama_cpp.LlamaGrammar.from_string(grammar, verbose=False)
