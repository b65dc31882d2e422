"""Replies that fit localtable's grammars, for the fake backend and the fake server:
the reply is read off the grammar, so a grammar change that the protocol does not
expect shows up as an unusable turn in the tests that use them."""

from __future__ import annotations

import re


def placements(positions: list[str], start: int, assigned: dict[str, str]) -> str:
    """The labeller's reply placing each panelist (in order) on a letter: the new
    positions are `positions`, lettered from number `start`; an earlier letter is
    "position X", a letter placed before in the list "same as NAME", else "new: LABEL"."""
    abc = "ABCDEFGH"
    first: dict[str, str] = {}
    lines = []
    for name, letter in assigned.items():
        if letter in first:
            lines.append(f"{name}: same as {first[letter]}")
            continue
        first[letter] = name
        if abc.index(letter) < start:
            lines.append(f"{name}: position {letter}")
        else:
            lines.append(f"{name}: new: {positions[abc.index(letter) - start]}")
    return "\n".join(lines)


def scripted_reply(grammar: str, answer: str) -> str:
    """A summary, a set of position labels or a turn, whichever the grammar asks for;
    every panelist holds one view (position A) and keeps it."""
    root = grammar.splitlines()[0] if grammar else ""
    if root.startswith('root ::= "Summary'):
        return (
            "Summary: everyone said the same thing.\nCounterpoint: none was raised.\n"
            "Answer: The panel agreed on one view."
        )
    if root.startswith("root ::= place"):
        members = re.findall(r'^place\d+ ::= "([^"]+): "', grammar, re.M)
        labelled = '"position "' in grammar
        first = members[0]
        return "\n".join(
            f"{m}: position A"
            if labelled
            else f"{m}: new: one view"
            if m == first
            else f"{m}: same as {first}"
            for m in members
        )
    fields = re.findall(r'"([A-Za-z ]+): "', root)
    values = {
        "Reasoning": "because it is so.",
        "Influenced by": "nobody",
        "Decision": "maintained",
        "Position": "A",
        "Answer": answer,
    }
    return "\n".join(f"{f}: {values[f]}" for f in fields)
