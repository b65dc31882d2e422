"""The Backend seam: what the debate needs from "something that runs panelists".

A backend opens a panel's models, gives a Seat per model (count tokens, context
size, generate one turn), describes itself for the record, and says why a
recorded run might not replay identically on it. The debate protocol and the
Session see only these types; which engine answered is the backend's business,
and the record keeps each backend's own description without knowing its fields.

A backend derives from `Backend` and writes what differs: `prepare`, `open`,
`describe` and `replay_differences` are its own; the rest have defaults here.
Backends are registered by name in localtable/backends/__init__.py and imported
only when a panel uses them (`create`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from localtable import backends
from localtable.config import LoadedConfig, ModelSpec
from localtable.errors import ConfigError, LocaltableError
from localtable.models.status import ModelStatus
from localtable.record import (
    DecodeBatch,
    MemoryRecord,
    ModelRecord,
    PanelistRecord,
    RunRecord,
    SamplingRecord,
)
from localtable.templates import TemplateSet


class TurnFailed(Exception):
    """One generation did not complete (the backend itself may be fine)."""


class BackendCrashed(TurnFailed):
    """The process behind an in-process backend died during a request (it restarts:
    the turn is failed and the run goes on)."""


class BackendDown(TurnFailed):
    """A server could not answer the turn at all: refused, timed out, rejected the
    credentials, failed (5xx), answered outside its API, or died mid-turn. Nothing is
    known of the model's answer, so the protocol records the turn as interrupted with
    this one-line reason (naming the server) and stops the run; `localtable resume`
    runs the turn again once the server is back."""


class BackendUnavailable(LocaltableError):
    """A backend cannot open a model at all (missing file, wrong build, refused load)."""

    exit_code = 1


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True)
    role: Literal["system", "user", "assistant"]
    content: str


# Receives a generation's text piece by piece as the model writes it (for people to
# watch: the TurnResult stays what the record keeps).
TextListener = Callable[[str], None]


class TurnRequest(BaseModel):
    """One generation, the same for every backend."""

    model_config = ConfigDict(frozen=True)
    panelist: str = Field(description="whose turn: backends key per-panelist state on it")
    messages: list[ChatMessage]
    grammar: str
    seed: int
    sampling: SamplingRecord
    conversation: str = Field(
        default="",
        description="whose evaluated prompt to extend (KV prefix reuse); default: the "
        "panelist's own. The labels and the summary use their own, so they do not evict "
        "the summarizer's debate conversation",
    )
    prefill: str = Field(
        default="",
        description="the start of the reply, already written: the model continues it "
        "(the grammar covers only what follows)",
    )
    on_text: TextListener | None = Field(
        default=None,
        exclude=True,
        repr=False,
        description="optional: called with each piece of text as it is generated, by the "
        "thread generating it (the same generation, streamed; a backend that cannot "
        "stream never calls it)",
    )


class TurnResult(BaseModel):
    """What a backend returns for a TurnRequest."""

    model_config = ConfigDict(frozen=True)
    prompt: str = Field(description="the prompt as rendered for the model")
    prompt_tokens: int
    prompt_sha256: str = Field(description="sha256 of the prompt's token ids")
    notes: list[str] = Field(default_factory=list, description="how the prompt was adapted")
    text: str
    token_ids: list[int] = Field(default_factory=list, description="the generated tokens")
    finish_reason: str
    completion_tokens: int
    prompt_eval_tokens: int = Field(description="prompt tokens evaluated (the rest reused)")
    seconds: float
    prompt_eval_seconds: float = 0.0
    decode_seconds: float = 0.0
    decoded_with: list[str] = Field(
        default_factory=list,
        description="the panelists whose generations were decoded together with this one "
        "(itself included), in sequence order; empty: decoded alone",
    )
    batch: DecodeBatch | None = Field(
        default=None, description="the decode group, as the record keeps it (session.py)"
    )


class Seat(Protocol):
    """A model opened by a backend, as the debate uses it."""

    def context_size(self) -> int: ...

    def count_tokens(self, messages: list[ChatMessage]) -> int: ...

    def count_text_tokens(self, text: str) -> int:
        """Tokens of plain text (no control tokens), e.g. to place a divergence."""
        ...

    def generate(self, request: TurnRequest) -> TurnResult: ...


class PanelModels(BaseModel):
    """What a backend is asked to prepare for a new run: its models, and who uses them."""

    model_config = ConfigDict(frozen=True)
    specs: dict[str, ModelSpec]
    users: dict[str, int] = Field(description="model name -> panelists using it")
    loaded: LoadedConfig
    verify: bool = False
    reuse_prefix: bool = False
    memory_budget: int | None = None
    batched: dict[str, int] = Field(
        default_factory=dict,
        description="model name -> turns a batched step decodes together on it (--decode "
        "batched, times a batch's --group); absent: none",
    )


class Prepared(BaseModel):
    """A backend's plan for a new run: model records (before loading) and, for
    in-process engines, how the models share memory."""

    model_config = ConfigDict(frozen=True)
    models: list[ModelRecord]
    memory: MemoryRecord | None = None
    notes: list[str] = Field(default_factory=list)


class Backend(ABC):
    """Something that runs panelists. One instance serves a Session (many debates).

    A subclass writes `prepare`, `open`, `describe` and `replay_differences`, and puts
    each opened model's Seat in `self.seats` (or overrides `seat`). The defaults: the
    turns of a round one at a time (`turn_lanes`), in panel order (`turn_order`);
    `close` forgets the seats; `status` says "unchecked" in `localtable models`.

    Optional, without a default: `generate_group(turns: list[tuple[str, TurnRequest]])
    -> list[TurnResult | TurnFailed]`, (model name, request) pairs generated together
    (batched decoding, `--decode batched`), the results in order, each naming in
    `decoded_with` the panelists it was decoded with. A backend without it generates
    them one after another (session/decodegroup.py)."""

    name: str
    # model name -> its seat, once opened (a subclass keeps its own seats' type)
    seats: Mapping[str, Seat]

    def __init__(self) -> None:
        self.seats = {}

    @abstractmethod
    def prepare(self, panel: PanelModels) -> Prepared:
        """Resolve and plan the models of a new run, without loading them."""

    @abstractmethod
    def open(
        self,
        models: list[ModelRecord],
        memory: MemoryRecord | None,
        *,
        reuse_prefix: bool,
        templates: TemplateSet,
        today: str,
        loaded: LoadedConfig | None,
        allow_urls: frozenset[str],
    ) -> list[ModelRecord]:
        """Load models as recorded (a model already loaded the same way is kept) and
        return their records completed with what loading found (effective context,
        chat template). Raises BackendUnavailable when a model cannot be opened.

        A record is untrusted: a backend that connects somewhere goes only where the
        user's own `loaded` config or `allow_urls` (--allow-url) says, with only the
        credentials `loaded` names, whatever the record says."""

    @abstractmethod
    def describe(self) -> dict[str, object]:
        """This backend's build and settings, for RunRecord.backends."""

    @abstractmethod
    def replay_differences(
        self, record: RunRecord, *, loaded: LoadedConfig | None, allow_urls: frozenset[str]
    ) -> list[str]:
        """Why a recorded run may not replay identically here (build, files, settings);
        `loaded` and `allow_urls` as for open."""

    def seat(self, model: str) -> Seat:
        """An opened model."""
        return self.seats[model]

    def turn_order(
        self, round_no: int, panel: list[PanelistRecord], then: str | None
    ) -> list[PanelistRecord]:
        """The order to run this backend's turns of a round in (any order gives the
        same record); `then` speaks next, after the round. Default: panel order."""
        return panel

    def turn_lanes(self, requested: int) -> int:
        """How many of its turns of a round may run at the same time, each on a thread
        of its own: `requested`, or for 0 as many as it runs well; 1 when it cannot run
        two at once. Default: 1 (one at a time)."""
        return 1

    def status(
        self, name: str, spec: ModelSpec, loaded: LoadedConfig, *, verify: bool
    ) -> ModelStatus:
        """A model's line of `localtable models` (no generation). Default: unchecked.
        A registration may name a light function instead (backends/__init__.py)."""
        return ModelStatus(name=name, kind=spec.source.kind, source=spec.source.label(),
                           state="unchecked")  # fmt: skip

    def close(self) -> None:
        """Free everything."""
        self.seats = {}


def create(name: str) -> Backend:
    """A new instance of the backend registered as `name` (its module imported now)."""
    where = backends.registration(name).backend
    cls = backends.load(where)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigError(
            f"backend {name!r}: {where} does not derive from localtable.backends.base.Backend; "
            "fix or uninstall the package that registers it"
        )
    return cls()
