"""One-seed verdicts on a bootstrap over test facts (kgsim.study.results.bootstrap_gaps): pairing,
determinism, the verdicts at the extremes, and the interval's coverage on simulated runs."""
import numpy as np
import pytest

from kgsim.core.edges import EdgeSet
from kgsim.study.results import bootstrap_gap_intervals, bootstrap_gaps, observations, seed_figures


def _sets(correct: dict, n: int | None = None) -> list[EdgeSet]:
    """Edge sets from {(model, stage, split, prompt): bool array}; test ids 0..n-1 per split."""
    return [EdgeSet(np.arange(len(c)), np.asarray(c, bool), model=m, stage=st, prompt=p, split=s)
            for (m, st, s, p), c in correct.items()]


def _pair(known, unknown, stage="es", split="id", prompt="zero-shot") -> dict:
    return {("ft-known", stage, split, prompt): known, ("ft-unknown", stage, split, prompt): unknown}


def test_same_seed_same_replicates_and_identical_models_give_a_zero_interval():
    rng = np.random.default_rng(0)
    kn, unk = rng.random(200) < 0.5, rng.random(200) < 0.4
    edges = _sets(_pair(kn, unk))
    reps = lambda seed: bootstrap_gaps(edges, n_boot=300, seed=seed)["gaps"]["es"]["id"]["zero-shot"]  # noqa: E731
    assert np.array_equal(reps(3), reps(3)) and not np.array_equal(reps(3), reps(4))
    same = _sets(_pair(kn, kn))
    iv = bootstrap_gap_intervals(seed_figures(same)["gaps"], bootstrap_gaps(same, n_boot=300))["es"]["id"]["zero-shot"]
    assert iv["mean"] == iv["lo"] == iv["hi"] == 0.0                   # paired: the same answers, no spread


def test_pairing_makes_a_consistent_small_gap_significant():
    """FT-Known answers every fact FT-Unknown answers, plus 10 of 300 more: a 3.3-point gap that the
    paired bootstrap finds certain (every replicate > 0), although both accuracies vary by ~6 points."""
    rng = np.random.default_rng(1)
    unk = rng.random(300) < 0.5
    kn = unk.copy()
    kn[np.flatnonzero(~unk)[:10]] = True
    boot = bootstrap_gaps(_sets(_pair(kn, unk)), n_boot=500)
    reps = boot["gaps"]["es"]["id"]["zero-shot"]
    assert reps.min() > 0 and abs(reps.mean() - 10 / 300) < 0.01


def test_verdicts_hold_inconclusive_and_opposite():
    n = 300
    rng = np.random.default_rng(2)
    big = np.ones(n, bool)
    none = np.zeros(n, bool)
    coin = rng.random(n) < 0.5
    correct = {**_pair(big, none, "es"), **_pair(coin, coin, "con")}        # ES gap 100 points, Con. 0
    edges = _sets(correct)
    obs = observations([seed_figures(edges)], (), [], boot=bootstrap_gaps(edges, n_boot=400))
    assert obs["O1"]["gap_id_es_positive"]["verdict"] == "holds"
    assert obs["O1"]["gap_id_con_positive"]["verdict"] == "inconclusive"
    assert obs["O1"]["gap_grows_es_to_con"]["verdict"] == "opposite"
    assert obs["O1"]["gap_id_es_positive"]["method"] == "bootstrap over test facts"
    assert obs["O2"]["es: gap_near_id_positive"]["verdict"] == "not measured"   # no near-id split here


def test_without_the_bootstrap_a_single_seed_is_judged_on_its_sign():
    edges = _sets(_pair(np.ones(10, bool), np.zeros(10, bool)))
    obs = observations([seed_figures(edges)], (), [])
    assert obs["O1"]["gap_id_es_positive"]["verdict"] == "holds (one seed: sign only)"


@pytest.mark.parametrize("p_known, p_unknown", [(0.6, 0.45), (0.3, 0.3)])
def test_the_interval_covers_the_true_gap_about_95_percent_of_the_time(p_known, p_unknown):
    """Simulated runs with known per-fact answer probabilities (FT-Known and FT-Unknown correlated
    through a shared per-fact difficulty): the 95% percentile interval should cover the true gap in
    about 95% of 300 runs; a binomial 99.9% band for 300 runs at 0.95 is [0.90, 0.99]."""
    rng = np.random.default_rng(7)
    n, hits, trials = 200, 0, 300
    for t in range(trials):
        u = rng.random(n)                                                # shared difficulty -> pairing
        kn, unk = u < p_known, u < p_unknown
        noise = rng.random(n) < 0.2                                      # some answers flip independently
        kn = np.where(noise, rng.random(n) < p_known, kn)
        edges = _sets(_pair(kn, unk))
        iv = bootstrap_gap_intervals(seed_figures(edges)["gaps"], bootstrap_gaps(edges, n_boot=400, seed=t))
        iv = iv["es"]["id"]["zero-shot"]
        hits += iv["lo"] <= p_known - p_unknown <= iv["hi"]
    assert 0.90 <= hits / trials <= 0.99
