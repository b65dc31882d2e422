"""The debate logic on a fake speaker: fast, no llama.cpp."""

from __future__ import annotations

from pathlib import Path

import pytest

from localtable.backends.base import BackendDown
from localtable.debate.protocol import (
    ANSWER_MAX_CHARS,
    CONTINUATION_MAX_TOKENS,
    REASONING_MAX_CHARS,
    SHORTENING_RULES,
    Debate,
    answer_max_chars,
    derive_seed,
    reasoning_max_chars,
    stage_seed,
)
from localtable.record import RunRecord, read_record, transcript_sha256
from localtable.session.run import RunInterrupted, execute
from localtable.templates import builtin
from tests.fakes import FakeSpeaker, Reply, TurnFailed, crash, make_record

# Replies in the order the grammar generates them: reasoning first, the answer last.
R1 = "Reasoning: because {a}\nAnswer: {a}"
# a later round of an open question, once its round-1 positions are labelled
R2 = "Reasoning: I thought again.\nInfluenced by: {i}\nDecision: {d}\nPosition: {p}\nAnswer: {a}"
SUMMARY = "Summary: They talked.\nCounterpoint: Safety risks.\nAnswer: Yes, open source wins."


def labels(positions: list[str], **assigned: str) -> str:
    """The labeller's reply: positions A, B... declared in order, then each panelist's letter."""
    declared = [f"Position {'ABCDEFGH'[k]}: {label}" for k, label in enumerate(positions)]
    return "\n".join([*declared, *(f"{name}: {letter}" for name, letter in assigned.items())])


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
                labels(["Open it", "Keep it closed"], A1="A", B2="B", C3="A"),
                R2.format(d="maintained", a="Yes, open it.", i="nobody", p="A"),
                SUMMARY,
            ],
            "B2": [
                R1.format(a="No, keep closed."),
                R2.format(d="changed", a="Yes, open it.", i="A1", p="A"),
            ],
            "C3": [
                R1.format(a="Yes, it helps."),
                R2.format(d="maintained", a="Yes, mostly so.", i="A1, B2", p="A"),
            ],
        }
    )
    record, saved = run(speaker, make_record(["A1", "B2", "C3"]))
    assert [(t.round, t.panelist, t.status, t.position) for t in record.turns] == [
        (1, "A1", "ok", "A"),
        (1, "B2", "ok", "B"),
        (1, "C3", "ok", "A"),
        (2, "A1", "ok", "A"),
        (2, "B2", "ok", "A"),
        (2, "C3", "ok", "A"),
    ]
    assert [(p.letter, p.label, p.round) for p in record.positions] == [
        ("A", "Open it", 1),
        ("B", "Keep it closed", 1),
    ]
    (labelling,) = record.labelings  # round 2 claimed no new position: nothing to label
    assert labelling.round == 1 and labelling.status == "ok" and labelling.labeller == "A1"
    assert labelling.assigned == {"A1": "A", "B2": "B", "C3": "A"}
    b2 = record.turn(2, "B2")
    assert b2 and b2.changed_mind_stated is True and b2.answer_changed is True
    assert b2.position_changed is True
    assert b2.parsed and b2.parsed.influenced_by == ["A1"] and b2.parsed.position_claim == "A"
    c3 = record.turn(2, "C3")
    assert c3 and c3.changed_mind_stated is False and c3.answer_changed is True
    assert c3.position_changed is False  # other words, the same labelled position
    assert c3.parsed and c3.parsed.influenced_by == ["A1", "B2"]
    a1 = record.turn(2, "A1")
    assert a1 and a1.answer_changed is False and a1.position_changed is False
    assert record.summary and record.summary.consensus.line == "All 3 models agreed"
    assert [(g.position, g.members) for g in record.summary.groups] == [
        ("Open it", ["A1", "B2", "C3"])
    ]
    # the labels and the summary keep to a KV conversation of their own (the turns
    # reuse each panelist's own), so they never evict the summarizer's debate
    assert [c.conversation for c in speaker.calls] == [""] * 3 + ["moderator"] + [""] * 3 + [
        "moderator"
    ]
    # saved after every turn, after the labels and after the summary
    assert len(saved) == 8
    # seeds: explicit, per (round, panelist) or per step, recorded, all different
    seeds = [c.seed for c in speaker.calls]
    assert len(set(seeds)) == 8
    assert record.turns[0].generation and record.turns[0].generation.seed == derive_seed(7, 1, 0)
    assert labelling.generation and labelling.generation.seed == stage_seed(7, "labels1", 0)


def test_round_two_sees_others_latest_answers_and_positions_not_own() -> None:
    speaker = FakeSpeaker(
        {
            "A1": [
                R1.format(a="Alpha view."),
                labels(["Alpha", "Beta"], A1="A", B2="B"),
                R2.format(d="maintained", a="Alpha.", i="nobody", p="A"),
                SUMMARY,
            ],
            "B2": [
                R1.format(a="Beta view."),
                R2.format(d="maintained", a="Beta.", i="nobody", p="B"),
            ],
        }
    )
    run(speaker, make_record(["A1", "B2"]))
    a_round2 = speaker.calls[3]
    assert a_round2.panelist == "A1"
    last_user = a_round2.messages[-1].content
    assert "B2:\nReasoning: because Beta view.\nAnswer: Beta view.\n(position B)" in last_user
    assert "Alpha view." not in last_user  # its own answer is its assistant turn
    assert "A: Alpha\nB: Beta\nYour position last round was A." in last_user
    assert a_round2.messages[-2].role == "assistant"
    assert a_round2.messages[-2].content == "Reasoning: because Alpha view.\nAnswer: Alpha view."
    # the grammar lets it cite only the others, and name a labelled position or a new
    # one: its own (A) when it says it maintained, another or new when it changed
    assert '"B2"' in a_round2.grammar and '"A1"' not in a_round2.grammar
    assert (
        'decision-position ::= ("maintained\\nPosition: A" "\\nAnswer: " answer-other) | '
        '"changed\\nPosition: " (("B" "\\nAnswer: " answer-other) | ("new" "\\nAnswer: " answer))\n'
        in a_round2.grammar
    )
    assert "position ::=" not in a_round2.grammar.replace("decision-position ::=", "")
    assert a_round2.grammar.startswith('root ::= "Reasoning: " reasoning "\\n" "Influenced by: "')


def test_anonymous_labels_map_back_to_names() -> None:
    speaker = FakeSpeaker(
        {
            "A1": [
                R1.format(a="Alpha view."),
                labels(["Alpha", "Beta"], **{"Panelist A": "A", "Panelist B": "B"}),
                R2.format(d="changed", a="Beta.", i="Panelist B", p="B"),
                SUMMARY,
            ],
            "B2": [
                R1.format(a="Beta view."),
                R2.format(d="maintained", a="Beta.", i="nobody", p="B"),
            ],
        }
    )
    record, _ = run(speaker, make_record(["A1", "B2"], anonymous=True))
    labeller = speaker.calls[2]
    assert '"Panelist A: "' in labeller.grammar and '"Panelist B: "' in labeller.grammar
    for call in speaker.calls:  # no prompt and no grammar names a panelist
        text = "\n".join([call.grammar, *(m.content for m in call.messages)])
        assert "A1" not in text and "B2" not in text, text
    assert record.labelings[0].assigned == {"A1": "A", "B2": "B"}
    t = record.turn(2, "A1")
    assert t and t.parsed and t.parsed.influenced_by == ["B2"]
    assert record.summary and record.summary.groups[0].members == ["A1", "B2"]
    assert "- Beta (Panelist A, Panelist B)" in speaker.calls[-1].messages[-1].content


def test_nonsense_and_crash_become_failed_turns_never_agreement() -> None:
    speaker = FakeSpeaker(
        {
            "A1": [
                R1.format(a="Yes, it helps."),
                labels(["yes"], A1="A", C3="A"),
                R2.format(d="maintained", a="Yes, it helps.", i="nobody", p="A"),
                SUMMARY,
            ],
            "B2": [
                "Reasoning: x\nAnswer: ?!?",
                R2.format(d="maintained", a="!!", i="nobody", p="A"),
            ],
            "C3": [R1.format(a="Yes, it helps."), crash()],
        }
    )
    record, _ = run(speaker, make_record(["A1", "B2", "C3"]))
    b1 = record.turn(1, "B2")
    assert b1 and b1.status == "failed" and b1.error and "answer has no letter or digit" in b1.error
    b2 = record.turn(2, "B2")
    assert b2 and b2.status == "failed" and b2.error and "answer has no letter or digit" in b2.error
    assert b2.position is None
    c2 = record.turn(2, "C3")
    assert c2 and c2.status == "failed" and c2.error and "SIGSEGV" in c2.error
    assert c2.position is None
    # a failed turn is never labelled: the labeller places only valid answers
    labeller = speaker.calls[3]
    assert labeller.panelist == "A1" and '"A1: "' in labeller.grammar
    assert '"C3: "' in labeller.grammar and "B2" not in labeller.grammar
    assert "B2" not in labeller.messages[-1].content
    # the summary is told only of the panelists whose final turn is valid
    summary_prompt = speaker.calls[-1].messages[-1].content
    assert "- yes (A1)\n" in summary_prompt and "B2: (no valid answer)" in summary_prompt
    assert record.summary and [g.members for g in record.summary.groups] == [["A1"]]
    assert record.summary.consensus.line == "No consensus"
    assert record.summary.consensus.agreeing == 1 and record.summary.consensus.total == 3


def test_long_history_is_shortened_by_recorded_rules() -> None:
    long = "word " * 300
    speaker = FakeSpeaker(
        {
            "A1": [
                f"Reasoning: {long}\nAnswer: Yes, it helps.",
                labels(["Yes", "No"], A1="A", B2="B"),
                R2.format(d="maintained", a="Yes, it helps.", i="nobody", p="A"),
                SUMMARY,
            ],
            "B2": [
                f"Reasoning: {long}\nAnswer: No, it harms.",
                R2.format(d="maintained", a="No, it harms.", i="nobody", p="B"),
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
    assert record.labelings == [] and record.positions == []  # no valid answer to label
    assert record.summary and record.summary.consensus.line == "No consensus"


def test_resume_runs_only_missing_turns_and_labels() -> None:
    replies = {
        "A1": [
            R1.format(a="Yes, it helps."),
            labels(["Yes"], A1="A", B2="A"),
            R2.format(d="maintained", a="Yes, it helps.", i="nobody", p="A"),
            SUMMARY,
        ],
        "B2": [
            R1.format(a="Yes! It helps."),
            R2.format(d="maintained", a="Yes! It helps.", i="nobody", p="A"),
        ],
    }
    partial = make_record(["A1", "B2"])
    speaker = FakeSpeaker({k: list(v) for k, v in replies.items()})
    debate = Debate(partial, speaker, builtin(), lambda r: None, lambda e: None)
    debate.run_turn(partial.panelists[0], 1)
    debate.run_turn(partial.panelists[1], 1)
    record, _ = run(speaker, partial)
    # round 1's labels were missing too: they run before round 2
    assert [c.panelist for c in speaker.calls] == ["A1", "B2", "A1", "A1", "B2", "A1"]
    assert "Position A: " in speaker.calls[2].grammar
    assert len(record.turns) == 4 and [t.position for t in record.turns] == ["A"] * 4
    # a record whose round-1 labels are done does not label that round again
    again = make_record(["A1", "B2"])
    again.turns, again.positions = record.turns[:2], record.positions
    again.labelings = record.labelings
    speaker = FakeSpeaker({"A1": list(replies["A1"][2:]), "B2": list(replies["B2"][1:])})
    finished, _ = run(speaker, again)
    assert [c.panelist for c in speaker.calls] == ["A1", "B2", "A1"]
    assert finished.summary and finished.summary.consensus.line == "All 2 models agreed"


def with_headline(headline: str) -> str:
    return SUMMARY.replace("Yes, open source wins.", headline)


def one_round(*summaries: str) -> FakeSpeaker:
    """Both say the same in a one-round debate; A1 labels and then summarizes."""
    return FakeSpeaker(
        {
            "A1": [R1.format(a="Yes, open it."), labels(["Open it"], A1="A", B2="A"), *summaries],
            "B2": [R1.format(a="Yes, open it.")],
        }
    )


def test_an_unusable_summary_is_retried_with_recorded_seeds() -> None:
    # the demo's 135M summarizer has repeated the question, or its instructions, as a headline
    speaker = one_round(
        with_headline("Is open source good?"),  # make_record's question
        "Summary: Open",  # cut off
        SUMMARY,
    )
    record, _ = run(speaker, make_record(["A1", "B2"], rounds=1))
    assert record.summary is not None and record.summary.status == "ok"
    assert record.summary.headline == "Yes, open source wins."
    seeds = [derive_seed(7, 2 + attempt, 0) for attempt in range(3)]
    assert [c.seed for c in speaker.calls[-3:]] == seeds
    assert record.summary.generation and record.summary.generation.seed == seeds[2]
    assert record.summary.rejected == [
        f"seed {seeds[0]}: the headline asks a question: 'Is open source good?'",
        f"seed {seeds[1]}: the 'Summary:' line was cut off (max_tokens too small?)",
    ]
    # the work thrown away is kept and counted, not only its reasons
    thrown = record.summary.rejected_generations
    assert [g.seed for g in thrown] == seeds[:2]
    assert thrown[1].raw_output == "Summary: Open" and thrown[0].completion_tokens > 0


def test_a_summarizer_that_only_parrots_fails_the_summary_after_three_tries() -> None:
    echo = with_headline("the panel's answer to the question in one sentence")
    speaker = one_round(echo, echo, echo)
    record, _ = run(speaker, make_record(["A1", "B2"], rounds=1))
    assert record.summary is not None and record.summary.status == "failed"
    assert record.summary.error and "only repeats the prompt" in record.summary.error
    summary_calls = [c for c in speaker.calls if c.grammar.startswith('root ::= "Summary')]
    assert len(record.summary.rejected) == 3 and len(summary_calls) == 3
    # the last attempt is the summary's generation; the two before it were thrown away
    assert len(record.summary.rejected_generations) == 2


def test_a_summary_attempt_that_fails_after_a_refused_one_counts_each_generation_once() -> None:
    """The refused attempt is work thrown away, recorded once: not also as the failed
    summary's own generation (the failing attempt has none)."""
    cut = "Summary: Open"  # refused: cut off
    speaker = one_round(cut, TurnFailed("the engine process died with SIGSEGV"))
    record, _ = run(speaker, make_record(["A1", "B2"], rounds=1))
    summary = record.summary
    assert summary is not None and summary.status == "failed"
    assert summary.error and "SIGSEGV" in summary.error
    assert [g.raw_output for g in summary.rejected_generations] == [cut]
    assert summary.generation is None


def test_labels_that_fail_after_a_refused_attempt_count_each_generation_once() -> None:
    unusable = "Position A: Open it"  # refused: nobody assigned
    speaker = FakeSpeaker(
        {
            "A1": [R1.format(a="Yes, open it."), unusable, TurnFailed("engine died"), SUMMARY],
            "B2": [R1.format(a="Yes, open it.")],
        }
    )
    record, _ = run(speaker, make_record(["A1", "B2"], rounds=1))
    labelling = record.labelings[0]
    assert labelling.status == "failed" and labelling.error and "engine died" in labelling.error
    assert [g.raw_output for g in labelling.rejected_generations] == [unusable]
    assert labelling.generation is None


def test_a_headline_restating_the_question_is_retried_then_fails_but_consensus_stands() -> None:
    restated = with_headline("Open source is good")  # every word is the question's
    speaker = one_round(restated, restated, restated)
    record, _ = run(speaker, make_record(["A1", "B2"], rounds=1))
    summary = record.summary
    assert summary is not None and summary.status == "failed"
    assert summary.error == "unusable summary: the headline restates the question: " + repr(
        "Open source is good"
    )
    seeds = [derive_seed(7, 2 + attempt, 0) for attempt in range(3)]
    assert [r.split(":")[0] for r in summary.rejected] == [f"seed {s}" for s in seeds]
    assert all("restates the question" in r for r in summary.rejected)
    assert summary.headline == ""  # no headline shown from a refused summary
    # the positions and the consensus are counted in code: still right without a summary
    assert [(g.position, g.members) for g in summary.groups] == [("Open it", ["A1", "B2"])]
    assert summary.consensus.line == "All 2 models agreed"


def test_a_backend_that_cannot_answer_stops_the_run_and_resume_runs_that_turn_again() -> None:
    """BackendDown (a server down): the turn is kept as interrupted with the reason, nothing
    after it runs (later turns would read it), and resuming the record finishes it."""
    replies = {
        "A1": [
            R1.format(a="Yes, it helps."),
            labels(["Yes"], A1="A", B2="A"),
            R2.format(d="maintained", a="Yes, it helps.", i="nobody", p="A"),
            SUMMARY,
        ],
        "B2": [
            R1.format(a="Yes! It helps."),
            R2.format(d="maintained", a="Yes! It helps.", i="nobody", p="A"),
        ],
    }
    down = BackendDown("http://gpu:8080: connection refused")
    speaker = FakeSpeaker({"A1": list(replies["A1"]), "B2": [down, *replies["B2"]]})
    record = make_record(["A1", "B2"])
    with pytest.raises(BackendDown):
        run(speaker, record)
    assert [(t.panelist, t.status) for t in record.turns] == [("A1", "ok"), ("B2", "interrupted")]
    assert record.turns[1].error == "http://gpu:8080: connection refused"
    assert [c.panelist for c in speaker.calls] == ["A1", "B2"]
    assert record.labelings == []  # the round was not over: nothing labelled
    # what resume does: drop the interrupted turn, run the rest
    record.turns = [t for t in record.turns if t.status != "interrupted"]
    finished, _ = run(speaker, record)
    assert [(t.round, t.panelist, t.status) for t in finished.turns] == [
        (1, "A1", "ok"), (1, "B2", "ok"), (2, "A1", "ok"), (2, "B2", "ok")
    ]  # fmt: skip
    assert finished.summary is not None and finished.summary.status == "ok"


def test_a_labeller_whose_backend_cannot_answer_leaves_the_labels_interrupted() -> None:
    down = BackendDown("http://gpu:8080: HTTP 503")
    speaker = FakeSpeaker(
        {"A1": [R1.format(a="Yes, it helps."), down], "B2": [R1.format(a="No, it harms.")]}
    )
    record = make_record(["A1", "B2"])
    with pytest.raises(BackendDown):
        run(speaker, record)
    (labelling,) = record.labelings
    assert labelling.status == "interrupted" and labelling.error == "http://gpu:8080: HTTP 503"
    assert record.positions == [] and all(t.position is None for t in record.turns)
    assert len(record.turns) == 2  # round 2 would read positions that are not there yet
    # resume labels round 1 again, then goes on
    speaker.replies["A1"] += [
        labels(["Yes", "No"], A1="A", B2="B"),
        R2.format(d="maintained", a="Yes, it helps.", i="nobody", p="A"),
        SUMMARY,
    ]
    speaker.replies["B2"] += [R2.format(d="changed", a="Yes, it helps.", i="A1", p="A")]
    finished, _ = run(speaker, record)
    (labelling,) = finished.labelings
    assert labelling.status == "ok" and labelling.assigned == {"A1": "A", "B2": "B"}
    assert finished.summary and finished.summary.consensus.line == "All 2 models agreed"


def test_a_summarizer_whose_backend_cannot_answer_leaves_the_summary_interrupted() -> None:
    speaker = FakeSpeaker(
        {
            "A1": [
                R1.format(a="Yes, it helps."),
                labels(["Yes"], A1="A", B2="A"),
                BackendDown("http://gpu:8080: HTTP 500 boom"),
            ],
            "B2": [R1.format(a="Yes, it helps.")],
        }
    )
    record = make_record(["A1", "B2"], rounds=1)
    with pytest.raises(BackendDown):
        run(speaker, record)
    assert record.summary is not None and record.summary.status == "interrupted"
    assert record.summary.error == "http://gpu:8080: HTTP 500 boom"


# -- the limits of a turn, and a turn that max_tokens cut off --------------------------


def test_the_answer_is_one_short_sentence_and_the_reasoning_leaves_room_after_it() -> None:
    # about half the token budget, never over ANSWER_MAX_CHARS (200) nor under 40
    assert [answer_max_chars(n) for n in (10, 64, 100, 192, 4096)] == [40, 128, 200, 200, 200]
    assert ANSWER_MAX_CHARS == 200
    # what the answer and the short fields do not need, at ~3 characters a token
    assert reasoning_max_chars(512) == 3 * (512 - 200 // 3 - 24)
    assert reasoning_max_chars(64) == 120 and reasoning_max_chars(8192) == REASONING_MAX_CHARS
    # a number or choice answer needs a few tokens: the reasoning gets the rest
    assert reasoning_max_chars(256, "number") == 3 * (256 - 8 - 24) == 672
    assert reasoning_max_chars(256, "choice") > reasoning_max_chars(256) == 3 * (256 - 66 - 24)
    speaker = one_round(SUMMARY)
    record, _ = run(speaker, make_record(["A1", "B2"], rounds=1))  # max_tokens 64
    assert "reasoning ::= [^\\x00-\\x20] [^\\x00-\\x1f]{0,119}\n" in speaker.calls[0].grammar
    # one statement: no "?", and it ends at its first ". " (a "." inside a word is text)
    # a position with its ground: a leading yes or no goes on with at least two words
    grammar = speaker.calls[0].grammar
    assert "answer ::= answer-yes | answer-no | answer-other\n" in grammar
    assert 'answer-yes ::= ("Yes" | "yes") lead " " ground\n' in grammar
    # 88 units (answer_max - 40); it ends with "." before the bound, and its last 17
    # units (a fifth) begin no clause: no ",", ";", ":" or "!"
    assert 'tail ::= tail-unit{0,70} "." | tail-unit{71} close\n' in grammar
    assert 'close ::= close-char{0,16} "." | close-char{17}\n' in grammar
    assert "close-char ::= [^\\x00-\\x1f.?,;:!]\n" in grammar
    assert [t.answer_max_chars for t in record.turns] == [128, 128]


def test_a_turn_cut_off_in_its_reasoning_is_continued_after_it() -> None:
    cut = Reply("Reasoning: Open code lets anyone check it, and the", finish_reason="length")
    rest = "Influenced by: B2\nDecision: maintained\nPosition: A\nAnswer: Yes, open it."
    speaker = FakeSpeaker(
        {
            "A1": [
                R1.format(a="Yes, open it."),
                labels(["Open it"], A1="A", B2="A"),
                cut,
                rest,
                SUMMARY,
            ],
            "B2": [
                R1.format(a="Yes, open it."),
                R2.format(d="maintained", a="Yes, it helps.", i="nobody", p="A"),
            ],
        }
    )
    record, _ = run(speaker, make_record(["A1", "B2"]))
    first, then = speaker.calls[3], speaker.calls[4]
    assert first.panelist == then.panelist == "A1" and first.prefill == ""
    kept = "Reasoning: Open code lets anyone check it, and the…\n"
    assert then.prefill == kept
    # the continuation's grammar starts at the field after the kept reasoning
    assert then.grammar.startswith('root ::= "Influenced by: " influenced-by "\\n" "Decision: "')
    assert (
        "reasoning ::=" not in then.grammar
        and '"changed\\nPosition: " (("new" "\\nAnswer: " answer))' in then.grammar
    )
    assert then.messages == first.messages and then.seed == first.seed
    assert then.sampling.max_tokens == CONTINUATION_MAX_TOKENS + answer_max_chars(64) // 3
    turn = record.turn(2, "A1")
    assert turn and turn.status == "ok"
    assert turn.generation and turn.generation.finish_reason == "length"
    assert turn.continuation and turn.continuation.prefill == kept
    assert turn.continuation.raw_output == rest and turn.text == kept + rest
    assert turn.parsed and turn.parsed.reasoning == "Open code lets anyone check it, and the…"
    assert turn.parsed.answer == "Yes, open it." and turn.parsed.influenced_by == ["B2"]
    assert turn.position == "A" and turn.position_changed is False
    # the continuation is part of the transcript: another one gives another hash
    other = record.model_copy(deep=True)
    other.turns[2] = turn.model_copy(
        update={"continuation": turn.continuation.model_copy(update={"raw_output": rest + "!"})}
    )
    assert transcript_sha256(other) != transcript_sha256(record)


def test_a_cut_off_round_one_turn_is_continued_and_read_back_whole() -> None:
    cut = Reply("Reasoning: Two plus two is four, as", finish_reason="length")
    speaker = FakeSpeaker(
        {
            "A1": [cut, "Answer: Yes, it helps.", labels(["Yes"], A1="A", B2="A"),
                   R2.format(d="maintained", a="Yes, it helps.", i="nobody", p="A"), SUMMARY],
            "B2": [R1.format(a="Yes, it helps."),
                   R2.format(d="maintained", a="Yes, it helps.", i="nobody", p="A")],
        }
    )  # fmt: skip
    record, _ = run(speaker, make_record(["A1", "B2"]))
    assert speaker.calls[1].grammar.startswith('root ::= "Answer: " answer')
    t = record.turn(1, "A1")
    assert t and t.status == "ok" and t.parsed and t.parsed.answer == "Yes, it helps."
    # later rounds show the panelist its own turn as written: prefill and continuation
    a_round2 = next(c for c in speaker.calls if c.panelist == "A1" and "Decision" in c.grammar)
    assert (
        a_round2.messages[-2].content
        == "Reasoning: Two plus two is four, as…\nAnswer: Yes, it helps."
    )
    b_round2 = next(c for c in speaker.calls if c.panelist == "B2" and "Decision" in c.grammar)
    assert (
        "A1:\nReasoning: Two plus two is four, as…\nAnswer: Yes, it helps."
        in b_round2.messages[-1].content
    )


def test_a_cut_off_turn_with_nothing_to_keep_fails_without_a_continuation() -> None:
    speaker = FakeSpeaker(
        {
            "A1": [
                Reply("Reaso", finish_reason="length"),
                labels(["No"], B2="A"),
                with_headline("No, it harms."),
            ],
            "B2": [R1.format(a="No, it harms.")],
        }
    )
    record, _ = run(speaker, make_record(["A1", "B2"], rounds=1))
    t = record.turn(1, "A1")
    assert t and t.status == "failed" and t.continuation is None
    assert t.error and "missing the 'Reasoning:' line" in t.error
    assert [c.panelist for c in speaker.calls] == ["A1", "B2", "A1", "A1"]  # no continuation


def test_ctrl_c_while_labelling_leaves_no_false_turn_and_resume_labels_again(
    tmp_path: Path,
) -> None:
    """A stop during the labels (Ctrl-C, SIGTERM) interrupts no panelist's turn: each
    one of the round is finished and stays as it is; resume labels the round again."""
    replies: dict[str, list[str | Reply | BaseException]] = {
        "A1": [R1.format(a="Yes, it helps."), KeyboardInterrupt()],
        "B2": [R1.format(a="No, it harms.")],
    }
    record = make_record(["A1", "B2"], rounds=1)
    with pytest.raises(RunInterrupted):
        execute(record, tmp_path, FakeSpeaker(replies), builtin(), lambda e: None)  # type: ignore[arg-type]
    saved = read_record(tmp_path)
    assert saved.status == "interrupted"
    assert [(t.round, t.panelist, t.status) for t in saved.turns] == [
        (1, "A1", "ok"),
        (1, "B2", "ok"),
    ]
    assert saved.labelings == [] and saved.positions == []
    speaker = FakeSpeaker({"A1": [labels(["Yes", "No"], A1="A", B2="B"), SUMMARY], "B2": []})
    saved.status = "running"
    finished = execute(saved, tmp_path, speaker, builtin(), lambda e: None)  # type: ignore[arg-type]
    assert [c.panelist for c in speaker.calls] == ["A1", "A1"]  # the labels, the summary
    assert finished.status == "complete" and [t.position for t in finished.turns] == ["A", "B"]
