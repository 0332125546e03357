"""Answer matching as the QA datasets' own evaluation does it.

EntityQuestions (through DPR) and PopQA score a generated answer against a list of gold answers:

- **normalisation** (SQuAD/DPR style): Unicode canonical form, lower case, punctuation removed,
  the articles *a, an, the* removed, whitespace folded. Accents are kept by default (as DPR does:
  it only puts text in a canonical Unicode form, so a composed ``é`` equals ``e`` + combining accent);
  ``fold_accents=True`` also strips them (``José`` = ``Jose``).
- **exact match (EM)**: the normalised prediction equals a normalised gold answer.
- **containment**: some normalised gold answer occurs in the normalised prediction *as a whole run
  of words* (DPR's ``has_answer``: token containment, so ``Paris`` is not found in ``Parisian``).

A generation is first cut at its first newline (:func:`first_line`): prompts put one answer per line.
Multiple-choice answers (MMLU) are letters, which normalisation would break (``A`` is an article):
they are matched by :func:`choice_letter` instead.

>>> normalize_answer("The  Eiffel-Tower!")
'eiffeltower'
>>> exact_match("the United States", ["United States", "USA"])
True
>>> contains_answer("It is in Paris, France.", ["paris"]), contains_answer("Parisian", ["Paris"])
(True, False)
>>> is_correct(" B) Mars", ["B"], choices=("Venus", "Mars", "Io", "Titan"))
True
"""
from __future__ import annotations

import re
import string
import unicodedata
from typing import Sequence

MATCH_MODES = ("em", "contains")

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_ASCII_PUNCT = set(string.punctuation)


def _is_punct(ch: str) -> bool:
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def normalize_answer(text: str, fold_accents: bool = False) -> str:
    """Canonical form of an answer string (see the module docstring).

    >>> normalize_answer("Ａn  Apple")                      # full-width letters fold (NFKC)
    'apple'
    >>> normalize_answer("Jose\u0301") == normalize_answer("Jos\u00e9")   # decomposed = composed
    True
    >>> normalize_answer("José", fold_accents=True)
    'jose'
    """
    text = unicodedata.normalize("NFKC", text)
    if fold_accents:
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
        text = unicodedata.normalize("NFC", text)
    text = text.casefold()
    text = "".join(c for c in text if not _is_punct(c))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def first_line(text: str) -> str:
    """The generation up to its first newline, stripped: the model's one-line answer.

    >>> first_line("  Paris\\nQ: next question"), first_line("\\nParis")
    ('Paris', '')
    """
    return text.split("\n", 1)[0].strip()


def _golds(answers: Sequence[str], fold_accents: bool) -> list[str]:
    if isinstance(answers, str):
        raise TypeError("answers must be a list of strings, not one string")
    out = [normalize_answer(a, fold_accents) for a in answers]
    return [g for g in out if g]                      # an empty gold answer matches nothing


def exact_match(prediction: str, answers: Sequence[str], fold_accents: bool = False) -> bool:
    """True iff the normalised prediction equals some normalised, non-empty gold answer."""
    pred = normalize_answer(prediction, fold_accents)
    return bool(pred) and pred in _golds(answers, fold_accents)


def contains_answer(prediction: str, answers: Sequence[str], fold_accents: bool = False) -> bool:
    """True iff some normalised gold answer occurs in the normalised prediction as whole words."""
    pred = normalize_answer(prediction, fold_accents)
    if not pred:
        return False
    padded = f" {pred} "
    return any(f" {g} " in padded for g in _golds(answers, fold_accents))


def choice_letter(prediction: str, n_choices: int = 4) -> str | None:
    """The option letter a multiple-choice answer starts with: 'B', '(B)', 'B.', 'B) text' -> 'B'.

    >>> choice_letter("(c) because"), choice_letter("Because"), choice_letter("E", n_choices=4)
    ('C', None, None)
    """
    text = first_line(prediction).lstrip("([ ")
    if not text:
        return None
    letter = text[0].upper()
    valid = string.ascii_uppercase[:n_choices]
    if letter not in valid or (len(text) > 1 and text[1].isalnum()):
        return None
    return letter


def is_correct(prediction: str, answers: Sequence[str], mode: str = "em", *,
               choices: Sequence[str] = (), fold_accents: bool = False) -> bool:
    """Score one generation: its first line against the gold answers under `mode` ("em" or
    "contains"). With `choices` (a multiple-choice item), the gold answers are option letters and
    the prediction's leading letter must be one of them.

    Raises:
        ValueError: `mode` is not one of :data:`MATCH_MODES`.
    """
    if mode not in MATCH_MODES:
        raise ValueError(f"match mode {mode!r}: choose one of {list(MATCH_MODES)}")
    if choices:
        letter = choice_letter(prediction, len(choices))
        return letter is not None and letter in {a.strip().upper() for a in answers}
    line = first_line(prediction)
    if mode == "em":
        return exact_match(line, answers, fold_accents)
    return contains_answer(line, answers, fold_accents)
