"""The one-layer comparison (:mod:`kgsim.study.one_layer`) over several seeds, and what holds across them.

:func:`run_seeds` runs :func:`kgsim.study.one_layer.compare` once per seed, each writing its own
folder ``OUT/seed-N`` (:func:`kgsim.study.one_layer.write_outputs`), and checkpoints under
``WORK/train-seedN`` (a finished training there is reused). :func:`aggregate` takes the seeds'
summaries: for each run (FT-Known, FT-Unknown) the AUROC of "low base-model salience predicts a lost
edge" (both predictors) and every attention magnitude of
:func:`kgsim.study.one_layer.magnitudes`, as the mean over seeds with a 95% Student-t interval
(:func:`kgsim.study.salience.t_interval`; seeds whose AUROC is undefined, with no lost or no kept
fact, are left out and counted). :func:`write_seeds_figure` draws them.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from kgsim.study.one_layer import RUNS, TrainedOneLayerConfig, compare, format_summary, write_outputs
from kgsim.study.salience import t_interval

PREDICTORS = ("salience", "realised")
MASS_KEYS = ("trained_before", "trained_after", "trained_change", "simulated_before", "simulated_after",
             "simulated_change", "ratio")          # "ratio": per seed, simulated change / trained change


def run_seeds(cfg: TrainedOneLayerConfig, seeds, out: str | Path, work: str | Path | None = None,
              log=print) -> dict:
    """Run the comparison for each of `seeds` (``cfg`` with its seed replaced), writing ``OUT/seed-N``,
    then ``OUT/one_layer_seeds.json`` (:func:`aggregate`, with each seed's wall-clock seconds) and
    ``OUT/one_layer_seeds.png``. ``work``: the checkpoints' root (default `out`). `log` gets each seed's
    :func:`kgsim.study.one_layer.format_summary`. Returns the aggregate."""
    out, work = Path(out), Path(work) if work is not None else Path(out)
    summaries, seconds = [], {}
    for seed in seeds:
        t0 = time.perf_counter()
        res = compare(replace(cfg, seed=seed), work_dir=work / f"train-seed{seed}")
        write_outputs(res, out / f"seed-{seed}")
        seconds[seed] = time.perf_counter() - t0
        summaries.append(res.summary())
        log(f"seed {seed} ({seconds[seed]:.0f} s)\n{format_summary(res)}")
    agg = aggregate(summaries) | {"seconds": {str(k): round(v, 1) for k, v in seconds.items()}}
    (out / "one_layer_seeds.json").write_text(json.dumps(agg, indent=1) + "\n")
    write_seeds_figure(agg, summaries, out / "one_layer_seeds.png")
    return agg


def aggregate(summaries: list[dict]) -> dict:
    """Across-seed means with 95% t intervals of the loss-prediction AUROCs and the attention magnitudes
    of :meth:`kgsim.study.one_layer.Comparison.summary` dicts; also each seed's AUROC interval and edges.
    Raises ValueError on no summaries or summaries of different configurations (other than the seed)."""
    if not summaries:
        raise ValueError("no summaries to aggregate")
    keys = {(s["preset"], tuple(s["overrides"]), s["sim_d_model"]) for s in summaries}
    if len(keys) != 1:
        raise ValueError(f"summaries of {len(keys)} different configurations: aggregate one at a time")
    first = summaries[0]
    out = {"seeds": [s["seed"] for s in summaries], "preset": first["preset"], "overrides": first["overrides"],
           "sim_d_model": first["sim_d_model"], "n_test": first["n_test"],
           "interval": "mean over seeds with a 95% Student-t interval (n - 1 degrees of freedom)", "runs": {}}
    for name in RUNS:
        pred = {}
        for k in PREDICTORS:
            per_seed = [s["salience"]["prediction"][name][k] for s in summaries]
            pred[k] = t_interval([p["auroc"] for p in per_seed]) | {
                "undefined_seeds": sum(p["auroc"] is None for p in per_seed),
                "per_seed": [{key: p[key] for key in ("auroc", "low", "high", "hm_low", "hm_high", "n_lost", "n_kept")}
                             for p in per_seed]}
        mags = {key: {m: t_interval([s["magnitudes"][name][key][m] for s in summaries]) for m in MASS_KEYS}
                for key in ("subject", "relation")}
        for m in mags.values():   # a mean of per-seed ratios is dominated by seeds whose trained change is ~0
            t, sim = m["trained_change"]["mean"], m["simulated_change"]["mean"]
            m["ratio_of_mean_changes"] = sim / t if t else None
        edges = {f"{who}_{when}": [s["runs"][name][who][f"edges_{when}"] for s in summaries]
                 for who in ("trained", "simulated") for when in ("before", "after")}
        out["runs"][name] = {"loss_prediction": pred, "magnitudes": mags, "edges": edges}
    return out


def format_aggregate(agg: dict) -> str:
    """Plain-text lines of :func:`aggregate`."""
    def ci(d, fmt=".3f"):
        if d["mean"] is None:
            return "n/a"
        return f"{d['mean']:{fmt}}" + ("" if d["low"] is None else f" [{d['low']:{fmt}}, {d['high']:{fmt}}]")

    lines = [f"seeds {agg['seeds']} ({agg['preset']}, {agg['n_test']} ID test facts); {agg['interval']}"]
    for name, r in agg["runs"].items():
        for k, p in r["loss_prediction"].items():
            lines.append(f"{name:10s} AUROC (low base {k} predicts a lost edge): {ci(p)} over {p['n']} seeds"
                         + (f" ({p['undefined_seeds']} undefined)" if p["undefined_seeds"] else ""))
        for key, m in r["magnitudes"].items():
            lines.append(f"{name:10s} {key:8s} trained {ci(m['trained_before'])} -> {ci(m['trained_after'])}, "
                         f"simulated {ci(m['simulated_before'])} -> {ci(m['simulated_after'])}; change trained "
                         f"{ci(m['trained_change'], '+.3f')}, simulated {ci(m['simulated_change'], '+.3f')}, ratio "
                         f"of mean changes {_num(m['ratio_of_mean_changes'])}, per-seed ratios "
                         f"{[round(v, 2) for v in m['ratio']['values']]}")
        lines.append(f"{name:10s} edges trained {r['edges']['trained_before']} -> {r['edges']['trained_after']}, "
                     f"simulated {r['edges']['simulated_before']} -> {r['edges']['simulated_after']}")
    return "\n".join(lines)


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


COLOURS = {"ft-known": "tab:blue", "ft-unknown": "tab:red"}


def write_seeds_figure(agg: dict, summaries: list[dict], path: str | Path) -> Path:
    """A PNG (Agg): per-seed AUROCs with their Hanley-McNeil intervals (and the number of kept facts) and the
    across-seed mean with its t interval; subject and relation mass, trained vs simulated, before and after, per seed; and the base
    salience of FT-Unknown's lost vs kept test facts, pooled over seeds."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.6), layout="constrained")
    ax_a, ax_m, ax_s = fig.subplots(1, 3)
    seeds = agg["seeds"]
    for j, name in enumerate(RUNS):
        p = agg["runs"][name]["loss_prediction"]["salience"]
        for i, ps in enumerate(p["per_seed"]):
            if ps["auroc"] is not None:
                x = i + (j - 0.5) * 0.3
                ax_a.errorbar(x, ps["auroc"], [[ps["auroc"] - ps["hm_low"]], [ps["hm_high"] - ps["auroc"]]], fmt="o",
                              color=COLOURS[name], capsize=3, label=name if i == 0 else None)
                ax_a.text(x, -0.06, f"{ps['n_kept']}", ha="center", fontsize=6, color=COLOURS[name])
        if p["mean"] is not None:
            x = len(seeds) + 0.5 + (j - 0.5) * 0.3
            err = [[p["mean"] - p["low"]], [p["high"] - p["mean"]]] if p["low"] is not None else None
            ax_a.errorbar(x, p["mean"], err, fmt="s", color=COLOURS[name], capsize=4, ms=8)
    ax_a.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax_a.set(xticks=[*range(len(seeds)), len(seeds) + 0.5], ylim=(-0.1, 1), ylabel="AUROC, low salience predicts loss",
             title="Base salience -> edge lost at Con.\nper seed: 95% Hanley-McNeil (kept facts below); mean: 95% t")
    ax_a.set_xticklabels([*map(str, seeds), "mean"])
    if ax_a.get_legend_handles_labels()[0]:
        ax_a.legend(fontsize=8)
    for k, (key, mark) in enumerate((("subject", "o"), ("relation", "^"))):
        for who, ls in (("trained", "-"), ("simulated", ":")):
            for i, s in enumerate(summaries):
                m = s["magnitudes"]["ft-unknown"][key]
                ax_m.plot([2 * k, 2 * k + 1], [m[f"{who}_before"], m[f"{who}_after"]], ls=ls, marker=mark,
                          color="tab:red" if who == "trained" else "tab:grey", alpha=0.7,
                          label=f"{who}" if i == 0 and k == 0 else None)
    ax_m.set(xticks=[0, 1, 2, 3], ylim=(0, 1.02), ylabel="mean attention mass of the answer position",
             title="FT-Unknown attention, per seed")
    ax_m.set_xticklabels(["subject\nbefore", "subject\nCon.", "relation\nbefore", "relation\nCon."])
    ax_m.legend(fontsize=8)
    lost, kept = [], []
    for s in summaries:
        f = s["salience"]["facts"]
        c0, c1, sal = (np.asarray(f[k]) for k in ("correct_before", "correct_after_ft-unknown", "salience"))
        lost.append(sal[c0 & ~c1])
        kept.append(sal[c0 & c1])
    data = [np.concatenate(lost), np.concatenate(kept)]
    rng = np.random.default_rng(0)                     # horizontal jitter of the dots only
    for i, d in enumerate(data):
        ax_s.scatter(i + rng.uniform(-0.15, 0.15, d.size), d, s=6, alpha=0.4, color=("tab:red", "tab:green")[i])
    if all(d.size for d in data):
        ax_s.boxplot(data, positions=[0, 1], widths=0.5, showfliers=False)
    ax_s.set(xticks=[0, 1], ylabel="base-model salience S(s, a) (units of σ of ln_f)",
             title="FT-Unknown: facts correct before (seeds pooled)")
    ax_s.set_xticklabels([f"lost at Con. ({data[0].size})", f"kept ({data[1].size})"])
    fig.suptitle(f"One-layer attention-only model, {agg['preset']} world, seeds {seeds}")
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
