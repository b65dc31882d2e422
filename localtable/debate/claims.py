"""What a summary says about the panelists, checked against what the record counted.

The summary is the part most readers read, and the code has counted every fact
it may state about the panel: who changed position (debate/positions.py
`changes`), and where each panelist ended (`final_groups`). A small summarizer
still wrote "Qwen 1.5B Skeptic changed their mind" when nobody had, and a
counterpoint can name a panelist who holds the majority's position as the source
of the minority's view. A summary also printed "Qwen 1.5B and Qwen 0.5B endorse open-source
training code, while Qwen 1.5B Skeptic argues against it" over "All 3 models
agreed". This module reads those claims out of a summary's text, by the
panelists' labels and a few verbs, and says which contradict the record; the
protocol refuses such an attempt and tries another seed.

It reads only what a plain sentence says: a panelist named just before "changed",
"switched", "shifted" ... (or "changed X's mind") is said to have changed; one
named before "maintained", "kept", "stayed with" ... a position, view or stance
(or before a negated change: "did not change") is said to have held; "nobody
changed" and "all ... maintained their positions" speak for everyone. A name after
"by", "from", "to" ... is not the subject ("persuaded by X"). Claims it cannot
read are not checked: it refuses what it reads as false, never what it cannot
read. A name set off by commas after the subject ("X, after hearing Y, changed")
is not the subject either. A name that runs a panelist's label on into another's
last word ("Qwen 0.5B Skeptic" beside "Qwen 1.5B Skeptic") names nobody on the
panel (`misnamed`).

A panelist is said to hold another position than some others (`dissents`) when
it "disagrees", "dissents", "holds a different view", "stands alone" ... (apart
from the panelists named after "with" or "from", else from those the clause
before names, else from the panel), or "argues against", "opposes", "objects",
"counters", "is skeptical of" ... set against others: a clause after "but",
"while", "however" ... whose clause before names other panelists who do not
oppose as well, "unlike X", or "this argument" (what the clause before said, so
against the panelists it names). Alone, "X opposes the ban" may well be the
panel's own position, so it is not read; in a counterpoint when all agreed it is
a dissent. A reply without an object of its own ("X counters by stating ...",
"X pushes back.", "X rebuts with ...") sets X against someone: refused when no
panelist holds another position than X's ("Qwen 1.5B Skeptic counters" over "All 3
models agreed").

It reads a yes or no said of a panelist only when it is plain ("X says yes", "X and
Y answer no"), against the leading yes or no of the panelist's final answer; a
stance in a free clause ("X believes it is a good idea to ban them", "X supports
the ban") means yes or no only by what it says, which words cannot tell reliably,
so it is not read. The headline must open with the largest position's stance
(Facts.stance), which the summary grammar also opens it with.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from localtable.debate import positions as pos
from localtable.debate.answers import stance
from localtable.debate.consensus import compute_consensus
from localtable.record import PositionGroup, RunRecord

_STANCE_NOUN = (
    r"(?:positions?|minds?|views?|stances?|answers?|opinions?|sides?|conclusions?|votes?)"
)
# A verb of changing counts when it is about a position: "changed its mind", "switched
# to No", "shifted." ("the change would help", "climate change.", "would change how
# people travel" do not): a past form may also end its clause, a noun never precedes
_ABOUT = rf"(?:\W+\w+){{0,5}}?\W+{_STANCE_NOUN}\b|\s+(?:to|from|towards?)\b"
_NOT_A_NOUN = "".join(
    rf"(?<!\b{w} )" for w in ("the", "a", "an", "this", "that", "any", "some", "no", "climate")
)
_CHANGE = re.compile(
    rf"{_NOT_A_NOUN}\b(?:changed|switched|shifted|revised|reversed|flipped)"
    rf"(?={_ABOUT}|\s*(?:[.;,]|$))"
    rf"|{_NOT_A_NOUN}\b(?:chang(?:e|es|ing)|switch(?:es|ing)?|shift(?:s|ing)?|"
    rf"revis(?:e|es|ing)|revers(?:e|es|ing)|flip(?:s|ping)?)(?={_ABOUT})"
    r"|\b(?:c[oa]me(?:s)? around|(?:was|were) (?:persuaded|convinced|won over)|"
    r"switched sides|moved (?:away )?from|abandon(?:ed|s|ing) (?:its|their|his|her))\b",
    re.IGNORECASE,
)
_HOLD = re.compile(
    r"\b(?:maintain(?:ed|s|ing)|kept|keep(?:s|ing)?|retain(?:ed|s|ing)|stuck|stick(?:s|ing)?|"
    r"stay(?:ed|s|ing)|remain(?:ed|s|ing)|held (?:on ?to|firm)|stood by)"
    rf"(?:\W+\w+){{0,3}}?\W+(?:{_STANCE_NOUN}|ground|unchanged|firm)\b",
    re.IGNORECASE,
)
_NEGATION = re.compile(r"(?:\b(?:not|never|no|without)|n't)\W*$", re.IGNORECASE)
_NOBODY = re.compile(
    r"\b(?:nobody|no one|no-one|none|no panelist|no model|neither|nor)\b", re.IGNORECASE
)
# "the panel shifted" is the panel as a whole (its majority moved): not everyone
_EVERYONE = re.compile(r"\b(?:all|every|each|everyone|everybody|both)\b", re.IGNORECASE)
_NOT_SUBJECT = re.compile(
    r"\b(?:by|from|of|to|with|than|after|unlike|like|against|towards?|for|over|hearing|"
    r"heard|following|citing|echoing|joining|answering|rebutting)\W*$",
    re.IGNORECASE,
)
_CONNECTOR = re.compile(r"^(?:\W|\band\b|\bor\b|\bnor\b|\bboth\b|\bas well as\b)*$", re.IGNORECASE)
_CLAUSE = re.compile(
    r"(?<=[.!?;])\s+|\s+(?:but|while|whereas|although|though|however|yet)\b,?\s*|,\s+and\s+",
    re.IGNORECASE,
)
# Contrasted with the clause before: split off by one of these, or opening with one
_CONTRAST = re.compile(
    r"^\W*(?:but|while|whereas|although|though|however|yet|in contrast|by contrast|"
    r"on the other hand|conversely)\b",
    re.IGNORECASE,
)
# ... or with a name earlier in its own clause ("While X and Y endorse it, Z opposes it")
_SUBORDINATE = re.compile(r"^\W*(?:while|whereas|although|though)\b", re.IGNORECASE)
_UNLIKE = re.compile(r"\b(?:unlike|in contrast to|contrary to|as opposed to)\W+$", re.IGNORECASE)
# Standing apart from others, whatever the question: "disagrees", "holds a different view"
_APART = re.compile(
    r"\b(?:disagree(?:s|d|ing)?|dissent(?:s|ed|ing)?|"
    r"(?:holds?|held|holding|takes?|took|taking|has|had|having|offers?|offered|adopts?|"
    r"adopted)\s+(?:a|an|the)\s+(?:different|differing|opposing|opposite|contrary|"
    rf"contrasting|dissenting|minority)\s+{_STANCE_NOUN}|stands? alone|stood alone|"
    r"breaks? ranks|broke ranks|(?:is|was|remains|remained)\s+(?:the|a)\s+(?:lone|only|sole)\s+"
    r"(?:dissent\w*|holdout|voice|exception|one))\b",
    re.IGNORECASE,
)
# Opposing something: a dissent only when set against other panelists (see above)
_AGAINST = re.compile(
    rf"{_NOT_A_NOUN}\b(?:argu(?:es|ed|ing|e) (?:against|otherwise|the opposite)|"
    r"oppos(?:es|ed|ing|e)|object(?:s|ed|ing)?|reject(?:s|ed|ing)?|counter(?:s|ed|ing)?|"
    r"push(?:es|ed|ing)? back|disput(?:es|ed|ing|e)|rebut(?:s|ted|ting)?|retort(?:s|ed|ing)?|"
    r"demur(?:s|red|ring)?|takes? issue|took issue|begs? to differ|"
    r"(?:is|was|are|were|remains?|remained|seems?|seemed)\s+(?:skeptical|sceptical|doubtful|"
    r"unconvinced|critical)\s+(?:of|about))\b",
    re.IGNORECASE,
)
# ... of what the clause before said: "Z counters this argument" sets Z against the
# panelists that clause names ("Y argues that ...; Z is skeptical of this argument")
_THAT_ARGUMENT = re.compile(
    r"^\s+(?:this|that|these|those|their|his|her|its|such)\s+(?:argument|view|position|"
    r"claim|point|reasoning|idea|stance|answer|conclusion|proposal)s?\b",
    re.IGNORECASE,
)
# A reply to someone: a dissent whatever it answers when it has no object of its own
# ("X counters by stating that ...", "X pushes back.", "X rebuts with ..."): X holds
# another position than some panelist ("X counters the ban" is about the ban: not
# read). "X disagrees" is _APART's; "X disagrees that P" and "X objects to P" may
# well be the panel's own view of P, so they are not read as a reply.
_REPLY = re.compile(
    r"(?:counter|rebut|retort|push|demur|beg)\w*(?: (?:back|to differ))?",
    re.IGNORECASE,
)
_NO_OBJECT = re.compile(r"\s*(?:[.;:,!]|$|(?:by|that|with)\b)", re.IGNORECASE)
# ... which others: some panelist, not one it names (dissents() returns it as the others)
SOMEONE = "*someone*"
# "X says yes", "X answers no": a yes/no stance attributed to a panelist. Only a plain
# yes or no right after a verb of saying is read; "X believes it is a good idea" is a
# free clause this module cannot read reliably, so it is not read.
_SAYS = re.compile(
    r"^,?\s+(?:(?:clearly|firmly|simply|still|also|ultimately)\s+)?"
    r"(?:says?|said|answer(?:s|ed)?|vote(?:s|d)?|repl(?:ies|ied|y)|conclude(?:s|d)?|"
    r"respond(?:s|ed)?)\s*[:,]?\s+(?:with\s+)?(?:a\s+)?[\"'“]?(yes|no)"
    r"(?=[\"'”]*(?:[.,;:!)]|\s*$)|\s+(?:because|since|to|on|as|for)\b)",
    re.IGNORECASE,
)
# After "disagrees with" / "differs from": the panel, not a named panelist
_PANEL = re.compile(
    r"(?:the\s+)?(?:other\w*|rest|majority|panel|group|them|everyone|everybody|both|all)\b",
    re.IGNORECASE,
)
_DISSENT = re.compile(
    r"\b(?:minority|dissent\w*|disagree\w*|lone|holdouts?|held out|the only (?:one|panelist))\b",
    re.IGNORECASE,
)


class Facts(BaseModel):
    """What the record counted, by panelist label (the names the summary was shown)."""

    model_config = ConfigDict(frozen=True)
    labels: list[str]
    changed: list[str]  # labels of the panelists whose position changed at some point
    majority: list[str]  # labels in the unique largest final group (empty: no such group)
    minority: list[str]  # labels with a valid final answer outside it
    all_agreed: bool
    # labels of each final position's holders, largest group first ([]: not known)
    groups: list[list[str]] = []
    # "yes" or "no": the leading stance of the unique largest position (its label, else
    # its panelists' answers, when they share one); None: no such group or no stance
    stance: str | None = None
    # label -> the leading stance ("yes" or "no") of its valid final answer, where it has one
    stances: dict[str, str] = {}


def record_facts(record: RunRecord) -> Facts:
    """What the record counted: who changed position (positions.changes), and where
    the panel ended (positions.final_groups: the unique largest group, if any, and
    the panelists outside it), by the labels the summary is shown."""
    label_of = {p.name: p.label for p in record.panelists}
    groups = pos.final_groups(record)
    all_agreed = compute_consensus(groups, len(record.panelists)).kind == "all"
    sizes = [len(g.members) for g in groups]
    unique = bool(sizes) and (len(sizes) == 1 or sizes[1] < sizes[0])
    majority = groups[0].members if unique and not all_agreed else []
    minority = [m for g in groups[1:] for m in g.members] if majority else []
    changed = dict.fromkeys(name for name, _, _ in pos.changes(record))
    # the leading yes/no of each valid final answer (an open question's)
    stances = {
        t.panelist: said
        for t in record.final_turns()
        if record.question_kind == "open" and t.status == "ok" and t.parsed is not None
        if (said := stance(t.parsed.answer)) is not None
    }
    return Facts(
        labels=[p.label for p in record.panelists],
        changed=[label_of[name] for name in changed if name in label_of],
        majority=[label_of[m] for m in majority if m in label_of],
        minority=[label_of[m] for m in minority if m in label_of],
        all_agreed=all_agreed,
        groups=[[label_of[m] for m in g.members if m in label_of] for g in groups],
        stance=_group_stance(groups[0], stances) if unique and record.question_kind == "open"
        else None,
        stances={label_of[name]: said for name, said in stances.items() if name in label_of},
    )  # fmt: skip


def _group_stance(group: PositionGroup, stances: dict[str, str]) -> str | None:
    """The leading yes/no of a position: its label's ("No, unless ..."), else the one
    every member's answer opens with; None when neither has one."""
    said = {stances.get(m) for m in group.members}
    return stance(group.position) or (said.pop() if len(said) == 1 else None)


def _mentions(text: str, labels: list[str]) -> list[tuple[int, int, str]]:
    """(start, end, label) of each panelist named in the text, longest labels first
    so "Qwen 0.5B Skeptic" is not read as "Qwen 0.5B"; case-insensitive."""
    found: list[tuple[int, int, str]] = []
    taken = [False] * len(text)
    for label in sorted(set(labels), key=len, reverse=True):
        pattern = re.compile(rf"(?<!\w){re.escape(label)}(?!\w)", re.IGNORECASE)
        for m in pattern.finditer(text):
            if not any(taken[m.start() : m.end()]):
                found.append((m.start(), m.end(), label))
                for i in range(m.start(), m.end()):
                    taken[i] = True
    return sorted(found)


def _subjects(clause: str, mentions: list[tuple[int, int, str]], at: int) -> list[str]:
    """The panelists a verb at `at` speaks of: the nearest name before it that is not
    the object of a preposition, with the names joined to it by "and", "," or "nor"."""
    before = [m for m in mentions if m[1] <= at and not _NOT_SUBJECT.search(clause[: m[0]])]
    # "X, like Y, changed": a name set off by commas is not the subject when one precedes
    while (
        len(before) > 1
        and "," in clause[before[-1][1] : at]
        and ("," in clause[before[-2][1] : before[-1][0]])
    ):
        before.pop()
    if not before:
        return []
    group = [before[-1]]
    for m in reversed(before[:-1]):
        if not _CONNECTOR.match(clause[m[1] : group[0][0]]):
            break
        group.insert(0, m)
    return [label for _, _, label in group]


def _object(clause: str, mentions: list[tuple[int, int, str]], end: int) -> str | None:
    """The panelist right after a change verb whose mind it changed ("changed X's mind")."""
    for start, stop, label in mentions:
        if start >= end and not clause[end:start].strip() and clause[stop:].startswith("'s"):
            return label
    return None


def _clauses(text: str) -> list[tuple[str, bool]]:
    """The text's clauses (split as claims() splits them), each with whether it is set
    against the one before ("but", "while", "however" ...)."""
    out: list[tuple[str, bool]] = []
    start, contrasted = 0, False
    for m in _CLAUSE.finditer(text):
        out.append((text[start : m.start()], contrasted))
        contrasted = bool(_CONTRAST.match(m.group().strip()))
        start = m.end()
    out.append((text[start:], contrasted))
    return [(c, was or bool(_CONTRAST.match(c))) for c, was in out if c.strip()]


def _named(clause: str, mentions: list[tuple[int, int, str]]) -> list[str]:
    """The panelists a clause names other than as the object of a preposition."""
    return list(
        dict.fromkeys(
            label for start, _, label in mentions if not _NOT_SUBJECT.search(clause[:start])
        )
    )


def _joined(clause: str, mentions: list[tuple[int, int, str]], at: int) -> list[str]:
    """The panelists named from `at` on, joined by "and", "," or "nor" ("A and B")."""
    out: list[str] = []
    for start, stop, label in mentions:
        if start >= at and _CONNECTOR.match(clause[at:start]):
            out.append(label)
            at = stop
    return out


def _apart_from(clause: str, mentions: list[tuple[int, int, str]], end: int) -> list[str] | None:
    """Whom a verb of standing apart ending at `end` names: the panelists after "with"
    or "from" ([] for the panel: "with the others"); None when it is about something
    else ("disagrees with the ban", "disagrees that it is safe"): not read."""
    rest = clause[end:]
    joined = re.match(r"\s+(?:with|from)\s+", rest, re.IGNORECASE)
    if joined is None:
        return None if re.match(r"\s+that\b", rest, re.IGNORECASE) else []
    at = end + joined.end()
    named = _joined(clause, mentions, at)
    return named if named else ([] if _PANEL.match(clause[at:]) else None)


def _set_apart_from(
    clause: str, contrasted: bool, prev: str, verb: re.Match[str], who: list[str],
    labels: list[str], against_panel: bool, last_named: str,
) -> list[str] | None:  # fmt: skip
    """Whom the panelists `who` are set apart from by `verb` (see the module's
    docstring): the names before it in a "While X ..." clause, after "unlike", in a
    contrasted clause before, after "disagrees with", or in `last_named` (the last
    clause before that names a panelist) for "this argument"; [] for the panel;
    None when the clause sets them against nobody it can read."""
    mentions = _mentions(clause, labels)
    earlier = [x for x in mentions if x[1] <= verb.start()]
    within = [label for label in _named(clause, earlier) if label not in who]
    unlike = [x[2] for x in mentions if _UNLIKE.search(clause[: x[0]]) and x[2] not in who]
    before = [label for label in _named(prev, _mentions(prev, labels)) if label not in who]
    if _SUBORDINATE.match(clause) and within:
        return within
    if unlike:
        return unlike
    if contrasted and before and not _AGAINST.search(prev):
        return before
    if verb.re is _AGAINST and _THAT_ARGUMENT.match(clause[verb.end() :]):
        argued = [label for label in _named(last_named, _mentions(last_named, labels))]
        return [label for label in argued if label not in who] or None
    if verb.re is _APART:  # "X disagrees." already sets X apart from the panel
        named = _apart_from(clause, mentions, verb.end())
        return named if named != [] else before
    if _REPLY.fullmatch(verb.group()) and _NO_OBJECT.match(clause[verb.end() :]):
        return [SOMEONE]
    return [] if against_panel else None  # "X opposes it" alone: perhaps the panel's view


def dissents(
    text: str, labels: list[str], *, against_panel: bool = False
) -> list[tuple[str, list[str]]]:
    """(label, the labels it is said to hold another position than; [] for the panel)
    for each panelist the text sets apart (see the module's docstring); with
    `against_panel` (a counterpoint when all agreed) a verb of opposing alone counts."""
    out: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    clauses = _clauses(text)
    last_named = ""
    for i, (clause, contrasted) in enumerate(clauses):
        prev = clauses[i - 1][0] if i else ""
        if prev and _mentions(prev, labels):
            last_named = prev
        mentions = _mentions(clause, labels)
        for verb in [*_APART.finditer(clause), *_AGAINST.finditer(clause)]:
            lead = clause[: verb.start()]
            if _NOBODY.search(lead) or _NEGATION.search(lead[-24:]):
                continue
            who = _subjects(clause, mentions, verb.start())
            if not who:
                continue
            others = _set_apart_from(
                clause, contrasted, prev, verb, who, labels, against_panel, last_named
            )
            if others is not None:
                for label in who:
                    out[(label, tuple(others))] = others
    return [(label, others) for (label, _), others in out.items()]


def _false_dissent(who: str, others: list[str], facts: Facts, where: str) -> str | None:
    """Why the record contradicts `who` holding another position than `others` (or
    than the panel, for []), or None when it does not."""
    if facts.all_agreed:
        if where == "counterpoint":
            return f"the counterpoint has {who} dissent, but all {len(facts.labels)} agreed"
        return f"it says {who} holds another position, but all {len(facts.labels)} agreed"
    groups = facts.groups or [facts.majority]
    group_of = {label: i for i, g in enumerate(groups) for label in g}
    if others == [SOMEONE]:  # another position than some panelist's
        if who in group_of and len(groups) == 1:
            return f"it says {who} replies to another position, but no panelist holds one"
        return None
    same = [o for o in others if who in group_of and group_of.get(o) == group_of[who]]
    if same:
        return (
            f"it says {who} holds another position than {', '.join(same)}, but they hold "
            "the same one"
        )
    if not others and who in facts.majority:
        return f"it says {who} holds another position, but {who} holds the majority's"
    return None


def claims(text: str, labels: list[str]) -> list[tuple[str, str]]:
    """(label or "*nobody*" or "*everyone*", "changed" or "held") for each claim read
    in the text, in order."""
    out: list[tuple[str, str]] = []
    for clause in _CLAUSE.split(text):
        if not clause:
            continue
        mentions = _mentions(clause, labels)
        for m in _CHANGE.finditer(clause):
            lead = clause[: m.start()]
            nobody = bool(_NOBODY.search(lead))
            negated = nobody or bool(_NEGATION.search(lead[-24:]))
            target = _object(clause, mentions, m.end())
            who = [target] if target else _subjects(clause, mentions, m.start())
            if who:
                out += [(label, "held" if negated else "changed") for label in who]
            elif nobody:
                out.append(("*nobody*", "changed"))
            elif _EVERYONE.search(lead):
                out.append(("*everyone*", "changed"))
        for m in _HOLD.finditer(clause):
            who = _subjects(clause, mentions, m.start())
            if who:
                out += [(label, "held") for label in who]
            elif _EVERYONE.search(clause[: m.start()]):
                out.append(("*everyone*", "held"))
    return out


def said(text: str, labels: list[str]) -> list[tuple[str, str]]:
    """(label, "yes" or "no") for each panelist the text says answered yes or no in
    plain words ("X says yes", "X and Y answer no"); see _SAYS."""
    out: list[tuple[str, str]] = []
    for clause in _CLAUSE.split(text):
        mentions = _mentions(clause or "", labels)
        for start, end, _ in mentions:
            m = _SAYS.match(clause[end:])
            if m is None or _NOT_SUBJECT.search(clause[:start]):
                continue
            out += [(label, m.group(1).lower()) for label in _subjects(clause, mentions, end)]
    return list(dict.fromkeys(out))


def misnamed(text: str, labels: list[str]) -> list[str]:
    """Names that run a panelist's label on into the last word of another's: "Qwen
    0.5B Skeptic" on a panel of "Qwen 0.5B" and "Qwen 1.5B Skeptic" (a 1.5B
    summarizer wrote it, when all agreed, as the source of a reservation). Nobody
    on the panel has that name."""
    # a word such as a persona's ("Skeptic"): not a size ("1.5B") nor a letter ("Panelist A")
    last_words = {
        word.casefold()
        for label in labels
        for word in label.split()[1:][-1:]
        if word.isalpha() and len(word) >= 3
    }
    out = []
    for _, end, label in _mentions(text, labels):
        word = re.match(r" (\w+)\b", text[end:])
        if word and word.group(1).casefold() in last_words:
            out.append(f"{label} {word.group(1)}")
    return out


def contradictions(
    summary: str, counterpoint: str, facts: Facts, headline: str | None = None
) -> list[str]:
    """The claims of a summary that the record contradicts, each in a few words; the
    headline (when given) must open with the majority's stance (Facts.stance)."""
    problems = [
        f"it names {name}, who is not on the panel"
        for text in (summary, counterpoint)
        for name in misnamed(text, facts.labels)
    ]
    if headline is not None and facts.stance and stance(headline) != facts.stance:
        size = len(facts.groups[0]) if facts.groups else len(facts.majority)
        problems.append(
            f"the headline does not open with {facts.stance.capitalize()}, the stance of the "
            f"largest position ({size} of {len(facts.labels)})"
        )
    for text in (summary, counterpoint):
        for who, what in said(text, facts.labels):
            if facts.stances.get(who, what) != what:
                problems.append(
                    f"it says {who} answered {what}, but {who}'s answer was {facts.stances[who]}"
                )
    changed = set(facts.changed)
    for who, what in claims(summary, facts.labels):
        if who == "*nobody*" and changed:
            problems.append(f"it says nobody changed position, but {', '.join(facts.changed)} did")
        elif who == "*everyone*" and what == "held" and changed:
            problems.append(
                f"it says everyone kept their position, but {', '.join(facts.changed)} changed"
            )
        elif who == "*everyone*" and what == "changed" and set(facts.labels) - changed:
            kept = [label for label in facts.labels if label not in changed]
            problems.append(f"it says everyone changed position, but {', '.join(kept)} never did")
        elif who in facts.labels and what == "changed" and who not in changed:
            problems.append(f"it says {who} changed position, but {who} never did")
        elif who in facts.labels and what == "held" and who in changed:
            problems.append(f"it says {who} kept its position, but {who} changed it")
    for where, text in (("summary", summary), ("counterpoint", counterpoint)):
        against_panel = where == "counterpoint" and facts.all_agreed
        for who, others in dissents(text, facts.labels, against_panel=against_panel):
            problem = _false_dissent(who, others, facts, where)
            if problem is not None:
                problems.append(problem)
    named = [label for _, _, label in _mentions(counterpoint, facts.labels)]
    if facts.all_agreed and named and _DISSENT.search(counterpoint):
        problems.append(
            f"the counterpoint has {named[0]} dissent, but all {len(facts.labels)} agreed"
        )
    elif facts.majority and facts.minority and named and not set(named) & set(facts.minority):
        problems.append(
            f"the counterpoint names {named[0]}, who holds the majority's position, as "
            f"its source, not {', '.join(facts.minority)}"
        )
    return list(dict.fromkeys(problems))
