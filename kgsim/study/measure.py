"""Measure every edge set of a seed: model × stage × split × prompt (science.md §3 step 8).

Splits are the structural test sets (ID, Near-ID, Open-World) and, as in the paper, buckets of the
same test facts by the cosine similarity of each query's representation (the base model's last
hidden state of the zero-shot question) to the fine-tuning queries' representations (nearest
neighbour over FT-Known ∪ FT-Unknown, so both models are scored on the same buckets).

Prompts: zero-shot, k-shot for every k of ``prompts.k_shots`` (the same demonstrations for every
model, drawn once per split and k), recall-CoT on the structural splits (``prompts.recall_cot``: the
model first answers another question about the subject, then the query), and on the 2-hop set: ``direct-2hop`` and ``cot``, plus the
zero-shot one-hop edge sets of the hop facts (for the path-connectivity prediction).
"""
from __future__ import annotations

import numpy as np
import torch

from kgsim.core import rng as rngs
from kgsim.core.config import ExperimentConfig
from kgsim.core.edges import EdgeSet, TwoHopQueries
from kgsim.core.error_classes import NO_ENTITY
from kgsim.core.kg import KnowledgeGraph
from kgsim.core.names import (
    BASE,
    COT,
    DIRECT_TWO_HOP,
    NO_STAGE,
    RECALL_COT,
    STRUCTURAL_SPLITS,
    TWO_HOP,
    TWO_HOP_HOPS,
    ZERO_SHOT,
    k_shot_name,
    sim_bucket_names,
    template_prompt_name,
)
from kgsim.core.selection import similarity_buckets as quantile_buckets
from kgsim.nn.model import GPT, load_model
from kgsim.nn.probe import KgsimLM, answers
from kgsim.study.lm import answer_and_score
from kgsim.world.build import World
from kgsim.world.corpus import Vocabulary
from kgsim.world.prompts import (
    PromptBatch,
    cot_first_hop,
    cot_second_hop,
    direct_two_hop,
    draw_demonstrations,
    k_shot,
    recall_first,
    recall_second,
    related_facts,
    two_hop_demos,
    zero_shot,
)
from kgsim.world.splits import Splits


def edges_from_batch(model, kg: KnowledgeGraph, vocab: Vocabulary, facts: np.ndarray, batch: PromptBatch, *,
                     model_name: str = "", stage: str = "", split: str = "", weights: np.ndarray | None = None,
                     **kw) -> EdgeSet:
    """E(θ, P) over test facts `facts` for a prompt batch built for exactly those facts (measured by
    :func:`kgsim.study.lm.answer_and_score`, the bridge's measurement too, through :class:`KgsimLM`);
    the EdgeSet is named (`model_name`, `stage`, `split`, the batch's prompt) and keeps the answers as
    entity ids (:func:`answer_entities`). `kw` goes to :func:`kgsim.nn.probe.iter_last_logits`."""
    facts = np.asarray(facts, np.int64)
    tokens, ok = answer_and_score(KgsimLM(model, kg, vocab, kw), batch, facts)
    meta = {"induced": batch.induced.tolist()} if batch.induced.size and len(facts) <= 10_000 else {}
    return EdgeSet(facts, ok, model=model_name, stage=stage, prompt=batch.name, split=split, weights=weights,
                   meta=meta, answers=answer_entities(vocab, tokens))


def answer_entities(vocab: Vocabulary, tokens: np.ndarray) -> np.ndarray:
    """int64 [n]: the entity id each answer token names, :data:`kgsim.core.error_classes.NO_ENTITY`
    (-1) for a token that names none (a relation or special token)."""
    ent = np.asarray(tokens, np.int64) - vocab.entity_offset
    return np.where((ent >= 0) & (ent < vocab.n_entities), ent, NO_ENTITY)


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


def query_repr(model: GPT, world: World, facts: np.ndarray) -> torch.Tensor:
    """float32 [n, C]: the model's last hidden state of each fact's zero-shot question
    (:meth:`KgsimLM.hidden`), unit norm."""
    kg, v = world.kg, world.corpus.vocab
    h = KgsimLM(model, kg, v).hidden(zero_shot(v, kg.s[facts], kg.r[facts]))
    return torch.nn.functional.normalize(torch.from_numpy(h), dim=-1)


def similarity_buckets(base: GPT, world: World, splits: Splits, n_buckets: int) -> tuple[dict, np.ndarray]:
    """Test facts (all structural splits pooled) bucketed by max cosine similarity to the FT queries
    (:func:`kgsim.core.selection.similarity_buckets`). Returns ({bucket name: fact ids}, similarity
    per pooled fact)."""
    pooled = np.concatenate([splits.test[k] for k in STRUCTURAL_SPLITS])
    ft = np.concatenate([splits.ft_known, splits.ft_unknown])
    sim = (query_repr(base, world, pooled) @ query_repr(base, world, ft).T).max(1).values.numpy()
    parts = quantile_buckets(sim, n_buckets)                    # the rule the bridge also uses
    return {name: np.sort(pooled[part]) for name, part in zip(sim_bucket_names(n_buckets), parts)}, sim


def recall_prompts(cfg: ExperimentConfig, world: World, splits: Splits) -> dict[str, tuple]:
    """Per structural split: (facts, their related facts, the first recall-CoT step), for the test
    facts whose subject has a fact of another relation; ``prompts.cot_shots`` demonstrations of QA
    subjects (each with its own related fact), drawn per split from the seed's streams."""
    kg, v = world.kg, world.corpus.vocab
    pairs = np.unique(np.stack([kg.s, kg.r], 1), axis=0)                        # distinct (subject, relation)
    has_other = np.bincount(pairs[:, 0], minlength=kg.n_entities)[kg.s] >= 2   # a fact of another relation
    demos = {r: pool[has_other[pool]] for r, pool in splits.demos.items()}
    out = {}
    for split in STRUCTURAL_SPLITS:
        facts = splits.test[split][has_other[splits.test[split]]]
        if not len(facts):
            continue
        rng = rngs.stream(cfg.seed, f"prompts/{split}/{RECALL_COT}")
        related = related_facts(kg, facts, rng)
        demo = draw_demonstrations(kg.r[facts], cfg.prompts.cot_shots, demos, rng, exclude=facts)
        demo_related = related_facts(kg, demo.reshape(-1), rng).reshape(demo.shape)
        out[split] = (facts, related, recall_first(v, kg, facts, related, demo, demo_related))
    return out


def _two_hop_pool(world: World) -> np.ndarray:
    """2-hop rows of QA subjects with both hops exposed: demonstrations for 2-hop prompts."""
    kg = world.kg
    rows = kg.two_hop()
    f1, f2 = kg.fact_ids(rows[:, 0], rows[:, 1], rows[:, 3]), kg.fact_ids(rows[:, 3], rows[:, 2], rows[:, 4])
    keep = world.qa_subjects[rows[:, 0]] & (kg.exposure[f1] > 0) & (kg.exposure[f2] > 0)
    return rows[keep]


def measure_seed(cfg: ExperimentConfig, world: World, splits: Splits, base: GPT, ft_paths: dict,
                 progress=lambda *a: None, filtered: dict[str, np.ndarray] | None = None) -> dict:
    """All edge sets of one seed. `ft_paths[(model, stage)]` is a safetensors path; `filtered` adds
    test sets (``split@filter`` -> fact ids, :func:`kgsim.study.stages.filter_test_sets`) measured
    with the same prompts. Returns {"edge_sets": [EdgeSet], "two_hop": TwoHopQueries, "splits":
    {name: fact ids}}."""
    kg, v = world.kg, world.corpus.vocab
    test = {k: splits.test[k] for k in STRUCTURAL_SPLITS}
    buckets, sim = similarity_buckets(base, world, splits, cfg.run.sim_buckets)
    test |= buckets
    test |= {k: ids for k, ids in (filtered or {}).items() if len(ids)}
    prompts = {}
    for name, facts in test.items():
        s, r = kg.s[facts], kg.r[facts]
        prompts[(name, ZERO_SHOT)] = zero_shot(v, s, r)
        if v.qa_templates > 1:                          # the same question in a form fine-tuning never used
            prompts[(name, template_prompt_name(1))] = zero_shot(v, s, r, template=1)
        for k in cfg.prompts.k_shots:
            demo = draw_demonstrations(r, k, splits.demos, rngs.stream(cfg.seed, f"prompts/{name}/{k}"))
            prompts[(name, k_shot_name(k))] = k_shot(v, s, r, demo, kg)
    recall = recall_prompts(cfg, world, splits) if cfg.prompts.recall_cot else {}
    rows = splits.two_hop
    two_hop_prompts = None
    if cfg.prompts.cot and len(rows):
        pool = _two_hop_pool(world)
        k = min(cfg.prompts.cot_shots, len(pool))
        demo_rows = pool[two_hop_demos(pool, rows[:, 1], rows[:, 2], k, rngs.stream(cfg.seed, "prompts/2hop"))]
        hop1, hop2 = kg.fact_ids(rows[:, 0], rows[:, 1], rows[:, 3]), kg.fact_ids(rows[:, 3], rows[:, 2], rows[:, 4])
        two_hop_prompts = (direct_two_hop(v, rows, demo_rows), cot_first_hop(v, rows, demo_rows), hop1, hop2)

    models = {(BASE, NO_STAGE): base} | {key: load_model(path) for key, path in ft_paths.items()}
    edge_sets, two_hop = [], TwoHopQueries(rows, np.zeros(0, np.int64), np.zeros(0, np.int64))
    for i, ((model_name, stage), model) in enumerate(models.items()):
        progress("measure", i, len(models))
        for (split, pname), batch in prompts.items():
            edge_sets.append(edges_from_batch(model, kg, v, test[split], batch, model_name=model_name, stage=stage,
                                              split=split))
        for split, (facts, related, first) in recall.items():
            b_hat = answers(model, first)
            second = recall_second(v, first, kg.s[facts], kg.r[facts], b_hat)
            e = edges_from_batch(model, kg, v, facts, second, model_name=model_name, stage=stage, split=split)
            recalled = kg.is_correct(kg.s[related], kg.r[related], b_hat - v.entity_offset)
            e.meta.update(recall_correct=float(recalled.mean()), n_split=int(len(test[split])))
            edge_sets.append(e)
        if two_hop_prompts is not None:
            direct, first, hop1, hop2 = two_hop_prompts
            ids = np.arange(len(rows))
            ok_direct = answers(model, direct) == v.entity(rows[:, 4])
            m_hat = answers(model, first)
            second = cot_second_hop(v, first, rows, m_hat)
            ok_cot = answers(model, second) == v.entity(rows[:, 4])
            # the hops inside the CoT prompt: the bridge step, and the second step given the true bridge
            bridge_ok = m_hat == v.entity(rows[:, 3])
            ok2 = answers(model, cot_second_hop(v, first, rows, v.entity(rows[:, 3]))) == v.entity(rows[:, 4])
            two_hop = TwoHopQueries(rows, hop1, hop2)
            one_hop = np.concatenate([hop1, hop2])
            e1 = edges_from_batch(model, kg, v, one_hop, zero_shot(v, kg.s[one_hop], kg.r[one_hop]),
                                  model_name=model_name, stage=stage, split=TWO_HOP_HOPS)
            edge_sets += [EdgeSet(ids, ok_direct, model=model_name, stage=stage, prompt=DIRECT_TWO_HOP, split=TWO_HOP),
                          EdgeSet(ids, ok_cot, model=model_name, stage=stage, prompt=COT, split=TWO_HOP,
                                  meta={"bridge_correct": float(bridge_ok.mean()),
                                        "second_hop_given_bridge": float(ok2.mean()),
                                        "both_hops_in_prompt": float((bridge_ok & ok2).mean())}), e1]
    progress("measure", len(models), len(models))
    return {"edge_sets": edge_sets, "two_hop": two_hop, "splits": {k: v_.tolist() for k, v_ in test.items()},
            "similarity": similarity_makeup(splits, buckets, sim)}


SIM_BINS = np.linspace(-1.0, 1.0, 81)         # histogram bins of cosine similarity (width 0.025)


def similarity_makeup(splits: Splits, buckets: dict[str, np.ndarray], sim: np.ndarray) -> dict:
    """What the similarity buckets are made of: per bucket, its similarity range and how many of its
    facts each structural split gave; per structural split, the histogram of its facts' similarity
    (counts over :data:`SIM_BINS`) and its mean. `sim` is :func:`similarity_buckets`' score per pooled
    fact (the structural test sets concatenated in :data:`STRUCTURAL_SPLITS` order)."""
    names = np.concatenate([[k] * len(splits.test[k]) for k in STRUCTURAL_SPLITS])
    pooled = np.concatenate([splits.test[k] for k in STRUCTURAL_SPLITS])
    out = {"bins": SIM_BINS.tolist(), "splits": {}, "buckets": {}}
    for k in STRUCTURAL_SPLITS:
        x = sim[names == k]
        out["splits"][k] = {"n": int(len(x)), "mean": float(x.mean()) if len(x) else float("nan"),
                            "hist": np.histogram(np.clip(x, -1, 1), SIM_BINS)[0].tolist()}
    for b, ids in buckets.items():
        m = np.isin(pooled, ids)
        x = sim[m]
        out["buckets"][b] = {"n": int(m.sum()), "lo": float(x.min()) if len(x) else float("nan"),
                             "hi": float(x.max()) if len(x) else float("nan"),
                             "from": {k: int((names[m] == k).sum()) for k in STRUCTURAL_SPLITS}}
    return out
