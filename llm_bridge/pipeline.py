"""The factuality-gap study on a real causal LM: categorise -> fine-tune -> evaluate.

:func:`run_bridge` takes a local model directory, a dataset (``entityquestions``, ``popqa``,
``mmlu`` or ``synthetic``: a kgsim graph, ``.npz`` from ``KnowledgeGraph.save`` or a TSV) and a
:class:`BridgeConfig`, and writes into ``out_dir``:

=========================  ==================================================================
``run.json``               resolved config, model fingerprint, data, library versions, git commit
``splits.json``            example ids of every set (candidates, FT-Known/Unknown, dev, demos, tests)
``slick.json``             SliCK results of the candidates (cache; chunked, resumable)
``ft-known/``,             ``es/`` and ``con/`` checkpoints (safetensors) and ``finetune.json``
``ft-unknown/``            (dev-accuracy history, ES step, Con. fit)
``edges/``                 one EdgeSet per (model, stage, split, prompt): ``ft-known.es.id.4-shot.json``
``results.json``           the summary below
=========================  ==================================================================

Every stage is cached under a hash of its inputs, so a killed run resumes where it stopped and a
finished one reruns in seconds.

Sets. FT relations are ``data.ft_relations`` (or ``data.n_ft_relations`` drawn by the seed). From the
train split: per relation a demonstration pool of ``n_demo_pool`` examples (SliCK exemplars and
k-shot demonstrations), then ``n_candidates`` candidates of the FT relations, which SliCK
categorises. FT-Known (category in ``data.known_categories``) and FT-Unknown (Unknown) are balanced:
the same number per relation, ``ft_size`` each at most. Dev (Early Stop) comes from the dev split of
the FT relations. Test splits: ``id`` (test split, FT relations); the other relations' test
examples split by their largest cosine similarity to FT-Known ∪ FT-Unknown questions in the base
model's representation space into ``near-id`` and ``open-world`` (the paper's definition,
:func:`llm_bridge.evaluate.split_by_similarity`); ``sim-1`` (most similar) .. ``sim-n``: quantile
buckets of all one-hop test examples by that similarity (as ``kgsim run`` measures). Synthetic data
adds ``2hop`` (composed queries) and ``2hop-hops`` (their one-hop facts). Data without its own splits
(PopQA, MMLU, synthetic) is split per relation by the seed (``dev_share``, ``test_share``).

Prompt format (``data.format``): ``text`` (the Q/A format of :mod:`llm_bridge.prompts`; synthetic
graphs verbalised), or ``kgsim-tokens`` for a model exported by ``kgsim pretrain`` and its world
(``--data synthetic --data-path WORLD_DIR``): kgsim's own token prompts, the first generated token
matched exactly (:mod:`llm_bridge.kgsim_tokens`); each accuracy row then also holds kgsim's own
measurement of the same checkpoint on the same prompts (``kgsim_fact``, ``n_disagree``).

``results.json`` schema (``"schema": "kgsim-bridge/1"``)::

    model_dir, model_key, data, data_path, config, versions, git_commit
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
import hashlib
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from kgsim.core.config import ConfigError, to_dict
from kgsim.core.edges import EdgeSet
from kgsim.core.kg import KnowledgeGraph
from kgsim.core.rng import stream
from kgsim.world.graph import load_tsv

from .config import PRESETS, BridgeConfig, DataConfig, RuntimeConfig, bridge_config
from .datasets import (
    DATASETS,
    QAExample,
    by_relation,
    load_entityquestions,
    load_mmlu,
    load_popqa,
    synthetic_examples,
    two_hop_examples,
)
from .evaluate import (
    HOPS_SPLIT,
    MODELS,
    STAGES,
    TWO_HOP_SPLIT,
    edge_filename,
    evaluate_model,
    max_similarity,
    prompt_lengths,
    save_edgesets,
    similarity_buckets,
    split_by_similarity,
)
from .finetune import finetune, load_checkpoint
from .generation import ContextLengthError, model_device
from .kgsim_tokens import KgsimTokens, kgsim_model
from .known import CATEGORIES, cached_categories, categorise, category_counts
from .models import check_model_dir, load_model, load_tokenizer, model_fingerprint
from .prompts import TEXT
from .verbalize import TEMPLATE_VERSION, Verbalizer

SCHEMA = "kgsim-bridge/1"
UNTIL = ("categorise", "finetune", "evaluate")


class BridgeError(ValueError):
    """The data cannot support the study as configured (e.g. no Known or no Unknown examples)."""


# --------------------------------------------------------------------------------------------
# Data: load, split, select
# --------------------------------------------------------------------------------------------

@dataclass
class Selection:
    """Every set of examples the study uses (lists keep a fixed, seeded order)."""

    ft_relations: list[str]
    other_relations: list[str]
    demos: dict[str, list[QAExample]]
    candidates: list[QAExample]
    dev: list[QAExample]
    test_id: list[QAExample]
    test_other: list[QAExample]
    two_hop: list[QAExample] = field(default_factory=list)
    two_hop_demos: list[QAExample] = field(default_factory=list)
    hops: list[QAExample] = field(default_factory=list)
    facts: list[QAExample] = field(default_factory=list)


def _shuffled(xs: list, rng: np.random.Generator) -> list:
    return [xs[i] for i in rng.permutation(len(xs))]


def _partition(examples: list[QAExample], dcfg: DataConfig, seed: int) -> dict[str, list[QAExample]]:
    """Split data without its own splits into train/dev/test, per relation, by the seed."""
    out: dict[str, list[QAExample]] = {"train": [], "dev": [], "test": []}
    for rel, exs in by_relation(examples).items():
        exs = _shuffled(exs, stream(seed, f"bridge-partition/{rel}"))
        n_test, n_dev = int(round(len(exs) * dcfg.test_share)), int(round(len(exs) * dcfg.dev_share))
        out["test"] += exs[:n_test]
        out["dev"] += exs[n_test:n_test + n_dev]
        out["train"] += exs[n_test + n_dev:]
    return out


def load_graph(path: str | Path):
    """A kgsim graph from ``.npz`` (KnowledgeGraph.save), ``.tsv``, or a directory holding graph.npz."""

    p = Path(path)
    if p.is_dir():
        p = p / "graph.npz"
    if not p.is_file():
        raise BridgeError(f"data_path = {str(path)!r}: no graph file (.npz, .tsv, or a directory with graph.npz)")
    return load_tsv(p) if p.suffix == ".tsv" else KnowledgeGraph.load(p)


def prompt_format(data: str, data_path: str | Path, cfg: BridgeConfig):
    """The run's prompt format (:mod:`llm_bridge.prompts`): the text Q/A format, or with
    ``data.format = "kgsim-tokens"`` kgsim's own token prompts for the world at `data_path`
    (:class:`llm_bridge.kgsim_tokens.KgsimTokens`).

    Raises:
        BridgeError: kgsim tokens asked for data that is not a kgsim graph.
    """
    if cfg.data.format == "text":
        return TEXT
    if data != "synthetic":
        raise BridgeError(f"data.format = {cfg.data.format!r} needs data = 'synthetic' (a kgsim world or graph), "
                          f"not {data!r}")
    return KgsimTokens.from_path(load_graph(data_path), data_path)


def load_data(data: str, data_path: str | Path, cfg: BridgeConfig,
              fmt=None) -> tuple[dict[str, list[QAExample]], dict]:
    """``({"train", "dev", "test"[, "2hop", "facts"]}: examples, info)`` for a dataset name
    (synthetic: in the prompt format `fmt`, default :func:`prompt_format`).

    Raises:
        BridgeError: unknown dataset name. DatasetFileError: missing or malformed files.
    """
    d = cfg.data
    fmt = fmt or prompt_format(data, data_path, cfg)
    if fmt is not TEXT:
        facts = fmt.examples()
        parts = _partition(facts, d, cfg.seed)
        return {**parts, "2hop": fmt.two_hop_examples(), "facts": facts}, {"format": fmt.name,
                                                                         "vocab": fmt.vocab.to_json()}
    if data == "entityquestions":
        n = d.max_per_relation or None
        return {s: load_entityquestions(data_path, s, max_per_relation=n) for s in ("train", "dev", "test")}, {}
    if data == "popqa":
        return _partition(load_popqa(data_path), d, cfg.seed), {}
    if data == "mmlu":
        return _partition(load_mmlu(data_path), d, cfg.seed), {}
    if data == "synthetic":
        kg = load_graph(data_path)
        vb = Verbalizer.from_graph(kg, stream(cfg.seed, "bridge-names"))
        facts = synthetic_examples(kg, vb, d.question_form)
        parts = _partition(facts, d, cfg.seed)
        return {**parts, "2hop": two_hop_examples(kg, vb), "facts": facts}, {"template_version": TEMPLATE_VERSION}
    raise BridgeError(f"data = {data!r}: choose one of {list(DATASETS)}")


def _round_robin(groups: dict[str, list[QAExample]], n: int) -> list[QAExample]:
    """Up to n examples taking one per relation in turn (balanced across relations)."""
    out, k = [], 0
    while len(out) < n and any(k < len(g) for g in groups.values()):
        out += [g[k] for g in groups.values() if k < len(g)][: n - len(out)]
        k += 1
    return out


def select(splits: dict[str, list[QAExample]], cfg: BridgeConfig) -> Selection:
    """Choose FT relations, demonstration pools, candidates, dev and test sets (seeded)."""
    d, seed = cfg.data, cfg.seed
    train = {r: _shuffled(x, stream(seed, f"bridge-train/{r}")) for r, x in by_relation(splits["train"]).items()}
    rels = sorted(train)
    if d.ft_relations:
        missing = [r for r in d.ft_relations if r not in train]
        if missing:
            raise BridgeError(f"data.ft_relations: {missing} not in the training data (relations: {rels})")
        ft = list(d.ft_relations)
    else:
        if d.n_ft_relations > len(rels):
            raise BridgeError(f"data.n_ft_relations = {d.n_ft_relations}: the data has {len(rels)} relations")
        ft = sorted(rels[i] for i in stream(seed, "bridge-ft-relations").choice(len(rels), d.n_ft_relations, replace=False))
    other = [r for r in rels if r not in ft]
    demos = {r: x[: d.n_demo_pool] for r, x in train.items()}
    per_rel = max(d.n_candidates // len(ft), 1)
    candidates = [e for r in ft for e in train[r][d.n_demo_pool:d.n_demo_pool + per_rel]]

    def pick(split: str, relations: list[str], n: int, name: str) -> list[QAExample]:
        groups = by_relation([e for e in splits[split] if e.relation in set(relations)])
        return _round_robin({r: _shuffled(groups.get(r, []), stream(seed, f"bridge-{name}/{r}")) for r in relations}, n)

    sel = Selection(ft, other, demos, candidates, pick("dev", ft, d.dev_size, "dev"),
                    pick("test", ft, d.test_size, "test"), pick("test", other, 2 * d.test_size, "test-other"))
    if splits.get("2hop"):
        two = _shuffled(splits["2hop"], stream(seed, "bridge-2hop"))
        if d.format == "kgsim-tokens":      # demonstrations of the query's own r1∘r2 (kgsim.world.prompts.two_hop_demos)
            groups = {r: g for r, g in by_relation(two).items() if len(g) > cfg.eval.cot_shots}
            sel.two_hop_demos = [e for g in groups.values() for e in g[: d.n_demo_pool]]
            sel.two_hop = _round_robin({r: g[d.n_demo_pool:] for r, g in groups.items()}, d.two_hop_size)
        else:
            sel.two_hop_demos, sel.two_hop = two[: d.n_demo_pool], two[d.n_demo_pool:d.n_demo_pool + d.two_hop_size]
        fact_by_id = {e.fact_id: e for e in splits["facts"]}
        hop_ids = sorted({f for e in sel.two_hop for f in e.path})
        sel.hops, sel.facts = [fact_by_id[f] for f in hop_ids], splits["facts"]
    return sel


def balanced_sets(candidates: Sequence[QAExample], slick: dict, d: DataConfig) -> tuple[list[QAExample], list[QAExample]]:
    """FT-Known and FT-Unknown: equal counts per relation, ``ft_size`` each at most.

    Raises:
        BridgeError: no relation has both Known and Unknown candidates.
    """
    known = by_relation([e for e in candidates if slick[e.id].category in d.known_categories])
    unknown = by_relation([e for e in candidates if slick[e.id].category == "Unknown"])
    pairs = {r: min(len(known.get(r, [])), len(unknown.get(r, []))) for r in sorted({e.relation for e in candidates})}
    if not any(pairs.values()):
        raise BridgeError(f"no balanced fine-tuning sets: {sum(map(len, known.values()))} Known and "
                          f"{sum(map(len, unknown.values()))} Unknown candidates, never in the same relation; "
                          "raise data.n_candidates or change data.known_categories")
    kn = _round_robin({r: known[r][:m] for r, m in pairs.items() if m}, d.ft_size)
    counts = {r: sum(e.relation == r for e in kn) for r in pairs}
    unk = [e for r in pairs for e in unknown.get(r, [])[: counts[r]]]
    return kn, unk


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

def _hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _ids(examples: Sequence[QAExample]) -> list[str]:
    return [e.id for e in examples]


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "accelerate", "numpy", "kgsim"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class _Processes:
    """Main-process gating when launched with several processes (accelerate launch / torchrun)."""

    def __init__(self):
        self.state = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState

            self.state = PartialState()

    @property
    def is_main(self) -> bool:
        return self.state is None or self.state.is_main_process

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def _write_json(path: Path, obj, procs: _Processes) -> None:
    if procs.is_main:
        path.write_text(json.dumps(obj, indent=1, default=str))


class _Base:
    """The base model, loaded on first use and released on demand."""

    def __init__(self, model_dir, runtime: RuntimeConfig):
        self.model_dir, self.runtime, self.pair = model_dir, runtime, None

    def get(self):
        if self.pair is None:
            self.pair = load_model(self.model_dir, dtype=self.runtime.dtype, device=self.runtime.device)
        return self.pair

    def release(self) -> None:
        self.pair = None


def _similarity(sel: Selection, ft_sets: dict, base: _Base, cfg: BridgeConfig, key: str, out: Path,
                procs: _Processes, fmt=TEXT) -> dict[str, list[QAExample]]:
    """Similarity-defined test splits (cached in splits.json under `key`): ``near-id`` /
    ``open-world`` from the other relations' tests, ``sim-1..n`` buckets of all one-hop tests;
    similarity is to FT-Known ∪ FT-Unknown in the base model's representation space."""
    path = out / "splits.json"
    pooled = sel.test_id + sel.test_other
    if procs.is_main:
        cached = json.loads(path.read_text()) if path.is_file() else {}
        if cached.get("similarity_key") != key:
            reference = ft_sets["ft-known"] + ft_sets["ft-unknown"]
            sim = max_similarity(*base.get(), reference, pooled, cfg.eval.batch_size, fmt=fmt)
            near, far = split_by_similarity(sel.test_other, sim[len(sel.test_id):], cfg.data.near_quantile)
            parts = {"near-id": near[: cfg.data.test_size], "open-world": far[: cfg.data.test_size]}
            if cfg.data.sim_buckets:
                parts |= similarity_buckets(pooled, sim, cfg.data.sim_buckets)
            cached = {"similarity_key": key, "similarity": {e.id: float(x) for e, x in zip(pooled, sim)},
                      **{k: _ids(v) for k, v in parts.items()}}
            path.write_text(json.dumps(cached, indent=1))
    procs.barrier()
    cached = json.loads(path.read_text())
    by_id = {e.id: e for e in pooled}
    names = ["near-id", "open-world"] + [f"sim-{i + 1}" for i in range(cfg.data.sim_buckets)]
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
        """SliCK categories (main process; the others read the cache), balanced FT sets, test splits."""
        sel, cfg, out, procs = self.sel, self.cfg, self.out, self.procs
        base = _Base(self.model_dir, cfg.runtime)
        self.stage("categorise")
        kw = dict(seed=cfg.seed, model_key=self.mkey, cache_path=out / "slick.json", fmt=self.fmt)
        slick = cached_categories(sel.candidates, sel.demos, cfg.probe, **kw)
        if slick is None and procs.is_main:
            slick = categorise(*base.get(), sel.candidates, sel.demos, cfg.probe, progress=self.progress, **kw)
        procs.barrier()
        slick = slick or cached_categories(sel.candidates, sel.demos, cfg.probe, **kw)
        ft_sets = dict(zip(MODELS, balanced_sets(sel.candidates, slick, cfg.data)))
        self.bar.update()
        self.stage("similarity split")
        sim_key = _hash(self.mkey, _ids(ft_sets["ft-known"]), _ids(ft_sets["ft-unknown"]), _ids(sel.test_id),
                        _ids(sel.test_other), cfg.data.near_quantile, cfg.data.test_size, cfg.data.sim_buckets)
        by_sim = _similarity(sel, ft_sets, base, cfg, sim_key, out, procs, self.fmt)
        base.release()
        tests = {"id": sel.test_id, **by_sim, TWO_HOP_SPLIT: sel.two_hop, HOPS_SPLIT: sel.hops}
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
        for name in MODELS:
            self.stage(f"fine-tune {name}")
            keys[name] = _hash(self.mkey, dataclasses.asdict(self.cfg.finetune), self.cfg.runtime.dtype,
                               self.cfg.seed, _ids(ft_sets[name]), _ids(self.sel.dev))
            summaries[name] = _finetune_cached(self.model_dir, ft_sets[name], self.sel.dev, self.cfg, self.out / name,
                                               keys[name], self.progress, self.procs, self.fmt)
            self.bar.update()
        return summaries, keys

    def evaluate(self, ft_keys: dict, tests: dict) -> dict:
        """Every (model, stage) on every split and prompt (main process); returns {edge key: file}."""
        sel, cfg = self.sel, self.cfg
        files: dict[tuple, str] = {}
        for name in MODELS:
            for stage in STAGES:
                self.stage(f"evaluate {name}/{stage}")
                key = _hash(ft_keys[name], stage, dataclasses.asdict(cfg.eval), cfg.runtime.dtype, cfg.seed,
                            {k: _ids(v) for k, v in tests.items()}, {r: _ids(x) for r, x in sel.demos.items()},
                            _ids(sel.two_hop_demos))
                if self.procs.is_main:
                    files.update(_evaluate_cached(self.out, name, stage, key, tests, sel, cfg, self.progress,
                                                  self.fmt))
                self.bar.update()
        self.procs.barrier()
        return files


def run_bridge(model_dir: str | Path, data: str, data_path: str | Path, cfg: BridgeConfig | None = None,
               out_dir: str | Path = "bridge-run", *, progress: bool = True, until: str = "evaluate") -> dict:
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
        progress: show tqdm progress bars.
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
                                   "versions": _versions(), "git_commit": _git_commit()}, procs)
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
        new = cfg.eval.cot_max_new_tokens if prompt == "cot" else cfg.eval.max_new_tokens
        if n + new > n_pos:
            key = "eval.cot_shots, eval.cot_max_new_tokens" if prompt in ("cot", "direct-2hop") else \
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
    summary = finetune(model_dir, train, dev, cfg.finetune, out, seed=cfg.seed, dtype=cfg.runtime.dtype,
                       progress=progress, fmt=fmt)
    summary["key"] = key
    _write_json(done, summary, procs)
    procs.barrier()
    return summary


def _evaluate_cached(out: Path, name: str, stage: str, key: str, tests: dict, sel: Selection, cfg: BridgeConfig,
                     progress: bool, fmt=TEXT) -> dict:
    """Evaluate one checkpoint unless every EdgeSet file already holds `key`; returns {edge key: file}.
    With kgsim tokens, kgsim's own verdicts on the same prompts go to ``meta["kgsim_correct"]``."""
    edir = out / "edges"
    wanted = [(name, stage, split, p) for split in tests for p in cfg.eval.prompt_names(split)]
    files = {k: edir / edge_filename(k) for k in wanted}
    if all(f.is_file() and json.loads(f.read_text()).get("meta", {}).get("key") == key for f in files.values()):
        return {k: f.name for k, f in files.items()}
    model, tok = load_checkpoint(out / name / stage, dtype=cfg.runtime.dtype, device=cfg.runtime.device)
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
              "candidates": len(sel.candidates), "categories": category_counts(slick),
              **{m: len(x) for m, x in ft_sets.items()}, "dev": len(sel.dev),
              "splits": {k: len(v) for k, v in tests.items()}}
    res = {"schema": SCHEMA, "model_dir": str(model_dir), "model_key": mkey, "data": data,
           "data_path": str(Path(data_path).resolve()), "config": to_dict(cfg), "versions": _versions(),
           "git_commit": _git_commit(), "counts": counts, "finetune": ft_summary, "accuracy": [], "gap": []}
    if data == "synthetic":
        exp = {c: [e.exposure for e in sel.candidates if slick[e.id].category == c] for c in CATEGORIES}
        res["exposure_by_category"] = {c: {"n": len(v), "mean_exposure": float(np.mean(v)) if v else None}
                                       for c, v in exp.items()}
    facts: dict[tuple, float] = {}
    for (m, st, split, p), fname in sorted(edge_files.items()):
        es = EdgeSet.load(out / "edges" / fname)
        facts[(m, st, split, p)] = es.fact()
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
    for (m, st, split, p), fk in sorted(facts.items()):
        if m == "ft-known" and ("ft-unknown", st, split, p) in facts:
            fu = facts[("ft-unknown", st, split, p)]
            res["gap"].append({"stage": st, "split": split, "prompt": p, "fact_known": fk, "fact_unknown": fu,
                               "delta": fk - fu})
    return res


__all__ = ["PRESETS", "SCHEMA", "BridgeConfig", "BridgeError", "DataConfig", "RuntimeConfig", "Selection",
           "balanced_sets", "bridge_config", "load_data", "load_graph", "prompt_format", "run_bridge", "select"]
