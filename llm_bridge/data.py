"""The bridge's data: load a dataset, split it, and choose every set the study uses.

:func:`load_data` reads a dataset (``entityquestions``, ``popqa``, ``mmlu`` or ``synthetic``: a kgsim
graph, verbalised or in kgsim's own tokens) into train/dev/test examples; :func:`select` chooses the
fine-tuning relations, demonstration pools, SliCK candidates, dev and test sets (seeded), and
:func:`balanced_sets` the fine-tuning sets from the candidates' SliCK categories, with kgsim's rule
(:mod:`kgsim.core.selection`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from kgsim.core.kg import KnowledgeGraph
from kgsim.core.names import TWO_HOP, UNKNOWN
from kgsim.core.rng import stream
from kgsim.core.selection import balanced_sets as select_balanced
from kgsim.core.selection import round_robin_counts
from kgsim.world.graph import load_tsv

from .config import BridgeConfig, DataConfig
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
from .kgsim_tokens import KgsimTokens
from .prompts import TEXT
from .verbalize import TEMPLATE_VERSION, Verbalizer


class BridgeError(ValueError):
    """The data cannot support the study as configured (e.g. no Known or no Unknown examples)."""


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
        return {**parts, TWO_HOP: fmt.two_hop_examples(), "facts": facts}, {"format": fmt.name,
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
        return {**parts, TWO_HOP: two_hop_examples(kg, vb), "facts": facts}, {"template_version": TEMPLATE_VERSION}
    raise BridgeError(f"data = {data!r}: choose one of {list(DATASETS)}")


def _round_robin(groups: dict[str, list[QAExample]], n: int) -> list[QAExample]:
    """Up to n examples taking one per relation in turn (:func:`kgsim.core.selection.round_robin_counts`)."""
    counts = round_robin_counts([len(g) for g in groups.values()], n)
    return [g[k] for k in range(max(counts, default=0)) for g, c in zip(groups.values(), counts) if k < c]


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
    if splits.get(TWO_HOP):
        two = _shuffled(splits[TWO_HOP], stream(seed, "bridge-2hop"))
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


def balanced_sets(candidates: Sequence[QAExample], slick: dict, d: DataConfig,
                  seed: int = 0) -> tuple[list[QAExample], list[QAExample]]:
    """FT-Known (category in ``d.known_categories``) and FT-Unknown: kgsim's balanced draw
    (:func:`kgsim.core.selection.balanced_sets`, not strict: a relation gives what both its pools
    hold), equal counts per relation, ``ft_size`` each at most, drawn with the seed's
    ``bridge-ft-sets`` stream; each list in candidate order.

    Raises:
        BridgeError: no relation has both Known and Unknown candidates.
    """
    cats = np.array([slick[e.id].category for e in candidates], dtype=object)
    rels = sorted({e.relation for e in candidates})
    code = np.array([rels.index(e.relation) for e in candidates], np.int64)
    known, unknown = np.flatnonzero(np.isin(cats, list(d.known_categories))), np.flatnonzero(cats == UNKNOWN)
    kn, unk = select_balanced(known, unknown, code, range(len(rels)), d.ft_size, stream(seed, "bridge-ft-sets"),
                              strict=False)
    if not len(kn):
        raise BridgeError(f"no balanced fine-tuning sets: {len(known)} Known and {len(unknown)} Unknown candidates, "
                          "never in the same relation; raise data.n_candidates or change data.known_categories")
    return [candidates[i] for i in kn], [candidates[i] for i in unk]


__all__ = ["BridgeError", "Selection", "balanced_sets", "load_data", "load_graph", "prompt_format", "select"]
