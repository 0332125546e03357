"""The Python API: run the study and read its results as a tidy table.

>>> import kgsim                                                   # doctest: +SKIP
>>> out = kgsim.run("smoke", seeds=[0], out="runs/smoke-0")        # doctest: +SKIP
>>> kgsim.load_results(out).query("split == 'id' and prompt == 'zero-shot'")   # doctest: +SKIP

(the README's example runs as a doctest in ``tests/test_readme.py``).
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Sequence

import pandas as pd

from kgsim.core.config import ConfigError, ExperimentConfig, from_dict, load_config
from kgsim.core.names import FT_KNOWN, FT_MIXED, FT_UNKNOWN
from kgsim.study.runner import prepare_run_dir
from kgsim.study.tasks import Cell, check_scheduler, run_cells

__all__ = ["run", "run_config", "load_results", "tidy_rows", "TIDY_COLUMNS", "SWEEP_COLUMNS"]

TIDY_COLUMNS = ("seed", "model", "stage", "split", "prompt", "accuracy", "n", "n_correct", "gap")
SWEEP_COLUMNS = ("cell", "unknown_share", "ft_set_size")     # then the swept keys, then TIDY_COLUMNS


def run(preset: str | None = "default", *, config: str | Path | None = None, overrides: Sequence[str] = (),
        seeds: Sequence[int] | None = None, workers: int | None = None, out: str | Path | None = None,
        cache: str | Path | None = None, progress: bool = True, scheduler: str | None = None) -> Path:
    """Run the study as `kgsim run` does and return the run directory.

    `preset`, `config` (a TOML file) and `overrides` (``"section.key=value"`` strings) resolve the
    configuration exactly as the command line does; `seeds` and `workers` override ``run.seeds``
    and ``run.workers``. `out` defaults to ``runs/<preset>``, `cache` to ``OUT/../.kgsim-cache``.
    A finished run directory with the same config is reused stage by stage; one holding another
    config raises :class:`kgsim.study.runner.RunDirError`; a bad key or value raises
    :class:`kgsim.core.config.ConfigError` before any work. The stages run as a task graph
    (:mod:`kgsim.study.tasks`) on a local Dask cluster of ``run.workers`` processes, or on the Dask
    scheduler at `scheduler` (``"tcp://host:8786"``).
    """
    overrides = list(overrides)
    if seeds is not None:
        overrides.append(f"run.seeds={[int(s) for s in seeds]}")
    if workers is not None:
        overrides.append(f"run.workers={int(workers)}")
    cfg = load_config(preset, config, overrides)
    out = Path(out) if out is not None else Path("runs") / (preset or "custom")
    return run_config(cfg, out, Path(cache) if cache is not None else None, progress=progress, scheduler=scheduler)


def run_config(cfg: ExperimentConfig, out: Path, cache: Path | None = None, progress: bool = True,
               scheduler: str | None = None) -> Path:
    """Run every seed of a resolved config into `out` and write results.json and the report;
    returns `out`. A one-cell sweep on the task-graph engine (:func:`kgsim.study.tasks.run_cells`).
    Raises ConfigError when a stage finds the config does not fit the data (say SliCK finds too
    few Known facts for the splits' sizes): one line naming the key, the run folder left as it was
    before (cached worlds and models are kept, so a rerun with the key changed resumes from them);
    RuntimeError naming the seed and stage for any other failure (traceback in ``out/error.log``)."""
    check_scheduler(scheduler)                            # before the run folder is written
    fresh = not out.exists()
    prepare_run_dir(cfg, out)
    g = run_cells([Cell("", cfg, out)], cache or out.parent / ".kgsim-cache", workers=cfg.run.workers,
                  scheduler=scheduler, show=progress)
    if "" in g.config_errors:
        if fresh and not any(p.is_file() and p.name != "config.toml" for p in out.rglob("*")):
            shutil.rmtree(out)                             # nothing measured or trained there: no half-run left
        raise ConfigError(f"{g.errors['']}; the cached world and base model are kept for the rerun")
    if g.errors:
        (out / "error.log").write_text(g.tracebacks[""])
        raise RuntimeError(f"{g.errors['']} (traceback in {out / 'error.log'})")
    return out


def tidy_rows(results: dict) -> list[dict]:
    """One row per (seed, model, stage, split, prompt) of a ``results.json``: accuracy, the number
    of test facts ``n`` and of those answered ``n_correct``, and ``gap`` = FT-Known minus FT-Unknown
    accuracy at that seed, stage, split and prompt (NaN for the base model, which has no stage)."""
    rows = []
    for s in results["per_seed"]:
        acc, sizes = s["accuracy"], s.get("sizes", {})
        for key, by_split in acc.items():
            model, _, stage = key.partition("/")
            for split, by_prompt in by_split.items():
                for prompt, a in by_prompt.items():
                    size = sizes.get(key, {}).get(split, {}).get(prompt, {})
                    gap = s["gaps"].get(stage, {}).get(split, {}).get(prompt, math.nan) if stage else math.nan
                    rows.append({"seed": s["seed"], "model": model, "stage": stage or None, "split": split,
                                 "prompt": prompt, "accuracy": a, "n": size.get("N"), "n_correct": size.get("E"),
                                 "gap": gap})
    return rows


def set_composition(cfg: ExperimentConfig, model: str) -> tuple[float, int]:
    """(share of Unknown facts, number of facts) in the fine-tuning set of `model` under `cfg`
    (:func:`kgsim.study.stages.ft_sets`); (NaN, 0) for the base model."""
    n = cfg.finetune.size or cfg.splits.ft_size
    share = {FT_KNOWN: 0.0, FT_UNKNOWN: 1.0, FT_MIXED: round(cfg.finetune.unknown_share * n) / n}
    return (share[model], n) if model in share else (math.nan, 0)


def sweep_rows(sweep_dir: str | Path) -> tuple[list[dict], list[str]]:
    """Tidy rows of every finished cell of a `kgsim sweep` folder, each with the cell's name, the
    row's model's fine-tuning set (``unknown_share``, ``ft_set_size``) and the swept keys' values;
    and the swept keys."""
    sweep_dir = Path(sweep_dir)
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    keys = list(meta["grid"])
    rows = []
    for cell in meta["cells"]:
        f = sweep_dir / cell["dir"] / "results.json"
        if not f.is_file():
            continue
        res = json.loads(f.read_text())
        cfg = from_dict(res["config"])
        for row in tidy_rows(res):
            share, size = set_composition(cfg, row["model"])
            rows.append({"cell": cell["name"], "unknown_share": share, "ft_set_size": size or None}
                        | {k: _cell_value(cell["values"][k]) for k in keys} | row)
    return rows, keys


def _cell_value(v):
    return str(v) if isinstance(v, (list, tuple)) else v      # a list value (k_shots) as one table cell


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """A run directory's ``results.json`` as a tidy pandas table (columns :data:`TIDY_COLUMNS`); a
    `kgsim sweep` folder's cells as one table (:data:`SWEEP_COLUMNS`, then the swept keys, then
    :data:`TIDY_COLUMNS`), rows of unfinished cells left out.

    Raises FileNotFoundError naming the file when the run has not finished there.
    """
    run_dir = Path(run_dir)
    if (run_dir / "sweep.json").is_file():
        rows, keys = sweep_rows(run_dir)
        return pd.DataFrame(rows, columns=[*SWEEP_COLUMNS, *keys, *TIDY_COLUMNS])
    f = run_dir / "results.json"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: no results.json (has `kgsim run` finished there?)")
    return pd.DataFrame(tidy_rows(json.loads(f.read_text())), columns=list(TIDY_COLUMNS))
