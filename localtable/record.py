"""The run record: everything a run did, versioned, written as it goes.

runs/<id>/record.json is rewritten atomically after every turn, so Ctrl-C,
a crash or a full disk leaves the last good version on disk. Renderers read
only this record.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from localtable.errors import RecordError, RecordWriteError
from localtable.record_upgrade import TARGET_VERSION, upgrade_v2, upgrade_v3, upgrade_v4
from localtable.runlock import lock_holder
from localtable.storage import StorageError, read_versioned, remove_stale_temps, write_atomic

# 2 added `memory` and `summary.rejected`. 3 is backend-neutral: each model names the
# backend that ran it, with that backend's own settings; `backends` and `machine`
# replace the llama.cpp-only `engine`; sampling is stored as it was (no config
# limits); turns and the summary keep the display limits that applied; generations
# keep their token ids; rejected summary attempts keep their generations. Versions
# 1 and 2 are upgraded on reading (record_upgrade.py). 4 makes open positions explicit:
# the labelled positions (`positions`, `labelings`), each turn's position letter and
# whether it changed, and the order each turn's fields were generated in (reasoning
# first since 4; versions up to 3 generated the answer first). Fields added to 4 later
# are optional with an empty default (`decode`, `Generation.batch`, `reasoning_cut`,
# `samples`, `decode_group`, `memory.batched_bytes`, ...), so a record written before
# them reads unchanged, with no upgrade step; in 5 they are fields like any other.
# 5 derives every seed from the question too (`seed_scheme` "question",
# debate/seeds.py): up to 4 a seat drew the same seeds on every question of a batch.
# Version 4 reads as 5 with `seed_scheme` "run", the seeds it was run with, so its
# resume and replay stay byte-identical.
SCHEMA_VERSION = 5
READABLE_VERSIONS = (1, 2, 3, 4, 5)
RECORD_FILE = "record.json"
# A study's shipped copy of a finished record: gzip, deterministic (research/studypack.py).
PACKED_RECORD_FILE = "record.json.gz"
# A run id names the run's folder: one path component (`replay` writes <id>-replay-...
# next to the runs it reads, and records are shared, so a record must not name "../x").
RUN_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
# A record is shared, so its own numbers are input too: a record that says 10**9 rounds
# must be refused, not rendered round by round. The bounds lie far above what
# localtable writes (models.toml allows 10 rounds, 8 panelists, 8,192 tokens a turn), so
# a later, tighter config never makes an old record unreadable.
RECORD_MAX_BYTES = 256 << 20
MAX_ROUNDS = 100
MAX_PANELISTS = 64
MAX_TURNS = 2 * MAX_ROUNDS * MAX_PANELISTS  # interrupted turns are kept beside their reruns
MAX_TEXT = 4_000_000  # characters of one prompt or output: 262,144 tokens of context and more
MAX_TOKENS = 1_000_000  # token ids of one generation
MAX_NAME = 1_000
MAX_GROUP = 64  # debates decoded together (batch --group)


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplingRecord(Frozen):
    """Sampling as a run used it. Unlike the config's Sampling it has no validation
    limits: tightening a limit later must not make old records unreadable."""

    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    typical_p: float
    frequency_penalty: float
    presence_penalty: float
    max_tokens: int


class ModelRecord(Frozen):
    """A model as the run used it: which backend ran it, what identifies it there, and
    that backend's own settings (stored as the backend described them)."""

    name: str
    backend: str = Field(description="the backend that ran it, e.g. llamacpp")
    source: str = Field(description="where the model came from, in words")
    sha256: str | None = Field(default=None, description="the model file, where there is one")
    size: int | None = None
    architecture: str = ""
    chat_mode: Literal["template", "completion"]
    chat_template_sha256: str | None = None
    n_ctx: int = Field(description="effective context")
    bos_token: str = ""
    eos_token: str = ""
    load_seconds: float = 0.0
    settings: dict[str, JsonValue] = Field(
        default_factory=dict, description="the backend's settings that change numbers"
    )


class MachineRecord(Frozen):
    """The machine and Python the run's process ran on."""

    python: str
    platform: str
    cpu_flags: list[str] = Field(default_factory=list)


class PanelistRecord(Frozen):
    index: int = Field(ge=0, lt=MAX_PANELISTS)
    name: str = Field(max_length=MAX_NAME)
    label: str = Field(description="how peers see this panelist: its name, or 'Panelist A'")
    model: str
    persona: str
    sampling: SamplingRecord


class ParsedTurn(Frozen):
    """The structured part of a turn, extracted under a grammar and validated."""

    answer: str
    stance: Literal["maintain", "change"] | None = None  # None in round 1
    influenced_by: list[str] = Field(default_factory=list)  # panelist names
    reasoning: str = ""
    position_claim: str | None = Field(
        default=None,
        description="open questions, rounds 2+: the position letter the panelist named, or 'new'",
    )
    order: list[str] = Field(
        default_factory=list,
        description="the fields in the order they were generated, e.g. reasoning, answer",
    )


TurnStatus = Literal["ok", "failed", "interrupted"]


class DecodeBatch(Frozen):
    """Which generations were decoded together (`--decode batched`): llama.cpp is not
    batch-invariant, so this decides the text as much as the seed does. Replay and
    resume rebuild it (docs/architecture.md, "Decoding a round together")."""

    step: int = Field(
        description="the round's decode group: 1 for its turns' first generations, "
        "2 for the continuations the first group's left to make, ..."
    )
    members: list[str] = Field(description="the panelists decoded together, in sequence order")


class Generation(Frozen):
    """One call to the engine: what went in, what came out, how long it took."""

    seed: int
    sampling: SamplingRecord
    prompt: str = Field(max_length=MAX_TEXT)
    prompt_tokens: int
    prompt_sha256: str = Field(description="sha256 of the prompt's token ids")
    shortened: list[str] = Field(default_factory=list, description="context rules applied")
    grammar_sha256: str | None = None
    prefill: str = Field(
        default="", description="the start of the reply given to the model to continue"
    )
    raw_output: str = Field(default="", max_length=MAX_TEXT)
    token_ids: list[int] = Field(
        default_factory=list, max_length=MAX_TOKENS, description="the generated tokens"
    )
    completion_tokens: int = 0
    finish_reason: str | None = None
    prompt_eval_tokens: int = 0
    seconds: float = 0.0
    batch: DecodeBatch | None = Field(
        default=None, description="the decode group it ran in; None: decoded on its own"
    )


# The end of a sentence: its mark, any closing quotes or brackets, then a space or the end.
SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s|$)")


def mark_cut(text: str) -> str:
    """Text that a length cap stopped, marked: ended at its last full sentence when that
    keeps a third of it or more, else where it stopped, then "…"."""
    text = text.strip().removesuffix("…").rstrip()
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    if ends and ends[-1] >= len(text) // 3:
        return text[: ends[-1]] + " …"
    return text.rstrip(" ,;:-–") + "…"


class TurnRecord(Frozen):
    """One panelist's turn of one round. Its text is the generation's output, or,
    after a cut-off, the continuation's prefill plus its output (`text`)."""

    round: int = Field(ge=1, le=MAX_ROUNDS)
    panelist: str = Field(max_length=MAX_NAME)
    status: TurnStatus
    error: str | None = None
    generation: Generation | None = None
    continuation: Generation | None = Field(
        default=None,
        description="when max_tokens cut the generation off: the rest of the turn, "
        "generated after the whole fields kept from it (see Generation.prefill)",
    )
    parsed: ParsedTurn | None = None
    changed_mind_stated: bool | None = None
    answer_changed: bool | None = None
    position: str | None = Field(
        default=None, description="the letter of the labelled position this turn holds"
    )
    position_changed: bool | None = Field(
        default=None, description="rounds 2+: a different position from its previous turn"
    )
    answer_max_chars: int | None = Field(
        default=None,
        ge=0,
        le=MAX_TEXT,
        description="where the grammar ended the answer line (for display)",
    )
    reasoning_cut: bool | None = Field(
        default=None,
        description="a length cap (the grammar's character bound, or max_tokens) stopped "
        "the reasoning; None in records before it was kept",
    )
    answer_cut: bool | None = Field(
        default=None,
        description="the grammar's character bound stopped the answer line (an open "
        "question's; debate/answers.py answer_cut); None in records before it was kept",
    )

    @property
    def reasoning_shown(self) -> str:
        """The reasoning as layouts and peers see it: one a length cap stopped ends at
        its last full sentence, or mid-sentence, and with "…" either way, so nothing is
        cut silently. The record keeps the reasoning as generated."""
        text = self.parsed.reasoning if self.parsed is not None else ""
        return mark_cut(text) if self.reasoning_cut else text

    @property
    def answer_shown(self) -> str:
        """The answer as layouts and peers see it: one the grammar's bound stopped ends
        with "…" (mark_cut), as a cut reasoning does. The record keeps it as generated."""
        text = self.parsed.answer if self.parsed is not None else ""
        return mark_cut(text) if self.answer_cut else text

    @property
    def text(self) -> str:
        """The turn as the model wrote it (what later rounds show it as its own reply)."""
        if self.continuation is not None:
            return self.continuation.prefill + self.continuation.raw_output
        return self.generation.raw_output if self.generation else ""


class PositionLabel(Frozen):
    """A distinct position of an open debate, labelled when it first appeared."""

    letter: str = Field(pattern=r"^[A-Z]$")
    label: str = Field(description="a short label, generated under a grammar")
    round: int = Field(description="the round whose answers introduced it")


class LabelingRecord(Frozen):
    """The step after a round that gives the round's new open positions their labels
    (after round 1: every answer; later: only answers that claimed a new position)."""

    round: int = Field(ge=1, le=MAX_ROUNDS, description="the round whose answers were labelled")
    labeller: str = Field(description="the panelist whose model wrote the labels")
    status: TurnStatus
    error: str | None = None
    generation: Generation | None = None  # the attempt kept
    rejected: list[str] = Field(default_factory=list)
    rejected_generations: list[Generation] = Field(default_factory=list)
    assigned: dict[str, str] = Field(
        default_factory=dict, description="panelist name -> position letter"
    )


class PositionGroup(Frozen):
    position: str
    members: list[str]


class Consensus(Frozen):
    kind: Literal["all", "majority", "none"]
    agreeing: int
    total: int
    line: str


# A summary's lines, as the record names them
SummaryLine = Literal["summary", "counterpoint", "headline"]


class SummaryRecord(Frozen):
    status: TurnStatus
    summarizer: str
    error: str | None = None
    generation: Generation | None = None  # the attempt kept (its seed is in it)
    rejected: list[str] = Field(
        default_factory=list, description="unusable attempts, each with its seed and why"
    )
    rejected_generations: list[Generation] = Field(
        default_factory=list,
        description="the unusable attempts' generations: work done and thrown away",
    )
    headline: str = ""
    groups: list[PositionGroup] = Field(default_factory=list)
    counterpoint: str = ""
    summary: str = ""
    consensus: Consensus
    line_max_chars: int | None = Field(
        default=None,
        ge=0,
        le=MAX_TEXT,
        description="where the grammar ended a summary line (for display)",
    )
    cut: list[SummaryLine] | None = Field(
        default=None,
        description="the lines the grammar's bound stopped mid-sentence (debate/parsing.py "
        "line_cut); None in records before it was kept",
    )

    def line_cut(self, line: SummaryLine) -> bool:
        """Whether a length cap stopped a line: `cut` where the record keeps it; before
        it, a headline or counterpoint at the grammar's line bound, or a summary that
        max_tokens ended."""
        if self.cut is not None:
            return line in self.cut
        if line == "summary":
            return bool(self.generation and self.generation.finish_reason == "length")
        limit = self.line_max_chars
        return limit is not None and len(getattr(self, line)) >= limit - 1

    def shown(self, line: SummaryLine) -> str:
        """A line as layouts show it: one a length cap stopped ends at its last full
        sentence, or mid-sentence, and with "…" either way (mark_cut), as a cut answer
        does. The record keeps the line as generated."""
        text: str = getattr(self, line)
        return mark_cut(text) if text and self.line_cut(line) else text


RunStatus = Literal["running", "complete", "failed", "interrupted"]


class MemoryRecord(Frozen):
    """How the models were held in memory (localtable/backends/llamacpp/memory.py)."""

    budget_bytes: int | None = None
    estimated_bytes: dict[str, int] = Field(
        default_factory=dict, description="model -> file + its KV caches + compute buffers"
    )
    kv_caches: dict[str, int] = Field(default_factory=dict, description="model -> KV caches")
    batched_bytes: dict[str, int] = Field(
        default_factory=dict,
        description="model -> the context a batched step makes on it (--decode batched: its "
        "turns' KV cache and compute buffer), counted in estimated_bytes",
    )
    loading: Literal["together", "one at a time"] = "together"
    note: str = ""


QuestionKind = Literal["open", "choice", "number"]
# How each generation's seed derives from the run seed (debate/seeds.py): "question",
# from the question too (version 5); "run", the same on every question (versions 1-4).
SeedScheme = Literal["question", "run"]


# Free text's answer rules, by name (debate/answers.py's ANSWER_RULES reads them).
AnswerRuleName = Literal["last_number", "boxed_or_last_number"]


class ProtocolSettings(Frozen):
    """How a debate runs: a protocol's protocol.toml (localtable/protocols.py reads and
    checks it; docs/protocol.md). The defaults are the roundtable protocol's, which a
    record without a protocol ran. No limits here: a record keeps what it ran."""

    description: str = ""
    system_prompt: bool = Field(default=True, description="a system message (system.j2)")
    personas: bool = Field(default=True, description="the panelists' personas in it")
    peers: Literal["panel", "named", "anonymous"] = Field(
        default="panel", description="how peers are shown: as the panel's `anonymous` says, "
        "by name, or as 'Panelist A/B/...'",
    )  # fmt: skip
    peer_view: Literal["full", "answer"] = Field(
        default="full", description="what a later round shows of each peer's reply: all "
        "of it, or its answer only",
    )  # fmt: skip
    output: Literal["structured", "free"] = Field(
        default="structured", description="a turn under the grammar (turn.gbnf.j2), or "
        "free text whose answer the answer rule reads",
    )  # fmt: skip
    answer_rule: Literal[""] | AnswerRuleName = Field(
        default="", description="free text: how its answer is read (debate/answers.py)"
    )
    max_tokens: list[int] = Field(
        default_factory=list,
        description="per round (the last one for the rounds after); empty: each "
        "panelist's sampling.max_tokens",
    )
    summary: bool = Field(default=True, description="the summarizer writes a summary")
    labels: bool = Field(default=True, description="an open question's positions labelled")

    def round_max_tokens(self, round_no: int) -> int | None:
        """The max_tokens of a round's turns, or None: the panelist's own."""
        if not self.max_tokens:
            return None
        return self.max_tokens[min(round_no, len(self.max_tokens)) - 1]


class ProtocolRecord(Frozen):
    """The protocol a run ran: its name, where it was read, and its settings. The sha256
    of each of its files is in RunRecord.templates, with the other templates'."""

    name: str = Field(max_length=MAX_NAME)
    source: str = Field(
        max_length=MAX_NAME, description='"built-in", or the folder it was read from'
    )
    settings: ProtocolSettings


class RunRecord(Frozen):
    schema_version: Literal[5] = 5  # SCHEMA_VERSION
    run_id: str = Field(pattern=RUN_ID)
    created_at: datetime
    finished_at: datetime | None = None
    status: RunStatus = "running"
    error: str | None = None
    question: str = Field(max_length=MAX_TEXT)
    # Scored questions (batches): absent in older records, which read as open questions.
    question_id: str | None = None
    question_kind: QuestionKind = "open"
    options: list[str] = Field(default_factory=list, description="a choice question's options")
    answer_key: str | None = Field(default=None, description="the correct option or number")
    panel: str
    rounds: int = Field(ge=1, le=MAX_ROUNDS)
    seed: int
    seed_scheme: SeedScheme = Field(
        default="question",
        description="how each generation's seed derives from `seed` (debate/seeds.py): "
        "'question', from the question's sha256 too (version 5); 'run', from the run seed, "
        "step and seat alone, the same on every question (records up to version 4)",
    )
    anonymous: bool
    template_date: str = Field(description="the date chat templates see (pinned)")
    reuse_prefix: bool = Field(default=False, description="KV prefix reuse (same output)")
    decode: Literal["sequential", "batched"] = Field(
        default="sequential",
        description="a round's turns generated one by one, or decoded together in groups "
        "(Generation.batch); the text depends on it",
    )
    decode_group: list[str] = Field(
        default_factory=list,
        max_length=MAX_GROUP,
        description="a batch's --group: the debates (run ids, this one among them) whose "
        "rounds were decoded together with this one's; their text depends on each other, "
        "so it resumes and replays only with them (`localtable batch`); empty: alone",
    )
    memory: MemoryRecord | None = None  # absent in older records
    localtable_version: str
    config_path: str
    machine: MachineRecord | None = None
    backends: dict[str, dict[str, JsonValue]] = Field(
        default_factory=dict, description="backend name -> its own description (build, ...)"
    )
    models: list[ModelRecord] = Field(default_factory=list, max_length=MAX_PANELISTS)
    panelists: list[PanelistRecord] = Field(max_length=MAX_PANELISTS)
    summarizer: str
    protocol: ProtocolRecord | None = Field(
        default=None, description="the debate protocol; None: roundtable (older records)"
    )
    templates: dict[str, str] = Field(
        default_factory=dict, description="template -> sha256, the protocol's files included"
    )
    turns: list[TurnRecord] = Field(default_factory=list, max_length=MAX_TURNS)
    samples: list[TurnRecord] = Field(
        default_factory=list,
        max_length=MAX_TURNS,
        description="vote mode: more independent round-1 answers, each a seat's round-1 "
        "prompt generated again with a seed of its own, which no peer sees; a seat's "
        "samples, in this order, follow its round-1 turn (sample 0). `score` builds "
        "SC@k (a majority of k independent answers) from them",
    )
    vote: int = Field(
        default=0,
        ge=0,
        le=MAX_TURNS,
        description="vote mode: k of SC@k, the independent answers drawn in all (each "
        "seat's round-1 turn and its samples, k / seats a seat); 0: none",
    )
    positions: list[PositionLabel] = Field(
        default_factory=list,
        max_length=26,
        description="open questions: the labelled positions, A first",
    )
    labelings: list[LabelingRecord] = Field(default_factory=list, max_length=MAX_ROUNDS)
    summary: SummaryRecord | None = None
    transcript_sha256: str | None = None

    @model_validator(mode="after")
    def _samples_are_round_one_of_a_seat(self) -> RunRecord:
        seats = {p.name for p in self.panelists}
        for s in self.samples:
            if s.round != 1 or s.panelist not in seats:
                raise ValueError(
                    f"sample of {s.panelist!r} in round {s.round}: samples are round-1 "
                    "answers of the panel's seats"
                )
        return self

    def label(self, letter: str | None) -> str | None:
        """The label of a position letter, or None."""
        return next((p.label for p in self.positions if p.letter == letter), None)

    def labeling(self, round_no: int) -> LabelingRecord | None:
        return next((x for x in self.labelings if x.round == round_no), None)

    def turn(self, round_no: int, panelist: str) -> TurnRecord | None:
        for t in self.turns:
            if t.round == round_no and t.panelist == panelist:
                return t
        return None

    def final_turns(self) -> list[TurnRecord]:
        """Each panelist's turn in the last round it has one."""
        out = []
        for p in self.panelists:
            mine = [t for t in self.turns if t.panelist == p.name]
            if mine:
                out.append(max(mine, key=lambda t: t.round))
        return out


def transcript_sha256(record: RunRecord) -> str:
    """sha256 of the canonical JSON of the turns and summary (documented in docs/record.md).

    Canonical form: {"turns": [...], "summary": {...}} with each turn reduced to
    round, panelist, status, raw output and parsed fields; keys sorted, separators
    (",", ":"), UTF-8, no timing fields, so the same outputs give the same hash.
    """

    def gen(g: Generation | None) -> dict[str, object] | None:
        if g is None:
            return None
        return {
            **({"prefill": g.prefill} if g.prefill else {}),
            "seed": g.seed,
            "prompt_sha256": g.prompt_sha256,
            "raw_output": g.raw_output,
            "finish_reason": g.finish_reason,
            "completion_tokens": g.completion_tokens,
        }

    def _parsed(p: ParsedTurn | None) -> dict[str, object] | None:
        # `order` is implied by the raw output; an absent claim (schema 3) is left out,
        # so older records keep their hash
        if p is None:
            return None
        out = p.model_dump(mode="json", exclude={"order"})
        if out["position_claim"] is None:
            del out["position_claim"]
        return out

    body: dict[str, object] = {
        "turns": [
            {
                "round": t.round,
                "panelist": t.panelist,
                "status": t.status,
                "generation": gen(t.generation),
                **({"continuation": gen(t.continuation)} if t.continuation else {}),
                "parsed": _parsed(t.parsed),
            }
            for t in record.turns
        ],
        "summary": None
        if record.summary is None
        else {
            "status": record.summary.status,
            "generation": gen(record.summary.generation),
            "headline": record.summary.headline,
            "counterpoint": record.summary.counterpoint,
            "summary": record.summary.summary,
            "groups": [g.model_dump(mode="json") for g in record.summary.groups],
            "consensus": record.summary.consensus.line,
        },
    }
    if record.positions or record.labelings:  # schema 4, open questions
        body["positions"] = [p.model_dump(mode="json") for p in record.positions]
        body["labelings"] = [
            {"round": x.round, "status": x.status, "generation": gen(x.generation),
             "assigned": x.assigned}
            for x in record.labelings
        ]  # fmt: skip
        body["turn_positions"] = [[t.round, t.panelist, t.position] for t in record.turns]
    if record.samples:  # vote mode; records without samples keep their hash
        body["samples"] = [
            {"panelist": s.panelist, "status": s.status, "generation": gen(s.generation),
             **({"continuation": gen(s.continuation)} if s.continuation else {}),
             "parsed": _parsed(s.parsed)}
            for s in record.samples
        ]  # fmt: skip
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def transcript_mismatch(record: RunRecord) -> str | None:
    """The sha256 of what the record holds now, when it is not the transcript hash the
    run recorded (the record was edited after the run), else None."""
    if record.transcript_sha256 is None:
        return None
    actual = transcript_sha256(record)
    return None if actual == record.transcript_sha256 else actual


def record_path(run_dir: Path) -> Path:
    return run_dir / RECORD_FILE


def write_record(run_dir: Path, record: RunRecord) -> None:
    """Replace record.json atomically: a failure leaves the previous version intact.

    The writer holds the run (its lock), so once the run has ended the temporary files
    that an earlier, killed process left are its to remove: a finished run folder holds
    its record and nothing half-written."""
    target = record_path(run_dir)
    saved = target.is_file()
    try:
        write_atomic(target, record.model_dump_json(indent=2).encode("utf-8"))
        if record.status != "running":
            remove_stale_temps(target)
    except StorageError as exc:
        fix = "free disk space" if exc.disk_full else "make the runs folder writable"
        then = (
            f"{fix}, then `localtable resume` continues from the last saved turn"
            if saved
            else f"nothing was saved; {fix} or choose another --runs-dir"
        )
        raise RecordWriteError(f"{exc}; {then}") from None


def find_run(run: str, runs_dir: Path) -> Path:
    """A run given as a directory, a record.json path, or a run id under runs_dir.

    A record.json that is there but cannot be read (a symlink loop, no permission)
    is found, so that reading it says what is wrong with it."""
    candidates = [Path(run), runs_dir / run]
    for c in candidates:
        if c.name == RECORD_FILE and os.path.lexists(c) and not c.is_dir():
            return c.parent
        if os.path.lexists(c / RECORD_FILE):
            return c
    raise RecordError(
        f"no run {run!r}: no {RECORD_FILE} there or in {runs_dir}; see `localtable runs`"
    )


def _read_v2(raw: dict[str, Any]) -> RunRecord:
    return RunRecord.model_validate(upgrade_v4(upgrade_v3(upgrade_v2(raw))))


def _read_v3(raw: dict[str, Any]) -> RunRecord:
    return RunRecord.model_validate(upgrade_v4(upgrade_v3(raw)))


def _read_v4(raw: dict[str, Any]) -> RunRecord:
    return RunRecord.model_validate(upgrade_v4(raw))


READERS: dict[int, Callable[[dict[str, Any]], RunRecord]] = {
    1: _read_v2,  # version 1 is version 2 without two optional fields
    2: _read_v2,
    3: _read_v3,
    4: _read_v4,
    5: RunRecord.model_validate,
}
assert TARGET_VERSION == SCHEMA_VERSION and set(READERS) == set(READABLE_VERSIONS)


def read_record(run_dir: Path, *, follow_links: bool = True, packed: bool = False) -> RunRecord:
    """The run's record.json; packed: its shipped copy, record.json.gz (bounded once
    decompressed too). follow_links=False refuses a record file that is a link."""
    try:
        return read_versioned(
            run_dir / PACKED_RECORD_FILE if packed else record_path(run_dir),
            what="run record",
            version_key="schema_version",
            label="schema version",
            limit=RECORD_MAX_BYTES,
            readers=READERS,
            follow_links=follow_links,
            gzipped=packed,
        )
    except StorageError as exc:
        raise RecordError(str(exc)) from None


class RunListing(BaseModel):
    """One line of `localtable runs`: a readable record, or why it is not."""

    run_dir: Path
    record: RunRecord | None = None
    problem: str | None = None
    locked_by: str | None = None  # the process working on the run now (localtable/runlock.py)

    @property
    def status(self) -> str:
        """`running` only while a process holds the run's lock; a record left `running`
        by a process that died (killed, crashed, power cut) is `interrupted`."""
        if self.locked_by is not None:
            return "running"
        if self.record is None:
            return "unreadable"
        return "interrupted" if self.record.status == "running" else self.record.status


def list_runs(runs_dir: Path) -> list[RunListing]:
    """Every run folder under runs_dir, oldest first (run ids start with the time)."""
    if not runs_dir.is_dir():
        return []
    out = []
    for run_dir in sorted(p for p in runs_dir.iterdir() if os.path.lexists(p / RECORD_FILE)):
        holder = lock_holder(run_dir)
        try:
            record = read_record(run_dir)
            out.append(RunListing(run_dir=run_dir, record=record, locked_by=holder))
        except RecordError as exc:
            out.append(RunListing(run_dir=run_dir, problem=str(exc), locked_by=holder))
    return out
