"""Did debate help? The debate next to baselines at equal compute, with paired tests.

Only questions with an answer key (choice or number) are scored, and only
finished runs (complete or failed). Each row is a way of answering a question
(votes.py says what a majority is, and its three tie rules):

- single: each seat's round-1 answer, and the mean over the seats (1 generation);
- SC@N: the majority of the N round-1 answers, self-consistency over the panel
  (N generations; round 1 is answered alone, so its answers are independent);
- SC@k with k = N*R, the generations the debate used: the majority of k
  independent answers, R from each seat: its round-1 turn and its first R-1
  `samples` (RunRecord.samples; a vote mode draws them). Records without them
  show SC@k as not run, with the reason: it is never made up;
- debate after round r: the round-r majority (N*r generations).

Free text (a protocol's `output = "free"`) is read by the answer rule each run
recorded, or, with `answer_rule`, every reply read again by that rule
(rereading.py); the score says which, with every rule's parse rate.

Unparsed and failed answers are wrong, never vote, and are counted. Accuracy p
over n debates has the standard error sqrt(p(1-p)/n), as Du et al.'s
np.std(scores)/sqrt(n); the mean over seats has the standard error of the
per-debate share right.

The last round's majority is compared with the first seat alone, SC@N and SC@k
under each tie rule, paired over the debates: the exact McNemar test and the
95% Newcombe interval of the difference in accuracy (stats.py). Flips: each
seat's round-1 answer against its last-round answer, with the exact binomial
test of wrong-to-right against right-to-wrong.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from statistics import fmean, pstdev

from pydantic import BaseModel, ConfigDict, Field, computed_field

from localtable.debate.answers import is_correct, position_of
from localtable.errors import ConfigError
from localtable.record import RunRecord, TurnRecord
from localtable.research import stats
from localtable.research.rereading import AnswerReading, check_rule, reading, reread
from localtable.research.votes import (
    TIE_RULES,
    TIE_SEED,
    TieRule,
    answer_of,
    debate_tokens,
    decide,
    draw_key,
    leaders,
    other_tokens,
    round_turns,
    sample_pool,
    turn_tokens,
)


class Score(BaseModel):
    model_config = ConfigDict(frozen=True)


class Accuracy(Score):
    correct: int
    total: int
    item_stderr: float | None = Field(
        default=None,
        description="the standard error over debates, where `total` counts several "
        "answers a debate (the mean over seats); None: sqrt(p(1-p)/total)",
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rate(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def stderr(self) -> float:
        if self.item_stderr is not None:
            return self.item_stderr
        p = self.rate
        return math.sqrt(p * (1 - p) / self.total) if self.total else 0.0


class ScoreRow(Score):
    """One way of answering, and how often it was right under each tie rule."""

    label: str
    calls: int = Field(description="generations per question this answer costs")
    tokens: float | None = Field(description="generated tokens per question (mean); None: not run")
    accuracy: dict[TieRule, Accuracy] = Field(
        description="per tie rule; a row that takes no vote is the same under each; "
        "empty when not run"
    )
    ties: int | None = Field(description="debates whose top was tied; None: takes no vote")
    unparsed: int = Field(description="answers that were unparsed or failed (counted wrong)")
    answers: int = Field(description="answers this row depends on")
    not_run: str | None = Field(default=None, description="why the row has no numbers")


class PairedTest(Score):
    """The debate against one baseline under one tie rule, paired over the debates."""

    rule: TieRule
    debate: str
    baseline: str
    both_right: int
    debate_only: int = Field(description="debates only the debate got right")
    baseline_only: int = Field(description="debates only the baseline got right")
    both_wrong: int
    difference: float = Field(description="debate accuracy minus baseline accuracy")
    ci_low: float = Field(description="95% Newcombe interval of the difference (stats.py)")
    ci_high: float
    p_value: float = Field(description="exact McNemar test, two-sided")


class Flips(Score):
    """Answers right in round 1 and wrong in the last round, and the other way."""

    seat: str
    right_to_wrong: int
    wrong_to_right: int
    p_value: float = Field(description="exact two-sided binomial test, p = 1/2")


class RoundScore(Score):
    round: int
    individual: Accuracy = Field(description="every panelist answer of the round vs the key")
    unparsed: int
    right_to_wrong: int = Field(description="panelist answers right last round, wrong now")
    wrong_to_right: int
    all_agree: Accuracy = Field(description="debates where every panelist gave the same answer")
    pairs_agree: Accuracy = Field(description="panelist pairs giving the same valid answer")


class BatchScore(Score):
    debates: int
    panelists: list[str]
    rounds: int
    sc_k: int = Field(description="k of SC@k: the generations the debate used, seats x rounds")
    rows: list[ScoreRow]
    tests: list[PairedTest] = Field(description="empty with one round: no debate")
    flips: list[Flips] = Field(description="per seat, then all seats; empty with one round")
    per_round: list[RoundScore]
    other_tokens: float = Field(description="tokens per question of summaries and labels")
    repeated_questions: int = Field(description="questions scored in more than one debate")
    not_scored: int = Field(description="open questions or runs without an answer key")
    unfinished: int = Field(description="runs still running or interrupted")
    tie_rules: list[TieRule] = list(TIE_RULES)
    tie_seed: int = Field(description="the seed of the random tie rule")
    answers: AnswerReading | None = Field(
        default=None, description="free text: the answer rule read by and the parse rates; "
        "None: structured turns, read under their grammar",
    )  # fmt: skip


@dataclass(frozen=True)
class Way:
    """A way of answering, debate by debate: the rows and tests are built from these."""

    label: str
    calls: int
    right: dict[TieRule, list[bool]]
    tied: list[bool] | None  # None: takes no vote
    unparsed: int
    answers: int
    tokens: list[int]


def _right(record: RunRecord, answer: str | None) -> bool:
    return is_correct(record.question_kind, answer, record.answer_key)


def majority_right(record: RunRecord, round_no: int, rule: TieRule = "wrong") -> bool:
    """Whether the round's majority is right under a tie rule (seed TIE_SEED)."""
    seats = [p.name for p in record.panelists]
    answers = [answer_of(t) for t in round_turns(record, seats, round_no)]
    top = leaders(record.question_kind, answers)
    return _right(record, decide(top, rule, draw_key(record, f"round {round_no}", TIE_SEED)))


def scorable(record: RunRecord) -> bool:
    return record.question_kind != "open" and record.answer_key is not None


def _check_alike(records: list[RunRecord]) -> tuple[list[str], int]:
    names = [p.name for p in records[0].panelists]
    rounds = records[0].rounds
    for r in records[1:]:
        if [p.name for p in r.panelists] != names or r.rounds != rounds:
            raise ConfigError(
                f"run {r.run_id} has another panel or round count than run {records[0].run_id}; "
                "score runs of one panel and round count together"
            )
    return names, rounds


def _single(records: list[RunRecord], name: str, seat: int) -> Way:
    turns = [r.turn(1, name) for r in records]
    right = [_right(r, answer_of(t)) for r, t in zip(records, turns, strict=True)]
    return Way(
        label=f"Single: {name} (seat {seat}, round 1)",
        calls=1,
        right={rule: right for rule in TIE_RULES},
        tied=None,
        unparsed=sum(answer_of(t) is None for t in turns),
        answers=len(records),
        tokens=[turn_tokens(t) for t in turns],
    )


def _vote(
    records: list[RunRecord],
    ballots: list[list[TurnRecord | None]],
    label: str,
    way: str,
    calls: int,
    tokens: list[int],
    tie_seed: int,
) -> Way:
    """The majority of each debate's ballot (its turns, in seat order) under each rule."""
    right: dict[TieRule, list[bool]] = {rule: [] for rule in TIE_RULES}
    tied, unparsed = [], 0
    for record, turns in zip(records, ballots, strict=True):
        answers = [answer_of(t) for t in turns]
        unparsed += sum(a is None for a in answers)
        top = leaders(record.question_kind, answers)
        tied.append(len(top) > 1)
        key = draw_key(record, way, tie_seed)
        for rule in TIE_RULES:
            right[rule].append(_right(record, decide(top, rule, key)))
    return Way(
        label=label,
        calls=calls,
        right=right,
        tied=tied,
        unparsed=unparsed,
        answers=sum(len(b) for b in ballots),
        tokens=tokens,
    )


def _sc_k(records: list[RunRecord], names: list[str], rounds: int, tie_seed: int) -> Way | str:
    """SC@k from the records' samples, or why it cannot be scored."""
    k = len(names) * rounds
    pools = [sample_pool(r, names, rounds) for r in records]
    full = [p for p in pools if p is not None]
    if len(full) < len(pools):
        why = (
            "no samples in these records"
            if not any(r.samples for r in records)
            else f"only {len(full)} of {len(records)} records hold {rounds} answers a seat"
        )
        return f"not run ({why}: run with --vote {k})"
    label = f"SC@{k}: majority of {k} independent answers"
    tokens = [sum(turn_tokens(t) for t in p) for p in full]
    return _vote(records, full, label, f"sc{k}", k, tokens, tie_seed)


def _row(way: Way) -> ScoreRow:
    n = len(way.tokens)  # one per debate, like each rule's list of right
    return ScoreRow(
        label=way.label,
        calls=way.calls,
        tokens=fmean(way.tokens),
        accuracy={rule: Accuracy(correct=sum(r), total=n) for rule, r in way.right.items()},
        ties=None if way.tied is None else sum(way.tied),
        unparsed=way.unparsed,
        answers=way.answers,
    )


def _mean_row(records: list[RunRecord], singles: list[Way]) -> ScoreRow:
    shares = [fmean(w.right["first"][i] for w in singles) for i in range(len(records))]
    acc = Accuracy(
        correct=sum(sum(w.right["first"]) for w in singles),
        total=len(records) * len(singles),
        item_stderr=pstdev(shares) / math.sqrt(len(shares)),
    )
    return ScoreRow(
        label=f"Single: mean of the {len(singles)} seats (round 1)",
        calls=1,
        tokens=fmean(fmean(w.tokens[i] for w in singles) for i in range(len(records))),
        accuracy={rule: acc for rule in TIE_RULES},
        ties=None,
        unparsed=sum(w.unparsed for w in singles),
        answers=sum(w.answers for w in singles),
    )


def _not_run(label: str, calls: int, why: str) -> ScoreRow:
    return ScoreRow(
        label=label, calls=calls, tokens=None, accuracy={}, ties=None, unparsed=0, answers=0,
        not_run=why,
    )  # fmt: skip


def _paired(debate: Way, baseline: Way, name: str, rule: TieRule) -> PairedTest:
    pairs = Counter(zip(debate.right[rule], baseline.right[rule], strict=True))
    a, b, c, d = pairs[True, True], pairs[True, False], pairs[False, True], pairs[False, False]
    low, high = stats.newcombe_paired(a, b, c, d)
    return PairedTest(
        rule=rule,
        debate=debate.label,
        baseline=name,
        both_right=a,
        debate_only=b,
        baseline_only=c,
        both_wrong=d,
        difference=(b - c) / (a + b + c + d),
        ci_low=low,
        ci_high=high,
        p_value=stats.mcnemar_exact(b, c),
    )


def _flips(records: list[RunRecord], names: list[str], rounds: int) -> list[Flips]:
    out = []
    for name in [*names, None]:
        seats = names if name is None else [name]
        r2w = w2r = 0
        for rec in records:
            for seat in seats:
                before = _right(rec, answer_of(rec.turn(1, seat)))
                after = _right(rec, answer_of(rec.turn(rounds, seat)))
                r2w += before and not after
                w2r += after and not before
        p = stats.binomial_two_sided(w2r, w2r + r2w)
        out.append(Flips(seat=name or "all seats", right_to_wrong=r2w, wrong_to_right=w2r,
                         p_value=p))  # fmt: skip
    return out


def _round(records: list[RunRecord], names: list[str], round_no: int) -> RoundScore:
    n = len(records)
    individual = unparsed = r2w = w2r = unanimous = pairs = 0
    for rec in records:
        answers = {p: answer_of(rec.turn(round_no, p)) for p in names}
        individual += sum(_right(rec, a) for a in answers.values())
        unparsed += sum(a is None for a in answers.values())
        if round_no > 1:
            for p in names:
                before = _right(rec, answer_of(rec.turn(round_no - 1, p)))
                now = _right(rec, answers[p])
                r2w += before and not now
                w2r += now and not before
        keys = [None if a is None else position_of(rec.question_kind, a) for a in answers.values()]
        unanimous += None not in keys and len(set(keys)) == 1
        pairs += sum(a is not None and a == b for a, b in combinations(keys, 2))
    n_pairs = len(names) * (len(names) - 1) // 2
    return RoundScore(
        round=round_no,
        individual=Accuracy(correct=individual, total=n * len(names)),
        unparsed=unparsed,
        right_to_wrong=r2w,
        wrong_to_right=w2r,
        all_agree=Accuracy(correct=unanimous, total=n),
        pairs_agree=Accuracy(correct=pairs, total=n * n_pairs),
    )


class NothingToScore(ConfigError):
    """No finished run of a choice or number question with an answer key."""


def score(
    records: list[RunRecord], tie_seed: int = TIE_SEED, answer_rule: str | None = None
) -> BatchScore:
    """The accuracy table of a set of runs of one panel (see the module docstring); with
    an answer rule, their free-text replies read again by it (rereading.py)."""
    if answer_rule is not None:
        check_rule(answer_rule)
    finished = [r for r in records if r.status in ("complete", "failed")]
    scored = [r for r in finished if scorable(r)]
    if not scored:
        raise NothingToScore(
            "nothing to score: no finished run of a choice or number question with an answer key"
        )
    answers = reading(scored, answer_rule)
    if answer_rule is not None:
        scored = [reread(r, answer_rule) for r in scored]
    names, rounds = _check_alike(scored)
    n_seats, k = len(names), len(names) * rounds
    singles = [_single(scored, name, i) for i, name in enumerate(names, start=1)]
    sc_n = _vote(scored, [round_turns(r, names, 1) for r in scored],
                 f"SC@{n_seats}: majority of the round-1 answers", "round 1", n_seats,
                 [debate_tokens(r, 1) for r in scored], tie_seed)  # fmt: skip
    debates = [
        _vote(
            scored,
            [round_turns(r, names, rn) for r in scored],
            f"Debate: majority after round {rn}",
            f"round {rn}",
            n_seats * rn,
            [debate_tokens(r, rn) for r in scored],
            tie_seed,
        )  # fmt: skip
        for rn in range(2, rounds + 1)
    ]
    rows = [*(_row(w) for w in singles), _mean_row(scored, singles), _row(sc_n)]
    baselines = [(singles[0], f"single, seat 1 ({names[0]})"), (sc_n, f"SC@{n_seats}")]
    if rounds > 1:
        sc_k = _sc_k(scored, names, rounds, tie_seed)
        if isinstance(sc_k, Way):
            rows.append(_row(sc_k))
            baselines.append((sc_k, f"SC@{k}"))
        else:
            rows.append(_not_run(f"SC@{k}: majority of {k} independent answers", k, sc_k))
    rows += [_row(w) for w in debates]
    tests = []
    if debates:  # the last round against each baseline, under each tie rule
        tests = [_paired(debates[-1], way, name, r) for r in TIE_RULES for way, name in baselines]
    asked = Counter(r.question_id or r.run_id for r in scored)
    return BatchScore(
        debates=len(scored),
        panelists=names,
        rounds=rounds,
        sc_k=k,
        rows=rows,
        tests=tests,
        flips=_flips(scored, names, rounds) if rounds > 1 else [],
        per_round=[_round(scored, names, r) for r in range(1, rounds + 1)],
        other_tokens=fmean(other_tokens(r) for r in scored),
        repeated_questions=sum(n > 1 for n in asked.values()),
        not_scored=len(finished) - len(scored),
        unfinished=len(records) - len(finished),
        tie_seed=tie_seed,
        answers=answers,
    )
