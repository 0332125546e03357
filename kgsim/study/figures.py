"""The run report's figures (PNG), each a view of results.json: gaps by split, gap vs k, ES vs Con.,
2-hop, fitting speed, memorisation, error classes; every gap figure with intervals and their kind
in its caption."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kgsim.core.names import (  # noqa: E402
    BASE,
    ERROR_CLASSES,
    FROM_FT_SET,
    FT_KNOWN,
    FT_MIXED,
    FT_MODELS,
    FT_UNKNOWN,
    ID,
    NEAR_ID,
    OPEN_WORLD,
    OTHER_ERROR,
    RIGHT_TYPE,
    SIM_SPLITS,
    STAGE_TITLES,
    STAGES,
    STRUCTURAL_SPLITS,
    ZERO_SHOT,
    k_shot_name,
    label,
    reference_label,
)
from kgsim.world.plots import _save  # noqa: E402


def _get(d: dict, *keys):
    """d[k1][k2]... or None where a key is missing."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _bar_ci(ax, x, ivs, label, offset=0.0, width=0.35):
    m = [iv["mean"] * 100 if iv else np.nan for iv in ivs]
    err = [[(iv["mean"] - iv["lo"]) * 100 if _has_interval(iv) else 0 for iv in ivs],       # Student t or bootstrap
           [(iv["hi"] - iv["mean"]) * 100 if _has_interval(iv) else 0 for iv in ivs]]
    ax.bar(np.arange(len(x)) + offset, m, width, yerr=err, capsize=3, label=label)


def interval_kind(ivs) -> str:
    """The caption's words for the intervals drawn from interval dicts `ivs`: a bootstrap over test
    facts (one seed), Student t over n seeds, or none (one seed, nothing to resample)."""
    ivs = [iv for iv in ivs if iv and iv.get("n", 0)]
    if any(iv.get("method") for iv in ivs):
        return "95% bootstrap intervals over test facts, one seed"
    n = max((iv["n"] for iv in ivs), default=0)
    return f"95% Student-t intervals over {n} seeds" if n > 1 else "one seed: no interval"


def _has_interval(iv) -> bool:
    return bool(iv) and not math.isnan(iv.get("lo", float("nan")))


def _stage_bars(xs: list[str], iv_of, size: tuple, ylabel: str, title: str, path: Path) -> str:
    """Bars per x label, one per stage (Early Stop, Convergence), of the interval ``iv_of(stage, x)``."""
    fig, ax = plt.subplots(figsize=size)
    for i, st in enumerate(STAGES):
        _bar_ci(ax, xs, [iv_of(st, x) for x in xs], STAGE_TITLES[st], (i - 0.5) * 0.35)
    ax.set_xticks(range(len(xs)), xs)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(ylabel=ylabel, title=title)
    ax.legend()
    return str(_save(fig, path))


def figures(res: dict, out: Path) -> dict[str, str]:
    agg, figs = res["aggregate"], {}
    gaps = agg.get("gaps", {})
    kind = interval_kind([iv for by_split in gaps.values() for by_prompt in by_split.values()
                          for iv in by_prompt.values()])
    splits = [s for s in (*STRUCTURAL_SPLITS, *SIM_SPLITS, *res["sim_buckets"]) if s in gaps.get(STAGES[0], {})]
    figs["gap_by_split"] = _stage_bars(splits, lambda st, s: _get(gaps, st, s, ZERO_SHOT), (8, 4), "Δ_fact (points)",
                                       f"Factuality gap FT-Known − FT-Unknown, zero-shot\n({kind})",
                                       out / "gap_by_split.png")
    # gap vs k
    ks = [0] + list(res["config"]["prompts"]["k_shots"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for st in STAGES:
        for split, ls in ((ID, "-"), (NEAR_ID, "--"), (OPEN_WORLD, ":")):
            ivs = [_get(gaps, st, split, k_shot_name(k)) for k in ks]
            m = [iv["mean"] * 100 if iv else np.nan for iv in ivs]
            line, = ax.plot(ks, m, ls, marker="o", label=f"{STAGE_TITLES[st]}, {split}")
            if any(_has_interval(iv) for iv in ivs):
                ax.fill_between(ks, [100 * iv["lo"] if _has_interval(iv) else np.nan for iv in ivs],
                                [100 * iv["hi"] if _has_interval(iv) else np.nan for iv in ivs],
                                color=line.get_color(), alpha=0.12, lw=0)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="k demonstrations", ylabel="Δ*_fact (points)", title=f"Gap vs number of demonstrations\n({kind})")
    ax.legend(fontsize=7)
    figs["gap_vs_k"] = str(_save(fig, out / "gap_vs_k.png"))
    # gap at ES vs Con. (ID) under every prompt
    prompts = [k_shot_name(k) for k in ks]
    figs["gap_es_vs_con"] = _stage_bars(prompts, lambda st, p: _get(gaps, st, ID, p), (7, 4), "Δ (points)",
                                        f"ID gap at Early Stop vs Convergence, by prompt\n({kind})",
                                        out / "gap_es_vs_con.png")
    # direct vs CoT (2-hop)
    th = agg.get("two_hop", {})
    if th:
        models = [m for m in (BASE, *(label(f, st) for st in STAGES for f in FT_MODELS)) if m in th]
        fig, ax = plt.subplots(figsize=(8, 4))
        for i, key in enumerate(("direct", "cot", "predicted_cot")):
            _bar_ci(ax, models, [_get(th, m, key) for m in models], key, (i - 1) * 0.27, 0.27)
        ax.set_xticks(range(len(models)), models, fontsize=8)
        ax.set(ylabel="2-hop accuracy (%)", title="2-hop queries: direct vs CoT vs predicted from one-hop edges\n"
               f"({interval_kind([iv for v in th.values() for iv in v.values() if isinstance(iv, dict)])})")
        ax.legend()
        figs["direct_vs_cot"] = str(_save(fig, out / "direct_vs_cot.png"))
    figs |= _fitting(res, out)
    figs |= _memorisation(res, out)
    figs |= _error_classes_figure(agg, out)
    figs |= _similarity(res, out)
    return figs


def _similarity(res: dict, out: Path) -> dict:
    """Histogram of the structural test facts' similarity to the fine-tuning queries, per split
    (counts summed over seeds), with the first seed's bucket edges."""
    seeds = [s["similarity"] for s in res["per_seed"] if s.get("similarity")]
    if not seeds:
        return {}
    bins = np.asarray(seeds[0]["bins"])
    mid = (bins[:-1] + bins[1:]) / 2
    fig, ax = plt.subplots(figsize=(7, 4))
    for split in STRUCTURAL_SPLITS:
        counts = np.sum([s["splits"][split]["hist"] for s in seeds if split in s["splits"]], axis=0)
        ax.step(mid, counts, where="mid", label=f"{split} (n = {int(np.sum(counts))})")
    edges = sorted(b["lo"] for b in seeds[0]["buckets"].values() if b["n"])[1:]
    for x in edges:
        ax.axvline(x, color="k", ls="--", lw=0.8)
    used = mid[np.sum([s["splits"][k]["hist"] for s in seeds for k in s["splits"]], axis=0) > 0]
    if len(used):
        ax.set_xlim(used.min() - 0.05, used.max() + 0.05)
    ax.set(xlabel="max cosine similarity to the fine-tuning queries (base model)", ylabel="test facts",
           title=f"Similarity of each structural split's test facts\n(dashed: bucket edges of seed "
                 f"{res['per_seed'][0]['seed']}; {len(seeds)} seed(s) summed)")
    ax.legend()
    return {"similarity": str(_save(fig, out / "similarity.png"))}


ERROR_CLASS_TITLES = {FROM_FT_SET: "from its FT set", RIGHT_TYPE: "right type, wrong entity", OTHER_ERROR: "other"}


def error_class_rows(errors: dict) -> list[str]:
    """The labels of ``aggregate["error_classes"]`` in the report's order: the base model against
    each fine-tuning set, then per stage each fine-tuned model (any other label last)."""
    models = (FT_KNOWN, FT_MIXED, FT_UNKNOWN)
    order = [reference_label(m) for m in models] + [label(m, st) for st in STAGES for m in models]
    return [k for k in order if k in errors] + [k for k in errors if k not in order]


def _row_name(lab: str) -> str:
    ref = next((m for m in (FT_KNOWN, FT_MIXED, FT_UNKNOWN) if lab == reference_label(m)), None)
    return f"{BASE} (against {ref}'s set)" if ref else lab


def _error_classes_figure(agg: dict, out: Path) -> dict:
    """Stacked bars: each model's zero-shot errors on each structural split, as shares per class."""
    errors = agg.get("error_classes", {})
    rows = error_class_rows(errors)
    splits = [s for s in STRUCTURAL_SPLITS if any(s in errors[r] for r in rows)]
    if not rows or not splits:
        return {}
    fig, axes = plt.subplots(1, len(splits), figsize=(4 + 2.5 * len(splits), 4.5), sharey=True, squeeze=False)
    colors = {FROM_FT_SET: "tab:red", RIGHT_TYPE: "tab:orange", OTHER_ERROR: "tab:gray"}
    for ax, split in zip(axes[0], splits):
        bottom = np.zeros(len(rows))
        for cls in ERROR_CLASSES:
            m = np.array([100 * (_get(errors, r, split, ZERO_SHOT, cls) or {"mean": np.nan})["mean"] for r in rows])
            m = np.nan_to_num(m)
            ax.bar(range(len(rows)), m, 0.7, bottom=bottom, color=colors[cls], label=ERROR_CLASS_TITLES[cls])
            bottom += m
        ax.set_xticks(range(len(rows)), [_row_name(r) for r in rows], rotation=60, ha="right", fontsize=7)
        ax.set_title(split)
    axes[0][0].set(ylabel="share of wrong answers (%)", ylim=(0, 118))           # room for the legend
    axes[0][-1].legend(fontsize=7, ncol=3, loc="upper right")
    fig.suptitle("Wrong answers by class, zero-shot (means over seeds; intervals in the report's table)")
    return {"error_classes": str(_save(fig, out / "error_classes.png"))}


def _fitting(res: dict, out: Path) -> dict:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for seed in res["per_seed"]:
        for which, color in ((FT_KNOWN, "tab:blue"), (FT_UNKNOWN, "tab:red")):
            curve = seed["finetune"][which]["curve"]
            steps = [c["step"] for c in curve]
            axes[0].plot(steps, [c["train_acc"] * 100 for c in curve], color=color, alpha=0.7,
                         label=which if seed is res["per_seed"][0] else None)
            axes[1].plot(steps, [c["id_acc"] * 100 for c in curve], color=color, alpha=0.7,
                         label=which if seed is res["per_seed"][0] else None)
    axes[0].set(xlabel="fine-tuning step", ylabel="training-set accuracy (%)", title="Fitting speed (one line per seed)")
    axes[1].set(xlabel="fine-tuning step", ylabel="ID test accuracy (%)", title="Held-out ID accuracy during fine-tuning")
    for a in axes:
        a.legend()
    return {"fitting_speed": str(_save(fig, out / "fitting_speed.png"))}


def _memorisation(res: dict, out: Path) -> dict:
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, name in (("statement_acc", "statement form"), ("qa_acc_statement_only_subjects",
                                                             "QA form, statement-only subjects"),
                      ("qa_acc_qa_subjects", "QA form, QA subjects")):
        for j, seed in enumerate(res["per_seed"]):
            b = seed["base"]["memorisation"]["buckets"]
            ax.plot([x["exposure"] for x in b], [x[key] * 100 if x[key] == x[key] else np.nan for x in b],
                    marker="o", alpha=0.8, color={"statement_acc": "tab:green",
                                                  "qa_acc_statement_only_subjects": "tab:orange",
                                                  "qa_acc_qa_subjects": "tab:purple"}[key],
                    label=name if j == 0 else None)
    ax.set(xlabel="times shown in pretraining", ylabel="base model accuracy (%)",
           title="Memorisation curve (one line per seed)")
    ax.legend()
    return {"memorisation": str(_save(fig, out / "memorisation.png"))}
