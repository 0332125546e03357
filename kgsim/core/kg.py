"""The knowledge-graph type: typed entities, typed relations, facts as aligned integer arrays.

A :class:`KnowledgeGraph` stores its facts as three aligned int64 arrays ``s, r, a`` (subject,
relation, answer) plus ``exposure`` (how often each fact is shown in pretraining). Generators and the
TSV loader that build one live in :mod:`kgsim.world.graph`; this module is the type alone, so that
:mod:`proofs` can state the theory over it without the world layer.

Answer rule. A query is an (s, r) pair. Synthetic graphs are functional (one answer per (s, r));
a loaded graph may hold several true answers for one (s, r), and then **any** of them counts as a
correct answer to the query: :meth:`KnowledgeGraph.is_correct` implements the rule everywhere.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["KnowledgeGraph", "subject_mentions", "fitted_popularity_exponent", "fit_zipf_exponent"]

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
