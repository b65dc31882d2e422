"""The turn grammar on real llama.cpp (SmolLM2's vocabulary): after the Position line
names a letter, only an answer of that letter's stance can be written, a leading
yes or no cannot end without its ground, an answer ends with "." or at its bound,
a summary's counterpoint opens with the minority's name, and a position declared
without a stance gets a label that opens with neither yes nor no (issue #26)."""

from __future__ import annotations

import ctypes
from typing import Any

import pytest

from localtable.debate import positions as pos
from localtable.templates import builtin
from tests.realmodels import smollm2_path
from tests.test_grammar_topk_real import token_array, vocab_only

pytestmark = pytest.mark.slow

# round 2 of an open question: A1 held position B ("No ..."); A is a "Yes" position,
# C one whose label and answers open with neither
GRAMMAR = builtin().render(
    "turn.gbnf.j2",
    fields=["reasoning", "influenced_by", "decision", "position", "answer"],
    peers=["B2", "C3"],
    letters=["A", "B", "C"],
    stances={"A": "yes", "B": "no", "C": ""},
    held="",
    allow_new=True,
    own_position="B",
    reasoning_max=300,
    answer_max=200,
    multiline=False,
    kind="open",
    options=[],
)
HEAD = "Reasoning: The others made good points.\nInfluenced by: B2\nDecision: "


def allowed(model: Any, grammar: str, written: str) -> list[str]:
    """The pieces of every token the grammar allows after `written` (an end of
    generation token shows as "<eog>")."""
    import llama_cpp
    import numpy as np

    n = llama_cpp.llama_vocab_n_tokens(model.vocab)
    sampler = llama_cpp.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
    try:
        for token in model.tokenize(written.encode(), add_bos=False, special=False):
            llama_cpp.llama_sampler_accept(sampler, token)
        arr, _keep = token_array(np.zeros(n, dtype=np.float32))
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(arr))
        out = []
        for i in range(arr.size):
            if arr.data[i].logit == float("-inf"):
                continue
            token = int(arr.data[i].id)
            if llama_cpp.llama_vocab_is_eog(model.vocab, token):
                out.append("<eog>")
            else:
                piece = model.token_to_piece(token, special=False).rstrip(b"\x00")
                out.append(piece.decode("utf-8", "replace"))
        return out
    finally:
        llama_cpp.llama_sampler_free(sampler)


@pytest.fixture(scope="module")
def model() -> Any:
    m = vocab_only(str(smollm2_path()))
    yield m
    m.close()


def test_a_yes_letter_can_only_go_on_into_a_yes_answer(model: Any) -> None:
    after_a = allowed(model, GRAMMAR, HEAD + "changed\nPosition: A\nAnswer: ")
    assert after_a and all(p[0] in "Yy" for p in after_a), after_a[:20]
    assert "No" not in after_a and "Not" not in after_a
    after_yes = allowed(model, GRAMMAR, HEAD + "changed\nPosition: A\nAnswer: Yes")
    assert "<eog>" not in after_yes and "." not in after_yes  # no bare "Yes" / "Yes."


def test_a_no_letter_only_a_no_answer_and_a_neutral_one_neither(model: Any) -> None:
    after_b = allowed(model, GRAMMAR, HEAD + "maintained\nPosition: B\nAnswer: ")
    assert after_b and all(p[0] in "Nn" for p in after_b), after_b[:20]
    after_no = allowed(model, GRAMMAR, HEAD + "maintained\nPosition: B\nAnswer: No")
    # "Not", "None" ... would open with another word: after "No" comes its ground
    assert not [p for p in after_no if p[:1].isalnum()], after_no[:20]
    after_c = allowed(model, GRAMMAR, HEAD + "changed\nPosition: C\nAnswer: ")
    assert "It" in after_c and "Not" in after_c  # a word that only starts like "no" is fine
    # "Yes" and "No" may only be the start of a longer word ("Yesterday", "Nobody")
    for opening in ("Yes", "No", "yes", "no"):
        after = allowed(model, GRAMMAR, HEAD + "changed\nPosition: C\nAnswer: " + opening)
        assert after and all(p[:1].isascii() and p[:1].isalnum() for p in after), after[:20]


def test_a_yes_or_no_answer_ends_only_after_two_words_of_ground(model: Any) -> None:
    start = HEAD + "changed\nPosition: new\nAnswer: "
    assert "<eog>" not in allowed(model, GRAMMAR, start + "Yes, because")
    # ... and its full stop: before the bound only "." ends an answer
    assert "<eog>" not in allowed(model, GRAMMAR, start + "Yes, because it helps")
    assert "<eog>" in allowed(model, GRAMMAR, start + "Yes, because it helps.")
    assert "<eog>" in allowed(model, GRAMMAR, start + "It depends.")


def test_near_its_bound_an_answer_begins_no_clause_and_at_it_ends(model: Any) -> None:
    start = HEAD + "changed\nPosition: new\nAnswer: Yes, because o"  # the tail starts here
    words = "pen code lets anyone check the weights and the data " * 4
    # answer_max 200: a tail of 160 units, the last 32 of which begin no clause
    early = allowed(model, GRAMMAR, start + words[:100])
    assert "<eog>" not in early and "," in early and "." in early
    near = allowed(model, GRAMMAR, start + words[:130])
    assert "<eog>" not in near and "." in near
    assert not [p for p in near if set(p) & set(",;:!")], [p for p in near if "," in p][:10]
    assert set(allowed(model, GRAMMAR, start + words[:160])) == {"<eog>"}


# round 1's labels of a panel whose one answer opens with neither yes nor no: the one
# plan declares A without a stance (label-free)
LABELS = builtin().render(
    "label.gbnf.j2",
    members=["A1"],
    plans=[p.model_dump() for p in pos.label_plans([None], [], max_new=1)],
    label_max=pos.LABEL_MAX_CHARS,
)


def test_a_position_of_no_stance_is_labelled_with_neither_yes_nor_no(model: Any) -> None:
    assert 'new0 ::= "Position A: " label-free' in LABELS
    start = "Position A: "
    first = allowed(model, LABELS, start)
    assert "It" in first and "Not" in first, first[:20]
    assert not {'"', "*", " ", "-"} & set(first), first[:20]  # a word first: '"Yes"' reads as yes
    # "Yes" and "No" in any case may only be the start of a longer word
    for opening in ("Yes", "No", "yes", "no", "YES", "NO", "yEs"):
        after = allowed(model, LABELS, start + opening)
        assert after and all(p[:1].isascii() and p[:1].isalnum() for p in after), after[:20]
    # ... as in "Yesterday" and "Nobody", which end a label and go on to the places
    for label in ("Yesterday's rules", "Nobody wins", "Not yet"):
        assert allowed(model, LABELS, f"{start}{label}\nA1: ") == ["A"]


# a summary whose panel has a minority of one: "Qwen 1.5B", a prefix of another name
SUMMARY = builtin().render("summary.gbnf.j2", line_max=200, summary_max=600, minority=["Qwen 1.5B"])
VERBS = ["argues ", "counters ", "warns ", "contends ", "maintains ", "points out "]


def test_the_counterpoint_opens_with_the_minoritys_name_and_a_verb(model: Any) -> None:
    head = "Summary: Two of three said yes.\nCounterpoint: "
    first = allowed(model, SUMMARY, head)
    assert first and all("Qwen 1.5B ".startswith(p) for p in first), first[:20]
    # after the name, one of the verbs: never "Skeptic"
    after = allowed(model, SUMMARY, head + "Qwen 1.5B ")
    assert after and all(any(v.startswith(p) or p.startswith(v) for v in VERBS) for p in after)
    assert not [p for p in after if p.lower().startswith("sk")]


# the largest position answered "No, unless ...": the headline opens with its "No"
STANCED = builtin().render("summary.gbnf.j2", line_max=200, summary_max=600, stance="no")


def test_a_summary_line_ends_only_at_a_sentence_end_and_the_headline_keeps_the_stance(
    model: Any,
) -> None:
    head = "Summary: Two of three said no."
    # mid-sentence: the line goes on, it cannot end there; after ". ! ?" it may
    assert not [p for p in allowed(model, STANCED, head[:-1]) if p.startswith("\n")]
    assert any(p.startswith("\n") for p in allowed(model, STANCED, head))
    headline = head + "\nCounterpoint: Qwen 0.5B warns about cost.\nAnswer: "
    first = allowed(model, STANCED, headline)
    # "No" and nothing else ("Yes" is refused), and no word that opens with it ("Nobody")
    assert first and all("No".startswith(p) or p.startswith("No") for p in first), first[:20]
    after = allowed(model, STANCED, headline + "No")
    assert after and not [p for p in after if p[:1].isalnum()], after[:20]
