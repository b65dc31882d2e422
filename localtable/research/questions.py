"""Question files for batches: JSONL or TOML, validated entry by entry.

A JSONL file holds one JSON object per line (blank lines are skipped); a TOML
file holds an array of tables named `questions`. Each question has:

    id        letters, digits, '.', '_' or '-' (it names the run folders)
    question  the text the panel debates
    kind      open (default), choice or number
    options   a choice question's options (2 or more, distinct, one line each)
    answer    the answer key: one of the options, or a number (optional)

Every problem is one QuestionFileError line naming the file, the line (JSONL)
or entry (TOML), and the field.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from localtable.debate.answers import (
    NUMBER_DECIMALS,
    NUMBER_INT_DIGITS,
    canonical_number,
    parse_number,
)
from localtable.errors import ConfigError
from localtable.record import QuestionKind
from localtable.safefiles import FileRefused, check_depth, read_bounded

QUESTIONS_MAX_BYTES = 1 << 30  # 300,000 questions of a few hundred characters: ~100 MB
QUESTION_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_OPTIONS = 26
MAX_OPTION_CHARS = 200


class QuestionFileError(ConfigError):
    """A questions file that cannot be used; the message names file, line and field."""


class Question(BaseModel):
    """One question of a batch and, when it can be scored, its answer key."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=QUESTION_ID)
    question: str = Field(min_length=1, max_length=20_000)
    kind: QuestionKind = "open"
    options: list[str] = Field(default_factory=list, validate_default=True)
    answer: str | None = Field(default=None, validate_default=True)

    @field_validator("question")
    @classmethod
    def _has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the question is empty")
        return value.strip()

    @field_validator("options")
    @classmethod
    def _options(cls, value: list[str], info: ValidationInfo) -> list[str]:
        kind = info.data.get("kind")
        if kind != "choice":
            if value:
                raise ValueError(f"only a choice question has options (this one is {kind})")
            return value
        if len(value) < 2:
            raise ValueError("a choice question needs options: a list of 2 or more")
        if len(value) > MAX_OPTIONS:
            raise ValueError(f"at most {MAX_OPTIONS} options")
        for option in value:
            if not option.strip() or option != option.strip():
                raise ValueError(f"option {option!r} is empty or has surrounding spaces")
            if len(option) > MAX_OPTION_CHARS or any(ord(c) < 0x20 for c in option):
                raise ValueError(
                    f"option {option[:40]!r} must be one line of at most {MAX_OPTION_CHARS} "
                    "characters"
                )
        if len(set(value)) != len(value):
            raise ValueError("the options must be distinct")
        return value

    @field_validator("answer", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("the answer key must be an option or a number, not true/false")
        if isinstance(value, int | float):
            return repr(value) if isinstance(value, float) else str(value)
        return value

    @field_validator("answer")
    @classmethod
    def _answer(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        kind, options = info.data.get("kind"), info.data.get("options")
        if kind == "open":
            raise ValueError(
                "an open question has no answer key; make it kind 'choice' or 'number' to score it"
            )
        if kind == "choice" and options is not None and value not in options:
            raise ValueError(f"answer {value!r} is not among the options {options}")
        if kind == "number":
            number = parse_number(value)
            if number is None:
                raise ValueError(
                    f"answer {value!r} is not a number the panel can give (digits, optional "
                    f"'-', at most {NUMBER_INT_DIGITS} digits and {NUMBER_DECIMALS} decimals)"
                )
            return canonical_number(number)
        return value


class QuestionSet(BaseModel):
    """The questions of a batch and where they came from."""

    model_config = ConfigDict(frozen=True)
    name: str = Field(description="default batch name: the file's stem or the task's name")
    source: str = Field(description="the file path, or task:<name>")
    sha256: str = Field(description="of the file, or of the task's canonical question list")
    questions: list[Question]

    def limited(self, limit: int | None) -> QuestionSet:
        if limit is None:
            return self
        return self.model_copy(update={"questions": self.questions[:limit]})


def questions_sha256(questions: list[Question]) -> str:
    """sha256 of the questions' canonical JSON (sorted keys, (',', ':') separators)."""
    body = [q.model_dump(mode="json") for q in questions]
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _problem(where: str, err: ValidationError) -> QuestionFileError:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        what = "unknown field (a question has id, question, kind, options, answer)"
    elif first["type"] == "missing":
        what = "required field is missing"
    else:
        what = first["msg"].removeprefix("Value error, ")
        if first["type"] == "literal_error":
            what += f" (got {first['input']!r})"
    return QuestionFileError(f"{where}: field '{field}': {what}" if field else f"{where}: {what}")


def _validate(entries: list[tuple[str, str, Any]]) -> list[Question]:
    """Validate (where, short where, raw entry) in order; ids must be unique."""
    questions: list[Question] = []
    first_seen: dict[str, str] = {}
    for where, short, raw in entries:
        if not isinstance(raw, dict):
            raise QuestionFileError(f"{where}: expected an object with id and question fields")
        try:
            question = Question.model_validate(raw)
        except ValidationError as exc:
            raise _problem(where, exc) from None
        if question.id in first_seen:
            raise QuestionFileError(
                f"{where}: field 'id': duplicate id {question.id!r} "
                f"(first used at {first_seen[question.id]})"
            )
        first_seen[question.id] = short
        questions.append(question)
    return questions


def _jsonl_entries(path: Path, text: str) -> list[tuple[str, str, Any]]:
    entries = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            check_depth(line)
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QuestionFileError(
                f"{path}:{n}: not valid JSON: {exc.msg} (column {exc.colno})"
            ) from None
        except FileRefused as exc:
            raise QuestionFileError(f"{path}:{n}: the line {exc}") from None
        entries.append((f"{path}:{n}", f"line {n}", raw))
    return entries


def _toml_entries(path: Path, text: str) -> list[tuple[str, str, Any]]:
    try:
        check_depth(text, toml=True)
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise QuestionFileError(f"{path}: not valid TOML: {exc}") from None
    except FileRefused as exc:
        raise QuestionFileError(f"{path}: the file {exc}") from None
    unknown = sorted(set(raw) - {"questions"})
    if unknown:
        raise QuestionFileError(
            f"{path}: unknown key {unknown[0]!r} (the file holds [[questions]] tables)"
        )
    items = raw.get("questions", [])
    if not isinstance(items, list):
        raise QuestionFileError(f"{path}: 'questions' must be an array of tables [[questions]]")
    out = []
    for i, item in enumerate(items):
        ident = item.get("id") if isinstance(item, dict) else None
        label = f"questions[{i}]" + (f" (id {ident!r})" if isinstance(ident, str) else "")
        out.append((f"{path}: {label}", f"questions[{i}]", item))
    return out


def load_questions(path: Path) -> QuestionSet:
    """Read and validate a .jsonl or .toml questions file."""
    if path.suffix not in (".jsonl", ".ndjson", ".toml"):  # before reading: /dev/zero never ends
        raise QuestionFileError(
            f"{path}: unknown questions format {path.suffix!r}: use .jsonl or .toml"
        )
    try:
        data = read_bounded(path, QUESTIONS_MAX_BYTES)
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise QuestionFileError(f"{path}: no such questions file") from None
    except FileRefused as exc:
        raise QuestionFileError(f"{path}: cannot read it: it {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise QuestionFileError(f"{path}: cannot read it ({exc})") from None
    entries = _toml_entries(path, text) if path.suffix == ".toml" else _jsonl_entries(path, text)
    questions = _validate(entries)
    if not questions:
        raise QuestionFileError(f"{path}: no questions in the file")
    return QuestionSet(
        name=path.stem,
        source=str(path),
        sha256=hashlib.sha256(data).hexdigest(),
        questions=questions,
    )
