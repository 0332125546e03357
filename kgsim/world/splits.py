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
- ``test["open-world"]``: known facts of other relations about *other* subjects, preferring
  subjects whose type no fine-tuning relation takes (relation, entity and type shift);
- ``two_hop``: composed queries (s, r1∘r2) over non-QA subjects whose two hops are both known;
- ``demos``: per relation, facts of QA subjects reserved for few-shot demonstrations.

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

TEST_SPLITS = ("id", "near-id", "open-world")


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


def _take(pool: np.ndarray, n: int, key: str, what: str, rng: np.random.Generator) -> np.ndarray:
    if n > len(pool):
        raise ConfigError(f"{key} = {n}: only {len(pool)} {what} exist in this graph")
    return np.sort(rng.choice(pool, n, replace=False))


def _balanced(known: np.ndarray, unknown: np.ndarray, r: np.ndarray, ft_rels: np.ndarray, n: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Equal-size Known and Unknown sets with the same number of facts per relation."""
    per = np.full(len(ft_rels), n // len(ft_rels))
    per[: n % len(ft_rels)] += 1
    kn, unk = [], []
    for rel, k in zip(ft_rels, per):
        kn.append(_take(known[r[known] == rel], int(k), "splits.ft_size",
                        f"known facts of fine-tuning relation {rel} (needed {k} per relation)", rng))
        unk.append(_take(unknown[r[unknown] == rel], int(k), "splits.ft_size",
                         f"unknown facts of fine-tuning relation {rel} (needed {k} per relation)", rng))
    return np.sort(np.concatenate(kn)), np.sort(np.concatenate(unk))


def make_splits(kg: KnowledgeGraph, qa_subjects: np.ndarray, cfg: SplitConfig, rng: np.random.Generator,
                known: np.ndarray | None = None, unknown: np.ndarray | None = None) -> Splits:
    """Draw every split (see the module docstring). `known` / `unknown` (bool [n_facts]) replace the
    ground-truth exposure rule, e.g. with measured SliCK categories. Raises ConfigError naming the
    key when the graph holds too few facts for the requested sizes."""
    exposure = kg.exposure
    measured = known is not None
    known = exposure >= cfg.known_min_exposure if known is None else np.asarray(known, bool)
    unknown_given = unknown is not None
    unknown = exposure == 0 if unknown is None else np.asarray(unknown, bool)
    if cfg.ft_relations > kg.n_relations:
        raise ConfigError(f"splits.ft_relations = {cfg.ft_relations}: the graph has {kg.n_relations} relations")
    single = kg.n_answers() == 1                    # multi-answer queries are kept out of FT/test sets
    plain_subject = ~qa_subjects[kg.s]
    ft_rels = choose_ft_relations(kg, cfg.ft_relations)
    in_ft = np.isin(kg.r, ft_rels)
    ids = np.arange(kg.n_facts)

    # Demonstrations: QA subjects' exposed facts, per relation (they are never tested).
    demos = {}
    for rel in range(kg.n_relations):
        pool = ids[(kg.r == rel) & qa_subjects[kg.s] & (exposure > 0) & single]
        demos[rel] = np.sort(rng.choice(pool, min(cfg.n_demo_pool, len(pool)), replace=False))
        if len(demos[rel]) < cfg.n_demo_pool:
            raise ConfigError(f"splits.n_demo_pool = {cfg.n_demo_pool}: relation {rel} has only {len(pool)} "
                              "facts of QA subjects to draw demonstrations from")

    base = plain_subject & single & in_ft
    ft_known, ft_unknown = _balanced(ids[base & known], ids[base & unknown & ~known], kg.r, ft_rels,
                                     cfg.ft_size, rng)
    used = np.zeros(kg.n_facts, bool)
    used[ft_known] = used[ft_unknown] = True
    dev = _take(ids[base & known & ~used], cfg.dev_size, "splits.dev_size", "held-out known facts of the "
                "fine-tuning relations (after the fine-tuning sets)", rng)
    used[dev] = True
    tuned = used.copy()                             # facts seen in fine-tuning or model selection
    test_id = _take(ids[base & known & ~used], cfg.test_size, "splits.test_size", "held-out known facts of "
                    "the fine-tuning relations (after fine-tuning and dev sets)", rng)
    used[test_id] = True

    ft_subjects = np.zeros(kg.n_entities, bool)
    ft_subjects[kg.s[np.concatenate([ft_known, ft_unknown, dev, test_id])]] = True
    other = plain_subject & single & ~in_ft & known & ~used
    near = _take(ids[other & ft_subjects[kg.s]], cfg.test_size, "splits.test_size",
                 "known facts of other relations about the fine-tuning subjects (Near-ID)", rng)
    ft_types = np.unique(kg.relation_domain[ft_rels])
    far = other & ~ft_subjects[kg.s]
    far_typed = far & ~np.isin(kg.entity_types[kg.s], ft_types)
    ow_rule = "other relations, other subjects, subject types no fine-tuning relation takes"
    if far_typed.sum() < cfg.test_size:
        far_typed, ow_rule = far, "other relations, other subjects (too few of other types)"
    open_world = _take(ids[far_typed], cfg.test_size, "splits.test_size",
                       "known facts of other relations about other subjects (Open-World)", rng)

    two_hop = kg.two_hop()
    if len(two_hop):
        both_known = (~qa_subjects[two_hop[:, 0]]) & _hop_known(kg, two_hop, known & ~tuned)
        two_hop = two_hop[both_known]
        if len(two_hop) > cfg.test_size:
            two_hop = two_hop[np.sort(rng.choice(len(two_hop), cfg.test_size, replace=False))]
    meta = {"open_world_rule": ow_rule,
            "known_rule": "measured" if measured else f"exposure >= {cfg.known_min_exposure}",
            "unknown_rule": "measured" if unknown_given else "exposure == 0"}
    splits = Splits(qa_subjects, ft_rels, ft_known, ft_unknown, dev,
                    {"id": test_id, "near-id": near, "open-world": open_world}, two_hop, demos, meta)
    splits.check_disjoint()
    return splits


def choose_ft_relations(kg: KnowledgeGraph, n: int) -> np.ndarray:
    """The fine-tuning relations: `n` relations sharing the subject type that has the most relations
    (so other relations of the same subjects remain for Near-ID and other types for Open-World),
    preferring relations that are not the second hop of a composed pair, then the most populated."""
    types, counts = np.unique(kg.relation_domain, return_counts=True)
    main = types[np.argmax(counts)]
    second_hops = set(kg.composed[:, 1].tolist())
    size = np.bincount(kg.r, minlength=kg.n_relations)
    order = sorted(range(kg.n_relations),
                   key=lambda r: (kg.relation_domain[r] != main, r in second_hops, -int(size[r]), r))
    return np.array(sorted(order[:n]), np.int64)


def _hop_known(kg: KnowledgeGraph, two_hop: np.ndarray, known: np.ndarray) -> np.ndarray:
    """bool [n]: both hop facts (s, r1, m) and (m, r2, a) of each 2-hop row are known."""
    f1 = kg.fact_ids(two_hop[:, 0], two_hop[:, 1], two_hop[:, 3])
    f2 = kg.fact_ids(two_hop[:, 3], two_hop[:, 2], two_hop[:, 4])
    return (f1 >= 0) & (f2 >= 0) & known[np.maximum(f1, 0)] & known[np.maximum(f2, 0)]
