"""A Hugging Face causal LM as the study's :class:`~kgsim.study.lm.LanguageModel`.

:class:`HFLM` wraps a transformers model and its tokenizer with a prompt format
(:mod:`llm_bridge.prompts`: natural-language Q/A, or kgsim's own tokens) and the decoding settings
of one stage. Prompts are texts, answers one-line generations (the first token with kgsim tokens),
gold answers :class:`~llm_bridge.datasets.QAExample` s (matched by ``fmt.correct`` with `match`).
The work is the format's and :mod:`llm_bridge.generation` 's batched code: ``answer`` is
``fmt.generate``, ``sample`` is ``fmt.generate_with_samples`` (greedy, then the samples of every
prompt read once; one forward pass for kgsim tokens), ``hidden`` is
:func:`llm_bridge.generation.embed` pooled as the format says.

>>> from kgsim.study.lm import LanguageModel
>>> isinstance(HFLM(None, None), LanguageModel)
True
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .generation import embed
from .prompts import TEXT


@dataclass(frozen=True)
class HFLM:
    """`model` and `tokenizer` answering prompts of format `fmt`: greedy answers of at most
    `max_new_tokens`, in batches of `batch_size`, scored with `match` (``em`` or ``contains``)."""

    model: object
    tokenizer: object
    fmt: object = TEXT
    match: str = "em"
    batch_size: int = 32
    max_new_tokens: int = 16
    progress: bool = False
    desc: str = "generate"

    def with_(self, **changes) -> HFLM:
        """The same model with other settings (e.g. another stage's batch size or matching)."""
        return dataclasses.replace(self, **changes)

    def _kw(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size, "progress": self.progress}

    def answer(self, prompts: Sequence[str]) -> list[str]:
        """Greedy one-line answers (``fmt.generate``)."""
        return self.fmt.generate(self.model, self.tokenizer, prompts, desc=self.desc, **self._kw())

    def score(self, answers: Sequence[str], gold: Sequence) -> np.ndarray:
        """bool [n]: answer i matches example gold[i] (``fmt.correct`` with `match`)."""
        return np.array([self.fmt.correct(a, e, self.match) for a, e in zip(answers, gold, strict=True)], bool)

    def sample(self, prompt_sets: Sequence[Sequence[str]], n_samples: int, temperature: float, seed: int,
               stream: str) -> list[tuple[list[str], list[list[str]]]]:
        """Per prompt set: greedy answers and `n_samples` batches of sampled answers. All sets go to
        ``fmt.generate_with_samples`` in one call, query-major (query i's prompts under every set
        next to each other), with one generator seeded by (`seed`, `stream`)."""
        sets = [list(p) for p in prompt_sets]
        n_sets, n = len(sets), len(sets[0]) if sets else 0
        if any(len(p) != n for p in sets):
            raise ValueError("every prompt set must hold one prompt per query")
        texts = [sets[j][i] for i in range(n) for j in range(n_sets)]
        greedy, samples = self.fmt.generate_with_samples(
            self.model, self.tokenizer, texts, n_samples=n_samples, temperature=temperature, seed=seed, stream=stream,
            desc=self.desc, **self._kw())
        k = n_samples
        return [([greedy[i * n_sets + j] for i in range(n)],
                 [[samples[(i * n_sets + j) * k + m] for i in range(n)] for m in range(k)]) for j in range(n_sets)]

    def hidden(self, prompts: Sequence[str]) -> np.ndarray:
        """float32 [n, d_model]: the last hidden layer pooled as ``fmt.pooling`` says (mean over the
        prompt's tokens, or its last token; :func:`llm_bridge.generation.embed`)."""
        return embed(self.model, self.tokenizer, prompts, self.batch_size, pooling=self.fmt.pooling)


__all__ = ["HFLM"]
