"""Vocabulary, pretraining documents and token streams (science.md §3 step 2).

One token per entity (``E17``), per statement surface form of a relation (``R3`` or ``R3.1``) and
per relation in question form (``Q3``), plus specials. Formats:

- statement: ``s R a``;  question-answer: ``<q> s Q <a> a``  (distinct tokens, distinct shape);
- a document: ``<bos> fact <sep> fact <sep> ... fact <eos>``, holding ``facts_per_doc`` facts
  either of one subject or of one relation (``relation_doc_share`` of each fact's repetitions go
  to relation-grouped documents, so in-context patterns across subjects exist to learn);
- **question templates** (``corpus.qa_templates`` > 1): each QA item asks its relation with one of
  that many question tokens (``Q3``, ``Q3.t1``, ...), drawn uniformly; fine-tuning, SliCK and the
  standard prompts use template 0, and ``zero-shot-t1`` asks the test facts in template 1 (a
  question form the fine-tuning data never used);
- **mixed pretraining**: documents about QA subjects (see :func:`kgsim.world.splits.assign_qa_subjects`)
  are written in question-answer form with probability 1/2, all others only as statements;
- **composed QA** (``corpus.two_hop_qa_share`` > 0): that share of the QA subjects' 2-hop queries
  whose hops are both shown, as one-item documents ``<bos> <q> s Q1 Q2 <a> a <eos>`` (the direct
  2-hop prompt's format), each as often as its less-shown hop, placed between the other documents
  at random. The one-hop documents are exactly those of share 0, and composed items do not count as
  facts (:func:`parse_facts` does not read them), so direct 2-hop queries of statement-only subjects
  are in format without being shown.

Each fact appears exactly ``exposure`` times in the corpus (never-exposed facts never);
:func:`parse_facts` recovers the per-fact counts from the tokens alone, which the tests use to
check that claim independently of the builder. Documents are concatenated in random order into
one stream, cut into rows of ``n_ctx`` tokens for training.

>>> v = Vocabulary(n_entities=3, n_relations=2, surface_forms=1)
>>> v.decode([BOS, v.entity(0), v.statement_relation(1), v.entity(2), EOS])
'<bos> E0 R1 E2 <eos>'
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kgsim.core.config import CorpusConfig
from kgsim.core.kg import KnowledgeGraph
from kgsim.core.rows import TokenRows

SPECIALS = ("<pad>", "<bos>", "<eos>", "<sep>", "<q>", "<a>")
PAD, BOS, EOS, SEP, Q, A = range(len(SPECIALS))
QA_DOC_PROBABILITY = 0.5          # a QA subject's document is in QA form with this probability


@dataclass(frozen=True)
class Vocabulary:
    n_entities: int
    n_relations: int
    surface_forms: int = 1
    qa_templates: int = 1              # question forms per relation: Q3 (template 0), Q3.t1, ... after them

    @property
    def entity_offset(self) -> int:
        return len(SPECIALS)

    @property
    def statement_offset(self) -> int:
        return self.entity_offset + self.n_entities

    @property
    def question_offset(self) -> int:
        return self.statement_offset + self.n_relations * self.surface_forms

    @property
    def size(self) -> int:
        return self.question_offset + self.n_relations * self.qa_templates

    def entity(self, e):
        return self.entity_offset + e

    def statement_relation(self, r, form=0):
        return self.statement_offset + r * self.surface_forms + form

    def question_relation(self, r, template=0):
        """The token asking relation `r` in question template `template` (0: the one fine-tuning uses)."""
        return self.question_offset + template * self.n_relations + r

    @property
    def tokens(self) -> list[str]:
        """Token strings, index = id (whitespace-free, for the Hugging Face tokenizer)."""
        rel = [f"R{r}" if self.surface_forms == 1 else f"R{r}.{k}"
               for r in range(self.n_relations) for k in range(self.surface_forms)]
        return [*SPECIALS, *(f"E{e}" for e in range(self.n_entities)), *rel,
                *(f"Q{r}" if t == 0 else f"Q{r}.t{t}" for t in range(self.qa_templates) for r in range(self.n_relations))]

    def decode(self, ids) -> str:
        toks = self.tokens
        return " ".join(toks[int(i)] for i in ids)

    def to_json(self) -> dict:
        d = {"n_entities": self.n_entities, "n_relations": self.n_relations, "surface_forms": self.surface_forms}
        return d | ({"qa_templates": self.qa_templates} if self.qa_templates > 1 else {})   # files as before at 1


@dataclass(frozen=True, eq=False)
class Corpus:
    vocab: Vocabulary
    stream: np.ndarray          # int32 [n_tokens]: all documents, concatenated in random order
    n_docs: int
    config_hash: str = ""

    def rows(self, n_ctx: int):
        """The stream cut into rows of `n_ctx` tokens (the tail padded) with its loss mask."""

        assert PAD == 0                                             # TokenRows pads with id 0
        return TokenRows.from_stream(self.stream, n_ctx)

    def save(self, path: str | Path) -> None:
        np.savez(path, stream=self.stream, meta=np.array(json.dumps(
            {"vocab": self.vocab.to_json(), "n_docs": self.n_docs, "config_hash": self.config_hash})))

    @classmethod
    def load(cls, path: str | Path) -> "Corpus":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return cls(Vocabulary(**meta["vocab"]), z["stream"], meta["n_docs"], meta["config_hash"])


def _group_ranks(group: np.ndarray) -> np.ndarray:
    """For a sorted array of group keys, each item's rank within its group."""
    n = len(group)
    new = np.ones(n, bool)
    new[1:] = group[1:] != group[:-1]
    starts = np.flatnonzero(new)
    return np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))


def build_corpus(kg: KnowledgeGraph, qa_subjects: np.ndarray, cfg: CorpusConfig, rng: np.random.Generator,
                 config_hash: str = "") -> Corpus:
    """Pretraining documents for `kg` (every fact repeated by its exposure count). Vectorised:
    about a second per million facts."""
    vocab = Vocabulary(kg.n_entities, kg.n_relations, cfg.surface_forms, cfg.qa_templates)
    reps = np.repeat(np.arange(kg.n_facts, dtype=np.int32), kg.exposure)       # one item per occurrence
    # Random order within each group: shuffle, then a stable sort by group key.
    if cfg.shuffle_facts:
        reps = reps[rng.permutation(len(reps))]
    s, r = kg.s.astype(np.int32)[reps], kg.r.astype(np.int32)[reps]
    in_rel_doc = rng.random(len(reps), dtype=np.float32) < cfg.relation_doc_share
    # Group key: subject documents by s; relation documents by (r, QA subject or not).
    group = np.where(in_rel_doc, kg.n_entities + 2 * r + qa_subjects[s], s)
    order = np.argsort(group, kind="stable")
    reps, group, s, r = reps[order], group[order], s[order], r[order]
    first_in_doc = _group_ranks(group) % cfg.facts_per_doc == 0
    doc_of = np.cumsum(first_in_doc, dtype=np.int64) - 1                        # doc id per item
    n_docs = int(doc_of[-1] + 1) if len(reps) else 0
    doc_first = np.flatnonzero(first_in_doc)
    doc_qa = qa_subjects[s[doc_first]] & (rng.random(n_docs) < QA_DOC_PROBABILITY)  # QA docs: QA groups only
    item_qa = doc_qa[doc_of]
    item_len = np.where(item_qa, 5, 3) + 1                                      # fact + <sep>/<eos>
    doc_len = 1 + np.bincount(doc_of, weights=item_len, minlength=n_docs).astype(np.int64)
    perm = rng.permutation(n_docs)                                              # stream order of docs
    doc_start = np.empty(n_docs, np.int64)
    doc_start[perm] = np.concatenate([[0], np.cumsum(doc_len[perm])[:-1]]) if n_docs else []
    excl = np.cumsum(item_len) - item_len
    off = doc_start[doc_of] + 1 + excl - excl[doc_first][doc_of]               # first token of each item
    stream = np.zeros(int(doc_len.sum()), np.int32)
    stream[doc_start] = BOS
    a = kg.a.astype(np.int32)[reps]
    form = rng.integers(0, cfg.surface_forms, len(reps), dtype=np.int32)
    st, qa = ~item_qa, item_qa
    o = off[st]
    stream[o] = vocab.entity(s[st])
    stream[o + 1] = vocab.statement_relation(r[st], form[st])
    stream[o + 2] = vocab.entity(a[st])
    o = off[qa]
    stream[o] = Q
    stream[o + 1] = vocab.entity(s[qa])
    template = rng.integers(0, cfg.qa_templates, int(qa.sum())) if cfg.qa_templates > 1 else 0   # no draw at 1
    stream[o + 2] = vocab.question_relation(r[qa], template)
    stream[o + 3] = A
    stream[o + 4] = vocab.entity(a[qa])
    last = np.append(doc_of[1:] != doc_of[:-1], True) if len(reps) else np.zeros(0, bool)
    stream[off + item_len - 1] = np.where(last, EOS, SEP)
    if cfg.two_hop_qa_share > 0:                    # drawn after every one-hop draw: those stay as at share 0
        composed = composed_qa_rows(kg, qa_subjects, cfg.two_hop_qa_share, rng)
        stream, n_extra = _insert_composed(stream, np.sort(doc_start), composed, vocab, rng)
        n_docs += n_extra
    return Corpus(vocab, stream, n_docs, config_hash)


def composed_qa_rows(kg: KnowledgeGraph, qa_subjects: np.ndarray, share: float,
                     rng: np.random.Generator) -> np.ndarray:
    """int64 [n, 6]: (s, r1, r2, m, a, times) of the 2-hop queries pretraining shows as composed QA:
    ``round(share * n)`` of the n queries of QA subjects whose two hops are both shown, drawn
    uniformly, each ``times`` = its less-shown hop's exposure."""
    rows = kg.two_hop()
    if not len(rows):
        return np.zeros((0, 6), np.int64)
    f1, f2 = kg.fact_ids(rows[:, 0], rows[:, 1], rows[:, 3]), kg.fact_ids(rows[:, 3], rows[:, 2], rows[:, 4])
    rows, f1, f2 = (x[qa_subjects[rows[:, 0]] & (kg.exposure[f1] > 0) & (kg.exposure[f2] > 0)] for x in (rows, f1, f2))
    pick = np.sort(rng.choice(len(rows), int(round(share * len(rows))), replace=False))
    times = np.minimum(kg.exposure[f1[pick]], kg.exposure[f2[pick]])
    return np.concatenate([rows[pick], times[:, None]], 1).astype(np.int64)


def _insert_composed(stream: np.ndarray, starts: np.ndarray, composed: np.ndarray, vocab: Vocabulary,
                     rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """`stream` with one document ``<bos> <q> s Q1 Q2 <a> a <eos>`` per repetition of each composed
    row, each placed before a uniformly drawn document (or at the end); returns (stream, documents added)."""
    rep = np.repeat(composed, composed[:, 5], axis=0)
    if not len(rep):
        return stream, 0
    n = len(rep)
    docs = np.stack([np.full(n, BOS), np.full(n, Q), vocab.entity(rep[:, 0]), vocab.question_relation(rep[:, 1]),
                     vocab.question_relation(rep[:, 2]), np.full(n, A), vocab.entity(rep[:, 4]), np.full(n, EOS)],
                    1).astype(stream.dtype)
    docs = docs[rng.permutation(n)]
    at = np.sort(rng.choice(np.append(starts, len(stream)), n))     # insertion points: document boundaries
    return np.insert(stream, np.repeat(at, docs.shape[1]), docs.reshape(-1)), n


def parse_facts(tokens: np.ndarray, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every fact written in `tokens` (statement or QA form), found from the tokens alone.

    Returns (s, r, a, is_qa) arrays, one entry per occurrence."""
    t = np.asarray(tokens, np.int64)
    is_ent = (t >= vocab.entity_offset) & (t < vocab.statement_offset)
    is_st = (t >= vocab.statement_offset) & (t < vocab.question_offset)
    is_q = (t >= vocab.question_offset) & (t < vocab.size)
    i = np.flatnonzero(is_st[1:-1]) + 1
    i = i[is_ent[i - 1] & is_ent[i + 1]]
    j = np.flatnonzero(is_q[2:-2]) + 2
    j = j[(t[j - 2] == Q) & is_ent[j - 1] & (t[j + 1] == A) & is_ent[j + 2]]
    s = np.concatenate([t[i - 1], t[j - 1]]) - vocab.entity_offset
    r = np.concatenate([(t[i] - vocab.statement_offset) // vocab.surface_forms,
                        (t[j] - vocab.question_offset) % vocab.n_relations])       # any question template
    a = np.concatenate([t[i + 1], t[j + 2]]) - vocab.entity_offset
    return s, r, a, np.concatenate([np.zeros(len(i), bool), np.ones(len(j), bool)])
