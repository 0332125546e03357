"""Hypothesis strategies for the statements of :mod:`proofs.statements`.

Small knowledge graphs (:class:`kgsim.core.kg.KnowledgeGraph`), test sets, weights, accessible edge
sets of FT-Known and FT-Unknown (nested or not), and prompt-induced subgraphs: few-shot
demonstrations (whose relation's test edges a prompt can gain) and CoT paths. Everything is drawn
from small integers and booleans, so a failing example shrinks to a few facts, uniform weights and
empty gains wherever the failure allows.

>>> from random import Random
>>> from hypothesis import find, settings
>>> kg = find(knowledge_graphs(), lambda kg: kg.n_facts >= 2, settings=settings(database=None), random=Random(0))
>>> kg.n_entities, kg.n_facts
(2, 2)

``EXACT_SETTINGS`` is what the exact-statement property tests run under (500 examples each,
whatever profile is loaded).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st

from kgsim.core.edges import EdgeSet
from kgsim.core.kg import KnowledgeGraph
from kgsim.core.names import ES, FT_MODELS, ID, NEAR_ID, STAGES

from .run import TwoHopEvidence, fact_ids

EXACT_SETTINGS = settings(max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
"""Settings of the exact-statement property tests: at least 500 examples, no deadline."""

settings.register_profile("proofs-ci", EXACT_SETTINGS)


# Strategy objects are cached: building and validating a fresh one per draw costs more than the draw.
@lru_cache(maxsize=None)
def _ints(lo: int, hi: int) -> st.SearchStrategy:
    return st.integers(lo, hi)


@lru_cache(maxsize=None)
def _bools(n: int) -> st.SearchStrategy:
    return st.lists(st.booleans(), min_size=n, max_size=n)


@lru_cache(maxsize=None)
def _subset(pool: tuple, min_size: int, max_size: int | None) -> st.SearchStrategy:
    return st.lists(st.sampled_from(pool), unique=True, min_size=min_size, max_size=max_size)


def _pick(draw, pool) -> int:
    pool = list(pool)
    return pool[draw(_ints(0, len(pool) - 1))]


# --------------------------------------------------------------------------------------------
# Graphs, test sets, weights
# --------------------------------------------------------------------------------------------

@st.composite
def knowledge_graphs(draw, max_entities: int = 6, max_relations: int = 3, max_types: int = 2,
                     two_hop: bool = False) -> KnowledgeGraph:
    """Small functional knowledge graphs: typed entities, typed relations, at least one fact.

    With ``two_hop=True`` relations 0 and 1 compose (range(r0) = domain(r1)) and at least one
    composed query (s, r0∘r1, a) has a unique bridge. Shrinks towards 2 entities, 1 type,
    1 relation, 1 fact, zero exposure.
    """
    return _graph(draw, max_entities, max_relations, max_types, two_hop)


def _graph(draw, max_entities, max_relations, max_types, two_hop) -> KnowledgeGraph:
    n_entities = draw(_ints(2, max_entities))
    n_types = draw(_ints(1, min(max_types, n_entities)))
    types = np.arange(n_entities) % n_types
    n_relations = draw(_ints(2 if two_hop else 1, max(max_relations, 2 if two_hop else 1)))
    domain = [draw(_ints(0, n_types - 1)) for _ in range(n_relations)]
    range_ = [draw(_ints(0, n_types - 1)) for _ in range(n_relations)]
    if two_hop:
        domain[1] = range_[0]
    s, r, a = [], [], []
    for rel in range(n_relations):
        subjects = tuple(np.flatnonzero(types == domain[rel]).tolist())
        objects = np.flatnonzero(types == range_[rel])
        for subj in sorted(draw(_subset(subjects, 1 if rel == 0 else 0, None))):
            s.append(subj), r.append(rel), a.append(_pick(draw, objects))
    if two_hop and not any(si == a[0] and ri == 1 for si, ri in zip(s, r)):
        s.append(a[0]), r.append(1), a.append(_pick(draw, np.flatnonzero(types == range_[1])))
    valid = tuple((r1, r2) for r1 in range(n_relations) for r2 in range(n_relations)
                  if r1 != r2 and range_[r1] == domain[r2])
    composed = [(0, 1)] if two_hop else (draw(_subset(valid, 0, 2)) if valid else [])
    exposure = [draw(_ints(0, 5)) for _ in s]
    return KnowledgeGraph(types, np.array(domain), np.array(range_), np.array(s), np.array(r), np.array(a),
                          np.array(exposure), np.full(n_entities, 1.0 / n_entities),
                          np.array(composed, np.int64).reshape(-1, 2), generator="hypothesis")


@st.composite
def test_sets(draw, kg: KnowledgeGraph, min_size: int = 1) -> np.ndarray:
    """A test set T ⊆ E*: sorted global fact ids of ``kg`` (at least ``min_size``, all if fewer)."""
    return _test_set(draw, kg, min_size)


def _test_set(draw, kg, min_size):
    ids = draw(_subset(tuple(range(kg.n_facts)), min(min_size, kg.n_facts), None))
    return np.array(sorted(ids), np.int64)


def weights(n: int, uniform: bool | None = None) -> st.SearchStrategy:
    """Weights over a test set of ``n`` facts: None (uniform) or integer weights 1..9 (float [n]).
    ``uniform=None`` draws either (shrinking to None), True only None, False only explicit ones."""
    return _weights(n, uniform)


@lru_cache(maxsize=None)
def _weights(n: int, uniform: bool | None) -> st.SearchStrategy:
    explicit = st.lists(st.integers(1, 9), min_size=n, max_size=n).map(lambda v: np.array(v, np.float64))
    if uniform is None:
        return st.one_of(st.none(), explicit)
    return st.none() if uniform else explicit


@st.composite
def masks(draw, n: int, within: np.ndarray | None = None) -> np.ndarray:
    """Boolean masks over ``n`` facts (inside ``within`` when given); shrink towards all False."""
    return _mask(draw, n, within)


def _mask(draw, n: int, within: np.ndarray | None = None) -> np.ndarray:
    m = np.array(draw(_bools(n)), bool)
    return m if within is None else m & within


# --------------------------------------------------------------------------------------------
# Accessible edge sets and prompts
# --------------------------------------------------------------------------------------------

@st.composite
def accessible_pairs(draw, test_ids: np.ndarray, w: np.ndarray | None = None,
                     nested: bool | None = None) -> tuple[EdgeSet, EdgeSet]:
    """(E_kn, E_unk) over T. ``nested=True``: E_unk ⊆ E_kn; False: not nested (E_unk ∖ E_kn ≠ ∅,
    needs N ≥ 1); None: either."""
    return _pair(draw, test_ids, w, nested)


def _pair(draw, test_ids, w, nested):
    n = len(test_ids)
    kn = _mask(draw, n)
    unk = _mask(draw, n)
    if nested:
        unk = unk & kn
    elif nested is False and not (unk & ~kn).any():
        i = draw(_ints(0, n - 1))
        kn[i], unk[i] = False, True
    return (EdgeSet(test_ids, kn, model="ft-known", weights=w),
            EdgeSet(test_ids, unk, model="ft-unknown", weights=w))


@dataclass(frozen=True)
class FewShotPrompt:
    """A k-shot prompt as an induced subgraph: demonstrations (s'_j, r, a'_j), global fact ids
    ``demos`` of one relation ``relation``. It can only gain test edges of that relation."""

    relation: int
    demos: tuple[int, ...]

    def edges(self, kg: KnowledgeGraph) -> list[tuple[int, int, int]]:
        """E_P as (s, r, a) triples."""
        return [(int(kg.s[f]), int(kg.r[f]), int(kg.a[f])) for f in self.demos]

    def gainable(self, kg: KnowledgeGraph, test_ids: np.ndarray) -> np.ndarray:
        """bool [N]: test facts of the demonstrated relation that are not demonstrations."""
        return (kg.r[test_ids] == self.relation) & ~np.isin(test_ids, self.demos)


@st.composite
def few_shot_prompts(draw, kg: KnowledgeGraph, k_max: int = 3) -> FewShotPrompt:
    """k-shot prompts, 1 ≤ k ≤ k_max demonstrations of one relation of ``kg``."""
    return _few_shot(draw, kg, k_max)


def _few_shot(draw, kg, k_max) -> FewShotPrompt:
    rel = _pick(draw, sorted(set(kg.r.tolist())))
    pool = tuple(np.flatnonzero(kg.r == rel).tolist())
    demos = draw(_subset(pool, 1, min(k_max, len(pool))))
    return FewShotPrompt(int(rel), tuple(sorted(demos)))


@dataclass(frozen=True)
class CotPath:
    """A CoT prompt as an induced path (s, r1, m), (m, r2, a) for the composed query (s, r1∘r2, a)."""

    s: int
    r1: int
    r2: int
    m: int
    a: int
    hop1: int                # global fact id of (s, r1, m)
    hop2: int                # global fact id of (m, r2, a)


@st.composite
def cot_paths(draw, kg: KnowledgeGraph) -> CotPath:
    """One composed query of ``kg`` with its unique path (``kg`` needs a 2-hop query: build it with
    ``knowledge_graphs(two_hop=True)``)."""
    rows = kg.two_hop()
    if len(rows) == 0:
        raise ValueError("the graph has no composed query with a unique bridge")
    s, r1, r2, m, a = (int(v) for v in rows[draw(_ints(0, len(rows) - 1))])
    h1, h2 = fact_ids(kg, np.array([s, m]), np.array([r1, r2]), np.array([m, a]))
    return CotPath(s, r1, r2, m, a, int(h1), int(h2))


@st.composite
def prompted(draw, e0: EdgeSet, gainable: np.ndarray | None = None, losses: bool = True) -> EdgeSet:
    """E(θ, P) from E(θ, P₀): gains among missing (and ``gainable``) edges, losses among E(θ, P₀)
    when ``losses``. Shrinks towards E(θ, P) = E(θ, P₀)."""
    return _prompted(draw, e0, gainable, losses)


def _prompted(draw, e0: EdgeSet, gainable: np.ndarray | None, losses: bool) -> EdgeSet:
    missing = ~e0.correct if gainable is None else ~e0.correct & gainable
    gained = _mask(draw, e0.n, within=missing)
    lost = _mask(draw, e0.n, within=e0.correct) if losses else np.zeros(e0.n, bool)
    return EdgeSet(e0.test_ids, (e0.correct | gained) & ~lost, model=e0.model, prompt="k-shot", weights=e0.weights)


@dataclass(frozen=True)
class GapInstance:
    """Plain-prompt and prompted edge sets of both models over one T (and where they came from).
    ``augment_kn``/``augment_unk`` are the augmentation sets A when drawn as E_P = E ∪ A."""

    kn0: EdgeSet
    unk0: EdgeSet
    kn_p: EdgeSet
    unk_p: EdgeSet
    kg: KnowledgeGraph | None = None
    prompt: FewShotPrompt | None = None
    augment_kn: np.ndarray | None = None
    augment_unk: np.ndarray | None = None

    @property
    def sets(self) -> tuple[EdgeSet, EdgeSet, EdgeSet, EdgeSet]:
        return self.kn0, self.unk0, self.kn_p, self.unk_p


@st.composite
def gap_instances(draw, *, nested: bool | None = None, losses: bool = True, augment: bool = False,
                  common_gains: bool = True, weighted: bool | None = None, from_graph: bool = True,
                  max_n: int = 6) -> GapInstance:
    """Edge sets of FT-Known and FT-Unknown under P₀ and a prompt P.

    ``from_graph``: T is a test set of a small knowledge graph and P a few-shot prompt that gains
    only edges of its demonstrated relation; else T = 0..N−1 (N ≤ ``max_n``) and any missing edge
    can be gained. ``augment``: E_P = E ∪ A with A drawn (the same A for both models if
    ``common_gains``), no losses; else gains and losses are drawn (no losses if not ``losses``).
    ``nested`` and ``weighted`` as in :func:`accessible_pairs` and :func:`weights`.
    """
    if not from_graph:
        return _flat_instance(draw, nested, losses, augment, common_gains, weighted, max_n)
    kg = _graph(draw, 6, 3, 2, False)
    test_ids = _test_set(draw, kg, 1)
    prompt = _few_shot(draw, kg, 3)
    gainable = prompt.gainable(kg, test_ids)
    w = draw(weights(len(test_ids), None if weighted is None else not weighted))
    kn0, unk0 = _pair(draw, test_ids, w, nested)
    if augment:
        a_kn = _mask(draw, len(test_ids), within=gainable)
        a_unk = a_kn if common_gains else _mask(draw, len(test_ids), within=gainable)
        return _augmented(test_ids, w, kn0.correct, unk0.correct, a_kn, a_unk, kg, prompt)
    kn_p = _prompted(draw, kn0, gainable, losses)
    unk_p = _prompted(draw, unk0, gainable, losses)
    return GapInstance(kn0, unk0, kn_p, unk_p, kg, prompt)


def _augmented(test_ids, w, kn, unk, a_kn, a_unk, kg=None, prompt=None) -> GapInstance:
    sets = [EdgeSet(test_ids, m, model=model, weights=w)
            for m, model in ((kn, "ft-known"), (unk, "ft-unknown"), (kn | a_kn, "ft-known"), (unk | a_unk, "ft-unknown"))]
    return GapInstance(*sets, kg, prompt, a_kn, a_unk)


# One test fact of a flat instance: (in E_kn, in E_unk, weight, kn gains / keeps-or-loses it,
# unk gains / keeps-or-loses it). Drawing facts as list items lets the shrinker delete whole facts.
_FACT = st.tuples(st.booleans(), st.booleans(), st.integers(1, 9), st.booleans(), st.booleans())


@lru_cache(maxsize=None)
def _facts(max_n: int) -> st.SearchStrategy:
    return st.lists(_FACT, min_size=1, max_size=max_n)


def _flat_instance(draw, nested, losses, augment, common_gains, weighted, max_n) -> GapInstance:
    cols = np.array(draw(_facts(max_n)), dtype=np.int64).T
    kn, unk, flip_kn, flip_unk = (c.astype(bool) for c in (cols[0], cols[1], cols[3], cols[4]))
    test_ids = np.arange(len(kn), dtype=np.int64)
    use_w = draw(st.booleans()) if weighted is None else weighted
    w = cols[2].astype(np.float64) if use_w else None
    if nested:
        unk = unk & kn
    elif nested is False:
        assume((unk & ~kn).any())
    if augment:                       # the flip columns are the augmentation sets A_kn, A_unk
        return _augmented(test_ids, w, kn, unk, flip_kn, flip_kn if common_gains else flip_unk)
    # a flip of a missing edge is a gain; of an accessible edge, a loss (if losses are allowed)
    kn_p = kn ^ (flip_kn if losses else flip_kn & ~kn)
    unk_p = unk ^ (flip_unk if losses else flip_unk & ~unk)
    sets = [EdgeSet(test_ids, m, model=model, weights=w)
            for m, model in ((kn, "ft-known"), (unk, "ft-unknown"), (kn_p, "ft-known"), (unk_p, "ft-unknown"))]
    return GapInstance(*sets)


# --------------------------------------------------------------------------------------------
# Whole runs (for check_run) and 2-hop evidence
# --------------------------------------------------------------------------------------------

@st.composite
def two_hop_instances(draw, path_following: bool = True) -> tuple[KnowledgeGraph, dict, TwoHopEvidence]:
    """(kg, one-hop edge sets, evidence): a graph with composed queries, both models' zero-shot
    edge sets over all its facts (split "id", stage "es"), and CoT outcomes. With
    ``path_following`` each model answers a composed query under CoT iff both hops are accessible
    (the connectivity statement holds exactly); else the outcomes are drawn freely."""
    kg = _graph(draw, 6, 3, 2, True)
    rows = kg.two_hop()
    test_ids = np.arange(kg.n_facts, dtype=np.int64)
    h1 = fact_ids(kg, rows[:, 0], rows[:, 1], rows[:, 3])
    h2 = fact_ids(kg, rows[:, 3], rows[:, 2], rows[:, 4])
    edge_sets, cot = {}, {}
    for model in FT_MODELS:
        e = EdgeSet(test_ids, _mask(draw, kg.n_facts), model=model, stage=ES, split=ID)
        edge_sets[e.key] = e
        cot[(model, ES)] = e.correct[h1] & e.correct[h2] if path_following else _mask(draw, len(rows))
    return kg, edge_sets, TwoHopEvidence.from_graph(kg, cot, rows)


@st.composite
def runs(draw, max_n: int = 6) -> dict:
    """A run's edge sets keyed (model, stage, split, prompt): stages es/con, splits id/near-id,
    prompts zero-shot and 3-shot, each split its own T (N ≤ ``max_n``) and weights."""
    out = {}
    for split in draw(_subset((ID, NEAR_ID), 1, None)):
        n = draw(_ints(1, max_n))
        test_ids = np.arange(n, dtype=np.int64) + (0 if split == "id" else 100)
        w = draw(weights(n))
        for stage in draw(_subset(STAGES, 1, None)):
            kn0, unk0 = _pair(draw, test_ids, w, None)
            for e in (kn0, unk0):
                out[(e.model, stage, split, "zero-shot")] = e
                out[(e.model, stage, split, "3-shot")] = _prompted(draw, e, None, True)
    return out
