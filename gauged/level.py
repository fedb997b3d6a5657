"""River level derivations."""

from __future__ import annotations


def freeboard(crest_m: float, level_m: float) -> float:
    """Distance from the water surface down to the top of the river wall (m).

    The smaller, the more dangerous; negative when the water is over the top.
    """
    return crest_m - level_m
