"""`make bench`'s OpenAI-compatible column: the same debate through the openai backend,
on the /v1/chat/completions of the llama-servers the native column uses (one per
model of the panel, launch.py's flags). Its wall time is given over the native
server column's, repetition by repetition (issue #31's target: within 1.15x). Its
texts are not expected to equal the native ones: the turn's fields are asked for as
a JSON schema, not as localtable's grammar, and the server renders the prompt.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from localtable.backends.base import Seat, TurnResult
from localtable.backends.openai.backend import OpenAIBackend
from localtable.backends.openai.client import OpenAIClient
from localtable.backends.openai.source import OpenAISource
from localtable.bench import (
    ProcessUsage,
    Progress,
    RecordingSeat,
    Side,
    new_tokens,
    servers_usage,
)
from localtable.config import Config, LoadedConfig, ModelSpec
from localtable.record import RunRecord
from localtable.session.run import DebateRequest, run_debate
from localtable.session.session import Session
from localtable.templates import TemplateSet

OPENAI_TARGET = 1.15  # the OpenAI-compatible column's wall time over the native one's
LABEL = "localtable -> llama-server /v1"


class RecordingOpenAIBackend(OpenAIBackend):
    """An OpenAIBackend whose seats keep every TurnResult, summary attempts included."""

    def __init__(self) -> None:
        super().__init__()
        self.results: list[TurnResult] = []

    def seat(self, model: str) -> Seat:
        return RecordingSeat(super().seat(model), self.results)


def openai_config(loaded: LoadedConfig, urls: dict[str, str]) -> LoadedConfig:
    """models.toml with each served model (name -> its llama-server's URL) asked for on
    that server's /v1, by the model id the server reports; everything else as it is."""
    models = dict(loaded.config.models)
    for name, url in urls.items():
        (entry,) = OpenAIClient(url).models()[:1]
        source = OpenAISource(kind="openai", url=f"{url}/v1", model=entry.id)
        kept = models[name].model_dump(exclude_unset=True, exclude={"source", "chat"})
        models[name] = ModelSpec.model_validate({**kept, "source": source})
    config = loaded.config
    served = Config(debate=config.debate, models=models, panels=config.panels)
    return LoadedConfig(path=loaded.path, config=served)


def run_openai(
    served: LoadedConfig, panel: str, rounds: int, seed: int, runs_dir: Path, pids: list[int]
) -> tuple[Side, RunRecord]:
    """The debate through the openai backend on running llama-servers (process ids
    `pids`: their CPU time during the debate is the side's)."""
    req = DebateRequest(
        question=served.config.debate.question, panel=panel, rounds=rounds, seed=seed,
        runs_dir=runs_dir,
    )  # fmt: skip
    backend = RecordingOpenAIBackend()
    templates = TemplateSet()
    before = servers_usage(pids)
    started = time.monotonic()
    with Session(templates, served) as session:
        session.add_backend(backend)
        _, record = run_debate(req, served, templates, Progress(LABEL), session)
    wall = time.monotonic() - started
    after = servers_usage(pids)
    results = backend.results
    thrown = record.summary.rejected_generations if record.summary is not None else []
    side = Side(
        name=LABEL,
        wall_seconds=wall,
        usage=ProcessUsage(
            peak_rss_bytes=after.peak_rss_bytes,
            cpu_seconds=after.cpu_seconds - before.cpu_seconds,
        ),
        texts=[r.text for r in results],
        prompt_tokens=sum(r.prompt_tokens for r in results),
        prompt_eval_tokens=sum(r.prompt_eval_tokens for r in results),
        completion_tokens=sum(r.completion_tokens for r in results),
        generate_seconds=sum(r.seconds for r in results),
        prompt_eval_seconds=sum(r.prompt_eval_seconds for r in results),
        decode_seconds=sum(r.decode_seconds for r in results),
        kv_caches=len(pids),
        transcript_sha256=record.transcript_sha256,
        new_tokens=new_tokens(record),
        retries=backend.retries,
        sampling_in_decode=True,
        rejected_summaries=len(thrown),
        rejected_tokens=sum(g.completion_tokens for g in thrown),
        rejected_seconds=sum(g.seconds for g in thrown),
    )
    return side, record


def openai_lines(repeats: list[list[Side]], native: int, openai: int) -> list[str]:
    """The OpenAI-compatible column against the native server column: wall time per
    repetition, and how the work compares."""
    pairs = [r for r in repeats if len(r) > max(native, openai)]
    if not pairs:
        return []
    ratios = [r[openai].wall_seconds / r[native].wall_seconds for r in pairs]
    middle = f"{statistics.median(ratios):.2f}x"
    if len(ratios) > 1:
        middle += f" ({min(ratios):.2f}-{max(ratios):.2f})"
    first = pairs[0]
    lines = [
        f"llama-server /v1 (OpenAI-compatible) / native llama-server wall time: {middle} "
        f"(target: within {OPENAI_TARGET:.2f}x)",
        f"  /v1 generated {first[openai].completion_tokens:,} tokens, native "
        f"{first[native].completion_tokens:,} (JSON fields, not localtable's grammar: "
        "the texts differ)",
    ]
    if first[openai].retries:
        lines.append(f"llama-server /v1 requests sent again: {first[openai].retries}")
    return lines
