"""The consensus line, computed from the summary's groups, never written by a model."""

from __future__ import annotations

from localtable.record import Consensus, PositionGroup


def compute_consensus(groups: list[PositionGroup], panel_size: int) -> Consensus:
    """All N agreed / k of N agreed (a unique largest group of 2+) / No consensus.

    Panelists whose final turn failed are in no group: they count in N and
    never as agreeing.
    """
    sizes = sorted((len(g.members) for g in groups), reverse=True)
    largest = sizes[0] if sizes else 0
    if panel_size > 0 and largest == panel_size:
        return Consensus(
            kind="all", agreeing=largest, total=panel_size, line=f"All {panel_size} models agreed"
        )
    unique = len(sizes) < 2 or sizes[1] < largest
    if largest >= 2 and unique:
        return Consensus(
            kind="majority",
            agreeing=largest,
            total=panel_size,
            line=f"{largest} of {panel_size} agreed",
        )
    return Consensus(kind="none", agreeing=largest, total=panel_size, line="No consensus")
