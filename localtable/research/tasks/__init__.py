"""Built-in question sets that `localtable batch --task NAME` generates offline."""

from __future__ import annotations

from collections.abc import Callable

from localtable.errors import ConfigError
from localtable.research.questions import QuestionSet
from localtable.research.tasks import arithmetic, quality

TASKS: dict[str, Callable[[], QuestionSet]] = {
    "arithmetic": arithmetic.question_set,
    "quality": quality.question_set,
}


def load_task(name: str) -> QuestionSet:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}: the built-in tasks are {', '.join(TASKS)}")
    return TASKS[name]()
