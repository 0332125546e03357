"""The two interfaces a model family plugs into the study, and the stages both families share.

A **LanguageModel** answers a batch of prompts. Its prompt and answer types are its family's own:
kgsim's GPT (:class:`kgsim.nn.probe.KgsimLM`) reads token rows (a
:class:`kgsim.world.prompts.PromptBatch`) and answers with one token id per prompt; a Hugging Face
model (:class:`llm_bridge.lm.HFLM`) reads prompt texts and answers with one line of text. Gold
answers are the family's too: fact ids of the kgsim graph, or :class:`llm_bridge.datasets.QAExample`.
What the study asks of either:

- ``answer(prompts)``: the greedy answer to every prompt (one token, or one line of several tokens);
- ``score(answers, gold)``: bool [n], each answer right for its query (kgsim: the token names a
  true answer of (s, r); text: exact or contains match against the gold answers). Kept apart
  from ``answer`` because SliCK scores samples that no greedy pass produced;
- ``sample(prompt_sets, n_samples, temperature, seed, stream)``: SliCK's probe: for each prompt
  set (the same queries under one exemplar set) its greedy answers and ``n_samples`` answers
  sampled at ``temperature``, drawn from one generator seeded by ``(seed, stream)`` for the whole
  call (so one call over all exemplar sets gives the same draws however the family batches them);
- ``hidden(prompts)``: float [n, C], a representation of each prompt (the last hidden layer at
  the last token, or mean-pooled), for the similarity buckets.

A **FineTuner** fine-tunes a copy of the base model: ``fit(train, dev, out) -> FitResult``, with
the Early Stop checkpoint (the best dev accuracy, earliest on ties), the Convergence checkpoint
(the last step) and the dev-accuracy history. kgsim's is :class:`kgsim.study.stages.KgsimFineTuner`
(its own loop, :func:`kgsim.nn.train.train`); the bridge's is :class:`llm_bridge.finetune.HFFineTuner`
(the transformers Trainer, full or LoRA).

The shared stages: :func:`answer_and_score` / :func:`correct` / :func:`accuracy` (a test set's
accuracy under one prompt: every EdgeSet of both families, and the dev accuracy of both
fine-tuners) and :func:`slick` (the SliCK rates of :mod:`kgsim.core.known` from greedy answers and
samples over exemplar sets).

>>> class Echo:                  # answers each prompt with itself; right when that is the gold
...     def answer(self, prompts): return list(prompts)
...     def score(self, answers, gold): return np.array([a == g for a, g in zip(answers, gold)], bool)
...     def sample(self, prompt_sets, n_samples, temperature, seed, stream):
...         return [(list(p), [list(p)] * n_samples) for p in prompt_sets]
...     def hidden(self, prompts): return np.zeros((len(prompts), 1))
>>> isinstance(Echo(), LanguageModel), correct(Echo(), ["a", "b"], ["a", "c"]).tolist()
(True, [True, False])
>>> r = slick(Echo(), [["a", "b"], ["a", "x"]], ["a", "x"], n_samples=2, temperature=0.5, seed=0, stream="s")
>>> r.p_greedy.tolist(), r.category.tolist()
([1.0, 0.5], ['HighlyKnown', 'MaybeKnown'])
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kgsim.core.known import categories, category_counts
from kgsim.core.names import UNKNOWN


@runtime_checkable
class LanguageModel(Protocol):
    """A model the study can probe and measure (see the module docstring)."""

    def answer(self, prompts) -> Sequence:
        """The greedy answer to each prompt, in input order."""

    def score(self, answers: Sequence, gold: Sequence) -> np.ndarray:
        """bool [n]: answer i is right for query i (gold: the family's gold answers)."""

    def sample(self, prompt_sets: Sequence, n_samples: int, temperature: float, seed: int,
               stream: str) -> list[tuple[Sequence, list[Sequence]]]:
        """For each prompt set: (greedy answers, `n_samples` batches of sampled answers, one per
        prompt each), from one generator seeded by (`seed`, `stream`)."""

    def hidden(self, prompts) -> np.ndarray:
        """float [n, C]: each prompt's representation."""


@dataclass(frozen=True)
class FitResult:
    """What a fine-tuning gives the study: the Early Stop and Convergence checkpoints (a file or a
    folder, as the family writes them), the ES step and its dev accuracy, the last step, the
    dev-accuracy history (rows holding at least ``step`` and ``dev_acc``) and the family's own
    summary (kept as it was written before this interface existed)."""

    es: Path
    con: Path
    es_step: int
    es_dev_acc: float
    final_step: int
    history: list[dict]
    summary: dict = field(default_factory=dict)


@runtime_checkable
class FineTuner(Protocol):
    """Fine-tunes a copy of the base model on `train`, with Early Stop on `dev`, into `out`."""

    def fit(self, train: Any, dev: Any, out: Path) -> FitResult:
        ...


def answer_and_score(lm: LanguageModel, prompts, gold: Sequence) -> tuple[Sequence, np.ndarray]:
    """(greedy answers, bool [n] correct) of one prompt batch built for the queries of `gold`: a
    test set's measurement under one prompt."""
    answers = lm.answer(prompts)
    return answers, np.asarray(lm.score(answers, gold), bool)


def correct(lm: LanguageModel, prompts, gold: Sequence) -> np.ndarray:
    """bool [n]: which queries `lm` answers right greedily (:func:`answer_and_score`)."""
    return answer_and_score(lm, prompts, gold)[1]


def accuracy(lm: LanguageModel, prompts, gold: Sequence) -> float:
    """The share of queries answered right (NaN for none)."""
    ok = correct(lm, prompts, gold)
    return float(ok.mean()) if len(ok) else float("nan")


@dataclass(frozen=True)
class SliCKRates:
    """SliCK's two rates per query, and the greedy answers under each exemplar set."""

    p_greedy: np.ndarray       # float [n]: share of exemplar sets answered right greedily
    p_sample: np.ndarray       # float [n]: share of samples (over every set) that are right
    greedy: list = field(default_factory=list)   # one answer batch per exemplar set

    @property
    def category(self) -> np.ndarray:
        """object [n]: each query's SliCK category (:func:`kgsim.core.known.categories`)."""
        return categories(self.p_greedy, self.p_sample)

    @property
    def known(self) -> np.ndarray:
        """Coarse Known: any exemplar set or sample answered right."""
        return self.category != UNKNOWN

    def counts(self) -> dict[str, int]:
        return category_counts(self.category)


def slick(lm: LanguageModel, prompt_sets: Sequence, gold: Sequence, *, n_samples: int, temperature: float,
          seed: int, stream: str) -> SliCKRates:
    """SliCK (Gekhman et al. 2024) of the queries of `gold`: `prompt_sets` holds one prompt batch
    per exemplar set (every batch: the same queries in the same order); P_greedy is the share of
    sets answered right greedily, P_sample the share of the ``n_samples`` samples per set that are
    right; the category is :func:`kgsim.core.known.categories` of the two."""
    n = len(gold)
    greedy_ok, sample_ok, sets, greedy = np.zeros(n), np.zeros(n), 0, []
    for answers, samples in lm.sample(prompt_sets, n_samples, temperature, seed, stream):
        sets += 1
        greedy.append(answers)
        greedy_ok += lm.score(answers, gold)
        for draw in samples[:n_samples]:
            sample_ok += lm.score(draw, gold)
    if not sets:
        raise ValueError("SliCK needs at least one exemplar set")
    return SliCKRates(greedy_ok / sets, sample_ok / max(sets * n_samples, 1), greedy)


__all__ = ["FineTuner", "FitResult", "LanguageModel", "SliCKRates", "accuracy", "answer_and_score", "correct",
           "slick"]
