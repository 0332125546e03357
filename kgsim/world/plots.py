"""Figures (matplotlib, Agg backend, PNG). Each function takes data and a path, and returns the path."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kgsim.core.kg import KnowledgeGraph
from kgsim.core.kg import subject_mentions  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_graph_summary(kg: KnowledgeGraph, path: str | Path) -> Path:
    """Four panels: exposure histogram, subject popularity (rank-frequency, log-log), out-degree
    and in-degree distributions."""
    sm = kg.summary()
    fig, ax = plt.subplots(2, 2, figsize=(10, 7))
    h = sm["exposure_histogram"]
    ax[0, 0].bar(h["bins"], h["counts"], color="tab:blue")
    ax[0, 0].set(title=f"Exposure per fact ({sm['never_exposed']} never shown)", xlabel="times shown in pretraining",
                 ylabel="facts")
    m = np.sort(subject_mentions(kg))[::-1]
    m = m[m > 0]
    ax[0, 1].loglog(np.arange(1, len(m) + 1), m, ".", ms=3)
    ax[0, 1].set(title=f"Subject popularity (fitted Zipf exponent {sm['fitted_zipf_exponent']:.2f})",
                 xlabel="rank", ylabel="mentions")
    for a, key, title in ((ax[1, 0], "out_degree_histogram", "Out-degree (facts per subject)"),
                          (ax[1, 1], "in_degree_histogram", "In-degree (facts per answer)")):
        d = sm[key]
        a.bar(d["bins"], d["counts"], color="tab:gray")
        a.set(title=title, ylabel="entities")
        a.tick_params(axis="x", rotation=45)
    fig.suptitle(f"{sm['generator']} graph: {sm['n_entities']} entities, {sm['n_relations']} relations, "
                 f"{sm['n_facts']} facts")
    return _save(fig, path)


def plot_pretraining(metrics_path: str | Path, memorisation: dict, path: str | Path) -> Path:
    """Training loss (and statement / QA accuracy during training) and the memorisation curve."""
    import json

    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    loss = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    if loss:
        ax[0].plot(*zip(*loss), color="tab:blue", label="training loss")
    ax[0].set(xlabel="step", ylabel="loss", title="Pretraining")
    curves = {key: [(r["step"], 100 * r[key]) for r in rows if key in r] for key in ("statement_acc", "qa_extraction_id")}
    if any(curves.values()):                          # accuracies logged during training
        twin = ax[0].twinx()
        for (key, pts), color in zip(curves.items(), ("tab:green", "tab:orange")):
            if pts:
                twin.plot(*zip(*pts), "o-", color=color, ms=3, label=key)
        twin.set_ylabel("accuracy (%)")
        twin.legend(loc="center right", fontsize=8)
    b = memorisation["buckets"]
    x = [r["exposure"] for r in b]
    pct = lambda key: [float("nan") if r.get(key) is None else 100 * r[key] for r in b]  # noqa: E731 (absent: a gap)
    for key, label in (("statement_acc", "statement form"), ("qa_acc_statement_only_subjects",
                       "QA, statement-only subjects"), ("qa_acc_qa_subjects", "QA, QA subjects")):
        if any(r.get(key) is not None for r in b):     # a series nobody measured gets no legend entry
            ax[1].plot(x, pct(key), "o-", label=label)
    ax[1].set(xlabel="times shown in pretraining", ylabel="accuracy (%)", title="Memorisation curve", ylim=(-2, 102))
    ax[1].legend(fontsize=8)
    return _save(fig, path)
