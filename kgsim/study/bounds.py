"""Intervals kept inside what their quantities can take: proportions (accuracies, rates, shares) in
[0, 1], gaps and kappa in [-1, 1]. Student t over a few seeds near a bound reaches past it; cutting
drops only impossible values, so coverage is kept (issue 13: accuracy intervals never leave [0, 100]).
"""
from __future__ import annotations

from kgsim.core.names import ERROR_CLASSES

__all__ = ["cut_to_unit", "cut_proportions", "PROPORTION_TREES", "PROPORTION_SUBTREES", "PROPORTION_KEYS",
           "SIGNED_KEYS"]


def cut_to_unit(intervals: dict) -> dict:
    """A nested dict of :func:`interval` leaves (proportions) with each interval cut to [0, 1]."""
    if "mean" in intervals:
        n = intervals["n"]
        return intervals | ({"lo": max(0.0, intervals["lo"]), "hi": min(1.0, intervals["hi"])} if n >= 2 else {})
    return {k: cut_to_unit(v) for k, v in intervals.items()}


PROPORTION_TREES = ("accuracy", "two_hop", "recall_cot", "transitions")      # subtrees of proportions only
PROPORTION_KEYS = frozenset({"statement_acc_exposed", "statement_acc_never_shown", "chance", "extraction_rate",
                             "qa_acc_statement_only_known", "es_dev_acc", "agreement", *ERROR_CLASSES})
PROPORTION_SUBTREES = ("residual", "residual_no_pull")   # keys whose subtrees hold proportions only
SIGNED_KEYS = frozenset({"kappa", "gap"})    # differences of proportions and kappa: [-1, 1]; "gaps" whole


def cut_proportions(agg: dict) -> dict:
    """An aggregate (:func:`aggregate`) with every proportion's interval cut to [0, 1]
    (:data:`PROPORTION_TREES` and :data:`PROPORTION_SUBTREES` whole, :data:`PROPORTION_KEYS` where
    they occur) and every gap's and kappa's to [-1, 1] (``gaps`` whole, :data:`SIGNED_KEYS`); counts,
    steps and fitted parameters untouched. Cutting drops only impossible values.

    >>> iv = lambda m, lo, hi: {"mean": m, "lo": lo, "hi": hi, "n": 3}
    >>> agg = {"base": {"memorisation": {"chance": iv(0.001, -0.002, 0.004), "n_facts": iv(5.3, -2.1, 12.8)}}}
    >>> cut = cut_proportions(agg)["base"]["memorisation"]
    >>> cut["chance"]["lo"], cut["n_facts"]["lo"] < 0
    (0.0, True)
    """
    leaf = lambda v: isinstance(v, dict) and "mean" in v and "lo" in v                # noqa: E731
    signed = lambda v: v | {"lo": max(-1.0, v["lo"]), "hi": min(1.0, v["hi"])} if v["n"] >= 2 else v  # noqa: E731

    def walk(tree, cut):
        if not isinstance(tree, dict) or leaf(tree):
            return cut(tree) if cut and leaf(tree) else tree
        return {k: cut_to_unit(v) if leaf(v) and k in PROPORTION_KEYS else signed(v) if leaf(v) and k in SIGNED_KEYS
                else walk(v, cut_to_unit if k in PROPORTION_SUBTREES else cut) for k, v in tree.items()}
    return {k: walk(v, cut_to_unit if k in PROPORTION_TREES else signed if k == "gaps" else None)
            for k, v in agg.items()}
