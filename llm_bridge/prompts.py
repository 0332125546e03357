"""The prompt formats of the bridge: one question-answer block format, shared by probing,
fine-tuning and evaluation, so that what the model is fine-tuned on and asked at test time differ
only by the demonstrations in front of the query.

A block is ``Q: <question>\\nA: <answer>\\n``; a prompt ends with ``Q: <question>\\nA:`` and the
model's answer is its continuation up to the first newline.

- zero-shot: the query block alone;
- k-shot: k demonstration blocks of the same relation, then the query (science.md D3: the
  demonstrations are the prompt's induced edges);
- cot: demonstrations of 2-hop questions answered by a chain of thought that spells out the path
  (``The <r1> of <s> is <m>. The <r2> of <m> is <a>. So the answer is <a>.``), then the query;
- direct-2hop: the same 2-hop demonstrations answered directly, then the query.

>>> from llm_bridge.datasets import QAExample
>>> d = QAExample("d", "Where was Kato born?", ["Sabi"], "birthplace")
>>> few_shot("Where was Mirelu born?", [d])
'Q: Where was Kato born?\\nA: Sabi\\nQ: Where was Mirelu born?\\nA:'
>>> finetune_pair(d)
('Q: Where was Kato born?\\nA:', ' Sabi\\n')

A *prompt format* renders these prompts for whole batches and reads the answers back; the pipeline,
SliCK, fine-tuning and evaluation take one (``fmt=``). :data:`TEXT` is this module's format;
:class:`llm_bridge.kgsim_tokens.KgsimTokens` renders kgsim's own token prompts
(``data.format = "kgsim-tokens"``). A format has:

- ``name``; ``pooling`` (``"mean"`` or ``"last"``: how :func:`llm_bridge.generation.embed` pools a
  query); ``two_hop_same_relation`` (2-hop demonstrations of the query's own composed relation);
- ``zero_shot(examples)``, ``few_shot(examples, demos)``, ``cot(examples, demos)``,
  ``direct_two_hop(examples, demos)``: one prompt text per example (``demos``: one list of
  demonstration examples per example); ``finetune_pair(example)``: (prompt, target);
- ``generate(model, tokenizer, texts, *, max_new_tokens, **kw)``: the answers (see
  :func:`llm_bridge.generation.generate` for ``kw``); ``generate_with_samples(model, tokenizer,
  texts, *, n_samples, temperature, max_new_tokens, seed, stream, **kw)``: greedy answers and
  ``n_samples`` sampled answers per prompt (SliCK); ``generate_cot(model, tokenizer, texts,
  examples, *, max_new_tokens, **kw)``: the chains of thought;
- ``correct(output, example, match)``; ``cot_answer(output)``: a chain's final answer;
  ``bridge_named(output, example)``: whether a chain names the example's bridge entity.

>>> TEXT.few_shot([d], [[d]]) == [few_shot(d.question, [d])]
True
"""
from __future__ import annotations

from typing import Sequence

from .generation import generate, sample
from .matching import contains_answer, is_correct
from .verbalize import cot_final_answer

PROMPTS = ("zero-shot", "k-shot", "cot", "direct-2hop")


def qa_block(question: str, answer: str | None = None) -> str:
    """``Q: question\\nA:`` plus `` answer\\n`` when an answer is given."""
    block = f"Q: {question}\nA:"
    return block if answer is None else f"{block} {answer}\n"


def zero_shot(question: str) -> str:
    return qa_block(question)


def few_shot(question: str, demos: Sequence) -> str:
    """k demonstrations (QAExamples, answered with their canonical answer), then the query."""
    return "".join(qa_block(d.question, d.answer) for d in demos) + qa_block(question)


def cot(question: str, demos: Sequence) -> str:
    """2-hop demonstrations answered by their chain of thought (``rationale``), then the query."""
    return "".join(qa_block(d.question, d.rationale) for d in demos) + qa_block(question)


def direct_two_hop(question: str, demos: Sequence) -> str:
    """The same 2-hop demonstrations answered directly, then the query."""
    return few_shot(question, demos)


def finetune_pair(example) -> tuple[str, str]:
    """(prompt, target) of a fine-tuning example: the zero-shot prompt and `` answer\\n``."""
    return zero_shot(example.question), f" {example.answer}\n"


class TextFormat:
    """The natural-language Q/A format of this module (see the module docstring for the protocol)."""

    name = "text"
    pooling = "mean"
    two_hop_same_relation = False

    def zero_shot(self, examples: Sequence) -> list[str]:
        return [zero_shot(e.question) for e in examples]

    def few_shot(self, examples: Sequence, demos: Sequence[Sequence]) -> list[str]:
        return [few_shot(e.question, ds) for e, ds in zip(examples, demos, strict=True)]

    def cot(self, examples: Sequence, demos: Sequence[Sequence]) -> list[str]:
        return [cot(e.question, ds) for e, ds in zip(examples, demos, strict=True)]

    def direct_two_hop(self, examples: Sequence, demos: Sequence[Sequence]) -> list[str]:
        return [direct_two_hop(e.question, ds) for e, ds in zip(examples, demos, strict=True)]

    def finetune_pair(self, example) -> tuple[str, str]:
        return finetune_pair(example)

    def generate(self, model, tokenizer, texts: Sequence[str], *, max_new_tokens: int, **kw) -> list[str]:
        """One-line answers (:func:`llm_bridge.generation.generate`)."""

        return generate(model, tokenizer, texts, max_new_tokens=max_new_tokens, **kw)

    def generate_with_samples(self, model, tokenizer, texts: Sequence[str], *, n_samples: int, temperature: float,
                              max_new_tokens: int, seed: int = 0, stream: str = "sample", desc: str = "generate",
                              **kw) -> tuple[list[str], list[str]]:
        """(greedy answers [n], sampled answers [n * n_samples], prompt-major): :meth:`generate` greedily,
        then `n_samples` continuations of every prompt at `temperature` (seeded by `seed`, `stream`),
        each prompt read once (:func:`llm_bridge.generation.sample`)."""

        greedy = self.generate(model, tokenizer, texts, max_new_tokens=max_new_tokens, desc=f"{desc} greedy", **kw)
        if not n_samples:
            return greedy, []
        return greedy, sample(model, tokenizer, texts, n_samples=n_samples, max_new_tokens=max_new_tokens,
                              temperature=temperature, seed=seed, stream=stream, desc=f"{desc} sampled", **kw)

    def generate_cot(self, model, tokenizer, texts: Sequence[str], examples: Sequence, *, max_new_tokens: int,
                     **kw) -> list[str]:
        """Free-running chains of thought, one line each."""
        return self.generate(model, tokenizer, texts, max_new_tokens=max_new_tokens, **kw)

    def correct(self, output: str, example, match: str = "em") -> bool:

        return is_correct(output, example.answers, match, choices=example.choices)

    def cot_answer(self, output: str) -> str:

        return cot_final_answer(output)

    def bridge_named(self, output: str, example) -> bool:

        return bool(example.bridge) and contains_answer(output, [example.bridge])


TEXT = TextFormat()
FORMATS = ("text", "kgsim-tokens")
