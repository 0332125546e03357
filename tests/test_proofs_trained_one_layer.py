"""kgsim's trained one-layer attention-only model against the one-layer simulation, on a small world.

What is asserted is what held robustly when this was written: the numbers are finite, attention
rows sum to 1, every check is produced and reported, runs are reproducible, and fine-tuning on
FT-Unknown loses accessible ID test edges (and ends below FT-Known). That edge loss held in every
run checked: seeds 0-4 of the default configuration (e.g. seed 0: 28 -> 7 of 40 edges) and seeds
0-4 of the small one below (21 -> 1, 20 -> 2, 12 -> 2, 12 -> 1, 17 -> 3).

The *direction of the attention shift* is not asserted: it is not robust in the trained model.
With the default configuration the mean subject mass after FT-Unknown moved by -0.089, +0.021,
+0.050, -0.027, -0.002 (seeds 0-4; it falls sharply in the first ~20 steps in 4 of 5 seeds, then
partly returns as the FT-Unknown facts are fitted), and in the small configuration by -0.088,
-0.145, -0.106, -0.229, +0.045. FT-Known raised the subject mass in all 5 default seeds
(+0.008 ... +0.175), but that too is only reported, through the CheckResults.
"""
import json
import math

import numpy as np
import pytest

from kgsim.cli import main as kgsim_main
from kgsim.study.one_layer import (
    DEFAULT_OVERRIDES,
    RUNS,
    TrainedOneLayerConfig,
    compare,
    format_summary,
    measure,
    write_comparison_figure,
)

SMALL = ("pretrain.steps=500", "pretrain.eval_every=500", "pretrain.ckpt_every=500",
         "finetune.steps=40", "finetune.ckpt_every=40")
SIM_D = 256


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """`kgsim one-layer` once on the small configuration; then compare() again on its cached training."""
    out = tmp_path_factory.mktemp("trained_one_layer")
    argv = ["--out", str(out), "--seed", "0", "--sim-d-model", str(SIM_D)]
    for item in SMALL:
        argv += ["--set", item]
    assert kgsim_main(["one-layer", *argv]) == 0
    cfg = TrainedOneLayerConfig(seed=0, overrides=(*DEFAULT_OVERRIDES, *SMALL), sim_d_model=SIM_D)
    return out, compare(cfg, work_dir=out / "train-seed0")


def _finite(x):
    if isinstance(x, dict):
        return all(_finite(v) for v in x.values())
    if isinstance(x, list):
        return all(_finite(v) for v in x)
    return not isinstance(x, float) or math.isfinite(x)


@pytest.mark.slow
def test_cli_writes_json_and_figures(run):
    out, _ = run
    for name in ("trained_one_layer.png", "one_layer_sim.png", "one_layer_sim_synthetic.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "trained_one_layer.json").read_text())
    assert set(summary["runs"]) == set(RUNS) and summary["n_test"] == 40
    assert _finite(summary)


@pytest.mark.slow
def test_rerun_on_cached_training_reproduces_the_numbers(run):
    out, res = run
    assert json.loads(json.dumps(res.summary())) == json.loads((out / "trained_one_layer.json").read_text())


@pytest.mark.slow
def test_attention_rows_sum_to_one_and_masses_are_probabilities(run):
    _, res = run
    assert set(res.attention) == {"base", *RUNS, *(f"{n} at ES" for n in RUNS)}
    for attn in res.attention.values():
        assert attn.shape == (40, 4, 5) and np.isfinite(attn).all()
        np.testing.assert_allclose(attn.sum(-1), 1.0, atol=1e-5)
    for name in RUNS:
        for sh in (res.trained[name].shift, res.trained[name].shift_es, res.simulated.runs[name].shift,
                   res.synthetic.runs[name].shift):
            for m in (sh.subject_before, sh.subject_after, sh.relation_before, sh.relation_after):
                assert 0.0 <= m <= 1.0
            assert sh.subject_before + sh.relation_before <= 1.0 + 1e-9
            assert 0 <= sh.edges_after <= sh.n and sh.edges_after - sh.edges_before == sh.edges_gained - sh.edges_lost


@pytest.mark.slow
def test_every_check_is_produced_and_reported(run):
    _, res = run
    keys = {k for n in RUNS for k in (n, f"{n} at ES", f"{n} vs synthetic")}
    assert set(res.checks) == keys
    for c in res.checks.values():
        assert c.kind == "empirical" and c.scope.startswith("trained one-layer") and "edges" in c.detail
        assert math.isfinite(c.lhs) and math.isfinite(c.rhs)
    text = format_summary(res)
    assert all(res.checks[k].scope in text for k in keys)


@pytest.mark.slow
def test_ft_unknown_loses_test_edges(run):
    _, res = run
    unk, kn = res.trained["ft-unknown"].shift, res.trained["ft-known"].shift
    assert unk.edges_after < unk.edges_before
    assert unk.edges_after < kn.edges_after


@pytest.mark.slow
def test_measure_matches_kgsim_probe(run):
    from kgsim.core.config import ModelConfig
    from kgsim.nn.model import build_model
    from kgsim.nn.probe import answers
    from kgsim.world.corpus import Vocabulary
    from kgsim.world.prompts import zero_shot

    v = Vocabulary(n_entities=20, n_relations=3)
    model = build_model(ModelConfig(d_model=32, n_layers=1, n_heads=2, n_ctx=8, attention_only=True), v.size, seed=1)
    batch = zero_shot(v, np.arange(6), np.arange(6) % 3)
    attn, guess = measure(model, batch.tokens)
    assert attn.shape == (6, 2, 5) and (guess == answers(model, batch)).all()


@pytest.mark.slow
def test_figure_from_result(run, tmp_path):
    _, res = run
    path = write_comparison_figure(res, tmp_path / "cmp.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_must_be_one_layer_attention_only():
    from kgsim.core.config import ConfigError

    with pytest.raises(ConfigError, match="attention_only"):
        TrainedOneLayerConfig(overrides=(*DEFAULT_OVERRIDES, "model.n_layers=2")).experiment_config()


def test_world_from_facts_builds_the_value_matrix_of_its_facts():
    from proofs.one_layer import OneLayerConfig, _value_matrix, salience, simulate_on, world_from_facts

    rng = np.random.default_rng(0)
    s, r, a = rng.integers(0, 40, 120), rng.integers(0, 3, 120), rng.integers(0, 40, 120)
    sal = np.where(rng.random(120) < 0.5, 5.0, 0.0)
    cfg = OneLayerConfig(d_model=256, steps=5)
    w = world_from_facts(s, r, a, sal, sal > 0, 40, 3, cfg)
    pools = []
    for rel in range(3):
        ans, counts = np.unique(a[r == rel], return_counts=True)
        pools.append(ans[np.argsort(-counts, kind="stable")])
    np.testing.assert_allclose(w.w_v, _value_matrix(w.phi, w.phi_rel, s, a, sal, pools, cfg.relation_strength),
                               atol=1e-12)
    assert (w.generic == [p[0] for p in pools]).all()
    stored = salience(w, np.flatnonzero(sal > 0)).mean()
    assert stored > 3.0 > 1.0 > abs(salience(w, np.flatnonzero(sal == 0)).mean())
    res = simulate_on(w, np.flatnonzero(sal > 0)[:10], np.flatnonzero(sal == 0)[:10], np.flatnonzero(sal > 0)[10:], cfg)
    assert sorted(res.runs) == list(RUNS) and res.n_test == int((sal > 0).sum()) - 10
    with pytest.raises(ValueError, match="out of range"):
        world_from_facts(s, r, a + 40, sal, sal > 0, 40, 3, cfg)
    with pytest.raises(ValueError, match="relation 3 has no facts"):
        world_from_facts(s, r, a, sal, sal > 0, 40, 4, cfg)


@pytest.mark.slow
def test_salience_prediction_magnitudes_and_seed_aggregate(run, tmp_path):
    """Salience, the loss-prediction AUROC and the magnitudes on the small run: only what is robust
    (finite, AUROC in [0, 1] with its interval around it, the counts add up); the across-seed aggregate
    and its figure from that summary under two seed labels (aggregate's mechanics, not a second training)."""
    from kgsim.study.one_layer_seeds import aggregate, format_aggregate, write_seeds_figure

    out, res = run
    summary = json.loads((out / "trained_one_layer.json").read_text())
    facts = summary["salience"]["facts"]
    n = summary["n_test"]
    assert len(facts["salience"]) == len(facts["realised"]) == n and np.isfinite(facts["salience"]).all()
    np.testing.assert_allclose(np.sum(facts["salience_by_head"], axis=1), facts["salience"], rtol=1e-9)
    for name in RUNS:
        assert facts[f"correct_after_{name}"] == res.salience[f"correct_after_{name}"].tolist()
        for key, p in summary["salience"]["prediction"][name].items():
            lost = np.array(facts["correct_before"]) & ~np.array(facts[f"correct_after_{name}"])
            assert p["n_correct_before"] == sum(facts["correct_before"]) and p["n_lost"] == lost.sum()
            if p["n_lost"] and p["n_kept"]:
                assert 0.0 <= p["low"] <= p["auroc"] <= p["high"] <= 1.0
                assert 0.0 <= p["hm_low"] <= p["auroc"] <= p["hm_high"] <= 1.0
            else:
                assert p["auroc"] is None
        for key in ("subject", "relation"):
            m = summary["magnitudes"][name][key]
            assert m["trained_change"] == pytest.approx(m["trained_after"] - m["trained_before"])
            sh = res.trained[name].shift
            assert m["trained_before"] == getattr(sh, f"{key}_before")
    assert "AUROC (low salience predicts loss)" in format_summary(res)
    other = json.loads(json.dumps(summary)) | {"seed": 1}
    agg = aggregate([summary, other])
    p = agg["runs"]["ft-unknown"]["loss_prediction"]["salience"]
    if p["mean"] is not None:     # the same AUROC twice: zero spread, the interval collapses on it
        assert p["low"] == pytest.approx(p["mean"]) == pytest.approx(p["high"])
    assert "ft-unknown" in format_aggregate(agg)
    assert write_seeds_figure(agg, [summary, other], tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="different configurations"):
        aggregate([summary, other | {"sim_d_model": 1}])


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0", "0"], "--seeds 0 0: a seed is repeated"),
    (["--seed", "1", "--seeds", "2"], "--seed 1 and --seeds 2: give one of them"),
    (["--seeds", "-1"], "seeds must be >= 0"),
    (["--threads", "0"], "--threads 0: must be at least 1"),
    (["--set", "model.n_layers=2"], "attention_only"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    assert kgsim_main(["one-layer", "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kgsim: error:") and message in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_default_world_overrides():
    from kgsim.study.one_layer import DEFAULT_WORLD_OVERRIDES, overrides_for

    assert overrides_for("smoke") == DEFAULT_OVERRIDES and overrides_for("default") == DEFAULT_WORLD_OVERRIDES
    cfg = TrainedOneLayerConfig(preset="default", overrides=DEFAULT_WORLD_OVERRIDES).experiment_config()
    assert cfg.model.attention_only and cfg.model.n_layers == 1 and not cfg.pretrain.bf16 and not cfg.finetune.bf16
    assert cfg.graph.n_entities == 1600 and cfg.splits.test_size == 200
