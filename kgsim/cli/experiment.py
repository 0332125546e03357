"""`kgsim pretrain`, `kgsim run`, `kgsim report`, `kgsim check`: the experiment commands."""
from __future__ import annotations

import json
import time
from pathlib import Path

from kgsim.cli.base import UserError, add_config_args, command, resolve_config
from kgsim.core.config import to_dict
from kgsim.core.edges import EdgeSet
from kgsim.core.io import write_json
from kgsim.study.report import render
from kgsim.study.results import aggregate, bootstrap_gap_intervals, bootstrap_gaps, observations
from kgsim.study.runner import RunDirError, _two_hop_summary, check_seed, environment, prepare_run_dir, run_seeds
from kgsim.study.stages import base_hash, pretrain_stage, probe_stage, world_stage
from kgsim.world.plots import plot_pretraining
from proofs.run import format_table


def _cache_of(args, out: Path) -> Path:
    return Path(args.cache) if args.cache else out.parent / ".kgsim-cache"


def _pretrain_args(p):
    add_config_args(p)
    p.add_argument("--out", type=Path, help="output directory (default runs/<preset>/pretrain)")
    p.add_argument("--cache", help="artefact cache shared by runs (default: OUT/../.kgsim-cache)")


@command("pretrain", "build the world and pretrain the base model; plots, probe tables and a HF export",
         _pretrain_args)
def _pretrain(args) -> int:
    import shutil


    cfg = resolve_config(args)
    out = args.out or Path("runs") / (args.preset or "custom") / "pretrain"
    if (out / "summary.json").is_file():
        old = json.loads((out / "summary.json").read_text())
        if old.get("base_hash") != base_hash(cfg):
            raise UserError(f"--out = {str(out)!r} holds another pretraining (config hash {old.get('base_hash')}); "
                            "choose another --out")
    cache = _cache_of(args, out)
    world = world_stage(cfg, cache)
    base = pretrain_stage(cfg, world, cache, bar=True)
    probe = probe_stage(cfg, world, base)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(base.dir / f"probe-{cfg.section_hash('probe')}" / "probe.json", out / "probe.json")
    for name in ("con.safetensors", "metrics.jsonl"):
        shutil.copy2(base.dir / "train" / name, out / ("base.safetensors" if name == "con.safetensors" else name))
    if not (out / "hf").exists():
        shutil.copytree(base.dir / "hf", out / "hf")
    plot_pretraining(base.dir / "train" / "metrics.jsonl", probe["memorisation"], out / "pretraining.png")
    mem = probe["memorisation"]
    write_json(out / "summary.json", {"base_hash": base_hash(cfg), "memorisation": mem,
                                      "slick_by_exposure": probe["slick_by_exposure"],
                                      "tokens_per_s": base.result.tokens_per_s, "wall_time_s": base.result.wall_time_s})
    _print_pretrain_summary(mem, probe["slick_by_exposure"], base.result)
    print(f"wrote {out}/ (base.safetensors, hf/, metrics.jsonl, pretraining.png, probe.json, summary.json)")
    return 0


def _print_pretrain_summary(mem, table, result) -> None:
    print(f"pretraining: {result.final_step} steps, {result.tokens_per_s:,.0f} tokens/s, {result.wall_time_s:.0f} s")
    print("times shown | facts | statement acc | QA acc (statement-only subjects)")
    for b in mem["buckets"]:
        print(f"{b['exposure']:>11} | {b['n']:>5} | {100 * b['statement_acc']:>12.1f}% | "
              f"{100 * b['qa_acc_statement_only_subjects']:>6.1f}%")
    print(f"extraction rate: {100 * mem['extraction_rate']:.1f}%  (never shown: "
          f"{100 * mem['statement_acc_never_shown']:.1f}%, chance {100 * mem['chance']:.2f}%)")
    print("SliCK vs exposure: " + "; ".join(f"{k}: " + "/".join(str(v) for v in row.values())
                                            for k, row in table.items()) + "  (High/Maybe/Weakly/Unknown)")


def _run_args(p):
    add_config_args(p)
    p.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default: the preset's run.seeds)")
    p.add_argument("--out", type=Path, help="run directory (default runs/<preset>)")
    p.add_argument("--cache", help="artefact cache shared by runs (default: OUT/../.kgsim-cache)")
    p.add_argument("--workers", type=int, help="parallel seed processes (default: run.workers)")


@command("run", "run the factuality-gap study end to end and write results.json, report.md, figures",
         _run_args)
def _run(args) -> int:

    overrides = list(args.overrides)
    if args.seeds:
        overrides.append(f"run.seeds={list(args.seeds)}")
    if args.workers:
        overrides.append(f"run.workers={args.workers}")
    args.overrides = overrides
    cfg = resolve_config(args)
    out = args.out or Path("runs") / (args.preset or "custom")
    try:
        prepare_run_dir(cfg, out)
    except RunDirError as e:
        raise UserError(str(e)) from None
    t0 = time.perf_counter()
    per_seed = run_seeds(cfg, list(cfg.run.seeds), out, _cache_of(args, out))
    report = finish_run(cfg, out, per_seed, time.perf_counter() - t0)
    print(f"report: {report}")
    return 0


def finish_run(cfg, out: Path, per_seed: list[dict], wall_s: float | None = None) -> Path:

    boot = _one_seed_bootstrap(out, per_seed)
    agg = aggregate([{k: s[k] for k in ("accuracy", "gaps", "base", "finetune", "two_hop")} for s in per_seed])
    if boot:
        agg["gaps"] = bootstrap_gap_intervals(per_seed[0]["gaps"], boot)
    res = {"config": to_dict(cfg), "seeds": list(cfg.run.seeds), "environment": environment(),
           "sim_buckets": per_seed[0]["sim_buckets"], "per_seed": per_seed, "aggregate": agg,
           "observations": observations(per_seed, cfg.prompts.k_shots, per_seed[0]["sim_buckets"], boot=boot),
           "wall_time_s": wall_s}
    write_json(out / "results.json", res)
    return render(res, out)


def _one_seed_bootstrap(out: Path, per_seed: list[dict]) -> dict | None:
    """With one seed, the bootstrap over its test facts (kgsim.study.results.bootstrap_gaps), else None."""

    if len(per_seed) != 1:
        return None
    seed = per_seed[0]["seed"]
    data = json.loads((out / f"seed-{seed}" / "edges.json").read_text())
    return bootstrap_gaps([EdgeSet.from_json(e) for e in data["edge_sets"]], seed=seed)


def _report_args(p):
    p.add_argument("run_dir", type=Path)


@command("report", "re-render report.md and figures from a run directory's results.json", _report_args)
def _report(args) -> int:

    f = args.run_dir / "results.json"
    if not f.is_file():
        raise UserError(f"run_dir = {str(args.run_dir)!r}: no results.json (has `kgsim run` finished there?)")
    print(f"report: {render(json.loads(f.read_text()), args.run_dir)}")
    return 0



def _check_args(p):
    p.add_argument("run_dir", type=Path)
    p.add_argument("--detail", action="store_true", help="add each check's detail column")


@command("check", "hold every statement of the theory against a run's measured edge sets", _check_args)
def _check(args) -> int:
    import numpy as np



    seeds = sorted(args.run_dir.glob("seed-*/edges.json"))
    if not seeds:
        raise UserError(f"run_dir = {str(args.run_dir)!r}: no seed-*/edges.json (has `kgsim run` measured there?)")
    n_fail = 0
    for f in seeds:
        data = json.loads(f.read_text())
        edge_sets = [EdgeSet.from_json(e) for e in data["edge_sets"]]
        th = data["two_hop"]
        th = {"rows": np.asarray(th["rows"], np.int64).reshape(-1, 5),
              "hop1": None if th["hop1"] is None else np.asarray(th["hop1"]),
              "hop2": None if th["hop2"] is None else np.asarray(th["hop2"])}
        results = check_seed(edge_sets, th)
        n_fail += sum(not r.holds for r in results)
        print(f"## {f.parent.name}\n")
        print(format_table(results, detail=args.detail))
        cot = _two_hop_summary(edge_sets, th)
        if cot:
            print("\n| model | CoT predicted from one-hop edges | CoT measured | direct 2-hop |\n|---|---|---|---|")
            for m, v in cot.items():
                print(f"| {m} | {100 * v['predicted_cot']:.1f} | {100 * v['cot']:.1f} | {100 * v['direct']:.1f} |")
        print()
    print(f"{n_fail} check instance(s) do not hold (exact ones only when an assumption failed; "
          "empirical ones are predictions held against trained models)")
    return 0
