"""What every statement check shares: the result type, edge-set alignment, weighted masses, bounds.

A check works on boolean masks over one test set T (N facts) and one weight vector w over T.
:func:`align` turns :class:`kgsim.core.edges.EdgeSet` objects (or raw boolean masks) into such masks,
refusing sets over different test sets, and records whether they all carry the same weights (an
assumption several statements name). :func:`mass` is w(E).

>>> T = np.array([7, 8, 9])
>>> e = EdgeSet(T, np.array([1, 0, 1], bool), weights=np.array([1.0, 1.0, 2.0]))
>>> a = align(e, np.array([1, 1, 0], bool))          # the mask takes e's weights
>>> a.n, mass(a.masks[0], a.w), mass(a.masks[1], a.w), a.same_weights
(3, 0.75, 0.5, True)
>>> align(e, np.array([1, 1, 0], bool), weights=[1, 1, 1]).same_weights
False
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Sequence

import numpy as np

from kgsim.core.edges import EdgeSet

KINDS = ("exact", "probabilistic", "empirical")

EXACT_TOL = 1e-9
"""Tolerance of the exact checks: floating-point rounding of sums of up to ~10^7 weights, nothing
else. Under uniform weights every quantity is a multiple of 1/N and the checks are exact to it."""


@dataclass(frozen=True)
class CheckResult:
    """One statement held against one instance.

    ``lhs`` and ``rhs`` are the two sides the statement equates or compares (each check's docstring
    says which), ``residual`` is ``lhs - rhs`` unless the check says otherwise, ``holds`` whether
    the statement's conclusion is true on this instance within ``tolerance``. ``assumptions`` holds
    ``(name, held)`` pairs: an exact statement whose assumptions all held must hold; one whose
    assumptions did not hold is reported as computed, never skipped. ``scope`` names the instance
    (e.g. ``"con · id · 3-shot vs zero-shot"``) when a run holds many.

    A check that is a hypothesis test sets ``p_value``: then ``holds`` is p ≥ α and ``tolerance`` is
    that level α (not a bound on the residual); None for every other check.
    """

    name: str
    lhs: float
    rhs: float
    holds: bool
    tolerance: float
    kind: str
    assumptions: tuple[tuple[str, bool], ...]
    residual: float
    detail: str = ""
    scope: str = ""
    p_value: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"CheckResult.kind = {self.kind!r}: must be one of {KINDS}")
        object.__setattr__(self, "assumptions", tuple((str(n), bool(h)) for n, h in self.assumptions))
        for name in ("lhs", "rhs", "tolerance", "residual"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "holds", bool(self.holds))
        if self.p_value is not None:
            object.__setattr__(self, "p_value", float(self.p_value))

    @property
    def assumptions_held(self) -> bool:
        """True iff every named assumption held on this instance."""
        return all(held for _, held in self.assumptions)

    def to_json(self) -> dict:
        """A JSON-ready dict (``assumptions`` as a list of ``[name, held]``; ``p_value`` only where set)."""
        d = {"name": self.name, "scope": self.scope, "kind": self.kind, "lhs": self.lhs, "rhs": self.rhs,
             "holds": self.holds, "tolerance": self.tolerance, "residual": self.residual,
             "assumptions": [[n, h] for n, h in self.assumptions], "detail": self.detail}
        return d if self.p_value is None else {**d, "p_value": self.p_value}


# --------------------------------------------------------------------------------------------
# Alignment of edge sets over one test set
# --------------------------------------------------------------------------------------------

SetLike = EdgeSet | np.ndarray
"""An edge set: an EdgeSet, or a boolean mask over the test set T."""


@dataclass(frozen=True)
class Aligned:
    masks: list[np.ndarray]              # bool [N] per input set
    own_weights: list[np.ndarray | None] # each set's own weights (None = uniform)
    w: np.ndarray | None                 # the common weights: the first set's
    same_weights: bool                   # every set carries the same weights as the first
    n: int
    test_ids: np.ndarray | None = field(default=None)


def _normalised(weights, n: int) -> np.ndarray | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"weights must be {n} finite non-negative numbers with a positive sum, "
                         f"got shape {w.shape}")
    return w / w.sum()


def weights_equal(w1: np.ndarray | None, w2: np.ndarray | None, n: int) -> bool:
    """Whether two weight vectors (None = uniform) describe the same distribution over T.

    >>> weights_equal(None, np.full(4, 0.25), 4), weights_equal(None, np.array([0.5, 0.5, 0, 0]), 4)
    (True, False)
    """
    if w1 is w2:
        return True
    a = np.full(n, 1.0 / n) if w1 is None else w1
    b = np.full(n, 1.0 / n) if w2 is None else w2
    return bool(np.array_equal(a, b) or np.allclose(a, b, rtol=0.0, atol=1e-12))


def align(*sets, weights=None, names: Sequence[str] | None = None) -> Aligned:
    """Masks and weights of edge sets over one test set T.

    Each set is an :class:`EdgeSet` (its own ``weights``) or a boolean mask over T, weighted by
    ``weights``; if that is None, a mask takes the weights of the first EdgeSet among ``sets``
    (uniform if there is none). Raises ValueError if two EdgeSets hold different test ids, if two
    sets differ in N, if a mask is not boolean, or if T is empty.
    """
    names = list(names) if names is not None else [f"set {i}" for i in range(len(sets))]
    if weights is None:
        weights = next((x.weights for x in sets if isinstance(x, EdgeSet)), None)
    masks, own, ids, n = [], [], None, None
    for name, x in zip(names, sets):
        if isinstance(x, EdgeSet):
            m, w, t = x.correct, x.weights, x.test_ids
        else:
            m, t = np.asarray(x), None
            if m.dtype != bool or m.ndim != 1:
                raise ValueError(f"{name}: expected an EdgeSet or a 1-d boolean mask, got {m.dtype} {m.shape}")
            w = _normalised(weights, m.size)
        if n is None:
            n = m.size
        elif m.size != n:
            raise ValueError(f"{name} has N={m.size} test facts, {names[0]} has N={n}: not the same test set T")
        if t is not None:
            if ids is None:
                ids = t
            elif t is not ids and not np.array_equal(t, ids):
                raise ValueError(f"{name} is over a different test set T than the sets before it (same N={n}, "
                                 f"different fact ids)")
        masks.append(m)
        own.append(w)
    if not n:
        raise ValueError("empty test set T (N = 0): no statement is defined on it")
    same = all(weights_equal(own[0], w, n) for w in own[1:])
    return Aligned(masks, own, own[0], same, n, ids)


def mass(mask: np.ndarray, w: np.ndarray | None) -> float:
    """w(E): the weight of the edges in ``mask`` (|E| / N under uniform weights).

    >>> mass(np.array([True, False, True, True]), None)
    0.75
    """
    if w is None:
        return float(np.count_nonzero(mask)) / mask.size
    return float(np.multiply(w, mask).sum())       # ~10x faster than np.dot(w, mask) on bool masks


def sq_mass(mask: np.ndarray, w: np.ndarray | None) -> float:
    """Σ_{i in E} w_i²: the sum of squared ranges Hoeffding needs for Bernoulli variables on E."""
    if w is None:
        return float(np.count_nonzero(mask)) / mask.size ** 2
    return float(np.multiply(w * w, mask).sum())


def hoeffding_radius(sum_sq_ranges: float, delta: float) -> float:
    """The deviation t with P(|X − E X| ≥ t) ≤ δ for a sum X of independent bounded variables.

    Hoeffding (1963): if X = Σ_i X_i with X_i ∈ [a_i, b_i] independent, then
    P(|X − E X| ≥ t) ≤ 2 exp(−2 t² / Σ_i (b_i − a_i)²). Setting the right side to δ gives
    t = sqrt(Σ_i (b_i − a_i)² · ln(2/δ) / 2). ``sum_sq_ranges`` is Σ_i (b_i − a_i)².

    >>> round(hoeffding_radius(1.0, 0.05), 4)
    1.3581
    """
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta = {delta!r}: a failure probability must lie in (0, 1)")
    if sum_sq_ranges < 0:
        raise ValueError(f"sum_sq_ranges = {sum_sq_ranges!r}: must be non-negative")
    return math.sqrt(sum_sq_ranges * math.log(2.0 / delta) / 2.0)


# --------------------------------------------------------------------------------------------
# Tests of two rates (the recovery rates of T1)
# --------------------------------------------------------------------------------------------

FISHER_TIE = 1e-7
"""Relative tolerance under which two tables count as equally likely in :func:`fisher_exact_p`
(R's ``fisher.test`` uses the same): it absorbs rounding in the log recurrence, nothing else."""


def fisher_exact_p(table) -> float:
    """Two-sided p-value of Fisher's exact test of independence in a 2x2 table of counts.

    With rows r₁ = a + b, r₂ = c + d and first column c₁ = a + c fixed, the top-left count x is
    hypergeometric: P(x) = C(r₁, x)·C(r₂, c₁ − x) / C(n, c₁) on max(0, c₁ − r₂) ≤ x ≤ min(r₁, c₁).
    The p-value is the probability of the tables no more likely than the one observed,
    Σ_{P(y) ≤ P(a)} P(y) (ties within a relative :data:`FISHER_TIE`), as scipy.stats.fisher_exact
    computes it. P is built from the ratio P(y+1)/P(y) = (r₁ − y)(c₁ − y) / ((y + 1)(r₂ − c₁ + y + 1))
    summed in logs and normalised over the support, so no factorial is formed. A table with an
    empty row or column has a single possible table and p = 1. Raises ValueError for a table that
    is not 2x2 non-negative integers.

    >>> round(fisher_exact_p([[3, 1], [1, 3]]), 6)          # (1 + 16 + 16 + 1) / 70
    0.485714
    """
    t = np.asarray(table)
    if t.shape != (2, 2) or not np.issubdtype(t.dtype, np.integer) or (t < 0).any():
        raise ValueError(f"a 2x2 table of non-negative integer counts is needed, got {t.dtype} {t.shape}: {t.tolist()}")
    (a, b), (c, d) = (int(v) for v in t[0]), (int(v) for v in t[1])
    r1, r2, c1 = a + b, c + d, a + c
    lo, hi = max(0, c1 - r2), min(r1, c1)
    if lo == hi:
        return 1.0
    y = np.arange(lo, hi, dtype=np.float64)
    log_ratio = np.log(r1 - y) + np.log(c1 - y) - np.log(y + 1) - np.log(r2 - c1 + y + 1)
    log_p = np.concatenate([[0.0], np.cumsum(log_ratio)])            # log P(x) + const, x = lo..hi
    p = np.exp(log_p - log_p.max())
    observed = p[a - lo]
    return float(min(1.0, p[p <= observed * (1 + FISHER_TIE)].sum() / p.sum()))


def wilson_interval(x: float, n: float, z: float) -> tuple[float, float]:
    """Wilson's score interval for a binomial rate x / n at normal quantile z ([0, 1] if n = 0).
    x and n may be non-integer (effective counts)."""
    if n <= 0:
        return 0.0, 1.0
    p = x / n
    centre = (x + z * z / 2) / (n + z * z)
    half = z * math.sqrt(n * p * (1 - p) + z * z / 4) / (n + z * z)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(x1: float, n1: float, x2: float, n2: float, *, alpha: float = 0.05) -> tuple[float, float]:
    """(1 − α) confidence interval for a difference of two independent binomial rates p₁ − p₂ = x₁/n₁ − x₂/n₂:
    Newcombe's hybrid score interval (Newcombe 1998, Stat. Med. 17:873, method 10), which combines
    each rate's Wilson interval (l_i, u_i): [D − sqrt((p₁ − l₁)² + (u₂ − p₂)²),
    D + sqrt((u₁ − p₁)² + (p₂ − l₂)²)], D = p₁ − p₂. (−1, 1) when a rate has n = 0.

    >>> [round(v, 4) for v in newcombe_interval(56, 70, 48, 80)]       # Newcombe's worked example
    [0.0524, 0.3339]
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha = {alpha!r}: a confidence interval's error rate must lie in (0, 1)")
    if n1 <= 0 or n2 <= 0:
        return -1.0, 1.0
    z = -NormalDist().inv_cdf(alpha / 2)           # from the lower tail: exact for tiny α too
    p1, p2 = x1 / n1, x2 / n2
    (l1, u1), (l2, u2) = wilson_interval(x1, n1, z), wilson_interval(x2, n2, z)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def permutation_p(outcomes: np.ndarray, coef: np.ndarray, *, rng: np.random.Generator,
                  n_permutations: int) -> float:
    """Monte Carlo permutation p-value of the statistic |coef · x| against permutations of ``outcomes``.

    ``outcomes`` (bool [M]) are exchangeable under the null hypothesis; ``coef`` (float [M]) is fixed.
    Each of ``n_permutations`` draws shuffles the outcomes over the M positions (``rng``); the p-value
    is (1 + #{draws at least as extreme}) / (1 + n_permutations), a valid p-value for any number of
    draws (P(p ≤ α) ≤ α under the null). Ties count within a relative 1e-9.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations = {n_permutations!r}: need at least one permutation")
    x0 = np.asarray(outcomes, np.float64)
    coef = np.asarray(coef, np.float64)
    k = int(x0.sum())
    if k == 0 or k == x0.size:                     # a single arrangement: nothing to test
        return 1.0
    observed = abs(float(coef @ x0))
    threshold = observed - 1e-9 * max(observed, float(np.abs(coef).max()))
    hits, chunk = 0, max(1, 2_000_000 // x0.size)
    for start in range(0, n_permutations, chunk):
        x = np.tile(x0, (min(chunk, n_permutations - start), 1))   # [draws, M]
        rng.permuted(x, axis=1, out=x)
        hits += int(np.count_nonzero(np.abs(x @ coef) >= threshold))
    return (1 + hits) / (1 + n_permutations)


def result(name: str, lhs: float, rhs: float, holds: bool, *, kind: str, assumptions, tolerance: float = EXACT_TOL,
           residual: float | None = None, detail: str = "", p_value: float | None = None) -> CheckResult:
    """Build a :class:`CheckResult` (residual defaults to lhs − rhs)."""
    return CheckResult(name=name, lhs=lhs, rhs=rhs, holds=holds, tolerance=tolerance, kind=kind,
                       assumptions=tuple(assumptions), residual=lhs - rhs if residual is None else residual,
                       detail=detail, p_value=p_value)
