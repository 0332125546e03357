"""The testbed's formalisation (science.md §2) as pure checks, one per statement.

Every check takes edge sets (:class:`kgsim.core.edges.EdgeSet` objects over one test set T, or boolean
masks over T with a ``weights=`` vector, uniform if None) and returns a
:class:`~proofs.core.CheckResult`. Notation as in science.md: E_kn, E_unk are the accessible edges
of FT-Known and FT-Unknown under the plain prompt P₀; E_kn_p, E_unk_p the same under a prompt P;
gains A = E_p \\ E and losses L = E \\ E_p; w(E) the weight of E; Δ = w(E_kn) − w(E_unk) and
Δ* = w(E_kn_p) − w(E_unk_p).

| check | statement | kind |
|---|---|---|
| :func:`check_p1` | P1 gap as an edge count | exact |
| :func:`check_l1`, :func:`check_l1_gains_only` | L1 gap accounting (and its no-loss form) | exact |
| :func:`check_c1` | C1 common augmentation, nested sets | exact |
| :func:`check_r1` | R1 reversal condition (realised recovery rates) | exact |
| :func:`check_t1` | T1 uniform recovery, by seeded Monte Carlo | probabilistic |
| :func:`check_t1_measured` | T1's prediction held against measured prompt sets | empirical |
| :func:`proofs.recovery.check_t1_equal_rates` | T1's same-q assumption, by Fisher's exact test | empirical |
| :func:`check_cot`, :func:`check_cot_gap` | CoT as path connectivity | empirical |

:func:`check_run` holds them all against a run's measured edge sets (see :mod:`proofs.run`).

>>> kn, unk = np.array([1, 1, 1, 0], bool), np.array([1, 0, 0, 0], bool)
>>> r = check_p1(kn, unk)
>>> r.lhs, r.rhs, r.holds
(0.5, 0.5, True)
"""
from __future__ import annotations

import numpy as np

from kgsim.core.edges import EdgeSet

from .core import (
    EXACT_TOL,
    CheckResult,
    SetLike,
    align,
    hoeffding_radius,
    mass,
    result,
    sq_mass,
)

# Assumption names, as CheckResult.assumptions and docs/counterexamples.md give them.
SAME_W = "same weights w for every edge set"
UNIFORM_W = "uniform weights"
NO_LOSSES = "no losses (L_kn = L_unk = ∅)"
SAME_Q = "same recovery probability q for both models"
NESTED = "nested E_unk ⊆ E_kn"
COMMON_GAINS = "common gains A_kn = A_unk"
GAP_POSITIVE = "Δ > 0 (FT-Known ahead)"


def gains_losses(e0: np.ndarray, e_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A, L) = (E_p \\ E, E \\ E_p) as masks: the edges a prompt gains and loses.

    >>> a, l = gains_losses(np.array([1, 1, 0], bool), np.array([0, 1, 1], bool))
    >>> a.tolist(), l.tolist()
    ([False, False, True], [True, False, False])
    """
    return e_p & ~e0, e0 & ~e_p


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


# --------------------------------------------------------------------------------------------
# P1, L1: identities
# --------------------------------------------------------------------------------------------

def check_p1(e_kn: SetLike, e_unk: SetLike, *, weights=None, count_form: bool = False,
             fact_kn: float | None = None, fact_unk: float | None = None) -> CheckResult:
    """P1, the factuality gap as an edge count (exact).

    Statement: Δ_fact = Fact(θ_kn) − Fact(θ_unk) = w(E_kn \\ E_unk) − w(E_unk \\ E_kn); under
    uniform w, Δ_fact = (|E_kn| − |E_unk|) / N.

    lhs: Fact_kn − Fact_unk, each accuracy under its own set's weights, or as reported elsewhere
    (``fact_kn``, ``fact_unk``, e.g. a probe's own accuracy). rhs: the weighted edge count over the
    symmetric difference (E_kn's weights), or with ``count_form=True`` the unweighted
    (|E_kn| − |E_unk|) / N. Assumptions: both sets carry the same weights; the count form also needs
    uniform weights. Raises ValueError for sets over different test sets.

    >>> check_p1(np.array([1, 0], bool), np.array([0, 1], bool), weights=[3, 1], count_form=True).holds
    False
    """
    al = align(e_kn, e_unk, weights=weights, names=["E_kn", "E_unk"])
    kn, unk = al.masks
    lhs = (mass(kn, al.own_weights[0]) if fact_kn is None else fact_kn) - \
          (mass(unk, al.own_weights[1]) if fact_unk is None else fact_unk)
    assumptions = [(SAME_W, al.same_weights)]
    if count_form:
        rhs = (np.count_nonzero(kn) - np.count_nonzero(unk)) / al.n
        assumptions.append((UNIFORM_W, al.w is None or bool(np.allclose(al.w, 1.0 / al.n, atol=1e-12))))
    else:
        rhs = mass(kn & ~unk, al.w) - mass(unk & ~kn, al.w)
    holds = abs(lhs - rhs) <= EXACT_TOL
    detail = f"|E_kn|={np.count_nonzero(kn)}, |E_unk|={np.count_nonzero(unk)}, N={al.n}"
    return result("P1 gap as edge count", lhs, rhs, holds, kind="exact", assumptions=assumptions, detail=detail)


def prompt_sets(e_kn, e_unk, e_kn_p, e_unk_p, weights):
    """(alignment, the four masks (E_kn, E_unk, E_kn_p, E_unk_p), (A_kn, L_kn, A_unk, L_unk)) of a
    prompt's sets against the plain prompt's, on one test set."""
    al = align(e_kn, e_unk, e_kn_p, e_unk_p, weights=weights, names=["E_kn", "E_unk", "E_kn_p", "E_unk_p"])
    kn, unk, kn_p, unk_p = al.masks
    a_kn, l_kn = gains_losses(kn, kn_p)
    a_unk, l_unk = gains_losses(unk, unk_p)
    return al, (kn, unk, kn_p, unk_p), (a_kn, l_kn, a_unk, l_unk)


def check_l1(e_kn: SetLike, e_unk: SetLike, e_kn_p: SetLike, e_unk_p: SetLike, *, weights=None) -> CheckResult:
    """L1, gap accounting with gains and losses (exact).

    Statement: Δ* = Δ − [(w(A_unk) − w(L_unk)) − (w(A_kn) − w(L_kn))]; hence Δ* ≤ Δ iff
    FT-Unknown's net gain w(A_unk) − w(L_unk) is at least FT-Known's.

    lhs: Δ* (each prompted set under its own weights); rhs: the accounting (common weights).
    ``holds`` needs both the identity and the iff. Assumption: one w for all four sets. No other:
    the identity is set algebra, true for any prompt and any models.

    >>> kn, unk = np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool)
    >>> r = check_l1(kn, unk, np.array([1, 1, 0, 0], bool), np.array([1, 1, 1, 0], bool))
    >>> r.lhs, r.rhs, r.holds
    (-0.25, -0.25, True)
    """
    al, (kn, unk, kn_p, unk_p), (a_kn, l_kn, a_unk, l_unk) = prompt_sets(e_kn, e_unk, e_kn_p, e_unk_p, weights)
    w = al.w
    delta = mass(kn, w) - mass(unk, w)
    delta_p = mass(kn_p, al.own_weights[2]) - mass(unk_p, al.own_weights[3])
    net_kn = mass(a_kn, w) - mass(l_kn, w)
    net_unk = mass(a_unk, w) - mass(l_unk, w)
    rhs = delta - (net_unk - net_kn)
    identity = abs(delta_p - rhs) <= EXACT_TOL
    iff = (delta_p <= delta + EXACT_TOL) == (net_unk >= net_kn - EXACT_TOL)
    detail = (f"Δ={delta:+.4f}, net gain kn={net_kn:+.4f}, unk={net_unk:+.4f}; identity {_yes(identity)}, "
              f"iff {_yes(iff)}")
    return result("L1 gap accounting", delta_p, rhs, identity and iff, kind="exact",
                  assumptions=[(SAME_W, al.same_weights)], detail=detail)


def check_l1_gains_only(e_kn: SetLike, e_unk: SetLike, e_kn_p: SetLike, e_unk_p: SetLike, *,
                        weights=None) -> CheckResult:
    """L1 for prompts that lose nothing: Δ* ≤ Δ iff w(A_unk) ≥ w(A_kn) (exact).

    The iff of L1 with gains in place of net gains, the form T1 and R1 use. lhs: Δ* − Δ;
    rhs: w(A_kn) − w(A_unk) (equal when nothing is lost). ``holds`` is the iff. Assumptions: no
    losses, one w. Without "no losses" the iff fails in both directions (docs/counterexamples.md).
    """
    al, (kn, unk, kn_p, unk_p), (a_kn, l_kn, a_unk, l_unk) = prompt_sets(e_kn, e_unk, e_kn_p, e_unk_p, weights)
    w = al.w
    change = (mass(kn_p, w) - mass(unk_p, w)) - (mass(kn, w) - mass(unk, w))
    gain_kn, gain_unk = mass(a_kn, w), mass(a_unk, w)
    holds = (change <= EXACT_TOL) == (gain_unk >= gain_kn - EXACT_TOL)
    no_losses = not (l_kn.any() or l_unk.any())
    detail = f"Δ*−Δ={change:+.4f}; w(A_kn)={gain_kn:.4f}, w(A_unk)={gain_unk:.4f}; iff {_yes(holds)}"
    return result("L1 gains-only iff", change, gain_kn - gain_unk, holds, kind="exact",
                  assumptions=[(NO_LOSSES, no_losses), (SAME_W, al.same_weights)], detail=detail)


# --------------------------------------------------------------------------------------------
# C1: common augmentation
# --------------------------------------------------------------------------------------------

def check_c1(e_kn: SetLike, e_unk: SetLike, gained: SetLike, gained_unk: SetLike | None = None, *,
             weights=None) -> CheckResult:
    """C1, common augmentation of nested sets (exact).

    Statement: if E_unk ⊆ E_kn and both models gain the same set A, then
    w(E_kn ∪ A) − w(E_unk ∪ A) = w((E_kn \\ E_unk) \\ A) ≤ w(E_kn) − w(E_unk), and the gap closes
    (reaches 0) iff A ⊇ E_kn \\ E_unk (up to edges of weight 0).

    ``gained`` is A (FT-Known's gains; FT-Unknown's too unless ``gained_unk`` is given).
    lhs: Δ_A = w(E_kn ∪ A_kn) − w(E_unk ∪ A_unk); rhs: Δ; residual Δ_A − Δ (≤ 0 when it holds).
    ``holds`` needs the inequality, the identity and the closure iff. Assumptions: nesting
    E_unk ⊆ E_kn, common gains A_kn = A_unk, one w. Without nesting or without common gains the
    inequality can fail (docs/counterexamples.md).

    >>> kn, unk = np.array([1, 1, 1, 0], bool), np.array([1, 0, 0, 0], bool)
    >>> r = check_c1(kn, unk, np.array([0, 1, 0, 1], bool))
    >>> r.lhs, r.rhs, r.holds
    (0.25, 0.5, True)
    """
    sets = [e_kn, e_unk, gained] + ([] if gained_unk is None else [gained_unk])
    al = align(*sets, weights=weights, names=["E_kn", "E_unk", "A_kn", "A_unk"][: len(sets)])
    kn, unk, a_kn = al.masks[:3]
    a_unk = al.masks[3] if gained_unk is not None else a_kn
    w = al.w
    delta = mass(kn, w) - mass(unk, w)
    delta_a = mass(kn | a_kn, w) - mass(unk | a_unk, w)
    uncovered = kn & ~unk & ~a_kn
    identity = abs(delta_a - mass(uncovered, w)) <= EXACT_TOL
    positive = np.ones(al.n, bool) if w is None else w > 0
    covers = not (uncovered & positive).any()
    closure = (abs(delta_a) <= EXACT_TOL) == covers
    inequality = delta_a <= delta + EXACT_TOL
    assumptions = [(NESTED, not (unk & ~kn).any()),
                   (COMMON_GAINS, bool(np.array_equal(a_kn, a_unk))),
                   (SAME_W, al.same_weights)]
    detail = (f"Δ_A ≤ Δ {_yes(inequality)}; identity Δ_A = w((E_kn∖E_unk)∖A) {_yes(identity)}; "
              f"closure iff {_yes(closure)}")
    return result("C1 common augmentation", delta_a, delta, inequality and identity and closure, kind="exact",
                  assumptions=assumptions, detail=detail)


# --------------------------------------------------------------------------------------------
# T1: uniform recovery (probabilistic, and as an empirical prediction)
# --------------------------------------------------------------------------------------------

def _probability(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} = {p!r}: a probability must lie in [0, 1]")
    return float(p)


def expected_prompt_gap(e_kn: SetLike, e_unk: SetLike, q_kn: float, q_unk: float | None = None, *,
                        loss_kn: float = 0.0, loss_unk: float = 0.0, weights=None) -> float:
    """E[Δ*] when each missing edge of model m is recovered independently with probability q_m and
    each accessible edge is lost with probability loss_m:
    E[Δ*] = Δ + q_kn·w(T∖E_kn) − q_unk·w(T∖E_unk) − loss_kn·w(E_kn) + loss_unk·w(E_unk).

    >>> expected_prompt_gap(np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool), 0.5)
    0.125
    """
    q_unk = q_kn if q_unk is None else q_unk
    for name, p in (("q_kn", q_kn), ("q_unk", q_unk), ("loss_kn", loss_kn), ("loss_unk", loss_unk)):
        _probability(name, p)
    al = align(e_kn, e_unk, weights=weights, names=["E_kn", "E_unk"])
    kn, unk = al.masks
    m_kn, m_unk = mass(kn, al.w), mass(unk, al.w)
    return (m_kn - m_unk) + q_kn * (1 - m_kn) - q_unk * (1 - m_unk) - loss_kn * m_kn + loss_unk * m_unk


def _bernoulli_sums(mask, w, p, n_trials, rng) -> np.ndarray:
    """Σ_{i∈mask} w_i·X_i per trial, X_i ~ Bernoulli(p) independent (float [n_trials])."""
    k = int(np.count_nonzero(mask))
    if k == 0 or p == 0.0:
        return np.zeros(n_trials)
    if w is None:                                     # a sum of k Bernoullis of weight 1/N
        return rng.binomial(k, p, n_trials) / mask.size
    wm = w[mask]
    chunk = max(1, 4_000_000 // k)
    return np.concatenate([(rng.random((min(chunk, n_trials - i), k)) < p) @ wm
                           for i in range(0, n_trials, chunk)])


def simulate_prompt_gap(e_kn: SetLike, e_unk: SetLike, q_kn: float, q_unk: float | None = None, *,
                        rng: np.random.Generator, n_trials: int = 2000, loss_kn: float = 0.0,
                        loss_unk: float = 0.0, weights=None) -> np.ndarray:
    """Δ* in ``n_trials`` independent draws of the recovery model of :func:`expected_prompt_gap`
    (float [n_trials]). Under uniform weights the per-edge Bernoulli sums are drawn as binomials
    (the same distribution, N times cheaper)."""
    q_unk = q_kn if q_unk is None else q_unk
    for name, p in (("q_kn", q_kn), ("q_unk", q_unk), ("loss_kn", loss_kn), ("loss_unk", loss_unk)):
        _probability(name, p)
    if n_trials < 1:
        raise ValueError(f"n_trials = {n_trials!r}: need at least one trial")
    al = align(e_kn, e_unk, weights=weights, names=["E_kn", "E_unk"])
    kn, unk = al.masks
    w = al.w
    delta = mass(kn, w) - mass(unk, w)
    return (delta + _bernoulli_sums(~kn, w, q_kn, n_trials, rng) - _bernoulli_sums(kn, w, loss_kn, n_trials, rng)
            - _bernoulli_sums(~unk, w, q_unk, n_trials, rng) + _bernoulli_sums(unk, w, loss_unk, n_trials, rng))


def check_t1(e_kn: SetLike, e_unk: SetLike, q: float, *, rng: np.random.Generator, n_trials: int = 2000,
             delta: float = 1e-6, q_unk: float | None = None, loss_kn: float = 0.0, loss_unk: float = 0.0,
             weights=None) -> CheckResult:
    """T1, uniform recovery (probabilistic; seeded Monte Carlo).

    Statement: if the prompt loses no edge and recovers each missing test edge independently with
    the same probability q for both models, then E[Δ*] = (1 − q)·Δ; hence E[Δ*] ≤ Δ when Δ ≥ 0
    (equality only at q = 0 or Δ = 0), and the gap vanishes as q → 1. Weighted: the same, since
    w(T∖E_kn) − w(T∖E_unk) = −Δ.

    The check draws Δ* ``n_trials`` times (``q_unk``, ``loss_kn``, ``loss_unk`` break the
    assumptions on purpose) and compares the mean (lhs) with (1 − q)·Δ (rhs).

    Tolerance (never tuned): the mean of the trials is Δ + (1/n)·Σ_j Σ_i c_i·X_ij with independent
    X_ij ∈ {0, 1}, c_i = ±w_i (+ for FT-Known's missing edges, − for FT-Unknown's; the loss terms
    likewise when losses are on) and n = n_trials. Each term (c_i/n)·X_ij spans a range of
    |c_i|/n, so Σ over all terms of range² = Σ_i c_i²/n, and Hoeffding's inequality gives
    P(|mean − E[Δ*]| ≥ t) ≤ 2·exp(−2t²n / Σ_i c_i²), i.e. t = sqrt(Σ_i c_i² · ln(2/δ) / (2n)).
    Terms with probability 0 or 1 are constant and drop out. Under uniform weights Σ_i c_i² ≤ 2/N,
    so t ≤ sqrt(ln(2/δ) / (nN)). When the assumptions hold the check fails with probability ≤ δ.
    """
    q = _probability("q", q)
    q_unk_ = q if q_unk is None else _probability("q_unk", q_unk)
    al = align(e_kn, e_unk, weights=weights, names=["E_kn", "E_unk"])
    kn, unk = al.masks
    w = al.w
    gap = mass(kn, w) - mass(unk, w)
    draws = simulate_prompt_gap(kn, unk, q, q_unk_, rng=rng, n_trials=n_trials, loss_kn=loss_kn,
                                loss_unk=loss_unk, weights=w)
    random_terms = [(~kn, q), (~unk, q_unk_), (kn, loss_kn), (unk, loss_unk)]
    sum_sq = sum(sq_mass(m, w) for m, p in random_terms if 0.0 < p < 1.0)
    tol = hoeffding_radius(sum_sq / n_trials, delta)
    lhs, rhs = float(draws.mean()), (1 - q) * gap
    assumptions = [(NO_LOSSES, loss_kn == 0 and loss_unk == 0),
                   (SAME_Q, q_unk_ == q)]
    detail = (f"q={q:g}{'' if q_unk is None else f', q_unk={q_unk:g}'}, Δ={gap:+.4f}, {n_trials} trials, δ={delta:g}; "
              f"E[Δ*] ≤ Δ: {_yes(lhs <= gap + tol + EXACT_TOL)}")
    return result("T1 uniform recovery", lhs, rhs, abs(lhs - rhs) <= tol + EXACT_TOL, kind="probabilistic",
                  assumptions=assumptions, tolerance=tol, detail=detail)


def recovery_rates(e_kn: SetLike, e_unk: SetLike, e_kn_p: SetLike, e_unk_p: SetLike, *,
                   weights=None) -> tuple[float, float]:
    """Realised recovery rates (q̂_kn, q̂_unk), q̂_m = w(A_m) / w(T ∖ E_m) (0 where nothing is missing).

    >>> recovery_rates(np.array([1, 0, 0], bool), np.array([0, 0, 0], bool),
    ...                np.array([1, 1, 0], bool), np.array([1, 0, 0], bool))
    (0.5, 0.3333333333333333)
    """
    al, (kn, unk, _, _), (a_kn, _, a_unk, _) = prompt_sets(e_kn, e_unk, e_kn_p, e_unk_p, weights)
    return rate(a_kn, ~kn, al.w), rate(a_unk, ~unk, al.w)


def rate(gained, missing, w) -> float:
    """w(gained) / w(missing): a recovery rate (0 where nothing is missing)."""
    m = mass(missing, w)
    return mass(gained, w) / m if m > 0 else 0.0


def check_t1_measured(e_kn: SetLike, e_unk: SetLike, e_kn_p: SetLike, e_unk_p: SetLike, *,
                      delta: float = 0.05, weights=None) -> CheckResult:
    """T1's prediction Δ* = (1 − q̂)·Δ held against measured prompt sets (empirical).

    q̂ is the pooled recovery rate (w(A_kn) + w(A_unk)) / (m_kn + m_unk), m = w(T∖E).
    lhs: Δ*; rhs: (1 − q̂)·Δ; residual lhs − rhs.

    Tolerance: under T1's model (no losses, one unknown q, independent recovery) the residual is
    R = (2·m_kn·m_unk / (m_kn + m_unk))·(q̂_kn − q̂_unk) = Σ_i a_i·X_i − E[·], a sum of independent
    Bernoulli terms with a_i = 2·m_unk·w_i / (m_kn + m_unk) on FT-Known's missing edges and
    −2·m_kn·w_i / (m_kn + m_unk) on FT-Unknown's, and E[R] = 0 for every q. Hoeffding gives
    t = sqrt(Σ a_i² · ln(2/δ) / 2): a residual beyond t rejects "same q" at false-alarm rate δ.
    So this check is a test of T1's same-q assumption; "no losses" is reported as an assumption.
    Hoeffding makes it distribution-free but loose (it rarely rejects); :func:`check_t1_equal_rates`
    tests the same assumption exactly (Fisher), and :func:`~proofs.run.check_run` reports both.
    """
    al, (kn, unk, kn_p, unk_p), (a_kn, l_kn, a_unk, l_unk) = prompt_sets(e_kn, e_unk, e_kn_p, e_unk_p, weights)
    w = al.w
    gap = mass(kn, w) - mass(unk, w)
    gap_p = mass(kn_p, w) - mass(unk_p, w)
    m_kn, m_unk = mass(~kn, w), mass(~unk, w)
    total = m_kn + m_unk
    q_hat = (mass(a_kn, w) + mass(a_unk, w)) / total if total > 0 else 0.0
    sum_sq = (((2 * m_unk / total) ** 2) * sq_mass(~kn, w) + ((2 * m_kn / total) ** 2) * sq_mass(~unk, w)
              if total > 0 else 0.0)
    tol = hoeffding_radius(sum_sq, delta)
    lhs, rhs = gap_p, (1 - q_hat) * gap
    detail = (f"q̂={q_hat:.4f} (kn {rate(a_kn, ~kn, w):.4f}, unk {rate(a_unk, ~unk, w):.4f}), "
              f"Δ={gap:+.4f}, δ={delta:g}")
    return result("T1 uniform recovery (measured)", lhs, rhs, abs(lhs - rhs) <= tol + EXACT_TOL, kind="empirical",
                  assumptions=[(NO_LOSSES, not (l_kn.any() or l_unk.any())), (SAME_W, al.same_weights)],
                  tolerance=tol, detail=detail)


# --------------------------------------------------------------------------------------------
# R1: reversal
# --------------------------------------------------------------------------------------------

def check_r1(e_kn: SetLike, e_unk: SetLike, e_kn_p: SetLike, e_unk_p: SetLike, *, weights=None) -> CheckResult:
    """R1, the reversal condition (exact, in realised recovery rates).

    Statement: with no losses and Δ > 0, the prompt reverses the gap (Δ* < 0) iff
    q̂_unk·w(T∖E_unk) − q̂_kn·w(T∖E_kn) > Δ (uniform w: q̂_unk(N − |E_unk|) − q̂_kn(N − |E_kn|) >
    |E_kn| − |E_unk|, divided by N), and a reversal needs q̂_unk > q̂_kn. In particular, under T1
    (one q for both models) the expected gap never flips sign. q̂ are the realised recovery rates of
    :func:`recovery_rates`; the same holds for expectations with q in place of q̂.

    lhs: FT-Unknown's recovery advantage q̂_unk·w(T∖E_unk) − q̂_kn·w(T∖E_kn); rhs: Δ;
    residual lhs − rhs (> 0 predicts Δ* < 0). ``holds``: Δ* < 0 iff lhs > rhs, and Δ* < 0 comes with
    q̂_unk > q̂_kn. Assumptions: no losses (else the iff fails); Δ > 0 (else Δ* < 0 needs no
    recovery advantage at all); one w.

    >>> kn, unk = np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool)
    >>> r = check_r1(kn, unk, kn, np.array([1, 1, 1, 1], bool))
    >>> r.lhs, r.rhs, r.holds
    (0.75, 0.25, True)
    """
    al, (kn, unk, kn_p, unk_p), (a_kn, l_kn, a_unk, l_unk) = prompt_sets(e_kn, e_unk, e_kn_p, e_unk_p, weights)
    w = al.w
    gap = mass(kn, w) - mass(unk, w)
    gap_p = mass(kn_p, w) - mass(unk_p, w)
    q_kn, q_unk = rate(a_kn, ~kn, w), rate(a_unk, ~unk, w)
    advantage = q_unk * mass(~unk, w) - q_kn * mass(~kn, w)
    negative = gap_p < -EXACT_TOL
    predicted = advantage > gap + EXACT_TOL
    holds = (negative == predicted) and (not negative or q_unk > q_kn)
    assumptions = [(NO_LOSSES, not (l_kn.any() or l_unk.any())), (GAP_POSITIVE, gap > EXACT_TOL),
                   (SAME_W, al.same_weights)]
    detail = (f"Δ={gap:+.4f} → Δ*={gap_p:+.4f}; Δ*<0 {'yes' if negative else 'no'}, predicted "
              f"{'yes' if predicted else 'no'}; q̂_kn={q_kn:.4f}, q̂_unk={q_unk:.4f}")
    return result("R1 reversal condition", advantage, gap, holds, kind="exact", assumptions=assumptions,
                  detail=detail)


# --------------------------------------------------------------------------------------------
# CoT as path connectivity (empirical); the evidence type and check_run live in proofs.run
# --------------------------------------------------------------------------------------------

class _Index:
    """A measured set (test_ids, correct) indexed for lookups by fact id: a dense table when the
    ids span a range at most 8x their number (the usual case), else a sorted array."""

    def __init__(self, test_ids: np.ndarray, correct: np.ndarray) -> None:
        test_ids, correct = np.asarray(test_ids, np.int64), np.asarray(correct, bool)
        self.table = None
        if test_ids.size == 0:
            self.ids, self.correct = test_ids, correct
            return
        self.lo = int(test_ids.min())
        span = int(test_ids.max()) - self.lo + 1
        if span <= 8 * test_ids.size + 1024:
            self.table = np.full(span, -1, np.int8)                  # -1 unmeasured, else 0 / 1
            self.table[test_ids - self.lo] = correct
            return
        order = np.argsort(test_ids, kind="stable")
        self.ids, self.correct = test_ids[order], correct[order]

    def __call__(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(ids, np.int64)
        if self.table is not None:
            pos = ids - self.lo
            inside = (pos >= 0) & (pos < self.table.size)
            value = np.where(inside, self.table[np.where(inside, pos, 0)], -1)
            return value == 1, value >= 0
        if self.ids.size == 0:
            return np.zeros(ids.shape, bool), np.zeros(ids.shape, bool)
        pos = np.minimum(np.searchsorted(self.ids, ids), self.ids.size - 1)
        found = self.ids[pos] == ids
        return self.correct[pos] & found, found


def lookup(test_ids: np.ndarray, correct: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value, found) for each fact id in ``ids`` in a measured set (test_ids, correct).

    >>> v, f = lookup(np.array([5, 3, 9]), np.array([1, 0, 1], bool), np.array([9, 4, 3]))
    >>> v.tolist(), f.tolist()
    ([True, False, False], [True, False, True])
    """
    return _Index(test_ids, correct)(ids)


def cot_predicted(one_hop: "EdgeSet | tuple[np.ndarray, np.ndarray]", hop1_ids: np.ndarray,
                  hop2_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted CoT answerability of composed queries from one-hop edges alone.

    A query (s, r₁∘r₂, a) with bridge m is predicted answerable iff both (s, r₁, m) (fact id
    ``hop1_ids[i]``) and (m, r₂, a) (``hop2_ids[i]``) are accessible edges. ``one_hop`` is an
    EdgeSet or a (test_ids, correct) pair. Returns (predicted, covered), bool [Q] each; covered
    says both hop facts were measured (an unmeasured hop counts as inaccessible).

    >>> p, c = cot_predicted((np.array([0, 1, 2]), np.array([1, 1, 0], bool)), np.array([0, 0]), np.array([1, 2]))
    >>> p.tolist(), c.tolist()
    ([True, False], [True, True])
    """
    ids, correct = (one_hop.test_ids, one_hop.correct) if hasattr(one_hop, "correct") else one_hop
    hop1_ids, hop2_ids = np.asarray(hop1_ids, np.int64), np.asarray(hop2_ids, np.int64)
    if hop1_ids.shape != hop2_ids.shape or hop1_ids.ndim != 1:
        raise ValueError(f"hop1_ids {hop1_ids.shape} and hop2_ids {hop2_ids.shape} must be equal 1-d shapes")
    index = _Index(ids, correct)
    v1, f1 = index(hop1_ids)
    v2, f2 = index(hop2_ids)
    return v1 & v2, f1 & f2


def _query_weights(weights, q: int) -> np.ndarray | None:
    if weights is None:
        return None
    w = np.asarray(weights, np.float64)
    if w.shape != (q,) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"two-hop weights must be {q} non-negative numbers with a positive sum, got {w.shape}")
    return w / w.sum()


def check_cot(one_hop, hop1_ids, hop2_ids, cot_correct, *, weights=None, delta: float = 0.05) -> CheckResult:
    """CoT as path connectivity: predicted vs measured CoT accuracy of one model (empirical).

    Statement: a composed query is answerable under CoT iff the model's one-hop accessible edges
    hold both hops of its path; the predicted CoT accuracy is then w(predicted), a function of the
    one-hop edge set alone. lhs: the measured CoT accuracy w(C); rhs: the predicted w(P).

    Tolerance: if each query's CoT outcome is an independent draw whose probabilities average to
    the prediction, w(C) − w(P) = Σ_i w_i(c_i − E c_i) has terms of range w_i, and Hoeffding gives
    t = sqrt(Σ w_i² · ln(2/δ) / 2) (uniform: sqrt(ln(2/δ) / 2Q)). Agreement, precision and recall
    of the per-query prediction are in ``detail``. Assumption: every hop fact was measured.
    """
    predicted, covered = cot_predicted(one_hop, hop1_ids, hop2_ids)
    measured = np.asarray(cot_correct, bool)
    if measured.shape != predicted.shape:
        raise ValueError(f"cot_correct has shape {measured.shape}, the hops {predicted.shape}")
    if measured.size == 0:
        raise ValueError("no composed queries (Q = 0): CoT connectivity is undefined")
    w = _query_weights(weights, measured.size)
    lhs, rhs = mass(measured, w), mass(predicted, w)
    tol = hoeffding_radius(sq_mass(np.ones_like(measured), w), delta)
    n_pred, n_meas, n_both = predicted.sum(), measured.sum(), (predicted & measured).sum()
    detail = (f"Q={measured.size}, agreement {mass(predicted == measured, w):.3f}, "
              f"precision {n_both / n_pred if n_pred else float('nan'):.3f}, "
              f"recall {n_both / n_meas if n_meas else float('nan'):.3f}, δ={delta:g}")
    return result("CoT path connectivity", lhs, rhs, abs(lhs - rhs) <= tol + EXACT_TOL, kind="empirical",
                  assumptions=[("every hop fact measured", bool(covered.all()))], tolerance=tol, detail=detail)


def check_cot_gap(one_hop_kn, one_hop_unk, hop1_ids, hop2_ids, cot_kn, cot_unk, *, weights=None,
                  delta: float = 0.05) -> CheckResult:
    """The CoT gap predicted by path connectivity vs measured (empirical).

    lhs: measured Δ*_cot = w(C_kn) − w(C_unk); rhs: predicted w(P_kn) − w(P_unk). Tolerance as in
    :func:`check_cot`, with per-query terms c_kn,i − c_unk,i of range 2w_i:
    t = sqrt(Σ (2w_i)² · ln(2/δ) / 2).
    """
    p_kn, cov_kn = cot_predicted(one_hop_kn, hop1_ids, hop2_ids)
    p_unk, cov_unk = cot_predicted(one_hop_unk, hop1_ids, hop2_ids)
    c_kn, c_unk = np.asarray(cot_kn, bool), np.asarray(cot_unk, bool)
    if not (c_kn.shape == c_unk.shape == p_kn.shape):
        raise ValueError(f"CoT correctness shapes {c_kn.shape}, {c_unk.shape} differ from the hops {p_kn.shape}")
    if c_kn.size == 0:
        raise ValueError("no composed queries (Q = 0): the CoT gap is undefined")
    w = _query_weights(weights, c_kn.size)
    lhs = mass(c_kn, w) - mass(c_unk, w)
    rhs = mass(p_kn, w) - mass(p_unk, w)
    tol = hoeffding_radius(4 * sq_mass(np.ones_like(c_kn), w), delta)
    detail = f"Q={c_kn.size}, predicted kn {mass(p_kn, w):.3f} unk {mass(p_unk, w):.3f}, δ={delta:g}"
    return result("CoT gap from paths", lhs, rhs, abs(lhs - rhs) <= tol + EXACT_TOL, kind="empirical",
                  assumptions=[("every hop fact measured", bool(cov_kn.all() and cov_unk.all()))],
                  tolerance=tol, detail=detail)


__all__ = ["CheckResult", "gains_losses", "check_p1", "check_l1", "check_l1_gains_only", "check_c1",
           "expected_prompt_gap", "simulate_prompt_gap", "check_t1", "recovery_rates", "check_t1_measured",
           "prompt_sets", "rate",
           "check_r1", "lookup", "cot_predicted", "check_cot", "check_cot_gap"]
