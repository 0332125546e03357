"""kgsim.study.stats against statsmodels and hand computations; coverage on simulated data with a
known truth; the verdict rule on constructed results."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kgsim.study.bounds import cut_proportions
from kgsim.study.results import accuracy_intervals, interval
from kgsim.study.stats import decide, holm, logit_interval, mde, seeds_needed, tost, variance_components, wilson

sm_stats = pytest.importorskip("statsmodels.stats.multitest")
from statsmodels.stats.power import TTestPower  # noqa: E402
from statsmodels.stats.proportion import proportion_confint  # noqa: E402
from statsmodels.stats.weightstats import DescrStatsW  # noqa: E402


@pytest.mark.slow
@given(st.lists(st.floats(0, 1), min_size=1, max_size=20))
@settings(max_examples=200, deadline=None)
def test_holm_equals_statsmodels(p):
    ours = holm(p)
    theirs = sm_stats.multipletests(p, method="holm")[1]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01 = 0.03; 2*0.03 = 0.06; max(0.06, 1*0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])


@pytest.mark.parametrize("seed", range(5))
def test_tost_equals_statsmodels(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(rng.uniform(-3, 3), rng.uniform(0.5, 4), size=int(rng.integers(4, 30)))
    margin = float(rng.uniform(0.5, 5))
    p_sm = DescrStatsW(x).ttost_mean(-margin, margin)[0]
    assert tost(x, margin)["p"] == pytest.approx(p_sm, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("n,k", [(10, 0), (10, 8), (300, 150), (50, 50), (7, 3)])
def test_wilson_equals_statsmodels_and_stays_in_the_unit_interval(n, k):
    lo, hi = wilson(k, n)
    lo_sm, hi_sm = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert (lo, hi) == pytest.approx((lo_sm, hi_sm), abs=1e-12)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


@pytest.mark.parametrize("sd,n", [(8.4, 3), (16.6, 24), (4.5, 4), (10.0, 10)])
def test_mde_matches_statsmodels_power(sd, n):
    e = mde(sd, n)
    power = TTestPower().power(effect_size=e / sd, nobs=n, alpha=0.05, alternative="two-sided")
    assert power == pytest.approx(0.8, abs=1e-6)


def test_seeds_needed_reproduces_the_issue_table():
    """The issue's table (sd across 6 seeds of the default preset; seeds for an MDE of 10 points)."""
    table = {8.4: 8, 16.6: 24, 8.9: 9, 5.4: 5, 4.5: 4, 10.0: 10}
    assert {sd: seeds_needed(sd, 10.0) for sd in table} == table


def test_logit_interval_never_leaves_the_unit_interval_and_covers_near_nominal():
    rng = np.random.default_rng(0)
    covered, trials = 0, 2000
    for _ in range(trials):
        true = 0.9
        n_seeds, n_facts = 5, 200
        # seed-to-seed variation of the true accuracy on the logit scale, then test-fact sampling
        logits = math.log(true / (1 - true)) + rng.normal(0, 0.4, n_seeds)
        p_seed = 1 / (1 + np.exp(-logits))
        props = rng.binomial(n_facts, p_seed) / n_facts
        iv = logit_interval(props, n_facts=[n_facts] * n_seeds)
        assert 0.0 <= iv["lo"] <= iv["hi"] <= 1.0
        # the truth the interval estimates: the median accuracy over seeds (logit-scale mean)
        covered += iv["lo"] <= true <= iv["hi"]
    assert 0.92 <= covered / trials <= 0.98, covered / trials


def test_wilson_coverage_near_nominal():
    rng = np.random.default_rng(1)
    n, p, trials = 120, 0.07, 4000
    ks = rng.binomial(n, p, trials)
    cover = np.mean([lo <= p <= hi for lo, hi in (wilson(int(k), n) for k in ks)])
    assert 0.93 <= cover <= 0.97, cover


def test_variance_components_recover_a_known_truth():
    rng = np.random.default_rng(2)
    between, within = 25.0, 9.0
    est = []
    for _ in range(300):
        means = rng.normal(0, math.sqrt(between), 8)
        groups = [m + rng.normal(0, math.sqrt(within), 4) for m in means]
        est.append(variance_components(groups))
    assert np.mean([e["within"] for e in est]) == pytest.approx(within, rel=0.05)
    assert np.mean([e["between"] for e in est]) == pytest.approx(between, rel=0.12)


def test_verdict_rule_on_constructed_results():
    assert decide([10, 12, 9, 11, 10]).verdict == "holds"
    assert decide([-10, -12, -9, -11]).verdict == "fails"                 # the opposite sign, decided
    assert decide([-10, -12, -9, -11], positive=False).verdict == "holds"
    undecided = decide([3, -4, 5, -2, 1])                                  # inconclusive: not "fails"
    assert undecided.verdict == "undecided" and undecided.mde > 5
    assert "detectable" in undecided.reason
    # "no effect" only from an equivalence test: the same data with a margin that TOST clears
    assert decide([0.1, -0.2, 0.15, -0.05, 0.0, 0.1], margin=2.0).verdict == "fails"
    assert decide([0.1, -0.2, 0.15, -0.05, 0.0, 0.1], margin=None).verdict == "undecided"
    assert decide([1.0]).verdict == "undecided"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(1, 60)), min_size=2, max_size=8))
def test_accuracy_intervals_never_leave_0_1(seeds):
    """A run's accuracy intervals (aggregate accuracy in results.json) stay inside [0, 1] whatever
    the seeds' accuracies, 0 and 1 included, and keep the plain mean and the per-seed values."""
    per_seed = [{"accuracy": {"ft-known/con": {"id": {"zero-shot": min(k, n) / n}}}} for k, n in seeds]
    iv = accuracy_intervals(per_seed)["ft-known/con"]["id"]["zero-shot"]
    values = [min(k, n) / n for k, n in seeds]
    assert iv["values"] == values and iv["mean"] == pytest.approx(np.mean(values))
    assert 0 <= iv["lo"] <= iv["mean"] <= iv["hi"] <= 1
    if len(set(values)) > 1:                                   # cut only where Student t leaves [0, 1]
        t = interval(values)
        assert (iv["lo"], iv["hi"]) == (max(0.0, t["lo"]), min(1.0, t["hi"]))


def test_every_proportion_in_an_aggregate_is_cut_and_nothing_else():
    """Not only accuracies: memorisation rates, two-hop and recall accuracies, gains and losses,
    error-class shares and the rules' agreement stay inside [0, 1] and kappa inside [-1, 1]; gaps,
    gaps inside [-1, 1]; counts, steps, λ and a factor level named like a class are left alone."""
    near0, near1, signed = interval([0.0, 0.0, 0.004]), interval([1.0, 0.99, 1.0]), interval([-0.3, 0.2, -0.1])
    wide, lam = interval([0.9, -0.2, 0.95]), interval([1.3, -0.4, 2.0])      # a gap past ±1; λ is unbounded
    assert near0["lo"] < 0 and near1["hi"] > 1                     # Student t leaves [0, 1] here
    agg = {"accuracy": {"base": {"id": {"zero-shot": near0}}},
           "two_hop": {"base": {"direct": near0, "cot": near1}},
           "recall_cot": {"base": {"id": near1}},
           "transitions": {"base": {"id": {"1-shot": {"gain": near0, "loss": near1}}}},
           "base": {"memorisation": {"statement_acc_never_shown": near0, "extraction_rate": near1,
                                     "n_statement_only_facts_known": interval([3.0, 900.0, 4.0])}},
           "finetune": {"ft-known": {"es_dev_acc": near1, "es_step": interval([5.0, 300.0, 10.0])}},
           "known_rules": {"kappa": interval([1.0, 0.9, 0.99]), "agreement": near1},
           "error_classes": {"base@ft-known": {"id": {"zero-shot": {"n": interval([2.0, 300.0, 9.0]),
                                                                   "other": near0, "from-ft-set": near1}}}},
           "gaps": {"con": {"id": {"zero-shot": signed}}},
           "factor_gaps": {"con": {"open-world": {"answer type": {"other": {"gap": wide,
                                                                            "n": interval([4.0, 90.0, 9.0])}}}}},
           "pull": {"con": {"4-shot": {"lambda": lam, "residual": {"near-id": near0}}}}}
    cut = cut_proportions(agg)
    for path in (("accuracy", "base", "id", "zero-shot"), ("two_hop", "base", "direct"), ("two_hop", "base", "cot"),
                 ("recall_cot", "base", "id"), ("transitions", "base", "id", "1-shot", "gain"),
                 ("transitions", "base", "id", "1-shot", "loss"), ("base", "memorisation", "statement_acc_never_shown"),
                 ("base", "memorisation", "extraction_rate"), ("finetune", "ft-known", "es_dev_acc"),
                 ("known_rules", "agreement"), ("error_classes", "base@ft-known", "id", "zero-shot", "other"),
                 ("error_classes", "base@ft-known", "id", "zero-shot", "from-ft-set"),
                 ("pull", "con", "4-shot", "residual", "near-id")):
        iv = cut
        for k in path:
            iv = iv[k]
        assert 0.0 <= iv["lo"] <= iv["mean"] <= iv["hi"] <= 1.0, path
    assert cut["known_rules"]["kappa"]["hi"] == 1.0
    gap = cut["factor_gaps"]["con"]["open-world"]["answer type"]["other"]["gap"]
    assert wide["lo"] < -1 and wide["hi"] > 1 and (gap["lo"], gap["hi"]) == (-1.0, 1.0)     # a gap: [-1, 1]
    for path in (("gaps", "con", "id", "zero-shot"), ("factor_gaps", "con", "open-world", "answer type", "other", "n"),
                 ("pull", "con", "4-shot", "lambda"),
                 ("base", "memorisation", "n_statement_only_facts_known"), ("finetune", "ft-known", "es_step"),
                 ("error_classes", "base@ft-known", "id", "zero-shot", "n")):
        a, b = agg, cut
        for k in path:
            a, b = a[k], b[k]
        assert a == b, path
