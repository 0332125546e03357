"""Test-time prompts as token arrays plus the subgraph each induces (science.md D3).

Every prompt family builds, for a batch of queries, a dense int64 array of equal-length token rows
(all entities and relations are single tokens), the answer predicted at the last position, and the
prompt's induced edge set E_P: for k-shot, the k demonstration facts (s'_j, r, a'_j) of the query's
relation; for CoT, the path the reasoning spells out. Families are registered by name in
:data:`PROMPTS`.

Formats (``s``: subject token, ``Q``: relation in question form, ``R``: in statement form):

- ``statement``:  ``<bos> s R``                                  -> a
- ``zero-shot``:  ``<bos> <q> s Q <a>``                          -> a
- ``k-shot``:     ``<bos> (<q> s' Q <a> a' <sep>)*k <q> s Q <a>`` -> a
- ``direct-2hop``: ``<bos> (<q> s' Q1 Q2 <a> a' <sep>)*k <q> s Q1 Q2 <a>`` -> a
- ``cot`` (2-hop): ``<bos> (<q> s' Q1 <a> m' <sep> <q> m' Q2 <a> a' <sep>)*k <q> s Q1 <a>`` -> m̂, then
  the model's own bridge is spelled out: ``... m̂ <sep> <q> m̂ Q2 <a>`` -> â (see :func:`cot_second_hop`).
- ``recall-cot`` (one hop): recall another fact of the subject, then answer:
  ``<bos> (<q> s' Q' <a> b' <sep> <q> s' Q <a> a' <sep>)*k <q> s Q' <a>`` -> b̂, then
  ``... b̂ <sep> <q> s Q <a>`` -> â (:func:`recall_first`, :func:`recall_second`).

>>> from kgsim.world.corpus import Vocabulary
>>> v = Vocabulary(n_entities=10, n_relations=2)
>>> p = zero_shot(v, np.array([3]), np.array([1]))
>>> v.decode(p.tokens[0])
'<bos> <q> E3 Q1 <a>'
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kgsim.core.names import template_prompt_name
from kgsim.world.corpus import BOS, SEP, A, Q, Vocabulary


@dataclass(frozen=True)
class PromptBatch:
    name: str                   # "zero-shot", "4-shot", "cot", ...
    tokens: np.ndarray          # int64 [n_queries, T]; the answer is predicted after the last token
    induced: np.ndarray         # int64 [n_queries, n_induced]: fact ids of E_P (-1 = none)

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])


def statement(v: Vocabulary, s: np.ndarray, r: np.ndarray) -> PromptBatch:
    """``<bos> s R`` -> a: memorisation in the pretraining (statement) format."""
    n = len(s)
    toks = np.stack([np.full(n, BOS), v.entity(s), v.statement_relation(r)], 1)
    return PromptBatch("statement", toks.astype(np.int64), np.full((n, 0), -1, np.int64))


def zero_shot(v: Vocabulary, s: np.ndarray, r: np.ndarray, template: int = 0) -> PromptBatch:
    """``<bos> <q> s Q <a>`` -> a: the plain question P₀ (``zero-shot``), or the same question in
    another question template (``zero-shot-t1``, ...: a form fine-tuning never uses)."""
    n = len(s)
    toks = np.stack([np.full(n, BOS), np.full(n, Q), v.entity(s), v.question_relation(r, template), np.full(n, A)], 1)
    return PromptBatch(template_prompt_name(template), toks.astype(np.int64), np.full((n, 0), -1, np.int64))


def draw_demonstrations(r: np.ndarray, k: int, demos: dict[int, np.ndarray], rng: np.random.Generator,
                        exclude: np.ndarray | None = None) -> np.ndarray:
    """int64 [n, k]: for each query relation r[i], k distinct demonstration fact ids of that relation
    (from `demos`, never a fact in `exclude`), drawn independently per query."""
    out = np.empty((len(r), k), np.int64)
    for rel in np.unique(r):
        pool = demos[int(rel)]
        if exclude is not None:
            pool = pool[~np.isin(pool, exclude)]
        if k > len(pool):
            raise ValueError(f"k = {k} demonstrations asked for relation {rel}, only {len(pool)} available")
        idx = np.flatnonzero(r == rel)
        # k distinct per row: argsort of random keys, one row of keys per query
        pick = np.argsort(rng.random((len(idx), len(pool))), axis=1)[:, :k]
        out[idx] = pool[pick]
    return out


def k_shot(v: Vocabulary, s: np.ndarray, r: np.ndarray, demo_facts: np.ndarray, kg) -> PromptBatch:
    """``<bos> (<q> s' Q <a> a' <sep>)*k <q> s Q <a>`` -> a, with demonstrations `demo_facts` [n, k]."""
    n, k = demo_facts.shape
    ds, dr, da = kg.s[demo_facts], kg.r[demo_facts], kg.a[demo_facts]           # [n, k] each
    demo = np.stack([np.full((n, k), Q), v.entity(ds), v.question_relation(dr), np.full((n, k), A),
                     v.entity(da), np.full((n, k), SEP)], 2).reshape(n, 6 * k)  # [n, k, 6] -> [n, 6k]
    query = zero_shot(v, s, r).tokens[:, 1:]                                    # drop its <bos>
    toks = np.concatenate([np.full((n, 1), BOS), demo, query], 1)
    return PromptBatch(f"{k}-shot", toks.astype(np.int64), demo_facts.astype(np.int64))


def two_hop_demos(two_hop_pool: np.ndarray, r1: np.ndarray, r2: np.ndarray, k: int,
                  rng: np.random.Generator) -> np.ndarray:
    """int64 [n, k]: row indices into `two_hop_pool` (rows s, r1, r2, m, a) of the same composed
    relation as each query."""
    out = np.empty((len(r1), k), np.int64)
    for a, b in set(zip(r1.tolist(), r2.tolist())):
        pool = np.flatnonzero((two_hop_pool[:, 1] == a) & (two_hop_pool[:, 2] == b))
        if k > len(pool):
            raise ValueError(f"k = {k} 2-hop demonstrations asked for r{a}∘r{b}, only {len(pool)} available")
        idx = np.flatnonzero((r1 == a) & (r2 == b))
        out[idx] = pool[np.argsort(rng.random((len(idx), len(pool))), axis=1)[:, :k]]
    return out


def direct_two_hop(v: Vocabulary, rows: np.ndarray, demo_rows: np.ndarray) -> PromptBatch:
    """The composed question answered directly, after k demonstrations that do the same.
    `rows` [n, 5] and `demo_rows` [n, k, 5] hold (s, r1, r2, m, a)."""
    n, k = demo_rows.shape[:2]
    s, r1, r2 = rows[:, 0], rows[:, 1], rows[:, 2]
    d = demo_rows                                                               # [n, k, 5]
    demo = np.stack([np.full((n, k), Q), v.entity(d[..., 0]), v.question_relation(d[..., 1]),
                     v.question_relation(d[..., 2]), np.full((n, k), A), v.entity(d[..., 4]),
                     np.full((n, k), SEP)], 2).reshape(n, 7 * k)
    query = np.stack([np.full(n, Q), v.entity(s), v.question_relation(r1), v.question_relation(r2),
                      np.full(n, A)], 1)
    toks = np.concatenate([np.full((n, 1), BOS), demo, query], 1)
    return PromptBatch("direct-2hop", toks.astype(np.int64), np.full((n, 0), -1, np.int64))


def cot_first_hop(v: Vocabulary, rows: np.ndarray, demo_rows: np.ndarray) -> PromptBatch:
    """CoT, first step: demonstrations spell out their path; the query asks for the bridge m."""
    n, k = demo_rows.shape[:2]
    d = demo_rows                                                               # [n, k, 5]
    demo = np.stack([np.full((n, k), Q), v.entity(d[..., 0]), v.question_relation(d[..., 1]), np.full((n, k), A),
                     v.entity(d[..., 3]), np.full((n, k), SEP), np.full((n, k), Q), v.entity(d[..., 3]),
                     v.question_relation(d[..., 2]), np.full((n, k), A), v.entity(d[..., 4]),
                     np.full((n, k), SEP)], 2).reshape(n, 12 * k)
    query = np.stack([np.full(n, Q), v.entity(rows[:, 0]), v.question_relation(rows[:, 1]), np.full(n, A)], 1)
    toks = np.concatenate([np.full((n, 1), BOS), demo, query], 1)
    return PromptBatch("cot", toks.astype(np.int64), np.full((n, 0), -1, np.int64))


def cot_second_hop(v: Vocabulary, first: PromptBatch, rows: np.ndarray, bridge_token: np.ndarray) -> PromptBatch:
    """CoT, second step: the model's bridge answer m̂ is written out and asked about with r2."""
    n = first.n
    tail = np.stack([bridge_token, np.full(n, SEP), np.full(n, Q), bridge_token,
                     v.question_relation(rows[:, 2]), np.full(n, A)], 1)
    return PromptBatch("cot", np.concatenate([first.tokens, tail], 1).astype(np.int64), first.induced)


def related_facts(kg, facts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """int64 [n]: for each fact (s, r, a), another fact of the same subject with another relation,
    drawn uniformly (-1 where the subject has none): what a recall-CoT prompt recalls first."""
    facts = np.asarray(facts, np.int64)
    order = np.argsort(kg.s, kind="stable")
    lo, hi = np.searchsorted(kg.s[order], kg.s[facts]), np.searchsorted(kg.s[order], kg.s[facts], side="right")
    out = np.full(len(facts), -1, np.int64)
    for i, (f, a, b) in enumerate(zip(facts, lo, hi)):
        own = order[a:b]
        other = own[kg.r[own] != kg.r[f]]
        if len(other):
            out[i] = other[rng.integers(len(other))]
    return out


def recall_first(v: Vocabulary, kg, facts: np.ndarray, related: np.ndarray, demo_facts: np.ndarray,
                 demo_related: np.ndarray) -> PromptBatch:
    """Recall-CoT, first step: k demonstrations each recall a related fact of their subject and then
    answer their question (``<q> s' Q' <a> b' <sep> <q> s' Q <a> a' <sep>``); the query asks for its
    related fact ``<q> s Q' <a>``. `related`, `demo_related` [n], [n, k]: the related facts' ids. The
    induced edge set is the demonstrations' 2k facts."""
    n, k = demo_facts.shape
    d, dr = demo_facts, demo_related
    demo = np.stack([np.full((n, k), Q), v.entity(kg.s[d]), v.question_relation(kg.r[dr]), np.full((n, k), A),
                     v.entity(kg.a[dr]), np.full((n, k), SEP), np.full((n, k), Q), v.entity(kg.s[d]),
                     v.question_relation(kg.r[d]), np.full((n, k), A), v.entity(kg.a[d]), np.full((n, k), SEP)],
                    2).reshape(n, 12 * k)
    query = zero_shot(v, kg.s[related], kg.r[related]).tokens[:, 1:]
    toks = np.concatenate([np.full((n, 1), BOS), demo, query], 1)
    return PromptBatch("recall-cot", toks.astype(np.int64), np.concatenate([d, dr], 1).astype(np.int64))


def recall_second(v: Vocabulary, first: PromptBatch, s: np.ndarray, r: np.ndarray,
                  recalled_token: np.ndarray) -> PromptBatch:
    """Recall-CoT, second step: the model's recalled answer is written out, then the question."""
    n = first.n
    tail = np.stack([recalled_token, np.full(n, SEP), np.full(n, Q), v.entity(s), v.question_relation(r),
                     np.full(n, A)], 1)
    return PromptBatch("recall-cot", np.concatenate([first.tokens, tail], 1).astype(np.int64), first.induced)


PROMPTS = {"statement": statement, "zero-shot": zero_shot, "k-shot": k_shot,
           "direct-2hop": direct_two_hop, "cot": cot_first_hop, "recall-cot": recall_first}
