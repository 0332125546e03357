"""Per-seed figures from measured edge sets, aggregation over seeds (95% intervals), and the
paper's observations O1-O3 judged on them.

Gaps (science.md §1): Δ_fact = Fact(FT-Known) − Fact(FT-Unknown) under the zero-shot question;
Δ*_fact the same under a k-shot or CoT prompt; both per stage (ES, Con.) and test split.

A claim "holds" when the 95% interval over seeds (Student t on the per-seed values) lies
entirely on the claimed side of zero; "opposite" when it lies entirely on the other side;
"inconclusive" otherwise. An observation is judged on its primary claim (:data:`PRIMARY`):
holds, fails (opposite) or undecided (with the effect the seeds could detect); the secondary
claims' p-values are Holm-corrected within the observation. With one seed there is no interval over seeds; given that seed's edge
sets (:func:`bootstrap_gaps`), each claim gets instead the 95% percentile interval of a bootstrap
over test facts (each split's test set resampled with replacement, the same draw for every model,
stage and prompt on that split, so paired comparisons stay paired), and the verdict says which.
Without them a one-seed verdict rests on the sign alone, which the report says.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from scipy import stats

from kgsim.core.config import ConfigError, VerdictConfig
from kgsim.core.edges import EdgeSet
from kgsim.core.error_classes import error_counts
from kgsim.core.kg import KnowledgeGraph
from kgsim.core.names import (
    BASE,
    CON,
    COT,
    DIRECT_TWO_HOP,
    ERROR_CLASSES,
    ES,
    FT_KNOWN,
    FT_UNKNOWN,
    ID,
    NEAR_ID,
    OPEN_WORLD,
    RECALL_COT,
    SIM_NEAR_ID,
    SIM_OPEN_WORLD,
    STAGES,
    TWO_HOP,
    ZERO_SHOT,
    k_shot_name,
    label,
    reference_label,
    shots_of,
    sim_bucket_names,
)
from kgsim.core.rng import stream
from kgsim.study.bounds import cut_proportions, cut_to_unit  # noqa: F401  (re-exported)
from kgsim.study.stats import holm, mde, seeds_needed, tost
from kgsim.world.splits import DISTANCE_LEVELS, distance_level, subject_distance  # noqa: F401  (re-export)
from proofs.statements import lookup


def gap_pairs(edge_sets: list[EdgeSet]) -> dict[tuple[str, str, str], tuple[EdgeSet, EdgeSet]]:
    """``{(stage, split, prompt): (FT-Known's, FT-Unknown's EdgeSet)}`` for every stage, split and
    prompt measured for both models (stages in order, then as measured): the pairs every gap
    Δ_fact = Fact(FT-Known) − Fact(FT-Unknown) is computed from, by kgsim and by the bridge.

    >>> T, ok = np.arange(4), np.array([1, 1, 0, 0], bool)
    >>> pairs = gap_pairs([EdgeSet(T, ok, model="ft-known", stage="es", split="id"),
    ...                    EdgeSet(T, ~ok, model="ft-unknown", stage="es", split="id")])
    >>> list(pairs), gap(*pairs[("es", "id", "zero-shot")])
    ([('es', 'id', 'zero-shot')], 0.0)
    """
    by_key = {e.key: e for e in edge_sets}
    return {(stage, split, prompt): (kn, by_key[(FT_UNKNOWN, stage, split, prompt)])
            for stage in STAGES for (model, st, split, prompt), kn in by_key.items()
            if (model, st) == (FT_KNOWN, stage) and (FT_UNKNOWN, stage, split, prompt) in by_key}


def gap(known: EdgeSet, unknown: EdgeSet) -> float:
    """Δ_fact = Fact(FT-Known) − Fact(FT-Unknown) on one test set under one prompt (science.md §1)."""
    return known.fact() - unknown.fact()


def seed_figures(edge_sets: list[EdgeSet]) -> dict:
    """accuracy[label][split][prompt] (label ``model/stage``, :func:`kgsim.core.names.label`),
    sizes, and gaps[stage][split][prompt] from one seed's edge sets."""
    acc: dict = defaultdict(lambda: defaultdict(dict))
    size: dict = defaultdict(lambda: defaultdict(dict))
    for e in edge_sets:
        acc[e.label][e.split][e.prompt] = e.fact()
        size[e.label][e.split][e.prompt] = {"E": e.size, "N": e.n}
    gaps: dict = defaultdict(lambda: defaultdict(dict))
    for (stage, split, prompt), (kn, unk) in gap_pairs(edge_sets).items():
        gaps[stage][split][prompt] = gap(kn, unk)
    shots = sorted({k for e in edge_sets if (k := shots_of(e.prompt))})
    return {"accuracy": _plain(acc), "sizes": _plain(size), "gaps": _plain(gaps),
            "transitions": prompt_transitions(edge_sets), "pull": pull_model(_plain(acc), shots)}


def prompt_transitions(edge_sets: list[EdgeSet]) -> dict:
    """``{label: {split: {prompt: {"gain": g, "loss": l}}}}``: per model, split and prompt other than
    zero-shot (2-hop prompts aside), the share of its test facts the prompt answers right where the
    zero-shot question was wrong (gross gain) and wrong where it was right (gross loss), so
    Fact(prompt) − Fact(zero-shot) = gain − loss on those facts (science.md's L1 terms, counted).
    Facts are matched by id; weighted edge sets weigh them.

    >>> T = np.arange(4)
    >>> z = EdgeSet(T, np.array([1, 1, 0, 0], bool), model="ft-known", stage="es", split="id")
    >>> k = EdgeSet(T, np.array([1, 0, 1, 1], bool), model="ft-known", stage="es", split="id", prompt="4-shot")
    >>> prompt_transitions([z, k])["ft-known/es"]["id"]["4-shot"]
    {'gain': 0.5, 'loss': 0.25}
    """
    by_key = {e.key: e for e in edge_sets}
    out: dict = defaultdict(lambda: defaultdict(dict))
    for (model, stage, split, prompt), e in by_key.items():
        z = by_key.get((model, stage, split, ZERO_SHOT))
        if prompt == ZERO_SHOT or prompt in (DIRECT_TWO_HOP, COT) or z is None or not e.n:
            continue
        before, found = lookup(z.test_ids, z.correct, e.test_ids)
        if not found.all():
            continue
        w = np.ones(e.n) if e.weights is None else np.asarray(e.weights, float)
        tot = w.sum()
        if tot <= 0:
            continue
        out[e.label][split][prompt] = {"gain": float((w * (~before & e.correct)).sum() / tot),
                                       "loss": float((w * (before & ~e.correct)).sum() / tot)}
    return _plain(out)


def pull_model(accuracy: dict, k_shots, fit_split: str = ID, splits=(NEAR_ID, OPEN_WORLD)) -> dict:
    """The pull toward the base model: a k-shot prompt moves each fine-tuned model's accuracy a share
    λ of the way from its zero-shot accuracy to the base model's k-shot accuracy,
    acc_m(k) = acc_m(0) + λ_k·(acc_base(k) − acc_m(0)).

    λ is fitted per stage and k on `fit_split` by least squares over FT-Known and FT-Unknown, then
    predicts the other `splits`. Returns ``{stage: {prompt: {"lambda": λ, "residual": {split:
    mean |measured − predicted|}, "residual_no_pull": {split: the same for λ = 0}}}}`` (accuracies as
    fractions; λ NaN where the base model's k-shot accuracy equals both models' zero-shot accuracy).

    >>> acc = {"base": {"id": {"4-shot": 0.8}, "open-world": {"4-shot": 0.6}},
    ...        "ft-known/con": {"id": {"zero-shot": 0.6, "4-shot": 0.7}, "open-world": {"zero-shot": 0.4, "4-shot": 0.5}},
    ...        "ft-unknown/con": {"id": {"zero-shot": 0.2, "4-shot": 0.5}, "open-world": {"zero-shot": 0.2, "4-shot": 0.4}}}
    >>> r = pull_model(acc, [4], splits=("open-world",))["con"]["4-shot"]
    >>> round(r["lambda"], 6), round(r["residual"]["open-world"], 6)
    (0.5, 0.0)
    """
    out: dict = {}
    for st in STAGES:
        models = [label(FT_KNOWN, st), label(FT_UNKNOWN, st)]
        for k in k_shots:
            p = k_shot_name(k)

            def terms(split):
                rows = []
                for m in models:
                    a0 = accuracy.get(m, {}).get(split, {}).get(ZERO_SHOT)
                    ak = accuracy.get(m, {}).get(split, {}).get(p)
                    b = accuracy.get(BASE, {}).get(split, {}).get(p)
                    if None not in (a0, ak, b):
                        rows.append((a0, ak, b))
                return rows
            fit = terms(fit_split)
            if not fit:
                continue
            den = sum((b - a0) ** 2 for a0, _, b in fit)
            lam = sum((ak - a0) * (b - a0) for a0, ak, b in fit) / den if den > 0 else float("nan")
            res, flat = {}, {}
            for split in splits:
                rows = terms(split)
                if rows and not math.isnan(lam):
                    res[split] = float(np.mean([abs(ak - (a0 + lam * (b - a0))) for a0, ak, b in rows]))
                    flat[split] = float(np.mean([abs(ak - a0) for a0, ak, _ in rows]))
            out.setdefault(st, {})[p] = {"lambda": float(lam), "residual": res, "residual_no_pull": flat}
    return out


FACTORS = ("relation", "subject type", "answer type", "graph distance")


def factor_gaps(edge_sets: list[EdgeSet], kg: KnowledgeGraph, ft_relations, ft_subjects=None) -> dict:
    """``{stage: {split: {factor: {level: {"n": n, "gap": Δ}}}}}``: the zero-shot gap on Near-ID and
    Open-World test facts grouped by each factor of their distance from the fine-tuning data: the
    relation, the subject's type and the answer's type, each type marked as one a fine-tuning
    relation takes (``ft``) or not (``other``), and, given `ft_subjects` (the fine-tuning facts'
    subjects), the subject's graph distance to the nearest of them (:func:`kgsim.world.splits.subject_distance`: 0 hops,
    1, 2, 3+ or unreachable; a Near-ID subject is a fine-tuning or an ID subject). Δ = FT-Known's minus
    FT-Unknown's accuracy on the level's facts (both models answer the same test facts).

    >>> kg = KnowledgeGraph(entity_types=[0, 0, 1, 1], relation_domain=[0, 1], relation_range=[1, 0],
    ...                     s=[0, 1, 2], r=[0, 0, 1], a=[2, 3, 0], exposure=[1, 1, 1], popularity=np.full(4, .25))
    >>> T = np.array([1, 2])
    >>> sets = [EdgeSet(T, np.array([1, 1], bool), model="ft-known", stage="con", split="open-world"),
    ...         EdgeSet(T, np.array([0, 1], bool), model="ft-unknown", stage="con", split="open-world")]
    >>> factor_gaps(sets, kg, [0])["con"]["open-world"]["subject type"]
    {'t0 (ft)': {'n': 1, 'gap': 1.0}, 't1 (other)': {'n': 1, 'gap': 0.0}}
    """
    ft_relations = np.asarray(ft_relations, np.int64)
    ft_domain, ft_range = set(kg.relation_domain[ft_relations].tolist()), set(kg.relation_range[ft_relations].tolist())
    dist = subject_distance(kg, ft_subjects) if ft_subjects is not None else None
    out: dict = defaultdict(lambda: defaultdict(dict))
    for (stage, split, prompt), (kn, unk) in gap_pairs(edge_sets).items():
        if prompt != ZERO_SHOT or split not in (NEAR_ID, OPEN_WORLD) or not np.array_equal(kn.test_ids, unk.test_ids):
            continue
        f = kn.test_ids
        st, at = kg.entity_types[kg.s[f]], kg.relation_range[kg.r[f]]
        levels = {"relation": np.array([kg.relation_name(int(r)) for r in kg.r[f]], dtype=object),
                  "subject type": np.array([f"t{t} ({'ft' if t in ft_domain else 'other'})" for t in st], dtype=object),
                  "answer type": np.array([f"t{t} ({'ft' if t in ft_range else 'other'})" for t in at], dtype=object)}
        if dist is not None:
            levels["graph distance"] = np.array([distance_level(d) for d in dist[kg.s[f]]], dtype=object)
        for factor in levels:
            out[stage][split][factor] = {
                str(lv): {"n": int(m.sum()), "gap": float(kn.correct[m].mean() - unk.correct[m].mean())}
                for lv in sorted(set(levels[factor].tolist())) for m in [levels[factor] == lv]}
    return _plain(out)


def factor_contrasts(per_seed: list[dict]) -> dict:
    """``{stage: {split: {factor: interval}}}``: per seed, the zero-shot gap on the facts nearest the
    fine-tuning data minus the gap on the farthest (:func:`factor_gaps`' levels; each group's gap
    weighted by its facts), with its Student-t interval over the seeds that have both (``near`` and
    ``far`` name them). Near / far: for a type factor the ``ft`` levels / the ``other`` levels; for
    graph distance the fewest / the most hops that every such seed has. Paired within seed, so the
    world's own spread cancels. Factors with no such pair are left out.

    >>> fg = lambda near, far: {"con": {"open-world": {"subject type": {
    ...     "t0 (ft)": {"n": 10, "gap": near}, "t1 (other)": {"n": 30, "gap": far}}}}}
    >>> c = factor_contrasts([{"factor_gaps": fg(.5, .3)}, {"factor_gaps": fg(.6, .3)}])
    >>> c["con"]["open-world"]["subject type"]["values"], c["con"]["open-world"]["subject type"]["far"]
    ([0.2, 0.3], 't1 (other)')
    """
    out: dict = {}
    keys = {(st, sp, f) for s in per_seed for st, by in s.get("factor_gaps", {}).items()
            for sp, fs in by.items() for f in fs if f in ("subject type", "answer type", "graph distance")}
    for stage, split, factor in sorted(keys):
        levels = [s["factor_gaps"].get(stage, {}).get(split, {}).get(factor, {}) for s in per_seed]
        if factor == "graph distance":
            common = [lv for lv in DISTANCE_LEVELS if sum(lv in d for d in levels) >= 2]
            near_far = ([common[0]], [common[-1]]) if len(common) >= 2 else None
        else:
            names = {lv for d in levels for lv in d}
            near_far = ([lv for lv in sorted(names) if lv.endswith("(ft)")],
                        [lv for lv in sorted(names) if lv.endswith("(other)")])
        if not near_far or not all(near_far):
            continue
        values = [_pooled(d, near_far[0]) - _pooled(d, near_far[1]) for d in levels]
        values = [v for v in values if not math.isnan(v)]
        if len(values) >= 2:
            out.setdefault(stage, {}).setdefault(split, {})[factor] = interval(values) | {
                "near": ", ".join(near_far[0]), "far": ", ".join(near_far[1])}
    return out


def _pooled(levels: dict, names: list[str]) -> float:
    """The gap over the facts of the named levels (NaN when none is there)."""
    have = [levels[n] for n in names if n in levels and levels[n]["n"]]
    n = sum(h["n"] for h in have)
    return sum(h["gap"] * h["n"] for h in have) / n if n else float("nan")


def _plain(d):
    return {k: _plain(v) for k, v in d.items()} if isinstance(d, dict) else d


def error_class_counts(edge_sets: list[EdgeSet], kg: KnowledgeGraph, ft_facts: dict[str, np.ndarray]) -> dict:
    """``{label: {split: {prompt: counts}}}``: the wrong answers of every edge set that kept its
    answers, in the classes of :func:`kgsim.core.error_classes.error_counts` (counts: ``n``,
    ``errors`` and one count per class). A fine-tuned model (a key of `ft_facts`, its fine-tuning
    fact ids) is classified against its own set under its ``model/stage`` label; the base model
    against each set in turn, under :func:`kgsim.core.names.reference_label` of that model.

    >>> kg = KnowledgeGraph(entity_types=[0, 0, 1, 1, 1], relation_domain=[0], relation_range=[1],
    ...                     s=[0, 1], r=[0, 0], a=[2, 3], exposure=[1, 1], popularity=np.full(5, 0.2))
    >>> e = EdgeSet([1], [False], model="ft-unknown", stage="es", split="id", answers=[2])
    >>> error_class_counts([e], kg, {"ft-unknown": np.array([0])})["ft-unknown/es"]["id"]["zero-shot"]
    {'n': 1, 'errors': 1, 'from-ft-set': 1, 'right-type': 0, 'other': 0}
    """
    out: dict = defaultdict(lambda: defaultdict(dict))
    for e in edge_sets:
        if e.answers is None:
            continue
        against = {e.label: ft_facts[e.model]} if e.model in ft_facts else (
            {reference_label(m): facts for m, facts in ft_facts.items()} if e.model == BASE else {})
        for key, facts in against.items():
            out[key][e.split][e.prompt] = error_counts(kg, e.test_ids, e.correct, e.answers, facts)
    return _plain(out)


def error_class_intervals(per_seed: list[dict]) -> dict:
    """Each seed's ``error_classes`` (:func:`error_class_counts`) aggregated over seeds:
    ``{label: {split: {prompt: {"n": iv, "errors": iv, class: iv}}}}``, each ``iv`` an
    :func:`interval`; a class's values are its shares of the seed's errors (NaN, and dropped, for
    a seed without errors there). Empty when no seed classified its errors (older runs, the bridge)."""
    seeds = [s.get("error_classes") or {} for s in per_seed]
    out: dict = {}
    for lab in dict.fromkeys(k for s in seeds for k in s):
        for split in dict.fromkeys(k for s in seeds for k in s.get(lab, {})):
            for prompt in dict.fromkeys(k for s in seeds for k in s.get(lab, {}).get(split, {})):
                counts = [c for s in seeds if (c := s.get(lab, {}).get(split, {}).get(prompt))]
                iv = {"n": interval([c["n"] for c in counts]), "errors": interval([c["errors"] for c in counts])}
                iv |= {cls: interval([c[cls] / c["errors"] if c["errors"] else float("nan") for c in counts])
                       for cls in ERROR_CLASSES}
                out.setdefault(lab, {}).setdefault(split, {})[prompt] = iv
    return out


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


def accuracy_intervals(per_seed: list[dict]) -> dict:
    """accuracy[label][split][prompt] over seeds: the mean with its Student-t interval cut to
    [0, 1] (a proportion cannot leave it; cutting only drops impossible values, so coverage is kept),
    and the per-seed ``values``. (A logit-scale interval, :func:`kgsim.study.stats.logit_interval`,
    can end below the plain mean when seeds reach 100%, so it is not used for the reported mean.)

    >>> seeds = [{"accuracy": {"m": {"id": {"zero-shot": a}}}} for a in (0.97, 1.0, 0.99)]
    >>> iv = accuracy_intervals(seeds)["m"]["id"]["zero-shot"]
    >>> 0 <= iv["lo"] <= iv["mean"] <= iv["hi"] == 1, iv["values"]
    (True, [0.97, 1.0, 0.99])
    """
    return cut_to_unit(aggregate([{"accuracy": s["accuracy"]} for s in per_seed])["accuracy"])


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

EQUIVALENT = "equivalent to 0"


def verdict(values: list[float], positive: bool = True, margin: float | None = None,
            target: float | None = None) -> dict:
    """Whether per-seed `values` are > 0 (positive=True) or < 0, judged on the 95% interval; with
    the two-sided one-sample t-test's ``p`` and the effect the seeds could detect at 80% power
    (``mde``, same units as the values). An inconclusive interval becomes :data:`EQUIVALENT` when
    two one-sided tests show the mean inside ±`margin` (``p_equivalence``); `target` adds the seeds
    a test needs to detect that effect at 80% power (``seeds_for_target``)."""
    iv = interval(values)
    if iv["n"] == 0:
        return iv | {"verdict": "not measured"}
    if iv["n"] == 1:
        sign = iv["mean"] > 0 if positive else iv["mean"] < 0
        return iv | {"verdict": ("holds" if sign else "does not hold") + " (one seed: sign only)"}
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], float)
    sd = float(x.std(ddof=1))
    p = float(stats.ttest_1samp(x, 0.0).pvalue) if sd > 0 else (0.0 if x.mean() != 0 else 1.0)
    out = iv | {"verdict": _judge(iv["lo"], iv["hi"], positive), "p": p, "mde": mde(sd, len(x))}
    if margin is not None:
        eq = tost(x, margin)
        out |= {"margin": margin, "p_equivalence": eq["p"]}
        if out["verdict"] == "inconclusive" and eq["equivalent"]:
            out["verdict"] = EQUIVALENT
    if target is not None:
        out |= {"target_effect": target, "seeds_for_target": seeds_needed(sd, target) if sd > 0 else 2}
    return out


def _judge(lo: float, hi: float, positive: bool) -> str:
    """'holds' when [lo, hi] lies on the claimed side of 0, 'opposite' on the other, else 'inconclusive'."""
    ok, bad = (lo > 0, hi < 0) if positive else (hi < 0, lo > 0)
    return "holds" if ok else "opposite" if bad else "inconclusive"


def bootstrap_verdict(point: float, replicates, positive: bool = True, level: float = 0.95) -> dict:
    """One seed's claim value `point` judged on the percentile interval of its bootstrap `replicates`."""
    r = np.atleast_1d(np.asarray(replicates, float))
    r = r[~np.isnan(r)]
    if math.isnan(point) or len(r) == 0:
        return {"mean": point, "lo": float("nan"), "hi": float("nan"), "n": 1, "values": [point],
                "verdict": "not measured"}
    lo, hi = (float(q) for q in np.quantile(r, [0.5 - level / 2, 0.5 + level / 2]))
    return {"mean": point, "lo": lo, "hi": hi, "n": 1, "values": [point], "method": "bootstrap over test facts",
            "verdict": _judge(lo, hi, positive)}


def bootstrap_gaps(edge_sets: list[EdgeSet], n_boot: int = 2000, seed: int = 0) -> dict:
    """One seed's gaps recomputed on `n_boot` resamples of the test facts: ``{"gaps":
    {stage: {split: {prompt: float [n_boot]}}}}`` (the layout of :func:`seed_figures`, each value an
    array of replicates). Every split's test set is resampled with replacement; the draw is shared
    by every model, stage and prompt on that split (FT-Known and FT-Unknown answer the same test set
    T), so a gap, a change of gap across prompts and a change across stages are all paired;
    different splits are independent draws. Weighted edge sets resample their weights with the facts."""

    pairs = gap_pairs(edge_sets)
    sizes = {split: max(kn.n, unk.n) for (_, split, _), (kn, unk) in pairs.items()}
    rngs = {split: stream(seed, f"bootstrap/{split}") for split in sorted(sizes)}

    def acc(e: EdgeSet, idx: np.ndarray) -> np.ndarray:                # idx [b, n] -> [b]
        c = e.correct[idx].astype(float)
        if e.weights is None:
            return c.mean(1) if c.shape[1] else np.full(len(idx), np.nan)
        w = e.weights[idx]
        tot = w.sum(1)
        return np.where(tot > 0, (c * w).sum(1) / np.where(tot > 0, tot, 1), np.nan)

    chunks: dict = defaultdict(list)
    for start in range(0, n_boot, 250):                                 # bounded memory on large test sets
        b = min(250, n_boot - start)
        idx = {split: rngs[split].integers(0, max(n, 1), (b, n)) for split, n in sizes.items()}
        for key, (kn, unk) in pairs.items():
            if kn.n == unk.n == sizes[key[1]]:
                chunks[key].append(acc(kn, idx[key[1]]) - acc(unk, idx[key[1]]))
    gaps: dict = defaultdict(lambda: defaultdict(dict))
    for (stage, split, prompt), parts in chunks.items():
        gaps[stage][split][prompt] = np.concatenate(parts)
    return {"gaps": _plain(gaps)}


def bootstrap_gap_intervals(point: dict, boot: dict, level: float = 0.95) -> dict:
    """``gaps[stage][split][prompt]`` of one seed (`point`, as seed_figures gives) as interval dicts
    whose [lo, hi] is the percentile interval of its replicates in `boot` (:func:`bootstrap_gaps`)."""
    out: dict = {}
    for st, by_split in point.items():
        for sp, by_prompt in by_split.items():
            for pr, v in by_prompt.items():
                iv = bootstrap_verdict(v, boot["gaps"].get(st, {}).get(sp, {}).get(pr, []), level=level)
                out.setdefault(st, {}).setdefault(sp, {})[pr] = {k: iv[k] for k in ("mean", "lo", "hi", "n", "values",
                                                                                    "method") if k in iv}
    return out


def _g(seed: dict, stage: str, split: str, prompt: str) -> float:
    return seed["gaps"].get(stage, {}).get(split, {}).get(prompt, float("nan"))


def claim_values(per_seed: list[dict], k_shots: tuple[int, ...], sim_names: list[str]) -> dict:
    """``{observation: {claim: (values over seeds or replicates, positive)}}`` for O1-O3."""
    g = lambda stage, split, prompt: [_g(s, stage, split, prompt) for s in per_seed]  # noqa: E731
    diff = lambda a, b: [x - y for x, y in zip(a, b)]  # noqa: E731
    measured = lambda split: any(split in s["gaps"].get(st, {}) for s in per_seed for st in STAGES)  # noqa: E731
    z = ZERO_SHOT
    o1 = {"gap_id_es_positive": (g(ES, ID, z), True),
          "gap_id_con_positive": (g(CON, ID, z), True),
          "gap_grows_es_to_con": (diff(g(CON, ID, z), g(ES, ID, z)), True)}
    # Near-ID / Open-World defined structurally (kgsim's worlds; claimed unless only the similarity
    # split was measured, as on text data) and by similarity (the paper's definition, the bridge)
    structural = measured(NEAR_ID) or measured(OPEN_WORLD) or not measured(SIM_NEAR_ID)
    o2 = {}
    for stage in STAGES:
        if structural:
            o2[f"{stage}: gap_near_id_positive"] = (g(stage, NEAR_ID, z), True)
            o2[f"{stage}: gap_open_world_smaller_than_id"] = (diff(g(stage, ID, z), g(stage, OPEN_WORLD, z)), True)
            o2[f"{stage}: gap_open_world_smaller_than_near_id"] = (
                diff(g(stage, NEAR_ID, z), g(stage, OPEN_WORLD, z)), True)
        if measured(SIM_NEAR_ID):
            o2[f"{stage}: gap_sim_near_id_positive"] = (g(stage, SIM_NEAR_ID, z), True)
            o2[f"{stage}: gap_sim_open_world_smaller_than_id"] = (
                diff(g(stage, ID, z), g(stage, SIM_OPEN_WORLD, z)), True)
            o2[f"{stage}: gap_sim_open_world_smaller_than_sim_near_id"] = (
                diff(g(stage, SIM_NEAR_ID, z), g(stage, SIM_OPEN_WORLD, z)), True)
        if sim_names:
            o2[f"{stage}: gap_least_similar_smaller_than_most_similar"] = (
                diff(g(stage, sim_names[0], z), g(stage, sim_names[-1], z)), True)
    o3 = {}
    for stage in STAGES:
        for k in k_shots:
            zs, fs = g(stage, ID, z), g(stage, ID, k_shot_name(k))
            o3[f"{stage}: {k}-shot shrinks the ID gap"] = (diff(zs, fs), True)
            o3[f"{stage}: {k}-shot reverses the ID gap (value: Δ* itself)"] = (fs, False)
        if any(RECALL_COT in s["gaps"].get(stage, {}).get(ID, {}) for s in per_seed):
            o3[f"{stage}: recall-CoT shrinks the ID gap"] = (diff(g(stage, ID, z), g(stage, ID, RECALL_COT)), True)
        if any(TWO_HOP in s["gaps"].get(stage, {}) for s in per_seed):
            o3[f"{stage}: CoT shrinks the 2-hop gap vs direct"] = (
                diff(g(stage, TWO_HOP, DIRECT_TWO_HOP), g(stage, TWO_HOP, COT)), True)
    return {"O1": o1, "O2": o2, "O3": o3}


# One primary contrast per observation, declared in the config before the run (``[verdicts]``,
# kgsim.core.config.VerdictConfig; these are its defaults); every other claim is secondary:
# Holm-corrected across its observation, shown as such.
_DEFAULT = VerdictConfig()
PRIMARY = {"O1": _DEFAULT.primary_o1, "O2": _DEFAULT.primary_o2, "O3": _DEFAULT.primary_o3}


def verdict_rules(cfg: VerdictConfig | None) -> dict:
    """``{"primary": {observation: claim}, "margin": m, "target_effect": t}`` from a ``[verdicts]``
    section (None: the defaults with no margin and no target, as results written before it)."""
    if cfg is None:
        return {"primary": PRIMARY, "margin": None, "target_effect": None}
    return {"primary": {"O1": cfg.primary_o1, "O2": cfg.primary_o2, "O3": cfg.primary_o3},
            "margin": cfg.margin, "target_effect": cfg.target_effect}


def claim_names(k_shots: tuple[int, ...], sim_names: list[str], two_hop: bool = True,
                recall: bool = True) -> dict[str, list[str]]:
    """The claims a kgsim run judges (structural splits measured, 2-hop when `two_hop`, recall-CoT
    when `recall`), per observation."""
    gaps = {st: {sp: {} for sp in (ID, NEAR_ID, OPEN_WORLD, *sim_names, *((TWO_HOP,) if two_hop else ()))}
            for st in STAGES}
    for st in STAGES:
        gaps[st][ID] = {RECALL_COT: 0.0} if recall else {}
    return {o: list(parts) for o, parts in claim_values([{"gaps": gaps}], k_shots, sim_names).items()}


def check_verdicts(cfg) -> None:
    """Raise ConfigError naming the key when a declared primary claim is not one this run judges."""
    names = claim_names(tuple(cfg.prompts.k_shots), sim_bucket_names(cfg.run.sim_buckets), cfg.prompts.cot,
                        cfg.prompts.recall_cot)
    for o, key in (("O1", "primary_o1"), ("O2", "primary_o2"), ("O3", "primary_o3")):
        value = getattr(cfg.verdicts, key)
        if value not in names[o]:
            shown = ", ".join(repr(n) for n in names[o][:6]) + (", ..." if len(names[o]) > 6 else "")
            raise ConfigError(f"verdicts.{key} = {value!r}: not a claim of {o} in this run (its claims: {shown})")


def observations(per_seed: list[dict], k_shots: tuple[int, ...], sim_names: list[str],
                 boot: dict | None = None, rules: dict | None = None) -> dict:
    """O1, O2, O3 (science.md §1) judged on per-seed gaps; every sub-claim with its interval. With
    one seed and `boot` (:func:`bootstrap_gaps` of its edge sets), on the bootstrap interval.
    `rules` (:func:`verdict_rules`) name each observation's primary claim, which carries
    ``"primary": True``, and the equivalence margin and target effect of :func:`verdict`; with
    several seeds the secondary claims carry ``p_holm``, their t-test p-values Holm-adjusted within
    the observation."""
    rules = rules or verdict_rules(None)
    claims = claim_values(per_seed, k_shots, sim_names)
    if len(per_seed) == 1 and boot:
        reps = claim_values([boot], k_shots, sim_names)                        # values: arrays of replicates
        out = {o: {name: bootstrap_verdict(vals[0], reps[o][name][0], pos) for name, (vals, pos) in parts.items()}
               for o, parts in claims.items()}
    else:
        out = {o: {name: verdict(vals, pos, rules["margin"], rules["target_effect"])
                   for name, (vals, pos) in parts.items()} for o, parts in claims.items()}
    primary = rules["primary"]
    for o, parts in out.items():
        if primary.get(o) in parts:
            parts[primary[o]]["primary"] = True
        secondary = [n for n, c in parts.items() if not c.get("primary") and "p" in c and not math.isnan(c["p"])]
        for n, p_adj in zip(secondary, holm([parts[n]["p"] for n in secondary])):
            parts[n]["p_holm"] = float(p_adj)
    return out


def summarise_observation(parts: dict) -> str:
    """The observation's verdict from its primary claim alone: "holds" (its 95% interval excludes 0
    on the claimed side), "fails" (it excludes 0 on the other side) or "undecided" (the interval
    covers 0: absence of evidence, never "does not hold"), with the effect the seeds could detect.
    A result without a primary claim (written before primaries existed) falls back to "holds" only
    if every non-reversal claim holds, else "undecided"."""
    primary = next((c for c in parts.values() if c.get("primary")), None)
    if primary is None:
        held = [p["verdict"].startswith("holds") for name, p in parts.items() if "reverses" not in name]
        return "holds" if held and all(held) else "undecided"
    v = primary["verdict"]
    if v.startswith("holds"):
        return "holds"
    if v == "opposite" or v.startswith("does not hold"):
        return "fails"
    if v == EQUIVALENT:
        return f"fails (equivalent to 0 within ±{100 * primary['margin']:g} points, TOST p = {primary['p_equivalence']:.3g})"
    if v == "not measured":
        return "not measured"
    m = primary.get("mde")
    need = (f"; {primary['seeds_for_target']} seeds would detect {100 * primary['target_effect']:g}"
            if primary.get("seeds_for_target") else "")
    return "undecided" + (f" (detectable at 80% power with these seeds: {100 * m:.1f} points{need})"
                          if m is not None and not math.isnan(m) else " (one seed: test-fact sampling only)")
