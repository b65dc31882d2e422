"""What `score`, `compare` and `quality` print: the runs their targets name, measured
and laid out. Reading only: nothing here loads a model (quality's judge, which does,
is handed in by the caller)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from localtable.debate.answers import ReasoningVerdict
from localtable.errors import ConfigError
from localtable.record import RunRecord
from localtable.research.compare import NoRuns, collect, compare
from localtable.research.quality import quality
from localtable.research.render import (
    CompareFormat,
    QualityFormat,
    render_comparison,
    render_quality,
)
from localtable.research.rereading import check_rule
from localtable.research.scoreview import ScoreFormat, render_score
from localtable.research.scoring import score
from localtable.templates import TemplateSet

Judge = Callable[[list[RunRecord]], list[ReasoningVerdict]]


def title(what: str, targets: list[str]) -> str:
    """'Accuracy: arithmetic, study ...': the first three targets' names."""
    names = [Path(t).name for t in targets]
    return f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"


def score_report(
    targets: list[str], runs_dir: Path, fmt: ScoreFormat, answer_rule: str | None = None
) -> str:
    """The accuracy table (scoring.NothingToScore when no run has an answer key); with an
    answer rule, free-text replies read again by it (`score --answer-rule`)."""
    if answer_rule is not None:
        check_rule(answer_rule)  # before any record is read
    records, _ = collect(targets, runs_dir)
    scores = score(records, answer_rule=answer_rule)
    return render_score(scores, fmt, TemplateSet(), title("Accuracy", targets))


def comparison_report(targets: list[str], runs_dir: Path, fmt: CompareFormat) -> str:
    records, skipped = collect(targets, runs_dir)
    return render_comparison(compare(records, skipped), fmt, TemplateSet())


def quality_report(
    targets: list[str], runs_dir: Path, fmt: QualityFormat, judge: Judge | None = None
) -> str:
    """Each panel's quality metrics; `judge` (--judge-reasoning) reads each yes/no
    turn's reasoning with a model."""
    try:
        records, skipped = collect(targets, runs_dir)
    except NoRuns:
        raise ConfigError(
            f"nothing to measure in {', '.join(targets)}: no debate of it has a record yet"
        ) from None
    judged = judge(records) if judge is not None else None
    result = quality(records, skipped, judged)
    return render_quality(result, fmt, TemplateSet(), title("Quality", targets))
