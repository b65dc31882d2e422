"""The debate: round 1 alone, later rounds reading the others, then the summary.

The protocol never prints and never touches llama.cpp: it asks a Speaker for
generations and hands every finished turn to a callback that saves it. It
skips turns the record already holds, which is what makes resume work.

Within a round each turn reads only earlier rounds, so a round's turns may run
at the same time (`lanes` of them, each on a thread of its own); the record
keeps them in panel order whatever order they finish in, so the transcript is
the one a run of one turn at a time gives. The labels and the summary run alone.

How it runs is the record's protocol (RunRecord.protocol, localtable/protocols.py;
none: roundtable): a system prompt or none, what peers see, turns under the grammar
or free text read by an answer rule, max_tokens per round, labels, a summary. In
vote mode (RunRecord.vote) each seat's round-1 prompt is generated again with seeds
of its own after the last round: samples, which no peer sees (run_samples).
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from localtable.backends.base import BackendDown, ChatMessage, TurnFailed, TurnRequest, TurnResult
from localtable.debate import positions as pos
from localtable.debate.answers import normalize_open, same_position, stance
from localtable.debate.claims import Facts, contradictions, record_facts
from localtable.debate.consensus import compute_consensus
from localtable.debate.freetext import free_turn
from localtable.debate.parsing import (
    ParsedLabels,
    ParsedSummary,
    ParseFailure,
    answer_line_cut,
    completed_part,
    multiline_reasoning,
    parse_labels,
    parse_summary,
    parse_turn,
    raw_reasoning,
    reasoning_finished,
    turn_fields,
)
from localtable.debate.seeds import Seeds
from localtable.debate.tries import Tries
from localtable.errors import ConfigError, LocaltableError
from localtable.record import (
    Generation,
    LabelingRecord,
    PanelistRecord,
    ParsedTurn,
    PositionGroup,
    ProtocolSettings,
    QuestionKind,
    RunRecord,
    SamplingRecord,
    SummaryRecord,
    TurnRecord,
)
from localtable.templates import TemplateSet

# One short sentence: answers of 300+ characters were reasoning in the wrong place.
ANSWER_MAX_CHARS = 200
REASONING_MAX_CHARS = 1500
SUMMARY_LINE_MAX_CHARS = 200  # answer (headline), counterpoint: one sentence each
MIN_MAX_TOKENS = 48
SUMMARY_MAX_TOKENS = 320
SUMMARY_MAX_CHARS = 600  # about 150 tokens: the two lines after it still fit
LABELS_MAX_TOKENS = 256
# The rest of a turn that max_tokens cut off: the fields after the reasoning.
CONTINUATION_MAX_TOKENS = 128
# An unusable summary or set of labels (cut off, restating the question, or only
# parroting its instructions, as small models sometimes do) is retried with other
# derived, recorded seeds before it counts as failed.
SUMMARY_ATTEMPTS = 3
LABEL_ATTEMPTS = 3
FALLBACK_GROUPING = "positions grouped by a leading yes/no, else by exact answer text, instead"
# The labels and the summary run on the summarizer's model in a conversation (KV
# cache) of their own: in the summarizer's, they would evict its debate's prompt.
MODERATOR = "moderator"
# A record without a protocol ran localtable's own: ProtocolSettings' defaults.
ROUNDTABLE = ProtocolSettings()

# Applied in order until the prompt fits the model's context; each is recorded.
SHORTENING_RULES = [
    "others' reasoning trimmed to 200 characters",
    "others' reasoning dropped",
    "own earlier reasoning dropped",
    "earlier rounds dropped",
]


class PromptTooLong(TurnFailed):
    pass


class RedoDiffers(LocaltableError):
    """A turn redone with its decode group (resume of a batched round) came out other
    than the record has it: this machine does not reproduce the run."""


class SpeakerFailed(LocaltableError):
    """A backend failed before the debate began (Debate.preflight): the run failed."""


class ContradictsRecord(ParseFailure):
    """A summary that states what the record shows did not happen (debate/claims.py)."""


class Speaker(Protocol):
    """What the protocol needs from the backends, per panelist (session/session.py)."""

    def count_tokens(self, panelist: str, messages: list[ChatMessage]) -> int: ...

    def context_size(self, panelist: str) -> int: ...

    def turn_order(
        self, round_no: int, panel: list[PanelistRecord], then: str | None
    ) -> list[PanelistRecord]:
        """The order to run a round's turns in (each reads only earlier rounds, so any
        order gives the same record); `then` speaks next, after the round."""
        ...

    def generate(self, request: TurnRequest) -> TurnResult: ...


class ProgressEvent(BaseModel):
    model_config = ConfigDict(frozen=True)
    stage: str  # "turn" | "labels" | "summary" | "sample"
    round: int
    rounds: int
    panelist: str
    done: int
    total: int
    status: str = "generating"  # generating | ok | failed | checked (a redone turn)


class TextEvent(BaseModel):
    """A piece of a generation's text as the model writes it (streaming, for people to
    watch). restart: what was shown of this step so far is replaced by `text` (a
    continuation starts from the turn's whole fields; a summary or labels retried)."""

    model_config = ConfigDict(frozen=True)
    stage: str  # "turn" | "labels" | "summary" | "sample"
    round: int
    panelist: str
    text: str
    restart: bool = False


@dataclass(frozen=True)
class Sample:
    """A vote mode sample: a round-1 turn that goes to RunRecord.samples."""

    turn: TurnRecord

    @property
    def status(self) -> str:
        return self.turn.status


TurnSink = Callable[[RunRecord], None]
ProgressSink = Callable[[ProgressEvent], None]
TextSink = Callable[[TextEvent], None]
# What a step settles into the record (Debate._settle): a turn, a round's labels, the
# summary, a sample.
Outcome = TurnRecord | LabelingRecord | SummaryRecord | Sample


def answer_max_chars(max_tokens: int) -> int:
    """The answer line may use about half the token budget (~4 characters a token)."""
    return max(40, min(ANSWER_MAX_CHARS, 2 * max_tokens))


def reasoning_max_chars(max_tokens: int, kind: QuestionKind = "open") -> int:
    """The reasoning comes first and must leave room for the fields after it: about
    3 characters a token of what the answer line and the short fields do not need
    (a choice or number answer needs a few tokens, not an open answer's sentence).
    Text with many digits has fewer characters a token; a turn that max_tokens cuts
    off anyway is continued after its reasoning (Debate.continue_turn)."""
    answer_tokens = answer_max_chars(max_tokens) // 3 if kind == "open" else 8
    rest = max_tokens - answer_tokens - 24
    return max(120, min(REASONING_MAX_CHARS, 3 * rest))


def normalize_answer(text: str) -> str:
    return normalize_open(text)


def anonymous_label(index: int) -> str:
    return f"Panelist {'ABCDEFGH'[index]}"


class Debate:
    """One debate over a record: runs whatever turns the record does not have yet."""

    def __init__(
        self,
        record: RunRecord,
        speaker: Speaker,
        templates: TemplateSet,
        save: TurnSink,
        progress: ProgressSink,
        lanes: int = 1,
        text: TextSink | None = None,
    ) -> None:
        self.record = record
        self.text = text  # each generation's text as it comes, when someone watches
        self.speaker = speaker
        self.templates = templates
        self.save = save
        self.progress = progress
        self.lanes = max(1, lanes)  # turns of a round run at once, at most
        self.panel = record.panelists
        self.settings = record.protocol.settings if record.protocol else ROUNDTABLE
        self.free = self.settings.output == "free"  # free text, read by the answer rule
        self.samples_per_seat = max(0, record.vote // len(self.panel) - 1)
        self.seeds = Seeds.of(record)  # by the record's scheme: resume and replay keep it
        steps = len(self.panel) * (record.rounds + self.samples_per_seat)
        self.total = steps + (1 if self.settings.summary else 0)
        # (round, panelist) of each generation under way; the summary is (rounds + 1, its
        # writer). What stop() keeps as interrupted.
        self.in_flight: set[tuple[int, str]] = set()
        # Finished turns redone only to rebuild their decode group (a batched round
        # resumed): checked against the record, never stored again.
        self.checking: set[tuple[int, str]] = set()
        # A debate group's round (batch --group) that another debate of the group must
        # redo: this debate redoes it too, even finished, to rebuild the round's groups.
        self.redo_round: int | None = None
        # Turns finishing on several threads: one at a time changes the record, saves it
        # and reports progress. After stop() none does.
        self._lock = threading.Lock()
        self._stopped = False

    # -- messages -------------------------------------------------------------

    def _system(self, p: PanelistRecord) -> list[ChatMessage]:
        """The system message, or none (a protocol without a system prompt)."""
        if not self.settings.system_prompt:
            return []
        persona = p.persona if self.settings.personas else ""
        text = self.templates.render(
            "system.j2", persona=persona, name=p.label, panel_size=len(self.panel)
        )
        return [ChatMessage(role="system", content=text.strip())]

    def _sampling(self, p: PanelistRecord, round_no: int) -> SamplingRecord:
        """The panelist's sampling, with the protocol's max_tokens for the round."""
        max_tokens = self.settings.round_max_tokens(round_no)
        if max_tokens is None:
            return p.sampling
        return p.sampling.model_copy(update={"max_tokens": max_tokens})

    def _latest_ok(self, name: str, before_round: int) -> TurnRecord | None:
        turns = [
            t
            for t in self.record.turns
            if t.panelist == name and t.round < before_round and t.status == "ok"
        ]
        return max(turns, key=lambda t: t.round) if turns else None

    def _peer_turn(self, name: str, round_no: int) -> TurnRecord | None:
        """The turn of a peer that a turn of round_no reads: its latest valid one, or in
        free text its reply of the round before, whatever its answer rule read."""
        if not self.free:
            turn = self._latest_ok(name, round_no)
            return turn if turn is not None and turn.parsed is not None else None
        turn = self.record.turn(round_no - 1, name)
        return turn if turn is not None and turn.generation is not None else None

    def _peers_view(self, p: PanelistRecord, round_no: int, level: int) -> list[dict[str, str]]:
        view = []
        for other in self.panel:
            turn = self._peer_turn(other.name, round_no) if other.name != p.name else None
            if turn is None:
                continue
            # "reasoning" as prompts before issue #26 showed it (a record made with them
            # replays byte for byte); "reasoning_shown" ends a cut one visibly (…);
            # "text" is the whole reply (free text)
            texts = [turn.parsed.reasoning if turn.parsed else "", turn.reasoning_shown, turn.text]
            if level >= 2 or self.settings.peer_view == "answer":
                texts = ["", "", ""]
            elif level >= 1:
                texts = [text[:200].rstrip() + "..." if len(text) > 200 else text for text in texts]
            view.append(
                {
                    "label": other.label,
                    "answer": turn.parsed.answer if turn.parsed else "",
                    "answer_shown": turn.answer_shown,
                    "reasoning": texts[0],
                    "reasoning_shown": texts[1],
                    "text": texts[2],
                    "position": turn.position or "",
                }
            )
        return view

    def _own_reply(self, p: PanelistRecord, round_no: int, level: int) -> str:
        turn = self.record.turn(round_no, p.name)
        if self.free and turn is not None and turn.generation is not None:
            answer = turn.parsed.answer if turn.parsed else "(no answer)"
            return answer if level >= 3 else turn.text
        if turn is None or turn.generation is None or turn.parsed is None:
            return "Answer: (no valid answer)"
        if level >= 3:
            return f"Answer: {turn.parsed.answer}"
        return turn.text

    def conversation(self, p: PanelistRecord, round_no: int, level: int) -> list[ChatMessage]:
        """The panelist's whole conversation up to its turn in round_no.

        Each round extends the previous round's conversation, so the prompt of
        round r starts with the prompt and answer of round r-1 (prefix reuse).
        """
        question = self.templates.render(
            "round1.j2",
            question=self.record.question,
            kind=self.record.question_kind,
            options=self.record.options,
        ).strip()
        messages = [*self._system(p), ChatMessage(role="user", content=question)]
        first_kept = round_no - 1 if level >= 4 else 2
        for r in range(2, round_no + 1):
            if r < first_kept:
                continue
            messages.append(ChatMessage(role="assistant", content=self._own_reply(p, r - 1, level)))
            own = self._latest_ok(p.name, r)
            later = self.templates.render(
                "round_later.j2",
                round=r,
                others=self._peers_view(p, r, level),
                kind=self.record.question_kind,
                positions=self._positions_before(r),
                own_position=own.position if own is not None and own.position else "",
                allow_new=self._allow_new(r),
            )
            messages.append(ChatMessage(role="user", content=later.strip()))
        return messages

    def _positions_before(self, round_no: int) -> list[dict[str, str]]:
        """The labelled positions a turn of round_no may name (open questions)."""
        return [
            {"letter": x.letter, "label": x.label}
            for x in self.record.positions
            if x.round < round_no
        ]

    def _letters(self, round_no: int) -> list[str] | None:
        """The letters a later-round turn may name; None when positions are not labelled
        (choice and number questions, or no labelled position yet)."""
        if self.record.question_kind != "open" or round_no == 1:
            return None
        return [x["letter"] for x in self._positions_before(round_no)] or None

    def _allow_new(self, round_no: int) -> bool:
        return len(self._positions_before(round_no)) < len(pos.LETTERS)

    def _fields(self, round_no: int) -> list[str]:
        return turn_fields(later_round=round_no > 1, labelled=self._letters(round_no) is not None)

    def _stances(self, round_no: int) -> dict[str, str | None]:
        """The stance of each position a turn of round_no may name ("yes", "no", None)."""
        if self._letters(round_no) is None:
            return {}
        return pos.stances_before(self.record, round_no)

    def _grammar(self, p: PanelistRecord, round_no: int, fields: list[str], held: str = "") -> str:
        peers = [o.label for o in self.panel if o.name != p.name]
        own = self._latest_ok(p.name, round_no) if round_no > 1 else None
        max_tokens = self._sampling(p, round_no).max_tokens
        return self.templates.render(
            "turn.gbnf.j2",
            fields=fields,
            peers=peers,
            letters=self._letters(round_no) or [],
            stances={k: v or "" for k, v in self._stances(round_no).items()},
            held=held,
            allow_new=self._allow_new(round_no),
            own_position=own.position if own is not None and own.position else "",
            reasoning_max=reasoning_max_chars(max_tokens, self.record.question_kind),
            answer_max=answer_max_chars(max_tokens),
            multiline=multiline_reasoning(self.record.question_kind),
            kind=self.record.question_kind,
            options=self.record.options,
        )

    # -- fitting ----------------------------------------------------------------

    def fit(
        self, who: str, build: Callable[[int], list[ChatMessage]], sampling: SamplingRecord
    ) -> tuple[list[ChatMessage], SamplingRecord, list[str]]:
        """The conversation at the first shortening level that fits, and the rules used."""
        n_ctx = self.speaker.context_size(who)
        levels = range(len(SHORTENING_RULES) + 1)
        for level in levels:
            messages = build(level)
            n = self.speaker.count_tokens(who, messages)
            if n + sampling.max_tokens <= n_ctx:
                return messages, sampling, SHORTENING_RULES[:level]
            if level == levels[-1] and n + MIN_MAX_TOKENS <= n_ctx:
                fitted = sampling.model_copy(update={"max_tokens": n_ctx - n})
                rules = [*SHORTENING_RULES, f"max_tokens reduced to {n_ctx - n}"]
                return messages, fitted, rules
        raise PromptTooLong(
            f"prompt does not fit {who}'s context of {n_ctx} tokens even after shortening "
            f"({n} tokens); raise n_ctx for its model in models.toml"
        )

    def preflight(self) -> None:
        """Refuse, before any generation, a question that cannot fit a panelist's context."""
        for p in self.panel:
            n_ctx = self.speaker.context_size(p.name)
            try:
                n = self.speaker.count_tokens(p.name, self.conversation(p, 1, 0))
            except TurnFailed as exc:  # e.g. a server that stopped answering since it opened
                raise SpeakerFailed(f"{p.name} ({p.model}): {exc}") from None
            max_tokens = self._sampling(p, 1).max_tokens
            if n + max_tokens > n_ctx:
                model = p.model
                raise ConfigError(
                    f"the question is too long for {p.name} ({model}): its first prompt is {n} "
                    f"tokens + {max_tokens} to answer > context {n_ctx}; shorten the "
                    f"question or raise n_ctx for {model} in models.toml"
                )

    def _streamed(
        self, request: TurnRequest, stage: str, round_no: int, again: bool
    ) -> TurnRequest:
        """The request with a listener that turns its text into TextEvents; a restart
        first when a step shows another attempt (a continuation shows its prefill)."""
        sink = self.text
        if sink is None:
            return request
        who = request.panelist
        if again or request.prefill:
            sink(TextEvent(stage=stage, round=round_no, panelist=who, text=request.prefill,
                           restart=True))  # fmt: skip

        def on_text(piece: str) -> None:
            sink(TextEvent(stage=stage, round=round_no, panelist=who, text=piece))

        return request.model_copy(update={"on_text": on_text})

    def generate(
        self,
        request: TurnRequest,
        shortened: list[str],
        where: tuple[str, int, bool] = ("turn", 0, False),  # stage, round, another attempt
    ) -> Generation:
        """One generation through the speaker, as the record keeps it."""
        result = self.speaker.generate(self._streamed(request, *where))
        return Generation(
            seed=request.seed,
            sampling=request.sampling,
            prompt=result.prompt,
            prompt_tokens=result.prompt_tokens,
            prompt_sha256=result.prompt_sha256,
            shortened=[*shortened, *result.notes],
            batch=result.batch,
            # free text has no grammar ("")
            grammar_sha256=hashlib.sha256(request.grammar.encode("utf-8")).hexdigest()
            if request.grammar
            else None,
            prefill=request.prefill,
            raw_output=result.text,
            token_ids=result.token_ids,
            completion_tokens=result.completion_tokens,
            finish_reason=result.finish_reason,
            prompt_eval_tokens=result.prompt_eval_tokens,
            seconds=round(result.seconds, 3),
        )

    def moderate(
        self,
        who: PanelistRecord,
        messages: list[ChatMessage],
        grammar: str,
        seed: int,
        sampling: SamplingRecord,
        rules: list[str],
        where: tuple[str, int, bool] = ("summary", 0, False),
    ) -> Generation:
        """A generation of the labels or the summary: on the summarizer's model, in the
        moderator's own KV conversation."""
        request = TurnRequest(
            panelist=who.name,
            conversation=MODERATOR,
            messages=messages,
            grammar=grammar,
            seed=seed,
            sampling=sampling,
        )
        return self.generate(request, rules, where)

    # -- settling a step ----------------------------------------------------------

    def _emit(self, stage: str, round_no: int, who: str, status: str) -> None:
        done = len([t for t in self.record.turns if t.status != "interrupted"])
        done += len(self.record.samples)
        self.progress(
            ProgressEvent(
                stage=stage,
                round=round_no,
                rounds=self.record.rounds,
                panelist=who,
                done=done,
                total=self.total,
                status=status,
            )
        )

    def _place(self, turn: TurnRecord) -> None:
        turns = [
            t
            for t in self.record.turns
            if not (t.round == turn.round and t.panelist == turn.panelist)
        ]
        # Canonical order (round, then panel order), whatever order turns ran or
        # finished in: the transcript hash reads them in list order.
        seat = {p.name: p.index for p in self.panel}
        self.record.turns = sorted(
            [*turns, turn], key=lambda t: (t.round, seat.get(t.panelist, len(seat)))
        )

    def _keep(self, outcome: Outcome) -> tuple[str, int, str]:
        """Put a step's outcome into the record; the step's stage, round and who."""
        if isinstance(outcome, Sample):
            # by seat (stable: a seat's samples are made in order), whatever order the
            # seats ran in: the transcript hash reads them in list order
            seat = {p.name: p.index for p in self.panel}
            samples = [*self.record.samples, outcome.turn]
            self.record.samples = sorted(samples, key=lambda t: seat.get(t.panelist, len(seat)))
            return "sample", 1, outcome.turn.panelist
        if isinstance(outcome, TurnRecord):
            self.in_flight.discard((outcome.round, outcome.panelist))
            self._place(outcome)
            return "turn", outcome.round, outcome.panelist
        if isinstance(outcome, LabelingRecord):
            others = [x for x in self.record.labelings if x.round != outcome.round]
            self.record.labelings = [*others, outcome]
            return "labels", outcome.round, outcome.labeller
        self.record.summary = outcome
        return "summary", self.record.rounds + 1, outcome.summarizer

    def _settle(self, outcome: Outcome) -> None:
        """A step's outcome (ok, failed, or interrupted by its backend) goes into the
        record, the record is saved, then the step's progress event: a save after each
        settled step is what lets Ctrl-C and resume lose nothing. Turns settle from
        several threads, one at a time; after stop() none does (the record is the
        stopper's now: a turn still running is kept as interrupted)."""
        with self._lock:
            if self._stopped:
                return
            step = self._keep(outcome)
            self.save(self.record)
            self._emit(*step, "ok" if outcome.status == "ok" else "failed")

    def _begin(self, round_no: int, who: str) -> None:
        with self._lock:
            if (round_no, who) not in self.checking:
                self.in_flight.add((round_no, who))
            self._emit("turn", round_no, who, "generating")

    def _finish(self, turn: TurnRecord) -> None:
        """Settle a finished turn; one redone only to rebuild its decode group is
        checked against the record instead."""
        if (turn.round, turn.panelist) in self.checking:
            with self._lock:
                if not self._stopped:
                    self._check_redone(turn)
            return
        self._settle(turn)

    def _check_redone(self, turn: TurnRecord) -> None:
        """A finished turn redone with its group must match the record (timings aside)."""
        stored = self.record.turn(turn.round, turn.panelist)
        # how long it took and how much of the prompt a KV cache held differ from run
        # to run (a resumed engine starts cold); the text and all it decides may not
        costs = {"seconds", "prompt_eval_tokens"}
        untimed = {"generation": costs, "continuation": costs}
        before = stored.model_dump(exclude=untimed) if stored is not None else {}
        now = turn.model_dump(exclude=untimed)
        differ = sorted(k for k in now if before.get(k) != now[k])
        if differ:
            raise RedoDiffers(
                f"round {turn.round}: {turn.panelist}'s turn, redone with its decode group, "
                f"differs from the record ({', '.join(differ)}): this machine does not "
                "reproduce the run (`localtable replay` shows where it diverges)"
            )
        self._emit("turn", turn.round, turn.panelist, "checked")

    def stop(self, reason: str = "interrupted before it finished") -> None:
        """The run stops (Ctrl-C, a stop signal): each turn in flight is kept as
        interrupted (resume runs it again), and a turn that finishes after this writes
        nothing. The caller saves the record."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            for round_no, name in sorted(self.in_flight):
                if round_no <= self.record.rounds:  # not the summary, kept as missing
                    self._place(
                        TurnRecord(
                            round=round_no, panelist=name, status="interrupted", error=reason
                        )
                    )

    # -- turns ------------------------------------------------------------------

    def continue_turn(
        self,
        p: PanelistRecord,
        round_no: int,
        first: TurnRequest,
        cut: Generation,
        fields: list[str],
        stage: str = "turn",
    ) -> Generation | None:
        """A turn that max_tokens cut off (a long reasoning) goes on after its whole
        fields: the model continues from them under the grammar of the fields left,
        so the answer line is still written. None when nothing of it can be kept."""
        kept, rest = completed_part(
            cut.raw_output, fields, multiline=multiline_reasoning(self.record.question_kind)
        )
        if not kept:
            return None
        budget = CONTINUATION_MAX_TOKENS
        if self.record.question_kind == "open":
            budget += answer_max_chars(self._sampling(p, round_no).max_tokens) // 3
        named = re.search(r"^Position: (\S+)$", kept, re.MULTILINE)
        request = first.model_copy(
            update={
                "grammar": self._grammar(p, round_no, rest, named.group(1) if named else ""),
                "prefill": kept,
                "sampling": first.sampling.model_copy(update={"max_tokens": budget}),
            }
        )
        return self.generate(request, cut.shortened, (stage, round_no, True))

    def _reasoning_cut(
        self,
        p: PanelistRecord,
        round_no: int,
        generation: Generation,
        continuation: Generation | None,
        text: str,
        fields: list[str],
    ) -> bool:
        """Whether a length cap stopped the turn's reasoning: max_tokens inside it (the
        continuation kept it closed with "…"), or the grammar's character bound."""
        multiline = multiline_reasoning(self.record.question_kind)
        if continuation is not None and not reasoning_finished(
            generation.raw_output, fields, multiline=multiline
        ):
            return True
        max_tokens = self._sampling(p, round_no).max_tokens
        bound = reasoning_max_chars(max_tokens, self.record.question_kind)
        return len(raw_reasoning(text, fields, multiline=multiline)) >= bound

    def _turn_request(
        self, p: PanelistRecord, round_no: int, fields: list[str], seed: int
    ) -> tuple[TurnRequest, list[str]]:
        """The turn's request, its conversation shortened until it fits, and the rules
        used. Free text has no grammar ("")."""
        messages, sampling, rules = self.fit(
            p.name, lambda level: self.conversation(p, round_no, level), self._sampling(p, round_no)
        )
        request = TurnRequest(
            panelist=p.name,
            messages=messages,
            grammar="" if self.free else self._grammar(p, round_no, fields),
            seed=seed,
            sampling=sampling,
        )
        return request, rules

    def _parse_turn(self, p: PanelistRecord, round_no: int, text: str) -> ParsedTurn:
        return parse_turn(
            text,
            later_round=round_no > 1,
            peers={o.label: o.name for o in self.panel if o.name != p.name},
            kind=self.record.question_kind,
            options=self.record.options,
            letters=self._letters(round_no),
            stances=self._stances(round_no) or None,
        )

    def _answer_changed(self, turn: TurnRecord, parsed: ParsedTurn) -> TurnRecord:
        """A later round's turn, marked with whether its answer changed from its last."""
        previous = self._latest_ok(turn.panelist, turn.round)
        if previous is None or previous.parsed is None:
            return turn
        changed = not same_position(
            self.record.question_kind, parsed.answer, previous.parsed.answer
        )
        return turn.model_copy(update={"answer_changed": changed})

    def _against_earlier(self, turn: TurnRecord, parsed: ParsedTurn) -> TurnRecord:
        """A later round's turn, marked with what it says and does against the turns
        before it: a change of mind stated, its answer changed, the position it holds."""
        turn = turn.model_copy(update={"changed_mind_stated": parsed.stance == "change"})
        turn = self._answer_changed(turn, parsed)
        claim = parsed.position_claim
        if claim is not None and claim != "new":
            turn = pos.placed(self.record, turn, claim)
        return turn

    def _free_turn(self, p: PanelistRecord, round_no: int, generation: Generation) -> TurnRecord:
        """A free text turn: its answer is what the protocol's answer rule reads in it
        (none: the turn failed, its reply kept; later rounds still show it to peers)."""
        turn = free_turn(round_no, p.name, generation, self.settings.answer_rule)
        if turn.parsed is None or round_no == 1:
            return turn
        return self._answer_changed(turn, turn.parsed)

    def run_turn(self, p: PanelistRecord, round_no: int) -> None:
        self._begin(round_no, p.name)
        seed = self.seeds.turn(round_no, p.index)
        turn, down = self.make_turn(p, round_no, seed)
        self._finish(turn)
        if down is not None:
            # The server could not answer: nothing is known of this turn. It is kept as
            # interrupted (resume runs it again) and the run stops: later turns would read it.
            raise down

    def make_turn(
        self, p: PanelistRecord, round_no: int, seed: int, stage: str = "turn"
    ) -> tuple[TurnRecord, BackendDown | None]:
        """A turn as the record keeps it (ok, failed; interrupted, with the BackendDown
        that stopped it), generated with this seed (a round's, or a sample's)."""
        fields = self._fields(round_no)
        limit = answer_max_chars(self._sampling(p, round_no).max_tokens)
        limits = None if self.free else limit  # where the grammar ends the answer line
        generation: Generation | None = None
        continuation: Generation | None = None
        try:
            request, rules = self._turn_request(p, round_no, fields, seed)
            generation = self.generate(request, rules, (stage, round_no, False))
            if self.free:
                return self._free_turn(p, round_no, generation), None
            text = generation.raw_output
            if generation.finish_reason == "length":
                continuation = self.continue_turn(p, round_no, request, generation, fields, stage)
                if continuation is not None:
                    text = continuation.prefill + continuation.raw_output
            parsed = self._parse_turn(p, round_no, text)
            cut = self._reasoning_cut(p, round_no, generation, continuation, text, fields)
        except BackendDown as exc:
            return TurnRecord(round=round_no, panelist=p.name, status="interrupted",
                              error=str(exc), answer_max_chars=limits), exc  # fmt: skip
        except (TurnFailed, ParseFailure) as exc:
            reason = f"unusable answer: {exc}" if isinstance(exc, ParseFailure) else str(exc)
            return TurnRecord(round=round_no, panelist=p.name, status="failed", error=reason,
                              generation=generation, continuation=continuation,
                              answer_max_chars=limits), None  # fmt: skip
        turn = TurnRecord(
            round=round_no,
            panelist=p.name,
            status="ok",
            generation=generation,
            continuation=continuation,
            parsed=parsed,
            answer_max_chars=limits,
            reasoning_cut=cut,
            answer_cut=answer_line_cut(text, self.record.question_kind, limit),
        )
        return (self._against_earlier(turn, parsed) if round_no > 1 else turn), None

    # -- vote mode ----------------------------------------------------------------

    def _samples_of(self, name: str) -> int:
        return sum(s.panelist == name for s in self.record.samples)

    def run_samples(self, then: str | None) -> None:
        """Vote mode: each seat's round-1 prompt generated again, samples_per_seat times,
        with seeds of its own (Seeds.sample); no peer ever sees them. Only the missing
        ones run (resume), each seat's in order; one whose backend could not answer is
        not kept, and the run stops as for a turn."""
        if not self.samples_per_seat:
            return
        order = self.speaker.turn_order(1, self.panel, then)
        seats = [p for p in order if self._samples_of(p.name) < self.samples_per_seat]
        if self.lanes == 1 or len(seats) < 2:
            for p in seats:
                self.run_seat_samples(p)
            return
        self.run_lanes(seats, self.run_seat_samples, self.lanes, None, "sample")

    def run_seat_samples(self, p: PanelistRecord) -> None:
        for n in range(self._samples_of(p.name) + 1, self.samples_per_seat + 1):
            with self._lock:
                self._emit("sample", 1, p.name, "generating")
            turn, down = self.make_turn(p, 1, self.seeds.sample(n, p.index), "sample")
            if down is not None:
                raise down
            self._settle(Sample(turn))

    # -- labelled positions -----------------------------------------------------

    def _summarizer(self) -> PanelistRecord:
        """Who writes the labels and the summary."""
        return next(p for p in self.panel if p.name == self.record.summarizer)

    def run_labeling(self, round_no: int) -> None:
        """Label the round's new open positions (all of round 1's) and place their
        turns; when no usable labels come, group by yes/no and answer text instead."""
        turns = pos.to_label(self.record, round_no)
        if not turns:
            return
        labeller = self._summarizer()
        # no turn is in flight (the round's turns are done): a stop now interrupts none;
        # the labels are not recorded yet, so resume labels the round again
        self._emit("labels", round_no, labeller.name, "generating")
        answers = {t.panelist: t.parsed.answer for t in turns if t.parsed is not None}
        tries = Tries(LABEL_ATTEMPTS)
        try:
            labels = self._generate_labels(labeller, round_no, turns, answers, tries)
            error = None if labels is not None else f"no usable labels; {FALLBACK_GROUPING}"
        except BackendDown as exc:
            self._settle(
                LabelingRecord(round=round_no, labeller=labeller.name, status="interrupted",
                               error=str(exc))
            )  # fmt: skip
            raise
        except TurnFailed as exc:
            labels, error = None, f"{exc}; {FALLBACK_GROUPING}"
        if labels is None:
            tries.give_up()
            labels = pos.fallback_labels(answers, len(self.record.positions))
        pos.apply_labels(self.record, round_no, labels)
        self._settle(
            LabelingRecord(
                round=round_no,
                labeller=labeller.name,
                status="failed" if error else "ok",
                error=error,
                generation=tries.generation,
                rejected=tries.rejected,
                rejected_generations=tries.thrown,
                assigned=labels.assigned,
            )
        )

    def _generate_labels(
        self,
        labeller: PanelistRecord,
        round_no: int,
        turns: list[TurnRecord],
        answers: dict[str, str],
        tries: Tries,
    ) -> ParsedLabels | None:
        """The first usable labels of LABEL_ATTEMPTS; None when none is."""
        by_name = {p.name: p for p in self.panel}
        members = {by_name[t.panelist].label: t.panelist for t in turns}
        existing = [x.letter for x in self.record.positions]
        view = [{"label": label, "answer": answers[name]} for label, name in members.items()]
        first_new = pos.LETTERS[len(existing)] if len(existing) < len(pos.LETTERS) else ""
        max_new = min(len(turns), len(pos.LETTERS) - len(existing))

        def prompt(answers_view: list[dict[str, str]]) -> str:
            return self.templates.render(
                "label.j2",
                question=self.record.question,
                existing=self._positions_before(round_no + 1),
                answers=answers_view,
                first_new=first_new,
            ).strip()

        system = self.templates.render("summary_system.j2").strip()
        user = prompt(view)
        messages, sampling, rules = self.fit(
            labeller.name,
            lambda level: [
                ChatMessage(role="system", content=system),
                ChatMessage(role="user", content=user),
            ],
            labeller.sampling.model_copy(update={"max_tokens": LABELS_MAX_TOKENS}),
        )
        grammar = self._label_grammar(members, answers, max_new)
        instructions = "\n".join([system, prompt([])])

        def attempt(n: int) -> Generation:
            seed = self.seeds.stage(f"labels{round_no}", n)
            where = ("labels", round_no, n > 0)
            return self.moderate(labeller, messages, grammar, seed, sampling, rules, where)

        def read(generation: Generation) -> ParsedLabels:
            labels = parse_labels(
                generation.raw_output, members=members, existing=existing,
                instructions=instructions,
            )  # fmt: skip
            pos.check_stances(self.record, labels, answers)
            return labels

        try:
            return tries.first_usable(attempt, read)
        except ParseFailure:
            return None

    def _label_grammar(self, members: dict[str, str], answers: dict[str, str], max_new: int) -> str:
        """The shapes the labels may take (positions.label_plans): a leading "Yes" and
        a leading "No" never share a position."""
        plans = pos.label_plans(
            [stance(answers.get(name, "")) for name in members.values()],
            pos.position_stances(self.record),
            max_new,
        )
        if not plans:  # all eight letters taken, none of this answer's stance
            raise TurnFailed("no letter left for a position of this stance")
        return self.templates.render(
            "label.gbnf.j2",
            members=list(members),
            plans=[plan.model_dump() for plan in plans],
            label_max=pos.LABEL_MAX_CHARS,
        )

    # -- summary ----------------------------------------------------------------

    def run_summary(self) -> None:
        summarizer = self._summarizer()
        self.in_flight = {(self.record.rounds + 1, summarizer.name)}
        self._emit("summary", self.record.rounds + 1, summarizer.name, "generating")
        # the positions and the consensus are counted in code, whatever the summary says
        groups = pos.final_groups(self.record)
        consensus = compute_consensus(groups, len(self.panel))
        tries = Tries(SUMMARY_ATTEMPTS)
        try:
            parsed = self._write_summary(summarizer, groups, tries)
        except BackendDown as exc:
            self._settle(
                SummaryRecord(
                    status="interrupted",
                    summarizer=summarizer.name,
                    error=str(exc),
                    consensus=compute_consensus([], len(self.panel)),
                    line_max_chars=SUMMARY_LINE_MAX_CHARS,
                )
            )
            raise
        except (TurnFailed, ParseFailure) as exc:
            self._settle(
                SummaryRecord(
                    status="failed",
                    summarizer=summarizer.name,
                    error=self._summary_error(exc, tries),
                    generation=tries.generation,
                    rejected=tries.rejected,
                    rejected_generations=tries.thrown,
                    groups=groups,
                    consensus=consensus,
                    line_max_chars=SUMMARY_LINE_MAX_CHARS,
                )
            )
            return
        self._settle(
            SummaryRecord(
                status="ok",
                summarizer=summarizer.name,
                generation=tries.generation,
                rejected=tries.rejected,
                rejected_generations=tries.thrown,
                headline=parsed.headline,
                groups=groups,
                counterpoint=parsed.counterpoint,
                summary=parsed.summary,
                consensus=consensus,
                line_max_chars=SUMMARY_LINE_MAX_CHARS,
                cut=parsed.cut,
            )
        )

    @staticmethod
    def _summary_error(exc: TurnFailed | ParseFailure, tries: Tries) -> str:
        """Why there is no summary, for the record and the run's error line."""
        if isinstance(exc, ContradictsRecord):
            contradicted = sum(isinstance(x, ContradictsRecord) for x in tries.refusals)
            return (
                f"it could not be written: {contradicted} of {SUMMARY_ATTEMPTS} attempts "
                f"contradicted the record (the last: {exc})"
            )
        if isinstance(exc, ParseFailure):
            return f"unusable summary: {exc}"
        return str(exc)

    def _finals_view(self) -> list[dict[str, object]]:
        """Each panelist's final answer, or that it has none, as the summary reads them."""
        finals = {t.panelist: t for t in self.record.final_turns()}
        view: list[dict[str, object]] = []
        for p in self.panel:
            t = finals.get(p.name)
            ok = t is not None and t.status == "ok" and t.parsed is not None
            view.append(
                {
                    "label": p.label,
                    "failed": not ok,
                    "answer": t.answer_shown if ok and t else "",
                }
            )
        return view

    def _summary_user(
        self, groups: list[PositionGroup], facts: Facts, finals_view: list[dict[str, object]]
    ) -> str:
        """The summary's user message; given no final answers, the instructions alone
        (which a summary must not parrot, parsing.parse_summary)."""
        label_of = {p.name: p.label for p in self.panel}
        groups_view = [
            {"position": g.position, "members": [label_of[m] for m in g.members]} for g in groups
        ]
        changes_view = [
            {"label": label_of[name], "before": before, "after": after}
            for name, before, after in pos.changes(self.record)
        ]
        return self.templates.render(
            "summarize.j2",
            question=self.record.question,
            groups=groups_view if finals_view else [],
            panel_size=len(self.panel),
            finals=finals_view,
            changes=changes_view if finals_view else [],
            minority=facts.minority if finals_view else [],
            agreed=facts.all_agreed,
            stance=(facts.stance or "") if finals_view else "",
        ).strip()

    def _write_summary(
        self, summarizer: PanelistRecord, groups: list[PositionGroup], tries: Tries
    ) -> ParsedSummary:
        """The first usable summary of SUMMARY_ATTEMPTS, one the record does not
        contradict; the last refusal is raised when none is."""
        finals = {t.panelist: t for t in self.record.final_turns()}
        if not any(p.name in finals and finals[p.name].status == "ok" for p in self.panel):
            raise TurnFailed("no panelist gave a valid final answer")
        facts = record_facts(self.record)
        user = self._summary_user(groups, facts, self._finals_view())
        system = self.templates.render("summary_system.j2").strip()
        grammar = self.templates.render(
            "summary.gbnf.j2", line_max=SUMMARY_LINE_MAX_CHARS, summary_max=SUMMARY_MAX_CHARS,
            minority=facts.minority, kind=self.record.question_kind, stance=facts.stance or "",
        )  # fmt: skip
        messages, sampling, rules = self.fit(
            summarizer.name,
            lambda level: [
                ChatMessage(role="system", content=system),
                ChatMessage(role="user", content=user),
            ],
            summarizer.sampling.model_copy(update={"max_tokens": SUMMARY_MAX_TOKENS}),
        )
        # the prompt without the panelists' answers, which a summary may quote
        instructions = "\n".join([system, self._summary_user(groups, facts, [])])
        step = self.record.rounds + 1

        def attempt(n: int) -> Generation:
            # attempt 0 has the summary's own seed; retries take the rounds after it
            seed = self.seeds.turn(step + n, summarizer.index)
            where = ("summary", step, n > 0)
            return self.moderate(summarizer, messages, grammar, seed, sampling, rules, where)

        def read(generation: Generation) -> ParsedSummary:
            parsed = parse_summary(
                generation.raw_output,
                kind=self.record.question_kind,
                question=self.record.question,
                instructions=instructions,
            )
            false = contradictions(parsed.summary, parsed.counterpoint, facts, parsed.headline)
            if false:
                raise ContradictsRecord("; ".join(false))
            return parsed

        return tries.first_usable(attempt, read)

    def _missing(self, round_no: int, name: str) -> bool:
        turn = self.record.turn(round_no, name)
        return turn is None or turn.status == "interrupted"

    def _grouped(self, round_no: int) -> bool:
        """Whether a finished turn of the round was decoded in a group (Generation.batch)."""
        return any(
            g is not None and g.batch is not None
            for t in self.record.turns
            if t.round == round_no and t.status != "interrupted"
            for g in (t.generation, t.continuation)
        )

    def run(self) -> RunRecord:
        """Run every missing turn, round by round, then the samples and the summary
        (as the protocol has them)."""
        rounds = range(1, self.record.rounds + 1)
        first_open = next(
            (r for r in rounds if any(self._missing(r, p.name) for p in self.panel)), None
        )
        if first_open is not None:  # labels and a summary made before a missing turn are stale
            pos.forget_labels_from(self.record, first_open)
            self.record.summary = None
        summarizer = self.record.summarizer if self.settings.summary else None
        for round_no in rounds:
            # EngineSpeaker groups a round's turns by model when models are loaded one
            # at a time; the record stays in panel order (_place).
            last = round_no == self.record.rounds and not self.samples_per_seat
            order = self.speaker.turn_order(round_no, self.panel, summarizer if last else None)
            missing = [p for p in order if self._missing(round_no, p.name)]
            redo = round_no == self.redo_round  # a debate group's interrupted round
            if (missing or redo) and self._grouped(round_no):
                # the text depends on the decode group: an interrupted round is redone
                # as the same group, its finished turns checked against the record
                self.checking = {(round_no, p.name) for p in order if p not in missing}
                missing = order
            self.run_round(round_no, missing)
            self.checking = set()
            done = self.record.labeling(round_no)
            if self.settings.labels and (done is None or done.status == "interrupted"):
                self.run_labeling(round_no)
        self.run_samples(summarizer)
        summary = self.record.summary
        if self.settings.summary and (summary is None or summary.status == "interrupted"):
            self.run_summary()
        self.in_flight = set()
        return self.record

    def run_round(self, round_no: int, turns: list[PanelistRecord]) -> None:
        """The round's missing turns: one after another, or up to `lanes` at a time,
        started in `turns` order. A turn whose backend cannot answer (BackendDown)
        starts no more turns; those running finish, then it is raised. Decoded in
        batches (RunRecord.decode), every turn runs at once and the speaker gathers
        their generations into groups (session.DecodeGroup)."""
        together = getattr(self.speaker, "decode_together", None)
        group = None
        if self.record.decode == "batched" and together is not None and turns:
            # None: nothing to decode with (one turn), or no backend decodes together
            group = together([p.name for p in turns], round_no)
        if group is None and (self.lanes == 1 or len(turns) < 2):
            for p in turns:
                self.run_turn(p, round_no)
            return
        lanes = len(turns) if group is not None else self.lanes
        self.run_lanes(
            turns, lambda p: self.run_turn(p, round_no), lanes, group, f"turn-{round_no}"
        )

    def run_lanes(
        self,
        seats: list[PanelistRecord],
        work: Callable[[PanelistRecord], None],
        lanes: int,
        group: Any,
        name: str,
    ) -> None:
        """work(seat) for each seat, up to `lanes` at a time, each on a daemon thread
        started in order (leaving the decode group, if any, when it ends)."""
        ended: queue.Queue[BaseException | None] = queue.Queue()

        def lane(p: PanelistRecord) -> None:
            try:
                work(p)
            except BaseException as exc:  # the main thread raises it
                ended.put(exc)
            else:
                ended.put(None)
            finally:
                if group is not None:
                    group.leave(p.name)  # no more generations of this turn

        waiting, running = list(seats), 0
        down: BackendDown | None = None
        try:
            while waiting or running:
                while waiting and running < lanes and down is None:
                    p = waiting.pop(0)
                    # daemon: a turn abandoned by Ctrl-C must not hold the process open
                    thread_name = f"localtable-{name}-{p.index}"
                    threading.Thread(target=lane, args=(p,), name=thread_name, daemon=True).start()
                    running += 1
                if not running:
                    break
                exc = ended.get()
                running -= 1
                if isinstance(exc, BackendDown):
                    down = down or exc
                elif exc is not None:
                    raise exc
        except BaseException:
            self.stop()  # Ctrl-C, or a bug: the turns still running write nothing more
            raise
        if down is not None:
            raise down
