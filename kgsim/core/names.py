"""The study's vocabulary: one name for each model, stage, split, prompt and SliCK category.

Every package (kgsim, proofs, llm_bridge) spells these names from here, so a name means one thing
everywhere. An EdgeSet is identified by ``(model, stage, split, prompt)``:

- **models**: the base model before fine-tuning (``base``, no stage) and the two fine-tuned models
  ``ft-known`` and ``ft-unknown`` (science.md D2), and ``ft-mixed`` where a fine-tuning set mixes
  the two at a share of Unknown facts strictly between 0 and 1;
- **stages**: Early Stop ``es`` and Convergence ``con``;
- **splits**, in three families that never share a name:

  - *structural* test sets (kgsim's graph view: relation, subject and type shift): ``id``,
    ``near-id``, ``open-world``;
  - *similarity* test sets (the paper's definition: the cosine similarity of a test query to the
    fine-tuning queries in the base model's representation space): the two-way split
    ``sim-near-id`` / ``sim-open-world`` at a quantile, and the quantile buckets ``sim-1`` (most
    similar) .. ``sim-n`` (least);
  - *2-hop*: the composed queries ``2hop`` and their one-hop facts ``2hop-hops``;

- **prompts**: ``zero-shot``, ``k-shot`` as ``f"{k}-shot"``, and on the 2-hop split ``direct-2hop``
  and ``cot``;
- **SliCK categories** (Gekhman et al. 2024): ``HighlyKnown``, ``MaybeKnown``, ``WeaklyKnown``,
  ``Unknown``;
- **error classes** of a wrong answer (:mod:`kgsim.core.error_classes`): ``from-ft-set``,
  ``right-type``, ``other``; the base model's errors are classified against a fine-tuned model's
  set under the label ``base@ft-unknown`` (:func:`reference_label`).

>>> label(FT_KNOWN, ES), label(BASE, NO_STAGE)
('ft-known/es', 'base')
>>> k_shot_name(4), shots_of("4-shot"), shots_of(ZERO_SHOT), shots_of(COT)
('4-shot', 4, 0, None)
>>> sim_bucket_names(3), sim_bucket_index("sim-2"), sim_bucket_index(SIM_NEAR_ID), is_similarity_split(SIM_NEAR_ID)
(['sim-1', 'sim-2', 'sim-3'], 2, None, True)
>>> reference_label(FT_UNKNOWN)
'base@ft-unknown'
"""
from __future__ import annotations

import re

# --- models and stages ------------------------------------------------------------------------
BASE = "base"
FT_KNOWN = "ft-known"
FT_UNKNOWN = "ft-unknown"
FT_MODELS = (FT_KNOWN, FT_UNKNOWN)
FT_MIXED = "ft-mixed"                # fine-tuned on a set with 0 < finetune.unknown_share < 1
MODELS = (BASE, *FT_MODELS)

ES = "es"
CON = "con"
NO_STAGE = ""                       # the base model's stage
STAGES = (ES, CON)
STAGE_TITLES = {ES: "Early Stop", CON: "Convergence"}

# --- splits -----------------------------------------------------------------------------------
ID = "id"
NEAR_ID = "near-id"
OPEN_WORLD = "open-world"
STRUCTURAL_SPLITS = (ID, NEAR_ID, OPEN_WORLD)

SIM_NEAR_ID = "sim-near-id"
SIM_OPEN_WORLD = "sim-open-world"
SIM_SPLITS = (SIM_NEAR_ID, SIM_OPEN_WORLD)
SIM_BUCKET_PREFIX = "sim-"

TWO_HOP = "2hop"
TWO_HOP_HOPS = "2hop-hops"
TWO_HOP_SPLITS = (TWO_HOP, TWO_HOP_HOPS)

# How the Open-World test set is drawn (splits.open_world; kgsim.world.splits.make_splits).
OW_TYPED = "typed"
OW_FACTORIAL = "factorial"
OPEN_WORLD_RULES = (OW_TYPED, OW_FACTORIAL)

# What a run does with a seed whose base model knows too few facts for the splits (run.unsplittable_seeds).
UNSPLITTABLE_SEEDS = ("fail", "exclude")

# Test-set filters: which Known rule a structural split's test facts pass. A run's own test sets
# pass the rule of run.known_by; the others are drawn beside them as ``split@filter``.
SLICK_FILTER = "slick"
EXPOSURE_FILTER = "exposure"
UNFILTERED = "unfiltered"
TEST_FILTERS = (SLICK_FILTER, EXPOSURE_FILTER, UNFILTERED)
FILTER_SEP = "@"

# --- prompts ----------------------------------------------------------------------------------
ZERO_SHOT = "zero-shot"
DIRECT_TWO_HOP = "direct-2hop"
COT = "cot"
TWO_HOP_PROMPTS = (DIRECT_TWO_HOP, COT)
RECALL_COT = "recall-cot"            # one-hop CoT: recall another fact of the subject, then answer
BASE_PROMPTS = (ZERO_SHOT, DIRECT_TWO_HOP)       # what a prompt's gains and losses are counted against

# --- SliCK categories -------------------------------------------------------------------------
HIGHLY_KNOWN = "HighlyKnown"
MAYBE_KNOWN = "MaybeKnown"
WEAKLY_KNOWN = "WeaklyKnown"
UNKNOWN = "Unknown"
CATEGORIES = (HIGHLY_KNOWN, MAYBE_KNOWN, WEAKLY_KNOWN, UNKNOWN)

# --- error classes ----------------------------------------------------------------------------
FROM_FT_SET = "from-ft-set"          # the answer is the object of a fact in the model's fine-tuning set
RIGHT_TYPE = "right-type"            # else an entity of the relation's answer type
OTHER_ERROR = "other"                # anything else (another type, a token naming no entity)
ERROR_CLASSES = (FROM_FT_SET, RIGHT_TYPE, OTHER_ERROR)

_K_SHOT = re.compile(r"(\d+)-shot")


def label(model: str, stage: str) -> str:
    """``model/stage`` (``model`` alone without a stage): how a (model, stage) pair is shown and
    keyed in ``results.json``; never parsed back (EdgeSets carry both fields)."""
    return f"{model}/{stage}" if stage else model


def k_shot_name(k: int) -> str:
    """The name of the k-shot prompt (k demonstrations of the query's relation)."""
    return ZERO_SHOT if k == 0 else f"{k}-shot"


def template_prompt_name(template: int) -> str:
    """The zero-shot question in question template `template` (0: ``zero-shot`` itself)."""
    return ZERO_SHOT if template == 0 else f"{ZERO_SHOT}-t{template}"


def shots_of(prompt: str) -> int | None:
    """k of a ``zero-shot`` (0) or ``k-shot`` prompt name; None for any other prompt."""
    if prompt == ZERO_SHOT:
        return 0
    m = _K_SHOT.fullmatch(prompt)
    return int(m.group(1)) if m else None


def sim_bucket_names(n: int) -> list[str]:
    """``sim-1`` is the quantile most similar to the fine-tuning data, ``sim-n`` the least."""
    return [f"{SIM_BUCKET_PREFIX}{i + 1}" for i in range(n)]


def sim_bucket_index(split: str) -> int | None:
    """i of the similarity bucket ``sim-i``; None for any other split."""
    rest = split[len(SIM_BUCKET_PREFIX):] if split.startswith(SIM_BUCKET_PREFIX) else ""
    return int(rest) if rest.isdigit() else None


def filtered_split(split: str, test_filter: str) -> str:
    """The name of `split`'s test set drawn with `test_filter` (``id@unfiltered``)."""
    return f"{split}{FILTER_SEP}{test_filter}"


def split_filter(name: str) -> tuple[str, str] | None:
    """(split, filter) of a :func:`filtered_split` name; None for any other split.

    >>> split_filter("open-world@exposure"), split_filter("open-world")
    (('open-world', 'exposure'), None)
    """
    split, sep, filt = name.partition(FILTER_SEP)
    return (split, filt) if sep and filt in TEST_FILTERS else None


def reference_label(ft_model: str) -> str:
    """The base model's errors classified against `ft_model`'s fine-tuning set (its reference row)."""
    return f"{BASE}@{ft_model}"


def is_similarity_split(split: str) -> bool:
    """A split defined by similarity to the fine-tuning data (a bucket or the two-way split)."""
    return split in SIM_SPLITS or sim_bucket_index(split) is not None


__all__ = [
    "BASE",
    "BASE_PROMPTS",
    "CATEGORIES",
    "CON",
    "COT",
    "DIRECT_TWO_HOP",
    "ERROR_CLASSES",
    "ES",
    "EXPOSURE_FILTER",
    "FILTER_SEP",
    "FROM_FT_SET",
    "FT_KNOWN",
    "FT_MODELS",
    "FT_UNKNOWN",
    "HIGHLY_KNOWN",
    "ID",
    "MAYBE_KNOWN",
    "MODELS",
    "NEAR_ID",
    "NO_STAGE",
    "OPEN_WORLD",
    "OPEN_WORLD_RULES",
    "OTHER_ERROR",
    "OW_FACTORIAL",
    "OW_TYPED",
    "RIGHT_TYPE",
    "SIM_BUCKET_PREFIX",
    "SIM_NEAR_ID",
    "SIM_OPEN_WORLD",
    "SIM_SPLITS",
    "SLICK_FILTER",
    "STAGES",
    "STAGE_TITLES",
    "STRUCTURAL_SPLITS",
    "TEST_FILTERS",
    "TWO_HOP",
    "TWO_HOP_HOPS",
    "TWO_HOP_PROMPTS",
    "TWO_HOP_SPLITS",
    "UNFILTERED",
    "UNKNOWN",
    "UNSPLITTABLE_SEEDS",
    "WEAKLY_KNOWN",
    "ZERO_SHOT",
    "filtered_split",
    "is_similarity_split",
    "k_shot_name",
    "label",
    "reference_label",
    "shots_of",
    "sim_bucket_index",
    "sim_bucket_names",
    "split_filter",
]
