"""A turn's grammar as a JSON schema (backends/openai/form.py), and the JSON answer read
back as the turn's lines: every grammar localtable writes has a schema whose answers
are text the grammar allows and the parser reads into the same turn.

The grammar check here is independent of the field splitting: the whole grammar is
compiled to one regular expression over every character (gbnf.py's tree, no JSON
safety) and the turn's text must match it.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from typing import Any

import pytest

from localtable.backends.openai import form as formmod
from localtable.backends.openai.form import Form, FormError, form_of
from localtable.backends.openai.gbnf import (
    Alt,
    Chars,
    GrammarError,
    Lit,
    Node,
    Ref,
    Seq,
    parse,
)
from localtable.backends.openai.jsonlines import JsonLines
from localtable.debate import positions
from localtable.debate.parsing import parse_labels, parse_summary, parse_turn
from localtable.templates import builtin

TEMPLATES = builtin()
PEERS = ["Bob", 'Cy "Q" Lee', "Dee"]
REASONING = "Buses carry more people per lane than cars, so streets move faster."
ANSWERS = {
    "yes": "Yes, because buses move more people.",
    "no": "No, since many people need a car to work.",
    "other": "Cities should build trams first.",
    "number": "-12.5",
}


def turn_grammar(**values: Any) -> str:
    base: dict[str, Any] = dict(
        fields=["reasoning", "answer"], peers=PEERS, letters=[], stances={}, held="",
        allow_new=True, own_position="", reasoning_max=600, answer_max=200, multiline=False,
        kind="open", options=[],
    )  # fmt: skip
    return TEMPLATES.render("turn.gbnf.j2", **{**base, **values})


# -- an independent check: the whole grammar as one regex ---------------------------


def whole_regex(rules: dict[str, Node], node: Node) -> str:
    if isinstance(node, Lit):
        return re.escape(node.text)
    if isinstance(node, Chars):
        body = "".join(
            re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
            for a, b in node.ranges
        )
        return (
            f"[{'^' if node.negated else ''}{body}]"
            if body
            else ("[\\s\\S]" if node.negated else "(?!)")
        )
    if isinstance(node, Ref):
        return f"(?:{whole_regex(rules, rules[node.name])})"
    if isinstance(node, Seq):
        return "".join(f"(?:{whole_regex(rules, i)})" for i in node.items)
    if isinstance(node, Alt):
        return "(?:" + "|".join(whole_regex(rules, o) for o in node.options) + ")"
    high = "" if node.high is None else node.high
    return f"(?:{whole_regex(rules, node.item)}){{{node.low},{high}}}"


def allowed_by(grammar: str, text: str) -> bool:
    rules = parse(grammar)
    return re.fullmatch(whole_regex(rules, rules["root"]), text, re.DOTALL) is not None


def sample(field: formmod.FieldForm, stance: str) -> str:
    """A realistic value of the field that its schema must accept."""
    if field.values is not None:
        return field.values[-1]
    if field.key in ("Reasoning", "Summary"):
        return REASONING
    if field.key == "Answer":
        if "[0-9]{1,15}" in (field.pattern or ""):
            return ANSWERS["number"]
        return ANSWERS[stance]
    return (
        "Yes, they should. " if field.key and field.key.startswith("Position") else "Trams first."
    )


def stance_of(strand: list[formmod.FieldForm]) -> list[str]:
    """The stances whose answer the strand's Answer pattern takes."""
    answer = next((f for f in strand if f.key == "Answer"), None)
    if answer is None or answer.pattern is None:
        return ["other"]
    return [s for s in ("yes", "no", "other") if re.fullmatch(answer.pattern[1:-1], ANSWERS[s])]


def answers_of(form: Form) -> list[dict[str, str]]:
    out = []
    for strand in form.strands:
        for stance in stance_of(strand) or ["other"]:
            out.append({f.prop: sample(f, stance) for f in strand})
    return out


LATER = ["reasoning", "influenced_by", "decision", "answer"]
LABELLED = ["reasoning", "influenced_by", "decision", "position", "answer"]
TURNS = [
    dict(),
    dict(kind="number", multiline=True),
    dict(kind="choice", options=["A) trams", 'B) "buses"', "C) cars"], multiline=True),
    dict(fields=LATER),
    dict(fields=LABELLED, letters=["A", "B"], stances={"A": "yes", "B": "no"}),
    dict(fields=LABELLED, letters=["A", "B", "C"], stances={"A": "yes", "B": "no", "C": ""},
         own_position="B"),
    dict(fields=LABELLED, letters=["A"], stances={"A": ""}, own_position="A", allow_new=False),
    dict(fields=["answer"], letters=["A", "B"], stances={"A": "yes", "B": "no"}, held="A"),
    dict(fields=["decision", "position", "answer"], letters=["A", "B"],
         stances={"A": "no", "B": ""}, own_position="A"),
]  # fmt: skip


@pytest.mark.parametrize("values", TURNS, ids=[str(i) for i in range(len(TURNS))])
def test_every_answer_a_turn_schema_takes_is_a_turn_its_grammar_allows(
    values: dict[str, Any],
) -> None:
    grammar = turn_grammar(**values)
    form = form_of(grammar)
    answers = answers_of(form)
    assert answers
    fields = values.get("fields", ["reasoning", "answer"])
    for answer in answers:
        text = form.text(json.dumps(answer))
        assert allowed_by(grammar, text), text
        if fields[0] == "reasoning":  # a whole turn: the parser reads it
            stances = {k: v or None for k, v in values.get("stances", {}).items()}
            parsed = parse_turn(
                text, later_round=len(fields) > 2, peers={p: p for p in PEERS},
                kind=values.get("kind", "open"), options=values.get("options"),
                letters=values.get("letters") or None, stances=stances or None,
            )  # fmt: skip
            assert parsed.answer == answer["Answer"]


def test_a_decision_that_fixes_the_position_and_the_answer_stays_coupled() -> None:
    """maintained keeps B (a "No" position): its answer must open with No; changed to A
    (a "Yes" position) must open with Yes. Each choice is an object of its own."""
    form = form_of(turn_grammar(fields=LABELLED, letters=["A", "B"],
                                stances={"A": "yes", "B": "no"}, own_position="B"))  # fmt: skip
    schema = form.json_schema()
    assert len(schema["anyOf"]) == 3  # maintained B, changed A, changed new
    head = {"Reasoning": REASONING, "Influenced by": "nobody"}
    keep = {**head, "Decision": "maintained", "Position": "B", "Answer": ANSWERS["no"]}
    assert form.text(json.dumps(keep)).endswith(
        "Decision: maintained\nPosition: B\nAnswer: No, since many people need a car to work."
    )
    for wrong in ({**keep, "Answer": ANSWERS["yes"]}, {**keep, "Position": "A"},
                  {**keep, "Decision": "changed"}):  # fmt: skip
        with pytest.raises(FormError):
            form.text(json.dumps(wrong))


def test_the_schema_keeps_the_grammars_order_reasoning_first() -> None:
    schema = form_of(turn_grammar(fields=LATER)).json_schema()
    assert list(schema["properties"]) == ["Reasoning", "Influenced by", "Decision", "Answer"]
    assert schema["required"] == list(schema["properties"])
    assert schema["additionalProperties"] is False


def test_peers_and_options_are_enums_even_with_quotes() -> None:
    schema = form_of(turn_grammar(fields=LATER)).json_schema()
    influenced = schema["properties"]["Influenced by"]["enum"]
    assert "nobody" in influenced and 'Bob, Cy "Q" Lee, Dee' in influenced
    assert "Dee, Bob" not in influenced  # each peer once, in panel order
    assert len(influenced) == 2 ** len(PEERS)
    choice = form_of(turn_grammar(kind="choice", options=['B) "buses"', "C) cars"], multiline=True))
    assert choice.json_schema()["properties"]["Answer"]["enum"] == ['B) "buses"', "C) cars"]


@pytest.mark.parametrize(
    "answer",
    ["Yes", "Yes, buses.", "Is it? Yes.", "No. Because x.", 'Yes, "quoted" ground here.',
     "Trams\nfirst.", "Cars \\ bikes"],
)  # fmt: skip
def test_an_answer_the_grammar_forbids_does_not_match_the_schema(answer: str) -> None:
    form = form_of(turn_grammar())
    with pytest.raises(FormError):
        form.text(json.dumps({"Reasoning": REASONING, "Answer": answer}))


def test_no_pattern_holds_what_a_raw_json_string_cannot() -> None:
    """llama.cpp matches a pattern against the raw JSON text: a pattern must never allow
    a quote, a backslash or a control character there."""
    for values in TURNS:
        for strand in form_of(turn_grammar(**values)).strands:
            for field in strand:
                if field.pattern is None:
                    continue
                body = field.pattern[1:-1]
                for bad in ['"', "\\", "\n", "\t", "\x00", "\x7f"]:
                    assert not re.search(body, bad), (field.key, bad)


def test_the_multiline_reasoning_of_a_number_question_is_one_line_in_json() -> None:
    form = form_of(turn_grammar(kind="number", multiline=True))
    with pytest.raises(FormError):
        form.text(json.dumps({"Reasoning": "2+2\nis 4", "Answer": "4"}))
    assert form.text(json.dumps({"Reasoning": "2+2 is 4", "Answer": "4"})) == (
        "Reasoning: 2+2 is 4\nAnswer: 4"
    )


def test_summary_labels_and_stance_grammars_have_schemas_the_parsers_read() -> None:
    summary = form_of(TEMPLATES.render("summary.gbnf.j2", line_max=200, summary_max=600))
    text = summary.text(json.dumps({"Summary": REASONING, "Counterpoint": "Cars are faster.",
                                    "Answer": "Cities should fund buses."}))  # fmt: skip
    assert parse_summary(text).headline == "Cities should fund buses."
    plans = [{"declared": [("A", "yes"), ("B", "no")], "choices": [["A", "B"], ["A", "B"]]},
             {"declared": [("A", "")], "choices": [["A"], ["A"]]}]  # fmt: skip
    labels_grammar = TEMPLATES.render("label.gbnf.j2", members=["Ada", "Bob"], plans=plans,
                                      label_max=80)  # fmt: skip
    labels = form_of(labels_grammar)
    assert len(labels.strands) == 2
    text = labels.text(json.dumps({"Position A": "Yes, ban them.", "Position B": "No, keep them.",
                                   "Ada": "A", "Bob": "B"}))  # fmt: skip
    assert allowed_by(labels_grammar, text)
    assert parse_labels(text, members={"Ada": "Ada", "Bob": "Bob"}, existing=[]).assigned == {
        "Ada": "A",
        "Bob": "B",
    }
    stance = form_of(TEMPLATES.render("stance.gbnf.j2"))
    assert stance.json_schema()["properties"]["text"]["enum"] == ["Neither", "No", "Yes"]
    assert stance.text('{"text": "Neither"}') == "Neither"


def test_an_answer_outside_the_schema_says_why() -> None:
    form = form_of(turn_grammar())
    with pytest.raises(FormError, match="not JSON"):
        form.text("Reasoning: plain text")
    with pytest.raises(FormError, match="not a JSON object"):
        form.text('["Reasoning"]')
    with pytest.raises(FormError, match="fields"):
        form.text(json.dumps({"Answer": ANSWERS["other"], "Reasoning": REASONING}))


def test_a_grammar_without_a_json_form_is_refused() -> None:
    with pytest.raises(FormError, match="recursive"):
        form_of('root ::= "(" root ")" | "x"')
    with pytest.raises(FormError, match="no name"):
        form_of('root ::= "Reasoning: " [a-z]+ "\\n" [a-z]+')
    with pytest.raises(FormError, match="repeat holds a line break"):
        form_of('root ::= ("Line: " [a-z] "\\n")*')
    with pytest.raises(FormError):
        form_of("root ::= [")
    with pytest.raises(GrammarError):
        parse('root ::= "a" {2,1}')


# -- the answer as it streams ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_the_streamed_lines_are_the_answers_lines_however_it_is_cut(seed: int) -> None:
    form = form_of(turn_grammar(fields=LABELLED, letters=["A"], stances={"A": "yes"}))
    answer = {"Reasoning": "Ünïcode 😀 and spaces", "Influenced by": 'Cy "Q" Lee',
              "Decision": "changed", "Position": "new", "Answer": ANSWERS["other"]}  # fmt: skip
    raw = json.dumps(answer, ensure_ascii=seed % 2 == 0, indent=1 if seed > 2 else None)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(raw)), 12))
    lines = JsonLines(form.labels())
    pieces = [lines.feed(raw[a:b]) for a, b in itertools.pairwise([0, *cuts, len(raw)])]
    assert not lines.broken
    assert "".join(pieces) == lines.text == form.text(raw)


def test_an_answer_cut_off_gives_the_lines_it_got_to() -> None:
    raw = json.dumps({"Reasoning": REASONING, "Answer": ANSWERS["yes"]})
    lines = JsonLines(form_of(turn_grammar()).labels())
    lines.feed(raw[: raw.index("Answer") + 17])
    assert lines.text == f"Reasoning: {REASONING}\nAnswer: Yes, be"


def test_text_that_is_not_a_json_object_breaks_the_stream_reader() -> None:
    lines = JsonLines({})
    assert lines.feed("Reasoning: no JSON") == ""
    assert lines.broken


def test_the_labels_schema_keeps_each_answer_to_positions_of_its_stance() -> None:
    # the bench's round 1 on /v1: a "No" answer, a "Yes" one and one with neither word;
    # llama-server's converter keeps anyOf, enum and pattern, so the schema carries the
    # stance rule only if every strand does: the "No" answer may take only letters whose
    # label must open with "No", the "Yes" one "Yes"
    members = ["SmolLM2", "Gemma 3 270M", "SmolLM2 Skeptic"]
    plans = positions.label_plans(["no", "yes", None], [], max_new=3)
    grammar = TEMPLATES.render("label.gbnf.j2", members=members,
                               plans=[p.model_dump() for p in plans],
                               label_max=positions.LABEL_MAX_CHARS)  # fmt: skip
    schema = form_of(grammar).json_schema()
    strands = schema.get("anyOf", [schema])
    assert strands
    for strand in strands:
        props = strand["properties"]
        for member, word in (("SmolLM2", "No"), ("Gemma 3 270M", "Yes")):
            for letter in props[member]["enum"]:
                assert props[f"Position {letter}"]["pattern"].startswith(f"^{word}(")
    labels = form_of(grammar)
    with pytest.raises(FormError):  # the bench's answer: "No" under a free "Yes, ..." label
        labels.text(json.dumps({"Position A": "Yes, open it.", "Position B": "No, keep it.",
                                "Position C": "Yes, that is the best answer.", "SmolLM2": "C",
                                "Gemma 3 270M": "A", "SmolLM2 Skeptic": "C"}))  # fmt: skip


def test_the_label_of_a_position_of_no_stance_keeps_its_first_word_in_the_schema() -> None:
    # label-free opens with other-first (neither yes nor no, in any case): the schema's
    # pattern keeps that rule, so /v1 cannot label such a position "Yes, ..." either
    (plan,) = positions.label_plans([None], [], max_new=1)
    grammar = TEMPLATES.render("label.gbnf.j2", members=["Ada"], plans=[plan.model_dump()],
                               label_max=positions.LABEL_MAX_CHARS)  # fmt: skip
    form = form_of(grammar)
    for label in ("Yes, open it", "yes - open it", "YES it is", "No way", "nO: never"):
        with pytest.raises(FormError):
            form.text(json.dumps({"Position A": label, "Ada": "A"}))
    for label in ("Yesterday's rules", "Nobody wins", "Not yet"):
        text = form.text(json.dumps({"Position A": label, "Ada": "A"}))
        assert allowed_by(grammar, text)
        assert parse_labels(text, members={"Ada": "Ada"}, existing=[]).new == {"A": label}


def test_a_replys_start_opens_the_first_value_every_strand_shares() -> None:
    # llama-server goes on from it: the keys it would decode, and the whitespace its
    # schema grammar allows around them, are not left to the model
    form = form_of(turn_grammar())
    assert form.next_key(0) == "Reasoning" and form.next_key(2) is None
    assert formmod.json_start("", form.next_key(0)) == '{"Reasoning": "'
    kept = form_of(turn_grammar(fields=["answer"])).after('Reasoning: a "b"\n')
    assert formmod.json_start('Reasoning: a "b"\n', kept.next_key(1)) == (
        r'{"Reasoning": "a \"b\"", "Answer": "'
    )
    assert formmod.json_start("Reasoning: x\n", None) == '{"Reasoning": "x", '
    assert formmod.json_start("", None) == ""
    labels = Form(strands=[[formmod.FieldForm(key="Position A", values=["Yes"])],
                           [formmod.FieldForm(key="Position B", values=["No"])]])  # fmt: skip
    assert labels.next_key(0) is None  # the strands differ: nothing to begin
