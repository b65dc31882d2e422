"""A fake Speaker for fast protocol tests: queued replies, recorded calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from localtable.backends.base import (
    BackendCrashed,
    ChatMessage,
    TurnFailed,
    TurnRequest,
    TurnResult,
)
from localtable.config import Sampling
from localtable.record import PanelistRecord, RunRecord, SamplingRecord


@dataclass
class Call:
    panelist: str
    messages: list[ChatMessage]
    grammar: str
    seed: int
    sampling: SamplingRecord
    prefill: str = ""
    conversation: str = ""


@dataclass(frozen=True)
class Reply:
    """A scripted reply that ends other than by the model's own stop: "length" is a
    reply that max_tokens cut off (a plain str reply finishes with "stop")."""

    text: str
    finish_reason: str = "stop"


@dataclass
class FakeSpeaker:
    replies: dict[str, list[str | Reply | BaseException]]  # an exception is raised
    n_ctx: int = 4096
    chars_per_token: int = 4
    calls: list[Call] = field(default_factory=list)

    def count_tokens(self, panelist: str, messages: list[ChatMessage]) -> int:
        return sum(len(m.content) for m in messages) // self.chars_per_token + 8

    def context_size(self, panelist: str) -> int:
        return self.n_ctx

    def turn_order(
        self, round_no: int, panel: list[PanelistRecord], then: str | None
    ) -> list[PanelistRecord]:
        return panel

    def lanes(self, requested: int) -> int:
        """As SessionSpeaker.lanes, for a backend that says nothing: one at a time."""
        return requested or 1

    def generate(self, request: TurnRequest) -> TurnResult:
        panelist, messages = request.panelist, request.messages
        self.calls.append(
            Call(
                panelist,
                messages,
                request.grammar,
                request.seed,
                request.sampling,
                request.prefill,
                request.conversation,
            )
        )
        reply = self.replies[panelist].pop(0)
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, str):
            reply = Reply(reply)
        text = reply.text
        return TurnResult(
            prompt="\n".join(m.content for m in messages),
            prompt_tokens=self.count_tokens(panelist, messages),
            prompt_sha256="0" * 64,
            text=text,
            finish_reason=reply.finish_reason,
            completion_tokens=len(text) // 4,
            prompt_eval_tokens=self.count_tokens(panelist, messages),
            seconds=0.0,
        )


def sampling(**values: object) -> SamplingRecord:
    """The config's Sampling (its defaults and limits) as a record stores it."""
    return SamplingRecord.model_validate(Sampling.model_validate(values).model_dump())


SAMPLING_64 = sampling(max_tokens=64)


def make_record(
    names: list[str],
    rounds: int = 2,
    anonymous: bool = False,
    question: str = "Is open source good?",
) -> RunRecord:
    panelists = [
        PanelistRecord(
            index=i,
            name=n,
            label=f"Panelist {'ABC'[i]}" if anonymous else n,
            model="m",
            persona="",
            sampling=SAMPLING_64,
        )
        for i, n in enumerate(names)
    ]
    return RunRecord(
        run_id="test",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        question=question,
        panel="default",
        rounds=rounds,
        seed=7,
        anonymous=anonymous,
        template_date="2026-01-01",
        localtable_version="test",
        config_path="models.toml",
        panelists=panelists,
        summarizer=names[0],
    )


def crash() -> Exception:
    return BackendCrashed("engine process died with SIGSEGV (segmentation fault in llama.cpp)")


__all__ = ["FakeSpeaker", "Reply", "TurnFailed", "crash", "make_record"]
