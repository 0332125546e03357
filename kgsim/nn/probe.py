"""Probing kgsim's GPT: its answers to token prompts, and :class:`KgsimLM`, the model as the
study's :class:`~kgsim.study.lm.LanguageModel`.

All probing is batched: a prompt family gives equal-length token rows, so each pass is one dense
forward over many queries, with the LM head applied at the last position only. The model's answer
is the argmax over the whole vocabulary at that position (a non-entity token is a wrong answer);
it is correct when :meth:`KnowledgeGraph.is_correct` accepts it (any true answer of (s, r)).

SliCK's probe (:meth:`KgsimLM.sample`, categorised by :func:`kgsim.study.lm.slick`): under each
exemplar set, the greedy token and ``n_samples`` tokens drawn at ``temperature`` come from one
forward pass's logits; :func:`exemplar_batches` builds the exemplar sets' prompts.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from kgsim.core.kg import KnowledgeGraph
from kgsim.core.rng import torch_generator
from kgsim.nn.precision import bf16_autocast
from kgsim.world.corpus import Vocabulary
from kgsim.world.prompts import PromptBatch, draw_demonstrations, k_shot, zero_shot


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def iter_last_logits(model, tokens: np.ndarray, tokens_per_batch: int = 1 << 14, bf16: bool = False):
    """Yield (row slice, float32 logits [b, V] after the last token of those rows of `tokens` [n, T]),
    batch by batch, so that [n, V] never has to exist at once (100k queries x 12k tokens = 5 GB).

    Works with kgsim's GPT (hidden states + LM head at the last position only) and with any
    Hugging Face causal LM (``model(input_ids).logits[:, -1]``)."""
    model.eval()
    dev = _device(model)
    n, T = tokens.shape
    rows = max(1, tokens_per_batch // max(T, 1))
    for i in range(0, n, rows):
        idx = torch.as_tensor(tokens[i:i + rows], dtype=torch.long, device=dev)
        with bf16_autocast(dev.type, bf16):
            if hasattr(model, "hidden"):
                h, _ = model.hidden(idx)                         # [b, T, C]
                logits = model.lm_head(h[:, -1])                 # [b, V]
            else:
                logits = model(input_ids=idx).logits[:, -1]      # [b, V]
        yield slice(i, i + len(idx)), logits.float()


def last_logits(model, tokens: np.ndarray, **kw) -> torch.Tensor:
    """float32 [n, V]: every row's logits after its last token (see :func:`iter_last_logits`)."""
    parts = [lg for _, lg in iter_last_logits(model, tokens, **kw)]
    return torch.cat(parts) if parts else torch.zeros(0, 0)


def _tokens(prompts) -> np.ndarray:
    """The token rows of a prompt batch (or of token rows int [n, T] themselves)."""
    return prompts.tokens if isinstance(prompts, PromptBatch) else np.asarray(prompts, np.int64)


def answers(model, batch: PromptBatch | np.ndarray, **kw) -> np.ndarray:
    """int64 [n]: the greedy answer token after each prompt row."""
    tokens = _tokens(batch)
    out = np.zeros(len(tokens), np.int64)
    for sl, logits in iter_last_logits(model, tokens, **kw):
        out[sl] = logits.argmax(-1).cpu().numpy()
    return out


def correct_of(kg: KnowledgeGraph, vocab: Vocabulary, s: np.ndarray, r: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """bool [n]: answer token tokens[i] names a true answer of (s[i], r[i])."""
    ent = tokens - vocab.entity_offset
    is_entity = (ent >= 0) & (ent < vocab.n_entities)
    return is_entity & kg.is_correct(s, r, np.where(is_entity, ent, 0))


def exemplar_batches(kg: KnowledgeGraph, vocab: Vocabulary, facts: np.ndarray, demos: dict[int, np.ndarray],
                     n_shots: int, n_sets: int, rng: np.random.Generator) -> Iterator[PromptBatch]:
    """SliCK's prompts of `facts`: one batch per exemplar set, each an `n_shots`-shot prompt whose
    demonstrations of the query's relation are drawn (from `demos`, with `rng`, never the query
    itself), or the zero-shot question when `n_shots` = 0. Built one set at a time."""
    facts = np.asarray(facts, np.int64)
    s, r = kg.s[facts], kg.r[facts]
    for _ in range(n_sets):
        if n_shots:
            yield k_shot(vocab, s, r, draw_demonstrations(r, n_shots, demos, rng, exclude=facts), kg)
        else:
            yield zero_shot(vocab, s, r)


@dataclass
class KgsimLM:
    """A model over kgsim tokens (kgsim's GPT, or any causal LM reading the same token ids) as the
    study's :class:`~kgsim.study.lm.LanguageModel`: prompts are :class:`PromptBatch` es (or token
    rows int [n, T]), answers token ids int64 [n], gold answers fact ids of `kg` (an answer is right
    when it names a true answer of the fact's (s, r), :func:`correct_of`). `kw` goes to
    :func:`iter_last_logits` (``tokens_per_batch``, ``bf16``)."""

    model: torch.nn.Module
    kg: KnowledgeGraph
    vocab: Vocabulary
    kw: dict = field(default_factory=dict)

    def answer(self, prompts) -> np.ndarray:
        """int64 [n]: the greedy token after each prompt row (:func:`answers`)."""
        return answers(self.model, prompts, **self.kw)

    def score(self, answers: np.ndarray, gold: np.ndarray) -> np.ndarray:
        """bool [n]: token answers[i] names a true answer of fact gold[i]'s (s, r)."""
        gold = np.asarray(gold, np.int64)
        return correct_of(self.kg, self.vocab, self.kg.s[gold], self.kg.r[gold], np.asarray(answers))

    def sample(self, prompt_sets: Iterable, n_samples: int, temperature: float, seed: int,
               stream: str) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
        """Per prompt set, from one forward pass per batch: the greedy tokens int64 [n] and
        `n_samples` columns of tokens drawn at `temperature` from the same logits, with one
        generator (``torch_generator(seed, stream)``) for all sets, in order."""
        gen = torch_generator(seed, stream)
        for prompts in prompt_sets:
            tokens = _tokens(prompts)
            greedy = np.zeros(len(tokens), np.int64)
            draws = np.zeros((len(tokens), n_samples), np.int64)
            for sl, logits in iter_last_logits(self.model, tokens, **self.kw):          # [b, V] per batch
                greedy[sl] = logits.argmax(-1).cpu().numpy()
                if n_samples:
                    probs = torch.softmax(logits / temperature, -1)
                    draws[sl] = torch.multinomial(probs.cpu(), n_samples, replacement=True, generator=gen).numpy()
            yield greedy, [draws[:, j] for j in range(n_samples)]

    @torch.no_grad()
    def hidden(self, prompts, rows: int = 8192) -> np.ndarray:
        """float32 [n, C]: the last hidden layer (after the final norm) at each prompt's last token."""
        toks = torch.as_tensor(_tokens(prompts))
        self.model.eval()
        parts = []
        for i in range(0, len(toks), rows):
            idx = toks[i:i + rows].to(_device(self.model))
            if hasattr(self.model, "hidden"):
                h = self.model.hidden(idx)[0][:, -1]
            else:
                h = self.model(input_ids=idx, output_hidden_states=True).hidden_states[-1][:, -1]
            parts.append(h.float().cpu())
        return torch.cat(parts).numpy() if parts else np.zeros((0, 0), np.float32)


__all__ = ["KgsimLM", "answers", "correct_of", "exemplar_batches", "iter_last_logits", "last_logits"]
