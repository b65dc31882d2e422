"""The protocol's Speaker backed by the engine worker: format, then generate."""

from __future__ import annotations

import hashlib
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict

from localtable.chatformat import ChatMessage, FormattedPrompt, format_prompt
from localtable.config import Sampling
from localtable.engine import Engine
from localtable.engine_api import GenerateRequest, ModelInfo
from localtable.record import Generation, PanelistRecord
from localtable.templates import TemplateSet


class Seat(BaseModel):
    """Where one panelist's words come from: a loaded model and how to prompt it."""

    model_config = ConfigDict(frozen=True)
    model_key: str
    mode: Literal["template", "completion"]
    info: ModelInfo


class EngineSpeaker:
    def __init__(
        self,
        engine: Engine,
        seats: dict[str, Seat],
        today: date,
        templates: TemplateSet,
        reuse_prefix: bool = False,
    ) -> None:
        self.engine = engine
        self.seats = seats
        self.today = today
        self.templates = templates
        self.reuse_prefix = reuse_prefix

    def _format(self, panelist: str, messages: list[ChatMessage]) -> FormattedPrompt:
        seat = self.seats[panelist]
        return format_prompt(seat.mode, seat.info, messages, self.today, self.templates)

    def count_tokens(self, panelist: str, messages: list[ChatMessage]) -> int:
        prompt = self._format(panelist, messages)
        return self.engine.count_tokens(
            self.seats[panelist].model_key, prompt.pieces, prompt.add_bos
        )

    def context_size(self, panelist: str) -> int:
        return self.seats[panelist].info.n_ctx

    def turn_order(
        self, round_no: int, panel: list[PanelistRecord], then: str | None
    ) -> list[PanelistRecord]:
        """The order of a round's turns. Turns of one round are independent (each reads
        only earlier rounds), so any order gives the same transcript. With models
        loaded one at a time, a round takes each model once: the loaded one first,
        and last the model of `then`, who speaks next (the summarizer)."""
        if not self.engine.one_at_a_time:
            return panel
        groups: dict[str, list[PanelistRecord]] = {}
        for p in panel:
            groups.setdefault(self.seats[p.name].model_key, []).append(p)
        keys = sorted(groups, key=lambda k: k not in self.engine.active)  # stable
        last = self.seats[then].model_key if then is not None else None
        if last in groups and len(keys) > 1:
            keys = [k for k in keys if k != last] + [last]
        return [p for k in keys for p in groups[k]]

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
        seat = self.seats[panelist]
        prompt = self._format(panelist, messages)
        self.engine.activate(seat.model_key)
        result = self.engine.generate(
            GenerateRequest(
                model_key=seat.model_key,
                pieces=prompt.pieces,
                add_bos=prompt.add_bos,
                grammar=grammar,
                seed=seed,
                sampling=sampling,
                stop=prompt.stop,
                reuse_prefix=self.reuse_prefix,
                conversation=panelist,
            )
        )
        return Generation(
            seed=seed,
            sampling=sampling,
            prompt=prompt.text,
            prompt_tokens=result.prompt_tokens,
            prompt_sha256=result.prompt_sha256,
            shortened=[*shortened, *prompt.notes],
            grammar_sha256=hashlib.sha256(grammar.encode("utf-8")).hexdigest(),
            raw_output=result.text,
            completion_tokens=result.completion_tokens,
            finish_reason=result.finish_reason,
            prompt_eval_tokens=result.prompt_eval_tokens,
            seconds=round(result.seconds, 3),
        )
