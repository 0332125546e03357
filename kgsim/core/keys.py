"""Which config keys enter which key: the artefact hashes (worlds, base models, probes) and a run's
protocol (seed results, fine-tuned models).

A key added after caches existed is *neutral* at the value that changes nothing: it counts only when
set away from it, so every world and model cached before it still matches. A *study* key is read only
by the study's own draw (kgsim.study.stages.ft_splits), after the world, base model, instruct stage
and probe exist: it is in no artefact hash, and in a run's protocol only when set away from its first
value, so results written before it still match.

>>> hashed_section("corpus", {"qa_templates": 1, "facts_per_doc": 4})
{'facts_per_doc': 4}
>>> hashed_section("splits", {"open_world": "factorial", "ft_size": 200})
{'ft_size': 200}
>>> drop_study_defaults({"splits": {"open_world": "typed", "ft_size": 200}, "seed": 0})
{'splits': {'ft_size': 200}, 'seed': 0}
"""
from __future__ import annotations

NEUTRAL_KEYS = {("corpus", "two_hop_qa_share"): 0.0,     # (section, key): the value that changes nothing
                ("corpus", "qa_templates"): 1}
STUDY_KEYS = {("splits", "open_world"): "typed"}          # (section, key): its first value


def hashed_section(section: str, d: dict) -> dict:
    """The keys of one config section (a plain dict) that enter an artefact hash."""
    return {k: v for k, v in d.items() if NEUTRAL_KEYS.get((section, k), object()) != v
            and (section, k) not in STUDY_KEYS}


def drop_study_defaults(d: dict) -> dict:
    """A whole config dict without the :data:`STUDY_KEYS` left at their first value."""
    return {sec: ({k: v for k, v in sub.items() if STUDY_KEYS.get((sec, k), object()) != v}
                  if isinstance(sub, dict) else sub) for sec, sub in d.items()}
