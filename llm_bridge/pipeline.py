"""The factuality-gap study on a real causal LM: categorise -> fine-tune -> evaluate.

:func:`run_bridge` takes a local model directory, a dataset (``entityquestions``, ``popqa``,
``mmlu`` or ``synthetic``: a kgsim graph, ``.npz`` from ``KnowledgeGraph.save`` or a TSV) and a
:class:`BridgeConfig`, and writes into ``out_dir``:

=========================  ==================================================================
``run.json``               resolved config, model fingerprint, data, environment (versions, git commit)
``splits.json``            example ids of every set (candidates, FT-Known/Unknown, dev, demos, tests)
``slick.json``             SliCK results of the candidates (cache; chunked, resumable)
``ft-known/``,             ``es/`` and ``con/`` checkpoints (safetensors) and ``finetune.json``
``ft-unknown/``            (dev-accuracy history, ES step, Con. fit)
``edges/``                 one EdgeSet per (model, stage, split, prompt): ``ft-known.es.id.4-shot.json``
``results.json``           the summary below
=========================  ==================================================================

Every stage is cached under a hash of its inputs (:func:`kgsim.core.provenance.content_hash`), so a
killed run resumes where it stopped and a finished one reruns in seconds. The bridge is an adapter:
its sets, SliCK rule, similarity splits, gaps, cache keys and provenance are kgsim's
(:mod:`kgsim.core.known`, :mod:`kgsim.core.selection`, :func:`kgsim.study.results.gap_pairs`,
:mod:`kgsim.core.provenance`); the data loaders are :mod:`llm_bridge.data`.

Sets. FT relations are ``data.ft_relations`` (or ``data.n_ft_relations`` drawn by the seed). From the
train split: per relation a demonstration pool of ``n_demo_pool`` examples (SliCK exemplars and
k-shot demonstrations), then ``n_candidates`` candidates of the FT relations, which SliCK
categorises. FT-Known (category in ``data.known_categories``, by default kgsim's HighlyKnown and
MaybeKnown) and FT-Unknown (Unknown) are balanced as kgsim balances them: the same number per
relation, ``ft_size`` each at most, drawn by the seed. Dev (Early Stop) comes from the dev split of
the FT relations. Test splits: ``id`` (test split, FT relations); the other relations' test
examples split by their largest cosine similarity to FT-Known ∪ FT-Unknown questions in the base
model's representation space into ``sim-near-id`` and ``sim-open-world`` (the paper's Near-ID and
Open-World; named apart from kgsim's structural ``near-id`` / ``open-world``,
:mod:`kgsim.core.names`); ``sim-1`` (most similar) .. ``sim-n``: quantile buckets of all one-hop
test examples by that similarity (as ``kgsim run`` measures). Synthetic data adds ``2hop``
(composed queries) and ``2hop-hops`` (their one-hop facts). Data without its own splits
(PopQA, MMLU, synthetic) is split per relation by the seed (``dev_share``, ``test_share``).

Several processes (``accelerate launch --num_processes N -m kgsim bridge run ...``, one per GPU):
SliCK's chunks (each sampling from its own stream) are dealt round-robin to the ranks and gathered
after every round; fine-tuning runs data-parallel (:mod:`llm_bridge.finetune`); the four
checkpoints' evaluations are dealt round-robin, each rank writing its own edge files; the similarity
split (seconds) runs on the main process. Categories, splits and edge sets equal one process's
(``tests/test_bridge_cli.py``, two CPU processes over gloo).

Prompt format (``data.format``): ``text`` (the Q/A format of :mod:`llm_bridge.prompts`; synthetic
graphs verbalised), or ``kgsim-tokens`` for a model exported by ``kgsim pretrain`` and its world
(``--data synthetic --data-path WORLD_DIR``): kgsim's own token prompts, the first generated token
matched exactly (:mod:`llm_bridge.kgsim_tokens`); each accuracy row then also holds kgsim's own
measurement of the same checkpoint on the same prompts (``kgsim_fact``, ``n_disagree``).

``results.json`` schema (``"schema": "kgsim-bridge/2"``)::

    model_dir, model_key, data, data_path, config, environment (kgsim.core.provenance.environment)
    counts:   {relations_ft: [...], relations_other: [...], candidates, categories: {HighlyKnown: n, ...},
               ft-known, ft-unknown, dev, splits: {split: n}}
    exposure_by_category: {category: {n, mean_exposure}}           (synthetic only: probe vs truth)
    finetune: {ft-known: finetune summary, ft-unknown: ...}        (see llm_bridge.finetune.finetune)
    accuracy: [{model, stage, split, prompt, n, correct, fact, file[, kgsim_fact, n_disagree]}, ...]
    agreement: {rows, n, n_disagree, max_abs_diff}                  (kgsim-tokens only: bridge vs kgsim)
    gap:      [{stage, split, prompt, fact_known, fact_unknown, delta}, ...]   delta = Δ_fact
    timings:  {stage: wall seconds of this invocation (a cached stage takes ~0)}

The configuration is :class:`llm_bridge.config.BridgeConfig` (re-exported here with
:func:`~llm_bridge.config.bridge_config`).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from kgsim.core.config import ConfigError, to_dict
from kgsim.core.edges import EdgeSet
from kgsim.core.known import category_counts
from kgsim.core.names import (
    CATEGORIES,
    COT,
    FT_KNOWN,
    FT_MODELS,
    FT_UNKNOWN,
    ID,
    SIM_NEAR_ID,
    SIM_OPEN_WORLD,
    STAGES,
    TWO_HOP,
    TWO_HOP_HOPS,
    TWO_HOP_PROMPTS,
    sim_bucket_names,
)
from kgsim.core.provenance import content_hash, environment
from kgsim.core.selection import similarity_buckets, split_at_quantile
from kgsim.nn.precision import kernel_record
from kgsim.study.results import gap, gap_pairs

from .config import PRESETS, BridgeConfig, DataConfig, RuntimeConfig, bridge_config
from .data import BridgeError, Selection, balanced_sets, load_data, load_graph, prompt_format, select
from .datasets import QAExample
from .evaluate import edge_filename, evaluate_model, max_similarity, prompt_lengths, save_edgesets
from .finetune import HFFineTuner, load_checkpoint
from .generation import ContextLengthError, model_device
from .kgsim_tokens import kgsim_model
from .known import cached_categories, categorise
from .models import check_model_dir, load_model, load_tokenizer, model_fingerprint, model_revision, resolve_device
from .prompts import TEXT

SCHEMA = "kgsim-bridge/2"
UNTIL = ("categorise", "finetune", "evaluate")


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

def _hash(*parts) -> str:
    return content_hash(parts)


def _ids(examples: Sequence[QAExample]) -> list[str]:
    return [e.id for e in examples]


class _Processes:
    """The processes of a launch (accelerate launch / torchrun; gloo on CPUs, NCCL on GPUs): rank,
    main-process gating, barriers, gathering Python objects, and each rank's own device."""

    def __init__(self):
        self.state = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # accelerate is an optional dependency (the llm extra), needed only under a launcher
            from accelerate import PartialState

            self.state = PartialState()

    @property
    def is_main(self) -> bool:
        return self.state is None or self.state.is_main_process

    @property
    def rank(self) -> int:
        return 0 if self.state is None else self.state.process_index

    @property
    def world_size(self) -> int:
        return 1 if self.state is None else self.state.num_processes

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def gather(self, obj) -> list:
        """`obj` of every rank, in rank order (on every rank)."""
        if self.state is None:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def device(self, configured: str) -> str:
        """Under a launcher on GPUs, this rank's GPU (``cuda:LOCAL_RANK``); else `configured`."""
        if self.state is not None and self.state.device.type == "cuda":
            return str(self.state.device)
        return configured


def provenance(model_dir: Path, runtime: RuntimeConfig) -> dict:
    """:func:`kgsim.core.provenance.environment` (versions, git commit and dirty flag, argv) with the
    date (UTC), the device inference runs on (and the GPU's name and count), the number of
    processes, and the model's hub id and revision when it is a cached snapshot
    (:func:`llm_bridge.models.model_revision`)."""
    import torch

    dev = "auto" if runtime.device_map else resolve_device(runtime.device)
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if dev != "cpu" else []
    return {**environment(), **kernel_record(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": dev, "device_map": runtime.device_map or None, "gpus": gpus,
            "world_size": int(os.environ.get("WORLD_SIZE", "1")), "model": model_revision(model_dir)}


def _write_json(path: Path, obj, procs: _Processes) -> None:
    if procs.is_main:
        path.write_text(json.dumps(obj, indent=1, default=str))


class _Base:
    """The base model, loaded on first use and released on demand."""

    def __init__(self, model_dir, runtime: RuntimeConfig, device: str | None = None):
        self.model_dir, self.runtime, self.pair = model_dir, runtime, None
        self.device = device or runtime.device

    def get(self):
        if self.pair is None:
            self.pair = load_model(self.model_dir, dtype=self.runtime.dtype, device=self.device,
                                   device_map=self.runtime.device_map)
        return self.pair

    def release(self) -> None:
        self.pair = None


def _similarity(sel: Selection, ft_sets: dict, base: _Base, cfg: BridgeConfig, key: str, out: Path,
                procs: _Processes, fmt=TEXT) -> dict[str, list[QAExample]]:
    """Similarity-defined test splits (cached in splits.json under `key`): ``sim-near-id`` /
    ``sim-open-world`` from the other relations' tests, ``sim-1..n`` buckets of all one-hop tests;
    similarity is to FT-Known ∪ FT-Unknown in the base model's representation space."""
    path = out / "splits.json"
    pooled = sel.test_id + sel.test_other
    if procs.is_main:
        cached = json.loads(path.read_text()) if path.is_file() else {}
        if cached.get("similarity_key") != key:
            reference = ft_sets[FT_KNOWN] + ft_sets[FT_UNKNOWN]
            sim = max_similarity(*base.get(), reference, pooled, cfg.eval.batch_size, fmt=fmt)
            near, far = split_at_quantile(sim[len(sel.test_id):], cfg.data.near_quantile)
            parts = {SIM_NEAR_ID: [sel.test_other[i] for i in near[: cfg.data.test_size]],
                     SIM_OPEN_WORLD: [sel.test_other[i] for i in far[: cfg.data.test_size]]}
            if cfg.data.sim_buckets:
                buckets = similarity_buckets(sim, cfg.data.sim_buckets)
                parts |= {name: [pooled[i] for i in b] for name, b in zip(sim_bucket_names(len(buckets)), buckets)}
            cached = {"similarity_key": key, "similarity": {e.id: float(x) for e, x in zip(pooled, sim)},
                      **{k: _ids(v) for k, v in parts.items()}}
            path.write_text(json.dumps(cached, indent=1))
    procs.barrier()
    cached = json.loads(path.read_text())
    by_id = {e.id: e for e in pooled}
    names = [SIM_NEAR_ID, SIM_OPEN_WORLD, *sim_bucket_names(cfg.data.sim_buckets)]
    return {k: [by_id[i] for i in cached[k]] for k in names}


@dataclass
class _Run:
    """What every stage of one run needs."""

    model_dir: Path
    out: Path
    cfg: BridgeConfig
    sel: Selection
    mkey: str
    procs: _Processes
    progress: bool
    bar: object
    fmt: object = TEXT
    timings: dict = field(default_factory=dict)     # {stage: wall seconds} of this invocation
    _current: tuple | None = None

    def stage(self, name: str | None) -> None:
        """Start stage `name` (None: none), closing the running one's timing."""
        now = time.perf_counter()
        if self._current is not None:
            self.timings[self._current[0]] = round(now - self._current[1], 3)
        self._current = (name, now) if name is not None else None
        if name is not None:
            self.bar.set_description(f"bridge: {name}")

    def categorise(self) -> tuple[dict, dict, dict]:
        """SliCK categories (chunks shared among the processes), balanced FT sets, test splits
        (similarity on the main process: seconds)."""
        sel, cfg, out, procs = self.sel, self.cfg, self.out, self.procs
        base = _Base(self.model_dir, cfg.runtime, procs.device(cfg.runtime.device))
        self.stage("categorise")
        kw = dict(seed=cfg.seed, model_key=self.mkey, cache_path=out / "slick.json", fmt=self.fmt)
        slick = cached_categories(sel.candidates, sel.demos, cfg.probe, **kw)
        procs.barrier()                                  # every rank has read the cache before any writes
        if slick is None:
            slick = categorise(*base.get(), sel.candidates, sel.demos, cfg.probe, progress=self.progress,
                               group=procs if procs.world_size > 1 else None, **kw)
        ft_sets = dict(zip(FT_MODELS, balanced_sets(sel.candidates, slick, cfg.data, cfg.seed)))
        self.bar.update()
        self.stage("similarity split")
        sim_key = _hash(self.mkey, _ids(ft_sets[FT_KNOWN]), _ids(ft_sets[FT_UNKNOWN]), _ids(sel.test_id),
                        _ids(sel.test_other), cfg.data.near_quantile, cfg.data.test_size, cfg.data.sim_buckets)
        by_sim = _similarity(sel, ft_sets, base, cfg, sim_key, out, procs, self.fmt)
        base.release()
        tests = {ID: sel.test_id, **by_sim, TWO_HOP: sel.two_hop, TWO_HOP_HOPS: sel.hops}
        tests = {k: v for k, v in tests.items() if v}
        if procs.is_main:
            ids = {"ft_relations": sel.ft_relations, "candidates": _ids(sel.candidates), "dev": _ids(sel.dev),
                   **{m: _ids(x) for m, x in ft_sets.items()}, **{f"test/{k}": _ids(v) for k, v in tests.items()},
                   "demos": {r: _ids(x) for r, x in sel.demos.items()}, "2hop-demos": _ids(sel.two_hop_demos)}
            sp = json.loads((out / "splits.json").read_text())
            (out / "splits.json").write_text(json.dumps({**sp, **ids}, indent=1))
        self.bar.update()
        return slick, ft_sets, tests

    def finetune(self, ft_sets: dict) -> tuple[dict, dict]:
        """FT-Known and FT-Unknown (every process: the Trainer may run data-parallel)."""
        summaries, keys = {}, {}
        for name in FT_MODELS:
            self.stage(f"fine-tune {name}")
            keys[name] = _hash(self.mkey, dataclasses.asdict(self.cfg.finetune), self.cfg.runtime.dtype,
                               self.cfg.seed, _ids(ft_sets[name]), _ids(self.sel.dev))
            summaries[name] = _finetune_cached(self.model_dir, ft_sets[name], self.sel.dev, self.cfg, self.out / name,
                                               keys[name], self.progress, self.procs, self.fmt)
            self.bar.update()
        return summaries, keys

    def evaluate(self, ft_keys: dict, tests: dict) -> dict:
        """Every (model, stage) on every split and prompt; under a launcher the checkpoints are dealt
        round-robin to the processes (each writes its own edge files; the same numbers as one
        process). Returns {edge key: file}."""
        sel, cfg, procs = self.sel, self.cfg, self.procs
        files: dict[tuple, str] = {}
        device = procs.device(cfg.runtime.device)
        for i, (name, stage) in enumerate((n, s) for n in FT_MODELS for s in STAGES):
            self.stage(f"evaluate {name}/{stage}")
            key = _hash(ft_keys[name], stage, dataclasses.asdict(cfg.eval), cfg.runtime.dtype, cfg.seed,
                        {k: _ids(v) for k, v in tests.items()}, {r: _ids(x) for r, x in sel.demos.items()},
                        _ids(sel.two_hop_demos))
            if i % procs.world_size == procs.rank:
                _evaluate_cached(self.out, name, stage, key, tests, sel, cfg, self.progress, self.fmt, device)
            files.update({k: edge_filename(k) for k in _edge_keys(name, stage, tests, cfg)})
            self.bar.update()
        procs.barrier()
        return files


def run_bridge(model_dir: str | Path, data: str, data_path: str | Path, cfg: BridgeConfig | None = None,
               out_dir: str | Path = "bridge-run", *, progress: bool | None = None, until: str = "evaluate") -> dict:
    """Run (or resume) the study; returns the content of ``out_dir/results.json``.

    Args:
        model_dir: a local Hugging Face causal LM directory (see :func:`llm_bridge.models.load_model`).
        data: one of ``entityquestions``, ``popqa``, ``mmlu``, ``synthetic``.
        data_path: the dataset's root directory or file (synthetic: a kgsim world directory, or a
            graph ``.npz``/``.tsv``).
        cfg: the configuration (default: ``BridgeConfig()``). With ``data.format = "kgsim-tokens"``
            the model must be a kgsim export of that world (``kgsim pretrain``'s ``hf/``); every
            accuracy row then also holds kgsim's own measurement of the same checkpoint on the same
            prompts (``kgsim_fact``, ``n_disagree``; summary under ``agreement``).
        out_dir: the run directory (created; a finished or partial run there is resumed).
        progress: show tqdm progress bars (None: when stderr is a terminal).
        until: stop after ``categorise`` or ``finetune`` (the results then hold what exists).

    Raises:
        ConfigError: invalid config or `until`, a kgsim-token prompt longer than the model's context.
        ModelDirError: bad model directory (or not this world's kgsim vocabulary).
        DatasetFileError: bad data files. BridgeError: the data cannot give balanced FT sets.
        ContextLengthError: a prompt plus its generation budget exceeds a GPT-2-layout model's
            positions (evaluation prompts are checked before fine-tuning).
    """
    from tqdm.auto import tqdm

    cfg = cfg or BridgeConfig()
    cfg.validate()
    progress = sys.stderr.isatty() if progress is None else progress
    if until not in UNTIL:
        raise ConfigError(f"until = {until!r}: choose one of {list(UNTIL)}")
    model_dir = check_model_dir(model_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    procs, mkey = _Processes(), model_fingerprint(model_dir)
    fmt = prompt_format(data, data_path, cfg)
    if fmt is not TEXT:
        _check_kgsim_model(model_dir, fmt, cfg)
    splits, info = load_data(data, data_path, cfg, fmt)
    sel = select(splits, cfg)
    _write_json(out / "run.json", {"schema": SCHEMA, "model_dir": str(model_dir), "model_key": mkey, "data": data,
                                   "data_path": str(Path(data_path).resolve()), **info, "config": to_dict(cfg),
                                   "environment": provenance(model_dir, cfg.runtime)}, procs)
    n_steps = 2 + (2 if until != "categorise" else 0) + (4 if until == "evaluate" else 0)
    bar = tqdm(total=n_steps, desc="bridge", disable=not progress or not procs.is_main)
    skey = mkey if fmt is TEXT else _hash(mkey, fmt.name)         # stage cache keys (text keys unchanged)
    run = _Run(model_dir, out, cfg, sel, skey, procs, progress, bar, fmt)
    slick, ft_sets, tests = run.categorise()
    if fmt is TEXT and until != "categorise":
        _check_eval_context(model_dir, tests, sel, cfg)
    ft_summary, ft_keys = run.finetune(ft_sets) if until != "categorise" else ({}, {})
    edge_files = run.evaluate(ft_keys, tests) if until == "evaluate" else {}
    run.stage(None)
    bar.close()
    results = _results(model_dir, mkey, data, data_path, cfg, sel, slick, ft_sets, tests, ft_summary, edge_files, out)
    results["timings"] = run.timings
    _write_json(out / "results.json", results, procs)
    return results


def _check_kgsim_model(model_dir: Path, fmt, cfg: BridgeConfig) -> None:
    """The model reads the world's kgsim tokens and every configured prompt fits its context."""
    mc = json.loads((model_dir / "config.json").read_text())
    n_pos = mc.get("n_positions") or mc.get("max_position_embeddings")
    lengths = fmt.prompt_lengths(cfg.eval.k_shots, cfg.probe.n_shots, cfg.eval.cot_shots if cfg.eval.cot else None)
    fmt.check_model(load_tokenizer(model_dir), n_pos, lengths)


def _check_eval_context(model_dir: Path, tests: dict, sel: Selection, cfg: BridgeConfig) -> None:
    """Every evaluation prompt plus its generation budget fits a model with learned positions
    (``n_positions``), checked before fine-tuning rather than found at the last stage."""
    n_pos = json.loads((model_dir / "config.json").read_text()).get("n_positions")
    if n_pos is None:
        return
    lengths = prompt_lengths(load_tokenizer(model_dir), tests, sel.demos, cfg.eval, two_hop_pool=sel.two_hop_demos,
                             seed=cfg.seed)
    for (split, prompt), n in sorted(lengths.items(), key=lambda kv: -kv[1]):
        new = cfg.eval.cot_max_new_tokens if prompt == COT else cfg.eval.max_new_tokens
        if n + new > n_pos:
            key = "eval.cot_shots, eval.cot_max_new_tokens" if prompt in TWO_HOP_PROMPTS else \
                "eval.k_shots, eval.max_new_tokens"
            raise ContextLengthError(f"{split} / {prompt} prompts: up to {n} tokens + {new} to generate exceed the "
                                     f"model's n_positions = {n_pos}; lower {key}, or use a model with a longer context")


def _finetune_cached(model_dir, train, dev, cfg: BridgeConfig, out: Path, key: str, progress: bool,
                     procs: _Processes, fmt=TEXT) -> dict:
    done = out / "finetune.json"
    if done.is_file() and (out / "es").is_dir() and (out / "con").is_dir():
        summary = json.loads(done.read_text())
        if summary.get("key") == key:
            return summary
    tuner = HFFineTuner(model_dir, cfg.finetune, seed=cfg.seed, dtype=cfg.runtime.dtype, progress=progress, fmt=fmt)
    summary = tuner.fit(train, dev, out).summary
    summary["key"] = key
    _write_json(done, summary, procs)
    procs.barrier()
    return summary


def _edge_keys(name: str, stage: str, tests: dict, cfg: BridgeConfig) -> list[tuple]:
    return [(name, stage, split, p) for split in tests for p in cfg.eval.prompt_names(split)]


def _evaluate_cached(out: Path, name: str, stage: str, key: str, tests: dict, sel: Selection, cfg: BridgeConfig,
                     progress: bool, fmt=TEXT, device: str | None = None) -> dict:
    """Evaluate one checkpoint unless every EdgeSet file already holds `key`; returns {edge key: file}.
    With kgsim tokens, kgsim's own verdicts on the same prompts go to ``meta["kgsim_correct"]``."""
    edir = out / "edges"
    files = {k: edir / edge_filename(k) for k in _edge_keys(name, stage, tests, cfg)}
    if all(f.is_file() and json.loads(f.read_text()).get("meta", {}).get("key") == key for f in files.values()):
        return {k: f.name for k, f in files.items()}
    model, tok = load_checkpoint(out / name / stage, dtype=cfg.runtime.dtype, device=device or cfg.runtime.device,
                                 device_map=cfg.runtime.device_map)
    edges = evaluate_model(model, tok, tests, sel.demos, cfg.eval, model_name=name, stage=stage,
                           two_hop_pool=sel.two_hop_demos, seed=cfg.seed, progress=progress, fmt=fmt)
    if fmt is not TEXT:
        simulator = kgsim_model(model).to(model_device(model))     # on the bridge model's device
        for (_, _, split, prompt), es in edges.items():
            es.meta["kgsim_correct"] = fmt.simulate(simulator, prompt, tests[split], es.meta["demos"]).tolist()
    for es in edges.values():
        es.meta["key"] = key
    save_edgesets(edges, edir)
    return {k: f.name for k, f in files.items()}


def _results(model_dir, mkey, data, data_path, cfg, sel, slick, ft_sets, tests, ft_summary, edge_files: dict,
             out: Path) -> dict:

    counts = {"relations_ft": sel.ft_relations, "relations_other": sel.other_relations,
              "candidates": len(sel.candidates), "categories": category_counts(r.category for r in slick.values()),
              **{m: len(x) for m, x in ft_sets.items()}, "dev": len(sel.dev),
              "splits": {k: len(v) for k, v in tests.items()}}
    res = {"schema": SCHEMA, "model_dir": str(model_dir), "model_key": mkey, "data": data,
           "data_path": str(Path(data_path).resolve()), "config": to_dict(cfg),
           "environment": provenance(model_dir, cfg.runtime),
           "counts": counts, "finetune": ft_summary, "accuracy": [], "gap": []}
    if data == "synthetic":
        exp = {c: [e.exposure for e in sel.candidates if slick[e.id].category == c] for c in CATEGORIES}
        res["exposure_by_category"] = {c: {"n": len(v), "mean_exposure": float(np.mean(v)) if v else None}
                                       for c, v in exp.items()}
    edge_sets = []
    for (m, st, split, p), fname in sorted(edge_files.items()):
        es = EdgeSet.load(out / "edges" / fname)
        edge_sets.append(es)
        row = {"model": m, "stage": st, "split": split, "prompt": p, "n": es.n, "correct": es.size,
               "fact": es.fact(), "file": f"edges/{fname}"}
        if "kgsim_correct" in es.meta:                  # kgsim's measurement of the same checkpoint and prompts
            sim = np.array(es.meta["kgsim_correct"], bool)
            row |= {"kgsim_fact": float(sim.mean()) if len(sim) else 0.0, "n_disagree": int((sim != es.correct).sum())}
        res["accuracy"].append(row)
    sims = [r for r in res["accuracy"] if "kgsim_fact" in r]
    if sims:
        res["agreement"] = {"rows": len(sims), "n": sum(r["n"] for r in sims),
                            "n_disagree": sum(r["n_disagree"] for r in sims),
                            "max_abs_diff": max(abs(r["fact"] - r["kgsim_fact"]) for r in sims)}
    pairs = gap_pairs(edge_sets)                       # kgsim's gap, on the same pairs
    res["gap"] = [{"stage": st, "split": split, "prompt": p, "fact_known": kn.fact(), "fact_unknown": unk.fact(),
                   "delta": gap(kn, unk)} for (st, split, p), (kn, unk) in sorted(pairs.items())]
    return res


__all__ = ["PRESETS", "SCHEMA", "BridgeConfig", "BridgeError", "DataConfig", "RuntimeConfig", "Selection",
           "balanced_sets", "bridge_config", "load_data", "load_graph", "prompt_format", "run_bridge", "select"]
