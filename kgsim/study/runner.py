"""`kgsim run`'s run directory and one seed of the protocol (the task graph in kgsim.study.tasks runs them).

Run directory::

    DIR/config.toml            the resolved config (a rerun with another config is refused)
    DIR/seed-S/                per seed: probe.json/.npz, ft-known/, ft-unknown/ (training dirs with
                               metrics.jsonl, es/con weights), edges.json, results.json
    DIR/seed-S-ftR/            with ``run.ft_replicates`` > 1: the seed's fine-tuning replicate R >= 1
                               (same world, base model, splits and test sets; fine-tuning's own
                               random stream, i.e. its batch order, differs)
    DIR/results.json           every figure per seed and aggregated (95% intervals), observations,
                               config, seeds, versions, git commit
    DIR/report.md, DIR/figures/*.png

Worlds and base models live in the cache (default ``DIR/../.kgsim-cache``, or ``--cache``), keyed
by config hash, and are shared by every run that matches.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from kgsim.core.config import ExperimentConfig, from_dict, replace, to_dict, to_toml, tomllib
from kgsim.core.edges import EdgeSet, TwoHopQueries
from kgsim.core.io import write_json, write_text
from kgsim.core.keys import drop_study_defaults
from kgsim.core.names import (
    COT,
    DIRECT_TWO_HOP,
    FT_MODELS,
    RECALL_COT,
    STAGES,
    TWO_HOP,
    TWO_HOP_HOPS,
    sim_bucket_names,
)
from kgsim.study.measure import measure_seed
from kgsim.study.results import check_verdicts, error_class_counts, factor_gaps, seed_figures
from kgsim.study.stages import (
    base_stage,
    filter_test_sets,
    finetune_stage,
    ft_models,
    ft_sets,
    known_rules,
    probe_stage,
    splits_or_exclusion,
    world_stage,
)
from proofs.run import TwoHopEvidence, check_run
from proofs.statements import lookup

RESULT_VERSION = 1


class RunDirError(ValueError):
    """The output directory holds another run's files."""


def protocol_dict(cfg: ExperimentConfig) -> dict:
    """The config without what does not change a seed's numbers (which seeds, how many workers, how
    many fine-tuning replicates, whether an unsplittable seed fails the run or is left out, the instruct
    stage's settings while it is off, a
    :data:`kgsim.core.keys.STUDY_KEYS` key at its first value)."""
    d = drop_study_defaults(to_dict(cfg))      # a study key at its first value: keys as before it
    dropped = ("seeds", "workers", "ft_replicates", "unsplittable_seeds")
    d["run"] = {k: v for k, v in d["run"].items() if k not in dropped}
    d.pop("seed")
    if not cfg.instruct.enabled:                # off: its settings change nothing (and keys stay as before it)
        d.pop("instruct")
    return d


def unit_name(seed: int, replicate: int = 0) -> str:
    """The folder of one (seed, fine-tuning replicate): ``seed-S`` for replicate 0 (as before
    replicates existed), ``seed-S-ftR`` for R >= 1."""
    return f"seed-{seed}" + (f"-ft{replicate}" if replicate else "")


def seed_key(cfg: ExperimentConfig, seed: int, replicate: int = 0) -> dict:
    """What one seed's (or fine-tuning replicate's) measured numbers depend on: the protocol without
    the verdict rules (judged at the end, from every seed) and with the seed, and the replicate when
    it is not 0 (so results written before replicates existed still match)."""
    d = protocol_dict(replace(cfg, seed=seed))
    d.pop("verdicts", None)
    return d | {"seed": seed} | ({"replicate": replicate} if replicate else {})


def prepare_run_dir(cfg: ExperimentConfig, out: Path) -> None:
    """Refuse a declared primary claim the run does not judge (ConfigError) and a directory holding
    another run; write config.toml for a new one."""
    check_verdicts(cfg)
    f = out / "config.toml"
    if f.is_file():
        try:
            old = from_dict(tomllib.loads(f.read_text()))
        except Exception as e:  # noqa: BLE001 - any unreadable config is "another run"
            raise RunDirError(f"--out = {str(out)!r}: its config.toml cannot be read ({e})") from None
        if protocol_dict(old) != protocol_dict(cfg):
            changed = sorted(_diff(protocol_dict(old), protocol_dict(cfg)))
            raise RunDirError(f"--out = {str(out)!r} holds another run's files (its config differs in "
                              f"{', '.join(changed[:4])}); choose another --out")
    elif out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise RunDirError(f"--out = {str(out)!r} holds other files and no kgsim config.toml; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_text(f, to_toml(cfg))


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = set(a) | set(b)
    out = []
    for k in keys:
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.append(f"{prefix}{k}")
    return out


# --------------------------------------------------------------------------------------------
# One seed
# --------------------------------------------------------------------------------------------

def run_seed(cfg: ExperimentConfig, seed: int, run_dir: Path, cache: Path, progress=lambda *a: None,
             replicate: int = 0) -> dict:
    """Every stage of one seed (and fine-tuning `replicate`: world, base model, probe and splits are
    the seed's, fine-tuning draws its own batch order); returns (and writes) the results."""

    cfg = replace(cfg, seed=seed)
    out = run_dir / unit_name(seed, replicate)
    done = out / "results.json"
    key = seed_key(cfg, seed, replicate)
    if done.is_file():
        res = json.loads(done.read_text())
        if res.get("key") == key:
            progress("cached", 1, 1)
            return res
    timing = {}
    t0 = time.perf_counter()
    world = world_stage(cfg, cache, progress)
    pre, base = base_stage(cfg, world, cache, progress)
    timing["pretrain_s"] = pre.result.wall_time_s
    if base is not pre:
        timing["instruct_s"] = base.result.wall_time_s
    probe = probe_stage(cfg, world, base, progress)
    splits, excluded = splits_or_exclusion(cfg, world, probe)
    if excluded:
        return excluded_unit(out, seed, replicate, excluded)
    ft = {m: finetune_stage(cfg, world, base, splits, which, out, progress, replicate=replicate)
          for m, which in ft_models(cfg)}
    paths = {(m, st): ft[m][f"{st}_path"] for m in ft for st in STAGES}
    meas = measure_seed(cfg, world, splits, base.model, paths, progress, filter_test_sets(cfg, world, probe, splits))
    edge_sets: list[EdgeSet] = meas["edge_sets"]
    two_hop: TwoHopQueries = meas["two_hop"]
    write_json(out / "edges.json", {"edge_sets": [e.to_json() for e in edge_sets],
                                    "two_hop": two_hop.to_json(), "splits": meas["splits"]})
    figs = seed_figures(edge_sets)
    sets = ft_sets(cfg, world, splits)
    errors = error_class_counts(edge_sets, world.kg, {m: sets[which] for m, which in ft_models(cfg)})
    res = {"key": key, "seed": seed, "replicate": replicate, "version": RESULT_VERSION, **figs,
           "base": {k: v for k, v in probe.items() if not isinstance(v, np.ndarray)},
           "known_rules": known_rules(cfg, world, probe),
           **({"instruct": _instruct_summary(base)} if base is not pre else {}),
           "finetune": ft, "splits": splits.summary(), "world": world.kg.summary() | {"hash": world.config_hash},
           "two_hop": two_hop_summary(edge_sets, two_hop), "error_classes": errors,
           "recall_cot": _recall_shares(edge_sets),
           "factor_gaps": factor_gaps(edge_sets, world.kg, splits.ft_relations,
                                      world.kg.s[np.concatenate([splits.ft_known, splits.ft_unknown])]),
           "similarity": meas["similarity"],
           "checks": checks_json(edge_sets, two_hop),
           "sim_buckets": sim_bucket_names(cfg.run.sim_buckets),
           "timing": timing | {"seed_total_s": time.perf_counter() - t0}}
    write_json(done, res)
    return res


def excluded_unit(out: Path, seed: int, replicate: int, reason: str) -> dict:
    """The record of a (seed, replicate) left out under ``run.unsplittable_seeds = "exclude"``: its base
    model knows too few facts to fill the splits (`reason`), so nothing after the probe runs; written
    to ``out/excluded.json`` for the reader (the decision is remade from the cached probe on a rerun)."""
    rec = {"seed": seed, "replicate": replicate, "excluded": reason}
    write_json(out / "excluded.json", rec)
    return rec


def _instruct_summary(tuned) -> dict:
    """The instruct stage's data and its last evaluation (accuracy on its own facts, ID extraction)."""
    d = json.loads((tuned.dir / "instruct.json").read_text())
    rows = [json.loads(line) for line in tuned.result.metrics_path.read_text().splitlines()]
    evals = [r for r in rows if "instruct_acc" in r]
    first, last = (evals[0], evals[-1]) if evals else ({}, {})
    return d | {f"{k}_{when}": row[k] for when, row in (("before", first), ("after", last))
                for k in ("instruct_acc", "qa_extraction_id") if k in row}


def _recall_shares(edge_sets: list[EdgeSet]) -> dict:
    """``{label: {split: share of related facts recalled right}}`` of the recall-CoT edge sets."""
    out: dict = {}
    for e in edge_sets:
        if e.prompt == RECALL_COT and "recall_correct" in e.meta:
            out.setdefault(e.label, {})[e.split] = e.meta["recall_correct"]
    return out


def two_hop_summary(edge_sets: list[EdgeSet], two_hop: TwoHopQueries) -> dict:
    """Per model (``model/stage`` label): direct and CoT 2-hop accuracy, bridge accuracy, and the CoT
    accuracy predicted from the zero-shot one-hop edge sets of the hop facts (path connectivity);
    where the CoT edge set records them (kgsim), the second hop inside the CoT prompt given the true
    bridge and the share of queries with both hops right inside the prompt (the in-prompt prediction).
    kgsim's hop edge set holds the first hops then the second hops, in query order (as
    :func:`kgsim.study.measure.measure_seed` measures them); another (the bridge's: each hop fact
    once) is read by fact id."""
    out = {}
    n = two_hop.n
    if not two_hop.measured:
        return out
    by = {e.key: e for e in edge_sets}
    in_order = np.concatenate([two_hop.hop1_ids, two_hop.hop2_ids])
    for (model, stage, split, prompt), e in by.items():
        if split != TWO_HOP_HOPS or (model, stage, TWO_HOP, COT) not in by:
            continue
        if np.array_equal(e.test_ids, in_order):
            hop1, hop2 = e.correct[:n], e.correct[n:]
        else:                                                 # each hop fact once (the bridge)
            hop1, hop2 = (lookup(e.test_ids, e.correct, ids)[0] for ids in (two_hop.hop1_ids, two_hop.hop2_ids))
        cot, direct = by[(model, stage, TWO_HOP, COT)], by.get((model, stage, TWO_HOP, DIRECT_TWO_HOP))
        out[e.label] = {"direct": direct.fact() if direct else None, "cot": cot.fact(),
                        "predicted_cot": float((hop1 & hop2).mean()), "bridge": cot.meta.get("bridge_correct"),
                        "hop1": float(hop1.mean()), "hop2": float(hop2.mean()),
                        "hop2_in_prompt": cot.meta.get("second_hop_given_bridge"),
                        "predicted_cot_in_prompt": cot.meta.get("both_hops_in_prompt")}
    return out


def keyed_edge_sets(edge_sets: list[EdgeSet]) -> dict:
    """The fine-tuned models' edge sets keyed (model, stage, split, prompt), as proofs expects."""
    return {e.key: e for e in edge_sets if e.model in FT_MODELS}


def check_seed(edge_sets: list[EdgeSet], two_hop: TwoHopQueries) -> list:
    """The theory's statements (proofs.run.check_run) held against one seed's edge sets."""
    keyed = keyed_edge_sets(edge_sets)
    evidence = None
    if two_hop.measured:
        evidence = TwoHopEvidence.from_run(keyed, two_hop.hop1_ids, two_hop.hop2_ids, two_hop.query_ids,
                                           split=TWO_HOP, prompt=COT, one_hop_splits=(TWO_HOP_HOPS,))
    return check_run(keyed, evidence)


def checks_json(edge_sets: list[EdgeSet], two_hop: TwoHopQueries) -> list[dict]:
    """:func:`check_seed` as JSON-ready dicts (``results.json``'s per-seed ``checks``)."""
    return [c.to_json() for c in check_seed(edge_sets, two_hop)]


# --------------------------------------------------------------------------------------------
# Several seeds in parallel
