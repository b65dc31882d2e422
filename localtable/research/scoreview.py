"""The score of a batch as text, Markdown, CSV and JSON.

The text and Markdown layouts are prompts/score.txt.j2 and score.md.j2; this
module turns a BatchScore into their tables and notes. CSV (csv module) is one
tidy table whose first column names the table a row belongs to; JSON is the
BatchScore itself (scoring.py documents every field).
"""

from __future__ import annotations

import csv
import io
from typing import Literal

from localtable.research.render import Table
from localtable.research.scoring import Accuracy, BatchScore, ScoreRow
from localtable.research.votes import TieRule
from localtable.templates import TemplateSet, text_value

ScoreFormat = Literal["text", "md", "csv", "json"]
RULE_NAMES: dict[TieRule, str] = {"first": "first seat", "random": "random", "wrong": "wrong"}


def points(acc: Accuracy) -> str:
    return f"{100 * acc.rate:.1f}% ± {100 * acc.stderr:.1f}"


def p_value(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def main_table(s: BatchScore) -> Table:
    def row(r: ScoreRow) -> list[str]:
        shown = [points(r.accuracy[rule]) if r.not_run is None else "not run"
                 for rule in s.tie_rules]  # fmt: skip
        return [
            r.label,
            str(r.calls),
            "-" if r.tokens is None else f"{r.tokens:.0f}",
            *shown,
            "-" if r.ties is None else f"{r.ties} of {s.debates}",
            "-" if r.not_run else f"{r.unparsed} of {r.answers}",
        ]

    return Table(
        header=[
            "ANSWERED BY",
            "CALLS/Q",
            "TOKENS/Q",
            *[f"TIE: {RULE_NAMES[rule].upper()}" for rule in s.tie_rules],
            "TIED",
            "UNPARSED",
        ],  # fmt: skip
        rows=[row(r) for r in s.rows],
        aligns=["l", *["r"] * (4 + len(s.tie_rules))],
    )


def tests_table(s: BatchScore) -> Table:
    rows = []
    for t in s.tests:
        n = t.both_right + t.debate_only + t.baseline_only + t.both_wrong
        rows.append([
            RULE_NAMES[t.rule],
            t.baseline,
            f"{100 * (t.both_right + t.debate_only) / n:.1f}%",
            f"{100 * (t.both_right + t.baseline_only) / n:.1f}%",
            f"{100 * t.difference:+.1f}",
            f"{100 * t.ci_low:+.1f} to {100 * t.ci_high:+.1f}",
            str(t.debate_only),
            str(t.baseline_only),
            p_value(t.p_value),
        ])  # fmt: skip
    return Table(
        header=[
            "TIE",
            "DEBATE AGAINST",
            "DEBATE",
            "BASELINE",
            "DIFF",
            "95% CI",
            "ONLY DEBATE RIGHT",
            "ONLY BASELINE RIGHT",
            "P (MCNEMAR)",
        ],  # fmt: skip
        rows=rows,
        aligns=["l", "l", *["r"] * 7],
    )


def flips_table(s: BatchScore) -> Table:
    return Table(
        header=["SEAT", "RIGHT->WRONG", "WRONG->RIGHT", "P (BINOMIAL)"],
        rows=[
            [f.seat, str(f.right_to_wrong), str(f.wrong_to_right), p_value(f.p_value)]
            for f in s.flips
        ],  # fmt: skip
        aligns=["l", "r", "r", "r"],
    )


def rounds_table(s: BatchScore) -> Table:
    def of(acc: Accuracy) -> str:
        return f"{acc.correct} of {acc.total}"

    return Table(
        header=[
            "ROUND",
            "PANELISTS RIGHT",
            "UNPARSED",
            "RIGHT->WRONG",
            "WRONG->RIGHT",
            "ALL AGREE",
            "PAIRS AGREE",
        ],  # fmt: skip
        rows=[
            [
                str(r.round),
                of(r.individual),
                str(r.unparsed),
                "-" if r.round == 1 else str(r.right_to_wrong),
                "-" if r.round == 1 else str(r.wrong_to_right),
                of(r.all_agree),
                of(r.pairs_agree),
            ]
            for r in s.per_round
        ],
        aligns=["l", *["r"] * 6],
    )


def reading_lines(s: BatchScore) -> list[str]:
    """Under the title: which answer rule read the free-text replies, whether that is
    the rule the runs recorded, and each rule's parse rate; none for structured turns."""
    a = s.answers
    if a is None:
        return []
    recorded = ", ".join(a.recorded)
    if a.chosen is None:
        said = f"Answers read by the rule the runs recorded: {recorded}."
    elif a.differs:
        said = (
            f"Answers read again by the rule {a.chosen} (--answer-rule), not the one the runs "
            f"recorded ({recorded}): every free-text reply re-read."
        )
    else:
        said = f"Answers read by the rule {a.chosen} (--answer-rule), the one the runs recorded."
    rates = " · ".join(
        f"{r.rule} {r.read} of {r.replies}"
        + (f" ({100 * r.read / r.replies:.1f}%)" if r.replies else "")
        for r in a.rates
    )
    return [said, f"Parse rate (replies in which the rule reads a number): {rates}"]


def score_notes(s: BatchScore) -> list[str]:
    seats, k = len(s.panelists), s.sc_k
    notes = [
        "Majority: the position most answers hold; unparsed or failed answers count as "
        "wrong and never vote. A tie for the top goes to the position of the first seat "
        "among the tied (TIE: FIRST SEAT, as in Du et al.'s code), to one of the tied "
        f"positions drawn with seed {s.tie_seed} (TIE: RANDOM: sha256 of the seed, the "
        "question, the run's seed and the row), or counts as wrong (TIE: WRONG). TIED: "
        "debates whose top was tied.",
        "Accuracy ± SE, in points: SE = sqrt(p(1-p)/n) over the debates; for the mean of "
        "the seats, the SE of the share of seats right per debate.",
        f"SC@{seats}: the majority of the {seats} round-1 answers, each given alone. "
        + (
            f"SC@{k}: the majority of {k} independent round-1 answers, {s.rounds} from each "
            "seat (its round-1 answer and the samples a vote mode drew): as many generations "
            "as the debate used."
            if s.rounds > 1
            else "One round: no debate, nothing to compare."
        ),
        "CALLS/Q, TOKENS/Q: the generations and generated tokens per question (mean) each "
        f"row stands for; summaries and labels add {s.other_tokens:.0f} tokens a question, "
        "counted in no row.",
    ]
    notes += [f"{r.label.split(':')[0]}: {r.not_run}." for r in s.rows if r.not_run]
    if s.tests:
        notes.append(
            f"Paired tests: the majority after round {s.rounds} against each baseline under "
            "the same tie rule, debate by debate. P: the exact McNemar test (two-sided "
            "binomial test of ONLY DEBATE RIGHT against ONLY BASELINE RIGHT at 1/2). 95% CI: "
            "of the difference in accuracy, in points, Newcombe's hybrid score interval for "
            "paired proportions (Newcombe 1998, method 10)."
        )
    if s.flips:
        notes.append(
            f"Flips: each seat's round-1 answer against its round-{s.rounds} answer, by the "
            "key (unparsed is wrong). P: the exact two-sided binomial test of WRONG->RIGHT "
            "against RIGHT->WRONG at 1/2. The all-seats row pools the seats of a debate, "
            "which are not independent."
        )
    if s.repeated_questions:
        notes.append(
            f"{s.repeated_questions} questions were scored in more than one debate (several "
            "seeds): the tests take every debate as an independent pair, which overstates "
            "the evidence."
        )
    if s.not_scored:
        notes.append(
            f"{s.not_scored} finished runs have no answer key (open questions): not scored."
        )
    if s.unfinished:
        notes.append(f"{s.unfinished} runs are unfinished (running or interrupted): not scored.")
    return notes


CSV_COLUMNS = [
    "table", "label", "tie_rule", "round", "calls", "tokens", "correct", "total", "accuracy",
    "stderr", "ties", "unparsed", "answers", "right_to_wrong", "wrong_to_right", "all_agree",
    "pairs_agree", "pairs_total", "both_right", "debate_only", "baseline_only", "both_wrong",
    "difference", "ci_low", "ci_high", "p_value", "not_run",
]  # fmt: skip


def score_csv(s: BatchScore) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in s.rows:
        base = {"table": "accuracy", "label": r.label, "calls": r.calls, "ties": r.ties,
                "unparsed": r.unparsed, "answers": r.answers, "not_run": r.not_run,
                "tokens": None if r.tokens is None else f"{r.tokens:.1f}"}  # fmt: skip
        if r.not_run:
            w.writerow(base)
        for rule, acc in r.accuracy.items():
            w.writerow({**base, "tie_rule": rule, "correct": acc.correct, "total": acc.total,
                        "accuracy": f"{acc.rate:.4f}", "stderr": f"{acc.stderr:.4f}"})  # fmt: skip
    for t in s.tests:
        w.writerow({"table": "test", "label": f"{t.debate} vs {t.baseline}", "tie_rule": t.rule,
                    "round": s.rounds, "both_right": t.both_right, "debate_only": t.debate_only,
                    "baseline_only": t.baseline_only, "both_wrong": t.both_wrong,
                    "difference": f"{t.difference:.4f}", "ci_low": f"{t.ci_low:.4f}",
                    "ci_high": f"{t.ci_high:.4f}", "p_value": f"{t.p_value:.6g}"})  # fmt: skip
    for f in s.flips:
        w.writerow({"table": "flips", "label": f.seat, "round": s.rounds,
                    "right_to_wrong": f.right_to_wrong, "wrong_to_right": f.wrong_to_right,
                    "p_value": f"{f.p_value:.6g}"})  # fmt: skip
    for rate in s.answers.rates if s.answers else []:
        share = f"{rate.read / rate.replies:.4f}" if rate.replies else None
        w.writerow({"table": "parse_rate", "label": rate.rule, "correct": rate.read,
                    "total": rate.replies, "answers": rate.replies, "accuracy": share})  # fmt: skip
    for rs in s.per_round:
        w.writerow({"table": "round", "label": f"round {rs.round}", "round": rs.round,
                    "calls": len(s.panelists) * rs.round, "correct": rs.individual.correct,
                    "total": rs.individual.total, "accuracy": f"{rs.individual.rate:.4f}",
                    "unparsed": rs.unparsed, "right_to_wrong": rs.right_to_wrong,
                    "wrong_to_right": rs.wrong_to_right, "all_agree": rs.all_agree.correct,
                    "pairs_agree": rs.pairs_agree.correct,
                    "pairs_total": rs.pairs_agree.total})  # fmt: skip
    return out.getvalue()


def render_score(s: BatchScore, fmt: ScoreFormat, templates: TemplateSet, title: str) -> str:
    if fmt == "csv":
        return str(text_value(score_csv(s)))  # no terminal control characters from records
    if fmt == "json":  # JSON escapes control characters itself
        return s.model_dump_json(indent=2) + "\n"
    return templates.render_layout(
        f"score.{'md' if fmt == 'md' else 'txt'}.j2",
        fmt,
        title=title,
        score=s,
        main=main_table(s),
        tests=tests_table(s),
        flips=flips_table(s),
        rounds=rounds_table(s),
        reading=reading_lines(s),
        notes=score_notes(s),
    )
