"""Mechanisms (issue 13): each prompt's gross gains and losses against zero-shot, and the shrink of
the gap split exactly into FT-Known's net loss and FT-Unknown's net gain, on random edge sets."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kgsim.core.edges import EdgeSet
from kgsim.study.results import gap_pairs, prompt_transitions, seed_figures


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 40), seed=st.integers(0, 2**31), weighted=st.booleans())
def test_gain_minus_loss_is_the_accuracy_change_and_the_shrink_splits_exactly(n, seed, weighted):
    rng = np.random.default_rng(seed)
    ids = rng.permutation(1000)[:n]
    w = rng.random(n) + 0.1 if weighted else None
    sets = []
    for model in ("ft-known", "ft-unknown"):
        for prompt in ("zero-shot", "4-shot"):
            order = rng.permutation(n)                               # the prompt's facts in another order
            sets.append(EdgeSet(ids[order], rng.random(n) < 0.5, model=model, stage="con", split="id", prompt=prompt,
                                weights=None if w is None else w[order]))
    tr = prompt_transitions(sets)
    figs = seed_figures(sets)
    for model in ("ft-known", "ft-unknown"):
        t = tr[f"{model}/con"]["id"]["4-shot"]
        acc = figs["accuracy"][f"{model}/con"]["id"]
        assert t["gain"] - t["loss"] == pytest.approx(acc["4-shot"] - acc["zero-shot"], abs=1e-12)
        assert 0 <= t["gain"] <= 1 and 0 <= t["loss"] <= 1
    k, u = tr["ft-known/con"]["id"]["4-shot"], tr["ft-unknown/con"]["id"]["4-shot"]
    shrink = figs["gaps"]["con"]["id"]["zero-shot"] - figs["gaps"]["con"]["id"]["4-shot"]
    assert shrink == pytest.approx((k["loss"] - k["gain"]) + (u["gain"] - u["loss"]), abs=1e-12)
    assert set(gap_pairs(sets)) == {("con", "id", "zero-shot"), ("con", "id", "4-shot")}


def test_a_prompt_over_facts_zero_shot_never_saw_is_left_out():
    z = EdgeSet(np.arange(3), np.ones(3, bool), model="ft-known", stage="es", split="id")
    k = EdgeSet(np.arange(1, 5), np.ones(4, bool), model="ft-known", stage="es", split="id", prompt="1-shot")
    assert prompt_transitions([z, k]) == {}


@settings(max_examples=50, deadline=None)
@given(lam=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_the_pull_model_recovers_a_true_pull_and_predicts_other_splits_exactly(lam, seed):
    """Accuracies built by acc(k) = acc(0) + λ (base(k) − acc(0)) on every split: the fit on ID gives λ
    back and leaves no residual elsewhere; "nothing changes" (λ = 0) leaves the whole move."""
    from kgsim.study.results import pull_model

    rng = np.random.default_rng(seed)
    acc = {"base": {}, "ft-known/con": {}, "ft-unknown/con": {}}
    moves = {}
    for split in ("id", "near-id", "open-world"):
        b = rng.uniform(0.3, 0.9)
        acc["base"][split] = {"4-shot": b}
        for m in ("ft-known/con", "ft-unknown/con"):
            a0 = rng.uniform(0, 1)
            acc[m][split] = {"zero-shot": a0, "4-shot": a0 + lam * (b - a0)}
            moves.setdefault(split, []).append(abs(lam * (b - a0)))
    r = pull_model(acc, [4])["con"]["4-shot"]
    assert r["lambda"] == pytest.approx(lam, abs=1e-9)
    for split in ("near-id", "open-world"):
        assert r["residual"][split] == pytest.approx(0, abs=1e-9)
        assert r["residual_no_pull"][split] == pytest.approx(np.mean(moves[split]), abs=1e-12)
