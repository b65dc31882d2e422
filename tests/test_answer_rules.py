"""The answer rule boxed_or_last_number: the number in a reply's last \\boxed{...}, else
the paper's last_number; hand-written replies of a model that writes LaTeX."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import get_args

import pytest

from localtable.debate.answers import (
    ANSWER_RULES,
    box_contents,
    boxed_or_last_number,
    last_number,
)
from localtable.debate.protocol import Debate
from localtable.errors import ConfigError
from localtable.protocols import builtin_protocols, load_protocol
from localtable.record import AnswerRuleName
from tests.fakes import FakeSpeaker, make_record
from tests.test_protocols import REPLIES

# (reply, what boxed_or_last_number reads); the LaTeX is written as Qwen2.5 Coder writes it
BOXED: list[tuple[str, str | None]] = [
    ("The answer is \\boxed{246}.", "246"),
    ("So the result is \\(\\boxed{246}\\).", "246"),
    ("3 \\times 27 = 81, so \\[ \\boxed{246} \\]", "246"),
    ("$\\boxed{-3}$", "-3"),
    ("\\boxed{\\frac{1}{2}}", "0.5"),  # nested braces: the fraction's own groups
    ("\\boxed{-\\frac{3}{4}}", "-0.75"),
    ("\\boxed{\\dfrac{10}{4}}", "2.5"),
    ("\\boxed{\\frac{1}{3}}", None),  # 0.333... fits no number answer
    ("\\boxed{\\frac{1}{0}}", None),
    ("\\boxed{1,234}", "1234"),  # digits in threes: a thousands separator
    ("\\boxed{1{,}234}", "1234"),  # LaTeX's unspaced comma
    ("\\boxed{-12,345,678}", "-12345678"),
    ("\\boxed{1,5}", None),  # not in threes: not a number we can tell
    ("\\boxed{ 2\\,460 }", "2460"),  # a thin space inside the number
    ("\\boxed{{246}}", "246"),  # braces around all of it
    ("\\boxed{246.}", "246"),  # float() reads it, as the paper's parser would
    ("\\boxed{+7}", "7"),
    ("First \\boxed{12}, then on reflection \\boxed{13}.", "13"),  # two boxes: the last
    ("\\boxed{x}", None),  # a box with no number: the stated answer is none
    ("The answer is 42. \\boxed{x + 1}", None),  # the box decides, not the 42 before it
    ("\\boxed{}", None),
    ("\\boxed{\\text{246}}", None),  # words in a box are not a number
    ("\\boxed{inf}", None),
    ("\\boxed{1e3}", "1000"),  # float() reads it
    ("\\boxed{3, 4}", None),  # two answers
    ("The answer is 81 and \\boxed{246", "81"),  # a box left open: none; the last number
    ("5 \\{ 6 \\} \\boxed{\\{7\\}}", None),  # escaped braces are text, not groups
    ("\\boxed{\\boxed{9}}", None),  # the outer box closes last, and holds a box
    ("\\boxed {  -19  } is final", "-19"),
    ("No box here, the answer is 550.", "550"),  # no box: the paper's rule
    ("\\Boxed{5} is not a box, 6", "6"),
]


@pytest.mark.parametrize(("reply", "read"), BOXED)
def test_the_boxed_rule_reads_the_last_box(reply: str, read: str | None) -> None:
    assert boxed_or_last_number(reply) == read


@pytest.mark.parametrize("reply", REPLIES)
def test_without_a_box_it_reads_what_the_papers_rule_reads(reply: str) -> None:
    if "\\boxed" not in reply:
        assert boxed_or_last_number(reply) == last_number(reply)


def test_where_the_two_rules_part() -> None:
    # the pilot's replies (docs/research.md): the paper's rule reads the number before the box
    reply = "15 * 21 = 315 and 3 \\times 27 = 81, so 327 - 81 = \\(\\boxed{246}\\)."
    assert last_number(reply) == "81" and boxed_or_last_number(reply) == "246"
    assert last_number("\\(\\boxed{246}\\).") is None
    unboxed = "\\boxed{x} so 42"  # a box with no number: the paper reads 42, the box none
    assert last_number(unboxed) == "42" and boxed_or_last_number(unboxed) is None


def test_box_contents_are_found_in_one_pass_over_hostile_text() -> None:
    # every brace unmatched, boxes never closed: linear, not a scan from every box
    hostile = "\\boxed{" * 200_000 + "{" * 200_000 + "\\boxed{5}"
    assert box_contents(hostile) == ["5"]
    assert boxed_or_last_number(hostile) == "5"
    assert boxed_or_last_number("\\boxed{" + "{" * 10_000 + "1" + "}" * 10_001) is None


def test_the_rule_names_are_the_records_names() -> None:
    assert list(ANSWER_RULES) == list(get_args(AnswerRuleName))


def test_a_protocol_folder_may_choose_the_boxed_rule(tmp_path: Path) -> None:
    folder = tmp_path / "boxed"
    shutil.copytree(builtin_protocols() / "du2023", folder)
    toml = folder / "protocol.toml"
    text = toml.read_text(encoding="utf-8")
    toml.write_text(text.replace('"last_number"', '"boxed_or_last_number"'), encoding="utf-8")
    protocol = load_protocol(str(folder), tmp_path)
    assert protocol.settings.answer_rule == "boxed_or_last_number"
    record = make_record(["A1", "B2"], anonymous=True, question="What is 1+2?")
    record = record.model_copy(update={"question_kind": "number", "answer_key": "3",
                                       "protocol": protocol.record()})  # fmt: skip
    speaker = FakeSpeaker({"A1": ["1 + 2 = \\boxed{3}", "\\boxed{3}"],
                           "B2": ["2 \\times 1 = \\boxed{x}", "still 3"]})  # fmt: skip
    done = Debate(record, speaker, protocol.templates(), lambda r: None, lambda e: None).run()
    read = [(t.panelist, t.status, t.parsed.answer if t.parsed else None) for t in done.turns]
    assert read == [("A1", "ok", "3"), ("B2", "failed", None), ("A1", "ok", "3"),
                    ("B2", "ok", "3")]  # fmt: skip
    b2 = done.turn(1, "B2")
    assert b2 is not None and "answer rule boxed_or_last_number reads no number" in str(b2.error)


def test_an_unknown_rule_in_a_protocol_folder_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "typo"
    shutil.copytree(builtin_protocols() / "du2023", folder)
    toml = folder / "protocol.toml"
    text = toml.read_text(encoding="utf-8")
    toml.write_text(text.replace('"last_number"', '"boxed"'), encoding="utf-8")
    with pytest.raises(ConfigError, match="answer_rule"):
        load_protocol(str(folder), tmp_path)
