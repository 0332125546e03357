"""Selection rules both model families share: balanced fine-tuning sets and similarity splits.

They work on positions (fact ids, or indices into a list of examples), so kgsim's worlds and the
bridge's datasets call the same code.

**Balanced FT-Known / FT-Unknown** (science.md D2): the two sets have equal size and the same
number of facts of each fine-tuning relation; within a relation, facts are drawn uniformly
without replacement. ``n`` is shared among the relations round robin (the first ``n % R``
relations get one more); with ``strict`` every relation must supply its share (a world is built
for it: kgsim), otherwise a relation gives at most what both its pools hold and the round robin
moves on (real data: the bridge).

**Similarity** (the paper's Near-ID / Open-World): test items ranked by their largest cosine
similarity to the fine-tuning queries, cut into equal quantile buckets (``sim-1`` most similar)
or in two at a quantile.

>>> rng = np.random.default_rng(0)
>>> kn, unk = balanced_sets(np.arange(0, 6), np.arange(6, 12), np.array([0, 0, 0, 1, 1, 1] * 2), [0, 1], 4, rng)
>>> len(kn), len(unk), np.bincount(np.array([0, 0, 0, 1, 1, 1] * 2)[kn]).tolist()
(4, 4, [2, 2])
>>> [b.tolist() for b in similarity_buckets(np.array([0.1, 0.9, 0.5, 0.7]), 2)]
[[1, 3], [0, 2]]
>>> [x.tolist() for x in split_at_quantile(np.array([0.9, 0.1, 0.5, 0.7]), 0.5)]
[[0, 3], [1, 2]]
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def round_robin_counts(capacity: Sequence[int], n: int) -> np.ndarray:
    """int [R]: n items shared among R groups one at a time in turn, each group taking at most
    its `capacity` (so fewer than n in all when the capacities run out).

    >>> round_robin_counts([5, 5, 5], 7).tolist(), round_robin_counts([1, 5, 0], 4).tolist()
    ([3, 2, 2], [1, 3, 0])
    """
    cap = np.asarray(capacity, np.int64)
    counts = np.zeros(len(cap), np.int64)
    while counts.sum() < n and (counts < cap).any():
        for i in np.flatnonzero(counts < cap):
            if counts.sum() < n:
                counts[i] += 1
    return counts


def balanced_counts(known_per_relation: Sequence[int], unknown_per_relation: Sequence[int], n: int, *,
                    strict: bool = True) -> np.ndarray:
    """int [R]: how many facts of each relation go into each of FT-Known and FT-Unknown (module
    docstring). Raises ValueError when `strict` and a relation's pools hold fewer than its share,
    naming the first such relation's position, its pool sizes and its share.

    >>> balanced_counts([9, 9, 9], [9, 9, 9], 7).tolist(), balanced_counts([4, 1, 0], [2, 5, 6], 5, strict=False).tolist()
    ([3, 2, 2], [2, 1, 0])
    """
    cap = np.minimum(np.asarray(known_per_relation, np.int64), np.asarray(unknown_per_relation, np.int64))
    if not strict:
        return round_robin_counts(cap, n)
    share = round_robin_counts([n] * len(cap), n)
    short = np.flatnonzero(share > cap)
    if len(short):
        i = int(short[0])
        raise ValueError(f"relation #{i} has {known_per_relation[i]} known and {unknown_per_relation[i]} unknown "
                         f"facts, {share[i]} of each needed")
    return share


def balanced_sets(known: np.ndarray, unknown: np.ndarray, relation_of: np.ndarray, relations: Sequence[int],
                  n: int, rng: np.random.Generator, *, strict: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(FT-Known, FT-Unknown): sorted ids drawn from the `known` and `unknown` pools (ids whose
    relation is ``relation_of[id]``) with :func:`balanced_counts` per relation of `relations`, each
    relation's facts drawn uniformly without replacement, relation by relation in the order given,
    known then unknown. Raises ValueError as :func:`balanced_counts` (before drawing anything)."""
    known, unknown = np.asarray(known, np.int64), np.asarray(unknown, np.int64)
    r_kn, r_unk = relation_of[known], relation_of[unknown]
    pools = [(known[r_kn == rel], unknown[r_unk == rel]) for rel in relations]
    counts = balanced_counts([len(a) for a, _ in pools], [len(b) for _, b in pools], n, strict=strict)
    kn, unk = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for (a, b), k in zip(pools, counts.tolist()):
        kn.append(np.sort(rng.choice(a, k, replace=False)))
        unk.append(np.sort(rng.choice(b, k, replace=False)))
    return np.sort(np.concatenate(kn)), np.sort(np.concatenate(unk))


def similarity_buckets(sim: np.ndarray, n_buckets: int) -> list[np.ndarray]:
    """``n_buckets`` equal quantile buckets of positions by `sim` (float [n]), most similar first
    (ties keep input order); each bucket's positions sorted."""
    order = np.argsort(-np.asarray(sim), kind="stable")
    return [np.sort(part) for part in np.array_split(order, n_buckets)]


def split_at_quantile(sim: np.ndarray, quantile: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(near, far) positions: the ``ceil(n * (1 - quantile))`` most similar, and the rest (each
    sorted; ties keep input order)."""
    order = np.argsort(-np.asarray(sim), kind="stable")
    n_near = int(math.ceil(len(order) * (1.0 - quantile)))
    return np.sort(order[:n_near]), np.sort(order[n_near:])


def max_cosine(candidates: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """float [n]: each candidate vector's largest cosine similarity to the `reference` vectors
    (float [n, C] and [m, C], computed in their dtype; zeros when either is empty)."""
    if not len(candidates) or not len(reference):
        return np.zeros(len(candidates))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)  # noqa: E731
    return (unit(np.asarray(candidates)) @ unit(np.asarray(reference)).T).max(axis=1)


__all__ = ["balanced_counts", "balanced_sets", "max_cosine", "round_robin_counts", "similarity_buckets", "split_at_quantile"]
