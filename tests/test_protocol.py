"""The debate logic on a fake speaker: fast, no llama.cpp."""

from __future__ import annotations

import pytest

from localtable.backends.base import BackendDown
from localtable.debate.protocol import SHORTENING_RULES, Debate, derive_seed
from localtable.record import RunRecord
from localtable.templates import builtin
from tests.fakes import FakeSpeaker, crash, make_record

R1 = "Answer: {a}\nReasoning: because {a}."
R2 = "Decision: {d}\nAnswer: {a}\nInfluenced by: {i}\nReasoning: I thought again."


def summary(assign: str, positions: int = 1) -> str:
    lines = ["Headline: Open source wins."]
    lines += [f"Position {'ABCD'[k]}: view {k}" for k in range(positions)]
    lines += [f"{name}: {letter}" for name, letter in zip(["A1", "B2", "C3"], assign, strict=False)]
    lines += ["Counterpoint: Safety risks.", "Summary: They talked."]
    return "\n".join(lines)


def run(speaker: FakeSpeaker, record: RunRecord) -> tuple[RunRecord, list[RunRecord]]:
    saved: list[RunRecord] = []
    debate = Debate(
        record, speaker, builtin(), lambda r: saved.append(r.model_copy(deep=True)), lambda e: None
    )
    return debate.run(), saved


def test_two_round_debate_records_everything() -> None:
    speaker = FakeSpeaker(
        {
            "A1": [
                R1.format(a="Yes, open it."),
                R2.format(d="maintained", a="Yes, open it.", i="nobody"),
                summary("AAA"),
            ],
            "B2": [
                R1.format(a="No, keep closed."),
                R2.format(d="changed", a="Yes, open it.", i="A1"),
            ],
            "C3": [R1.format(a="Yes."), R2.format(d="maintained", a="Yes, mostly.", i="A1, B2")],
        }
    )
    record, saved = run(speaker, make_record(["A1", "B2", "C3"]))
    assert [(t.round, t.panelist, t.status) for t in record.turns] == [
        (1, "A1", "ok"),
        (1, "B2", "ok"),
        (1, "C3", "ok"),
        (2, "A1", "ok"),
        (2, "B2", "ok"),
        (2, "C3", "ok"),
    ]
    b2 = record.turn(2, "B2")
    assert b2 and b2.changed_mind_stated is True and b2.answer_changed is True
    assert b2.parsed and b2.parsed.influenced_by == ["A1"]
    c3 = record.turn(2, "C3")
    assert c3 and c3.changed_mind_stated is False and c3.answer_changed is True
    a1 = record.turn(2, "A1")
    assert a1 and a1.answer_changed is False
    assert record.summary and record.summary.consensus.line == "All 3 models agreed"
    # saved after every turn and after the summary
    assert len(saved) == 7
    # seeds: explicit, per (round, panelist), recorded, all different
    seeds = [c.seed for c in speaker.calls]
    assert len(set(seeds)) == 7
    assert record.turns[0].generation and record.turns[0].generation.seed == derive_seed(7, 1, 0)


def test_round_two_sees_others_latest_answers_not_own() -> None:
    speaker = FakeSpeaker(
        {
            "A1": [
                R1.format(a="Alpha view."),
                R2.format(d="maintained", a="Alpha.", i="nobody"),
                summary("AB", 2),
            ],
            "B2": [R1.format(a="Beta view."), R2.format(d="maintained", a="Beta.", i="nobody")],
        }
    )
    run(speaker, make_record(["A1", "B2"]))
    a_round2 = speaker.calls[2]
    assert a_round2.panelist == "A1"
    last_user = a_round2.messages[-1].content
    assert "B2:\nAnswer: Beta view." in last_user
    assert "Alpha view." not in last_user  # its own answer is its assistant turn
    assert a_round2.messages[-2].role == "assistant"
    assert "Answer: Alpha view." in a_round2.messages[-2].content
    # the grammar lets it cite only the others
    assert '"B2"' in a_round2.grammar and '"A1"' not in a_round2.grammar


def test_anonymous_labels_map_back_to_names() -> None:
    speaker = FakeSpeaker(
        {
            "A1": [
                R1.format(a="Alpha view."),
                R2.format(d="changed", a="Beta.", i="Panelist B"),
                "Headline: Both agree.\nPosition A: x\nPanelist A: A\nPanelist B: A\n"
                "Counterpoint: c\nSummary: s",
            ],
            "B2": [R1.format(a="Beta view."), R2.format(d="maintained", a="Beta.", i="nobody")],
        }
    )
    record, _ = run(speaker, make_record(["A1", "B2"], anonymous=True))
    assert "B2" not in speaker.calls[2].messages[-1].content
    t = record.turn(2, "A1")
    assert t and t.parsed and t.parsed.influenced_by == ["B2"]
    assert record.summary and record.summary.groups[0].members == ["A1", "B2"]


def test_nonsense_and_crash_become_failed_turns_never_agreement() -> None:
    speaker = FakeSpeaker(
        {
            "A1": [
                R1.format(a="Yes."),
                R2.format(d="maintained", a="Yes.", i="nobody"),
                "Headline: Yes.\nPosition A: yes\nA1: A\nCounterpoint: none\nSummary: s",
            ],
            "B2": ["Answer: ?!?\nReasoning: x", "Answer: !!\nReasoning: y"],
            "C3": [R1.format(a="Yes."), crash()],
        }
    )
    record, _ = run(speaker, make_record(["A1", "B2", "C3"]))
    b1 = record.turn(1, "B2")
    assert b1 and b1.status == "failed" and b1.error and "answer has no letter or digit" in b1.error
    c2 = record.turn(2, "C3")
    assert c2 and c2.status == "failed" and c2.error and "SIGSEGV" in c2.error
    # the summarizer may only group panelists whose final turn is valid
    summary_grammar = speaker.calls[-1].grammar
    assert (
        '"A1: "' in summary_grammar and "B2" not in summary_grammar and "C3" not in summary_grammar
    )
    assert record.summary and record.summary.consensus.line == "No consensus"
    assert record.summary.consensus.agreeing == 1 and record.summary.consensus.total == 3


def test_long_history_is_shortened_by_recorded_rules() -> None:
    long = "word " * 300
    speaker = FakeSpeaker(
        {
            "A1": [
                f"Answer: Yes.\nReasoning: {long}",
                R2.format(d="maintained", a="Yes.", i="nobody"),
                summary("AA"),
            ],
            "B2": [
                f"Answer: No.\nReasoning: {long}",
                R2.format(d="maintained", a="No.", i="nobody"),
            ],
        },
        n_ctx=480,
    )
    record, _ = run(speaker, make_record(["A1", "B2"]))
    t = record.turn(2, "A1")
    assert t and t.generation
    assert t.generation.shortened and t.generation.shortened[0] == SHORTENING_RULES[0]


def test_prompt_that_never_fits_fails_the_turn_clearly() -> None:
    speaker = FakeSpeaker({"A1": [], "B2": []}, n_ctx=60)
    record, _ = run(speaker, make_record(["A1", "B2"], rounds=1))
    t = record.turn(1, "A1")
    assert t and t.status == "failed" and t.error and "raise n_ctx" in t.error


def test_resume_runs_only_missing_turns() -> None:
    replies = {
        "A1": [R1.format(a="Yes."), R2.format(d="maintained", a="Yes.", i="nobody"), summary("AA")],
        "B2": [R1.format(a="Yes!"), R2.format(d="maintained", a="Yes!", i="nobody")],
    }
    partial = make_record(["A1", "B2"])
    speaker = FakeSpeaker({k: list(v) for k, v in replies.items()})
    debate = Debate(partial, speaker, builtin(), lambda r: None, lambda e: None)
    debate.run_turn(partial.panelists[0], 1)
    debate.run_turn(partial.panelists[1], 1)
    record, _ = run(speaker, partial)
    assert [c.panelist for c in speaker.calls] == ["A1", "B2", "A1", "B2", "A1"]
    assert len(record.turns) == 4


def with_headline(headline: str) -> str:
    return summary("AA").replace("Open source wins.", headline)


def test_an_unusable_summary_is_retried_with_recorded_seeds() -> None:
    # the demo's 135M summarizer has repeated the question, or its instructions, as a headline
    speaker = FakeSpeaker(
        {
            "A1": [
                R1.format(a="Yes, open it."),
                with_headline("Is open source good?"),  # make_record's question
                "Headline: Open",  # cut off
                summary("AA"),
            ],
            "B2": [R1.format(a="Yes, open it.")],
        }
    )
    record, _ = run(speaker, make_record(["A1", "B2"], rounds=1))
    assert record.summary is not None and record.summary.status == "ok"
    assert record.summary.headline == "Open source wins."
    seeds = [derive_seed(7, 2 + attempt, 0) for attempt in range(3)]
    assert [c.seed for c in speaker.calls[-3:]] == seeds
    assert record.summary.generation and record.summary.generation.seed == seeds[2]
    assert record.summary.rejected == [
        f"seed {seeds[0]}: the headline only repeats the prompt: 'Is open source good?'",
        f"seed {seeds[1]}: no 'Position A:' line",
    ]
    # the work thrown away is kept and counted, not only its reasons
    thrown = record.summary.rejected_generations
    assert [g.seed for g in thrown] == seeds[:2]
    assert thrown[1].raw_output == "Headline: Open" and thrown[0].completion_tokens > 0


def test_a_summarizer_that_only_parrots_fails_the_summary_after_three_tries() -> None:
    echo = with_headline("state what the panel concluded about the question")
    speaker = FakeSpeaker(
        {"A1": [R1.format(a="Yes."), echo, echo, echo], "B2": [R1.format(a="No.")]}
    )
    record, _ = run(speaker, make_record(["A1", "B2"], rounds=1))
    assert record.summary is not None and record.summary.status == "failed"
    assert record.summary.error and "only repeats the prompt" in record.summary.error
    assert len(record.summary.rejected) == 3 and len(speaker.calls) == 5
    # the last attempt is the summary's generation; the two before it were thrown away
    assert len(record.summary.rejected_generations) == 2


def test_a_backend_that_cannot_answer_stops_the_run_and_resume_runs_that_turn_again() -> None:
    """BackendDown (a server down): the turn is kept as interrupted with the reason, nothing
    after it runs (later turns would read it), and resuming the record finishes it."""
    replies = {
        "A1": [R1.format(a="Yes."), R2.format(d="maintained", a="Yes.", i="nobody"), summary("AA")],
        "B2": [R1.format(a="Yes!"), R2.format(d="maintained", a="Yes!", i="nobody")],
    }
    down = BackendDown("http://gpu:8080: connection refused")
    speaker = FakeSpeaker({"A1": list(replies["A1"]), "B2": [down, *replies["B2"]]})
    record = make_record(["A1", "B2"])
    with pytest.raises(BackendDown):
        run(speaker, record)
    assert [(t.panelist, t.status) for t in record.turns] == [("A1", "ok"), ("B2", "interrupted")]
    assert record.turns[1].error == "http://gpu:8080: connection refused"
    assert [c.panelist for c in speaker.calls] == ["A1", "B2"]
    # what resume does: drop the interrupted turn, run the rest
    record.turns = [t for t in record.turns if t.status != "interrupted"]
    finished, _ = run(speaker, record)
    assert [(t.round, t.panelist, t.status) for t in finished.turns] == [
        (1, "A1", "ok"), (1, "B2", "ok"), (2, "A1", "ok"), (2, "B2", "ok")
    ]  # fmt: skip
    assert finished.summary is not None and finished.summary.status == "ok"


def test_a_summarizer_whose_backend_cannot_answer_leaves_the_summary_interrupted() -> None:
    speaker = FakeSpeaker(
        {
            "A1": [R1.format(a="Yes."), BackendDown("http://gpu:8080: HTTP 500 boom")],
            "B2": [R1.format(a="Yes.")],
        }
    )
    record = make_record(["A1", "B2"], rounds=1)
    with pytest.raises(BackendDown):
        run(speaker, record)
    assert record.summary is not None and record.summary.status == "interrupted"
    assert record.summary.error == "http://gpu:8080: HTTP 500 boom"
