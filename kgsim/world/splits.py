"""Known/Unknown pools, balanced fine-tuning sets, dev and test sets (science.md §3 steps 4-6).

Subjects are split first (:func:`assign_qa_subjects`): a share of subjects also appear in
question-answer form in pretraining ("QA subjects"); every fine-tuning, dev and test fact is drawn
from the *other* subjects, so extraction is always measured on facts the model saw only as
statements. Then :func:`make_splits` draws, over the fine-tuning relations R_ft:

- ``ft_known`` / ``ft_unknown``: equal-size sets with the same count per relation; Known = shown
  at least ``known_min_exposure`` times (or a measured mask, e.g. SliCK), Unknown = never shown
  (or measured Unknown);
- ``dev``: held-out known facts of R_ft (Early Stop selection);
- ``test["id"]``: held-out known facts of R_ft;
- ``test["near-id"]``: known facts of *other* relations about the *same* subjects as the
  fine-tuning and ID facts (relation shift, entity overlap: graph distance 0);
- ``test["open-world"]``: known facts of other relations about *other* subjects; by
  ``splits.open_world``: ``"typed"`` prefers subjects whose type no fine-tuning relation takes
  (relation, entity and type shift), ``"factorial"`` draws the facts evenly over the cells of
  subject type × answer type × the subject's graph distance to the fine-tuning subjects, with the
  relations even within each cell (:func:`factorial_take`), so each factor's levels are compared on
  equal footing;
- ``two_hop``: composed queries (s, r1∘r2) over non-QA subjects whose two hops are both known;
- ``demos``: per relation, up to ``n_demo_pool`` facts of QA subjects reserved for few-shot
  demonstrations.

Real graphs (kgsim.world.loaded). A query (s, r) with several true answers takes part through one
fact, its most-shown answer (:func:`query_representatives`): it is fine-tuned on that answer and
tested with any (:meth:`KnowledgeGraph.is_correct`), and a query never lands in two sets. A relation
whose demonstration pool holds fewer than ``min_demo_pool`` facts (when that key is set) stays out
of fine-tuning, tests and SliCK (``meta["prompt_relations"]`` lists the others); the fine-tuning
relations are named (``ft_relation_names``) or chosen among those that can supply their share. A
graph too small for a size raises ConfigError naming the key and the largest value that fits.

All sets are pairwise disjoint; :meth:`Splits.check_disjoint` verifies it and
:func:`make_splits` calls it before returning.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kgsim.core.config import ConfigError, SplitConfig
from kgsim.core.kg import KnowledgeGraph
from kgsim.core.names import OW_FACTORIAL

TEST_SPLITS = ("id", "near-id", "open-world")
OW_TYPED_RULE = "other relations, other subjects, subject types no fine-tuning relation takes"
OW_FACTORIAL_RULE = ("other relations, other subjects, even over subject type x answer type x graph distance, "
                     "relations even within each cell")


@dataclass
class Splits:
    qa_subjects: np.ndarray                    # bool [n_entities]
    ft_relations: np.ndarray                   # int  [n_ft_relations]
    ft_known: np.ndarray                       # fact ids
    ft_unknown: np.ndarray
    dev: np.ndarray
    test: dict[str, np.ndarray]                # split name -> fact ids
    two_hop: np.ndarray                        # int [n, 5] rows (s, r1, r2, m, a)
    demos: dict[int, np.ndarray]               # relation -> fact ids (QA subjects)
    meta: dict = field(default_factory=dict)

    def named_sets(self) -> dict[str, np.ndarray]:
        sets = {"ft_known": self.ft_known, "ft_unknown": self.ft_unknown, "dev": self.dev}
        sets |= {f"test/{k}": v for k, v in self.test.items()}
        sets["demos"] = np.concatenate(list(self.demos.values())) if self.demos else np.zeros(0, np.int64)
        return sets

    def check_disjoint(self) -> None:
        """Raise AssertionError naming the two sets if any fact lies in two of them."""
        sets = self.named_sets()
        names = list(sets)
        for i, a in enumerate(names):
            if len(np.unique(sets[a])) != len(sets[a]):
                raise AssertionError(f"split {a!r} holds a fact twice")
            for b in names[i + 1:]:
                both = np.intersect1d(sets[a], sets[b])
                if len(both):
                    raise AssertionError(f"splits {a!r} and {b!r} share {len(both)} facts, e.g. {both[:3].tolist()}")

    def save(self, path: str | Path) -> None:
        arrays = {"qa_subjects": self.qa_subjects, "ft_relations": self.ft_relations, "ft_known": self.ft_known,
                  "ft_unknown": self.ft_unknown, "dev": self.dev, "two_hop": self.two_hop}
        arrays |= {f"test__{k}": v for k, v in self.test.items()}
        arrays |= {f"demos__{r}": v for r, v in self.demos.items()}
        np.savez_compressed(path, meta=np.array(json.dumps(self.meta)), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "Splits":
        with np.load(path, allow_pickle=False) as z:
            test = {k[6:]: z[k] for k in z.files if k.startswith("test__")}
            demos = {int(k[7:]): z[k] for k in z.files if k.startswith("demos__")}
            return cls(z["qa_subjects"], z["ft_relations"], z["ft_known"], z["ft_unknown"], z["dev"], test,
                       z["two_hop"], demos, json.loads(str(z["meta"])))

    def summary(self) -> dict:
        return {"qa_subjects": int(self.qa_subjects.sum()), "ft_relations": self.ft_relations.tolist(),
                "ft_known": len(self.ft_known), "ft_unknown": len(self.ft_unknown), "dev": len(self.dev),
                "test": {k: len(v) for k, v in self.test.items()}, "two_hop": len(self.two_hop),
                "demos_per_relation": {int(r): len(v) for r, v in self.demos.items()}} | self.meta


def assign_qa_subjects(n_entities: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """bool [n_entities]: a uniformly drawn `share` of entities whose facts also appear as QA documents."""
    mask = np.zeros(n_entities, bool)
    mask[rng.permutation(n_entities)[: int(round(share * n_entities))]] = True
    return mask


def query_representatives(kg: KnowledgeGraph) -> np.ndarray:
    """bool [n_facts]: one fact per query (s, r), the one shown most often in pretraining (the lowest
    id among ties). A multi-answer query enters fine-tuning with this answer and is tested with any
    (:meth:`KnowledgeGraph.is_correct`); in a functional graph every fact is its query's."""
    ids = np.arange(kg.n_facts)
    key = kg.query_keys(kg.s, kg.r)
    order = np.lexsort((ids, -kg.exposure, key))
    first = np.ones(kg.n_facts, bool)
    first[1:] = key[order][1:] != key[order][:-1]
    rep = np.zeros(kg.n_facts, bool)
    rep[order[first]] = True
    return rep


def prompt_relations(kg: KnowledgeGraph, splits: "Splits") -> np.ndarray:
    """The relations with a full enough demonstration pool for k-shot prompts and SliCK (all of them
    in worlds saved before the pool could be short)."""
    rels = splits.meta.get("prompt_relations")
    return np.arange(kg.n_relations) if rels is None else np.asarray(rels, np.int64)


def probe_candidates(kg: KnowledgeGraph, splits: "Splits") -> np.ndarray:
    """Fact ids SliCK categorises: one per query of a statement-only subject, in a relation with a
    full enough demonstration pool (the candidates for fine-tuning, dev and test sets)."""
    ok = query_representatives(kg) & ~splits.qa_subjects[kg.s] & np.isin(kg.r, prompt_relations(kg, splits))
    return np.flatnonzero(ok)


def _take(pool: np.ndarray, n: int, key: str, what: str, rng: np.random.Generator, hint: str = "") -> np.ndarray:
    if n > len(pool):
        fits = f"the largest {key} that fits is {len(pool)}" if len(pool) else (hint or "no value fits")
        raise ConfigError(f"{key} = {n}: only {len(pool)} {what} exist in this graph; {fits}")
    return np.sort(rng.choice(pool, n, replace=False))


def _per_relation(n: int, k: int) -> np.ndarray:
    per = np.full(k, n // k)
    per[: n % k] += 1
    return per


def _largest_balanced(avail: np.ndarray, n: int) -> int:
    """The largest size <= n whose per-relation split (:func:`_per_relation`) fits `avail`."""
    while n > 0 and (_per_relation(n, len(avail)) > avail).any():
        n -= 1
    return n


def _balanced(known: np.ndarray, unknown: np.ndarray, kg: KnowledgeGraph, ft_rels: np.ndarray, n: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Equal-size Known and Unknown sets with the same number of facts per relation."""
    r = kg.r
    avail = np.array([min((r[known] == rel).sum(), (r[unknown] == rel).sum()) for rel in ft_rels])
    per = _per_relation(n, len(ft_rels))
    if (per > avail).any():
        i = int(np.argmax(per > avail))
        rel = int(ft_rels[i])
        kn, unk = int((r[known] == rel).sum()), int((r[unknown] == rel).sum())
        best = _largest_balanced(avail, n)
        fits = (f"the largest splits.ft_size that fits is {best}" if best else
                "no splits.ft_size fits: choose other splits.ft_relation_names, or a graph with more "
                + ("never-shown facts (graph.never_exposed_share)" if not unk else "known facts"))
        raise ConfigError(f"splits.ft_size = {n}: fine-tuning relation {kg.relation_name(rel)!r} has {kn} known and "
                          f"{unk} unknown candidate facts, {per[i]} of each needed; {fits}")
    kn, unk = [], []
    for rel, k in zip(ft_rels, per):
        kn.append(np.sort(rng.choice(known[r[known] == rel], int(k), replace=False)))
        unk.append(np.sort(rng.choice(unknown[r[unknown] == rel], int(k), replace=False)))
    return np.sort(np.concatenate(kn)), np.sort(np.concatenate(unk))


def _demo_pools(kg: KnowledgeGraph, qa_subjects: np.ndarray, rep: np.ndarray, cfg: SplitConfig,
                rng: np.random.Generator) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Per relation, up to ``n_demo_pool`` exposed facts of QA subjects (one per query) for
    demonstrations; and the relations whose pool holds at least ``min_demo_pool`` (0: the full
    ``n_demo_pool``, and a relation short of it is an error)."""
    ids = np.arange(kg.n_facts)
    need = cfg.min_demo_pool or cfg.n_demo_pool
    demos, ok = {}, []
    for rel in range(kg.n_relations):
        pool = ids[(kg.r == rel) & qa_subjects[kg.s] & (kg.exposure > 0) & rep]
        demos[rel] = np.sort(rng.choice(pool, min(cfg.n_demo_pool, len(pool)), replace=False))
        if len(pool) >= need:
            ok.append(rel)
        elif not cfg.min_demo_pool:
            raise ConfigError(f"splits.n_demo_pool = {cfg.n_demo_pool}: relation {kg.relation_name(rel)!r} has only "
                              f"{len(pool)} facts of QA subjects to draw demonstrations from; set splits.min_demo_pool "
                              "(>= the largest of prompts.k_shots and probe.n_shots) to keep relations with fewer "
                              "out of fine-tuning and tests (the realkg preset does)")
    return demos, np.array(ok, np.int64)


def make_splits(kg: KnowledgeGraph, qa_subjects: np.ndarray, cfg: SplitConfig, rng: np.random.Generator,
                known: np.ndarray | None = None, unknown: np.ndarray | None = None) -> Splits:
    """Draw every split (see the module docstring). `known` / `unknown` (bool [n_facts]) replace the
    ground-truth exposure rule, e.g. with measured SliCK categories. Raises ConfigError naming the
    key, and the largest value that fits, when the graph holds too few facts for the requested sizes.

    A query with several true answers takes part through one fact (:func:`query_representatives`):
    Known when that answer was shown at least ``known_min_exposure`` times, Unknown when no answer
    of the query was ever shown."""
    exposure = kg.exposure
    rep = query_representatives(kg)
    truth_known, truth_unknown = rep & (exposure >= cfg.known_min_exposure), rep & (exposure == 0)
    measured = known is not None
    known = truth_known if known is None else np.asarray(known, bool) & rep
    unknown_given = unknown is not None
    unknown = truth_unknown if unknown is None else np.asarray(unknown, bool) & rep
    if cfg.ft_relations > kg.n_relations:
        raise ConfigError(f"splits.ft_relations = {cfg.ft_relations}: the graph has {kg.n_relations} relations")
    plain_subject = ~qa_subjects[kg.s]
    ids = np.arange(kg.n_facts)

    # Demonstrations: QA subjects' exposed facts, per relation (they are never tested).
    demos, prompt_rels = _demo_pools(kg, qa_subjects, rep, cfg, rng)
    promptable = np.isin(kg.r, prompt_rels)
    ft_rels = _ft_relations(kg, cfg, prompt_rels, plain_subject & truth_known, plain_subject & truth_unknown)
    in_ft = np.isin(kg.r, ft_rels)

    base = plain_subject & rep & in_ft
    ft_known, ft_unknown = _balanced(ids[base & known], ids[base & unknown & ~known], kg, ft_rels, cfg.ft_size, rng)
    used = np.zeros(kg.n_facts, bool)
    used[ft_known] = used[ft_unknown] = True
    dev = _take(ids[base & known & ~used], cfg.dev_size, "splits.dev_size", "held-out known facts of the "
                "fine-tuning relations (after the fine-tuning sets)", rng, "lower splits.ft_size")
    used[dev] = True
    tuned = used.copy()                             # facts seen in fine-tuning or model selection
    test_id = _take(ids[base & known & ~used], cfg.test_size, "splits.test_size", "held-out known facts of "
                    "the fine-tuning relations (after fine-tuning and dev sets)", rng, "lower splits.ft_size")
    used[test_id] = True

    ft_subjects = np.zeros(kg.n_entities, bool)
    ft_subjects[kg.s[np.concatenate([ft_known, ft_unknown, dev, test_id])]] = True
    other = plain_subject & rep & promptable & ~in_ft & known & ~used
    near = _take(ids[other & ft_subjects[kg.s]], cfg.test_size, "splits.test_size",
                 "known facts of other relations about the fine-tuning subjects (Near-ID)", rng,
                 "the graph's fine-tuning subjects need known facts of other relations")
    ft_types = np.unique(kg.relation_domain[ft_rels])
    far = other & ~ft_subjects[kg.s]
    ow_what, ow_hint = ("known facts of other relations about other subjects (Open-World)",
                        "the graph needs known facts of other relations about subjects not fine-tuned on")
    if cfg.open_world == OW_FACTORIAL:
        ow_rule = OW_FACTORIAL_RULE
        if far.sum() < cfg.test_size:
            _take(ids[far], cfg.test_size, "splits.test_size", ow_what, rng, ow_hint)      # raises
        cells = open_world_cells(kg, np.concatenate([ft_known, ft_unknown]))
        open_world = factorial_take(ids[far], cells[far], kg.r[far], cfg.test_size, rng)
    else:
        far_typed = far & ~np.isin(kg.entity_types[kg.s], ft_types)
        ow_rule = OW_TYPED_RULE
        if far_typed.sum() < cfg.test_size:
            far_typed, ow_rule = far, "other relations, other subjects (too few of other types)"
        open_world = _take(ids[far_typed], cfg.test_size, "splits.test_size", ow_what, rng, ow_hint)

    two_hop = kg.two_hop()
    if len(two_hop):
        both_known = (~qa_subjects[two_hop[:, 0]]) & _hop_known(kg, two_hop, known & ~tuned)
        two_hop = two_hop[both_known]
        if len(two_hop) > cfg.test_size:
            two_hop = two_hop[np.sort(rng.choice(len(two_hop), cfg.test_size, replace=False))]
    meta = {"open_world_rule": ow_rule,
            "known_rule": "measured" if measured else f"exposure >= {cfg.known_min_exposure}",
            "unknown_rule": "measured" if unknown_given else "exposure == 0",
            "ft_relation_names": [kg.relation_name(int(r)) for r in ft_rels]}
    if len(prompt_rels) < kg.n_relations:
        meta["prompt_relations"] = prompt_rels.tolist()
    splits = Splits(qa_subjects, ft_rels, ft_known, ft_unknown, dev,
                    {"id": test_id, "near-id": near, "open-world": open_world}, two_hop, demos, meta)
    splits.check_disjoint()
    return splits


def split_pools(kg: KnowledgeGraph, splits: Splits) -> dict[str, np.ndarray]:
    """bool [n_facts] per structural split: every fact its test set could have been drawn from
    before the Known filter, by the rules of :func:`make_splits` (one fact per query, statement-only
    subjects, never a fine-tuning or dev fact):

    - ``id``: the fine-tuning relations;
    - ``near-id``: other relations with a demonstration pool, about subjects of the fine-tuning, dev
      or ID test facts;
    - ``open-world``: those relations about other subjects, of types no fine-tuning relation takes
      where the split's own rule asked for it (``meta["open_world_rule"]``)."""
    rep = query_representatives(kg) & ~splits.qa_subjects[kg.s]
    tuned = np.zeros(kg.n_facts, bool)
    tuned[np.concatenate([splits.ft_known, splits.ft_unknown, splits.dev])] = True
    in_ft = np.isin(kg.r, splits.ft_relations)
    ft_subjects = np.zeros(kg.n_entities, bool)
    ft_subjects[kg.s[np.concatenate([splits.ft_known, splits.ft_unknown, splits.dev, splits.test["id"]])]] = True
    other = rep & ~in_ft & np.isin(kg.r, prompt_relations(kg, splits))
    far = other & ~ft_subjects[kg.s]
    if splits.meta.get("open_world_rule") == OW_TYPED_RULE:
        far &= ~np.isin(kg.entity_types[kg.s], np.unique(kg.relation_domain[splits.ft_relations]))
    return {"id": rep & in_ft & ~tuned, "near-id": other & ft_subjects[kg.s], "open-world": far}


def filtered_tests(kg: KnowledgeGraph, splits: Splits, filters: dict[str, np.ndarray], size: int,
                   rng_for) -> dict[tuple[str, str], np.ndarray]:
    """Per structural split and filter (name -> bool [n_facts], the facts it lets through): up to
    `size` facts of the split's :func:`split_pools` pool that pass the filter (all of them when fewer),
    sorted; ``rng_for(filter, split)`` gives each draw its own generator."""
    pools = split_pools(kg, splits)
    cells = (open_world_cells(kg, np.concatenate([splits.ft_known, splits.ft_unknown]))
             if splits.meta.get("open_world_rule") == OW_FACTORIAL_RULE else None)
    out = {}
    for name, mask in filters.items():
        for split, pool in pools.items():
            ids = np.flatnonzero(pool & mask)
            if len(ids) <= size:
                out[(split, name)] = ids
            elif split == "open-world" and cells is not None:          # the run's own Open-World rule
                out[(split, name)] = factorial_take(ids, cells[ids], kg.r[ids], size, rng_for(name, split))
            else:
                out[(split, name)] = np.sort(rng_for(name, split).choice(ids, size, replace=False))
    return out


def subject_distance(kg: KnowledgeGraph, sources: np.ndarray) -> np.ndarray:
    """float [n_entities]: each entity's number of hops to the nearest of `sources` (entity ids) in
    the undirected entity graph of every fact (inf where unreachable).

    >>> kg = KnowledgeGraph(entity_types=[0] * 5, relation_domain=[0], relation_range=[0], s=[0, 1, 3],
    ...                     r=[0, 0, 0], a=[1, 2, 4], exposure=[1, 1, 1], popularity=np.full(5, 0.2))
    >>> subject_distance(kg, np.array([0])).tolist()
    [0.0, 1.0, 2.0, inf, inf]
    """
    from scipy.sparse import coo_matrix  # scipy: a heavy library, loaded when needed
    from scipy.sparse.csgraph import dijkstra

    n = kg.n_entities
    adj = coo_matrix((np.ones(kg.n_facts), (kg.s, kg.a)), shape=(n, n)).tocsr()
    sources = np.unique(np.asarray(sources, np.int64))
    if not len(sources):
        return np.full(n, np.inf)
    return dijkstra(adj, directed=False, indices=sources, unweighted=True, min_only=True)


DISTANCE_LEVELS = ("0 hops", "1 hop", "2 hops", "3+ hops", "unreachable")


def distance_level(d: float) -> str:
    """The graph-distance factor's level of a hop count: one of :data:`DISTANCE_LEVELS`."""
    return "unreachable" if not np.isfinite(d) else DISTANCE_LEVELS[min(int(d), 3)]


def open_world_cells(kg: KnowledgeGraph, ft_facts: np.ndarray) -> np.ndarray:
    """int64 [n_facts]: each fact's cell of the factorial Open-World draw, a code of (subject type,
    answer type, graph-distance level of the subject to the subjects of `ft_facts`) — the factors
    :func:`kgsim.study.results.factor_gaps` reports."""
    dist = subject_distance(kg, kg.s[np.asarray(ft_facts, np.int64)])
    level = np.full(kg.n_entities, DISTANCE_LEVELS.index("unreachable"), np.int64)
    finite = np.isfinite(dist)
    level[finite] = np.minimum(dist[finite], 3).astype(np.int64)
    n_types = int(max(kg.entity_types.max(initial=0), kg.relation_range.max(initial=0))) + 1
    st, at = kg.entity_types[kg.s], kg.relation_range[kg.r]
    return (st * n_types + at) * len(DISTANCE_LEVELS) + level[kg.s]


def even_counts(avail: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """int [k]: `n` items spread over k groups holding `avail` each, as evenly as they allow: every
    group gets the same share, a group with fewer gets all it has and the rest is shared again; the
    last units left over go to groups drawn at random. Requires ``n <= avail.sum()``.

    >>> even_counts(np.array([1, 10, 10]), 12, np.random.default_rng(0)).tolist()   # 1 + 11 shared by two
    [1, 5, 6]
    """
    avail = np.asarray(avail, np.int64)
    take = np.zeros(len(avail), np.int64)
    left = int(n)
    while left > 0:
        room = np.flatnonzero(take < avail)
        share = left // len(room)
        if share == 0:                                      # fewer units than open groups: drawn
            take[rng.choice(room, left, replace=False)] += 1
            break
        add = np.minimum(avail[room] - take[room], share)
        take[room] += add
        left -= int(add.sum())
    return take


def factorial_take(ids: np.ndarray, cells: np.ndarray, relations: np.ndarray, n: int,
                   rng: np.random.Generator) -> np.ndarray:
    """`n` of the fact `ids` (sorted), spread evenly over their `cells` (:func:`even_counts`) and,
    within each cell, evenly over their `relations`; uniformly drawn within a (cell, relation)."""
    ids, cells, relations = (np.asarray(x, np.int64) for x in (ids, cells, relations))
    out = []
    cell_ids = np.unique(cells)
    per_cell = even_counts(np.array([(cells == c).sum() for c in cell_ids]), n, rng)
    for c, k in zip(cell_ids, per_cell):
        if not k:
            continue
        in_c = cells == c
        rels = np.unique(relations[in_c])
        per_rel = even_counts(np.array([(in_c & (relations == r)).sum() for r in rels]), int(k), rng)
        for r, m in zip(rels, per_rel):
            if m:
                out.append(rng.choice(ids[in_c & (relations == r)], int(m), replace=False))
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


def instruct_pool(kg: KnowledgeGraph, splits: Splits) -> np.ndarray:
    """bool [n_facts]: the facts an instruct stage may tune on (kgsim.study.stages.instruct_stage): the
    QA subjects' facts of relations outside the fine-tuning relations, less every hop of every
    composed query of the graph (a 2-hop query's bridge may be a QA subject). Every fine-tuning, dev
    and one-hop test fact has a non-QA subject and the fine-tuning relations do not move when Known
    is measured, so none of them is here under either Known rule."""
    pool = splits.qa_subjects[kg.s] & ~np.isin(kg.r, splits.ft_relations)
    q = kg.two_hop()
    if len(q):
        hops = np.concatenate([kg.fact_ids(q[:, 0], q[:, 1], q[:, 3]), kg.fact_ids(q[:, 3], q[:, 2], q[:, 4])])
        pool[hops[hops >= 0]] = False
    return pool


def _ft_relations(kg: KnowledgeGraph, cfg: SplitConfig, prompt_rels: np.ndarray, known: np.ndarray,
                  unknown: np.ndarray) -> np.ndarray:
    """The fine-tuning relations: those named by ``splits.ft_relation_names``, else chosen by
    :func:`choose_ft_relations` among relations with a demonstration pool, preferring those that can
    supply their share of the fine-tuning, dev and ID test sets (ground truth Known / Unknown, so the
    choice does not move when Known is measured)."""
    names = [kg.relation_name(r) for r in range(kg.n_relations)]
    if cfg.ft_relation_names:
        out = []
        for name in cfg.ft_relation_names:
            if name not in names:
                shown = ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
                raise ConfigError(f"splits.ft_relation_names = {list(cfg.ft_relation_names)}: the graph has no "
                                  f"relation {name!r} (it has {shown})")
            rel = names.index(name)
            if rel not in prompt_rels:
                raise ConfigError(f"splits.ft_relation_names = {list(cfg.ft_relation_names)}: relation {name!r} has "
                                  f"fewer than splits.min_demo_pool = {cfg.min_demo_pool} demonstration facts")
            out.append(rel)
        return np.array(sorted(set(out)), np.int64)
    if cfg.ft_relations > len(prompt_rels):
        raise ConfigError(f"splits.ft_relations = {cfg.ft_relations}: only {len(prompt_rels)} relations have at least "
                          f"splits.min_demo_pool = {cfg.min_demo_pool or cfg.n_demo_pool} demonstration facts; the "
                          f"largest splits.ft_relations that fits is {len(prompt_rels)}" if len(prompt_rels) else
                          f"splits.ft_relations = {cfg.ft_relations}: no relation has splits.min_demo_pool = "
                          f"{cfg.min_demo_pool} demonstration facts (exposed facts of QA subjects); lower it")
    share = -(-cfg.ft_size // cfg.ft_relations)                          # per relation: FT-Known, FT-Unknown,
    held = -(-(cfg.dev_size + cfg.test_size) // cfg.ft_relations)        # and its part of dev and ID test
    n_known, n_unknown = np.bincount(kg.r[known], minlength=kg.n_relations), np.bincount(kg.r[unknown],
                                                                                          minlength=kg.n_relations)
    able = (n_known >= share + held) & (n_unknown >= share)
    return choose_ft_relations(kg, cfg.ft_relations, candidates=prompt_rels, able=able)


def choose_ft_relations(kg: KnowledgeGraph, n: int, candidates: np.ndarray | None = None,
                        able: np.ndarray | None = None) -> np.ndarray:
    """The fine-tuning relations: `n` of the `candidates` (default: all), first those `able` to
    supply the fine-tuning sets, sharing the subject type that has the most relations (so other
    relations of the same subjects remain for Near-ID and other types for Open-World), preferring
    relations that are not the second hop of a composed pair, then those with the most
    single-answer facts."""
    types, counts = np.unique(kg.relation_domain, return_counts=True)
    main = types[np.argmax(counts)]
    second_hops = set(kg.composed[:, 1].tolist())
    size = np.bincount(kg.r[kg.n_answers() == 1], minlength=kg.n_relations)
    able = np.ones(kg.n_relations, bool) if able is None else able
    cands = range(kg.n_relations) if candidates is None else [int(r) for r in candidates]
    order = sorted(cands, key=lambda r: (not able[r], kg.relation_domain[r] != main, r in second_hops,
                                          -int(size[r]), r))
    return np.array(sorted(order[:n]), np.int64)


def _hop_known(kg: KnowledgeGraph, two_hop: np.ndarray, known: np.ndarray) -> np.ndarray:
    """bool [n]: both hop facts (s, r1, m) and (m, r2, a) of each 2-hop row are known."""
    f1 = kg.fact_ids(two_hop[:, 0], two_hop[:, 1], two_hop[:, 3])
    f2 = kg.fact_ids(two_hop[:, 3], two_hop[:, 2], two_hop[:, 4])
    return (f1 >= 0) & (f2 >= 0) & known[np.maximum(f1, 0)] & known[np.maximum(f2, 0)]
