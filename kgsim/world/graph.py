"""Knowledge graphs: typed entities, typed relations, facts as integer arrays, exposure counts.

A :class:`KnowledgeGraph` stores its facts as three aligned int64 arrays ``s, r, a`` (subject,
relation, answer) plus ``exposure`` (how often each fact is shown in pretraining). Synthetic
generators are registered by name in :data:`GENERATORS`; real graphs load from a TSV
(:func:`load_tsv`, generator ``tsv``) or from EntityQuestions (generator ``entityquestions``), both
in :mod:`kgsim.world.loaded`.

Answer rule. A query is an (s, r) pair. Synthetic graphs are functional (one answer per (s, r));
a loaded graph may hold several true answers for one (s, r), and then **any** of them counts as a
correct answer to the query: :meth:`KnowledgeGraph.is_correct` implements the rule everywhere.

>>> from kgsim.core.config import GraphConfig
>>> from kgsim.core.rng import stream
>>> kg = generate(GraphConfig(n_entities=50, n_types=2, n_relations=4, n_composed=1), stream(0, "graph"))
>>> kg.n_facts == len(kg.s) == len(kg.exposure)
True
>>> int(kg.answers(int(kg.s[0]), int(kg.r[0]))[0]) == int(kg.a[0])
True
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from kgsim.core.config import ConfigError, GraphConfig
from kgsim.core.kg import KnowledgeGraph
from kgsim.world.loaded import GraphFileError, load_entityquestions, load_tsv

__all__ = ["GENERATORS", "register", "generate", "zipf_popularity", "draw_exposure", "GraphFileError", "load_tsv",
           "load_entityquestions"]

# --------------------------------------------------------------------------------------------

def zipf_popularity(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Popularity weights ∝ rank^-exponent over a random ranking of n entities (sums to 1)."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    out = np.empty(n)
    out[rng.permutation(n)] = w / w.sum()
    return out


def draw_exposure(subject_weight: np.ndarray, cfg: GraphConfig, rng: np.random.Generator) -> np.ndarray:
    """Per-fact exposure counts.

    Exactly ``round(never_exposed_share * n_facts)`` facts, chosen uniformly, are never shown. Each
    other fact is shown once plus its share of the remaining budget, which a multinomial draw
    splits in proportion to its subject's popularity; the mean over exposed facts is
    ``mean_exposure`` before the cap at ``max_exposure``.
    """
    n = len(subject_weight)
    exposure = np.zeros(n, np.int64)
    hidden = rng.permutation(n)[: int(round(cfg.never_exposed_share * n))]
    shown = np.ones(n, bool)
    shown[hidden] = False
    n_shown = int(shown.sum())
    if n_shown == 0:
        return exposure
    budget = max(int(round(cfg.mean_exposure * n_shown)) - n_shown, 0)
    w = subject_weight[shown]
    extra = rng.multinomial(budget, w / w.sum()) if w.sum() > 0 else np.zeros(n_shown, np.int64)
    exposure[shown] = np.minimum(1 + extra, cfg.max_exposure)
    return exposure



# --------------------------------------------------------------------------------------------
# Synthetic generators
# --------------------------------------------------------------------------------------------

Generator = Callable[[GraphConfig, np.random.Generator], KnowledgeGraph]
GENERATORS: dict[str, Generator] = {}


def register(name: str) -> Callable[[Generator], Generator]:
    """Register a graph generator under `name` (then usable as ``graph.generator = name``)."""
    def deco(fn: Generator) -> Generator:
        GENERATORS[name] = fn
        return fn
    return deco


def _schema(cfg: GraphConfig, rng: np.random.Generator):
    """Entity types, relation domain/range types (domains spread evenly over types), and composable
    pairs (range(r1) = domain(r2))."""
    types = np.arange(cfg.n_entities) % cfg.n_types       # every type non-empty
    types = types[rng.permutation(cfg.n_entities)]
    dom = (np.arange(cfg.n_relations) % cfg.n_types)[rng.permutation(cfg.n_relations)]  # balanced domains
    rng_ = rng.integers(0, cfg.n_types, cfg.n_relations)
    pairs = rng.permutation(cfg.n_relations)[: 2 * cfg.n_composed].reshape(-1, 2)
    for r1, r2 in pairs:
        rng_[r1] = dom[r2]
    return types, dom, rng_, pairs


def _subjects(types: np.ndarray, dom: np.ndarray, cfg: GraphConfig, rng: np.random.Generator):
    """(s, r) pairs: each entity of a relation's domain type, kept with prob. facts_per_subject."""
    s_parts, r_parts = [], []
    by_type = [np.flatnonzero(types == t) for t in range(cfg.n_types)]
    for r, t in enumerate(dom):
        subj = by_type[t]
        if cfg.facts_per_subject < 1.0:
            subj = subj[rng.random(len(subj)) < cfg.facts_per_subject]
        s_parts.append(subj)
        r_parts.append(np.full(len(subj), r))
    return np.concatenate(s_parts), np.concatenate(r_parts), by_type


def _finish(cfg, rng, types, dom, rng_types, pairs, s, r, a, popularity, name) -> KnowledgeGraph:
    exposure = draw_exposure(popularity[s], cfg, rng)
    return KnowledgeGraph(types, dom, rng_types, s, r, a, exposure, popularity, pairs, generator=name)


def _uniform_answers(r, rng_types, by_type, rng):
    a = np.empty(len(r), np.int64)
    for rel in np.unique(r):
        idx = np.flatnonzero(r == rel)
        pool = by_type[rng_types[rel]]
        a[idx] = pool[rng.integers(0, len(pool), len(idx))]
    return a


@register("uniform")
def uniform_graph(cfg: GraphConfig, rng: np.random.Generator) -> KnowledgeGraph:
    """Uniformly random answers, uniform subject popularity (the Zipf exponent is ignored: 0)."""
    types, dom, rng_types, pairs = _schema(cfg, rng)
    s, r, by_type = _subjects(types, dom, cfg, rng)
    a = _uniform_answers(r, rng_types, by_type, rng)
    pop = np.full(cfg.n_entities, 1.0 / cfg.n_entities)
    return _finish(cfg, rng, types, dom, rng_types, pairs, s, r, a, pop, "uniform")


@register("zipf")
def zipf_graph(cfg: GraphConfig, rng: np.random.Generator) -> KnowledgeGraph:
    """Uniformly random answers, heavy-tailed (Zipf) subject popularity."""
    types, dom, rng_types, pairs = _schema(cfg, rng)
    s, r, by_type = _subjects(types, dom, cfg, rng)
    a = _uniform_answers(r, rng_types, by_type, rng)
    pop = zipf_popularity(cfg.n_entities, cfg.zipf_exponent, rng)
    return _finish(cfg, rng, types, dom, rng_types, pairs, s, r, a, pop, "zipf")


def _copy_model(n: int, pool: np.ndarray, p_copy: float, rng: np.random.Generator) -> np.ndarray:
    """Preferential attachment by copying: item i copies the answer of a uniformly chosen earlier
    item with probability p_copy, else draws a fresh one; in-degree grows in proportion to degree.
    Resolved without a Python loop by pointer doubling over the copy chains."""
    parent = np.arange(n)
    if n > 1:
        copy = rng.random(n) < p_copy
        copy[0] = False
        earlier = (rng.random(n) * np.arange(n)).astype(np.int64)   # uniform in [0, i)
        parent = np.where(copy, earlier, parent)
        for _ in range(int(np.ceil(np.log2(n))) + 1):               # parent <- root of its chain
            parent = parent[parent]
    fresh = pool[rng.integers(0, len(pool), n)]
    return fresh[parent]


@register("preferential")
def preferential_graph(cfg: GraphConfig, rng: np.random.Generator) -> KnowledgeGraph:
    """Zipf subject popularity and preferential-attachment answers (heavy-tailed in-degree)."""
    types, dom, rng_types, pairs = _schema(cfg, rng)
    s, r, by_type = _subjects(types, dom, cfg, rng)
    a = np.empty(len(r), np.int64)
    for rel in np.unique(r):
        idx = np.flatnonzero(r == rel)
        a[idx] = _copy_model(len(idx), by_type[rng_types[rel]], 0.5, rng)
    pop = zipf_popularity(cfg.n_entities, cfg.zipf_exponent, rng)
    return _finish(cfg, rng, types, dom, rng_types, pairs, s, r, a, pop, "preferential")


@register("community")
def community_graph(cfg: GraphConfig, rng: np.random.Generator) -> KnowledgeGraph:
    """Zipf popularity; entities in communities; answers mostly from the subject's community
    (with probability 1 - community_mixing), which makes graph distance meaningful."""
    types, dom, rng_types, pairs = _schema(cfg, rng)
    s, r, by_type = _subjects(types, dom, cfg, rng)
    community = rng.integers(0, cfg.n_communities, cfg.n_entities)
    a = np.empty(len(r), np.int64)
    for rel in np.unique(r):
        idx = np.flatnonzero(r == rel)
        pool = by_type[rng_types[rel]]
        a[idx] = pool[rng.integers(0, len(pool), len(idx))]          # mixing: anywhere
        local = rng.random(len(idx)) >= cfg.community_mixing
        for c in range(cfg.n_communities):
            members = pool[community[pool] == c]
            pick = idx[local & (community[s[idx]] == c)]
            if len(members) and len(pick):
                a[pick] = members[rng.integers(0, len(members), len(pick))]
    pop = zipf_popularity(cfg.n_entities, cfg.zipf_exponent, rng)
    return _finish(cfg, rng, types, dom, rng_types, pairs, s, r, a, pop, "community")


@register("tsv")
def tsv_graph(cfg: GraphConfig, rng: np.random.Generator) -> KnowledgeGraph:
    """A real graph from ``cfg.tsv_path`` (:func:`kgsim.world.loaded.load_tsv`)."""
    return load_tsv(cfg.tsv_path, cfg, rng)


@register("entityquestions")
def entityquestions_graph(cfg: GraphConfig, rng: np.random.Generator) -> KnowledgeGraph:
    """EntityQuestions' named facts from ``cfg.data_path`` (:func:`kgsim.world.loaded.load_entityquestions`)."""
    return load_entityquestions(cfg.data_path, cfg, rng)


def generate(cfg: GraphConfig, rng: np.random.Generator) -> KnowledgeGraph:
    """Build the graph `cfg` describes with the registered generator ``cfg.generator``."""
    if cfg.generator not in GENERATORS:
        raise ConfigError(f"graph.generator = {cfg.generator!r}: unknown; choose one of {sorted(GENERATORS)}")
    return GENERATORS[cfg.generator](cfg, rng)
