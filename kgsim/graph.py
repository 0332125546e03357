"""Knowledge graphs: typed entities, typed relations, facts as integer arrays, exposure counts.

A :class:`KnowledgeGraph` stores its facts as three aligned int64 arrays ``s, r, a`` (subject,
relation, answer) plus ``exposure`` (how often each fact is shown in pretraining). Synthetic
generators are registered by name in :data:`GENERATORS`; real graphs load from TSV with
:func:`load_tsv`.

Answer rule. A query is an (s, r) pair. Synthetic graphs are functional (one answer per (s, r));
a loaded graph may hold several true answers for one (s, r), and then **any** of them counts as a
correct answer to the query: :meth:`KnowledgeGraph.is_correct` implements the rule everywhere.

>>> from kgsim.config import GraphConfig
>>> from kgsim.rng import stream
>>> kg = generate(GraphConfig(n_entities=50, n_types=2, n_relations=4, n_composed=1), stream(0, "graph"))
>>> kg.n_facts == len(kg.s) == len(kg.exposure)
True
>>> int(kg.answers(int(kg.s[0]), int(kg.r[0]))[0]) == int(kg.a[0])
True
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .config import ConfigError, GraphConfig


@dataclass(eq=False)
class KnowledgeGraph:
    entity_types: np.ndarray             # int64 [n_entities]: type id of each entity
    relation_domain: np.ndarray          # int64 [n_relations]: subject type of each relation
    relation_range: np.ndarray           # int64 [n_relations]: answer type of each relation
    s: np.ndarray                        # int64 [n_facts]
    r: np.ndarray                        # int64 [n_facts]
    a: np.ndarray                        # int64 [n_facts]
    exposure: np.ndarray                 # int64 [n_facts]: pretraining repetitions
    popularity: np.ndarray               # float [n_entities]: subject popularity weight (sums to 1)
    composed: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))  # [n_pairs, 2] (r1, r2)
    entity_names: list[str] | None = None
    relation_names: list[str] | None = None
    generator: str = ""

    def __post_init__(self) -> None:
        for name in ("entity_types", "relation_domain", "relation_range", "s", "r", "a", "exposure"):
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=np.int64))
        self.composed = np.asarray(self.composed, dtype=np.int64).reshape(-1, 2)
        n = len(self.s)
        if not (len(self.r) == len(self.a) == len(self.exposure) == n):
            raise ValueError("s, r, a and exposure must have one entry per fact")
        if n and (min(self.s.min(), self.a.min()) < 0 or max(self.s.max(), self.a.max()) >= self.n_entities):
            raise ValueError("entity id out of range")
        if n and (self.r.min() < 0 or self.r.max() >= self.n_relations):
            raise ValueError("relation id out of range")
        # (s, r) -> answers index: facts sorted by key = s * n_relations + r.
        key = self.s * self.n_relations + self.r
        self._order = np.argsort(key, kind="stable")
        self._sorted_keys = key[self._order]

    # --- sizes and names ------------------------------------------------------------------
    @property
    def n_entities(self) -> int:
        return int(self.entity_types.size)

    @property
    def n_relations(self) -> int:
        return int(self.relation_domain.size)

    @property
    def n_facts(self) -> int:
        return int(self.s.size)

    def entity_name(self, e: int) -> str:
        return self.entity_names[e] if self.entity_names else f"e{e}"

    def relation_name(self, r: int) -> str:
        return self.relation_names[r] if self.relation_names else f"r{r}"

    # --- the (s, r) -> answers index ------------------------------------------------------
    def query_keys(self, s: np.ndarray, r: np.ndarray) -> np.ndarray:
        return np.asarray(s, np.int64) * self.n_relations + np.asarray(r, np.int64)

    def answers(self, s: int, r: int) -> np.ndarray:
        """All true answers of the query (s, r) (empty if the graph holds none)."""
        k = s * self.n_relations + r
        lo, hi = np.searchsorted(self._sorted_keys, [k, k + 1])
        return self.a[self._order[lo:hi]]

    def fact_ids(self, s, r, a) -> np.ndarray:
        """Vectorised (s, r, a) -> fact id: int64, -1 where the graph holds no such fact. The sorted
        key index is built on first use and kept."""
        if getattr(self, "_fact_order", None) is None:
            keys = (self.s * self.n_relations + self.r) * self.n_entities + self.a
            self._fact_order = np.argsort(keys, kind="stable")
            self._fact_keys = keys[self._fact_order]
        q = self.query_keys(s, r) * self.n_entities + np.asarray(a, np.int64)
        if not len(self._fact_keys):
            return np.full(q.shape, -1, np.int64)
        pos = np.minimum(np.searchsorted(self._fact_keys, q), len(self._fact_keys) - 1)
        return np.where(self._fact_keys[pos] == q, self._fact_order[pos], -1)

    def is_correct(self, s: np.ndarray, r: np.ndarray, guess: np.ndarray) -> np.ndarray:
        """Vectorised answer rule: guess[i] is correct iff (s[i], r[i], guess[i]) is a true fact."""
        return self.fact_ids(s, r, guess) >= 0

    def n_answers(self) -> np.ndarray:
        """int [n_facts]: how many true answers the query of each fact has (1 in a functional graph)."""
        key = self.s * self.n_relations + self.r
        _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
        return counts[inv]

    def two_hop(self) -> np.ndarray:
        """int64 [n, 5] rows (s, r1, r2, m, a): composed queries (s, r1∘r2) with their unique bridge m."""
        rows = []
        for r1, r2 in self.composed:
            f1 = np.flatnonzero(self.r == r1)
            m = self.a[f1]
            k2 = self.query_keys(m, np.full_like(m, r2))
            lo = np.searchsorted(self._sorted_keys, k2)
            hi = np.searchsorted(self._sorted_keys, k2, side="right")
            ok = (hi - lo) == 1                          # exactly one answer: a unique path
            f2 = self._order[np.minimum(lo, len(self._order) - 1)]
            rows.append(np.stack([self.s[f1], np.full_like(m, r1), np.full_like(m, r2), m, self.a[f2]], 1)[ok])
        return np.concatenate(rows) if rows else np.zeros((0, 5), np.int64)

    # --- export ---------------------------------------------------------------------------
    def to_networkx(self):
        """A networkx MultiDiGraph: nodes carry `type`, edges carry `relation` (key) and `exposure`."""
        import networkx as nx

        g = nx.MultiDiGraph()
        g.add_nodes_from((e, {"type": int(t), "name": self.entity_name(e)}) for e, t in enumerate(self.entity_types))
        g.add_edges_from((int(s), int(a), self.relation_name(int(r)), {"exposure": int(x)})
                         for s, r, a, x in zip(self.s, self.r, self.a, self.exposure))
        return g

    def to_tsv(self, path: str | Path) -> None:
        """Write `head<TAB>relation<TAB>tail` lines (names), loadable by :func:`load_tsv`."""
        names = np.array([self.entity_name(e) for e in range(self.n_entities)], dtype=object)
        rels = np.array([self.relation_name(r) for r in range(self.n_relations)], dtype=object)
        lines = names[self.s] + "\t" + rels[self.r] + "\t" + names[self.a]
        Path(path).write_text("\n".join(lines) + "\n")

    def save(self, path: str | Path) -> None:
        """Save as a compressed .npz (arrays) holding its names as JSON."""
        meta = {"entity_names": self.entity_names, "relation_names": self.relation_names, "generator": self.generator}
        np.savez_compressed(path, entity_types=self.entity_types, relation_domain=self.relation_domain,
                            relation_range=self.relation_range, s=self.s, r=self.r, a=self.a,
                            exposure=self.exposure, popularity=self.popularity, composed=self.composed,
                            meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: str | Path) -> "KnowledgeGraph":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return cls(**{k: z[k] for k in z.files if k != "meta"}, **meta)

    def summary(self) -> dict:
        """Counts, degree and exposure histograms (JSON-ready)."""
        out_deg = np.bincount(self.s, minlength=self.n_entities)
        in_deg = np.bincount(self.a, minlength=self.n_entities)
        exp_edges = [0, 1, 3, 6, 11, 21, 51, 10**9]
        exp_hist = np.histogram(self.exposure, bins=exp_edges)[0]
        return {
            "generator": self.generator,
            "n_entities": self.n_entities, "n_relations": self.n_relations, "n_facts": self.n_facts,
            "n_types": int(self.entity_types.max(initial=-1) + 1),
            "n_composed_pairs": int(len(self.composed)), "n_two_hop_queries": int(len(self.two_hop())),
            "multi_answer_queries": int(len(np.unique((self.s * self.n_relations + self.r)[self.n_answers() > 1]))),
            "never_exposed": int((self.exposure == 0).sum()),
            "mean_exposure_of_exposed": float(self.exposure[self.exposure > 0].mean()) if (self.exposure > 0).any() else 0.0,
            "total_exposure": int(self.exposure.sum()),
            "fitted_zipf_exponent": fitted_popularity_exponent(self),
            "exposure_histogram": {"bins": ["0", "1-2", "3-5", "6-10", "11-20", "21-50", ">50"],
                                   "counts": exp_hist.tolist()},
            "out_degree_histogram": _log_hist(out_deg), "in_degree_histogram": _log_hist(in_deg),
        }


def _log_hist(deg: np.ndarray) -> dict:
    edges = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 10**12]
    labels = [str(lo) if hi - 1 == lo else f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-2], edges[1:-1])]
    return {"bins": labels + [f">={edges[-2]}"],
            "counts": np.histogram(deg, bins=edges)[0].tolist()}


# --------------------------------------------------------------------------------------------
# Popularity and exposure
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


def subject_mentions(kg: KnowledgeGraph) -> np.ndarray:
    """Total pretraining exposure per subject (the realised popularity)."""
    return np.bincount(kg.s, weights=kg.exposure, minlength=kg.n_entities)


def fitted_popularity_exponent(kg: KnowledgeGraph, cap: int | None = None, min_count: float = 20.0) -> float:
    """The Zipf exponent of subject popularity as realised in the exposure counts.

    Per subject, the popularity-driven part of its exposure (its mentions beyond the one showing
    every exposed fact gets) divided by its number of exposed facts is proportional to its
    popularity weight. Subjects are ranked by that rate; the log-log slope is fitted over subjects
    none of whose facts hit the exposure cap and whose popularity-driven count is at least
    `min_count` (so Poisson noise and the cap do not bias the fit).
    """
    shown = kg.exposure > 0
    n_shown = np.bincount(kg.s[shown], minlength=kg.n_entities).astype(float)
    extra = np.bincount(kg.s[shown], weights=kg.exposure[shown] - 1, minlength=kg.n_entities)
    cap = int(kg.exposure.max(initial=0)) if cap is None else cap
    capped = np.bincount(kg.s[kg.exposure >= cap], minlength=kg.n_entities) > 0
    ok = n_shown > 0
    rate = np.where(ok, extra / np.maximum(n_shown, 1), 0.0)
    order = np.argsort(-rate, kind="stable")
    ranks = np.empty(kg.n_entities)
    ranks[order] = np.arange(1, kg.n_entities + 1)
    use = ok & ~capped & (extra >= min_count)
    if use.sum() < 3:
        return float("nan")
    return float(-np.polyfit(np.log(ranks[use]), np.log(rate[use]), 1)[0])


def fit_zipf_exponent(counts: np.ndarray, head: float = 0.2) -> float:
    """Least-squares slope of log count vs log rank over the top `head` share of ranks (counts > 0).

    >>> w = np.arange(1, 2001, dtype=float) ** -1.2
    >>> round(fit_zipf_exponent(w * 1e6), 2)
    1.2
    """
    c = np.sort(np.asarray(counts, float))[::-1]
    c = c[c > 0]
    m = max(int(len(c) * head), 3)
    c = c[:m]
    if len(c) < 3:
        return float("nan")
    slope = np.polyfit(np.log(np.arange(1, len(c) + 1)), np.log(c), 1)[0]
    return float(-slope)


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
    """A real graph from ``cfg.tsv_path``; exposure follows Zipf popularity ranked by degree."""
    return load_tsv(cfg.tsv_path, cfg, rng)


def generate(cfg: GraphConfig, rng: np.random.Generator) -> KnowledgeGraph:
    """Build the graph `cfg` describes with the registered generator ``cfg.generator``."""
    if cfg.generator not in GENERATORS:
        raise ConfigError(f"graph.generator = {cfg.generator!r}: unknown; choose one of {sorted(GENERATORS)}")
    return GENERATORS[cfg.generator](cfg, rng)


# --------------------------------------------------------------------------------------------
# Real graphs from TSV
# --------------------------------------------------------------------------------------------

class GraphFileError(ValueError):
    """A knowledge-graph file is malformed; the message names the file and line."""


def load_tsv(path: str | Path, cfg: GraphConfig | None = None, rng: np.random.Generator | None = None) -> KnowledgeGraph:
    """Load `head<TAB>relation<TAB>tail` lines. Several tails for one (head, relation) are allowed
    (a multi-answer query: any of them counts as correct). Empty files, lines without exactly
    three non-empty columns and repeated lines raise :class:`GraphFileError` naming the line.
    Entities get one type (0) and relations domain = range = 0; exposure counts are drawn from a
    Zipf popularity ranked by entity degree (most-connected = most popular)."""
    cfg = cfg or GraphConfig(generator="tsv", tsv_path=str(path))
    path = Path(path)
    if not path.is_file():
        raise GraphFileError(f"{path}: no such file")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not any(line.strip() for line in lines):
        raise GraphFileError(f"{path}: empty file (expected head<TAB>relation<TAB>tail lines)")
    ents: dict[str, int] = {}
    rels: dict[str, int] = {}
    seen: dict[tuple[str, str, str], int] = {}
    s, r, a = [], [], []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        cols = line.rstrip("\r").split("\t")
        if len(cols) != 3 or not all(c.strip() for c in cols):
            raise GraphFileError(f"{path}:{no}: expected 3 tab-separated columns (head, relation, tail), "
                                 f"got {len(cols)}: {line[:80]!r}")
        h, rel, t = (c.strip() for c in cols)
        if (h, rel, t) in seen:
            raise GraphFileError(f"{path}:{no}: duplicate of line {seen[(h, rel, t)]}: {line[:80]!r}")
        seen[(h, rel, t)] = no
        s.append(ents.setdefault(h, len(ents)))
        r.append(rels.setdefault(rel, len(rels)))
        a.append(ents.setdefault(t, len(ents)))
    s, r, a = (np.array(x, np.int64) for x in (s, r, a))
    n = len(ents)
    rng = rng if rng is not None else np.random.default_rng(0)
    degree = np.bincount(s, minlength=n) + np.bincount(a, minlength=n)
    w = np.arange(1, n + 1, dtype=np.float64) ** -cfg.zipf_exponent
    pop = np.empty(n)
    pop[np.argsort(-degree, kind="stable")] = w / w.sum()
    exposure = draw_exposure(pop[s], cfg, rng)
    return KnowledgeGraph(np.zeros(n, np.int64), np.zeros(len(rels), np.int64), np.zeros(len(rels), np.int64),
                          s, r, a, exposure, pop, np.zeros((0, 2), np.int64),
                          entity_names=list(ents), relation_names=list(rels), generator="tsv")
