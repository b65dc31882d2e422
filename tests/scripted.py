"""Replies that fit localtable's grammars, for the fake backend and the fake server:
the reply is read off the grammar, so a grammar change that the protocol does not
expect shows up as an unusable turn in the tests that use them."""

from __future__ import annotations

import json
import re


def scripted_reply(grammar: str, answer: str, letter: str | None = None) -> str:
    """A summary, a set of position labels or a turn, whichever the grammar asks for;
    every panelist holds one view (position A) and keeps it, unless a later-round turn
    is told which `letter` to name (a change when it is not the one it held)."""
    if not grammar:  # free text (a protocol's): any words, the answer last
        return f"Thinking it through, {answer}"
    root = grammar.splitlines()[0]
    if root.startswith('root ::= "Yes" | "No"'):  # what a reasoning concludes (quality)
        return "No"
    if root.startswith('root ::= "Summary'):
        # a minority's counterpoint opens with its names and a verb (summary.gbnf.j2)
        opener = re.search(r'^counterpoint ::= ("(?:[^"\\]|\\.)*")', grammar, re.MULTILINE)
        verb = re.search(r'^voice1 ::= ("(?:[^"\\]|\\.)*")', grammar, re.MULTILINE)
        counterpoint = "none was raised."
        # the largest position's yes or no opens the headline (summary.gbnf.j2)
        stance = re.search(r'^headline ::= "(Yes|No)"', grammar, re.MULTILINE)
        headline = "The panel agreed on one view."
        if stance:
            headline = f"{stance.group(1)}, the panel agreed."
        if opener and verb:
            counterpoint = f"{json.loads(opener.group(1))}{json.loads(verb.group(1))}that it costs."
        return (
            f"Summary: everyone said the same thing.\nCounterpoint: {counterpoint}\n"
            f"Answer: {headline}"
        )
    if root.startswith("root ::= new"):
        first = next(x for x in grammar.splitlines() if re.match(r"new\d+ ::=", x))
        declared = re.findall(r'"Position ([A-H]): "', first)
        members = [m for m in re.findall(r'"([^"]+): " letters', first)]
        lines = [f"Position {x}: one view" for x in declared]
        letter = declared[0] if declared else "A"
        return "\n".join([*lines, *(f"{m}: {letter}" for m in members)])
    fields = re.findall(r'"([A-Za-z ]+): "', root)
    if "Answer" not in fields and '"\\nAnswer: "' in grammar:
        fields.append("Answer")  # the Position line goes on into the answer of its stance
    values = {
        "Reasoning": "because it is so.",
        "Influenced by": "nobody",
        "Decision": "maintained",
        "Position": "A",
        "Answer": answer,
    }
    kept = re.search(r'decision-position ::= \(?"maintained\\nPosition: ([A-H])"', grammar)
    if kept:  # the Decision line decides the Position line: keep the letter held
        values["Decision"] = f"maintained\nPosition: {kept.group(1)}"
    if letter is not None:
        values["Position"] = letter
        if kept:
            held = kept.group(1)
            decision = "maintained" if letter == held else "changed"
            values["Decision"] = f"{decision}\nPosition: {letter}"
    return "\n".join(f"{f}: {values[f]}" for f in fields)
