"""A fake Speaker for fast protocol tests: queued replies, recorded calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from localtable.chatformat import ChatMessage
from localtable.config import Sampling
from localtable.engine_api import EngineFailure
from localtable.record import Generation, PanelistRecord, RunRecord


@dataclass
class Call:
    panelist: str
    messages: list[ChatMessage]
    grammar: str
    seed: int
    sampling: Sampling
    shortened: list[str]


@dataclass
class FakeSpeaker:
    replies: dict[str, list[str | Exception]]
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

    def generate(
        self,
        panelist: str,
        messages: list[ChatMessage],
        *,
        grammar: str,
        seed: int,
        sampling: Sampling,
        shortened: list[str],
    ) -> Generation:
        self.calls.append(Call(panelist, messages, grammar, seed, sampling, shortened))
        reply = self.replies[panelist].pop(0)
        if isinstance(reply, Exception):
            raise reply
        return Generation(
            seed=seed,
            sampling=sampling,
            prompt="\n".join(m.content for m in messages),
            prompt_tokens=self.count_tokens(panelist, messages),
            prompt_sha256="0" * 64,
            shortened=shortened,
            raw_output=reply,
            completion_tokens=len(reply) // 4,
            finish_reason="stop",
        )


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
            sampling=Sampling(max_tokens=64),
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
    from localtable.engine import EngineCrashed

    return EngineCrashed("engine process died with SIGSEGV (segmentation fault in llama.cpp)")


__all__ = ["EngineFailure", "FakeSpeaker", "crash", "make_record"]
