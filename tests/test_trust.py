"""Issue #26: what a debate tells its reader is what the record shows.

An answer agrees with the position it names, no answer is a bare yes or no, a
reasoning that a length cap stopped is marked wherever it is shown, and the summary
states no change of mind, no held position, no dissent and no minority voice that
the record contradicts; the counterpoint opens with the minority's own names. An
answer that the grammar's bound stopped is marked as a cut reasoning is. Fake
speakers, no llama.cpp.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from localtable.backends.base import TurnRequest, TurnResult
from localtable.debate.answers import answer_cut, answer_tail_max
from localtable.debate.claims import Facts, claims, contradictions, dissents, misnamed, said
from localtable.debate.parsing import ParseFailure, parse_turn
from localtable.debate.protocol import Debate, derive_seed, reasoning_max_chars
from localtable.record import RunRecord, TurnRecord, mark_cut
from localtable.report.render import render
from localtable.templates import builtin
from tests.fakes import FakeSpeaker, make_record
from tests.scripted import scripted_reply

R1 = "Reasoning: because {a}\nAnswer: {a}"
R2 = "Reasoning: I thought again.\nInfluenced by: {i}\nDecision: {d}\nPosition: {p}\nAnswer: {a}"
LABELS = "Position A: Yes, open it\nPosition B: No, keep it closed\nA1: A\nB2: B"
YES = "Yes, open code can be checked."
GOOD = (
    "Summary: A1 argued that open code can be checked; B2 argued it helps attackers. "
    "The panel ended split.\nCounterpoint: B2 warned that attackers read code too.\n"
    "Answer: Yes, if the code is released with care."
)


def run(speaker: FakeSpeaker, record: RunRecord) -> RunRecord:
    return Debate(record, speaker, builtin(), lambda r: None, lambda e: None).run()


@dataclass
class ScriptedSpeaker(FakeSpeaker):
    """Turns read off the grammar they are given (tests/scripted.py): each panelist
    gives its answer of each round and, from round 2, names the letter it is told."""

    turns: dict[str, list[tuple[str, str | None]]] = field(default_factory=dict)

    def generate(self, request: TurnRequest) -> TurnResult:
        if request.panelist in self.turns and request.grammar.startswith('root ::= "Reasoning'):
            answer, letter = self.turns[request.panelist].pop(0)
            reply = scripted_reply(request.grammar, answer, letter=letter)
            self.replies.setdefault(request.panelist, []).insert(0, reply)
        return super().generate(request)


def two_rounds(b2_round2: str, letter: str | None = "A") -> tuple[RunRecord, ScriptedSpeaker]:
    """A1 says yes (position A, "Yes, open it"), B2 no (B); in round 2 B2 names `letter`."""
    speaker = ScriptedSpeaker(
        {"A1": [LABELS, GOOD]},
        turns={
            "A1": [
                ("Yes, open code can be checked.", None),
                ("Yes, open code can be checked.", "A"),
            ],
            "B2": [("No, it helps attackers.", None), (b2_round2, letter)],
        },
    )
    return run(speaker, make_record(["A1", "B2"])), speaker


# -- 3. an answer agrees with the position it names ----------------------------------


def test_a_round_two_turn_that_names_a_yes_position_cannot_answer_no() -> None:
    record, speaker = two_rounds("No, because it helps attackers.", letter="A")
    b2 = record.turn(2, "B2")
    # the scripted turn wrote the contradiction the grammar forbids: the code refuses it
    assert b2 and b2.status == "failed" and b2.position is None
    assert "the answer opens with 'no' but position A is 'yes'" in (b2.error or "")
    # ... and the grammar it was given lets position A go on only into a "Yes" answer
    grammar = next(
        c.grammar for c in speaker.calls if c.panelist == "B2" and "Decision" in c.grammar
    )
    assert '("A" "\\nAnswer: " answer-yes)' in grammar
    assert 'decision-position ::= ("maintained\\nPosition: B" "\\nAnswer: " answer-no)' in grammar


def test_a_turn_that_names_a_position_of_its_own_stance_is_kept() -> None:
    record, _ = two_rounds("Yes, because the code can be checked.", letter="A")
    b2 = record.turn(2, "B2")
    assert b2 and b2.status == "ok" and b2.position == "A" and b2.position_changed is True


def test_parse_turn_checks_the_answer_against_its_letters_stance() -> None:
    grammar = builtin().render(
        "turn.gbnf.j2", fields=["reasoning", "influenced_by", "decision", "position", "answer"],
        peers=["A1"], letters=["A", "B", "C"], stances={"A": "yes", "B": "no", "C": ""},
        allow_new=True, own_position="B", reasoning_max=200, answer_max=128, multiline=False,
        kind="open", options=[],
    )  # fmt: skip
    stances = {"A": "yes", "B": "no", "C": None}

    def parsed(answer: str, letter: str) -> str:
        text = scripted_reply(grammar, answer, letter=letter)
        turn = parse_turn(text, later_round=True, peers={"A1": "A1"}, letters=list(stances),
                          stances=stances)  # fmt: skip
        return turn.answer

    assert parsed("Yes, because it helps.", "A") == "Yes, because it helps."
    assert parsed("no, unless it is safe.", "B") == "no, unless it is safe."
    assert parsed("It depends on the licence.", "C") == "It depends on the licence."
    assert parsed("Maybe, if it is safe.", "new") == "Maybe, if it is safe."
    wrong = [("No, because it harms.", "A"), ("Yes, because it helps.", "B"),
             ("Yes, because it helps.", "C"), ("It depends on it.", "A")]  # fmt: skip
    for answer, letter in wrong:
        with pytest.raises(ParseFailure, match=f"position {letter} is"):
            parsed(answer, letter)


# -- 4. no bare answer ---------------------------------------------------------------


@pytest.mark.parametrize("answer", ["Yes", "Yes.", "No!", "yes, definitely.", "NO - never"])
def test_a_bare_yes_or_no_is_not_an_answer(answer: str) -> None:
    with pytest.raises(ParseFailure, match="states no ground"):
        parse_turn(f"Reasoning: r.\nAnswer: {answer}", later_round=False, peers={})


@pytest.mark.parametrize(
    "answer", ["Yes, because it helps.", "No, unless it is safe.", "It depends on cost.", "4"]
)
def test_a_conclusion_with_its_ground_is_an_answer(answer: str) -> None:
    assert parse_turn(f"Reasoning: r.\nAnswer: {answer}", later_round=False, peers={}).answer


def test_the_turn_grammar_asks_a_leading_yes_or_no_for_its_ground() -> None:
    grammar = builtin().render(
        "turn.gbnf.j2", fields=["reasoning", "answer"], peers=[], letters=[],
        allow_new=False, own_position="", reasoning_max=200, answer_max=200, multiline=False,
        kind="open", options=[],
    )  # fmt: skip
    assert "answer ::= answer-yes | answer-no | answer-other\n" in grammar
    assert 'answer-yes ::= ("Yes" | "yes") lead " " ground\n' in grammar
    assert 'ground ::= word-start word-rest " " word-start tail\n' in grammar


# -- 2. nothing cut silently ------------------------------------------------------------


def test_a_reasoning_stopped_by_the_grammars_bound_is_marked_everywhere() -> None:
    bound = reasoning_max_chars(64)  # 120 characters, the fake panel's max_tokens
    long = ("Open code can be read by all. " * 10)[: bound - 12] + "and if the c"
    assert len(long) == bound
    speaker = FakeSpeaker(
        {
            "A1": [R1.format(a="Yes, open it now.").replace("because Yes, open it now.", long),
                   LABELS.replace("Position B: No, keep it closed\n", "").replace("B2: B", "B2: A"),
                   R2.format(d="maintained", a="Yes, open it now.", i="nobody", p="A"), GOOD],
            "B2": [R1.format(a="Yes, but slowly please."),
                   R2.format(d="maintained", a="Yes, but slowly please.", i="nobody", p="A")],
        }
    )  # fmt: skip
    record = run(speaker, make_record(["A1", "B2"]))
    a1, b2 = record.turn(1, "A1"), record.turn(1, "B2")
    assert a1 and a1.reasoning_cut is True and b2 and b2.reasoning_cut is False
    # the record keeps the reasoning as generated; it is shown ended at a full sentence
    assert a1.parsed and a1.parsed.reasoning == long
    shown = a1.reasoning_shown
    assert shown.endswith("read by all. …") and "and if the c" not in shown
    # the peers' view in round 2
    b2_round2 = next(c for c in speaker.calls if c.panelist == "B2" and "Decision" in c.grammar)
    assert f"A1:\nReasoning: {shown}\nAnswer: Yes, open it now." in b2_round2.messages[-1].content
    # every layout
    for fmt in ("text", "md", "html"):
        page = render(record, fmt, builtin())
        assert "read by all. …" in page and "and if the c" not in page, fmt


def test_mark_cut_ends_at_a_sentence_or_marks_where_it_stopped() -> None:
    assert (
        mark_cut("One. Two three four five six seven eig")
        == "One. Two three four five six seven eig…"
    )
    assert mark_cut("A long first sentence that goes on. Then a cut") == (
        "A long first sentence that goes on. …"
    )
    assert mark_cut("no sentence end at all, and,") == "no sentence end at all, and…"
    assert mark_cut("Two plus two is four, as…") == "Two plus two is four, as…"


def test_older_records_without_the_cut_flag_show_as_before() -> None:
    turn = TurnRecord(round=1, panelist="A1", status="ok")
    assert turn.reasoning_cut is None and turn.reasoning_shown == ""


# -- 1. the summary states only what the record shows ---------------------------------


def summary(text: str) -> str:
    return (
        f"Summary: {text}\nCounterpoint: B2 warned that attackers read code.\nAnswer: It depends."
    )


def test_a_summary_claiming_a_change_that_did_not_happen_is_refused_and_a_later_one_kept() -> None:
    false = summary("B2 changed their mind after hearing A1, so the panel moved to Yes.")
    speaker = ScriptedSpeaker(
        {"A1": [LABELS, false, GOOD]},
        turns={
            "A1": [
                ("Yes, open code can be checked.", None),
                ("Yes, open code can be checked.", "A"),
            ],
            "B2": [("No, it helps attackers.", None), ("No, it helps attackers.", "B")],
        },
    )
    record = run(speaker, make_record(["A1", "B2"]))
    assert [(t.panelist, t.position_changed) for t in record.turns if t.round == 2] == [
        ("A1", False),
        ("B2", False),
    ]
    s = record.summary
    assert s and s.status == "ok" and s.summary.startswith("A1 argued that open code")
    first = derive_seed(record.seed, record.rounds + 1, 0)
    assert s.rejected == [f"seed {first}: it says B2 changed position, but B2 never did"]
    assert len(s.rejected_generations) == 1 and s.rejected_generations[0].raw_output == false
    assert s.generation and s.generation.seed == derive_seed(record.seed, record.rounds + 2, 0)
    # the summary prompt said nobody changed, and asked for no change of mind
    prompt = next(c for c in speaker.calls if c.grammar.startswith('root ::= "Summary'))
    asked = prompt.messages[-1].content
    assert "Nobody changed position during the debate." in asked
    assert "changed their mind" not in asked and "who changed" not in asked


def test_the_summary_prompt_asks_about_changes_of_mind_only_when_there_were_some() -> None:
    speaker = ScriptedSpeaker(
        {"A1": [LABELS, GOOD.replace("The panel ended split.", "B2 changed to Yes.")]},
        turns={
            "A1": [
                ("Yes, open code can be checked.", None),
                ("Yes, open code can be checked.", "A"),
            ],
            "B2": [("No, it helps attackers.", None), ("Yes, it can be checked.", "A")],
        },
    )
    record = run(speaker, make_record(["A1", "B2"]))
    assert record.summary and record.summary.status == "ok" and not record.summary.rejected
    asked = next(c for c in speaker.calls if c.grammar.startswith('root ::= "Summary'))
    content = asked.messages[-1].content
    assert '- B2: from "No, keep it closed" to "Yes, open it"' in content
    assert "who changed position and why (only those listed above)" in content


def test_a_summary_that_never_agrees_with_the_record_says_it_could_not_be_written() -> None:
    false = summary("Both panelists changed their positions during the debate.")
    speaker = ScriptedSpeaker(
        {"A1": [LABELS, false, false, false]},
        turns={
            "A1": [
                ("Yes, open code can be checked.", None),
                ("Yes, open code can be checked.", "A"),
            ],
            "B2": [("No, it helps attackers.", None), ("No, it helps attackers.", "B")],
        },
    )
    record = run(speaker, make_record(["A1", "B2"]))
    s = record.summary
    assert s and s.status == "failed" and len(s.rejected) == 3
    assert (s.error or "").startswith("it could not be written: 3 of 3 attempts contradicted")
    assert s.consensus.line == "No consensus"  # counted in code, kept
    for fmt in ("text", "md", "html"):
        page = render(record, fmt, builtin())
        assert "could not be written" in page and "Both panelists changed" not in page, fmt


def test_the_failed_summary_counts_only_the_attempts_that_contradicted_the_record() -> None:
    false = summary("Both panelists changed their positions during the debate.")
    speaker = ScriptedSpeaker(
        {"A1": [LABELS, "Summary: cut off", false, false]},
        turns={
            "A1": [(YES, None), (YES, "A")],
            "B2": [("No, it helps attackers.", None), ("No, it helps attackers.", "B")],
        },
    )
    s = run(speaker, make_record(["A1", "B2"])).summary
    assert s and s.status == "failed"
    assert (s.error or "").startswith("it could not be written: 2 of 3 attempts contradicted")


def test_a_counterpoint_from_the_majority_is_refused_when_there_is_a_minority() -> None:
    labels = "Position A: Yes, open it\nPosition B: No, keep it closed\nA1: A\nB2: A\nC3: B"
    majority_voice = GOOD.replace("B2 warned that attackers", "A1 warned that attackers")
    speaker = FakeSpeaker(
        {
            "A1": [R1.format(a="Yes, it can be checked."), labels, majority_voice,
                   GOOD.replace("B2 warned", "C3 warned")],
            "B2": [R1.format(a="Yes, it can be checked.")],
            "C3": [R1.format(a="No, it helps attackers.")],
        }
    )  # fmt: skip
    record = run(speaker, make_record(["A1", "B2", "C3"], rounds=1))
    s = record.summary
    assert s and s.status == "ok" and s.counterpoint.startswith("C3 warned")
    assert "the counterpoint names A1, who holds the majority's position" in s.rejected[0]
    asked = next(c for c in speaker.calls if c.grammar.startswith('root ::= "Summary'))
    assert "the strongest argument of C3, whose position differs" in asked.messages[-1].content


LABELS_3 = ["Qwen 1.5B", "Qwen 0.5B", "Qwen 1.5B Skeptic"]


@pytest.mark.parametrize(
    "text,read",
    [
        ("Qwen 1.5B Skeptic changed their mind because the code is not needed.",
         [("Qwen 1.5B Skeptic", "changed")]),
        ("Qwen 0.5B, persuaded by Qwen 1.5B Skeptic, switched to No.", [("Qwen 0.5B", "changed")]),
        ("Qwen 1.5B's argument changed Qwen 0.5B's mind.", [("Qwen 0.5B", "changed")]),
        ("Qwen 1.5B and Qwen 0.5B kept their answers, but Qwen 1.5B Skeptic shifted.",
         [("Qwen 1.5B", "held"), ("Qwen 0.5B", "held"), ("Qwen 1.5B Skeptic", "changed")]),
        ("Qwen 0.5B did not change its view.", [("Qwen 0.5B", "held")]),
        ("Nobody changed position during the debate.", [("*nobody*", "changed")]),
        ("All three panelists maintained their positions.", [("*everyone*", "held")]),
        ("Both panelists changed their positions.", [("*everyone*", "changed")]),
        ("Qwen 1.5B maintained that open code helps safety.", []),  # an assertion, not a stance
        ("Qwen 1.5B argued for openness; Qwen 0.5B agreed.", []),
        # a change that is not of a position
        ("Qwen 0.5B argued that the policy would change how people travel.", []),
        ("Qwen 1.5B held that the change would help against climate change.", []),
        ("Qwen 0.5B changed.", [("Qwen 0.5B", "changed")]),
        ("Qwen 1.5B Skeptic, after hearing Qwen 0.5B, changed its answer to Yes.",
         [("Qwen 1.5B Skeptic", "changed")]),
        ("Qwen 0.5B proposed the change to the law.", []),
        ("The panel shifted towards Yes.", []),  # the panel as a whole, not each member
    ],
)  # fmt: skip
def test_the_claims_a_summary_makes_about_panelists(text: str, read: list[tuple[str, str]]) -> None:
    assert claims(text, LABELS_3) == read


def test_claims_are_checked_against_the_counted_changes() -> None:
    facts = Facts(labels=LABELS_3, changed=["Qwen 0.5B"], majority=[], minority=[],
                  all_agreed=False)  # fmt: skip
    assert contradictions("Qwen 0.5B changed its mind.", "", facts) == []
    assert contradictions("Nobody changed position.", "", facts) == [
        "it says nobody changed position, but Qwen 0.5B did"
    ]
    assert contradictions("Qwen 0.5B kept its position.", "", facts) == [
        "it says Qwen 0.5B kept its position, but Qwen 0.5B changed it"
    ]
    agreed = facts.model_copy(update={"changed": [], "all_agreed": True})
    assert contradictions("", "Qwen 1.5B Skeptic dissented on cost.", agreed) == [
        "the counterpoint has Qwen 1.5B Skeptic dissent, but all 3 agreed"
    ]
    assert contradictions("", "Qwen 1.5B Skeptic warned about cost.", agreed) == []


# -- the counterpoint's source and held positions (the rest of issue #26) -------------

QWEN = ["Qwen 1.5B", "Qwen 0.5B", "Qwen 1.5B Skeptic"]  # a name that is a prefix of another
OPEN = "Yes, open code can be checked."
SHUT = "No, it helps attackers."


def qwen_round(answers: list[str], labels: str, *summaries: str) -> tuple[RunRecord, FakeSpeaker]:
    """One round of the three Qwen panelists; the summarizer (Qwen 1.5B) labels the
    answers, then gives `summaries` in turn."""
    speaker = FakeSpeaker(
        {
            QWEN[0]: [R1.format(a=answers[0]), labels, *summaries],
            QWEN[1]: [R1.format(a=answers[1])],
            QWEN[2]: [R1.format(a=answers[2])],
        }
    )
    return run(speaker, make_record(QWEN, rounds=1)), speaker


def summary_call(speaker: FakeSpeaker) -> str:
    return next(c.grammar for c in speaker.calls if c.grammar.startswith('root ::= "Summary'))


AGREED = f"Position A: Yes, open it\n{QWEN[0]}: A\n{QWEN[1]}: A\n{QWEN[2]}: A"


def kept_after_refusal(answers: list[str], labels: str, *summaries: str) -> tuple[str, str]:
    """qwen_round's summary, which must be ok: (its raw output, the first refusal
    without its seed's "seed N: ")."""
    record, _ = qwen_round(answers, labels, *summaries)
    s = record.summary
    assert s and s.status == "ok" and s.generation and s.rejected
    seed = derive_seed(record.seed, record.rounds + 1, 0)
    assert s.rejected[0].startswith(f"seed {seed}: ")
    return s.generation.raw_output, s.rejected[0].removeprefix(f"seed {seed}: ")


def test_a_summary_claiming_a_false_held_position_is_refused_and_a_later_one_kept() -> None:
    # the demo of 16ec3f6 (seed 1), over "All 3 models agreed"
    labels = f"Position A: Yes, open it\n{QWEN[0]}: A\n{QWEN[1]}: A\n{QWEN[2]}: A"
    false = (
        "Summary: Qwen 1.5B and Qwen 0.5B endorse open-source training code for AI models, "
        "while Qwen 1.5B Skeptic argues against it.\n"
        "Counterpoint: Qwen 1.5B Skeptic warns that attackers read code too.\nAnswer: Yes."
    )
    true = false.replace("while Qwen 1.5B Skeptic argues against it", "and so does Qwen 1.5B "
                         "Skeptic")  # fmt: skip
    record, _ = qwen_round([OPEN, OPEN, OPEN], labels, false, true)
    s = record.summary
    assert s and s.status == "ok" and s.summary.endswith("and so does Qwen 1.5B Skeptic.")
    seed = derive_seed(record.seed, record.rounds + 1, 0)
    assert s.rejected == [
        f"seed {seed}: it says Qwen 1.5B Skeptic holds another position, but all 3 agreed"
    ]
    assert len(s.rejected_generations) == 1 and s.rejected_generations[0].raw_output == false


@pytest.mark.parametrize(
    "text,read",
    [
        ("Qwen 1.5B and Qwen 0.5B endorse it, while Qwen 1.5B Skeptic argues against it.",
         [("Qwen 1.5B Skeptic", ["Qwen 1.5B", "Qwen 0.5B"])]),
        ("While Qwen 1.5B and Qwen 0.5B endorse it, Qwen 1.5B Skeptic opposes it.",
         [("Qwen 1.5B Skeptic", ["Qwen 1.5B", "Qwen 0.5B"])]),
        ("Unlike Qwen 1.5B Skeptic, Qwen 1.5B objects to it.",
         [("Qwen 1.5B", ["Qwen 1.5B Skeptic"])]),
        ("Qwen 1.5B Skeptic disagrees with Qwen 1.5B.", [("Qwen 1.5B Skeptic", ["Qwen 1.5B"])]),
        ("Qwen 1.5B argued for it. Qwen 1.5B Skeptic disagreed.",
         [("Qwen 1.5B Skeptic", ["Qwen 1.5B"])]),
        ("Qwen 0.5B holds a different view from the others.", [("Qwen 0.5B", [])]),
        ("Qwen 1.5B Skeptic was the lone dissenter.", [("Qwen 1.5B Skeptic", [])]),
        ("Qwen 0.5B dissents on cost.", [("Qwen 0.5B", [])]),
        # opposing "this argument": against the panelists the clause before names (the
        # summary of a demo at 0270f06, where both held the same position)
        (
            "Qwen 1.5B argues that banning cars could add to congestion, air pollution, and "
            "degradation. Qwen 0.5B is skeptical of this argument, arguing that it does not "
            "outweigh the benefits.",
            [("Qwen 0.5B", ["Qwen 1.5B"])],
        ),
        ("Qwen 1.5B argues for it. Qwen 1.5B Skeptic counters this view.",
         [("Qwen 1.5B Skeptic", ["Qwen 1.5B"])]),
        # not a claim about the panel, or not one it can read
        ("Qwen 1.5B argues for it. Qwen 0.5B is skeptical of the cost.", []),
        ("Qwen 1.5B Skeptic is skeptical of the release.", []),
        ("Qwen 1.5B Skeptic opposes the release.", []),  # maybe the panel's own position
        ("Qwen 1.5B argues against it on cost, while Qwen 0.5B argues against it on risk.", []),
        ("Qwen 1.5B Skeptic disagrees with the release.", []),
        ("Qwen 1.5B Skeptic disagrees that the code is safe.", []),
        ("No panelist disagreed.", []),
        ("Qwen 0.5B did not disagree.", []),
        ("There was some disagreement about cost.", []),
        ("The strongest counter to this is cost.", []),
    ],
)  # fmt: skip
def test_the_panelists_a_summary_sets_apart(text: str, read: list[tuple[str, list[str]]]) -> None:
    assert dissents(text, QWEN) == read


def test_a_name_that_runs_on_into_another_panelists_is_refused_and_a_later_one_kept() -> None:
    # the default panel at this branch (seed 1): all agreed, and the counterpoint's
    # reservation came from "Qwen 0.5B Skeptic", who is not on the panel
    misnamed_summary = (
        "Summary: The three panelists agree that open code can be checked.\n"
        "Counterpoint: Qwen 0.5B Skeptic argued that the code could be too complex to "
        "maintain.\nAnswer: Yes, with clear documentation."
    )
    named = misnamed_summary.replace("Qwen 0.5B Skeptic", "Qwen 1.5B Skeptic")
    kept, why = kept_after_refusal([OPEN, OPEN, OPEN], AGREED, misnamed_summary, named)
    assert kept == named and why == "it names Qwen 0.5B Skeptic, who is not on the panel"
    assert misnamed("Qwen 1.5B Skeptic and Qwen 1.5B, not Qwen 0.5B, argued.", QWEN) == []
    # a persona's word only: not a size ("Qwen 1.5B 0.5B") nor a letter ("Panelist A a")
    assert misnamed("Qwen 1.5B 0.5B", QWEN) == []
    assert misnamed("Panelist A a bit", ["Panelist A", "Panelist B"]) == []


def test_held_positions_are_checked_against_the_final_groups() -> None:
    demo = "Qwen 1.5B and Qwen 0.5B endorse it, while Qwen 1.5B Skeptic argues against it."
    skeptic_apart = Facts(labels=QWEN, changed=[], majority=QWEN[:2], minority=[QWEN[2]],
                          all_agreed=False, groups=[QWEN[:2], [QWEN[2]]])  # fmt: skip
    # true statements of dissent are kept
    assert contradictions(demo, "", skeptic_apart) == []
    assert contradictions("Qwen 1.5B Skeptic disagrees.", "", skeptic_apart) == []
    assert contradictions("", "Qwen 1.5B Skeptic counters that it costs.", skeptic_apart) == []
    # with the prefix name in the minority instead, the same sentence is false
    prefix_apart = Facts(labels=QWEN, changed=[], majority=QWEN[1:], minority=[QWEN[0]],
                         all_agreed=False, groups=[QWEN[1:], [QWEN[0]]])  # fmt: skip
    assert contradictions(demo, "", prefix_apart) == [
        "it says Qwen 1.5B Skeptic holds another position than Qwen 0.5B, but they hold the "
        "same one"
    ]
    assert contradictions("Qwen 1.5B Skeptic disagrees.", "", prefix_apart) == [
        "it says Qwen 1.5B Skeptic holds another position, but Qwen 1.5B Skeptic holds the "
        "majority's"
    ]
    assert contradictions("Qwen 1.5B disagrees.", "", prefix_apart) == []
    agreed = prefix_apart.model_copy(update={"majority": [], "minority": [], "all_agreed": True,
                                             "groups": [QWEN]})  # fmt: skip
    assert contradictions(demo, "", agreed) == [
        "it says Qwen 1.5B Skeptic holds another position, but all 3 agreed"
    ]
    # in a counterpoint when all agreed, opposing alone is a dissent; a reservation is not
    assert contradictions("", "Qwen 0.5B opposes the release.", agreed) == [
        "the counterpoint has Qwen 0.5B dissent, but all 3 agreed"
    ]
    assert contradictions("", "Qwen 0.5B warns that the release costs.", agreed) == []
    assert contradictions("Qwen 0.5B opposes the release.", "", agreed) == []


def test_the_counterpoint_opens_with_the_minoritys_exact_name_and_a_verb() -> None:
    labels = f"Position A: Yes, open it\nPosition B: No, keep it closed\n{QWEN[0]}: B\n" \
             f"{QWEN[1]}: A\n{QWEN[2]}: A"  # fmt: skip
    summary = (
        "Summary: Two held that open code can be checked; Qwen 1.5B held it helps attackers.\n"
        "Counterpoint: Qwen 1.5B argues that attackers read open code too.\nAnswer: Yes, mostly."
    )
    record, speaker = qwen_round([SHUT, OPEN, OPEN], labels, summary)
    grammar = summary_call(speaker)
    # the minority's exact name, then one of a few verbs: "Qwen 1.5B" cannot run on
    # into "Qwen 1.5B Skeptic", nor can the summarizer name anyone else as the source
    assert '"\\nCounterpoint: " counterpoint "\\nAnswer: "' in grammar
    assert (
        'counterpoint ::= "Qwen 1.5B " (voice1 | voice2 | voice3 | voice4 | voice5 | voice6)'
        in grammar
    )
    verbs = re.findall(r'^voice\d ::= "([a-z ]+) " ', grammar, re.MULTILINE)
    assert verbs == ["argues", "counters", "warns", "contends", "maintains", "points out"]
    # the whole line keeps the bound of any other line (SUMMARY_LINE_MAX_CHARS, 200),
    # with the longest verb: "Qwen 1.5B points out " and 178 characters after it
    assert 'voice1 ::= "argues " [^\\x00-\\x20<] voice-tail\n' in grammar
    assert "voice-tail ::= voice-unit{0,142} [.!?] | voice-unit{143} voice-close\n" in grammar
    assert "voice-close ::= voice-close-char{0,34} [.!?] | voice-close-char{35}\n" in grammar
    asked = next(c for c in speaker.calls if c.grammar == grammar).messages[-1].content
    assert 'opens with Qwen 1.5B and a verb, e.g. "Qwen 1.5B argues that ..."' in asked
    s = record.summary
    assert s and s.status == "ok" and not s.rejected
    assert s.counterpoint == "Qwen 1.5B argues that attackers read open code too."


def test_two_in_the_minority_open_the_counterpoint_together() -> None:
    grammar = builtin().render("summary.gbnf.j2", line_max=200, summary_max=600,
                               minority=["Qwen 0.5B", "Qwen 1.5B Skeptic"])  # fmt: skip
    assert 'counterpoint ::= "Qwen 0.5B and Qwen 1.5B Skeptic " (voice1' in grammar
    assert 'voice1 ::= "argue " ' in grammar and 'voice6 ::= "point out " ' in grammar
    # a scripted summarizer writes what the grammar allows, and the check keeps it
    reply = scripted_reply(grammar, "")
    assert "\nCounterpoint: Qwen 0.5B and Qwen 1.5B Skeptic argue that it costs.\n" in reply


def test_when_all_agreed_the_counterpoint_is_free_but_has_nobody_dissent() -> None:
    labels = f"Position A: Yes, open it\n{QWEN[0]}: A\n{QWEN[1]}: A\n{QWEN[2]}: A"
    dissent = (
        "Summary: All three held that open code can be checked.\n"
        "Counterpoint: Qwen 1.5B Skeptic argues against releasing the training code.\n"
        "Answer: Yes, open it."
    )
    reservation = dissent.replace("argues against releasing", "warns about the cost of releasing")
    record, speaker = qwen_round([OPEN, OPEN, OPEN], labels, dissent, reservation)
    # as before: any panelist may be named with a reservation
    assert '"\\nCounterpoint: " line "\\nAnswer: "' in summary_call(speaker)
    s = record.summary
    assert s and s.status == "ok" and s.counterpoint.startswith("Qwen 1.5B Skeptic warns")
    seed = derive_seed(record.seed, record.rounds + 1, 0)
    assert s.rejected == [
        f"seed {seed}: the counterpoint has Qwen 1.5B Skeptic dissent, but all 3 agreed"
    ]


# -- answers cut by the grammar's bound ---------------------------------------------------

# max_tokens 64: answer_max 128, so the answer's tail has 88 units; its last 17 begin no clause
HEAD = "Yes, because o"
CUT_ANSWER = HEAD + "pen code lets anyone check it, and shared code helps smaller labs compete " \
                    "with the big o"  # fmt: skip


def test_answer_cut_reads_the_grammars_bound() -> None:
    assert len(CUT_ANSWER) - len(HEAD) == answer_tail_max(128) == 88
    assert answer_cut(CUT_ANSWER, 128)
    assert not answer_cut(CUT_ANSWER[:-1], 128)  # one unit short: the model ended it
    assert not answer_cut(CUT_ANSWER[:-1] + ".", 128)  # a closing full stop
    assert answer_cut(CUT_ANSWER[:-1] + ".x", 128)  # "." and a character are one unit
    # an answer opening with neither yes nor no: its tail starts after 1 to 4 characters
    assert answer_cut("It" + "x" * 87, 128) and not answer_cut("It" + "x" * 86, 128)
    assert answer_cut("Not" + "x" * 88, 128) and not answer_cut("Not" + "x" * 87, 128)
    # the template's bound is the one the code reads
    grammar = builtin().render(
        "turn.gbnf.j2", fields=["reasoning", "answer"], peers=[], letters=[],
        allow_new=False, own_position="", reasoning_max=200, answer_max=128, multiline=False,
        kind="open", options=[],
    )  # fmt: skip
    opened = int(re.search(r"tail-unit\{(\d+)\} close", grammar).group(1))  # type: ignore[union-attr]
    closing = int(re.search(r"close-char\{(\d+)\}\n", grammar).group(1))  # type: ignore[union-attr]
    assert opened + closing == answer_tail_max(128)


def test_the_turn_grammar_ends_an_answer_with_a_full_stop_or_at_its_bound() -> None:
    grammar = builtin().render(
        "turn.gbnf.j2", fields=["reasoning", "answer"], peers=[], letters=[],
        allow_new=False, own_position="", reasoning_max=200, answer_max=200, multiline=False,
        kind="open", options=[],
    )  # fmt: skip
    # 160 units: "." ends it anywhere before the bound; without one it runs to the bound,
    # and its last 32 units begin no new clause, so a clause that would go on ends there
    assert 'tail ::= tail-unit{0,127} "." | tail-unit{128} close\n' in grammar
    assert 'close ::= close-char{0,31} "." | close-char{32}\n' in grammar
    assert "close-char ::= [^\\x00-\\x1f.?,;:!]\n" in grammar


def test_an_answer_stopped_by_the_grammars_bound_is_marked_everywhere() -> None:
    speaker = FakeSpeaker(
        {
            "A1": [f"Reasoning: Open code can be read by all.\nAnswer: {CUT_ANSWER}",
                   LABELS.replace("Position B: No, keep it closed\n", "").replace("B2: B", "B2: A"),
                   R2.format(d="maintained", a="Yes, open it now.", i="nobody", p="A"), GOOD],
            "B2": [R1.format(a="Yes, but slowly please."),
                   R2.format(d="maintained", a="Yes, but slowly please.", i="nobody", p="A")],
        }
    )  # fmt: skip
    record = run(speaker, make_record(["A1", "B2"]))
    a1, b2 = record.turn(1, "A1"), record.turn(1, "B2")
    assert a1 and a1.answer_cut is True and b2 and b2.answer_cut is False
    # the record keeps the answer as generated; it is shown marked
    assert a1.parsed and a1.parsed.answer == CUT_ANSWER
    assert a1.answer_shown == CUT_ANSWER + "…"
    # the peers' view in round 2
    b2_round2 = next(c for c in speaker.calls if c.panelist == "B2" and "Decision" in c.grammar)
    assert f"\nAnswer: {CUT_ANSWER}…\n" in b2_round2.messages[-1].content
    # every layout: marked wherever the answer is shown
    for fmt in ("text", "md", "html"):
        page = render(record, fmt, builtin())
        assert "with the big o…" in page, fmt
        assert page.count("with the big o") == page.count("with the big o…"), fmt


# -- summary lines end at a sentence, the headline keeps the majority's stance ----------

NO_LABELS = f"Position A: No, unless it is audited\nPosition B: Yes, open it\n{QWEN[0]}: A\n" \
            f"{QWEN[1]}: B\n{QWEN[2]}: A"  # fmt: skip


def test_the_summary_grammar_ends_each_line_at_a_sentence_end_or_at_its_bound() -> None:
    grammar = builtin().render("summary.gbnf.j2", line_max=200, summary_max=600)
    # the same rule as an answer's tail (sentence.gbnf.j2): ". ! ?" ends a line before
    # its bound, and its last fifth begins no clause and holds no sentence end
    assert "line-tail ::= line-unit{0,159} [.!?] | line-unit{160} line-close\n" in grammar
    assert "line-close ::= line-close-char{0,38} [.!?] | line-close-char{39}\n" in grammar
    assert "line-close-char ::= [^\\x00-\\x1f.?,;:!]\n" in grammar
    assert "summary-tail ::= summary-unit{0,479} [.!?] | summary-unit{480} summary-close\n" \
        in grammar  # fmt: skip
    assert "headline ::= line\n" in grammar  # no largest position's stance: free
    # a number's headline may be the answer alone ("3.9"): as free as before
    number = builtin().render("summary.gbnf.j2", line_max=200, summary_max=600, kind="number")
    assert "headline ::= [^\\x00-\\x20<] [^\\x00-\\x1f]{1,199}" in number


def test_a_summary_line_stopped_by_the_grammars_bound_is_marked_everywhere() -> None:
    # the counterpoint of a 24-debate `make quality` run, stopped mid-sentence
    stopped = "Qwen 1.5B Skeptic warns that releasing training code could let bad actors " \
              "copy the models and strip out their safeguards before anyone could"  # fmt: skip
    summary = (
        "Summary: All three held that open code can be checked.\n"
        f"Counterpoint: {stopped}\nAnswer: Yes, open it."
    )
    labels = f"Position A: Yes, open it\n{QWEN[0]}: A\n{QWEN[1]}: A\n{QWEN[2]}: A"
    record, _ = qwen_round([OPEN, OPEN, OPEN], labels, summary)
    s = record.summary
    assert s and s.status == "ok" and s.cut == ["counterpoint"]
    # the record keeps the line as generated; it is shown marked
    assert s.counterpoint == stopped and s.shown("counterpoint") == stopped + "…"
    assert s.shown("summary") == s.summary and s.shown("headline") == "Yes, open it."
    for fmt in ("text", "md", "html"):
        page = render(record, fmt, builtin())
        assert "before anyone could…" in page, fmt
        assert page.count("before anyone could") == page.count("before anyone could…"), fmt


def test_a_headline_against_the_majoritys_stance_is_refused_and_a_later_one_kept() -> None:
    # `make quality`: "Yes, but only if ..." over a majority (2 of 3) of "No, unless ..."
    flipped = (
        "Summary: Two held that the code must be audited first; Qwen 0.5B held it should "
        "be opened.\nCounterpoint: Qwen 0.5B argues that open code can be checked.\n"
        "Answer: Yes, but only if it is audited first."
    )
    kept = flipped.replace("Answer: Yes, but only if", "Answer: No, unless")
    record, speaker = qwen_round([SHUT, OPEN, SHUT], NO_LABELS, flipped, kept)
    grammar = summary_call(speaker)
    # the grammar opens the headline with the largest position's stance, and asks it
    assert 'headline ::= "No" ("," | ";" | ":" | " -")? " " [^\\x00-\\x20<] headline-tail' \
        in grammar  # fmt: skip
    asked = next(c for c in speaker.calls if c.grammar == grammar).messages[-1].content
    assert 'starts with its conclusion, "No", the answer of the largest position' in asked
    s = record.summary
    assert s and s.status == "ok" and s.headline == "No, unless it is audited first."
    seed = derive_seed(record.seed, record.rounds + 1, 0)
    assert s.rejected == [
        f"seed {seed}: the headline does not open with No, the stance of the largest "
        "position (2 of 3)"
    ]
    assert s.rejected_generations[0].raw_output == flipped


def test_the_headlines_stance_comes_from_the_label_or_else_the_answers() -> None:
    base = Facts(labels=QWEN, changed=[], majority=QWEN[:2], minority=[QWEN[2]],
                 all_agreed=False, groups=[QWEN[:2], [QWEN[2]]])  # fmt: skip
    assert contradictions("", "", base.model_copy(update={"stance": "no"}), "No, never.") == []
    assert contradictions("", "", base, "Yes, but slowly.") == []  # no stance: free
    # a label without one ("Audit it first"): the stance its members' answers share
    labels = f"Position A: Audit it first\nPosition B: Open it\n{QWEN[0]}: A\n{QWEN[1]}: B\n" \
             f"{QWEN[2]}: A"  # fmt: skip
    record, speaker = qwen_round([SHUT, OPEN, SHUT], labels, GOOD_NO)
    assert '\nheadline ::= "No" ' in summary_call(speaker)
    assert record.summary and record.summary.status == "ok" and not record.summary.rejected
    # members split between yes and no, or an even split: free
    free = GOOD_NO.replace("Qwen 0.5B argues", "Qwen 1.5B argues").replace("No, unless", "Only if")
    record, speaker = qwen_round([SHUT, OPEN, OPEN.replace("Yes", "Perhaps")], labels.replace(
        f"{QWEN[2]}: A", f"{QWEN[2]}: B"), free)  # fmt: skip
    assert "\nheadline ::= line\n" in summary_call(speaker)
    assert record.summary and record.summary.headline == "Only if it is audited first."


GOOD_NO = (
    "Summary: Two held that the code must be audited first; Qwen 0.5B held it should be "
    "opened.\nCounterpoint: Qwen 0.5B argues that open code can be checked.\n"
    "Answer: No, unless it is audited first."
)


def test_a_reply_with_nobody_to_reply_to_is_refused_and_a_later_one_kept() -> None:
    # `make quality`: the Skeptic "counters" in the Summary line when all three agreed
    countered = (
        "Summary: Qwen 1.5B and Qwen 0.5B hold that open code can be checked; Qwen 1.5B "
        "Skeptic counters by stating that audits catch more.\n"
        "Counterpoint: Qwen 1.5B Skeptic warns about cost.\nAnswer: Yes, open it."
    )
    added = countered.replace("counters by stating", "adds")
    kept, why = kept_after_refusal([OPEN, OPEN, OPEN], AGREED, countered, added)
    assert kept == added
    assert why == "it says Qwen 1.5B Skeptic holds another position, but all 3 agreed"


@pytest.mark.parametrize(
    "text,read",
    [
        ("Qwen 1.5B Skeptic counters by stating that audits catch more.",
         [("Qwen 1.5B Skeptic", ["*someone*"])]),
        ("Qwen 1.5B pushes back.", [("Qwen 1.5B", ["*someone*"])]),
        ("Qwen 0.5B rebuts, citing the cost.", [("Qwen 0.5B", ["*someone*"])]),
        ("Qwen 0.5B retorts that it costs.", [("Qwen 0.5B", ["*someone*"])]),
        ("Qwen 0.5B counters with the point that it costs.", [("Qwen 0.5B", ["*someone*"])]),
        ("Qwen 1.5B begs to differ.", [("Qwen 1.5B", ["*someone*"])]),
        # an object of its own: about that, perhaps the panel's own view
        ("Qwen 0.5B counters the ban.", []),
        ("Qwen 0.5B takes issue with the ban.", []),
        ("Qwen 0.5B objects that it costs.", []),
    ],
)  # fmt: skip
def test_a_reply_without_an_object_is_a_dissent(
    text: str, read: list[tuple[str, list[str]]]
) -> None:
    assert dissents(text, QWEN) == read


def test_a_reply_is_refused_only_when_nobody_holds_another_position() -> None:
    split = Facts(labels=QWEN, changed=[], majority=QWEN[:2], minority=[QWEN[2]],
                  all_agreed=False, groups=[QWEN[:2], [QWEN[2]]])  # fmt: skip
    # a majority panelist replying to the minority: true
    assert contradictions("Qwen 1.5B counters by citing the cost.", "", split) == []
    agreed = split.model_copy(update={"majority": [], "minority": [], "all_agreed": True,
                                      "groups": [QWEN]})  # fmt: skip
    assert contradictions("Qwen 1.5B counters by citing the cost.", "", agreed) == [
        "it says Qwen 1.5B holds another position, but all 3 agreed"
    ]
    # Qwen 1.5B Skeptic without a valid answer, the others of one position
    alone = split.model_copy(update={"minority": [], "groups": [QWEN[:2]]})
    assert contradictions("Qwen 1.5B counters by citing the cost.", "", alone) == [
        "it says Qwen 1.5B replies to another position, but no panelist holds one"
    ]


def test_a_plain_yes_or_no_said_of_a_panelist_is_checked_against_its_answer() -> None:
    assert said("Qwen 0.5B says yes, because it helps.", QWEN) == [("Qwen 0.5B", "yes")]
    assert said("Qwen 1.5B and Qwen 1.5B Skeptic answer no.", QWEN) == [
        ("Qwen 1.5B", "no"),
        ("Qwen 1.5B Skeptic", "no"),
    ]
    assert said("Qwen 0.5B answered: No.", QWEN) == [("Qwen 0.5B", "no")]
    # not a plain yes or no, or not said of the panelist: not read
    assert said("Qwen 0.5B says no one changed.", QWEN) == []
    assert said("Qwen 0.5B believes it is a good idea to ban them.", QWEN) == []
    assert said("Agreeing with Qwen 0.5B, the panel says yes.", QWEN) == []
    wrong = (
        "Summary: Two held that the code must be audited first; Qwen 0.5B says no, "
        "because open code helps attackers.\n"
        "Counterpoint: Qwen 0.5B argues that open code can be checked.\n"
        "Answer: No, unless it is audited first."
    )
    kept, why = kept_after_refusal([SHUT, OPEN, SHUT], NO_LABELS, wrong, GOOD_NO)
    assert (
        kept == GOOD_NO and why == "it says Qwen 0.5B answered no, but Qwen 0.5B's answer was yes"
    )
