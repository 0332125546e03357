"""Accessible edges of a fine-tuned model under each test-time prompt, as kgsim EdgeSets.

For a model (``"ft-known"`` or ``"ft-unknown"``) at a stage (``"es"`` or ``"con"``), every test
split is answered under every prompt (:mod:`llm_bridge.prompts`), with batched greedy decoding,
and scored with :func:`llm_bridge.matching.is_correct`. The result is one
:class:`kgsim.core.edges.EdgeSet` per key ``(model, stage, split, prompt)``, the keys ``kgsim run``
uses, so the proofs checks and the report read bridge results unchanged:

- one-hop splits (``"id"``, ``"sim-near-id"``, ``"sim-open-world"``, ``"sim-1"``, ...): prompts ``"zero-shot"`` and
  ``f"{k}-shot"`` for each k; a k-shot prompt's demonstrations (same relation, drawn from the
  demonstration pool by ``kgsim.core.rng.stream(seed, f"demos/{split}/{k}")``, so both models see the
  very same prompts) are its induced edge set, stored per test item in ``meta["induced"]``;
- ``"2hop"`` (synthetic graphs with composed relations): ``"cot"`` (demonstrations whose answers
  spell out the path through the bridge entity) and ``"direct-2hop"`` (the same demonstrations
  answered directly); ``meta["path"]`` holds each query's own two hop fact ids (the path a correct
  chain of thought spells out), ``meta["bridge_named"]`` whether each generation named the bridge
  entity and ``meta["bridge_correct"]`` the share that did;
- ``"2hop-hops"``: the one-hop facts on those paths, zero-shot (for the path-connectivity check).

An EdgeSet's ``test_ids`` are the examples' ``fact_id`` values; its ``(model, stage, split,
prompt)`` are the key above (names of :mod:`kgsim.core.names`), and ``meta`` also holds the raw
``predictions``.

>>> edge_key("ft-known", "es", "id", "4-shot")
('ft-known', 'es', 'id', '4-shot')
>>> edge_filename(("ft-known", "es", "id", "4-shot"))
'ft-known.es.id.4-shot.json'
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from kgsim.core.config import ConfigError
from kgsim.core.edges import EdgeSet, TwoHopQueries
from kgsim.core.names import (
    COT,
    DIRECT_TWO_HOP,
    FT_MODELS,
    STAGES,
    TWO_HOP,
    TWO_HOP_HOPS,
    TWO_HOP_PROMPTS,
    ZERO_SHOT,
    k_shot_name,
    shots_of,
)
from kgsim.core.rng import stream
from kgsim.core.selection import max_cosine
from kgsim.study.lm import answer_and_score

from .datasets import QAExample, by_relation
from .lm import HFLM
from .matching import MATCH_MODES
from .prompts import TEXT

EdgeKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class EvalConfig:
    """Test-time prompts and decoding."""

    k_shots: tuple[int, ...] = (1, 4)
    cot: bool = True                    # cot and direct-2hop on the 2-hop split (synthetic data)
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
        if split == TWO_HOP:
            return [COT, DIRECT_TWO_HOP] if self.cot else []
        if split == TWO_HOP_HOPS:
            return [ZERO_SHOT]
        return [ZERO_SHOT, *(k_shot_name(k) for k in self.k_shots)]


def edge_key(model: str, stage: str, split: str, prompt: str) -> EdgeKey:
    """The (model, stage, split, prompt) key; model and stage are checked."""
    if model not in FT_MODELS or stage not in STAGES:
        raise ValueError(f"model {model!r} / stage {stage!r}: models are {FT_MODELS}, stages {STAGES}")
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


def prompt_demos(split: str, prompt: str, examples: Sequence[QAExample], pool: Mapping[str, Sequence[QAExample]],
                 cfg: EvalConfig, seed: int, fmt=TEXT) -> list[list[QAExample]]:
    """The demonstrations of every query of one (split, prompt) (empty lists for zero-shot),
    drawn from ``stream(seed, f"demos/{split}/{k}")`` (``.../cot`` for both 2-hop prompts); 2-hop
    demonstrations come from the whole pool, or from the query's own composed relation when
    ``fmt.two_hop_same_relation`` (`pool` then grouped by relation).

    Raises:
        ValueError: an unknown prompt name, or a pool too small.
    """
    if prompt == ZERO_SHOT:
        return [[] for _ in examples]
    if prompt in TWO_HOP_PROMPTS:
        return draw_demos(examples, pool, cfg.cot_shots, stream(seed, f"demos/{split}/cot"),
                          any_relation=not fmt.two_hop_same_relation)
    k = shots_of(prompt)
    if k is None:
        raise ValueError(f"unknown prompt {prompt!r}")
    return draw_demos(examples, pool, k, stream(seed, f"demos/{split}/{k}"))


def build_prompts(split: str, prompt: str, examples: Sequence[QAExample], pool: Mapping[str, Sequence[QAExample]],
                  cfg: EvalConfig, seed: int, fmt=TEXT,
                  demos: Sequence[Sequence[QAExample]] | None = None) -> tuple[list[str], list[list[int]]]:
    """The prompt texts of one (split, prompt) in format `fmt` (:mod:`llm_bridge.prompts`) and each
    prompt's induced edges (demo fact ids; a CoT demonstration induces its path). `demos` (one list
    per query) defaults to :func:`prompt_demos`."""
    if demos is None:
        demos = prompt_demos(split, prompt, examples, pool, cfg, seed, fmt)
    if prompt == ZERO_SHOT:
        return fmt.zero_shot(examples), [[] for _ in examples]
    if prompt in TWO_HOP_PROMPTS:
        render = fmt.cot if prompt == COT else fmt.direct_two_hop
        induced = [[p for d in ds for p in (d.path if prompt == COT else (d.fact_id,))] for ds in demos]
        return render(examples, demos), induced
    return fmt.few_shot(examples, demos), [[d.fact_id for d in ds] for ds in demos]


def answer_prompts(model, tokenizer, texts: Sequence[str], examples: Sequence[QAExample], prompt: str,
                   cfg: EvalConfig, fmt=TEXT, *, progress: bool = False,
                   desc: str = "evaluate") -> tuple[list[str], np.ndarray]:
    """(generations, bool [n] correct) of `texts` (built for `examples` under `prompt`): greedy,
    batched, measured by kgsim's :func:`kgsim.study.lm.answer_and_score` on the model as an
    :class:`~llm_bridge.lm.HFLM`; a CoT generation (two steps with kgsim tokens) is scored on its
    final answer."""
    lm = HFLM(model, tokenizer, fmt, match=cfg.match, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
              progress=progress, desc=desc)
    if prompt != COT:
        return answer_and_score(lm, texts, examples)
    outs = fmt.generate_cot(model, tokenizer, texts, examples, max_new_tokens=cfg.cot_max_new_tokens,
                            batch_size=cfg.batch_size, progress=progress, desc=desc)
    return outs, lm.score([fmt.cot_answer(o) for o in outs], examples)


def evaluate_prompt(model, tokenizer, examples: Sequence[QAExample], split: str, prompt: str,
                    pool: Mapping[str, Sequence[QAExample]], cfg: EvalConfig, *, model_name: str, stage: str,
                    seed: int = 0, progress: bool = False, fmt=TEXT) -> EdgeSet:
    """The EdgeSet of one (model, stage, split, prompt). A format other than text also keeps each
    query's demonstrations (``meta["demos"]``: their fact ids, or 2-hop rows)."""
    key = edge_key(model_name, stage, split, prompt)
    demos = prompt_demos(split, prompt, examples, pool, cfg, seed, fmt)
    texts, induced = build_prompts(split, prompt, examples, pool, cfg, seed, fmt, demos=demos)
    outs, correct = answer_prompts(model, tokenizer, texts, examples, prompt, cfg, fmt, progress=progress,
                                   desc="/".join(key))
    meta = {"predictions": outs, "induced": induced}
    if fmt is not TEXT:
        meta["format"], meta["demos"] = fmt.name, [[d.fact_id for d in ds] for ds in demos]
    if split == TWO_HOP:
        meta["path"] = [list(e.path) for e in examples]
        named = [fmt.bridge_named(o, e) for o, e in zip(outs, examples)]
        meta["bridge_named"], meta["bridge_correct"] = named, float(np.mean(named)) if named else 0.0
    return EdgeSet(np.array([e.fact_id for e in examples], np.int64), correct, model=model_name, stage=stage,
                   split=split, prompt=prompt, meta=meta)


def _prompt_jobs(splits: Mapping[str, Sequence[QAExample]], pool: Mapping[str, Sequence[QAExample]],
                 cfg: EvalConfig, two_hop_pool: Sequence[QAExample], fmt):
    """(split, examples, prompt, demonstration pool) of every prompt evaluated on every non-empty
    split: one-hop splits draw from `pool`, the 2-hop split from `two_hop_pool`."""
    two_hop_pool = list(two_hop_pool)
    for split, examples in splits.items():
        if not examples:
            continue
        for prompt in cfg.prompt_names(split):
            p = pool
            if split == TWO_HOP:
                p = by_relation(two_hop_pool) if fmt.two_hop_same_relation else {"*": two_hop_pool}
            yield split, examples, prompt, p


def evaluate_model(model, tokenizer, splits: Mapping[str, Sequence[QAExample]], pool: Mapping[str, Sequence[QAExample]],
                   cfg: EvalConfig, *, model_name: str, stage: str, two_hop_pool: Sequence[QAExample] = (),
                   seed: int = 0, progress: bool = False, fmt=TEXT) -> dict[EdgeKey, EdgeSet]:
    """Every (split, prompt) EdgeSet of one model at one stage, prompts in format `fmt`. `pool`
    holds the one-hop demonstrations by relation; `two_hop_pool` the 2-hop demonstrations (with
    rationales)."""
    cfg.validate()
    return {edge_key(model_name, stage, split, prompt): evaluate_prompt(
                model, tokenizer, examples, split, prompt, p, cfg, model_name=model_name, stage=stage, seed=seed,
                progress=progress, fmt=fmt)
            for split, examples, prompt, p in _prompt_jobs(splits, pool, cfg, two_hop_pool, fmt)}


def prompt_lengths(tokenizer, splits: Mapping[str, Sequence[QAExample]], pool: Mapping[str, Sequence[QAExample]],
                   cfg: EvalConfig, *, two_hop_pool: Sequence[QAExample] = (), seed: int = 0,
                   fmt=TEXT) -> dict[tuple[str, str], int]:
    """``{(split, prompt): longest prompt in tokens}`` over the prompts :func:`evaluate_model` builds
    from the same arguments (the same seeded demonstrations), so a run can check them against the
    model's context before any checkpoint is trained."""
    out = {}
    for split, examples, prompt, p in _prompt_jobs(splits, pool, cfg, two_hop_pool, fmt):
        texts, _ = build_prompts(split, prompt, examples, p, cfg, seed, fmt)
        out[(split, prompt)] = max(len(ids) for ids in tokenizer(list(texts))["input_ids"])
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
    edges = (EdgeSet.load(p) for p in sorted(Path(out_dir).glob("*.json")))
    return {es.key: es for es in edges}


def two_hop_queries(edges: Mapping[EdgeKey, EdgeSet]) -> TwoHopQueries:
    """The 2-hop queries a run evaluated, typed: their ids (the ``2hop`` EdgeSets' test ids) and
    hop fact ids (each query's ``meta["path"]``), for kgsim's checks; none without a 2-hop split."""
    es = next((e for (_, _, split, _), e in edges.items() if split == TWO_HOP and e.meta.get("path")), None)
    if es is None:
        return TwoHopQueries.none()
    path = np.asarray(es.meta["path"], np.int64).reshape(-1, 2)
    return TwoHopQueries(np.zeros((0, 5), np.int64), path[:, 0], path[:, 1], query_ids=es.test_ids)


def max_similarity(model, tokenizer, reference: Sequence[QAExample], candidates: Sequence[QAExample],
                   batch_size: int = 32, fmt=TEXT) -> np.ndarray:
    """float [n_candidates]: each candidate question's largest cosine similarity to the `reference`
    (fine-tuning) questions in the model's own representation space (zero-shot prompts of `fmt`, last
    hidden layer pooled as ``fmt.pooling`` says, :func:`llm_bridge.generation.embed`;
    :func:`kgsim.core.selection.max_cosine`)."""
    if not candidates or not reference:
        return np.zeros(len(candidates))
    lm = HFLM(model, tokenizer, fmt, batch_size=batch_size)
    ref = lm.hidden(fmt.zero_shot(reference))
    return max_cosine(lm.hidden(fmt.zero_shot(candidates)), ref)


__all__ = ["EvalConfig", "answer_prompts", "build_prompts", "draw_demos", "edge_filename", "edge_key", "evaluate_model",
           "evaluate_prompt", "load_edgesets", "max_similarity", "prompt_demos", "prompt_lengths", "save_edgesets", "two_hop_queries"]
