"""The end of a run: per-seed figures -> ``results.json`` (aggregates, intervals, verdicts) and the
report; and the run directory read back for the theory checks.

``finish`` is what `kgsim run` and `kgsim bridge run` call once every seed is measured;
``seed_edges`` and ``check_run_dir`` are what `kgsim check` prints from.
"""
from __future__ import annotations

from pathlib import Path

from kgsim.core.config import ExperimentConfig, to_dict
from kgsim.core.edges import read_edges_json as seed_edges
from kgsim.core.io import write_json
from kgsim.core.provenance import environment
from kgsim.nn.precision import kernel_record
from kgsim.study.nested import mean_bootstrap, replicate_means, unit_bootstraps, variance_table
from kgsim.study.report import render
from kgsim.study.results import (
    aggregate,
    bootstrap_gap_intervals,
    cut_proportions,
    error_class_intervals,
    observations,
    verdict_rules,
)
from kgsim.study.runner import check_seed, two_hop_summary
from kgsim.study.stages import TooLittleKnown

__all__ = ["finish", "one_seed_bootstrap", "seed_edges", "check_run_dir"]

N_BOOT_ONE_SEED = 2000             # draws of a one-seed run's bootstrap (its intervals and its variance table)


def finish(cfg: ExperimentConfig, out: Path, per_seed: list[dict], wall_s: float | None = None) -> Path:
    """Write ``out/results.json`` (config, seeds, environment, per-seed figures, aggregates with 95%
    intervals, the error classes' shares, O1-O3 verdicts) and render ``out/report.md`` with its
    figures; returns the report's path.

    With one seed, intervals of gaps come from a bootstrap over that seed's test facts
    (:func:`one_seed_bootstrap`); with several, from Student t over seeds. Every proportion's
    interval (accuracies, rates, shares) is cut to [0, 1], gaps' to [-1, 1]
    (:func:`kgsim.study.bounds.cut_proportions`). With fine-tuning replicates (``run.ft_replicates``),
    `per_seed` holds every (seed, replicate) unit: ``per_seed`` in the results is each seed's
    replicate mean (:func:`kgsim.study.nested.replicate_means`), on which every interval and verdict
    rests, ``per_unit`` every unit; ``variance_components`` splits each primary
    contrast's spread (:func:`kgsim.study.nested.variance_table`). Seeds left out under
    ``run.unsplittable_seeds = "exclude"`` (their base model knows too few facts for the splits) are
    in ``excluded_seeds`` with their reason and in no figure; ``seeds`` lists those measured.
    """
    excluded = sorted({u["seed"]: u["excluded"] for u in per_seed if "excluded" in u}.items())
    per_seed = [u for u in per_seed if "excluded" not in u]
    if not per_seed:
        raise TooLittleKnown(f"every seed was excluded (run.unsplittable_seeds = 'exclude'); seed {excluded[0][0]}: "
                             f"{excluded[0][1]}")
    seeds = replicate_means(per_seed)                     # the nested design: one entry per seed
    one_seed = len({u["seed"] for u in per_seed}) == 1
    units_boot = unit_bootstraps(out, per_seed, N_BOOT_ONE_SEED) if one_seed else None   # once, for both uses
    boot = one_seed_bootstrap(out, per_seed, units_boot)
    rules = verdict_rules(cfg.verdicts)
    sims = per_seed[0]["sim_buckets"]
    agg, obs = summarise(seeds, cfg.prompts.k_shots, sims, boot, rules)
    res = {"config": to_dict(cfg), "seeds": [s["seed"] for s in seeds],
           "environment": {**environment(), **kernel_record()},
           "sim_buckets": sims, "per_seed": seeds, "aggregate": agg, "observations": obs, "wall_time_s": wall_s}
    if len(seeds) < len(per_seed):
        res["per_unit"] = per_seed
    if excluded:
        res["excluded_seeds"] = [{"seed": sd, "reason": why} for sd, why in excluded]
    res["variance_components"] = variance_table(out, per_seed, rules["primary"], cfg.prompts.k_shots, sims,
                                                rules["target_effect"], boots=units_boot)
    write_json(out / "results.json", res)
    return render(res, out)


def summarise(per_seed: list[dict], k_shots, sim_buckets: list[str], boot: dict | None = None,
              rules: dict | None = None) -> tuple[dict, dict]:
    """(aggregate, observations) of per-seed figures, for both model families' runs: every numeric
    figure over seeds with its interval (accuracies cut to [0, 1]); with one seed's bootstrap `boot`
    (:func:`kgsim.study.results.bootstrap_gaps`), the gaps' bootstrap intervals instead; the error
    classes' shares where the seeds have them; the O1-O3 verdicts under `rules`
    (:func:`kgsim.study.results.verdict_rules`: declared primaries, equivalence margin, target effect)."""
    agg = aggregate([{k: s[k] for k in ("accuracy", "gaps", "base", "finetune", "two_hop", "recall_cot",
                                                   "transitions", "factor_gaps", "pull") if k in s}
                     for s in per_seed])
    if boot:
        agg["gaps"] = bootstrap_gap_intervals(per_seed[0]["gaps"], boot)
    if errors := error_class_intervals(per_seed):
        agg["error_classes"] = errors
    if all("known_rules" in s for s in per_seed):         # kgsim's runs: SliCK against exposure
        agg["known_rules"] = aggregate([{k: s["known_rules"][k] for k in ("kappa", "agreement")} for s in per_seed])
    agg = cut_proportions(agg)                            # every proportion's interval inside [0, 1]
    return agg, observations(per_seed, tuple(k_shots), sim_buckets, boot=boot, rules=rules)


def one_seed_bootstrap(out: Path, per_seed: list[dict], boots: list | None = None) -> dict | None:
    """With one seed, the bootstrap over its test facts (:func:`kgsim.study.results.bootstrap_gaps`;
    of the replicates' mean with fine-tuning replicates, :func:`kgsim.study.nested.mean_bootstrap`),
    else None. `boots`: the units' bootstraps if already computed."""
    return mean_bootstrap(out, per_seed, N_BOOT_ONE_SEED, boots=boots)


def check_run_dir(run_dir: Path) -> list[tuple[str, list, dict]]:
    """For each ``seed-*/edges.json`` of a run directory: (seed directory name, the theory's check
    results, the CoT-vs-one-hop summary per model). Empty when nothing was measured there."""
    out = []
    for f in sorted(Path(run_dir).glob("seed-*/edges.json")):
        edge_sets, two_hop = seed_edges(f)
        out.append((f.parent.name, check_seed(edge_sets, two_hop), two_hop_summary(edge_sets, two_hop)))
    return out
