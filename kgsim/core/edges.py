"""EdgeSet: the accessible edges E(θ, P) of a model on a test set under one prompt (science.md D1),
and TwoHopQueries: the composed queries a run measured, with their hop facts.

An EdgeSet is a boolean mask over a test set T (N facts, identified by their global fact ids), plus
what it was measured on: ``(model, stage, split, prompt)`` in the names of :mod:`kgsim.core.names`.
Where the answers are entities of the graph (kgsim's one-hop measurements) it also keeps the greedy
answer to each fact as an entity id (-1: the answer names no entity), so wrong answers can be
classified (:mod:`kgsim.core.error_classes`); ``answers`` is None where they are not kept (text
answers, the 2-hop queries, ``edges.json`` files written before).
Set algebra between EdgeSets requires the same T. kgsim's probe and llm_bridge's evaluation both
produce EdgeSets; ``proofs`` and the report only consume them.

>>> T = np.array([10, 11, 12, 13])
>>> e_kn = EdgeSet(T, np.array([1, 1, 1, 0], bool), model="ft-known", stage="es", split="id")
>>> e_unk = EdgeSet(T, np.array([1, 0, 0, 0], bool), model="ft-unknown", stage="es", split="id")
>>> e_kn.size, e_kn.fact(), (e_kn - e_unk).ids().tolist(), e_kn.key
(3, 0.75, [11, 12], ('ft-known', 'es', 'id', 'zero-shot'))
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kgsim.core.io import InputFileError, read_json
from kgsim.core.names import ZERO_SHOT, label


@dataclass(frozen=True, eq=False)
class EdgeSet:
    test_ids: np.ndarray                 # int64 [N]: global fact ids of the test set T
    correct: np.ndarray                  # bool  [N]: fact i of T is answered correctly
    model: str = ""                      # e.g. "ft-known" (kgsim.core.names)
    stage: str = ""                      # e.g. "es", "con"; "" for the base model
    prompt: str = ZERO_SHOT              # e.g. "4-shot", "cot"
    split: str = ""                      # e.g. "id", "near-id", "sim-1", "2hop"
    weights: np.ndarray | None = None    # float [N], sums to 1; None = uniform
    meta: dict = field(default_factory=dict)
    answers: np.ndarray | None = None    # int64 [N]: entity id of each greedy answer (-1: no entity); None = not kept

    def __post_init__(self) -> None:
        object.__setattr__(self, "test_ids", np.asarray(self.test_ids, dtype=np.int64))
        object.__setattr__(self, "correct", np.asarray(self.correct, dtype=bool))
        if self.test_ids.shape != self.correct.shape or self.test_ids.ndim != 1:
            raise ValueError(f"test_ids {self.test_ids.shape} and correct {self.correct.shape} must be equal 1-d shapes")
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            if w.shape != self.test_ids.shape or (w < 0).any():
                raise ValueError("weights must be non-negative with one weight per test fact")
            object.__setattr__(self, "weights", w / w.sum() if w.sum() > 0 else w)
        if self.answers is not None:
            a = np.asarray(self.answers, dtype=np.int64)
            if a.shape != self.test_ids.shape:
                raise ValueError(f"answers {a.shape} must have one entry per test fact {self.test_ids.shape}")
            object.__setattr__(self, "answers", a)

    @property
    def key(self) -> tuple[str, str, str, str]:
        """(model, stage, split, prompt): how proofs and the report key a run's edge sets."""
        return (self.model, self.stage, self.split, self.prompt)

    @property
    def label(self) -> str:
        """``model/stage`` (``model`` alone without a stage), as results.json keys accuracies."""
        return label(self.model, self.stage)

    # --- sizes -----------------------------------------------------------------------------
    @property
    def n(self) -> int:
        """N = |T|."""
        return int(self.test_ids.size)

    @property
    def size(self) -> int:
        """|E|."""
        return int(self.correct.sum())

    def fact(self) -> float:
        """Fact(θ, P) = w(E): the (weighted) share of T answered correctly."""
        if self.n == 0:
            return 0.0
        if self.weights is None:
            return self.size / self.n
        return float(self.weights[self.correct].sum())

    def ids(self) -> np.ndarray:
        """The global fact ids in E."""
        return self.test_ids[self.correct]

    # --- set algebra over the same T ------------------------------------------------------
    def _check(self, other: "EdgeSet") -> None:
        if self.n != other.n or not np.array_equal(self.test_ids, other.test_ids):
            raise ValueError(f"EdgeSets over different test sets ({self.split!r}, N={self.n} vs "
                             f"{other.split!r}, N={other.n})")

    def _with(self, mask: np.ndarray, name: str) -> "EdgeSet":
        return EdgeSet(self.test_ids, mask, model=name, stage=self.stage, prompt=self.prompt, split=self.split,
                       weights=self.weights)

    def __and__(self, other: "EdgeSet") -> "EdgeSet":
        self._check(other)
        return self._with(self.correct & other.correct, f"({self.model} & {other.model})")

    def __or__(self, other: "EdgeSet") -> "EdgeSet":
        self._check(other)
        return self._with(self.correct | other.correct, f"({self.model} | {other.model})")

    def __sub__(self, other: "EdgeSet") -> "EdgeSet":
        self._check(other)
        return self._with(self.correct & ~other.correct, f"({self.model} - {other.model})")

    def issubset(self, other: "EdgeSet") -> bool:
        self._check(other)
        return not bool((self.correct & ~other.correct).any())

    # --- persistence ----------------------------------------------------------------------
    def to_json(self) -> dict:
        """A JSON-ready dict (ids as lists); small enough for test sets of thousands of facts. The
        answers, when kept, are one int list under ``"answers"`` (the key is absent otherwise)."""
        d = {"model": self.model, "stage": self.stage, "split": self.split, "prompt": self.prompt,
             "n": self.n, "size": self.size, "fact": self.fact(),
             "test_ids": self.test_ids.tolist(), "correct": self.correct.astype(int).tolist(),
             "weights": None if self.weights is None else self.weights.tolist(), "meta": self.meta}
        return d if self.answers is None else d | {"answers": self.answers.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "EdgeSet":
        """The EdgeSet of :meth:`to_json`; also reads files written before the stage had its own field
        (``"model": "ft-known/es"``, ``"test_set"`` for the split) or without answers."""
        model, stage = d["model"], d.get("stage")
        if stage is None:
            model, _, stage = model.partition("/")
        return cls(np.array(d["test_ids"], np.int64), np.array(d["correct"], bool), model=model, stage=stage,
                   prompt=d["prompt"], split=d["split"] if "split" in d else d["test_set"],
                   weights=None if d.get("weights") is None else np.array(d["weights"]), meta=d.get("meta", {}),
                   answers=None if d.get("answers") is None else np.array(d["answers"], np.int64))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: str | Path) -> "EdgeSet":
        return cls.from_json(json.loads(Path(path).read_text()))

    def __repr__(self) -> str:
        return (f"EdgeSet(model={self.model!r}, stage={self.stage!r}, split={self.split!r}, prompt={self.prompt!r}, "
                f"|E|={self.size}, N={self.n}, Fact={self.fact():.3f})")


@dataclass(frozen=True, eq=False)
class TwoHopQueries:
    """The composed queries (s, r₁∘r₂, a) a run measured, and the fact ids of their hops.

    Query i has the unique bridge m; its first hop (s, r₁, m) is fact ``hop1_ids[i]``, its second
    (m, r₂, a) fact ``hop2_ids[i]``. ``query_ids[i]`` is query i's id in the 2-hop EdgeSets'
    ``test_ids`` (kgsim: its position, ``arange(Q)``; the bridge: its row in ``kg.two_hop()``).
    ``rows`` (int [Q, 5], rows (s, r1, r2, m, a)) is kept when known. ``measured`` says whether CoT
    was measured on them (hop ids present).

    >>> q = TwoHopQueries(np.array([[0, 1, 2, 3, 4]]), np.array([7]), np.array([9]))
    >>> q.n, q.measured, q.query_ids.tolist(), TwoHopQueries.from_json(q.to_json()).hop2_ids.tolist()
    (1, True, [0], [9])
    >>> TwoHopQueries.none().measured
    False
    """

    rows: np.ndarray                          # int64 [Q, 5] (s, r1, r2, m, a); [0, 5] when unknown
    hop1_ids: np.ndarray                      # int64 [Q] (or [0] when CoT was not measured)
    hop2_ids: np.ndarray                      # int64 [Q]
    query_ids: np.ndarray | None = None       # int64 [Q]; None = arange(Q)

    def __post_init__(self) -> None:
        rows = np.asarray(self.rows, np.int64).reshape(-1, 5)
        h1, h2 = np.asarray(self.hop1_ids, np.int64), np.asarray(self.hop2_ids, np.int64)
        if h1.shape != h2.shape or h1.ndim != 1:
            raise ValueError(f"hop1_ids {h1.shape} and hop2_ids {h2.shape} must be equal 1-d shapes")
        n = max(len(rows), len(h1))
        q = np.arange(n, dtype=np.int64) if self.query_ids is None else np.asarray(self.query_ids, np.int64)
        if len(rows) not in (0, n) or len(h1) not in (0, n) or q.shape != (n,):
            raise ValueError(f"{len(rows)} rows, {len(h1)} hop ids and {q.shape} query ids do not describe "
                             "the same queries")
        for name, v in (("rows", rows), ("hop1_ids", h1), ("hop2_ids", h2), ("query_ids", q)):
            object.__setattr__(self, name, v)

    @classmethod
    def none(cls) -> "TwoHopQueries":
        """No 2-hop queries (a graph without composed relations, or a run that measured none)."""
        return cls(np.zeros((0, 5), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))

    @property
    def n(self) -> int:
        return int(self.query_ids.size)

    @property
    def measured(self) -> bool:
        """CoT was measured on these queries: there are some, with their hop fact ids."""
        return self.n > 0 and self.hop1_ids.size == self.n

    def to_json(self) -> dict:
        hops = self.hop1_ids.size > 0
        return {"rows": self.rows.tolist(), "hop1": self.hop1_ids.tolist() if hops else None,
                "hop2": self.hop2_ids.tolist() if hops else None, "query_ids": self.query_ids.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "TwoHopQueries":
        """Also reads the untyped dict of older ``edges.json`` files (no ``query_ids``)."""
        rows = np.asarray(d.get("rows", []), np.int64).reshape(-1, 5)
        empty = np.zeros(0, np.int64)
        h1, h2 = (empty if d.get(k) is None else np.asarray(d[k], np.int64) for k in ("hop1", "hop2"))
        q = d.get("query_ids")
        return cls(rows, h1, h2, None if q is None else np.asarray(q, np.int64))


def read_edges_json(path: Path) -> tuple[list[EdgeSet], TwoHopQueries]:
    """One seed's ``edges.json``: its edge sets and its 2-hop queries with their hop facts."""
    what = "a kgsim run's seed-*/edges.json"
    data = read_json(path, what, require={"edge_sets": list, "two_hop": dict})
    try:
        return [EdgeSet.from_json(e) for e in data["edge_sets"]], TwoHopQueries.from_json(data["two_hop"])
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:   # Overflow: an int past int64
        raise InputFileError(f"{path}: an edge set or the 2-hop record is malformed ({type(e).__name__}: "
                             f"{str(e)[:80]}; expected {what})") from None
