"""T1's same-q assumption tested exactly on measured prompt sets (science.md §2, T1): the missing
test edges each model's prompt recovers, compared by Fisher's exact test (a seeded permutation test
of the weighted rates under non-uniform weights). :func:`proofs.run.check_run` adds its row beside
T1's measured prediction (:func:`proofs.statements.check_t1_measured`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .core import (
    CheckResult,
    SetLike,
    fisher_exact_p,
    mass,
    newcombe_interval,
    permutation_p,
    result,
    sq_mass,
    weights_equal,
)
from .statements import NO_LOSSES, SAME_W, prompt_sets, rate

__all__ = ["RecoveryRateTest", "recovery_rate_test", "check_t1_equal_rates"]


@dataclass(frozen=True)
class RecoveryRateTest:
    """The test of T1's same-q assumption on measured prompt sets (:func:`recovery_rate_test`).

    Counts: ``missing_*`` = |T ∖ E_m| (the test edges model m misses under P₀), ``recovered_*`` =
    |A_m| (those P recovers), ``lost_*`` = |L_m| (edges P loses: T1 assumes none). ``q_*``: the
    recovery rates w(A_m) / w(T ∖ E_m) (0 where nothing is missing). ``p_value``: two-sided, of
    q_kn = q_unk. ``ci``: a (1 − α) confidence interval for q_kn − q_unk (Newcombe's hybrid score
    interval; with weights, on Kish effective counts, approximate). ``method``: ``"fisher"``
    (uniform weights: Fisher's exact test on the counts) or ``"permutation"`` (non-uniform weights:
    a permutation test of the weighted rates, ``n_permutations`` draws). ``same_weights``: the four
    sets carried one w.
    """

    missing_kn: int
    recovered_kn: int
    lost_kn: int
    missing_unk: int
    recovered_unk: int
    lost_unk: int
    q_kn: float
    q_unk: float
    p_value: float
    ci: tuple[float, float]
    alpha: float
    method: str
    n_permutations: int = 0
    same_weights: bool = True

    @property
    def table(self) -> np.ndarray:
        """The 2x2 table (int [2, 2]): rows FT-Known, FT-Unknown; columns recovered, not recovered."""
        return np.array([[self.recovered_kn, self.missing_kn - self.recovered_kn],
                         [self.recovered_unk, self.missing_unk - self.recovered_unk]], np.int64)


def _effective(mask: np.ndarray, w: np.ndarray) -> float:
    """Kish's effective number of edges in ``mask``: (Σ w)² / Σ w² (0 if they weigh nothing)."""
    sq = sq_mass(mask, w)
    return mass(mask, w) ** 2 / sq if sq > 0 else 0.0


def recovery_rate_test(e_kn: SetLike, e_unk: SetLike, e_kn_p: SetLike, e_unk_p: SetLike, *, alpha: float = 0.05,
                       weights=None, rng: np.random.Generator | None = None,
                       n_permutations: int = 9999) -> RecoveryRateTest:
    """Test T1's assumption that the prompt recovers a missing edge with the same q for both models.

    Under T1 each of FT-Known's m_kn missing edges is recovered independently with probability q,
    and each of FT-Unknown's m_unk with the same q. Given the total recovered, the number FT-Known
    recovered is then hypergeometric whatever q is, so Fisher's exact test of the table
    [[|A_kn|, m_kn − |A_kn|], [|A_unk|, m_unk − |A_unk|]] (:func:`proofs.core.fisher_exact_p`) is an
    exact, conservative test of q_kn = q_unk: P(p < α) ≤ α under T1.

    Weights: the counts carry no weights, so with non-uniform ``weights`` (or EdgeSet weights) the
    test is a permutation test of the weighted rates instead: under T1 the recovered/not outcomes of
    the m_kn + m_unk missing edges are exchangeable, the statistic is |q̂_kn − q̂_unk| with
    q̂_m = w(A_m) / w(T ∖ E_m), and ``n_permutations`` shuffles drawn from ``rng`` (required then,
    never made here) give p = (1 + #{at least as extreme}) / (1 + n_permutations). Uniform weights
    (None, or all equal) use Fisher and draw nothing.

    Where a model misses no edge (or every missing edge weighs 0) its rate is undefined and
    p = 1: there is nothing to test. Raises ValueError for α outside (0, 1), sets over different
    test sets, or non-uniform weights without ``rng``.

    >>> kn, unk = np.array([1, 1, 0, 0, 0, 0], bool), np.array([0, 0, 0, 0, 1, 1], bool)
    >>> t = recovery_rate_test(kn, unk, np.array([1, 1, 1, 1, 1, 0], bool), np.array([1, 0, 0, 0, 1, 1], bool))
    >>> t.table.tolist(), t.q_kn, t.q_unk, round(t.p_value, 4), t.method      # p = 34/70
    ([[3, 1], [1, 3]], 0.75, 0.25, 0.4857, 'fisher')
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha = {alpha!r}: a test level must lie in (0, 1)")
    al, (kn, unk, _, _), (a_kn, l_kn, a_unk, l_unk) = prompt_sets(e_kn, e_unk, e_kn_p, e_unk_p, weights)
    w = al.w
    uniform = weights_equal(w, None, al.n)
    counts = [int(np.count_nonzero(m)) for m in (~kn, a_kn, l_kn, ~unk, a_unk, l_unk)]
    q_kn, q_unk = rate(a_kn, ~kn, w), rate(a_unk, ~unk, w)
    if uniform:
        (m_kn, r_kn, _, m_unk, r_unk, _) = counts
        p = fisher_exact_p([[r_kn, m_kn - r_kn], [r_unk, m_unk - r_unk]])
        ci = newcombe_interval(r_kn, m_kn, r_unk, m_unk, alpha=alpha)
        return RecoveryRateTest(*counts, q_kn, q_unk, p, ci, alpha, "fisher", 0, al.same_weights)
    if rng is None:
        raise ValueError("non-uniform weights: the equal-rates test is then a permutation test of the weighted rates "
                         "and needs rng= (a seeded numpy Generator)")
    w_kn, w_unk = mass(~kn, w), mass(~unk, w)
    if w_kn <= 0 or w_unk <= 0:
        p = 1.0
    else:                                     # pooled missing edges: FT-Known's, then FT-Unknown's
        outcomes = np.concatenate([a_kn[~kn], a_unk[~unk]])
        coef = np.concatenate([w[~kn] / w_kn, -w[~unk] / w_unk])   # coef · outcomes = q̂_kn − q̂_unk
        p = permutation_p(outcomes, coef, rng=rng, n_permutations=n_permutations)
    n_kn, n_unk = _effective(~kn, w), _effective(~unk, w)
    ci = newcombe_interval(q_kn * n_kn, n_kn, q_unk * n_unk, n_unk, alpha=alpha)
    return RecoveryRateTest(*counts, q_kn, q_unk, p, ci, alpha, "permutation", n_permutations, al.same_weights)


def check_t1_equal_rates(e_kn: SetLike, e_unk: SetLike, e_kn_p: SetLike, e_unk_p: SetLike, *, alpha: float = 0.05,
                         weights=None, rng: np.random.Generator | None = None,
                         n_permutations: int = 9999) -> CheckResult:
    """T1's same-q assumption held against measured prompt sets by an exact test (empirical).

    :func:`recovery_rate_test`: Fisher's exact test of q_kn = q_unk on the counts of recovered and
    unrecovered missing edges per model (a seeded permutation test of the weighted rates under
    non-uniform weights). lhs: q̂_kn; rhs: q̂_unk; residual q̂_kn − q̂_unk; ``p_value`` the
    two-sided p; ``holds`` iff p ≥ α (``tolerance`` is α). ``detail``: the counts, the p-value,
    the (1 − α) Newcombe interval for q_kn − q_unk and the lost edges per model. T1's other
    assumption, no losses, is reported as an assumption (with the counts in ``detail``), not tested.

    >>> kn, unk = np.array([1, 1, 0, 0, 0, 0], bool), np.array([0, 0, 0, 0, 1, 1], bool)
    >>> r = check_t1_equal_rates(kn, unk, np.array([1, 1, 1, 1, 1, 0], bool), np.array([1, 0, 0, 0, 1, 1], bool))
    >>> r.lhs, r.rhs, round(r.p_value, 4), r.holds
    (0.75, 0.25, 0.4857, True)
    """
    t = recovery_rate_test(e_kn, e_unk, e_kn_p, e_unk_p, alpha=alpha, weights=weights, rng=rng,
                           n_permutations=n_permutations)
    how = "Fisher exact" if t.method == "fisher" else f"permutation ({t.n_permutations} draws, weighted rates)"
    detail = (f"recovered kn {t.recovered_kn}/{t.missing_kn}, unk {t.recovered_unk}/{t.missing_unk}; "
              f"{how} p={t.p_value:.4g}; {1 - alpha:.0%} CI q_kn−q_unk [{t.ci[0]:+.3f}, {t.ci[1]:+.3f}] "
              f"(Newcombe); lost kn {t.lost_kn}, unk {t.lost_unk}")
    assumptions = [(NO_LOSSES, t.lost_kn == 0 and t.lost_unk == 0), (SAME_W, t.same_weights)]
    return result("T1 equal recovery rates", t.q_kn, t.q_unk, t.p_value >= alpha, kind="empirical",
                  assumptions=assumptions, tolerance=alpha, detail=detail, p_value=t.p_value)
