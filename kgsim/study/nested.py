"""The nested design (``run.ft_replicates``): fine-tuning replicates per base model, their means per
seed, and the variance components of the declared contrasts.

A run of S seeds and R replicates measures S x R units. Seed s fixes the world, the base model,
SliCK's probe, the splits and the test facts; replicate r fine-tunes the same data with its own
random stream (batch order), in ``seed-s`` (r = 0) or ``seed-s-ftr``. Verdicts and intervals are
over seeds, on each seed's replicate mean (:func:`replicate_means`): the seeds are the independent
units, and the Student-t interval over their means combines all three sources of spread.
:func:`variance_table` splits each primary contrast's spread into world-and-pretraining,
fine-tuning and test-fact sampling (:func:`kgsim.study.stats.nested_components`; the last from a
bootstrap over each unit's test facts), and says what a design cannot separate.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from kgsim.core.edges import read_edges_json
from kgsim.core.rng import stream
from kgsim.study.results import bootstrap_gaps, claim_values
from kgsim.study.runner import unit_name
from kgsim.study.stats import nested_components

__all__ = ["FIGURE_KEYS", "replicate_means", "unit_dir", "unit_bootstraps", "mean_bootstrap", "variance_table"]

# The per-seed figures averaged over a seed's replicates; every other entry is replicate 0's.
FIGURE_KEYS = ("accuracy", "sizes", "gaps", "transitions", "pull", "base", "known_rules", "finetune", "two_hop",
               "recall_cot", "factor_gaps", "error_classes")
N_BOOT = 500                       # bootstrap replicates per unit for its test-fact sampling variance


def unit_dir(run_dir: Path, unit: dict) -> Path:
    """The folder of one unit's results (``seed-S`` or ``seed-S-ftR``)."""
    return Path(run_dir) / unit_name(unit["seed"], unit.get("replicate", 0))


def _mean_tree(items: list):
    """Numeric leaves averaged (NaN and missing dropped); dicts walked; anything else the first's."""
    first = next((i for i in items if i is not None), None)
    if isinstance(first, dict):
        keys = list(dict.fromkeys(k for i in items if isinstance(i, dict) for k in i))
        return {k: _mean_tree([i.get(k) if isinstance(i, dict) else None for i in items]) for k in keys}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        x = [float(i) for i in items if isinstance(i, (int, float)) and not isinstance(i, bool) and not math.isnan(i)]
        return float(np.mean(x)) if x else float("nan")
    return first


def replicate_means(units: list[dict]) -> list[dict]:
    """One dict per seed, in seed order of first appearance: a seed with one unit is returned as it
    is; with several replicates, the figures of :data:`FIGURE_KEYS` averaged over them (lists, such
    as fitting curves and the theory checks, are replicate 0's) and ``replicates`` = their number.

    >>> units = [{"seed": 0, "replicate": 0, "gaps": {"con": 0.5}, "checks": ["r0"]},
    ...          {"seed": 0, "replicate": 1, "gaps": {"con": 0.3}, "checks": ["r1"]},
    ...          {"seed": 1, "gaps": {"con": 0.2}}]
    >>> [(m["seed"], round(m["gaps"]["con"], 3), m.get("replicates", 1), m.get("checks")) for m in replicate_means(units)]
    [(0, 0.4, 2, ['r0']), (1, 0.2, 1, None)]
    """
    groups: dict[int, list[dict]] = {}
    for u in units:
        groups.setdefault(u["seed"], []).append(u)
    out = []
    for seed, us in groups.items():
        us = sorted(us, key=lambda u: u.get("replicate", 0))
        if len(us) == 1:
            out.append(us[0])
            continue
        m = dict(us[0])
        for k in FIGURE_KEYS:
            if any(k in u for u in us):
                m[k] = _mean_tree([u.get(k) for u in us])
        m["replicates"] = len(us)
        m.pop("replicate", None)
        out.append(m)
    return out


def _unit_bootstrap(run_dir: Path, unit: dict, n_boot: int) -> dict | None:
    f = unit_dir(run_dir, unit) / "edges.json"
    if not f.is_file():
        return None
    return bootstrap_gaps(read_edges_json(f)[0], n_boot=n_boot, seed=unit["seed"])


def _pick_mean(trees: list, pick: np.ndarray):
    """Per bootstrap draw b, the mean over replicates pick[b] of each replicate's draw b."""
    if isinstance(trees[0], dict):
        return {k: _pick_mean([t[k] for t in trees], pick) for k in trees[0] if all(k in t for t in trees)}
    stack = np.stack([np.asarray(t, float) for t in trees])                 # [R, n_boot]
    return stack[pick, np.arange(stack.shape[1])[:, None]].mean(1)


def unit_bootstraps(run_dir: Path, units: list[dict], n_boot: int) -> list[dict | None]:
    """Each unit's bootstrap over its test facts (:func:`bootstrap_gaps`, `n_boot` draws; None for a
    unit without edges.json): computed once and handed to :func:`mean_bootstrap` and
    :func:`variance_table`, which otherwise compute their own."""
    return [_unit_bootstrap(run_dir, u, n_boot) for u in units]


def mean_bootstrap(run_dir: Path, units: list[dict], n_boot: int = 2000,
                   boots: list[dict | None] | None = None) -> dict | None:
    """The bootstrap of one seed's replicate-mean gaps, in two stages: each draw resamples the test
    facts (:func:`bootstrap_gaps` of each replicate; the replicates share the seed's test sets and the
    bootstrap's stream, so draw b resamples the same facts for every replicate) and the R replicates
    (with replacement, stream ``bootstrap/replicates``), and averages the picked replicates' draw b.
    Its intervals cover test-fact sampling and fine-tuning's batch order, not world and pretraining.
    With one replicate it is that replicate's bootstrap. None unless `units` are one seed's, each
    with its edges.json. `boots`: the units' bootstraps, if already computed (:func:`unit_bootstraps`,
    `n_boot` draws)."""
    if len({u["seed"] for u in units}) != 1:
        return None
    boots = boots if boots is not None else unit_bootstraps(run_dir, units, n_boot)
    if any(b is None for b in boots):
        return None
    if len(boots) == 1:
        return boots[0]
    pick = stream(units[0]["seed"], "bootstrap/replicates").integers(0, len(boots), (n_boot, len(boots)))
    return _pick_mean(boots, pick)


def variance_table(run_dir: Path, units: list[dict], claims: dict[str, str], k_shots, sim_names: list[str],
                   target: float | None = None, n_boot: int = N_BOOT,
                   boots: list[dict | None] | None = None) -> dict:
    """``{observation: {"claim": name} | nested_components(...)}`` for each observation's declared
    claim (`claims`: {observation: claim name}): the claim's value per unit grouped by seed, and each
    unit's bootstrap variance of it over its test facts (`n_boot` resamples; units without
    edges.json contribute none; `boots`: the units' bootstraps if already computed, any number of
    draws). Components are variances in (fraction)²; `target` (a fraction) adds the seeds a 10-point
    (or `target`) effect needs per replicate count."""
    boots = boots if boots is not None else unit_bootstraps(run_dir, units, n_boot)
    values: dict[str, dict[int, list[float]]] = {o: {} for o in claims}
    svar: dict[str, list[float]] = {o: [] for o in claims}
    for u, boot in zip(units, boots):
        point = claim_values([u], tuple(k_shots), sim_names)
        reps = claim_values([boot], tuple(k_shots), sim_names) if boot else None
        for o, name in claims.items():
            if name not in point.get(o, {}):
                continue
            values[o].setdefault(u["seed"], []).append(point[o][name][0][0])
            if reps is not None and name in reps.get(o, {}):
                r = np.asarray(reps[o][name][0][0], float)
                r = r[~np.isnan(r)]
                if len(r) > 1:
                    svar[o].append(float(r.var(ddof=1)))
    return {o: {"claim": name} | nested_components(list(values[o].values()), [svar[o]] if svar[o] else None, target)
            for o, name in claims.items()}
