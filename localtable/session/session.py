"""A Session: the backends a run needs, opened from the record's header and kept.

debate, resume, replay and batch all run through one: a new run's header is
planned by the backends (prepare), and every run, new or recorded, is opened
from its header (open), so resume and replay load exactly what was recorded
(settings, memory plan, KV caches). A batch keeps one Session for all its
debates: a backend keeps a model loaded while the next debate asks for it the
same way, so each model is loaded once per batch.
"""

from __future__ import annotations

import platform
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from localtable import backends
from localtable.backends.base import (
    Backend,
    ChatMessage,
    PanelModels,
    Seat,
    TurnRequest,
    TurnResult,
    create,
)
from localtable.config import LoadedConfig, PanelSpec
from localtable.record import MachineRecord, MemoryRecord, ModelRecord, PanelistRecord, RunRecord
from localtable.session.decodegroup import DebateGroup, DebateView, DecodeGroup, Member
from localtable.templates import TemplateSet


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(line.split(":", 1)[1].split())
    except OSError:
        pass
    return []


def this_machine() -> MachineRecord:
    return MachineRecord(
        python=platform.python_version(), platform=platform.platform(), cpu_flags=cpu_flags()
    )


class BackendRegistry(BaseModel):
    """The backends registered in this process, for a batch worker process to restore
    (a backend registered by a plugin or a test, not only the built-in ones)."""

    entries: list[backends.Registration] = Field(default_factory=list)

    @classmethod
    def here(cls) -> BackendRegistry:
        return cls(entries=backends.registrations())

    def restore(self) -> None:
        backends.restore(self.entries)


class PlannedModels(BaseModel):
    """A new run's models as its backends planned them, before loading."""

    model_config = ConfigDict(frozen=True)
    models: list[ModelRecord]
    memory: MemoryRecord | None
    notes: list[str]


def users(panel: PanelSpec, model: str) -> int:
    """The conversations a model holds: one per panelist on it, and one more on the
    summarizer's model for the labels and the summary (TurnRequest.conversation),
    so that those do not evict the summarizer's own debate from its KV cache."""
    seats = sum(p.model == model for p in panel.panelists)
    return seats + (1 if panel.summarizer_spec().model == model else 0)


def batched_turns(panel: PanelSpec, model: str, debates: int) -> int:
    """The turns a batched step decodes together on a model: a round's turns on it, of
    each debate decoded together (a batch's --group); labels and summaries run alone."""
    return sum(p.model == model for p in panel.panelists) * debates


class SessionSpeaker:
    """The debate protocol's Speaker over the seats of one opened run."""

    def __init__(self, session: Session, record: RunRecord, seats: dict[str, Seat]) -> None:
        self.session = session
        self.record = record
        self.seats = seats  # panelist name -> seat
        self.backend_of = {m.name: m.backend for m in record.models}
        self.group: DecodeGroup | DebateView | None = None  # the batched round under way
        # a batch's --group: the debates whose rounds are decoded with this one's
        self.debates: DebateGroup | None = None

    def count_tokens(self, panelist: str, messages: list[ChatMessage]) -> int:
        return self.seats[panelist].count_tokens(messages)

    def count_text_tokens(self, panelist: str, text: str) -> int:
        return self.seats[panelist].count_text_tokens(text)

    def context_size(self, panelist: str) -> int:
        return self.seats[panelist].context_size()

    def turn_order(
        self, round_no: int, panel: list[PanelistRecord], then: str | None
    ) -> list[PanelistRecord]:
        """Each backend orders its own panelists (e.g. one model loaded at a time);
        backends take their turns in panel order of their first panelist."""
        groups: dict[str, list[PanelistRecord]] = {}
        for p in panel:
            groups.setdefault(self.backend_of[p.model], []).append(p)
        model_of = {p.name: p.model for p in panel}
        out: list[PanelistRecord] = []
        for name, members in groups.items():
            speaks_next = then if then is not None and then in {m.name for m in members} else None
            out += self.session.backend(name).turn_order(round_no, members, speaks_next)
        assert {p.name for p in out} == set(model_of)
        return out

    def lanes(self, requested: int) -> int:
        """How many turns of a round to run at once: `requested` (0: as many as the
        backends run well), at most what each backend of the panel allows
        (Backend.turn_lanes: one at a time unless it says more), at most the panel's size."""
        lanes = len(self.record.panelists)
        for name in dict.fromkeys(self.backend_of.values()):
            lanes = min(lanes, self.session.backend(name).turn_lanes(requested))
        return max(1, lanes)

    def decode_together(
        self, members: list[str], round_no: int = 0
    ) -> DecodeGroup | DebateView | None:
        """From now on, these panelists' generations are decoded in groups (a batched
        round, Debate.run_round), until each leaves the group; None when there is no
        one to decode them with, or none of their backends decodes together
        (`generate_group`): their turns run as before. In a debate group (a batch's
        --group) the round waits for the group's other debates, and always joins."""
        model_of = {p.name: p.model for p in self.record.panelists}

        def where(panelist: str) -> Member:
            model = model_of[panelist]
            return Member(model=model, backend=self.session.backend(self.backend_of[model]))

        if self.debates is not None:
            self.group = self.debates.join(self.record.run_id, round_no, members, where)
            return self.group
        backends = {self.session.backend(self.backend_of[model_of[m]]) for m in members}
        if len(members) < 2 or not any(hasattr(b, "generate_group") for b in backends):
            return None
        group = DecodeGroup(members, where)
        self.group = group
        return group

    def generate(self, request: TurnRequest) -> TurnResult:
        group = self.group
        if group is not None and request.panelist in group.running:
            return group.generate(request)
        return self.seats[request.panelist].generate(request)


class Session:
    """Backends by name, created on first use and kept until close()."""

    def __init__(
        self,
        templates: TemplateSet,
        loaded: LoadedConfig | None = None,
        allow_urls: frozenset[str] = frozenset(),
    ) -> None:
        self.templates = templates
        self.loaded = loaded  # the user's own models.toml: the servers and keys it names
        self.allow_urls = allow_urls  # servers the user allowed besides (--allow-url)
        self._backends: dict[str, Backend] = {}

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            self._backends[name] = create(name)
        return self._backends[name]

    def add_backend(self, backend: Backend) -> None:
        """Use this instance for its name (the benchmark passes an engine that records)."""
        self._backends[backend.name] = backend

    def plan(
        self,
        panel: PanelSpec,
        loaded: LoadedConfig,
        *,
        verify: bool,
        reuse_prefix: bool,
        memory_budget: int | None,
        decode: str = "sequential",
        debates: int = 1,
    ) -> PlannedModels:
        """Each backend resolves and plans its models of the panel, in panel order.
        decode "batched": the memory a batched step's context needs counts too, with
        the turns of `debates` debates in it (a batch's --group)."""
        needed = list(dict.fromkeys(p.model for p in panel.panelists))
        by_backend: dict[str, list[str]] = {}
        for name in needed:
            kind = loaded.config.models[name].source.kind
            by_backend.setdefault(backends.backend_for_source(kind), []).append(name)
        planned: dict[str, ModelRecord] = {}
        memory: MemoryRecord | None = None
        notes: list[str] = []
        for backend_name, names in by_backend.items():
            prepared = self.backend(backend_name).prepare(
                PanelModels(
                    specs={n: loaded.config.models[n] for n in names},
                    users={n: users(panel, n) for n in names},
                    loaded=loaded,
                    verify=verify,
                    reuse_prefix=reuse_prefix,
                    memory_budget=memory_budget,
                    batched={n: batched_turns(panel, n, debates) for n in names}
                    if decode == "batched"
                    else {},
                )
            )
            planned.update({m.name: m for m in prepared.models})
            memory = prepared.memory or memory  # only in-process engines plan memory
            notes += prepared.notes
        return PlannedModels(models=[planned[n] for n in needed], memory=memory, notes=notes)

    def open(self, record: RunRecord, *, describe: bool) -> SessionSpeaker:
        """Load the record's models as recorded. describe: a new run (or a replay on
        another build), whose record takes the models and backends as opened."""
        by_backend: dict[str, list[ModelRecord]] = {}
        for m in record.models:
            by_backend.setdefault(m.backend, []).append(m)
        opened: dict[str, ModelRecord] = {}
        seats: dict[str, Seat] = {}
        for name, models in by_backend.items():
            backend = self.backend(name)
            for m in backend.open(
                models,
                record.memory,
                reuse_prefix=record.reuse_prefix,
                templates=self.templates,
                today=record.template_date,
                loaded=self.loaded,
                allow_urls=self.allow_urls,
            ):
                opened[m.name] = m
                seats[m.name] = backend.seat(m.name)
            if describe:
                record.backends[name] = backend.describe()  # type: ignore[assignment]
        if describe:
            record.models = [opened[m.name] for m in record.models]
            record.machine = this_machine()
        return SessionSpeaker(self, record, {p.name: seats[p.model] for p in record.panelists})

    def replay_differences(self, record: RunRecord) -> list[str]:
        """Why this machine may not reproduce the record, backend by backend."""
        diffs: list[str] = []
        for name in dict.fromkeys(m.backend for m in record.models):
            diffs += self.backend(name).replay_differences(
                record, loaded=self.loaded, allow_urls=self.allow_urls
            )
        return diffs

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
