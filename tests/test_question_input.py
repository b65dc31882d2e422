"""The question: UTF-8 text, read no further than its limit, given once (issue #13,
items 4, 6 and 9). Each is refused in one line before anything loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile import invoke, localtable, no_models_config, one_line_error


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return no_models_config(tmp_path)


def test_a_question_argument_that_is_not_utf8(tmp_path: Path, config: Path) -> None:
    result = localtable("debate", b"What is \xff\xfe?", "--config", str(config),
                        "--runs-dir", str(tmp_path / "runs"), cache=tmp_path)  # fmt: skip
    one_line_error(result, 2, "not valid UTF-8")
    assert not (tmp_path / "runs").exists()


def test_a_question_on_stdin_that_is_not_utf8(tmp_path: Path, config: Path) -> None:
    result = localtable("debate", "-", "--config", str(config), cache=tmp_path,
                        input=b"What is \xff\xfe?\n")  # fmt: skip
    one_line_error(result, 2, "stdin", "not UTF-8")


def test_a_question_file_that_is_not_utf8(tmp_path: Path, config: Path) -> None:
    path = tmp_path / "q.txt"
    path.write_bytes(b"What is \xff\xfe?\n")
    result = localtable("debate", "--file", str(path), "--config", str(config), cache=tmp_path)
    one_line_error(result, 2, str(path), "cannot read the question")


def test_a_question_from_dev_zero_stops_at_the_limit(tmp_path: Path, config: Path) -> None:
    result = localtable("debate", "--file", "/dev/zero", "--config", str(config), cache=tmp_path)
    one_line_error(result, 2, "more than 20,000 characters")


def test_an_endless_stdin_stops_at_the_limit(tmp_path: Path, config: Path) -> None:
    with open("/dev/zero", "rb") as zeros:  # `yes | localtable debate -`
        result = localtable(
            "debate", "-", "--config", str(config), cache=tmp_path, stdin=zeros.fileno()
        )
    one_line_error(result, 2, "more than 20,000 characters")


@pytest.mark.parametrize("argument", ["Is it?", "-"])
def test_a_question_argument_and_a_file_is_refused(
    tmp_path: Path, config: Path, argument: str
) -> None:
    path = tmp_path / "q.txt"
    path.write_text("Is it not?")
    code, out = invoke("debate", argument, "--file", str(path), "--config", str(config))
    assert code == 2 and "not both" in out, out
