"""Built-in question sets that `localtable batch --task NAME` generates offline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from localtable.errors import ConfigError
from localtable.research.questions import QuestionSet, load_questions
from localtable.research.tasks import arithmetic, quality

TASKS: dict[str, Callable[[], QuestionSet]] = {
    "arithmetic": arithmetic.question_set,
    "quality": quality.question_set,
}


def load_task(name: str) -> QuestionSet:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}: the built-in tasks are {', '.join(TASKS)}")
    return TASKS[name]()


def questions_of(questions_file: Path | None, task: str | None) -> QuestionSet:
    """A batch's questions: a JSONL or TOML file, or a built-in task (one of the two)."""
    if (questions_file is None) == (task is None):
        raise ConfigError("give a questions file (.jsonl or .toml) or --task NAME, not both")
    return load_questions(questions_file) if questions_file else load_task(task or "")
