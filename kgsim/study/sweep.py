"""`kgsim sweep`: the study over a grid of configurations, as one task graph.

A grid maps dotted config keys to lists of values (``--grid finetune.lr=1e-4,3e-4`` or a ``[sweep]``
table in a TOML ``--config``); every combination is a **cell**, a normal run directory::

    DIR/config.toml          the base config (a rerun with another base config is refused)
    DIR/cells/NAME/          one run directory per cell (config.toml, seed-S/, results.json, report.md)
    DIR/sweep.json           the grid, each cell's values and status, every task's record, wall time
    DIR/tidy.csv             one row per (cell, seed, model, stage, split, prompt); tidy.parquet too
                             where pyarrow is installed
    DIR/laws/                the fitted dose-response laws (kgsim.study.laws)
    DIR/sweep.md             per cell: its values, ρ and set size n, status, ID gaps, the ρ-model's accuracy

Stages shared by cells (worlds, base models, fine-tuned models that a key does not touch) run once
(:mod:`kgsim.study.tasks`). Killed and rerun, the sweep resumes at task granularity; a grid with new
values adds cells and reuses the finished ones. A failing cell is reported; the others finish.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from kgsim.core.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    apply_table,
    load_config,
    to_dict,
    tomllib,
)
from kgsim.core.io import write_json, write_text
from kgsim.core.names import FT_KNOWN, FT_MIXED, FT_UNKNOWN, STAGES, ZERO_SHOT
from kgsim.study.api import load_results
from kgsim.study.laws import write_laws
from kgsim.study.results import cut_to_unit, interval
from kgsim.study.runner import RunDirError, prepare_run_dir
from kgsim.study.tasks import Cell, GraphRun, check_scheduler, run_cells

__all__ = ["SweepError", "SweepResult", "expand", "load_sweep", "parse_grid", "run_sweep"]

NOT_SWEPT = {"seed": "it is the stream of one run; give seeds with --seeds",
             "run.seeds": "give seeds with --seeds (every cell runs every seed)",
             "run.workers": "give workers with --workers"}


class SweepError(ConfigError):
    """A grid kgsim cannot run (unknown key, no values, a value of the wrong type)."""


# --------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------

def _split_top(text: str) -> list[str]:
    """`text` split at commas outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    return parts + [cur]


def _value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return raw.strip()                  # a bare word is a string: graph.generator=uniform,zipf


def parse_grid(items: list[str]) -> dict[str, list]:
    """``["key=v1,v2", ...]`` -> {key: [v1, v2]}. Values are TOML (a bare word is a string); commas
    inside brackets belong to one value (``prompts.k_shots=[1,2],[1,2,4]`` is two values).

    >>> parse_grid(["finetune.lr=1e-4,3e-4", "prompts.k_shots=[1,2],[1,2,4]"])
    {'finetune.lr': [0.0001, 0.0003], 'prompts.k_shots': [[1, 2], [1, 2, 4]]}
    """
    grid = {}
    for item in items:
        if "=" not in item:
            raise SweepError(f"--grid {item!r}: expected section.key=value1,value2,...")
        key, raw = (x.strip() for x in item.split("=", 1))
        grid[key] = [_value(v) for v in _split_top(raw) if v.strip()]
    return grid


def _flatten(table: dict, prefix: str = "") -> dict[str, list]:
    out = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= _flatten(v, key + ".")
        elif isinstance(v, list):
            out[key] = v
        else:
            raise SweepError(f"[sweep] {key} = {v!r}: must be a list of values")
    return out


def load_sweep(preset: str | None, config_file: str | Path | None, overrides: list[str],
               grid_items: list[str]) -> tuple[ExperimentConfig, dict[str, list]]:
    """The base config (defaults <- preset <- config file without its ``[sweep]`` table <- overrides)
    and the grid (the ``[sweep]`` table, then ``--grid`` items), every cell checked (:func:`expand`).
    Raises ConfigError / SweepError, one line naming the key and value, before any work."""
    table, grid = {}, {}
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"--config = {str(path)!r}: no such file")
        try:
            table = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
        grid = _flatten(table.pop("sweep", {}))
    cfg = load_config(preset, None, ())
    try:
        cfg = apply_table(ExperimentConfig, cfg, table)
    except ConfigError as e:
        raise ConfigError(f"{config_file}: {e}") from None
    cfg = apply_overrides(ExperimentConfig, cfg, overrides)
    cfg.validate()
    grid |= parse_grid(grid_items)
    expand(cfg, grid)
    return cfg, grid


def expand(cfg: ExperimentConfig, grid: dict[str, list]) -> list[tuple[str, dict, ExperimentConfig]]:
    """Every cell of the grid: (name, {key: value}, validated config), in grid order.
    Raises SweepError on an empty grid or list, a key that cannot be swept, an unknown key, a value
    of the wrong type, a repeated value, and an invalid cell (naming it)."""
    if not grid:
        raise SweepError("no grid: give --grid section.key=v1,v2 or a [sweep] table in --config")
    for key, values in grid.items():
        if key in NOT_SWEPT:
            raise SweepError(f"--grid {key}: cannot be swept ({NOT_SWEPT[key]})")
        if not values:
            raise SweepError(f"--grid {key}: give at least one value")
        names = [_fmt(v) for v in values]
        if len(set(names)) != len(names):
            raise SweepError(f"--grid {key} = {values!r}: a value is repeated")
        for v in values:
            try:
                apply_overrides(ExperimentConfig, cfg, [f"{key}={_toml(v)}"])
            except ConfigError as e:
                raise SweepError(f"--grid {key}: {e}") from None
    short = _short_names(list(grid))
    cells = []
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid, combo))
        name = "__".join(f"{short[k]}-{_fmt(v)}" for k, v in values.items())
        c = apply_overrides(ExperimentConfig, cfg, [f"{k}={_toml(v)}" for k, v in values.items()])
        try:
            c.validate()
        except ConfigError as e:
            raise SweepError(f"--grid cell {name}: {e}") from None
        cells.append((name, values, c))
    return cells


def _toml(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (str, list, bool)) else repr(v)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return format(v, "g")
    if isinstance(v, (list, tuple)):
        return "-".join(_fmt(x) for x in v) or "none"
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(v))


def _short_names(keys: list[str]) -> dict[str, str]:
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


# --------------------------------------------------------------------------------------------
# Running a sweep
# --------------------------------------------------------------------------------------------

@dataclass
class SweepResult:
    out: Path
    cells: list[dict]
    graph: GraphRun

    @property
    def failed(self) -> list[dict]:
        return [c for c in self.cells if c["status"] != "done"]


def prepare_sweep_dir(cfg: ExperimentConfig, out: Path) -> None:
    """Refuse a folder holding a run, another sweep (another base config) or other files; write the
    base config."""
    if (out / "config.toml").is_file() and not (out / "cells").is_dir():
        raise RunDirError(f"--out = {str(out)!r} holds a kgsim run, not a sweep; choose another --out")
    prepare_run_dir(cfg, out)
    (out / "cells").mkdir(exist_ok=True)


def run_sweep(cfg: ExperimentConfig, grid: dict[str, list], out: Path, cache: Path | None = None, *,
              workers: int | None = None, scheduler: str | None = None, show: bool = True,
              laws: bool = True) -> SweepResult:
    """Run every cell of `grid` over ``cfg.run.seeds`` into `out` (see the module docstring) and
    write sweep.json, the tidy table and the laws. Raises SweepError/ConfigError on a bad grid and
    RunDirError on a folder holding something else and EngineError on an unreachable scheduler,
    before any work."""
    out = Path(out)
    cells = expand(cfg, grid)
    check_scheduler(scheduler)
    prepare_sweep_dir(cfg, out)
    plan = [Cell(name, c, out / "cells" / name) for name, _, c in cells]
    for cell in plan:
        try:
            prepare_run_dir(cell.cfg, cell.out)
        except RunDirError as e:
            raise RunDirError(f"cell {cell.name}: {e}") from None
    g = run_cells(plan, cache or out.parent / ".kgsim-cache", workers=workers or cfg.run.workers,
                  scheduler=scheduler, show=show)
    records = []
    for (name, values, _), cell in zip(cells, plan):
        rec = {"name": name, "values": values, "dir": f"cells/{name}", "status": "done", "error": None}
        if name in g.errors:
            rec |= {"status": "failed", "error": g.errors[name]}
            write_text(cell.out / "error.log", g.tracebacks[name])
        records.append(rec)
    kinds = sorted({t["kind"] for t in g.tasks})
    write_json(out / "sweep.json", {
        "version": 1, "grid": grid, "seeds": list(cfg.run.seeds), "config": to_dict(cfg), "cells": records,
        "scheduler": scheduler, "workers": g.workers, "wall_s": g.wall_s, "busy_share": g.busy_share(),
        "tasks_by_kind": {k: sum(t["kind"] == k for t in g.tasks) for k in kinds},
        "computed_by_kind": {k: sum(t["kind"] == k and t.get("cached") is False for t in g.tasks) for k in kinds},
        "tasks": g.tasks})
    if any(r["status"] == "done" for r in records):
        table = write_tidy(out)
        if laws:
            write_laws(out)
        write_text(out / "sweep.md", summary(table, records, cfg, grid, g, laws))
    return SweepResult(out, records, g)


def cell_interval(values, unit: bool = False) -> str:
    """'mean [lo, hi]' in points: the Student-t interval over seeds, cut to [0, 100] for an accuracy
    (`unit`), as the run reports cut theirs.

    >>> cell_interval([0.95, 0.99, 0.70], unit=True)           # uncut: [49.0, 127.0]
    '88.0 [49.0, 100.0]'
    >>> cell_interval([0.2])
    '20.0'
    """
    v = interval(list(values))
    if unit:
        v = cut_to_unit(v)
    return "–" if v["n"] == 0 else f"{100 * v['mean']:.1f}" + (
        f" [{100 * v['lo']:.1f}, {100 * v['hi']:.1f}]" if v["n"] > 1 else "")


def summary(table: pd.DataFrame, records: list[dict], cfg: ExperimentConfig, grid: dict, g: GraphRun,
            laws: bool = True) -> str:
    """``sweep.md``: per cell its values, its fine-tuning set (ρ, n), status, the ID zero-shot gap
    (FT-Known − FT-Unknown) and the ρ-model's ID accuracy at ES and Con. (mean [95% interval over
    seeds], :func:`cell_interval`; accuracies' cut to [0, 100]); then the engine's figures."""
    head = " | ".join(grid)
    L = ["# Sweep", "", f"Seeds {list(cfg.run.seeds)}; {len(records)} cells. Points: mean [95% interval over seeds].",
         "",
         f"| cell | {head} | ρ | n | status | ID gap ES | ID gap Con. | ρ-model ID acc. ES | ρ-model ID acc. Con. |",
         "|---|" + "---|" * (len(grid) + 7)]                # one per column: cell, the grid's keys, 7 more
    idz = table[(table.split == "id") & (table.prompt == ZERO_SHOT)]
    for r in records:
        c = idz[idz.cell == r["name"]]
        rho = r["values"].get("finetune.unknown_share", cfg.finetune.unknown_share)
        rho_model = FT_KNOWN if rho == 0 else FT_UNKNOWN if rho == 1 else FT_MIXED
        n = int(c.ft_set_size.dropna().iloc[0]) if c.ft_set_size.notna().any() else "–"
        cells = [cell_interval(c[(c.model == FT_KNOWN) & (c.stage == st)].gap) for st in STAGES]
        cells += [cell_interval(c[(c.model == rho_model) & (c.stage == st)].accuracy, unit=True) for st in STAGES]
        L.append(f"| {r['name']} | {' | '.join(str(r['values'][k]) for k in grid)} | {rho:g} | {n} | {r['status']} | "
                 + " | ".join(cells) + " |")
    L += ["", f"Wall time {g.wall_s:.0f} s on {g.workers} worker(s); cores {100 * g.busy_share():.0f}% busy. "
          "Tasks computed / in the graph: " + ", ".join(
              f"{k} {sum(t['kind'] == k and t.get('cached') is False for t in g.tasks)}/"
              f"{sum(t['kind'] == k for t in g.tasks)}" for k in dict.fromkeys(t["kind"] for t in g.tasks)) + ".",
          "", ("Laws: [laws/laws.md](laws/laws.md). " if laws else "Laws: not fitted (--no-laws). ")
          + "Tidy table: tidy.csv."]
    return "\n".join(L) + "\n"


def write_tidy(out: Path) -> pd.DataFrame:
    """``out/tidy.csv`` (and ``tidy.parquet`` where pyarrow is installed) from the finished cells."""
    table = load_results(out)
    table.to_csv(out / "tidy.csv", index=False)
    try:
        import pyarrow  # noqa: F401 - optional: Parquet only where it is installed
    except ImportError:
        return table
    table.to_parquet(out / "tidy.parquet", index=False)
    return table
