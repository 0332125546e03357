"""The memorisation curve and the extraction rate of a base model, from its answers per fact.

kgsim's probe (token prompts, :func:`kgsim.study.stages.memorisation`) and the bridge's verbalised
pretraining (prompts in words, :func:`llm_bridge.verbalised.base_accuracy`) answer differently but
summarise with this one rule: statement-form and zero-shot QA accuracy by how often each fact was
shown in pretraining (:data:`EXPOSURE_BUCKETS`), and the **extraction rate**, the zero-shot QA
accuracy on facts of statement-only subjects that the model completes in statement form.

>>> t = memorisation_table(np.array([0, 1, 4, 4]), np.array([0, 1, 1, 0], bool), np.array([0, 1, 0, 0], bool),
...                        np.array([1, 1, 1, 0], bool))
>>> [(b["exposure"], b["n"], b["statement_acc"]) for b in t["buckets"][:3]], t["extraction_rate"]
([('0-0', 1, 0.0), ('1-2', 1, 1.0), ('3-5', 2, 0.5)], 0.5)
"""
from __future__ import annotations

import numpy as np

EXPOSURE_BUCKETS = ((0, 0), (1, 2), (3, 5), (6, 10), (11, 20), (21, 10**9))


def exposure_label(lo: int, hi: int) -> str:
    """``"lo-hi"``, or ``">=lo"`` for the open last bucket."""
    return f"{lo}-{hi}" if hi < 10**9 else f">={lo}"


def memorisation_table(exposure: np.ndarray, ok_statement: np.ndarray, ok_qa: np.ndarray, plain: np.ndarray, *,
                       missing=float("nan")) -> dict:
    """Accuracies of facts with exposure counts `exposure` (int [n]), answered in statement form
    (`ok_statement`, bool [n]) and as zero-shot questions (`ok_qa`), whose subject is
    statement-only (`plain`, bool [n]: never shown in QA form in pretraining).

    Returns ``{"buckets": [{exposure, lo, hi, n, statement_acc, qa_acc_statement_only_subjects,
    qa_acc_qa_subjects}], "statement_acc_exposed", "statement_acc_never_shown", "extraction_rate"}``;
    the mean of no facts is `missing`.
    """
    def mean(x: np.ndarray):
        return float(np.mean(x)) if len(x) else missing

    buckets = []
    for lo, hi in EXPOSURE_BUCKETS:
        m = (exposure >= lo) & (exposure <= hi)
        buckets.append({"exposure": exposure_label(lo, hi), "lo": lo, "hi": hi, "n": int(m.sum()),
                        "statement_acc": mean(ok_statement[m]), "qa_acc_statement_only_subjects": mean(ok_qa[m & plain]),
                        "qa_acc_qa_subjects": mean(ok_qa[m & ~plain])})
    return {"buckets": buckets, "statement_acc_exposed": mean(ok_statement[exposure > 0]),
            "statement_acc_never_shown": mean(ok_statement[exposure == 0]),
            "extraction_rate": mean(ok_qa[ok_statement & plain])}


__all__ = ["EXPOSURE_BUCKETS", "exposure_label", "memorisation_table"]
