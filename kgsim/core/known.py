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
and FT-Unknown from Unknown. The threshold is a choice (``run.known_categories`` in kgsim,
``data.known_categories`` in the bridge): adding WeaklyKnown gives "P_correct > 0"
(:func:`known_rule` names it). :func:`rule_agreement` compares two Known rules fact by fact
(SliCK against the exposure ground truth) as a confusion table with Cohen's kappa.

>>> categories(np.array([1.0, 0.5, 0.0, 0.0]), np.array([0.0, 0.0, 0.25, 0.0])).tolist()
['HighlyKnown', 'MaybeKnown', 'WeaklyKnown', 'Unknown']
>>> category(0.0, 0.1), category_counts(["Unknown", "MaybeKnown", "Unknown"])
('WeaklyKnown', {'HighlyKnown': 0, 'MaybeKnown': 1, 'WeaklyKnown': 0, 'Unknown': 2})
>>> known_rule(FT_KNOWN_CATEGORIES), known_rule(("HighlyKnown", "MaybeKnown", "WeaklyKnown"))
('P_greedy > 0', 'P_correct > 0')
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


def known_categories_problem(cats) -> str | None:
    """Why `cats` cannot be FT-Known's categories (None when they can): a non-empty list of SliCK
    categories other than Unknown, each once. Both families' configs ask this one question."""
    allowed = [c for c in CATEGORIES if c != UNKNOWN]
    if isinstance(cats, str) or not isinstance(cats, (list, tuple)) or not cats:
        return f"give a non-empty list of {allowed}"
    bad = [c for c in cats if c not in allowed]
    if bad:
        return f"{bad[0]!r} is not one of {allowed}"
    if len(set(cats)) != len(cats):
        return "name each category once"
    return None


_RULES = {frozenset((HIGHLY_KNOWN,)): "P_greedy = 1", frozenset(FT_KNOWN_CATEGORIES): "P_greedy > 0",
          frozenset((HIGHLY_KNOWN, MAYBE_KNOWN, WEAKLY_KNOWN)): "P_correct > 0"}


def known_rule(cats) -> str:
    """The rule FT-Known's categories amount to, in the rates' terms (or the categories listed)."""
    return _RULES.get(frozenset(cats), "category in {" + ", ".join(c for c in CATEGORIES if c in cats) + "}")


AGREEMENT_LABELS = ("Known", "Unknown", "neither")


def rule_agreement(a_known, a_unknown, b_known, b_unknown) -> dict:
    """Two Known rules compared over the same facts (bool [n] each; a fact may be neither Known nor
    Unknown under a rule, e.g. WeaklyKnown under SliCK's P_greedy > 0, or shown 1-2 times under
    "exposure >= 3").

    Returns ``table`` (counts; rows rule a, columns rule b, each Known / Unknown / neither),
    ``n`` (facts both rules call Known or Unknown), ``agreement`` (the share of those they place
    alike) and ``kappa``: Cohen's kappa on those n facts, (p_o - p_e) / (1 - p_e), NaN when
    p_e = 1 (both rules put every fact in one class) or n = 0.

    >>> r = rule_agreement([1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0], [0, 1, 1, 1])
    >>> r["table"]["Known"], r["n"], r["agreement"], r["kappa"]
    ({'Known': 1, 'Unknown': 1, 'neither': 0}, 4, 0.75, 0.5)
    """
    a_known, a_unknown, b_known, b_unknown = (np.asarray(x, bool) for x in (a_known, a_unknown, b_known, b_unknown))
    if not a_known.shape == a_unknown.shape == b_known.shape == b_unknown.shape or a_known.ndim != 1:
        raise ValueError("the four masks must be 1-d and of one length")
    if (a_known & a_unknown).any() or (b_known & b_unknown).any():
        raise ValueError("a fact cannot be both Known and Unknown under one rule")
    cls_a = [a_known, a_unknown, ~(a_known | a_unknown)]
    cls_b = [b_known, b_unknown, ~(b_known | b_unknown)]
    table = {la: {lb: int((ma & mb).sum()) for lb, mb in zip(AGREEMENT_LABELS, cls_b)}
             for la, ma in zip(AGREEMENT_LABELS, cls_a)}
    kk, ku, uk, uu = (table[x][y] for x in ("Known", "Unknown") for y in ("Known", "Unknown"))
    n = kk + ku + uk + uu
    if n == 0:
        return {"table": table, "n": 0, "agreement": float("nan"), "kappa": float("nan")}
    p_o = (kk + uu) / n
    p_e = ((kk + ku) * (kk + uk) + (uk + uu) * (ku + uu)) / n ** 2
    kappa = (p_o - p_e) / (1 - p_e) if p_e < 1 else float("nan")
    return {"table": table, "n": n, "agreement": p_o, "kappa": kappa}


__all__ = ["AGREEMENT_LABELS", "FT_KNOWN_CATEGORIES", "categories", "category", "category_counts", "known_categories_problem",
           "known_rule", "rule_agreement"]
