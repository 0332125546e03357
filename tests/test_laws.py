"""The dose-response laws (kgsim.study.laws): fits on synthetic data, and the tables and figures
written from a synthetic sweep folder whose laws are known."""
import json

import numpy as np
import pandas as pd
import pytest

from kgsim.core.config import load_config, replace, to_dict
from kgsim.study.laws import fit_line, fit_through_origin, law_fitting, law_tables, one_slope_test, write_laws

SPLITS = ("id", "near-id", "open-world")


def test_fit_line_recovers_a_slope_and_does_not_flag_a_line():
    rng = np.random.default_rng(0)
    x = np.repeat(np.linspace(0, 1, 5), 6)
    y = 0.6 - 0.4 * x + rng.normal(0, 0.02, len(x))
    f = fit_line(x, y, groups=np.tile(np.arange(6), 5))
    assert f["slope_lo"] < -0.4 < f["slope_hi"] and f["r2"] > 0.9
    assert f["quad_p"] > 0.05 and f["held_out"] == "leave one group out" and f["held_out_rmse"] < 0.05


def test_fit_line_flags_a_curve():
    x = np.repeat(np.linspace(0, 1, 5), 4)
    y = 0.6 - 0.8 * x * x + np.random.default_rng(1).normal(0, 0.01, len(x))
    assert fit_line(x, y)["quad_p"] < 0.05


def test_fit_line_with_too_few_points_says_so():
    assert fit_line([0, 1], [0.5, 0.2])["note"] == "too few points"


def test_fits_of_a_flat_zero_response_give_nan_not_an_error():
    """A smoke sweep's recovery points can all be 0 (no gap at any k): R² and p-values are NaN."""
    f = fit_through_origin([0.04, 0.125], [0.0, 0.0])
    assert f["slope"] == 0 and np.isnan(f["r2_uncentred"])
    g = fit_line([0, 0.5, 1, 0.2], [0.0] * 4)
    assert g["slope"] == 0 and np.isnan(g["r2"]) and np.isnan(g["slope_p"])


def test_through_origin_and_one_slope_test():
    rng = np.random.default_rng(2)
    x = rng.uniform(0.05, 0.5, 60)
    labels = np.repeat(["a", "b", "c"], 20)
    same = 0.4 * x + rng.normal(0, 0.01, 60)
    f = fit_through_origin(x, same)
    assert f["slope_lo"] < 0.4 < f["slope_hi"] and f["intercept_p"] > 0.01
    assert one_slope_test(x, same, labels)["p"] > 0.01
    differ = np.where(labels == "c", 0.9, 0.4) * x + rng.normal(0, 0.01, 60)
    assert one_slope_test(x, differ, labels)["p"] < 1e-6


# --------------------------------------------------------------------------------------------
# A synthetic sweep folder: accuracy falls linearly with rho; the k-shot gap is (1 - q) times the gap
# --------------------------------------------------------------------------------------------

def _seed(seed: int, rho: float, q: float, curved: bool, rng) -> dict:
    def acc(r):
        return 0.7 - 0.5 * (r * r if curved else r) + rng.normal(0, 0.01)

    models = {"ft-known": 0.0, "ft-unknown": 1.0} | ({"ft-mixed": rho} if 0 < rho < 1 else {})
    accuracy, gaps = {}, {}
    for stage in ("es", "con"):
        for m, r in models.items():
            accuracy[f"{m}/{stage}"] = {s: {"zero-shot": acc(r), "2-shot": acc(r)} for s in SPLITS}
        for s in SPLITS:
            d0 = accuracy[f"ft-known/{stage}"][s]["zero-shot"] - accuracy[f"ft-unknown/{stage}"][s]["zero-shot"]
            gaps.setdefault(stage, {})[s] = {"zero-shot": d0, "2-shot": (1 - q) * d0 + rng.normal(0, 0.005)}
    def curve(r):          # ID accuracy falls with the Unknown facts fitted as a share of the set (r * t/10)
        return [{"step": t, "train_acc": t / 10, "train_unknown_acc": t / 10,
                 "id_acc": 0.6 - 0.3 * r * t / 10 + rng.normal(0, 0.005)} for t in range(11)]
    return {"seed": seed, "accuracy": accuracy, "gaps": gaps, "sizes": {},
            "finetune": {m: {"curve": curve(r)} for m, r in models.items() if m != "ft-known"}}


def _sweep(tmp_path, curved=False):
    base = load_config("smoke")
    rhos = [0.0, 0.25, 0.5, 0.75, 1.0]
    rng = np.random.default_rng(3)
    cells = []
    for rho in rhos:
        name = f"unknown_share-{rho:g}"
        cfg = replace(base, finetune={"unknown_share": rho}, run={"seeds": (0, 1, 2)})
        res = {"config": to_dict(cfg), "per_seed": [_seed(s, rho, 0.6, curved, rng) for s in (0, 1, 2)]}
        (tmp_path / "cells" / name).mkdir(parents=True)
        (tmp_path / "cells" / name / "results.json").write_text(json.dumps(res))
        cells.append({"name": name, "values": {"finetune.unknown_share": rho}, "dir": f"cells/{name}",
                      "status": "done", "error": None})
    (tmp_path / "sweep.json").write_text(json.dumps({"grid": {"finetune.unknown_share": rhos}, "cells": cells}))
    return tmp_path


def test_laws_from_a_linear_sweep(tmp_path):
    t = law_tables([_sweep(tmp_path)])
    id_acc = next(f for f in t["law1"]
                  if (f["stage"], f["split"], f["y"], f["x"]) == ("con", "id", "accuracy", "unknown_share"))
    assert id_acc["slope_lo"] < -0.5 < id_acc["slope_hi"] and id_acc["verdict"] == "linear fits"
    assert id_acc["n"] == 15                                   # FT-Known / FT-Unknown counted once per seed
    (q2,) = t["law2"]
    assert q2["k"] == 2 and q2["q_lo"] < 0.6 < q2["q_hi"] and q2["verdict"] == "T1 fits"
    fit3 = next(f for f in t["law3"] if f["model"] == "ft-unknown")
    assert fit3["slope_lo"] < -0.3 < fit3["slope_hi"] and fit3["verdict"] == "linear fall fits"
    md = write_laws(tmp_path)
    text = md.read_text()
    assert "## 2. Prompt recovery" in text and "- nowhere" in text
    for fig in ("law1_rho.png", "law1_dose.png", "law1_residuals.png", "law2_recovery.png", "law3_fitting.png"):
        assert (tmp_path / "laws" / fig).stat().st_size > 1000
    assert json.loads((tmp_path / "laws" / "laws.json").read_text())["law2"][0]["k"] == 2


def test_laws_say_where_the_data_reject_them(tmp_path):
    md = write_laws(_sweep(tmp_path, curved=True)).read_text()
    assert "rejected: curved (quadratic term p < 0.05)" in md.split("## Where the data reject a law")[1]


def test_laws_of_a_missing_folder_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="no sweep.json or results.json"):
        law_tables([tmp_path])


def test_law3_slope_is_the_estimate_its_interval_belongs_to():
    """Law 3 over several curves: the slope is the mean of the curves' own slopes and lies inside its
    interval, even where the pooled OLS slope (curves over different x ranges) does not."""
    rows = []
    for c, (lo, hi, top) in enumerate([(0.0, 0.25, 0.9), (0.0, 0.5, 0.8), (0.0, 0.75, 0.7), (0.0, 1.0, 0.6)]):
        x = np.linspace(lo, hi, 8)
        rows += [{"stratum": "–", "model": "ft-mixed", "curve": c, "unknown_fitted": xi,
                  "id_acc": top - 0.9 * xi + 0.01 * ((i % 3) - 1)} for i, xi in enumerate(x)]
    fit = law_fitting(pd.DataFrame(rows))[0]
    assert fit["slope_lo"] <= fit["slope"] <= fit["slope_hi"]
    assert fit["slope"] == pytest.approx(-0.9, abs=0.02)
    assert not fit["slope_lo"] <= fit["pooled_slope"] <= fit["slope_hi"]
