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
"""
from __future__ import annotations

from typing import Sequence

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
