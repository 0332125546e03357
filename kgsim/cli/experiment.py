"""`kgsim pretrain`, `kgsim run`, `kgsim report`, `kgsim check`: the experiment commands."""
from __future__ import annotations

from pathlib import Path

from kgsim.cli.base import UserError, add_config_args, check_worlds, command, output_dirs, resolve_config
from kgsim.core.io import copy_file, copy_tree, read_json, write_json
from kgsim.study.api import run_config
from kgsim.study.finish import check_run_dir
from kgsim.study.report import render
from kgsim.study.runner import RunDirError
from kgsim.study.stages import base_hash, pretrain_stage, probe_stage, world_stage
from kgsim.study.tasks import EngineError
from kgsim.world.plots import plot_pretraining
from proofs.run import format_table


def _pretrain_args(p):
    add_config_args(p)
    p.add_argument("--out", type=Path, help="output directory (default runs/<preset>-pretrain)")
    p.add_argument("--cache", help="artefact cache shared by every command (default: OUT/../.kgsim-cache)")


PRETRAIN_FILES = ("base.safetensors", "hf", "metrics.jsonl", "pretraining.png", "probe.json", "summary.json")


@command("pretrain", "build the world and pretrain the base model; plots, probe tables and a HF export",
         _pretrain_args)
def _pretrain(args) -> int:
    cfg = resolve_config(args)
    out, cache = output_dirs(args, cfg, "pretrain")
    if (out / "summary.json").is_file():
        old = read_json(out / "summary.json", "the summary.json of a `kgsim pretrain` folder")
        if "base_hash" not in old:
            raise UserError(f"--out = {str(out)!r} holds other files (its summary.json is not from kgsim pretrain); "
                            "choose another --out")
        if old.get("base_hash") != base_hash(cfg):
            raise UserError(f"--out = {str(out)!r} holds another pretraining (config hash {old.get('base_hash')}); "
                            "choose another --out")
    elif out.is_dir() and any(p.name not in PRETRAIN_FILES for p in out.iterdir() if not p.name.startswith(".")):
        raise UserError(f"--out = {str(out)!r} holds other files and no kgsim pretrain summary.json; "
                        "choose another --out")
    world = world_stage(cfg, cache)
    base = pretrain_stage(cfg, world, cache, bar=True)
    probe = probe_stage(cfg, world, base)
    out.mkdir(parents=True, exist_ok=True)
    copy_file(base.dir / f"probe-{cfg.section_hash('probe')}" / "probe.json", out / "probe.json")
    for name in ("con.safetensors", "metrics.jsonl"):
        copy_file(base.dir / "train" / name, out / ("base.safetensors" if name == "con.safetensors" else name))
    if not (out / "hf").exists():
        copy_tree(base.dir / "hf", out / "hf")
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
    p.add_argument("--cache", help="artefact cache shared by every command (default: OUT/../.kgsim-cache)")
    p.add_argument("--workers", type=int, help="local worker processes, one thread each (default: run.workers)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="send the task graph to this Dask scheduler (tcp://host:8786) instead of a local cluster")


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
    out, cache = output_dirs(args, cfg, "run")
    check_worlds(cfg, cache)                     # a bad input file or a too-small graph stops here
    try:
        run_config(cfg, out, cache, scheduler=args.scheduler)
    except (RunDirError, EngineError) as e:
        raise UserError(str(e)) from None
    report = out / "report.md"
    print(f"report: {report}")
    return 0


RESULTS_KEYS = {"config": dict, "seeds": list, "environment": dict, "per_seed": list, "aggregate": dict,
                "observations": dict}


def _report_args(p):
    p.add_argument("run_dir", type=Path)


@command("report", "re-render report.md and figures from a run directory's results.json", _report_args)
def _report(args) -> int:
    f = args.run_dir / "results.json"
    if not f.is_file():
        raise UserError(f"run_dir = {str(args.run_dir)!r}: no results.json (has `kgsim run` finished there?)")
    res = read_json(f, "a kgsim run's results.json", require=RESULTS_KEYS)
    print(f"report: {render(res, args.run_dir)}")
    return 0


def _check_args(p):
    p.add_argument("run_dir", type=Path)
    p.add_argument("--detail", action="store_true", help="add each check's detail column")


@command("check", "hold every statement of the theory against a run's measured edge sets", _check_args)
def _check(args) -> int:
    seeds = check_run_dir(args.run_dir)
    if not seeds:
        raise UserError(f"run_dir = {str(args.run_dir)!r}: no seed-*/edges.json (has `kgsim run` measured there?)")
    n_fail = 0
    for name, results, cot in seeds:
        n_fail += sum(not r.holds for r in results)
        print(f"## {name}\n")
        print(format_table(results, detail=args.detail))
        if cot:
            print("\n| model | CoT predicted from one-hop edges | CoT measured | direct 2-hop |\n|---|---|---|---|")
            for m, v in cot.items():
                print(f"| {m} | {100 * v['predicted_cot']:.1f} | {100 * v['cot']:.1f} | {100 * v['direct']:.1f} |")
        print()
    print(f"{n_fail} check instance(s) do not hold (exact ones only when an assumption failed; "
          "empirical ones are predictions held against trained models)")
    return 0
