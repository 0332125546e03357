"""The study as a task graph, run on Dask distributed.

Each (cell, seed, stage) is a task whose key is the hash of what that stage's output depends on, so
a stage whose inputs are equal across cells (a world, a base model, FT-Known and FT-Unknown when
cells differ only in ``finetune.unknown_share``) is one task, computed once::

    world-H     graph, splits, corpus            cache/world-H/          (graph, corpus, splits, seed)
    pretrain-H  base model                       cache/base-H/           (+ model, pretrain)
    instruct-H  broad QA tuning (when enabled)   cache/base-H/instruct-I/ (+ instruct)
    probe-H     memorisation, SliCK              cache/base-H/probe-P/   (+ probe; under instruct-I/ when enabled)
    finetune-H  FT-Known / FT-Unknown / mixed    CELL/seed-S/ft-WHICH/   (the protocol but prompts, buckets)
    seed-H      measure every edge set, checks   CELL/seed-S/results.json
    finish-H    results.json, report, figures    CELL/

A fine-tuned model shared by several cells is trained in the first cell's seed folder (or where an
earlier run left it) and linked from the others (``ft-known -> ../../OTHER/seed-0/ft-known``), so
every cell folder is a normal run directory. Every task reads its inputs from disk and writes its
output where the stages cache it, so a killed graph, submitted again, resumes at task granularity
(and a fine-tuning or pretraining task inside its own checkpoints).

Execution: a ``LocalCluster`` of single-thread worker processes (the default, ``workers``) or an
existing scheduler (``scheduler``: workers must share the file system and the kgsim install). Every
task runs with one torch thread, so its numbers do not depend on where or beside what it ran.
With ``run.ft_replicates`` = R > 1 (the nested design), every seed's world, base model and probe
feed R fine-tuning replicates, each in its own folder (``seed-S``, ``seed-S-ft1``, ...; see
:func:`kgsim.study.runner.unit_name`) with its own finetune and seed tasks.
Pretraining has the highest priority, so the long chains start first and the short stages of
every seed and cell fill the cores around them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kgsim.core.config import ConfigError, ExperimentConfig, replace
from kgsim.study.finish import finish
from kgsim.study.runner import protocol_dict, run_seed, seed_key, unit_name
from kgsim.study.stages import (
    base_hash,
    base_stage,
    finetune_stage,
    ft_models,
    instruct_stage,
    pretrain_stage,
    probe_stage,
    splits_or_exclusion,
    world_stage,
)
from kgsim.world.build import world_hash, world_is_current

__all__ = ["Cell", "EngineError", "GraphRun", "Task", "build_graph", "check_scheduler", "run_cells"]

PRIORITY = {"world": 50, "pretrain": 40, "instruct": 35, "probe": 30, "finetune": 20, "seed": 10, "finish": 0}


class EngineError(RuntimeError):
    """The task graph could not be executed (no scheduler at the address, no workers)."""


@dataclass(frozen=True)
class Cell:
    """One configuration of a sweep (``name`` "" for a plain run) and its run directory."""

    name: str
    cfg: ExperimentConfig
    out: Path


@dataclass
class Task:
    key: str
    kind: str                           # world | pretrain | instruct | probe | finetune | seed | finish
    fn: Callable
    args: tuple
    deps: tuple[str, ...] = ()
    seed: int | None = None
    cells: list[str] = field(default_factory=list)
    label: str = ""
    replicate: int = 0                  # the fine-tuning replicate (finetune and seed tasks)


def _h(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finetune_key(cfg: ExperimentConfig, which: str, replicate: int = 0) -> str:
    """What a fine-tuned model depends on: the whole protocol except the test-time prompts, the
    similarity buckets, the test-set filters and the Open-World rule (measured later), the verdict
    rules (judged at the end), and the Unknown share except for the mixed set; and its fine-tuning
    replicate, when not 0."""
    d = protocol_dict(cfg)
    d.pop("prompts")
    d["run"].pop("sim_buckets", None)
    d["run"].pop("test_filters", None)
    d.pop("verdicts", None)
    d["splits"].pop("open_world", None)        # drawn after the fine-tuning and dev sets: changes no fine-tuning
    if which != "mixed":
        d["finetune"].pop("unknown_share", None)
    return _h(d, cfg.seed, which, *([replicate] if replicate else []))


# --------------------------------------------------------------------------------------------
# The tasks (run on the workers; each returns a small record, the seed task the seed's results)
# --------------------------------------------------------------------------------------------

def _start() -> dict:
    torch.set_num_threads(1)                  # one thread per task: numbers independent of placement
    return {"start": time.time(), "worker": f"{socket.gethostname()}:{os.getpid()}"}


def _done(rec: dict, cached: bool, **extra) -> dict:
    rec["stop"] = time.time()
    return rec | {"cached": cached, "wall_s": rec["stop"] - rec["start"]} | extra


def world_task(cfg: ExperimentConfig, cache: str) -> dict:
    rec = _start()
    cached = world_is_current(Path(cache) / f"world-{world_hash(cfg)}", cfg)
    world_stage(cfg, Path(cache))
    return _done(rec, cached)


def _base_done(cfg: ExperimentConfig, cache: Path) -> bool:
    d = cache / f"base-{base_hash(cfg)}"
    return (d / "train" / "con.safetensors").is_file() and (d / "hf" / "config.json").is_file()


def pretrain_task(cfg: ExperimentConfig, cache: str, *_deps) -> dict:
    rec = _start()
    cached = _base_done(cfg, Path(cache))
    pretrain_stage(cfg, world_stage(cfg, Path(cache)), Path(cache))
    return _done(rec, cached)


def instruct_task(cfg: ExperimentConfig, cache: str, *_deps) -> dict:
    rec = _start()
    world = world_stage(cfg, Path(cache))
    pre = pretrain_stage(cfg, world, Path(cache))
    cached = (pre.dir / f"instruct-{cfg.section_hash('instruct')}" / "train" / "con.safetensors").is_file()
    instruct_stage(cfg, world, pre)
    return _done(rec, cached)


def probe_task(cfg: ExperimentConfig, cache: str, *_deps) -> dict:
    rec = _start()
    world = world_stage(cfg, Path(cache))
    _, base = base_stage(cfg, world, Path(cache))
    cached = (base.dir / f"probe-{cfg.section_hash('probe')}" / "probe.npz").is_file()
    probe_stage(cfg, world, base)
    return _done(rec, cached)


def finetune_task(cfg: ExperimentConfig, cache: str, which: str, seed_dir: str, replicate: int, *_deps) -> dict:
    rec = _start()
    world = world_stage(cfg, Path(cache))
    _, base = base_stage(cfg, world, Path(cache))
    splits, excluded = splits_or_exclusion(cfg, world, probe_stage(cfg, world, base))
    if excluded:
        return _done(rec, False, excluded=excluded)                  # the seed task records it
    cached = (Path(seed_dir) / f"ft-{which}" / "con.safetensors").is_file()
    finetune_stage(cfg, world, base, splits, which, Path(seed_dir), replicate=replicate)
    return _done(rec, cached)


def seed_task(cfg: ExperimentConfig, seed: int, run_dir: str, cache: str, links: dict, replicate: int,
              *_deps) -> dict:
    """Link the shared fine-tuned models into this cell's seed folder, then :func:`run_seed` (every
    earlier stage is cached by now: it measures every edge set and writes the seed's results)."""
    rec = _start()
    seed_dir = Path(run_dir) / unit_name(seed, replicate)
    seed_dir.mkdir(parents=True, exist_ok=True)
    for name, target in links.items():
        link = seed_dir / name
        if link.is_symlink():
            link.unlink()
        if not link.exists():
            link.symlink_to(os.path.relpath(target, seed_dir), target_is_directory=True)
    done = seed_dir / "results.json"
    key = seed_key(cfg, seed, replicate)                                 # as run_seed keys its results
    cached = done.is_file() and json.loads(done.read_text()).get("key") == key
    res = run_seed(cfg, seed, Path(run_dir), Path(cache), replicate=replicate)
    return {"result": res, "task": _done(rec, cached)}


def finish_task(cfg: ExperimentConfig, run_dir: str, t0: float, *seeds: dict) -> dict:
    rec = _start()
    finish(cfg, Path(run_dir), [s["result"] for s in seeds], time.time() - t0)
    return _done(rec, False)


# --------------------------------------------------------------------------------------------
# The graph
# --------------------------------------------------------------------------------------------

def build_graph(cells: list[Cell], cache: Path, t0: float = 0.0) -> dict[str, Task]:
    """Every task of every cell and seed, keyed by content hash (a stage shared by cells is one
    task). `cache` and the cells' folders should be absolute (workers may run elsewhere)."""
    tasks: dict[str, Task] = {}
    hosts = _ft_hosts(cells)                 # fine-tuning key -> the seed folder it is trained in

    def add(kind: str, key: str, fn, args: tuple, deps=(), seed=None, cell="", label="", replicate=0) -> str:
        key = f"{kind}-{key}"
        if key not in tasks:
            tasks[key] = Task(key, kind, fn, args, tuple(deps), seed, [], label or kind, replicate)
        if cell not in tasks[key].cells:
            tasks[key].cells.append(cell)
        return key

    for cell in cells:
        seed_keys = []
        for seed in cell.cfg.run.seeds:
            c = replace(cell.cfg, seed=seed)
            at = {"seed": seed, "cell": cell.name}
            w = add("world", world_hash(c), world_task, (c, str(cache)), **at)
            b = add("pretrain", base_hash(c), pretrain_task, (c, str(cache)), [w], **at)
            if c.instruct.enabled:
                ih = c.section_hash("instruct")
                b = add("instruct", _h(base_hash(c), ih), instruct_task, (c, str(cache)), [b], **at)
                p = add("probe", _h(base_hash(c), ih, c.section_hash("probe")), probe_task, (c, str(cache)), [b], **at)
            else:
                p = add("probe", _h(base_hash(c), c.section_hash("probe")), probe_task, (c, str(cache)), [b], **at)
            for r in range(cell.cfg.run.ft_replicates):
                seed_dir = cell.out / unit_name(seed, r)
                fts, links = [], {}
                for model, which in ft_models(c):
                    k = finetune_key(c, which, r)
                    fts.append(add("finetune", k, finetune_task, (c, str(cache), which, str(hosts[k]), r), [p],
                                   label=f"finetune {model}", replicate=r, **at))
                    if hosts[k] != seed_dir:
                        links[f"ft-{which}"] = str(hosts[k] / f"ft-{which}")
                seed_keys.append(add("seed", _h(protocol_dict(c), seed, str(cell.out), *([r] if r else [])),
                                     seed_task, (cell.cfg, seed, str(cell.out), str(cache), links, r), fts,
                                     label="measure", replicate=r, **at))
        add("finish", _h(str(cell.out)), finish_task, (cell.cfg, str(cell.out), t0), seed_keys, cell=cell.name)
    return tasks


def _ft_hosts(cells: list[Cell]) -> dict[str, Path]:
    """For each fine-tuning key, the seed folder it trains in: one that already holds it as a real
    folder (an earlier run of this graph), else the first cell's that needs it."""
    wanted: dict[str, list[Path]] = {}
    for cell in cells:
        for seed in cell.cfg.run.seeds:
            c = replace(cell.cfg, seed=seed)
            for r in range(cell.cfg.run.ft_replicates):
                for _, which in ft_models(c):
                    wanted.setdefault(finetune_key(c, which, r), []).append(
                        cell.out / unit_name(seed, r) / f"ft-{which}")
    return {k: next((d for d in dirs if d.is_dir() and not d.is_symlink()), dirs[0]).parent
            for k, dirs in wanted.items()}


# --------------------------------------------------------------------------------------------
# Execution on Dask
# --------------------------------------------------------------------------------------------

@dataclass
class GraphRun:
    """What :func:`run_cells` did: per cell its seeds' results or its error; per task a record."""

    per_seed: dict[str, list[dict]]
    errors: dict[str, str]
    tracebacks: dict[str, str]
    tasks: list[dict]
    wall_s: float
    workers: int
    config_errors: frozenset[str] = frozenset()     # cells whose first failure is a ConfigError (data misfit)

    def busy_share(self) -> float:
        """Task time over (wall time x workers): the share of core time the graph kept busy."""
        busy = sum(t.get("wall_s", 0.0) for t in self.tasks)
        return busy / max(self.wall_s * self.workers, 1e-9)


def check_scheduler(scheduler: str | None) -> None:
    """Connect to the Dask scheduler at `scheduler` and leave (nothing for None): called before a
    run or sweep writes its folder, so an unreachable address leaves no output behind.
    Raises EngineError naming the address."""
    if scheduler:
        client, _ = _client(1, scheduler)
        client.close()


def _client(workers: int, scheduler: str | None):
    """(client, cluster or None)."""
    from distributed import Client, LocalCluster  # lazy: heavy, only needed when a graph runs
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as e:
            raise EngineError(f"--scheduler = {scheduler!r}: cannot connect ({e})") from None
        return client, None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=":0", silence_logs=logging.CRITICAL)
    return Client(cluster), cluster


def run_cells(cells: list[Cell], cache: Path, *, workers: int = 2, scheduler: str | None = None,
              show: bool = True) -> GraphRun:
    """Run every cell's graph on a local cluster of `workers` single-thread processes, or on the
    Dask scheduler at `scheduler`. A failing task fails its cell only; the others finish.
    Raises EngineError when the scheduler cannot be reached."""
    from distributed import as_completed  # lazy: heavy, only for running graphs

    cells = [Cell(c.name, c.cfg, Path(c.out).resolve()) for c in cells]
    t0 = time.time()
    tasks = build_graph(cells, Path(cache).resolve(), t0)
    workers = max(1, min(workers, os.cpu_count() or 1))
    client, cluster = _client(workers, scheduler)
    try:
        n_workers = len(client.nthreads()) if scheduler else workers
        futures = {}
        for key, t in tasks.items():                   # insertion order: dependencies first
            futures[key] = client.submit(t.fn, *t.args, *[futures[d] for d in t.deps], key=key,
                                         priority=PRIORITY[t.kind], pure=False)
        if show:
            kinds = {}
            for t in tasks.values():
                kinds[t.kind] = kinds.get(t.kind, 0) + 1
            print(f"{len(tasks)} tasks ({', '.join(f'{n} {k}' for k, n in kinds.items())}) on {n_workers} "
                  f"worker(s){' at ' + scheduler if scheduler else ''}; a line as each finishes",
                  file=sys.stderr, flush=True)
        records = _follow(tasks, futures, as_completed, show)
        per_seed, errors, tbs, bad_config = {}, {}, {}, set()
        for key, t in tasks.items():
            if t.kind != "finish":
                continue
            name = t.cells[0]
            if futures[key].status == "finished":
                seeds = [futures[k].result()["result"] for k in t.deps]
                per_seed[name] = seeds
            else:
                errors[name], tbs[name], is_config = _cause(tasks, futures, key)
                if is_config:
                    bad_config.add(name)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return GraphRun(per_seed, errors, tbs, records, time.time() - t0, n_workers, frozenset(bad_config))


def _follow(tasks: dict[str, Task], futures: dict, as_completed, show: bool) -> list[dict]:
    """Wait for every task, printing one line per finished task; returns the task records."""
    records, n = [], len(futures)
    for i, fut in enumerate(as_completed(list(futures.values())), 1):
        t = tasks[fut.key]
        rec = {"key": t.key, "kind": t.kind, "seed": t.seed, "cells": list(t.cells), "status": fut.status}
        if fut.status == "finished":
            out = fut.result()
            rec |= out.get("task", out)
        if show:
            where = " ".join(x for x in (f"cell {t.cells[0]}" if t.cells[0] else "",
                                         f"seed {t.seed}" if t.seed is not None else "",
                                         f"ft replicate {t.replicate}" if t.replicate else "") if x)
            what = "FAILED" if fut.status != "finished" else "cached" if rec.get("cached") else f"{rec['wall_s']:.0f} s"
            print(f"[{i}/{n}] {where + ': ' if where else ''}{t.label} ({what})", file=sys.stderr, flush=True)
        records.append(rec)
    return records


def _cause(tasks: dict[str, Task], futures: dict, key: str) -> tuple[str, str, bool]:
    """(one line, traceback, whether it is a ConfigError) of the first failed task upstream of `key`."""
    order = list(tasks)
    seen, stack, failed = set(), [key], []
    while stack:
        k = stack.pop()
        if k in seen:
            continue
        seen.add(k)
        if futures[k].status == "error":
            failed.append(k)
        stack += tasks[k].deps
    first = min(failed, key=order.index) if failed else key
    t, fut = tasks[first], futures[first]
    try:
        exc, tb = fut.exception(), fut.traceback()
    except Exception as e:  # noqa: BLE001 - a cancelled or lost future: report what we have
        exc, tb = e, None
    where = f"seed {t.seed}: " if t.seed is not None else ""
    text = "".join(traceback.format_exception(type(exc), exc, tb)) if tb is not None else repr(exc)
    return f"{where}{t.label}: {type(exc).__name__}: {exc}", text, isinstance(exc, ConfigError)
