"""Probing: which facts a model answers under a prompt (EdgeSet), and SliCK categories.

All probing is batched: a prompt family gives equal-length token rows, so each pass is one dense
forward over many queries, with the LM head applied at the last position only. The model's answer
is the argmax over the whole vocabulary at that position (a non-entity token is a wrong answer);
it is correct when :meth:`KnowledgeGraph.is_correct` accepts it (any true answer of (s, r)).

SliCK (Gekhman et al. 2024): over ``n_exemplar_sets`` independent sets of ``n_shots``
demonstrations, P_greedy is the share of sets whose greedy answer is correct and P_sample the
share of ``n_samples`` temperature-``temperature`` samples per set that are. Categories:
HighlyKnown (P_greedy = 1), MaybeKnown (0 < P_greedy < 1), WeaklyKnown (P_greedy = 0 < P_sample),
Unknown (both 0): the one rule of :mod:`kgsim.core.known`, which llm_bridge also applies. Coarse
Known = P_greedy > 0 or P_sample > 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kgsim.core.config import ProbeConfig
from kgsim.core.edges import EdgeSet
from kgsim.core.kg import KnowledgeGraph
from kgsim.core.known import categories, category_counts
from kgsim.core.names import UNKNOWN
from kgsim.core.rng import stream, torch_generator
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
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
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


def answers(model, batch: PromptBatch, **kw) -> np.ndarray:
    """int64 [n]: the greedy answer token after each prompt row."""
    out = np.zeros(batch.n, np.int64)
    for sl, logits in iter_last_logits(model, batch.tokens, **kw):
        out[sl] = logits.argmax(-1).cpu().numpy()
    return out


def correct_of(kg: KnowledgeGraph, vocab: Vocabulary, s: np.ndarray, r: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """bool [n]: answer token tokens[i] names a true answer of (s[i], r[i])."""
    ent = tokens - vocab.entity_offset
    is_entity = (ent >= 0) & (ent < vocab.n_entities)
    return is_entity & kg.is_correct(s, r, np.where(is_entity, ent, 0))


def edges_from_batch(model, kg: KnowledgeGraph, vocab: Vocabulary, facts: np.ndarray, batch: PromptBatch, *,
                     model_name: str = "", stage: str = "", split: str = "", weights: np.ndarray | None = None,
                     **kw) -> EdgeSet:
    """E(θ, P) over test facts `facts` for a prompt batch built for exactly those facts; the EdgeSet
    is named (`model_name`, `stage`, `split`, the batch's prompt)."""
    facts = np.asarray(facts, np.int64)
    guess = answers(model, batch, **kw)
    ok = correct_of(kg, vocab, kg.s[facts], kg.r[facts], guess)
    meta = {"induced": batch.induced.tolist()} if batch.induced.size and len(facts) <= 10_000 else {}
    return EdgeSet(facts, ok, model=model_name, stage=stage, prompt=batch.name, split=split, weights=weights,
                   meta=meta)


def accessible_edges(model, kg: KnowledgeGraph, vocab: Vocabulary, facts: np.ndarray, k: int = 0, *,
                     demos: dict[int, np.ndarray] | None = None, rng: np.random.Generator | None = None,
                     model_name: str = "", stage: str = "", split: str = "", **kw) -> EdgeSet:
    """E(θ, P) for the zero-shot question (k = 0) or a k-shot prompt whose demonstrations of the
    same relation are drawn (per query, from `demos`, with `rng`); the demonstrations are kept as
    the prompt's induced edge set."""
    facts = np.asarray(facts, np.int64)
    s, r = kg.s[facts], kg.r[facts]
    if k == 0:
        batch = zero_shot(vocab, s, r)
    else:
        if demos is None or rng is None:
            raise ValueError("a k-shot prompt needs `demos` and `rng`")
        batch = k_shot(vocab, s, r, draw_demonstrations(r, k, demos, rng, exclude=facts), kg)
    return edges_from_batch(model, kg, vocab, facts, batch, model_name=model_name, stage=stage, split=split, **kw)


@dataclass(frozen=True)
class SliCK:
    facts: np.ndarray          # int64 [n]
    p_greedy: np.ndarray       # float [n]
    p_sample: np.ndarray       # float [n]

    @property
    def category(self) -> np.ndarray:
        """object [n]: each fact's SliCK category (:func:`kgsim.core.known.categories`)."""
        return categories(self.p_greedy, self.p_sample)

    @property
    def known(self) -> np.ndarray:
        """Coarse Known: any exemplar set or sample answered correctly."""
        return self.category != UNKNOWN

    def counts(self) -> dict[str, int]:
        return category_counts(self.category)


def slick(model, kg: KnowledgeGraph, vocab: Vocabulary, facts: np.ndarray, demos: dict[int, np.ndarray],
          cfg: ProbeConfig, seed: int, **kw) -> SliCK:
    """SliCK categories of `facts` under the model (see the module docstring). Demonstrations and
    samples come from the ``probe`` streams of `seed`."""

    facts = np.asarray(facts, np.int64)
    s, r = kg.s[facts], kg.r[facts]
    rng = stream(seed, "probe/exemplars")
    gen = torch_generator(seed, "probe/samples")
    greedy = np.zeros(len(facts))
    sampled = np.zeros(len(facts))
    for _ in range(cfg.n_exemplar_sets):
        if cfg.n_shots:
            batch = k_shot(vocab, s, r, draw_demonstrations(r, cfg.n_shots, demos, rng, exclude=facts), kg)
        else:
            batch = zero_shot(vocab, s, r)
        for sl, logits in iter_last_logits(model, batch.tokens, **kw):         # [b, V] per batch
            greedy[sl] += correct_of(kg, vocab, s[sl], r[sl], logits.argmax(-1).cpu().numpy())
            if cfg.n_samples:
                probs = torch.softmax(logits / cfg.temperature, -1)
                draws = torch.multinomial(probs.cpu(), cfg.n_samples, replacement=True, generator=gen).numpy()
                for j in range(cfg.n_samples):                                  # draws [b, S]
                    sampled[sl] += correct_of(kg, vocab, s[sl], r[sl], draws[:, j])
    return SliCK(facts, greedy / cfg.n_exemplar_sets,
                 sampled / max(cfg.n_exemplar_sets * cfg.n_samples, 1))
