"""The exact test of T1's same-q assumption (proofs.recovery.check_t1_equal_rates, proofs.core).

What is tested and how:

- :func:`proofs.core.fisher_exact_p` equals ``scipy.stats.fisher_exact`` (two-sided) to a relative
  1e-9 on 200 seeded random tables and on Hypothesis-drawn ones, and equals a hand-computed p
  (34/70) on a small table; :func:`proofs.core.newcombe_interval` reproduces Newcombe's (1998)
  worked example and a hand computation.
- Size and power by seeded simulation of T1's recovery model on fixed plain-prompt sets: with the
  same q for both models the test rejects at α = 0.05 in at most 5% + 3 binomial standard errors
  of 2000 runs (Fisher is conservative, so its size is at most α); with q 0.2 vs 0.6 on 200
  missing edges each it rejects in at least 99% of 500 runs. The weighted (permutation) form is
  held to the same bounds with fewer runs.
- Wiring: check_run reports one "T1 equal recovery rates" row per prompt comparison, with the
  rates, the p-value and holds = p ≥ α; format_table shows the p column; losses are counted.

Every random draw comes from a seeded numpy Generator (kgsim.core.rng.stream).
"""
import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from kgsim.core.edges import EdgeSet
from kgsim.core.rng import stream
from proofs import recovery as R
from proofs import statements as S
from proofs.core import fisher_exact_p, newcombe_interval, permutation_p
from proofs.run import check_run, format_table

ALPHA = 0.05


def _scipy_p(table) -> float:
    return float(scipy.stats.fisher_exact(np.asarray(table), alternative="two-sided").pvalue)


def _margin(n_runs: int, p: float = ALPHA) -> float:
    """Three binomial standard errors of a rejection rate p estimated from n_runs runs."""
    return 3 * math.sqrt(p * (1 - p) / n_runs)


# --------------------------------------------------------------------------------------------
# Fisher's exact test and the interval against references
# --------------------------------------------------------------------------------------------

def test_fisher_p_equals_scipy_on_200_seeded_random_tables():
    rng = stream(0, "test/fisher-tables")
    for i in range(200):
        hi = (6, 40, 400, 3000)[i % 4]                 # small tables (many ties) to large ones
        table = rng.integers(0, hi, (2, 2))
        if i % 10 == 0:
            table[rng.integers(0, 2)] = 0              # an empty row now and then: p = 1
        assert fisher_exact_p(table) == pytest.approx(_scipy_p(table), rel=1e-9, abs=1e-300), table.tolist()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 60), min_size=4, max_size=4))
def test_fisher_p_equals_scipy_on_drawn_tables(counts):
    table = np.array(counts).reshape(2, 2)
    assert fisher_exact_p(table) == pytest.approx(_scipy_p(table), rel=1e-9, abs=1e-300)


def test_fisher_p_by_hand():
    # Margins 4, 4 / 4, 4: P(x) = C(4, x)·C(4, 4 − x) / C(8, 4) = (1, 16, 36, 16, 1) / 70 for x = 0..4.
    # x = 3 is observed; the tables no likelier are x = 0, 1, 3, 4: p = 34/70.
    assert fisher_exact_p([[3, 1], [1, 3]]) == pytest.approx(34 / 70, rel=1e-12)
    assert fisher_exact_p([[2, 2], [2, 2]]) == pytest.approx(1.0)
    assert fisher_exact_p([[4, 0], [0, 4]]) == pytest.approx(2 / 70, rel=1e-12)
    assert fisher_exact_p([[0, 0], [5, 7]]) == 1.0
    with pytest.raises(ValueError, match="2x2 table"):
        fisher_exact_p([[1.5, 1], [1, 1]])
    with pytest.raises(ValueError, match="2x2 table"):
        fisher_exact_p([[-1, 1], [1, 1]])


def test_newcombe_interval_matches_the_paper_and_a_hand_computation():
    lo, hi = newcombe_interval(56, 70, 48, 80)                 # Newcombe (1998), example (a): 0.0524, 0.3339
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    # 3/4 vs 1/4: Wilson (z = 1.95996) gives [0.30064, 0.95442] and [0.04558, 0.69936], so
    # D ∓ sqrt(2·0.44936²) and D + sqrt(2·0.20442²) with D = 0.5.
    lo, hi = newcombe_interval(3, 4, 1, 4)
    assert lo == pytest.approx(0.5 - math.sqrt(2) * 0.44936, abs=1e-4)
    assert hi == pytest.approx(0.5 + math.sqrt(2) * 0.20442, abs=1e-4)
    assert newcombe_interval(0, 0, 3, 4) == (-1.0, 1.0)


def test_newcombe_interval_covers_the_true_difference():
    rng = stream(0, "test/newcombe-coverage")
    n1, n2, q1, q2, runs = 40, 60, 0.3, 0.5, 2000
    x1, x2 = rng.binomial(n1, q1, runs), rng.binomial(n2, q2, runs)
    covered = np.mean([lo <= q1 - q2 <= hi for lo, hi in (newcombe_interval(a, n1, b, n2) for a, b in zip(x1, x2))])
    assert covered >= 0.95 - _margin(runs), covered


# --------------------------------------------------------------------------------------------
# The test on edge sets: a hand case, size and power
# --------------------------------------------------------------------------------------------

KN = np.array([1, 1, 0, 0, 0, 0], bool)        # FT-Known misses t2..t5
UNK = np.array([0, 0, 0, 0, 1, 1], bool)       # FT-Unknown misses t0..t3


def test_hand_case_on_edge_sets():
    kn_p = np.array([1, 1, 1, 1, 1, 0], bool)  # recovers 3 of its 4 missing edges
    unk_p = np.array([1, 0, 0, 0, 1, 1], bool)  # recovers 1 of 4
    t = R.recovery_rate_test(KN, UNK, kn_p, unk_p)
    assert t.table.tolist() == [[3, 1], [1, 3]] and (t.lost_kn, t.lost_unk) == (0, 0)
    assert (t.q_kn, t.q_unk, t.method) == (0.75, 0.25, "fisher")
    assert t.p_value == pytest.approx(34 / 70) and t.ci == pytest.approx(newcombe_interval(3, 4, 1, 4))
    r = R.check_t1_equal_rates(KN, UNK, kn_p, unk_p)
    assert (r.kind, r.lhs, r.rhs, r.residual, r.tolerance) == ("empirical", 0.75, 0.25, 0.5, ALPHA)
    assert r.p_value == pytest.approx(34 / 70) and r.holds and r.assumptions_held
    assert "recovered kn 3/4, unk 1/4" in r.detail and "lost kn 0, unk 0" in r.detail
    assert not R.check_t1_equal_rates(KN, UNK, kn_p, unk_p, alpha=0.5).holds       # p = 0.486 < 0.5


def test_losses_are_counted_and_reported_as_the_other_assumption():
    kn_p = np.array([0, 1, 1, 0, 0, 0], bool)   # loses t0, recovers t2
    unk_p = np.array([1, 0, 0, 0, 1, 0], bool)  # loses t5, recovers t0
    t = R.recovery_rate_test(KN, UNK, kn_p, unk_p)
    assert (t.lost_kn, t.lost_unk, t.recovered_kn, t.recovered_unk) == (1, 1, 1, 1)
    r = R.check_t1_equal_rates(KN, UNK, kn_p, unk_p)
    assert dict(r.assumptions)[S.NO_LOSSES] is False and "lost kn 1, unk 1" in r.detail


def test_a_model_missing_nothing_leaves_nothing_to_test():
    full = np.ones(6, bool)
    r = R.check_t1_equal_rates(full, UNK, full, UNK | KN)
    assert r.p_value == 1.0 and r.holds and (r.lhs, r.rhs) == (0.0, 0.5)


def _simulate(rng, n, acc_kn, acc_unk, q_kn, q_unk, runs, weights=None, n_permutations=9999):
    """p-values of the test over ``runs`` draws of T1's recovery model on fixed plain-prompt sets."""
    kn, unk = np.arange(n) < acc_kn * n, np.arange(n) >= (1 - acc_unk) * n
    out = []
    for _ in range(runs):
        kn_p = kn | (rng.random(n) < q_kn)
        unk_p = unk | (rng.random(n) < q_unk)
        out.append(R.recovery_rate_test(kn, unk, kn_p, unk_p, weights=weights, rng=rng,
                                        n_permutations=n_permutations).p_value)
    return np.array(out)


@pytest.mark.parametrize("q", [0.1, 0.5])
def test_size_with_equal_q_is_at_most_alpha(q):
    runs = 2000
    p = _simulate(stream(0, f"test/t1-size/{q}"), 300, 0.6, 0.2, q, q, runs)    # 120 and 240 missing edges
    rate = float(np.mean(p < ALPHA))
    assert rate <= ALPHA + _margin(runs), rate


def test_power_for_q_0_2_vs_0_6_on_200_missing_edges_each():
    runs = 500
    p = _simulate(stream(0, "test/t1-power"), 400, 0.5, 0.5, 0.2, 0.6, runs)     # 200 missing edges each
    assert float(np.mean(p < ALPHA)) >= 0.99


# --------------------------------------------------------------------------------------------
# Non-uniform weights: the permutation test
# --------------------------------------------------------------------------------------------

def _weights(n):
    return stream(0, "test/t1-weights").integers(1, 10, n).astype(float)


def test_weighted_input_needs_an_rng_and_is_deterministic_given_its_seed():
    n = 50
    w = _weights(n)
    rng = stream(1, "test/t1-weighted-sets")
    kn, unk = rng.random(n) < 0.5, rng.random(n) < 0.2
    kn_p, unk_p = kn | (rng.random(n) < 0.3), unk | (rng.random(n) < 0.3)
    with pytest.raises(ValueError, match="needs rng="):
        R.recovery_rate_test(kn, unk, kn_p, unk_p, weights=w)
    a = R.recovery_rate_test(kn, unk, kn_p, unk_p, weights=w, rng=stream(7, "t"), n_permutations=999)
    b = R.recovery_rate_test(kn, unk, kn_p, unk_p, weights=w, rng=stream(7, "t"), n_permutations=999)
    assert a == b and a.method == "permutation" and a.n_permutations == 999
    assert (a.q_kn, a.q_unk) == pytest.approx(S.recovery_rates(kn, unk, kn_p, unk_p, weights=w))
    # equal weights are uniform weights: Fisher, no draws
    assert R.recovery_rate_test(kn, unk, kn_p, unk_p, weights=np.full(n, 3.0)).method == "fisher"


def test_weighted_permutation_test_size_and_power():
    n, runs = 200, 400
    w = _weights(n)
    p0 = _simulate(stream(0, "test/t1-weighted-size"), n, 0.6, 0.2, 0.3, 0.3, runs, weights=w, n_permutations=199)
    assert float(np.mean(p0 < ALPHA)) <= ALPHA + _margin(runs)
    p1 = _simulate(stream(0, "test/t1-weighted-power"), n, 0.5, 0.5, 0.2, 0.6, 100, weights=w, n_permutations=199)
    assert float(np.mean(p1 < ALPHA)) >= 0.95


def test_permutation_p_is_valid_at_its_resolution():
    # all outcomes equal: one arrangement, p = 1; one extreme arrangement in C(4, 2) = 6: p ≥ 1/(1 + B)
    assert permutation_p(np.ones(4, bool), np.array([1.0, 1, -1, -1]), rng=stream(0, "t"), n_permutations=9) == 1.0
    p = permutation_p(np.array([1, 1, 0, 0], bool), np.array([0.5, 0.5, -0.5, -0.5]), rng=stream(0, "t"),
                      n_permutations=5999)
    assert p == pytest.approx(2 / 6, abs=0.03)                 # the two extreme splits of six
    with pytest.raises(ValueError, match="n_permutations"):
        permutation_p(np.array([1, 0], bool), np.array([1.0, -1]), rng=stream(0, "t"), n_permutations=0)


# --------------------------------------------------------------------------------------------
# check_run and the table
# --------------------------------------------------------------------------------------------

def _run(weights=None):
    rng = stream(3, "test/t1-run")
    n = 200
    T = np.arange(n)
    kn, unk = rng.random(n) < 0.6, rng.random(n) < 0.2
    masks = {("ft-known", "zero-shot"): kn, ("ft-unknown", "zero-shot"): unk,
             ("ft-known", "3-shot"): kn | (rng.random(n) < 0.1), ("ft-unknown", "3-shot"): unk | (rng.random(n) < 0.7)}
    return {(m, "con", "id", p): EdgeSet(T, c, weights=weights) for (m, p), c in masks.items()}


def test_check_run_reports_the_equal_rates_test():
    results = check_run(_run())
    r = next(r for r in results if r.name == "T1 equal recovery rates")
    assert r.scope == "con · id · 3-shot vs zero-shot" and r.kind == "empirical"
    assert r.p_value < 1e-6 and not r.holds and r.lhs < r.rhs       # q 0.1 vs 0.7: rejected
    q_kn, q_unk = S.recovery_rates(*(_run()[(m, "con", "id", p)] for p in ("zero-shot", "3-shot")
                                     for m in ("ft-known", "ft-unknown")))
    assert (r.lhs, r.rhs) == pytest.approx((q_kn, q_unk))
    assert r.to_json()["p_value"] == r.p_value and "p_value" not in results[0].to_json()
    table = format_table(results).splitlines()
    assert table[0].endswith("| tolerance | p |")
    row = next(line for line in table if line.startswith("| T1 equal recovery rates"))
    assert "α=0.05" in row and row.endswith(f"| {r.p_value:.3g} |")
    assert check_run(_run(), alpha=1e-300)[-1].holds                 # p ≥ α at a tiny α
    with pytest.raises(ValueError, match="alpha"):
        check_run(_run(), alpha=0.0)


def test_check_run_weighted_sets_use_a_seeded_permutation_test():
    w = _weights(200)
    a = [r for r in check_run(_run(w)) if r.p_value is not None]
    b = [r for r in check_run(_run(w)) if r.p_value is not None]
    assert len(a) == 1 and a == b and "permutation" in a[0].detail
    assert a[0].p_value == pytest.approx(1 / 10_000)                 # q 0.1 vs 0.7: no shuffle as extreme
