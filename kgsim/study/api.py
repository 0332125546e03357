"""The Python API: run the study and read its results as a tidy table.

>>> import kgsim                                                   # doctest: +SKIP
>>> out = kgsim.run("smoke", seeds=[0], out="runs/smoke-0")        # doctest: +SKIP
>>> kgsim.load_results(out).query("split == 'id' and prompt == 'zero-shot'")   # doctest: +SKIP

(the README's example runs as a doctest in ``tests/test_readme.py``).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Sequence

import pandas as pd

from kgsim.core.config import ExperimentConfig, load_config
from kgsim.study.finish import finish
from kgsim.study.runner import prepare_run_dir, run_seeds

__all__ = ["run", "run_config", "load_results", "tidy_rows", "TIDY_COLUMNS"]

TIDY_COLUMNS = ("seed", "model", "stage", "split", "prompt", "accuracy", "n", "n_correct", "gap")


def run(preset: str | None = "default", *, config: str | Path | None = None, overrides: Sequence[str] = (),
        seeds: Sequence[int] | None = None, workers: int | None = None, out: str | Path | None = None,
        cache: str | Path | None = None, progress: bool = True) -> Path:
    """Run the study as `kgsim run` does and return the run directory.

    `preset`, `config` (a TOML file) and `overrides` (``"section.key=value"`` strings) resolve the
    configuration exactly as the command line does; `seeds` and `workers` override ``run.seeds``
    and ``run.workers``. `out` defaults to ``runs/<preset>``, `cache` to ``OUT/../.kgsim-cache``.
    A finished run directory with the same config is reused stage by stage; one holding another
    config raises :class:`kgsim.study.runner.RunDirError`; a bad key or value raises
    :class:`kgsim.core.config.ConfigError` before any work.
    """
    overrides = list(overrides)
    if seeds is not None:
        overrides.append(f"run.seeds={[int(s) for s in seeds]}")
    if workers is not None:
        overrides.append(f"run.workers={int(workers)}")
    cfg = load_config(preset, config, overrides)
    out = Path(out) if out is not None else Path("runs") / (preset or "custom")
    return run_config(cfg, out, Path(cache) if cache is not None else None, progress=progress)


def run_config(cfg: ExperimentConfig, out: Path, cache: Path | None = None, progress: bool = True) -> Path:
    """Run every seed of a resolved config into `out` and write results.json and the report;
    returns `out`."""
    prepare_run_dir(cfg, out)
    t0 = time.perf_counter()
    per_seed = run_seeds(cfg, list(cfg.run.seeds), out, cache or out.parent / ".kgsim-cache", show=progress)
    finish(cfg, out, per_seed, time.perf_counter() - t0)
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


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """A run directory's ``results.json`` as a tidy pandas table (columns :data:`TIDY_COLUMNS`).

    Raises FileNotFoundError naming the file when the run has not finished there.
    """
    f = Path(run_dir) / "results.json"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: no results.json (has `kgsim run` finished there?)")
    return pd.DataFrame(tidy_rows(json.loads(f.read_text())), columns=list(TIDY_COLUMNS))
