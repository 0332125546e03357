"""Accessible edges of a fine-tuned model under each test-time prompt, as kgsim EdgeSets.

For a model (``"ft-known"`` or ``"ft-unknown"``) at a stage (``"es"`` or ``"con"``), every test
split is answered under every prompt (:mod:`llm_bridge.prompts`), with batched greedy decoding,
and scored with :func:`llm_bridge.matching.is_correct`. The result is one
:class:`kgsim.edges.EdgeSet` per key ``(model, stage, split, prompt)``, the keys ``kgsim run``
uses, so the proofs checks and the report read bridge results unchanged:

- one-hop splits (``"id"``, ``"near-id"``, ``"open-world"``, ``"sim-1"``, ...): prompts ``"zero-shot"`` and
  ``f"{k}-shot"`` for each k; a k-shot prompt's demonstrations (same relation, drawn from the
  demonstration pool by ``kgsim.rng.stream(seed, f"demos/{split}/{k}")``, so both models see the
  very same prompts) are its induced edge set, stored per test item in ``meta["induced"]``;
- ``"2hop"`` (synthetic graphs with composed relations): ``"cot"`` (demonstrations whose answers
  spell out the path through the bridge entity) and ``"direct-2hop"`` (the same demonstrations
  answered directly); ``meta["path"]`` holds each query's own two hop fact ids (the path a correct
  chain of thought spells out), ``meta["bridge_named"]`` whether each generation named the bridge
  entity and ``meta["bridge_correct"]`` the share that did;
- ``"2hop-hops"``: the one-hop facts on those paths, zero-shot (for the path-connectivity check).

An EdgeSet's ``test_ids`` are the examples' ``fact_id`` values; ``model`` is ``"ft-known/es"``
style, ``test_set`` the split, ``prompt`` the prompt name, and ``meta`` also holds the raw
``predictions``.

>>> edge_key("ft-known", "es", "id", "4-shot")
('ft-known', 'es', 'id', '4-shot')
>>> edge_filename(("ft-known", "es", "id", "4-shot"))
'ft-known.es.id.4-shot.json'
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from kgsim.config import ConfigError
from kgsim.edges import EdgeSet
from kgsim.rng import stream

from . import prompts
from .datasets import QAExample
from .generation import embed, generate
from .matching import MATCH_MODES, contains_answer, is_correct
from .verbalize import cot_final_answer

MODELS = ("ft-known", "ft-unknown")
STAGES = ("es", "con")
TWO_HOP_SPLIT, HOPS_SPLIT = "2hop", "2hop-hops"

EdgeKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class EvalConfig:
    """Test-time prompts and decoding."""

    k_shots: tuple[int, ...] = (1, 4)
    cot: bool = True                    # cot and direct-2hop on the 2hop split (synthetic data)
    cot_shots: int = 2
    batch_size: int = 32
    max_new_tokens: int = 16
    cot_max_new_tokens: int = 64
    match: str = "em"

    def validate(self, p: str = "eval") -> None:
        for i, k in enumerate(self.k_shots):
            if k < 1:
                raise ConfigError(f"{p}.k_shots[{i}] = {k!r}: must be >= 1")
        if len(set(self.k_shots)) != len(self.k_shots):
            raise ConfigError(f"{p}.k_shots = {list(self.k_shots)!r}: repeated values")
        for key in ("cot_shots", "batch_size", "max_new_tokens", "cot_max_new_tokens"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{p}.{key} = {getattr(self, key)!r}: must be >= 1")
        if self.match not in MATCH_MODES:
            raise ConfigError(f"{p}.match = {self.match!r}: choose one of {list(MATCH_MODES)}")

    def prompt_names(self, split: str) -> list[str]:
        """The prompts evaluated on `split`."""
        if split == TWO_HOP_SPLIT:
            return ["cot", "direct-2hop"] if self.cot else []
        if split == HOPS_SPLIT:
            return ["zero-shot"]
        return ["zero-shot", *(f"{k}-shot" for k in self.k_shots)]


def edge_key(model: str, stage: str, split: str, prompt: str) -> EdgeKey:
    """The (model, stage, split, prompt) key; model and stage are checked."""
    if model not in MODELS or stage not in STAGES:
        raise ValueError(f"model {model!r} / stage {stage!r}: models are {MODELS}, stages {STAGES}")
    return (model, stage, split, prompt)


def edge_filename(key: EdgeKey) -> str:
    return ".".join(key) + ".json"


def draw_demos(examples: Sequence[QAExample], pool: Mapping[str, Sequence[QAExample]], k: int,
               rng: np.random.Generator, any_relation: bool = False) -> list[list[QAExample]]:
    """For each example, k demonstrations of its relation from `pool` (never the example itself);
    with `any_relation`, from the whole pool (2-hop demonstrations).

    Raises:
        ValueError: a relation's pool is too small for k demonstrations.
    """
    flat = [d for ds in pool.values() for d in ds] if any_relation else None
    out = []
    for e in examples:
        cands = [d for d in (flat if any_relation else pool.get(e.relation, ())) if d.id != e.id]
        if len(cands) < k:
            raise ValueError(f"relation {e.relation!r}: {len(cands)} demonstrations for a {k}-shot prompt")
        out.append([cands[i] for i in rng.choice(len(cands), k, replace=False)])
    return out


def build_prompts(split: str, prompt: str, examples: Sequence[QAExample], pool: Mapping[str, Sequence[QAExample]],
                  cfg: EvalConfig, seed: int) -> tuple[list[str], list[list[int]]]:
    """The prompt texts of one (split, prompt) and each prompt's induced edges (demo fact ids)."""
    if prompt == "zero-shot":
        return [prompts.zero_shot(e.question) for e in examples], [[] for _ in examples]
    if prompt in ("cot", "direct-2hop"):
        demos = draw_demos(examples, pool, cfg.cot_shots, stream(seed, f"demos/{split}/cot"), any_relation=True)
        fmt = prompts.cot if prompt == "cot" else prompts.direct_two_hop
        induced = [[p for d in ds for p in (d.path if prompt == "cot" else (d.fact_id,))] for ds in demos]
        return [fmt(e.question, ds) for e, ds in zip(examples, demos)], induced
    if not prompt.endswith("-shot"):
        raise ValueError(f"unknown prompt {prompt!r}")
    k = int(prompt[: -len("-shot")])
    demos = draw_demos(examples, pool, k, stream(seed, f"demos/{split}/{k}"))
    return [prompts.few_shot(e.question, ds) for e, ds in zip(examples, demos)], [[d.fact_id for d in ds] for ds in demos]


def evaluate_prompt(model, tokenizer, examples: Sequence[QAExample], split: str, prompt: str,
                    pool: Mapping[str, Sequence[QAExample]], cfg: EvalConfig, *, model_name: str, stage: str,
                    seed: int = 0, progress: bool = False) -> EdgeSet:
    """The EdgeSet of one (model, stage, split, prompt)."""
    key = edge_key(model_name, stage, split, prompt)
    texts, induced = build_prompts(split, prompt, examples, pool, cfg, seed)
    cot = prompt == "cot"
    outs = generate(model, tokenizer, texts, max_new_tokens=cfg.cot_max_new_tokens if cot else cfg.max_new_tokens,
                    batch_size=cfg.batch_size, progress=progress, desc="/".join(key))
    answers = [cot_final_answer(o) if cot else o for o in outs]
    correct = np.array([is_correct(a, e.answers, cfg.match, choices=e.choices) for a, e in zip(answers, examples)], bool)
    meta = {"model": model_name, "stage": stage, "predictions": outs, "induced": induced}
    if split == TWO_HOP_SPLIT:
        meta["path"] = [list(e.path) for e in examples]
        named = [bool(e.bridge) and contains_answer(o, [e.bridge]) for o, e in zip(outs, examples)]
        meta["bridge_named"], meta["bridge_correct"] = named, float(np.mean(named)) if named else 0.0
    return EdgeSet(np.array([e.fact_id for e in examples], np.int64), correct, model=f"{model_name}/{stage}",
                   prompt=prompt, test_set=split, meta=meta)


def evaluate_model(model, tokenizer, splits: Mapping[str, Sequence[QAExample]], pool: Mapping[str, Sequence[QAExample]],
                   cfg: EvalConfig, *, model_name: str, stage: str, two_hop_pool: Sequence[QAExample] = (),
                   seed: int = 0, progress: bool = False) -> dict[EdgeKey, EdgeSet]:
    """Every (split, prompt) EdgeSet of one model at one stage. `pool` holds the one-hop
    demonstrations by relation; `two_hop_pool` the 2-hop demonstrations (with rationales)."""
    cfg.validate()
    out = {}
    for split, examples in splits.items():
        if not examples:
            continue
        for prompt in cfg.prompt_names(split):
            p = {"*": list(two_hop_pool)} if split == TWO_HOP_SPLIT else pool
            out[edge_key(model_name, stage, split, prompt)] = evaluate_prompt(
                model, tokenizer, examples, split, prompt, p, cfg, model_name=model_name, stage=stage, seed=seed,
                progress=progress)
    return out


def save_edgesets(edges: Mapping[EdgeKey, EdgeSet], out_dir: str | Path) -> list[str]:
    """Write each EdgeSet to ``out_dir/<model>.<stage>.<split>.<prompt>.json``; returns the names."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    for key, es in edges.items():
        es.save(d / edge_filename(key))
    return [edge_filename(k) for k in edges]


def load_edgesets(out_dir: str | Path) -> dict[EdgeKey, EdgeSet]:
    """Every EdgeSet under `out_dir` (a run's ``edges/`` folder), by (model, stage, split, prompt)."""
    out = {}
    for p in sorted(Path(out_dir).glob("*.json")):
        es = EdgeSet.load(p)
        out[(es.meta["model"], es.meta["stage"], es.test_set, es.prompt)] = es
    return out


def max_similarity(model, tokenizer, reference: Sequence[QAExample], candidates: Sequence[QAExample],
                   batch_size: int = 32) -> np.ndarray:
    """float [n_candidates]: each candidate question's largest cosine similarity to the `reference`
    (fine-tuning) questions in the model's own representation space (zero-shot prompts, mean-pooled
    last hidden layer, :func:`llm_bridge.generation.embed`)."""
    if not candidates or not reference:
        return np.zeros(len(candidates))
    ref = embed(model, tokenizer, [prompts.zero_shot(e.question) for e in reference], batch_size)
    cand = embed(model, tokenizer, [prompts.zero_shot(e.question) for e in candidates], batch_size)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True).clip(1e-12)
    cand /= np.linalg.norm(cand, axis=1, keepdims=True).clip(1e-12)
    return (cand @ ref.T).max(axis=1)


def split_by_similarity(candidates: Sequence[QAExample], sim: np.ndarray,
                        quantile: float = 0.5) -> tuple[list[QAExample], list[QAExample]]:
    """(near-id, open-world): candidates at or above the `quantile` of `sim`, and the rest (each
    list in input order).

    >>> ex = [QAExample(str(i), "q", ["a"], "r") for i in range(4)]
    >>> near, far = split_by_similarity(ex, np.array([0.9, 0.1, 0.5, 0.7]))
    >>> [e.id for e in near], [e.id for e in far]
    (['0', '3'], ['1', '2'])
    """
    order = np.argsort(-np.asarray(sim), kind="stable")
    n_near = int(math.ceil(len(candidates) * (1.0 - quantile)))
    near, far = set(order[:n_near].tolist()), set(order[n_near:].tolist())
    return [e for i, e in enumerate(candidates) if i in near], [e for i, e in enumerate(candidates) if i in far]


def similarity_buckets(candidates: Sequence[QAExample], sim: np.ndarray, n_buckets: int) -> dict[str, list[QAExample]]:
    """``{"sim-1": most similar share, ..., f"sim-{n}": least similar}``: equal-size quantile buckets
    of `candidates` by `sim` (the names kgsim's measurement uses)."""
    order = np.argsort(-np.asarray(sim), kind="stable")
    return {f"sim-{i + 1}": [candidates[j] for j in sorted(part.tolist())]
            for i, part in enumerate(np.array_split(order, n_buckets))}


__all__ = ["EvalConfig", "HOPS_SPLIT", "MODELS", "STAGES", "TWO_HOP_SPLIT", "build_prompts", "draw_demos",
           "edge_filename", "edge_key", "evaluate_model", "evaluate_prompt", "load_edgesets", "save_edgesets",
           "max_similarity", "similarity_buckets", "split_by_similarity"]
