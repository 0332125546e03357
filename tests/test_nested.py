"""The nested design (``run.ft_replicates``): the task graph it builds, the keys it leaves unchanged,
replicate means, and the variance components against a hand computation and a simulated truth.
The end-to-end run is in tests/test_run.py (``test_smoke_run_with_fine_tuning_replicates``)."""
import json
import math

import numpy as np
import pytest

from kgsim.cli import main
from kgsim.core.config import load_config
from kgsim.study.nested import mean_bootstrap, replicate_means, unit_bootstraps, variance_table
from kgsim.study.runner import protocol_dict, seed_key, unit_name
from kgsim.study.stages import ft_models
from kgsim.study.stats import (
    between_interval,
    difference_interval,
    nested_components,
    variance_components,
    variance_interval,
)
from kgsim.study.tasks import Cell, build_graph, finetune_key


def test_the_graph_has_one_base_per_seed_and_a_fine_tuning_chain_per_replicate(tmp_path):
    cfg = load_config("smoke", overrides=["run.seeds=[0, 1]", "run.ft_replicates=3"])
    tasks = build_graph([Cell("", cfg, tmp_path / "run")], tmp_path / "cache")
    kinds: dict = {}
    for t in tasks.values():
        kinds[t.kind] = kinds.get(t.kind, 0) + 1
    n_ft = len(ft_models(cfg))
    assert kinds == {"world": 2, "pretrain": 2, "probe": 2, "finetune": 2 * 3 * n_ft, "seed": 6, "finish": 1}
    seed_dirs = sorted({t.args[3] for t in tasks.values() if t.kind == "finetune"})
    assert [d.rsplit("/", 1)[-1] for d in seed_dirs] == [
        "seed-0", "seed-0-ft1", "seed-0-ft2", "seed-1", "seed-1-ft1", "seed-1-ft2"]


def test_replicate_zero_keeps_every_key_of_a_run_without_replicates():
    one = load_config("smoke")
    three = load_config("smoke", overrides=["run.ft_replicates=3"])
    assert protocol_dict(one) == protocol_dict(three)                # more replicates: the same run, extended
    assert seed_key(one, 0) == seed_key(three, 0, 0) != seed_key(three, 0, 1)
    for _, which in ft_models(one):
        keys = {finetune_key(three, which, r) for r in range(3)}
        assert finetune_key(one, which) == finetune_key(three, which, 0) and len(keys) == 3
    assert (unit_name(4), unit_name(4, 0), unit_name(4, 2)) == ("seed-4", "seed-4", "seed-4-ft2")


def test_replicate_means_average_figures_and_leave_single_units_alone():
    units = [{"seed": 1, "replicate": 1, "gaps": {"con": {"id": {"zero-shot": 0.2}}}, "finetune": {"es_step": 10},
              "checks": ["b"]},
             {"seed": 1, "replicate": 0, "gaps": {"con": {"id": {"zero-shot": 0.6}}}, "finetune": {"es_step": 20},
              "checks": ["a"]},
             {"seed": 2, "gaps": {"con": {"id": {"zero-shot": float("nan")}}}}]
    one, two = replicate_means(units)
    assert one["gaps"]["con"]["id"]["zero-shot"] == pytest.approx(0.4)
    assert one["finetune"]["es_step"] == 15 and one["checks"] == ["a"] and one["replicates"] == 2
    assert "replicate" not in one and two is units[2]


def test_nested_components_by_hand():
    # seeds' replicates: [1, 3] (mean 2), [4, 6, 8] (mean 6), [10] (mean 10); bootstrap variance 0.5
    vc = nested_components([[1.0, 3.0], [4.0, 6.0, 8.0], [10.0]], [[0.5, 0.5, 0.5, 0.5, 0.5, 0.5]])
    ss_w, df_w = (1 + 1) + (4 + 0 + 4), 1 + 2                      # the single-replicate seed adds no df
    assert vc["fine_tuning"] == pytest.approx(ss_w / df_w)
    between = variance_components([[1.0, 3.0], [4.0, 6.0, 8.0], [10.0]])["between"]
    assert vc["world_pretraining"] == pytest.approx(between - 0.5)
    assert vc["test_facts"] == 0.5 and vc["per_seed_mean"] == pytest.approx(np.var([2.0, 6.0, 10.0], ddof=1))
    assert vc["note"] == "all three separated" and math.isnan(vc["world_and_fine_tuning"])


def test_nested_components_say_what_a_design_cannot_separate():
    single = nested_components([[0.1], [0.3], [0.2]], [[1e-4] * 3])
    assert math.isnan(single["fine_tuning"]) and math.isnan(single["world_pretraining"])
    assert single["world_and_fine_tuning"] == pytest.approx(np.var([0.1, 0.3, 0.2], ddof=1) - 1e-4)
    assert "not separated from world" in single["note"]
    one_seed = nested_components([[0.1, 0.2, 0.4]], [[1e-4] * 3])
    assert one_seed["fine_tuning"] == pytest.approx(np.var([0.1, 0.2, 0.4], ddof=1))
    assert math.isnan(one_seed["world_pretraining"]) and "one seed" in one_seed["note"]
    assert math.isnan(nested_components([[0.1, 0.2]])["test_facts"])


def test_nested_components_recover_a_known_truth():
    """y_ij = W_i + T_i + F_ij: world sd 5, test-fact sampling sd 2 (shared by a seed's replicates,
    as its test facts are; the bootstrap reports its variance, 4), fine-tuning sd 3."""
    rng = np.random.default_rng(7)
    world, facts, ft = 25.0, 4.0, 9.0
    est = []
    for _ in range(400):
        shift = rng.normal(0, math.sqrt(world), 10) + rng.normal(0, math.sqrt(facts), 10)
        groups = [m + rng.normal(0, math.sqrt(ft), 3) for m in shift]
        est.append(nested_components(groups, [[facts] * 30], target=10.0))
    assert np.mean([e["fine_tuning"] for e in est]) == pytest.approx(ft, rel=0.05)
    assert np.mean([e["world_pretraining"] for e in est]) == pytest.approx(world, rel=0.12)
    assert np.mean([e["per_seed_mean"] for e in est]) == pytest.approx(world + facts + ft / 3, rel=0.1)
    need = est[0]["seeds_for_target"]
    assert need[1] >= need[2] >= need[4] >= 2                      # more replicates never need more seeds


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "'two'"])
def test_bad_ft_replicates_is_one_line_and_exit_2(capsys, tmp_path, value):
    code = main(["run", "--preset", "smoke", "--set", f"run.ft_replicates={value}", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "run.ft_replicates" in err
    assert not (tmp_path / "r").exists()


def _write_unit(run_dir, seed, replicate, kn_correct, unk_correct):
    from kgsim.core.edges import EdgeSet, TwoHopQueries
    from kgsim.core.io import write_json
    ids = np.arange(len(kn_correct))
    sets = [EdgeSet(ids, np.asarray(kn_correct, bool), model="ft-known", stage="con", split="id"),
            EdgeSet(ids, np.asarray(unk_correct, bool), model="ft-unknown", stage="con", split="id")]
    empty = TwoHopQueries(np.zeros((0, 5), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    write_json(run_dir / unit_name(seed, replicate) / "edges.json",
               {"edge_sets": [e.to_json() for e in sets], "two_hop": empty.to_json(), "splits": {}})
    return {"seed": seed, "replicate": replicate}


def test_the_two_stage_bootstrap_adds_the_replicates_spread(tmp_path):
    """One seed, two replicates over the same 60 test facts: identical replicates give the one-stage
    bootstrap exactly; replicates 20 points apart widen the interval beyond the one-stage one."""
    rng = np.random.default_rng(3)
    kn, unk = rng.random(60) < 0.7, rng.random(60) < 0.3
    same = [_write_unit(tmp_path / "same", 4, r, kn, unk) for r in (0, 1)]
    one = mean_bootstrap(tmp_path / "same", same[:1], n_boot=400)["gaps"]["con"]["id"]["zero-shot"]
    two = mean_bootstrap(tmp_path / "same", same, n_boot=400)["gaps"]["con"]["id"]["zero-shot"]
    assert np.array_equal(one, two)
    apart = unk.copy()
    apart[np.flatnonzero(~unk)[:12]] = True                                   # replicate 1: gap 20 points smaller
    units = [_write_unit(tmp_path / "apart", 4, 0, kn, unk), _write_unit(tmp_path / "apart", 4, 1, kn, apart)]
    boot = mean_bootstrap(tmp_path / "apart", units, n_boot=400)["gaps"]["con"]["id"]["zero-shot"]
    r0, r1 = (mean_bootstrap(tmp_path / "apart", [u], n_boot=400)["gaps"]["con"]["id"]["zero-shot"] for u in units)
    # picking 2 of 2 replicates with replacement adds the variance of their mean, (d/2)^2 / 2 with the
    # replicates d = 0.2 apart; 400 draws estimate a variance to ~7%, so rel=0.2 is three of those
    assert np.var(boot) == pytest.approx(np.var((r0 + r1) / 2) + 0.1 ** 2 / 2, rel=0.2)
    assert np.mean(boot) == pytest.approx(np.mean((r0 + r1) / 2), abs=0.02)
    # finish computes each unit's bootstrap once and hands it to both users: the same numbers
    shared = unit_bootstraps(tmp_path / "apart", units, 400)
    again = mean_bootstrap(tmp_path / "apart", units, n_boot=400, boots=shared)["gaps"]["con"]["id"]["zero-shot"]
    assert np.array_equal(again, boot)
    figures = [{**u, "gaps": {"con": {"id": {"zero-shot": float(np.mean(kn) - np.mean(c))}}}}
               for u, c in zip(units, (unk, apart))]
    table = variance_table(tmp_path / "apart", figures, {"O1": "gap_id_con_positive"}, (4,), [], n_boot=400)
    assert table["O1"]["n_units"] == 2 and table["O1"]["test_facts"] > 0
    again = variance_table(tmp_path / "apart", figures, {"O1": "gap_id_con_positive"}, (4,), [], boots=shared)
    assert json.dumps(table, sort_keys=True) == json.dumps(again, sort_keys=True)      # NaN-aware equality


def test_variance_intervals_cover_near_nominal_and_bound_the_seed_count():
    """The chi-square interval of a variance covers the truth ~95% of the time on normal data, and
    the seed count at the top of the seed mean's interval is never below the point estimate's."""
    rng = np.random.default_rng(11)
    cover = []
    for _ in range(2000):
        x = rng.normal(0, 3.0, 6)
        lo, hi = variance_interval(float(x.var(ddof=1)), 5)
        cover.append(lo <= 9.0 <= hi)
    assert 0.94 <= np.mean(cover) <= 0.96, np.mean(cover)          # binomial sd at 2000 draws: 0.005
    vc = nested_components([[1.0, 3.0], [4.0, 6.0, 8.0], [10.0, 9.0]], [[0.5] * 7], target=2.0)
    lo, hi = vc["per_seed_mean_ci"]
    assert lo < vc["per_seed_mean"] < hi and vc["fine_tuning_ci"][0] < vc["fine_tuning"] < vc["fine_tuning_ci"][1]
    assert vc["seeds_for_target_upper"] >= max(vc["seeds_for_target"].values())


def test_the_world_components_interval_covers_near_nominal():
    """The MLS interval of the between-seed variance (a difference of mean squares): with nothing to
    subtract it is the chi-square interval; on simulated nested designs (3 seeds x 3 replicates and
    10 x 2; world variance 25, fine-tuning 9) it covers the truth 93-97% of the time, and a zero
    world variance (cut at 0) at least 95%."""
    assert difference_interval(0.5, 4.0, 2, 0.5, 0.0, 5) == pytest.approx(variance_interval(2.0, 2))
    rng = np.random.default_rng(5)
    for k, j in ((3, 3), (10, 2)):
        for world, lo_ok, hi_ok in ((25.0, 0.93, 0.97), (0.0, 0.95, 1.0)):
            hits = []
            for _ in range(1500):
                groups = [m + rng.normal(0, 3.0, j) for m in rng.normal(0, math.sqrt(world), k)]
                lo, hi = between_interval(groups)
                hits.append(lo <= world <= hi)
            assert lo_ok <= np.mean(hits) <= hi_ok, (k, j, world, np.mean(hits))   # binomial sd ~0.006
    vc = nested_components([[1.0, 3.0], [4.0, 6.0, 8.0], [10.0, 9.0]], [[0.5] * 7])
    b_lo, b_hi = between_interval([[1.0, 3.0], [4.0, 6.0, 8.0], [10.0, 9.0]])
    assert vc["world_pretraining_ci"] == pytest.approx((max(0.0, b_lo - 0.5), b_hi - 0.5))   # cut at 0
    assert vc["world_pretraining_ci"][0] <= vc["world_pretraining"] < vc["world_pretraining_ci"][1]
