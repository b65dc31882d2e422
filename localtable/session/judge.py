"""Does a turn's answer say what its own reasoning concludes? Read by a model.

Code can read an answer's leading "Yes" or "No", but not what a paragraph of
reasoning concludes (Qwen 0.5B: "Yes, because cities should not ban private
cars ..."). `localtable quality --judge-reasoning` asks each run's summarizer
model, the one that labels its positions, which answer a turn's reasoning
concludes, shown without the answer, under a grammar (Yes, No or Neither;
prompts/stance*.j2), greedily and with a seed derived from the run's (debate/seeds.py), for every
ok turn whose answer opens with yes or no; research/quality.py counts the
verdicts. The rest of `localtable quality` reads records only: this module loads
that model (from the record, as resume does), so only the flag imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from localtable.backends.base import ChatMessage, TurnFailed, TurnRequest
from localtable.debate.answers import ReasoningVerdict, stance
from localtable.debate.protocol import MODERATOR
from localtable.debate.seeds import Seeds
from localtable.record import RunRecord
from localtable.session.session import Session
from localtable.templates import TemplateSet

JUDGE_MAX_TOKENS = 4  # "Neither" is at most a few tokens
VERDICTS: dict[str, Literal["yes", "no", "neither"]] = {
    "Yes": "yes",
    "No": "no",
    "Neither": "neither",
}
FINISHED = ("complete", "failed")

Progress = Callable[[str], None]


def _judge_record(
    session: Session, record: RunRecord, templates: TemplateSet
) -> list[ReasoningVerdict]:
    turns = [
        t
        for t in record.turns
        if t.status == "ok" and t.parsed is not None and t.parsed.reasoning
        if stance(t.parsed.answer) is not None
    ]
    if not turns:
        return []
    judge = next(p for p in record.panelists if p.name == record.summarizer)
    model = next(m for m in record.models if m.name == judge.model)
    # only the summarizer's model is loaded, as the record has it
    alone = record.model_copy(update={"models": [model], "panelists": [judge]})
    speaker = session.open(alone, describe=False)
    system = templates.render("summary_system.j2").strip()
    grammar = templates.render("stance.gbnf.j2")
    sampling = judge.sampling.model_copy(
        update={"max_tokens": JUDGE_MAX_TOKENS, "temperature": 0.0}
    )
    seeds = Seeds.of(record)
    out = []
    for t in turns:
        assert t.parsed is not None
        question = templates.render(
            "stance.j2", question=record.question, reasoning=t.parsed.reasoning
        ).strip()
        request = TurnRequest(
            panelist=judge.name,
            conversation=MODERATOR,
            messages=[
                ChatMessage(role="system", content=system),
                ChatMessage(role="user", content=question),
            ],
            grammar=grammar,
            seed=seeds.stage(f"judge{t.round}/{t.panelist}", 0),
            sampling=sampling,
        )
        concluded: Literal["yes", "no", "neither"] | None = None
        error = ""
        try:
            text = speaker.generate(request).text.strip()
            concluded = VERDICTS.get(text)
            error = "" if concluded else f"answered {text[:40]!r}"
        except TurnFailed as exc:
            error = str(exc)
        out.append(
            ReasoningVerdict(
                run_id=record.run_id,
                panel=record.panel,
                round=t.round,
                panelist=t.panelist,
                answer=t.parsed.answer,
                concluded=concluded,
                error=error,
            )  # fmt: skip
        )
    return out


def judge_reasoning(
    records: list[RunRecord], templates: TemplateSet, progress: Progress
) -> list[ReasoningVerdict]:
    """The verdicts over the finished runs' yes/no answers, run by run, on one
    Session (a model stays loaded from one run to the next)."""
    done = [r for r in records if r.status in FINISHED and r.models]
    verdicts: list[ReasoningVerdict] = []
    with Session(templates) as session:
        for i, record in enumerate(done, 1):
            progress(f"Reading the reasoning of {record.run_id} ({i} of {len(done)})")
            verdicts += _judge_record(session, record, templates)
    return verdicts
