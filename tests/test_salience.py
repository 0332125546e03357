"""Measured salience of a one-layer attention-only GPT (on hand-built models) and the AUROC machinery
(against scipy's Mann-Whitney U; sklearn is not a kgsim dependency)."""
import numpy as np
import pytest
import torch

from kgsim.core.config import ModelConfig
from kgsim.nn.model import build_model
from kgsim.study.salience import (
    auroc,
    bootstrap_auroc,
    direct_logit_attribution,
    loss_prediction,
    salience,
    t_interval,
    value_output,
)

EPS = 1e-5   # kgsim's LayerNorm epsilon


def _hand_model():
    """d_model 4, 2 heads of 2 dims, 5 tokens; W_V = W_O = I (so W_O^h W_V^h projects on head h's two
    dims), no biases, LN_1 plain, ln_f gain 2 on dim 0. Token 0 = [1, -1, 0, 0], position 2 adds
    [0, 0, 1, -1]; token 1 = [2, 0, 0, 0]."""
    cfg = ModelConfig(d_model=4, n_layers=1, n_heads=2, n_ctx=8, attention_only=True)
    m = build_model(cfg, vocab_size=5, seed=0)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.h[0].ln_1.weight.fill_(1.0)
        m.ln_f.weight.copy_(torch.tensor([2.0, 1.0, 1.0, 1.0]))
        m.h[0].attn.c_attn.weight[8:].copy_(torch.eye(4))
        m.h[0].attn.c_proj.weight.copy_(torch.eye(4))
        m.wte.weight[0] = torch.tensor([1.0, -1.0, 0.0, 0.0])
        m.wte.weight[1] = torch.tensor([2.0, 0.0, 0.0, 0.0])
        m.wpe.weight[2] = torch.tensor([0.0, 0.0, 1.0, -1.0])
    return m


def test_salience_by_hand():
    # LN_1(wte[0] + wpe[2]) = [1, -1, 1, -1] / sqrt(1 + eps) (mean 0, variance 1);
    # P (γ_f ⊙ wte[1]) = [4, 0, 0, 0] centred = [3, -1, -1, -1];
    # head 0 (dims 0-1): 3·1 + (-1)(-1) = 4; head 1 (dims 2-3): (-1)·1 + (-1)(-1) = 0
    m = _hand_model()
    ov = value_output(m)
    np.testing.assert_allclose(ov.sum(0), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(ov[0], np.diag([1.0, 1, 0, 0]), atol=1e-12)
    per = salience(m, [0], [1], position=2, per_head=True)
    np.testing.assert_allclose(per, [[4 / np.sqrt(1 + EPS), 0.0]], rtol=1e-9)
    np.testing.assert_allclose(salience(m, [0], [1]), [4 / np.sqrt(1 + EPS)], rtol=1e-9)
    # at position 0 (no position embedding): LN_1([1, -1, 0, 0]) = [1, -1, 0, 0] · sqrt(2) / sqrt(1 + 2 eps)
    np.testing.assert_allclose(salience(m, [0], [1], position=0), [4 * np.sqrt(2) / np.sqrt(1 + 2 * EPS)], rtol=1e-9)


def _random_model(seed=3):
    cfg = ModelConfig(d_model=16, n_layers=1, n_heads=4, n_ctx=8, attention_only=True)
    m = build_model(cfg, vocab_size=30, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():   # every bias and LayerNorm parameter away from its initial value, so each is tested
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return m


def test_direct_logit_attribution_adds_up_to_the_logits_and_matches_salience():
    m = _random_model()
    tokens = np.random.default_rng(0).integers(0, 30, (7, 5))
    dla = direct_logit_attribution(m, tokens)
    np.testing.assert_allclose(dla["positions"].sum(1) + dla["rest"], dla["logits"], atol=1e-4)
    # the subject position's part is Σ_h α_h · S_h / σ, for every answer token
    from kgsim.study.one_layer import measure

    alpha, _ = measure(m, tokens)                                    # [n, H, T]
    for a in (0, 11, 29):
        per = salience(m, tokens[:, 2], np.full(7, a), position=2, per_head=True)   # [n, H]
        np.testing.assert_allclose(dla["positions"][:, 2, a], (alpha[:, :, 2] * per).sum(1) / dla["sigma"],
                                   rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(salience(m, tokens[:, 2], tokens[:, 3], per_head=True).sum(1),
                               salience(m, tokens[:, 2], tokens[:, 3]), rtol=1e-12)


def test_salience_refuses_other_models_and_bad_ids():
    two = build_model(ModelConfig(d_model=16, n_layers=2, n_heads=4, n_ctx=8, attention_only=True), 30, seed=0)
    with pytest.raises(ValueError, match="one-layer attention-only"):
        salience(two, [1], [2])
    m = _random_model()
    with pytest.raises(ValueError, match="out of range"):
        salience(m, [30], [2])
    with pytest.raises(ValueError, match="position = 8"):
        salience(m, [1], [2], position=8)


def test_auroc_against_mann_whitney_u():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(1)
    for n in (5, 40, 200):
        score = rng.integers(0, 6, n).astype(float)          # many ties
        label = rng.random(n) < 0.3
        label[:2] = [True, False]
        u = mannwhitneyu(score[label], score[~label]).statistic
        assert auroc(score, label) == pytest.approx(u / (label.sum() * (~label).sum()), abs=1e-12)
    assert auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0 and auroc([1, 2, 3, 4], [1, 1, 0, 0]) == 0.0
    assert auroc([1, 1, 1], [0, 1, 0]) == 0.5
    assert np.isnan(auroc([1.0, 2.0], [True, True]))


def test_bootstrap_interval_is_seeded_and_contains_the_estimate():
    rng = np.random.default_rng(2)
    label = rng.random(80) < 0.4
    score = rng.normal(size=80) + label
    a = auroc(score, label)
    lo, hi = bootstrap_auroc(score, label, np.random.default_rng(7), n_boot=500)
    assert 0 <= lo <= a <= hi <= 1
    assert (lo, hi) == bootstrap_auroc(score, label, np.random.default_rng(7), n_boot=500)
    assert (lo, hi) != bootstrap_auroc(score, label, np.random.default_rng(8), n_boot=500)
    assert all(np.isnan(bootstrap_auroc([1.0, 2.0], [False, False], np.random.default_rng(0))))
    with pytest.raises(ValueError, match="n_boot = 0"):
        bootstrap_auroc(score, label, np.random.default_rng(0), n_boot=0)


def test_loss_prediction_direction_and_counts():
    sal = np.array([0.1, 0.2, 5.0, 6.0, 7.0, -3.0])
    before = np.array([True, True, True, True, True, False])       # the last fact is not counted
    after = np.array([False, False, True, True, True, False])      # the two lowest-salience facts are lost
    out = loss_prediction(sal, before, after, np.random.default_rng(0), n_boot=200)
    assert (out["n_correct_before"], out["n_lost"], out["n_kept"]) == (5, 2, 3)
    assert out["auroc"] == 1.0 and out["low"] == out["high"] == 1.0
    assert out["mean_lost"] == pytest.approx(0.15)
    flipped = loss_prediction(-sal, before, after, np.random.default_rng(0), n_boot=200)
    assert flipped["auroc"] == 0.0
    none_lost = loss_prediction(sal, before, before, np.random.default_rng(0))
    assert none_lost["auroc"] is None and none_lost["low"] is None and none_lost["n_lost"] == 0


def test_t_interval():
    from scipy.stats import t

    out = t_interval([0.6, 0.7, None, 0.8])
    half = t.ppf(0.975, 2) * 0.1 / np.sqrt(3)
    assert out["n"] == 3 and out["mean"] == pytest.approx(0.7)
    assert out["low"] == pytest.approx(0.7 - half) and out["high"] == pytest.approx(0.7 + half)
    assert t_interval([0.5])["low"] is None and t_interval([])["mean"] is None


def test_hanley_mcneil():
    from kgsim.study.salience import hanley_mcneil

    a, n1, n0 = 0.7, 12, 30
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = np.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0))
    lo, hi = hanley_mcneil(a, n1, n0)
    assert lo == pytest.approx(a - 1.959964 * se, abs=1e-6) and hi == pytest.approx(a + 1.959964 * se, abs=1e-6)
    assert hanley_mcneil(0.1, 109, 1)[1] > 0.4            # one negative: wide, where a bootstrap collapses
    assert hanley_mcneil(1.0, 5, 5) == (1.0, 1.0)
    with pytest.raises(ValueError, match="n_neg = 0"):
        hanley_mcneil(0.5, 3, 0)
