"""EdgeSet: the accessible edges E(θ, P) of a model on a test set under one prompt (science.md D1).

An EdgeSet is a boolean mask over a test set T (N facts, identified by their global fact ids), plus
what it was measured on. Set algebra between EdgeSets requires the same T. kgsim's probe and
llm_bridge's evaluation both produce EdgeSets; ``proofs`` and the report only consume them.

>>> T = np.array([10, 11, 12, 13])
>>> e_kn = EdgeSet(T, np.array([1, 1, 1, 0], bool), model="ft-known", prompt="zero-shot")
>>> e_unk = EdgeSet(T, np.array([1, 0, 0, 0], bool), model="ft-unknown", prompt="zero-shot")
>>> e_kn.size, e_kn.fact(), (e_kn - e_unk).ids().tolist()
(3, 0.75, [11, 12])
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True, eq=False)
class EdgeSet:
    test_ids: np.ndarray                 # int64 [N]: global fact ids of the test set T
    correct: np.ndarray                  # bool  [N]: fact i of T is answered correctly
    model: str = ""                      # e.g. "ft-known/es"
    prompt: str = "zero-shot"            # e.g. "4-shot", "cot"
    test_set: str = ""                   # e.g. "id", "near-id", "open-world"
    weights: np.ndarray | None = None    # float [N], sums to 1; None = uniform
    meta: dict = field(default_factory=dict)

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
            raise ValueError(f"EdgeSets over different test sets ({self.test_set!r}, N={self.n} vs "
                             f"{other.test_set!r}, N={other.n})")

    def _with(self, mask: np.ndarray, label: str) -> "EdgeSet":
        return EdgeSet(self.test_ids, mask, model=label, prompt=self.prompt, test_set=self.test_set,
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
        """A JSON-ready dict (ids as lists); small enough for test sets of thousands of facts."""
        return {"model": self.model, "prompt": self.prompt, "test_set": self.test_set,
                "n": self.n, "size": self.size, "fact": self.fact(),
                "test_ids": self.test_ids.tolist(), "correct": self.correct.astype(int).tolist(),
                "weights": None if self.weights is None else self.weights.tolist(), "meta": self.meta}

    @classmethod
    def from_json(cls, d: dict) -> "EdgeSet":
        return cls(np.array(d["test_ids"], np.int64), np.array(d["correct"], bool), model=d["model"],
                   prompt=d["prompt"], test_set=d["test_set"],
                   weights=None if d.get("weights") is None else np.array(d["weights"]), meta=d.get("meta", {}))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: str | Path) -> "EdgeSet":
        return cls.from_json(json.loads(Path(path).read_text()))

    def __repr__(self) -> str:
        return (f"EdgeSet(model={self.model!r}, prompt={self.prompt!r}, test_set={self.test_set!r}, "
                f"|E|={self.size}, N={self.n}, Fact={self.fact():.3f})")
