"""A backend for tests, added the way any backend is: this module plus its registration.

It runs no model: each seat answers in the shape the grammar asks for, and the
backend counts how often each model was loaded. It runs models of its own source
kind, `scripted` (`source = { kind = "scripted" }` in models.toml), which nothing
in localtable/ knows of: importing this module registers it, as a plugin's entry
point would (tests/test_seam.py).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Literal

from localtable import backends
from localtable.backends.base import (
    Backend,
    ChatMessage,
    PanelModels,
    Prepared,
    TurnRequest,
    TurnResult,
)
from localtable.config import LoadedConfig, ModelSpec, Source
from localtable.record import MemoryRecord, ModelRecord, PanelistRecord, RunRecord
from localtable.templates import TemplateSet
from tests.scripted import scripted_reply

# model name -> how many times it was loaded, over every instance (a test resets it)
LOADS: Counter[str] = Counter()
OPENED_WITH: list[MemoryRecord | None] = []
# A folder: each process's second generation writes <pid> there and waits until a file
# `go` appears (or its parent is gone), so that a test can kill a worker mid-debate.
HOLD = "LOCALTABLE_FAKE_HOLD"
CALLS: Counter[int] = Counter()  # pid -> generations
GROUPS: list[list[str]] = []  # each batched group of one model, as generate_group got it


def hold() -> None:
    folder = os.environ.get(HOLD)
    CALLS[os.getpid()] += 1
    if not folder or CALLS[os.getpid()] != 2:
        return
    parent = os.getppid()
    (Path(folder) / str(os.getpid())).touch()
    while not (Path(folder) / "go").exists():
        if os.getppid() != parent:
            raise SystemExit(0)  # its batch was killed: an orphan stops
        time.sleep(0.01)


def reply_for(request: TurnRequest, voice: str) -> str:
    return scripted_reply(request.grammar, f"{request.panelist} {voice}")


class FakeSeat:
    def __init__(self, backend: FakeBackend, n_ctx: int, voice: str) -> None:
        self.backend = backend
        self.n_ctx = n_ctx
        self.voice = voice

    def context_size(self) -> int:
        return self.n_ctx

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return sum(len(m.content) for m in messages) // 4 + 8

    def count_text_tokens(self, text: str) -> int:
        return len(text) // 4

    def generate(self, request: TurnRequest) -> TurnResult:
        hold()
        text = reply_for(request, self.voice)
        n = self.count_tokens(request.messages)
        return TurnResult(
            prompt="\n".join(m.content for m in request.messages),
            prompt_tokens=n,
            prompt_sha256="0" * 64,
            text=text,
            token_ids=[ord(c) for c in text],
            finish_reason="stop",
            completion_tokens=len(text) // 4,
            prompt_eval_tokens=n,
            seconds=0.0,
        )


class ScriptedSource(Source):
    """A model that answers from a script (scripted.py): no file, no server."""

    kind: Literal["scripted"]
    voice: str = "says yes"  # how each answer goes on after the panelist's name

    def label(self) -> str:
        return f"scripted ({self.voice})"


def voice_of(spec: ModelSpec) -> str:
    assert isinstance(spec.source, ScriptedSource), spec.source  # the registry's promise
    return spec.source.voice


class FakeBackend(Backend):
    name = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.loaded: dict[str, ModelRecord] = {}
        self.panel: list[str] = []

    def prepare(self, panel: PanelModels) -> Prepared:
        models = [
            ModelRecord(
                name=name,
                backend=self.name,
                source=spec.source.label(),
                chat_mode="template",
                n_ctx=spec.n_ctx,
                settings={"n_ctx": spec.n_ctx, "voice": voice_of(spec)},
            )
            for name, spec in panel.specs.items()
        ]
        memory = MemoryRecord(loading="together", kv_caches={m.name: 1 for m in models})
        return Prepared(models=models, memory=memory)

    def open(
        self,
        models: list[ModelRecord],
        memory: MemoryRecord | None,
        *,
        reuse_prefix: bool,
        templates: TemplateSet,
        today: str,
        loaded: LoadedConfig | None,
        allow_urls: frozenset[str] = frozenset(),
    ) -> list[ModelRecord]:
        OPENED_WITH.append(memory)
        for m in models:
            if self.loaded.get(m.name) != m:
                LOADS[m.name] += 1
                self.loaded[m.name] = m
        return models

    def seat(self, model: str) -> FakeSeat:
        record = self.loaded[model]
        return FakeSeat(self, record.n_ctx, str(record.settings.get("voice", "says yes")))

    def turn_order(
        self, round_no: int, panel: list[PanelistRecord], then: str | None
    ) -> list[PanelistRecord]:
        self.panel = [p.name for p in panel]
        return panel

    def generate_group(self, turns: list[tuple[str, TurnRequest]]) -> list[TurnResult]:
        """--decode batched: a step's requests on one model decoded together, as the
        llama.cpp backend does. As there, the text depends on the group: each answer
        names how many sequences it shared its model's step with."""
        by_model: dict[str, list[str]] = {}
        for model, request in turns:
            by_model.setdefault(model, []).append(request.panelist)
        GROUPS.extend(names for names in by_model.values() if len(names) > 1)
        out = []
        for model, request in turns:
            names = by_model[model]
            result = self.seat(model).generate(request)
            if len(names) > 1:
                voice = f"{self.seat(model).voice} in {len(names)}"
                text = reply_for(request, voice)
                result = result.model_copy(
                    update={"text": text, "token_ids": [ord(c) for c in text],
                            "decoded_with": names}
                )  # fmt: skip
            out.append(result)
        return out

    def describe(self) -> dict[str, object]:
        return {"version": "fake-1"}

    def replay_differences(
        self,
        record: RunRecord,
        *,
        loaded: LoadedConfig | None = None,
        allow_urls: frozenset[str] = frozenset(),
    ) -> list[str]:
        return []

    def close(self) -> None:
        super().close()
        self.loaded.clear()


backends.register(
    "fake",
    "tests.fakebackend:FakeBackend",
    sources={"scripted": "tests.fakebackend:ScriptedSource"},
)
