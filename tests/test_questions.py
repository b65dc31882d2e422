"""Questions files: JSONL and TOML, and one clear line per problem (file, line/entry, field)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localtable.research.questions import QuestionFileError, load_questions

GOOD = [
    {"id": "open-1", "question": "Should cities ban cars?"},
    {"id": "cap", "question": "Capital of France?", "kind": "choice",
     "options": ["Paris", "Lyon"], "answer": "Paris"},
    {"id": "sum", "question": "7 + 5?", "kind": "number", "answer": 12},
    {"id": "half", "question": "1 / 2?", "kind": "number", "answer": "0.50"},
]  # fmt: skip


def jsonl(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_loads_kinds_and_normalizes_number_keys(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [json.dumps(q) for q in GOOD[:2]] + ["", *map(json.dumps, GOOD[2:])])
    qs = load_questions(path)
    assert qs.name == "q" and [q.id for q in qs.questions] == ["open-1", "cap", "sum", "half"]
    assert [q.kind for q in qs.questions] == ["open", "choice", "number", "number"]
    assert qs.questions[2].answer == "12" and qs.questions[3].answer == "0.5"
    assert len(qs.sha256) == 64 and qs.limited(2).questions == qs.questions[:2]


def test_toml_loads(tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    path.write_text(
        '[[questions]]\nid = "cap"\nquestion = "Capital?"\nkind = "choice"\n'
        'options = ["Paris", "Lyon"]\nanswer = "Lyon"\n\n'
        '[[questions]]\nid = "n"\nquestion = "2+2?"\nkind = "number"\nanswer = 4\n'
    )
    qs = load_questions(path)
    assert [(q.id, q.answer) for q in qs.questions] == [("cap", "Lyon"), ("n", "4")]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [json.dumps(GOOD[0]), json.dumps(GOOD[1]), json.dumps(GOOD[0])],
            "q.jsonl:3: field 'id': duplicate id 'open-1' (first used at line 1)",
        ),
        (
            ['{"id": "a", "question": "Q?", "kind": "mcq"}'],
            "q.jsonl:1: field 'kind': Input should be 'open', 'choice' or 'number' (got 'mcq')",
        ),
        (
            ['{"id": "a", "question": "Q?", "kind": "choice", "answer": "x"}'],
            "q.jsonl:1: field 'options': a choice question needs options: a list of 2 or more",
        ),
        (
            [
                '{"id": "a", "question": "Q?", "kind": "choice", "options": ["x", "y"], '
                '"answer": "z"}'
            ],  # fmt: skip
            "q.jsonl:1: field 'answer': answer 'z' is not among the options ['x', 'y']",
        ),
        (['{"id": "a", "question": "Q?",', "}"], "q.jsonl:1: not valid JSON: "),
        (
            ['{"id": "a", "question": "Q?", "anwser": "x"}'],
            "q.jsonl:1: field 'anwser': unknown field",
        ),
        (['{"id": "a b", "question": "Q?"}'], "q.jsonl:1: field 'id': String should match"),
        (['{"id": "a"}'], "q.jsonl:1: field 'question': required field is missing"),
        (
            ['{"id": "a", "question": "Q?", "answer": "yes"}'],
            "q.jsonl:1: field 'answer': an open question has no answer key",
        ),
        (
            ['{"id": "a", "question": "Q?", "kind": "number", "answer": "twelve"}'],
            "q.jsonl:1: field 'answer': answer 'twelve' is not a number",
        ),
        (
            ['{"id": "a", "question": "Q?", "kind": "number", "options": ["1", "2"]}'],
            "q.jsonl:1: field 'options': only a choice question has options",
        ),
        (['["a", "b"]'], "q.jsonl:1: expected an object"),
        ([""], "q.jsonl: no questions in the file"),
    ],
)
def test_jsonl_problems_are_one_line_with_file_line_and_field(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    path = jsonl(tmp_path, lines)
    with pytest.raises(QuestionFileError) as info:
        load_questions(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(str(path.parent))
    assert message in text, text


def test_toml_problems_name_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    path.write_text(
        '[[questions]]\nid = "ok"\nquestion = "Q?"\n\n'
        '[[questions]]\nid = "bad"\nquestion = "Q?"\nkind = "choice"\noptions = ["a", "a"]\n'
    )
    with pytest.raises(QuestionFileError, match=r"q.toml: questions\[1\] \(id 'bad'\): field "
                       r"'options': the options must be distinct"):  # fmt: skip
        load_questions(path)
    path.write_text("[[questions]\n")
    with pytest.raises(QuestionFileError, match="q.toml: not valid TOML"):
        load_questions(path)


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(QuestionFileError, match="no such questions file"):
        load_questions(tmp_path / "nope.jsonl")
    other = tmp_path / "q.csv"
    other.write_text("id,question\n")
    with pytest.raises(QuestionFileError, match="use .jsonl or .toml"):
        load_questions(other)
