"""Property tests of the statements of science.md §2 (proofs.statements, proofs.run).

Exact statements: every generated instance whose assumptions hold satisfies the statement
(``EXACT_SETTINGS``: 500 examples each, whatever Hypothesis profile is loaded). T1: seeded Monte
Carlo; each check fails with probability at most its δ when its assumptions hold (Hoeffding, see
proofs.statements.check_t1), so a test drawing k examples at δ = 1e-6 fails spuriously with
probability at most k·1e-6.
"""
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kgsim.core.edges import EdgeSet
from kgsim.core.rng import stream
from proofs import statements as S
from proofs.core import CheckResult, align, hoeffding_radius
from proofs.run import TwoHopEvidence, check_run, format_table
from proofs.strategies import EXACT_SETTINGS, gap_instances, runs, two_hop_instances

MC_SETTINGS = settings(max_examples=60, deadline=None)


def instances(**kw):
    """Gap instances from small knowledge graphs (few-shot prompts) and flat ones (any gains)."""
    return st.one_of(gap_instances(**kw), gap_instances(from_graph=False, **kw))


def _exact_checks(g):
    a_kn = g.kn_p.correct & ~g.kn0.correct
    a_unk = g.unk_p.correct & ~g.unk0.correct
    return [S.check_p1(g.kn0, g.unk0), S.check_p1(g.kn_p, g.unk_p), S.check_l1(*g.sets),
            S.check_l1_gains_only(*g.sets), S.check_r1(*g.sets),
            S.check_c1(g.kn0, g.unk0, a_kn, a_unk, weights=g.kn0.weights)]


# --------------------------------------------------------------------------------------------
# Exact statements
# --------------------------------------------------------------------------------------------

@EXACT_SETTINGS
@given(instances())
def test_every_exact_statement_holds_whenever_its_assumptions_hold(g):
    for r in _exact_checks(g):
        assert r.kind == "exact"
        if r.assumptions_held:
            assert r.holds, r


@EXACT_SETTINGS
@given(instances())
def test_p1_gap_is_the_weighted_edge_count(g):
    r = S.check_p1(g.kn0, g.unk0)
    assert r.assumptions_held and r.holds, r


@EXACT_SETTINGS
@given(instances(weighted=False))
def test_p1_count_form_under_uniform_weights(g):
    r = S.check_p1(g.kn0, g.unk0, count_form=True)
    assert r.assumptions_held and r.holds, r
    assert r.rhs * g.kn0.n == pytest.approx(g.kn0.size - g.unk0.size)


@EXACT_SETTINGS
@given(instances())
def test_l1_accounting_holds_for_any_prompt(g):
    r = S.check_l1(*g.sets)
    assert r.assumptions_held and r.holds, r


@EXACT_SETTINGS
@given(instances(losses=False))
def test_l1_gains_only_iff_without_losses(g):
    r = S.check_l1_gains_only(*g.sets)
    assert r.assumptions_held and r.holds, r


@EXACT_SETTINGS
@given(instances(nested=True, augment=True, common_gains=True))
def test_c1_common_augmentation_of_nested_sets(g):
    r = S.check_c1(g.kn0, g.unk0, g.augment_kn)
    assert r.assumptions_held and r.holds, r
    uncovered = (g.kn0.correct & ~g.unk0.correct & ~g.augment_kn).any()
    assert (abs(r.lhs) <= 1e-9) == (not uncovered)          # closes iff A ⊇ E_kn ∖ E_unk


@EXACT_SETTINGS
@given(instances(losses=False))
def test_r1_reversal_condition_without_losses(g):
    r = S.check_r1(*g.sets)
    if r.assumptions_held:
        assert r.holds, r
    if r.rhs > 0 and g.kn_p.fact() - g.unk_p.fact() < 0:        # a reversal happened
        q_kn, q_unk = S.recovery_rates(*g.sets)
        assert q_unk > q_kn


@EXACT_SETTINGS
@given(instances(), st.integers(0, 10))
def test_r1_under_t1_the_expected_gap_never_flips_sign(g, q10):
    gap = g.kn0.fact() - g.unk0.fact()
    expected = S.expected_prompt_gap(g.kn0, g.unk0, q10 / 10)
    assert expected == pytest.approx((1 - q10 / 10) * gap, abs=1e-12)
    assert np.sign(round(expected, 12)) in (0, np.sign(round(gap, 12)))


@EXACT_SETTINGS
@given(gap_instances(from_graph=False, weighted=True))
def test_masks_with_weights_equal_edge_sets(g):
    masks = [e.correct for e in g.sets]
    w = g.kn0.weights
    for check in (S.check_l1, S.check_r1, S.check_l1_gains_only):
        a, b = check(*g.sets), check(*masks, weights=w)
        assert (a.lhs, a.rhs, a.holds) == pytest.approx((b.lhs, b.rhs, b.holds))


# --------------------------------------------------------------------------------------------
# T1 (probabilistic) and its measured form (empirical)
# --------------------------------------------------------------------------------------------

@MC_SETTINGS
@given(gap_instances(from_graph=False), st.integers(0, 10), st.integers(0, 2**32 - 1))
def test_t1_monte_carlo_within_hoeffding_tolerance(g, q10, seed):
    r = S.check_t1(g.kn0, g.unk0, q10 / 10, rng=stream(seed, "test/t1"), n_trials=2000, delta=1e-6)
    assert r.kind == "probabilistic" and r.assumptions_held
    assert r.holds, r


def test_t1_on_a_large_weighted_instance():
    rng = stream(0, "test/t1-large")
    n = 20_000
    kn, unk = rng.random(n) < 0.6, rng.random(n) < 0.2
    w = rng.integers(1, 10, n).astype(float)
    r = S.check_t1(kn, unk, 0.3, weights=w, rng=rng, n_trials=200, delta=1e-6)
    assert r.holds and r.assumptions_held, r
    gap = float(w @ kn - w @ unk) / w.sum()
    assert r.rhs == pytest.approx(0.7 * gap) and r.lhs < gap - 10 * r.tolerance   # E[Δ*] = 0.7 Δ < Δ


def test_t1_tolerance_is_the_stated_hoeffding_bound():
    kn, unk = np.array([1, 0, 0, 0], bool), np.array([0, 0, 0, 0], bool)
    r = S.check_t1(kn, unk, 0.5, rng=stream(0, "test/t1-tol"), n_trials=1000, delta=1e-3)
    # 3 + 4 missing edges of weight 1/4, each Bernoulli(0.5): Σ c² = 7/16
    assert r.tolerance == pytest.approx(np.sqrt(7 / 16 * np.log(2 / 1e-3) / (2 * 1000)))
    assert r.tolerance == pytest.approx(hoeffding_radius(7 / 16 / 1000, 1e-3))


@MC_SETTINGS
@given(gap_instances(from_graph=False, weighted=None, max_n=8), st.integers(0, 10), st.integers(0, 2**32 - 1))
def test_t1_measured_accepts_same_q_recovery(g, q10, seed):
    rng = stream(seed, "test/t1-measured")
    q = q10 / 10
    kn_p = g.kn0.correct | ((rng.random(g.kn0.n) < q) & ~g.kn0.correct)
    unk_p = g.unk0.correct | ((rng.random(g.kn0.n) < q) & ~g.unk0.correct)
    w = g.kn0.weights
    r = S.check_t1_measured(g.kn0, g.unk0, EdgeSet(g.kn0.test_ids, kn_p, weights=w),
                            EdgeSet(g.kn0.test_ids, unk_p, weights=w), delta=1e-6)
    assert r.kind == "empirical" and r.assumptions_held
    assert r.holds, r


def test_t1_measured_rejects_model_dependent_recovery():
    rng = stream(1, "test/t1-power")
    n = 10_000
    kn, unk = rng.random(n) < 0.6, rng.random(n) < 0.2
    kn_p = kn | (rng.random(n) < 0.1)
    unk_p = unk | (rng.random(n) < 0.6)
    r = S.check_t1_measured(kn, unk, kn_p, unk_p)
    assert not r.holds and r.assumptions_held
    assert abs(r.residual) > 10 * r.tolerance


def test_probabilities_are_validated():
    kn = np.array([True, False])
    with pytest.raises(ValueError, match="q = 1.5"):
        S.check_t1(kn, kn, 1.5, rng=stream(0, "x"))
    with pytest.raises(ValueError, match="n_trials"):
        S.simulate_prompt_gap(kn, kn, 0.5, rng=stream(0, "x"), n_trials=0)


# --------------------------------------------------------------------------------------------
# CoT as path connectivity
# --------------------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(two_hop_instances(path_following=True))
def test_cot_prediction_is_exact_for_a_path_following_model(x):
    _, edge_sets, ev = x
    cot = [r for r in check_run(edge_sets, ev) if r.name.startswith("CoT")]
    assert len(cot) == 3                                     # two models and the gap at stage es
    for r in cot:
        assert r.kind == "empirical" and r.assumptions_held and r.holds and r.residual == 0.0, r


@settings(max_examples=100, deadline=None)
@given(two_hop_instances(path_following=False))
def test_cot_residual_is_measured_minus_predicted(x):
    _, edge_sets, ev = x
    one_hop = edge_sets[("ft-known", "es", "id", "zero-shot")]
    predicted, covered = S.cot_predicted(one_hop, ev.hop1_ids, ev.hop2_ids)
    r = S.check_cot(one_hop, ev.hop1_ids, ev.hop2_ids, ev.cot_correct[("ft-known", "es")])
    assert covered.all()
    assert r.residual == pytest.approx(ev.cot_correct[("ft-known", "es")].mean() - predicted.mean())


def test_cot_reports_unmeasured_hops():
    one_hop = EdgeSet(np.array([0, 1]), np.array([True, True]))
    r = S.check_cot(one_hop, np.array([0, 0]), np.array([1, 7]), np.array([True, True]))
    assert dict(r.assumptions)["every hop fact measured"] is False
    assert r.rhs == 0.5 and r.lhs == 1.0


def test_two_hop_evidence_validates_shapes():
    with pytest.raises(ValueError, match="cot_correct"):
        TwoHopEvidence(np.array([0, 1]), np.array([2, 3]), {("ft-known", "es"): np.array([True])})
    with pytest.raises(ValueError, match="hop1_ids"):
        TwoHopEvidence(np.array([0, 1]), np.array([2]), {})


# --------------------------------------------------------------------------------------------
# check_run and format_table
# --------------------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(runs())
def test_check_run_holds_every_applicable_statement(edge_sets):
    results = check_run(edge_sets)
    groups = {(st_, sp) for (_, st_, sp, _) in edge_sets}
    assert len(results) == 7 * len(groups)          # P1 ×2, then L1, C1, R1, T1 (measured), T1 equal rates for 3-shot
    for r in results:
        assert isinstance(r, CheckResult) and r.scope
        if r.kind == "exact" and r.assumptions_held:
            assert r.holds, r
    table = format_table(results)
    assert len(table.splitlines()) == len(results) + 2


def test_check_run_pairs_cot_with_the_direct_two_hop_prompt():
    T = np.arange(3)
    es = {(m, "con", "2hop", p): EdgeSet(T, np.array(c, bool)) for m, p, c in [
        ("ft-known", "direct-2hop", [1, 0, 0]), ("ft-unknown", "direct-2hop", [0, 0, 0]),
        ("ft-known", "cot", [1, 1, 0]), ("ft-unknown", "cot", [1, 1, 1])]}
    results = check_run(es)
    assert [r.scope for r in results][2] == "con · 2hop · cot vs direct-2hop"
    r1 = next(r for r in results if r.name.startswith("R1"))
    assert r1.holds and r1.assumptions_held and r1.lhs > r1.rhs      # FT-Unknown's advantage reverses the gap


def test_check_run_rejects_bad_keys_and_mismatched_test_sets():
    e = EdgeSet(np.arange(2), np.array([True, False]))
    with pytest.raises(ValueError, match="model 'base'"):
        check_run({("base", "es", "id", "zero-shot"): e})
    with pytest.raises(ValueError, match="different test sets"):
        check_run({("ft-known", "es", "id", "zero-shot"): e,
                   ("ft-unknown", "es", "id", "zero-shot"): EdgeSet(np.arange(3), np.zeros(3, bool))})


def test_format_table_shows_failing_rows_with_their_residual():
    failing = S.check_p1(np.array([1, 0], bool), np.array([0, 0], bool), weights=[3, 1], count_form=True)
    table = format_table([failing], detail=True)
    row = table.splitlines()[2]
    assert "**no**" in row and "+0.2500" in row and "not held: uniform weights" in row


# --------------------------------------------------------------------------------------------
# Input validation and scale
# --------------------------------------------------------------------------------------------

def test_sets_over_different_test_sets_are_refused():
    a = EdgeSet(np.array([1, 2, 3]), np.array([1, 0, 1], bool))
    b = EdgeSet(np.array([1, 2, 4]), np.array([1, 0, 1], bool))
    with pytest.raises(ValueError, match="different test set"):
        S.check_p1(a, b)
    with pytest.raises(ValueError, match="N=2"):
        S.check_l1(a, a, a, np.array([True, False]))
    with pytest.raises(ValueError, match="empty test set"):
        align(np.zeros(0, bool))
    with pytest.raises(ValueError, match="boolean mask"):
        S.check_p1(np.array([1, 0]), np.array([1, 0]))


def test_different_weights_are_reported_as_an_unmet_assumption():
    T = np.arange(3)
    a = EdgeSet(T, np.array([1, 0, 0], bool))
    b = EdgeSet(T, np.array([0, 1, 0], bool), weights=np.array([1.0, 2.0, 1.0]))
    r = S.check_p1(a, b)
    assert not r.assumptions_held and not r.holds


def test_exact_checks_on_a_million_facts_are_fast_and_hold():
    rng = stream(0, "test/scale")
    n = 1_000_000
    kn, unk = rng.random(n) < 0.6, rng.random(n) < 0.3
    kn_p = kn | (rng.random(n) < 0.2)
    unk_p = unk | (rng.random(n) < 0.4)
    T = np.arange(n)
    sets = [EdgeSet(T, m) for m in (kn, unk, kn_p, unk_p)]
    start = time.perf_counter()
    results = [S.check_p1(*sets[:2]), S.check_l1(*sets), S.check_l1_gains_only(*sets), S.check_r1(*sets),
               S.check_c1(sets[0], sets[1], kn_p & ~kn, unk_p & ~unk)]
    seconds = time.perf_counter() - start
    assert all(r.holds for r in results if r.assumptions_held) and results[1].holds
    assert seconds < 5.0, f"exact checks on 1e6 facts took {seconds:.2f} s (expected well under 1 s)"


@pytest.mark.parametrize("test_ids", [np.array([5, 3, 9]), np.array([10**12, 3, 9])])   # dense table, sorted
def test_lookup_by_fact_id(test_ids):
    value, found = S.lookup(test_ids, np.array([1, 0, 1], bool), np.array([9, 4, 3, 10**12, -5]))
    assert found.tolist() == [True, False, True, bool(test_ids[0] == 10**12), False]
    assert value.tolist() == [True, False, False, bool(test_ids[0] == 10**12), False]


def test_two_hop_evidence_from_run_reads_cot_edge_sets():
    queries = np.array([100, 101])
    es = {("ft-known", "es", "2hop", "cot"): EdgeSet(queries, np.array([True, False])),
          ("ft-unknown", "es", "2hop", "cot"): EdgeSet(queries[::-1], np.array([True, False]))}
    ev = TwoHopEvidence.from_run(es, np.array([0, 1]), np.array([2, 3]), queries)
    assert ev.cot_correct[("ft-unknown", "es")].tolist() == [False, True]
    with pytest.raises(ValueError, match="lacks 1"):
        TwoHopEvidence.from_run(es, np.array([0, 1, 2]), np.array([2, 3, 4]), np.array([100, 101, 102]))

