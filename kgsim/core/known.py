"""The SliCK rule (Gekhman et al. 2024): a fact's category from how often the base model answers it.

Both families probe differently (kgsim: one forward pass per exemplar set over token prompts;
llm_bridge: generation in words) but end with the same two rates per fact, P_greedy (the share of
exemplar sets whose greedy answer is correct) and P_sample (the share of correct samples), and
categorise with this one rule:

=============  =============================================
HighlyKnown    P_greedy = 1
MaybeKnown     0 < P_greedy < 1
WeaklyKnown    P_greedy = 0 and P_sample > 0
Unknown        P_greedy = 0 and P_sample = 0
=============  =============================================

Coarse Known is any category but Unknown. The fine-tuning sets draw FT-Known from
:data:`FT_KNOWN_CATEGORIES` (P_greedy > 0: the base model answers the fact greedily at least once)
and FT-Unknown from Unknown.

>>> categories(np.array([1.0, 0.5, 0.0, 0.0]), np.array([0.0, 0.0, 0.25, 0.0])).tolist()
['HighlyKnown', 'MaybeKnown', 'WeaklyKnown', 'Unknown']
>>> category(0.0, 0.1), category_counts(["Unknown", "MaybeKnown", "Unknown"])
('WeaklyKnown', {'HighlyKnown': 0, 'MaybeKnown': 1, 'WeaklyKnown': 0, 'Unknown': 2})
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from kgsim.core.names import CATEGORIES, HIGHLY_KNOWN, MAYBE_KNOWN, UNKNOWN, WEAKLY_KNOWN

FT_KNOWN_CATEGORIES = (HIGHLY_KNOWN, MAYBE_KNOWN)


def categories(p_greedy, p_sample) -> np.ndarray:
    """object [n]: the SliCK category of each fact from its rates (float [n] each, in [0, 1])."""
    p_greedy, p_sample = np.asarray(p_greedy, float), np.asarray(p_sample, float)
    if p_greedy.shape != p_sample.shape:
        raise ValueError(f"p_greedy {p_greedy.shape} and p_sample {p_sample.shape} must have one shape")
    cat = np.full(p_greedy.shape, UNKNOWN, dtype=object)
    cat[p_sample > 0] = WEAKLY_KNOWN
    cat[p_greedy > 0] = MAYBE_KNOWN
    cat[p_greedy >= 1] = HIGHLY_KNOWN
    return cat


def category(p_greedy: float, p_sample: float) -> str:
    """The category of one fact (:func:`categories` of one)."""
    return str(categories([p_greedy], [p_sample])[0])


def category_counts(cats: Iterable[str]) -> dict[str, int]:
    """How many facts fall in each category (every category listed, in SliCK's order)."""
    cats = np.asarray(list(cats), dtype=object)
    return {c: int((cats == c).sum()) for c in CATEGORIES}


__all__ = ["FT_KNOWN_CATEGORIES", "categories", "category", "category_counts"]
