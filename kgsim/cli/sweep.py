"""`kgsim sweep`, `kgsim laws`, `kgsim compare`: the study over a grid, its laws, runs side by side."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from kgsim.cli.base import RUNS, UserError, add_config_args, command
from kgsim.core.io import OutputPathError, check_out_dir
from kgsim.core.names import FT_KNOWN, STAGES, ZERO_SHOT
from kgsim.study.api import load_results
from kgsim.study.laws import write_laws
from kgsim.study.results import interval
from kgsim.study.runner import RunDirError, protocol_dict
from kgsim.study.sweep import load_sweep, run_sweep
from kgsim.study.tasks import EngineError


def _engine_args(p) -> None:
    p.add_argument("--workers", type=int, help="local worker processes, one thread each (default: run.workers)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="send the task graph to this Dask scheduler (tcp://host:8786) instead of a local cluster")


def _sweep_args(p) -> None:
    add_config_args(p)
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a swept key and its values (repeatable; every combination is a cell)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds every cell runs (default: the preset's run.seeds)")
    p.add_argument("--out", type=Path, help="sweep folder (default runs/<preset>-sweep-<hash>)")
    p.add_argument("--cache", help="artefact cache shared by every command (default: OUT/../.kgsim-cache)")
    p.add_argument("--no-laws", action="store_true", help="skip fitting the laws at the end")
    _engine_args(p)


@command("sweep", "run the study over a grid of configurations as one task graph (shared stages run once)",
         _sweep_args)
def _sweep(args) -> int:
    overrides = list(args.overrides) + ([f"run.seeds={list(args.seeds)}"] if args.seeds else [])
    cfg, grid = load_sweep(args.preset, args.config, overrides, args.grid)       # bad grid: exit 2 here
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers = {args.workers}: must be >= 1")
    ident = hashlib.sha256(json.dumps([protocol_dict(cfg), grid], sort_keys=True).encode()).hexdigest()[:8]
    out = args.out or RUNS / f"{args.preset or 'custom'}-sweep-{ident}"
    cache = Path(args.cache) if args.cache else out.parent / ".kgsim-cache"
    try:
        check_out_dir(out, "--out")
        check_out_dir(cache, "--cache")
        res = run_sweep(cfg, grid, out, cache, workers=args.workers, scheduler=args.scheduler, show=True,
                        laws=not args.no_laws)
    except (RunDirError, EngineError, OutputPathError) as e:
        raise UserError(str(e)) from None
    g = res.graph
    meta = json.loads((out / "sweep.json").read_text())
    print(f"{len(res.cells) - len(res.failed)} of {len(res.cells)} cells done in {g.wall_s:.0f} s on {g.workers} "
          f"worker(s), cores {100 * g.busy_share():.0f}% busy; tasks computed "
          + ", ".join(f"{k} {meta['computed_by_kind'][k]}/{n}" for k, n in meta["tasks_by_kind"].items()))
    for c in res.failed:
        print(f"cell {c['name']} FAILED: {c['error']} (traceback in {out / c['dir'] / 'error.log'})")
    print(f"sweep: {out}/ (sweep.json, tidy.csv{'' if args.no_laws else ', laws/laws.md'}, cells/)")
    return 1 if res.failed else 0


def _laws_args(p) -> None:
    p.add_argument("run_dir", type=Path, help="a kgsim sweep folder (or a run folder)")
    p.add_argument("--out", type=Path, help="where laws.md, laws.json and the figures go (default RUN_DIR/laws)")


@command("laws", "fit the dose-response laws (Unknown share, prompt recovery q_k, fitting) with intervals",
         _laws_args)
def _laws(args) -> int:
    try:
        md = write_laws(args.run_dir, args.out)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    print(md.read_text())
    print(f"laws: {md}")
    return 0


def _compare_args(p) -> None:
    p.add_argument("run_dirs", type=Path, nargs="+", help="run folders and/or sweep folders")
    p.add_argument("--metric", choices=("gap", "accuracy"), default="gap")
    p.add_argument("--model", default=FT_KNOWN, help="with --metric accuracy: the model (default ft-known)")
    p.add_argument("--stage", nargs="+", default=list(STAGES))
    p.add_argument("--split", nargs="+", default=["id"])
    p.add_argument("--prompt", nargs="+", default=[ZERO_SHOT])


@command("compare", "print a metric with its 95% interval over seeds for each run or sweep cell", _compare_args)
def _compare(args) -> int:
    tables = []
    for d in args.run_dirs:
        try:
            t = load_results(d)
        except FileNotFoundError as e:
            raise UserError(str(e)) from None
        if "cell" not in t.columns:
            t.insert(0, "cell", "")
        t.insert(0, "run", str(d))
        tables.append(t)
    t = pd.concat(tables, ignore_index=True)
    model = FT_KNOWN if args.metric == "gap" else args.model
    t = t[(t.model == model) & t.stage.isin(args.stage) & t.split.isin(args.split) & t.prompt.isin(args.prompt)]
    if t.empty:
        raise UserError("no rows match --model/--stage/--split/--prompt in these runs")
    print(f"| run | cell | stage | split | prompt | {args.metric}{'' if args.metric == 'gap' else ' ' + model} "
          "(points) | 95% interval | seeds |\n|---|---|---|---|---|---|---|---|")
    for (run, cell, stage, split, prompt), g in t.groupby(["run", "cell", "stage", "split", "prompt"], sort=False):
        iv = interval(g[args.metric].tolist())
        lo_hi = f"[{100 * iv['lo']:.1f}, {100 * iv['hi']:.1f}]" if iv["n"] > 1 else "– (one seed)"
        print(f"| {run} | {cell or '–'} | {stage} | {split} | {prompt} | {100 * iv['mean']:.1f} | {lo_hi} | "
              f"{iv['n']} |")
    return 0
