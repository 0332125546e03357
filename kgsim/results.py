"""Per-seed figures from measured edge sets, aggregation over seeds (95% intervals), and the
paper's observations O1-O3 judged on them.

Gaps (science.md §1): Δ_fact = Fact(FT-Known) − Fact(FT-Unknown) under the zero-shot question;
Δ*_fact the same under a k-shot or CoT prompt; both per stage (ES, Con.) and test split.

An observation "holds" when the 95% interval over seeds (Student t on the per-seed values)
lies entirely on the claimed side of zero; "opposite" when it lies entirely on the other side;
"inconclusive" otherwise. With one seed there is no interval and the verdict rests on the sign
alone, which the report says.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from scipy import stats

from .edges import EdgeSet

MODELS = ("ft-known", "ft-unknown")
STAGES = ("es", "con")


def seed_figures(edge_sets: list[EdgeSet]) -> dict:
    """accuracy[model][split][prompt], sizes, and gaps[stage][split][prompt] from one seed's edge sets."""
    acc: dict = defaultdict(lambda: defaultdict(dict))
    size: dict = defaultdict(lambda: defaultdict(dict))
    for e in edge_sets:
        acc[e.model][e.test_set][e.prompt] = e.fact()
        size[e.model][e.test_set][e.prompt] = {"E": e.size, "N": e.n}
    gaps: dict = defaultdict(lambda: defaultdict(dict))
    for stage in STAGES:
        kn, unk = acc.get(f"ft-known/{stage}", {}), acc.get(f"ft-unknown/{stage}", {})
        for split in kn:
            for prompt in kn[split]:
                if prompt in unk.get(split, {}):
                    gaps[stage][split][prompt] = kn[split][prompt] - unk[split][prompt]
    return {"accuracy": _plain(acc), "sizes": _plain(size), "gaps": _plain(gaps)}


def _plain(d):
    return {k: _plain(v) for k, v in d.items()} if isinstance(d, dict) else d


# --------------------------------------------------------------------------------------------
# Aggregation over seeds
# --------------------------------------------------------------------------------------------

def interval(values: list[float], level: float = 0.95) -> dict:
    """Mean and Student-t interval of per-seed values (NaNs dropped)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], float)
    if len(x) == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0, "values": list(values)}
    m = float(x.mean())
    if len(x) < 2:
        return {"mean": m, "lo": float("nan"), "hi": float("nan"), "n": 1, "values": list(values)}
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return {"mean": m, "lo": m - half, "hi": m + half, "n": int(len(x)), "values": list(values)}


def aggregate(per_seed: list[dict]) -> dict:
    """The same nested structure as each seed's dict, every numeric leaf replaced by `interval`."""
    def walk(items: list):
        first = next((i for i in items if i is not None), None)
        if isinstance(first, dict):
            keys = []
            for i in items:
                for k in (i or {}):
                    if k not in keys:
                        keys.append(k)
            return {k: walk([(i or {}).get(k) for i in items]) for k in keys}
        if isinstance(first, (int, float)) and not isinstance(first, bool):
            return interval([float(i) if i is not None else float("nan") for i in items])
        return None
    out = walk(per_seed)
    return {k: v for k, v in out.items() if v is not None}


# --------------------------------------------------------------------------------------------
# Observations
# --------------------------------------------------------------------------------------------

def verdict(values: list[float], positive: bool = True) -> dict:
    """Whether per-seed `values` are > 0 (positive=True) or < 0, judged on the 95% interval."""
    iv = interval(values)
    if iv["n"] == 0:
        return iv | {"verdict": "not measured"}
    if iv["n"] == 1:
        sign = iv["mean"] > 0 if positive else iv["mean"] < 0
        return iv | {"verdict": ("holds" if sign else "does not hold") + " (one seed: sign only)"}
    lo_ok = iv["lo"] > 0 if positive else iv["hi"] < 0
    hi_bad = iv["hi"] < 0 if positive else iv["lo"] > 0
    return iv | {"verdict": "holds" if lo_ok else "opposite" if hi_bad else "inconclusive"}


def _g(seed: dict, stage: str, split: str, prompt: str) -> float:
    return seed["gaps"].get(stage, {}).get(split, {}).get(prompt, float("nan"))


def observations(per_seed: list[dict], k_shots: tuple[int, ...], sim_names: list[str]) -> dict:
    """O1, O2, O3 (science.md §1) judged on per-seed gaps; every sub-claim with its interval."""
    g = lambda stage, split, prompt: [_g(s, stage, split, prompt) for s in per_seed]  # noqa: E731
    diff = lambda a, b: [x - y for x, y in zip(a, b)]  # noqa: E731
    o1 = {"gap_id_es_positive": verdict(g("es", "id", "zero-shot")),
          "gap_id_con_positive": verdict(g("con", "id", "zero-shot")),
          "gap_grows_es_to_con": verdict(diff(g("con", "id", "zero-shot"), g("es", "id", "zero-shot")))}
    o2 = {}
    for stage in STAGES:
        o2[f"{stage}: gap_near_id_positive"] = verdict(g(stage, "near-id", "zero-shot"))
        o2[f"{stage}: gap_open_world_smaller_than_id"] = verdict(
            diff(g(stage, "id", "zero-shot"), g(stage, "open-world", "zero-shot")))
        o2[f"{stage}: gap_open_world_smaller_than_near_id"] = verdict(
            diff(g(stage, "near-id", "zero-shot"), g(stage, "open-world", "zero-shot")))
        if sim_names:
            o2[f"{stage}: gap_least_similar_smaller_than_most_similar"] = verdict(
                diff(g(stage, sim_names[0], "zero-shot"), g(stage, sim_names[-1], "zero-shot")))
    o3 = {}
    for stage in STAGES:
        for k in k_shots:
            z, fs = g(stage, "id", "zero-shot"), g(stage, "id", f"{k}-shot")
            o3[f"{stage}: {k}-shot shrinks the ID gap"] = verdict(diff(z, fs))
            o3[f"{stage}: {k}-shot reverses the ID gap (value: Δ* itself)"] = verdict(fs, positive=False)
        if any("2hop" in s["gaps"].get(stage, {}) for s in per_seed):
            o3[f"{stage}: CoT shrinks the 2-hop gap vs direct"] = verdict(
                diff(g(stage, "2hop", "direct-2hop"), g(stage, "2hop", "cot")))
    return {"O1": o1, "O2": o2, "O3": o3}


def summarise_observation(parts: dict) -> str:
    """'holds' if every sub-claim holds, 'does not hold' if none does, else 'partly holds'.
    Reversal sub-claims ("in many settings") are reported but do not count here."""
    verdicts = [p["verdict"] for name, p in parts.items() if "reverses" not in name]
    held = [v.startswith("holds") for v in verdicts]
    return "holds" if all(held) else "does not hold" if not any(held) else "partly holds"
