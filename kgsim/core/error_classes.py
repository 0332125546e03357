"""Where a model's wrong answers come from (issue 12): the three error classes of one test set.

Each wrong answer to the query (s, r) of a test fact falls in exactly one class, tried in order:

1. ``from-ft-set``: the answer is an entity that is the object (answer) of some fact of the
   model's own fine-tuning set, of any relation: the model answers with what it was fine-tuned on;
2. ``right-type``: otherwise, an entity of the type the relation's answers have
   (``kg.relation_range[r]``): the right kind of answer, the wrong entity;
3. ``other``: anything else: an entity of another type, or an answer that names no entity (a
   relation or special token, stored as entity id -1).

Correct answers are not errors, whatever their entity. Answers are entity ids of `kg` (int, -1 for
an answer naming no entity), as an :class:`~kgsim.core.edges.EdgeSet` records them in ``answers``.
The base model has no fine-tuning set of its own; its errors are classified against a fine-tuned
model's set, as the reference for that model's share (:func:`kgsim.core.names.reference_label`).

A graph of two types: persons 0-1 (type 0) and cities 2-4 (type 1); relation 0 maps a person to
a city. Fine-tuning set: fact 0 (0 -> 2). Test set: fact 1 (1 -> 3), asked five times:

>>> kg = KnowledgeGraph(entity_types=[0, 0, 1, 1, 1], relation_domain=[0], relation_range=[1],
...                     s=[0, 1], r=[0, 0], a=[2, 3], exposure=[1, 1], popularity=np.full(5, 0.2))
>>> facts, answers = np.array([1, 1, 1, 1, 1]), np.array([3, 2, 4, 0, -1])
>>> correct = answers == 3
>>> classify_errors(kg, facts, correct, answers, ft_facts=np.array([0])).tolist()
[-1, 0, 1, 2, 2]
>>> error_counts(kg, facts, correct, answers, ft_facts=np.array([0]))
{'n': 5, 'errors': 4, 'from-ft-set': 1, 'right-type': 1, 'other': 2}
"""
from __future__ import annotations

import numpy as np

from kgsim.core.kg import KnowledgeGraph
from kgsim.core.names import ERROR_CLASSES

NOT_AN_ERROR = -1                      # classify_errors' code of a correct answer
NO_ENTITY = -1                         # the entity id of an answer that names no entity

__all__ = ["NOT_AN_ERROR", "NO_ENTITY", "classify_errors", "error_counts"]


def classify_errors(kg: KnowledgeGraph, facts: np.ndarray, correct: np.ndarray, answers: np.ndarray,
                    ft_facts: np.ndarray) -> np.ndarray:
    """int8 [N]: for test fact ``facts[i]`` answered ``answers[i]`` (an entity id of `kg`, or -1),
    :data:`NOT_AN_ERROR` where ``correct[i]``, else the index in :data:`kgsim.core.names.ERROR_CLASSES`
    of the answer's class (see the module docstring) against the fine-tuning facts `ft_facts`."""
    facts, answers = np.asarray(facts, np.int64), np.asarray(answers, np.int64)
    correct = np.asarray(correct, bool)
    if not (facts.shape == answers.shape == correct.shape) or facts.ndim != 1:
        raise ValueError(f"facts {facts.shape}, correct {correct.shape} and answers {answers.shape} must be "
                         "equal 1-d shapes")
    is_entity = (answers >= 0) & (answers < kg.n_entities)
    ent = np.where(is_entity, answers, 0)
    ft_objects = np.zeros(kg.n_entities, bool)
    ft_objects[kg.a[np.asarray(ft_facts, np.int64)]] = True
    from_ft = is_entity & ft_objects[ent]
    right_type = is_entity & (kg.entity_types[ent] == kg.relation_range[kg.r[facts]])
    out = np.where(from_ft, 0, np.where(right_type, 1, 2)).astype(np.int8)
    out[correct] = NOT_AN_ERROR
    return out


def error_counts(kg: KnowledgeGraph, facts: np.ndarray, correct: np.ndarray, answers: np.ndarray,
                 ft_facts: np.ndarray) -> dict[str, int]:
    """``{"n": N, "errors": wrong answers, class: count for each of ERROR_CLASSES}`` of one test set
    (:func:`classify_errors`); the class counts sum to ``errors``."""
    codes = classify_errors(kg, facts, correct, answers, ft_facts)
    counts = np.bincount(codes[codes != NOT_AN_ERROR], minlength=len(ERROR_CLASSES))
    return {"n": int(codes.size), "errors": int((codes != NOT_AN_ERROR).sum()),
            **{c: int(k) for c, k in zip(ERROR_CLASSES, counts)}}
