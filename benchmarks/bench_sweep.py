"""Benchmark: a `kgsim sweep` (one task graph, shared stages run once) against the same cells run
as independent `kgsim run`s, one after another, each with its own cache (nothing shared).

Reports the sweep's wall time, the sum of the independent runs' wall times, their ratio, and the
share of core time the sweep's tasks kept busy (task seconds over wall time x workers).

    python benchmarks/bench_sweep.py [--preset smoke] [--grid finetune.unknown_share=0,0.25,0.5,0.75,1]
                                     [--seeds 0 1] [--workers 2] [--out runs/bench/bench_sweep.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kgsim.core.io import OutputPathError, check_out_file, write_json
from kgsim.study.sweep import expand, load_sweep


def _kgsim(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kgsim", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--grid", action="append", help="as kgsim sweep --grid (default finetune.unknown_share=0,...,1)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/bench_sweep.json"),
                    help="JSON results (default runs/bench/, outside the tracked tree)")
    ap.add_argument("--work", type=Path, default=Path("runs/bench/sweep-work"),
                    help="scratch folder for the runs (emptied first)")
    args = ap.parse_args()
    try:
        check_out_file(args.out)
    except OutputPathError as e:
        ap.error(str(e))
    grid_items = args.grid or ["finetune.unknown_share=0,0.25,0.5,0.75,1"]
    seeds = [f"run.seeds={args.seeds}"]
    cfg, grid = load_sweep(args.preset, None, seeds, grid_items)
    cells = expand(cfg, grid)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)

    grid_args = [a for g in grid_items for a in ("--grid", g)]
    seed_args = ["--seeds", *map(str, args.seeds)]
    sweep_s = _kgsim("sweep", "--preset", args.preset, *grid_args, *seed_args, "--workers", str(args.workers),
                     "--out", str(args.work / "sweep" / "out"), "--no-laws")
    meta = json.loads((args.work / "sweep" / "out" / "sweep.json").read_text())
    runs = {}
    for name, values, _ in cells:
        sets = [a for k, v in values.items() for a in ("--set", f"{k}={json.dumps(v)}")]
        runs[name] = _kgsim("run", "--preset", args.preset, *sets, *seed_args, "--workers", str(args.workers),
                            "--out", str(args.work / name / "run"))
    rows = {"preset": args.preset, "grid": grid, "seeds": args.seeds, "workers": args.workers, "cells": len(cells),
            "sweep_wall_s": sweep_s, "sweep_graph_wall_s": meta["wall_s"], "sweep_busy_share": meta["busy_share"],
            "tasks_by_kind": meta["tasks_by_kind"], "computed_by_kind": meta["computed_by_kind"],
            "independent_runs_s": runs, "independent_sum_s": sum(runs.values())}
    rows["ratio"] = rows["independent_sum_s"] / sweep_s
    print(f"{len(cells)} cells x {len(args.seeds)} seeds on {args.workers} workers: sweep {sweep_s:.0f} s "
          f"(cores {100 * meta['busy_share']:.0f}% busy), independent runs {rows['independent_sum_s']:.0f} s, "
          f"ratio {rows['ratio']:.2f}x")
    write_json(args.out, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
