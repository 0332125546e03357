"""kgsim's own token prompts in the bridge (``data.format = "kgsim-tokens"``).

A model exported by ``kgsim pretrain`` (``P/hf/``: GPT-2 layout, one word-level token per entity
``E17``, statement relation ``R3``, question relation ``Q3`` and special ``<bos> <q> <a> <sep> ...``)
knows no natural language; the bridge probes, fine-tunes and evaluates it on the very prompts kgsim
measures it with. :class:`KgsimTokens` is the prompt format (see :mod:`llm_bridge.prompts`) for one
kgsim world (``kgsim graph --out DIR``: graph.npz, splits.npz, corpus.npz; or a graph file):

- **examples** (:meth:`KgsimTokens.examples`): one per fact, ``question`` = ``"E3 Q1"`` (subject,
  relation in question form), gold answers every true answer of (s, r) as entity tokens, so that a
  match is kgsim's :meth:`~kgsim.core.kg.KnowledgeGraph.is_correct`; one per 2-hop query
  (:meth:`KgsimTokens.two_hop_examples`, ``fact_id`` = its row of ``kg.two_hop()``), ``"E3 Q1 Q2"``.
- **prompts** are built by :mod:`kgsim.world.prompts` (token ids) and written out by
  :meth:`kgsim.world.corpus.Vocabulary.decode`: zero-shot ``<bos> <q> s Q <a>``, k-shot
  ``<bos> (<q> s' Q <a> a' <sep>)*k <q> s Q <a>``, direct-2hop and CoT; the model's tokenizer reads
  them back to exactly kgsim's token rows (:meth:`KgsimTokens.check_model` checks the vocabulary).
- **the answer** is the first generated token, special tokens kept (``<eos>`` is a wrong answer, as
  kgsim's argmax over the whole vocabulary); it is correct iff it is one of the gold answer tokens.
  Being one token, it is read from one forward pass (:func:`llm_bridge.generation.next_tokens`: the
  argmax of the last position's logits, what ``generate`` would produce; SliCK's samples drawn from
  the same logits), not by ``generate``.
- **CoT** runs in two steps, as :func:`kgsim.study.measure.measure_seed` does: the model's bridge m̂ is
  written into ``... <a> m̂ <sep> <q> m̂ Q2 <a>`` and the answer read after it.
- **the simulator** (:meth:`KgsimTokens.simulate`): kgsim's own measurement of the same queries and
  demonstrations (:mod:`kgsim.world.prompts` + :mod:`kgsim.nn.probe` on a kgsim GPT), for the agreement check.

>>> from kgsim.core.config import GraphConfig
>>> from kgsim.world.graph import generate
>>> from kgsim.core.rng import stream
>>> fmt = KgsimTokens(generate(GraphConfig(n_entities=30, n_types=2, n_relations=4, n_composed=1), stream(0, "g")))
>>> facts = fmt.examples()
>>> facts[0].question, facts[0].answers, fmt.zero_shot(facts[:1])
('E2 Q0', ('E28',), ['<bos> <q> E2 Q0 <a>'])
>>> fmt.few_shot(facts[:1], [facts[1:3]])
['<bos> <q> E4 Q0 <a> E13 <sep> <q> E5 Q0 <a> E1 <sep> <q> E2 Q0 <a>']
>>> fmt.correct("E28", facts[0]), fmt.correct("<eos>", facts[0])
(True, False)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from kgsim.core.config import ConfigError
from kgsim.core.kg import subject_mentions
from kgsim.core.names import COT, DIRECT_TWO_HOP, TWO_HOP_PROMPTS, ZERO_SHOT, shots_of
from kgsim.nn.model import from_hf
from kgsim.nn.probe import KgsimLM, answers
from kgsim.study.lm import correct as lm_correct
from kgsim.world.corpus import Vocabulary
from kgsim.world.prompts import PromptBatch, cot_first_hop, cot_second_hop, direct_two_hop, k_shot, zero_shot

from .datasets import DatasetFileError, QAExample, two_hop_examples
from .generation import decode_each, next_tokens
from .models import ModelDirError

NAME = "kgsim-tokens"


def world_vocabulary(kg, path: str | Path | None = None) -> Vocabulary:
    """The token vocabulary of a kgsim world: from ``corpus.npz`` in a world directory `path` (or
    beside a ``graph.npz`` file), else one statement form per relation.

    Raises:
        DatasetFileError: the corpus's vocabulary does not fit the graph.
    """
    p = Path(path) if path is not None else None
    corpus = None
    if p is not None:
        corpus = p / "corpus.npz" if p.is_dir() else p.with_name("corpus.npz") if p.name == "graph.npz" else None
    if corpus is None or not corpus.is_file():
        return Vocabulary(kg.n_entities, kg.n_relations)
    with np.load(corpus, allow_pickle=False) as z:
        vocab = Vocabulary(**json.loads(str(z["meta"]))["vocab"])
    if (vocab.n_entities, vocab.n_relations) != (kg.n_entities, kg.n_relations):
        raise DatasetFileError(f"{corpus}: vocabulary of {vocab.n_entities} entities and {vocab.n_relations} "
                               f"relations, the graph has {kg.n_entities} and {kg.n_relations}")
    return vocab


class KgsimTokens:
    """The kgsim-token prompt format of one graph (see the module docstring)."""

    name = NAME
    pooling = "last"                    # kgsim.study.measure.query_repr: the last position's hidden state
    two_hop_same_relation = True        # kgsim.world.prompts.two_hop_demos: demos of the same r1∘r2

    def __init__(self, kg, vocab: Vocabulary | None = None):
        self.kg = kg
        self.vocab = vocab or Vocabulary(kg.n_entities, kg.n_relations)
        if (self.vocab.n_entities, self.vocab.n_relations) != (kg.n_entities, kg.n_relations):
            raise ValueError(f"vocabulary {self.vocab} does not fit a graph of {kg.n_entities} entities and "
                             f"{kg.n_relations} relations")
        self.tokens = self.vocab.tokens
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.rows = kg.two_hop()                                            # int64 [n, 5] (s, r1, r2, m, a)
        self._mentions = None

    @classmethod
    def from_path(cls, kg, path: str | Path | None = None) -> "KgsimTokens":
        """The format of graph `kg` loaded from `path` (a world directory or a graph file)."""
        return cls(kg, world_vocabulary(kg, path))

    # ---------------------------------------------------------------------------------------
    # Examples
    # ---------------------------------------------------------------------------------------

    def _question(self, s: int, *relations: int) -> str:
        v = self.vocab
        return " ".join([self.tokens[v.entity(s)], *(self.tokens[v.question_relation(r)] for r in relations)])

    def entity(self, e: int) -> str:
        return self.tokens[self.vocab.entity(int(e))]

    def example(self, i: int) -> QAExample:
        """The example of fact `i`: question ``"s Q"``, every true answer of (s, r) a gold answer."""

        kg, i = self.kg, int(i)
        s, r, a = int(kg.s[i]), int(kg.r[i]), int(kg.a[i])
        if self._mentions is None:
            self._mentions = subject_mentions(kg)
        others = [self.entity(x) for x in kg.answers(s, r) if x != a]
        return QAExample(f"fact/{i}", self._question(s, r), (self.entity(a), *others), kg.relation_name(r),
                         subject=self.entity(s), popularity=float(self._mentions[s]), fact_id=i,
                         exposure=int(kg.exposure[i]))

    def examples(self) -> list[QAExample]:
        """One example per fact, in fact order (as :func:`llm_bridge.datasets.synthetic_examples`)."""
        return [self.example(i) for i in range(self.kg.n_facts)]

    def two_hop_examples(self) -> list[QAExample]:
        """One example per row of ``kg.two_hop()``: ``"s Q1 Q2"`` -> a, ``bridge`` m, ``path`` the
        two hops' fact ids, ``rationale`` the chain written as kgsim's CoT prompt writes it."""

        def rationale(s, r1, r2, m, a):
            return f"{self.entity(m)} <sep> <q> {self._question(m, r2)} <a> {self.entity(a)}"
        return two_hop_examples(self.kg, None, question=self._question, name=self.entity, rationale=rationale)

    def _ids(self, examples: Sequence[QAExample], two_hop: bool) -> np.ndarray:
        """The fact ids (or 2-hop rows) of `examples`, checked against their questions."""
        ids = np.array([e.fact_id for e in examples], np.int64)
        n = len(self.rows) if two_hop else self.kg.n_facts
        for e in examples:
            ok = 0 <= e.fact_id < n
            if ok:
                want = (self._question(*(self.rows[e.fact_id, :3].tolist())) if two_hop else
                        self._question(int(self.kg.s[e.fact_id]), int(self.kg.r[e.fact_id])))
                ok = e.question == want
            if not ok:
                raise ValueError(f"example {e.id!r} ({e.question!r}) is not a {'2-hop query' if two_hop else 'fact'} "
                                 f"of this graph in kgsim tokens")
        return ids

    def _demo_ids(self, demos: Sequence[Sequence[QAExample]], n: int, two_hop: bool) -> np.ndarray:
        if len(demos) != n or len({len(ds) for ds in demos}) > 1:
            raise ValueError(f"{n} queries need one list of equally many demonstrations each")
        k = len(demos[0]) if n else 0
        flat = self._ids([d for ds in demos for d in ds], two_hop)
        return flat.reshape(n, k)

    # ---------------------------------------------------------------------------------------
    # Prompts (kgsim.world.prompts, decoded to text)
    # ---------------------------------------------------------------------------------------

    def _text(self, batch: PromptBatch) -> list[str]:
        return [self.vocab.decode(row) for row in batch.tokens]

    def _batch(self, prompt: str, examples: Sequence[QAExample], demos) -> PromptBatch:
        """kgsim's prompt batch ("zero-shot", "k-shot", "direct-2hop", "cot" first hop); `demos`:
        one list of demonstration examples per query."""
        two_hop = prompt in TWO_HOP_PROMPTS
        ids = self._ids(examples, two_hop)
        d = None if prompt == ZERO_SHOT else self._demo_ids(demos, len(ids), two_hop)
        return self._batch_of_ids(prompt, ids, d)

    def _batch_of_ids(self, prompt: str, ids: np.ndarray, d: np.ndarray | None) -> PromptBatch:
        """The same from fact ids (2-hop: rows) `ids` [n] and demonstration ids `d` [n, k]."""
        v, kg = self.vocab, self.kg
        if prompt == ZERO_SHOT:
            return zero_shot(v, kg.s[ids], kg.r[ids])
        if prompt == "k-shot":
            return k_shot(v, kg.s[ids], kg.r[ids], d, kg)
        fn = direct_two_hop if prompt == DIRECT_TWO_HOP else cot_first_hop
        return fn(v, self.rows[ids].reshape(-1, 5), self.rows[d].reshape(len(ids), d.shape[1], 5))

    def zero_shot(self, examples: Sequence[QAExample]) -> list[str]:
        return self._text(self._batch(ZERO_SHOT, examples, None))

    def few_shot(self, examples: Sequence[QAExample], demos: Sequence[Sequence[QAExample]]) -> list[str]:
        return self._text(self._batch("k-shot", examples, demos))

    def direct_two_hop(self, examples: Sequence[QAExample], demos: Sequence[Sequence[QAExample]]) -> list[str]:
        return self._text(self._batch(DIRECT_TWO_HOP, examples, demos))

    def cot(self, examples: Sequence[QAExample], demos: Sequence[Sequence[QAExample]]) -> list[str]:
        """The first CoT step: demonstrations spell out their paths; the query asks for the bridge."""
        return self._text(self._batch(COT, examples, demos))

    def finetune_pair(self, example: QAExample) -> tuple[str, str]:
        """kgsim's fine-tuning row ``<bos> <q> s Q <a> a`` as (prompt, target ``" a"``)."""
        return self.zero_shot([example])[0], f" {example.answer}"

    # ---------------------------------------------------------------------------------------
    # Answers
    # ---------------------------------------------------------------------------------------

    def generate(self, model, tokenizer, texts: Sequence[str], *, max_new_tokens: int = 1, temperature: float = 0.0,
                 seed: int = 0, stream: str = "sample", **kw) -> list[str]:
        """The first generated token after each prompt (special tokens kept): greedy, or one sample at
        `temperature` > 0; `max_new_tokens` is ignored: the answer is one token. One forward pass per
        batch (:func:`llm_bridge.generation.next_tokens`: the token ``generate`` would produce, without
        its per-batch overhead); `kw`: ``batch_size``, ``progress``, ``desc``."""
        if temperature > 0:
            return self.generate_with_samples(model, tokenizer, texts, n_samples=1, temperature=temperature,
                                              seed=seed, stream=stream, **kw)[1]
        return self.generate_with_samples(model, tokenizer, texts, n_samples=0, **kw)[0]

    def generate_with_samples(self, model, tokenizer, texts: Sequence[str], *, n_samples: int,
                              temperature: float = 1.0, seed: int = 0, stream: str = "sample",
                              max_new_tokens: int = 1, batch_size: int = 32, progress: bool = False,
                              desc: str = "generate") -> tuple[list[str], list[str]]:
        """(greedy answers [n], sampled answers [n * n_samples], prompt-major) from ONE forward pass
        per batch: the greedy token and `n_samples` draws at `temperature` from the same logits
        (seeded by `seed`, `stream`; :func:`llm_bridge.generation.next_tokens`). Answers as
        :meth:`generate` writes them."""

        greedy, samples = next_tokens(model, tokenizer, texts, batch_size=batch_size, n_samples=n_samples,
                                      temperature=temperature if n_samples else 1.0, seed=seed, stream=stream,
                                      progress=progress, desc=desc)

        def answers(ids: np.ndarray) -> list[str]:
            return [first_token(t.split("\n", 1)[0]) for t in decode_each(tokenizer, ids)]

        return answers(greedy), answers(samples)

    def generate_cot(self, model, tokenizer, texts: Sequence[str], examples: Sequence[QAExample], *,
                     max_new_tokens: int = 1, **kw) -> list[str]:
        """Two steps, as kgsim: the bridge m̂ after the first-hop prompt `texts`, then the answer
        after ``m̂ <sep> <q> m̂ Q2 <a>``; returns ``"m̂ <sep> <q> m̂ Q2 <a> â"`` per query."""
        rows = self.rows[self._ids(examples, two_hop=True)].reshape(-1, 5)
        bridges = self.generate(model, tokenizer, texts, **kw)
        try:
            m = np.array([self.index[t] for t in bridges], np.int64)
        except KeyError as e:
            raise ValueError(f"the model generated {e.args[0]!r}, not a token of this world's vocabulary") from None
        empty = PromptBatch("cot", np.zeros((len(rows), 0), np.int64), np.zeros((len(rows), 0), np.int64))
        tails = self._text(cot_second_hop(self.vocab, empty, rows, m))      # "m̂ <sep> <q> m̂ Q2 <a>"
        answers = self.generate(model, tokenizer, [f"{t} {tail}" for t, tail in zip(texts, tails)], **kw)
        return [f"{tail} {a}" for tail, a in zip(tails, answers)]

    def correct(self, output: str, example: QAExample, match: str = "em") -> bool:
        """The first token of `output` is one of the example's gold answer tokens (`match` unused:
        a token matches exactly or not at all)."""
        return first_token(output) in example.answers

    def cot_answer(self, output: str) -> str:
        return output.split()[-1] if output.split() else ""

    def bridge_named(self, output: str, example: QAExample) -> bool:
        return bool(example.bridge) and first_token(output) == example.bridge

    # ---------------------------------------------------------------------------------------
    # Checks and the simulator
    # ---------------------------------------------------------------------------------------

    def check_model(self, tokenizer, n_positions: int | None, lengths: dict[str, tuple[object, int]] = ()) -> None:
        """The model reads this world's token prompts: its tokenizer is the world's vocabulary
        (token string -> id) and each prompt in `lengths` (``{config key: (value, tokens)}``, see
        :meth:`prompt_lengths`) fits its ``n_positions``.

        Raises:
            ModelDirError: another vocabulary. ConfigError: a prompt longer than the context.
        """

        want = self.index
        have = tokenizer.get_vocab()
        if have != want:
            diff = sorted(set(want.items()) ^ set(have.items()), key=lambda kv: kv[1])[:3]
            raise ModelDirError(f"{getattr(tokenizer, 'name_or_path', 'the model')!r}: its tokenizer is not this "
                                f"world's kgsim vocabulary ({len(have)} tokens, the world has {len(want)}; e.g. "
                                f"{diff}); use the world the model was pretrained on")
        for key, (value, n) in dict(lengths).items():
            if n_positions is not None and n > n_positions:
                raise ConfigError(f"{key} = {value!r}: its kgsim-token prompts are {n} tokens long, more than the "
                                  f"model's n_positions = {n_positions}; lower {key} (--set {key}=...)")

    def prompt_lengths(self, k_shots: Sequence[int], probe_shots: int, cot_shots: int | None) -> dict:
        """``{config key: (value, tokens)}``: the longest prompt each setting makes (built with
        :mod:`kgsim.world.prompts`); CoT counts both steps. `cot_shots` None: no 2-hop prompts."""
        v, kg = self.vocab, self.kg
        one = np.zeros(1, np.int64)

        def k_len(k: int) -> int:
            return k_shot(v, kg.s[one], kg.r[one], np.zeros((1, k), np.int64), kg).tokens.shape[1]

        out = {"eval.k_shots": (list(k_shots), k_len(max(k_shots, default=0))),
               "probe.n_shots": (probe_shots, k_len(probe_shots))}
        if cot_shots is not None and len(self.rows):
            rows, demo = self.rows[:1], np.repeat(self.rows[:1, None], cot_shots, 1)
            first = cot_first_hop(v, rows, demo)
            n = cot_second_hop(v, first, rows, v.entity(rows[:, 3])).tokens.shape[1]
            out["eval.cot_shots"] = (cot_shots, max(n, direct_two_hop(v, rows, demo).tokens.shape[1]))
        return out

    def simulate(self, model, prompt: str, examples: Sequence[QAExample], demo_ids: np.ndarray | None = None,
                 **kw) -> np.ndarray:
        """bool [n]: kgsim's own verdict on each query under `prompt` (``"zero-shot"``, ``"{k}-shot"``,
        ``"direct-2hop"``, ``"cot"``) with demonstrations `demo_ids` (int [n, k]: fact ids, 2-hop:
        rows of ``kg.two_hop()``): the prompt batch of :mod:`kgsim.world.prompts` and the argmax of
        :func:`kgsim.nn.probe.answers` (one-hop: :func:`kgsim.study.lm.correct` on a :class:`KgsimLM`; 2-hop as
        :func:`kgsim.study.measure.measure_seed` does). `model` is a kgsim GPT (:func:`kgsim_model` of the
        bridge's model); `kw` goes to :func:`kgsim.nn.probe.last_logits` (e.g. ``bf16``).

        Raises:
            ValueError: an unknown prompt, or examples that are not this graph's.
        """

        v = self.vocab
        kind = "k-shot" if shots_of(prompt) else prompt
        if kind not in (ZERO_SHOT, "k-shot", *TWO_HOP_PROMPTS):
            raise ValueError(f"unknown prompt {prompt!r}")
        two_hop = kind in TWO_HOP_PROMPTS
        ids = self._ids(examples, two_hop)
        if len(ids) == 0:
            return np.zeros(0, bool)
        d = None if kind == ZERO_SHOT else np.asarray(demo_ids, np.int64).reshape(len(ids), -1)
        batch = self._batch_of_ids(kind, ids, d)
        if not two_hop:
            return lm_correct(KgsimLM(model, self.kg, v, kw), batch, ids)
        rows = self.rows[ids].reshape(-1, 5)
        if kind == COT:
            batch = cot_second_hop(v, batch, rows, answers(model, batch, **kw))
        return answers(model, batch, **kw) == v.entity(rows[:, 4])


def first_token(text: str) -> str:
    """The first whitespace-separated token of a generation ("" if none).

    >>> first_token(" E7 <sep> E9"), first_token("")
    ('E7', '')
    """
    parts = text.split()
    return parts[0] if parts else ""


def kgsim_model(hf_model):
    """A kgsim GPT (float32, CPU) computing what the Hugging Face GPT-2 `hf_model` computes
    (:func:`kgsim.nn.model.from_hf`)."""

    return from_hf(hf_model).eval()


__all__ = ["NAME", "KgsimTokens", "first_token", "kgsim_model", "world_vocabulary"]
