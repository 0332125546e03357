"""Dose-response laws fitted across runs or a sweep's cells (science.md §2 T1 and §5).

Three laws, each a table (slope or share with its 95% interval, R², a test of what the law leaves
out, held-out residuals) and a figure (the points, the fit, its 95% band):

1. **Unknown share.** Held-out accuracy of the model fine-tuned on a set with a share ρ of Unknown
   facts (FT-Known ρ = 0, ``ft-mixed`` 0 < ρ < 1, FT-Unknown ρ = 1), and the gap
   Δ(ρ) = Fact(FT-Known) − Fact(model at ρ), against ρ and against the fine-tuning set's edge
   balance d = |D_kn| − |D_unk| = n(1 − 2ρ) (n facts). Linear per the theory and Gekhman et al.:
   the quadratic term is tested. (Against the two models' *test* edge counts the gap is
   (|E_kn| − |E_unk|)/N by P1, an identity that no fit can test.) Fitted per stage, split and
   stratum (the swept keys other than ρ and n); Δ(0) = 0 by definition and is left out of the gap fit.
2. **Prompt recovery (T1).** Δ*(k) = (1 − q_k)·Δ per k: q_k from a fit through the origin of the
   k-shot gap on the zero-shot gap over every seed, cell, stage and split; T1 also says one q_k
   serves every split (an F-test of one slope per split against one slope) and 0 ≤ q_k ≤ 1.
3. **Fitting Unknown facts (Gekhman et al.).** Along fine-tuning, held-out (ID) accuracy against
   the Unknown facts fitted so far as a share of the whole fine-tuning set (N_unk fitted / |D|, as
   Gekhman et al. regress it; ρ × the accuracy on the set's Unknown facts), linear with a negative
   slope. Per model (FT-Unknown; ft-mixed pooled over its ρ values) and stratum.

Intervals are Student t on ordinary least squares; points that share a seed share a base model, so
the law-1 and law-2 intervals treat them as independent when they are not, and law 3's slope
interval is taken over training curves (one curve: the OLS interval, flagged: points along one
curve are not independent); with several curves the slope is the mean of the curves' own slopes, the
estimate that interval belongs to (the OLS slope of all points pooled, kept as ``pooled_slope``, mixes
curves whose x ranges differ, e.g. ft-mixed's over ρ). Held-out residuals leave out one seed (law 1, 2) or
one curve (law 3) at a time when there are three or more, else one point.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from kgsim.core.config import from_dict
from kgsim.core.io import write_json, write_text
from kgsim.core.names import (
    CON,
    ES,
    FT_KNOWN,
    FT_MIXED,
    FT_UNKNOWN,
    STRUCTURAL_SPLITS,
    ZERO_SHOT,
    is_similarity_split,
    shots_of,
)
from kgsim.study.api import set_composition, tidy_rows

__all__ = ["fit_line", "fit_through_origin", "law_tables", "one_slope_test", "sources", "write_laws"]

DOSES = ("finetune.unknown_share", "finetune.size")
LEVEL = 0.95


# --------------------------------------------------------------------------------------------
# Fits
# --------------------------------------------------------------------------------------------

def _ols(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, int]:
    """(coefficients, their covariance, residual variance, residual degrees of freedom)."""
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    dof = len(y) - X.shape[1]
    s2 = float(((y - X @ beta) ** 2).sum() / dof) if dof > 0 else math.nan
    return beta, s2 * np.linalg.pinv(X.T @ X), s2, dof


def _line(v: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones_like(v), v])          # [n, 2]: intercept, slope


def _origin(v: np.ndarray) -> np.ndarray:
    return v[:, None]                                     # [n, 1]: slope through the origin


def _ci(est: float, se: float, dof: int) -> tuple[float, float]:
    if dof <= 0 or not math.isfinite(se):
        return math.nan, math.nan
    h = float(stats.t.ppf(0.5 + LEVEL / 2, dof)) * se
    return float(est - h), float(est + h)


def _held_out(x: np.ndarray, y: np.ndarray, groups, design) -> tuple[np.ndarray, str]:
    """Residuals of each point predicted by a fit without its group (or without it alone)."""
    g = np.asarray(groups) if groups is not None else None
    if g is None or len(set(g.tolist())) < 3:
        g, how = np.arange(len(x)), "leave one point out"
    else:
        how = "leave one group out"
    res = np.full(len(x), np.nan)
    for v in np.unique(g):
        out = g == v
        if (~out).sum() <= design(x[~out]).shape[1]:
            continue
        beta, *_ = np.linalg.lstsq(design(x[~out]), y[~out], rcond=None)
        res[out] = y[out] - design(x[out]) @ beta
    return res, how


def fit_line(x, y, groups=None) -> dict:
    """y = a + b·x by OLS: slope and intercept with 95% intervals, R², the quadratic term's p-value
    (y = a + b·x + c·x², two-sided t-test of c = 0; needs 3 distinct x and 4 points) and held-out
    residuals (RMSE).

    >>> f = fit_line([0, 1, 2, 3, 4], [1.0, 3.1, 4.9, 7.0, 9.1])
    >>> round(f["slope"], 2), f["slope_lo"] < 2 < f["slope_hi"], f["r2"] > 0.99
    (2.01, True, True)
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    out = {"n": len(x), "n_x": len(np.unique(x))}
    if len(x) < 3 or out["n_x"] < 2:
        return out | {"note": "too few points"}
    design = _line
    beta, cov, s2, dof = _ols(design(x), y)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - s2 * dof / ss_tot if ss_tot > 0 else math.nan
    se = np.sqrt(np.diag(cov))
    out |= {"intercept": float(beta[0]), "slope": float(beta[1]), "r2": float(r2), "dof": dof}
    out["intercept_lo"], out["intercept_hi"] = _ci(beta[0], se[0], dof)
    out["slope_lo"], out["slope_hi"] = _ci(beta[1], se[1], dof)
    out["slope_p"] = _p(beta[1], se[1], dof)
    if out["n_x"] >= 3 and len(x) >= 4:
        bq, covq, _, dofq = _ols(np.column_stack([np.ones_like(x), x, x * x]), y)
        out |= {"quad": float(bq[2]), "quad_p": _p(bq[2], math.sqrt(covq[2, 2]), dofq)}
    res, how = _held_out(x, y, groups, design)
    out |= {"rmse": math.sqrt(s2) if dof > 0 else math.nan, "held_out_rmse": _rms(res), "held_out": how,
            "_beta": beta.tolist(), "_cov": cov.tolist(), "_s2": s2, "_x": x.tolist(), "_res": res.tolist()}
    return out


def fit_through_origin(x, y, groups=None) -> dict:
    """y = b·x by OLS through the origin: b with its 95% interval, the uncentred R², held-out
    residuals; and, from a free-intercept fit, the intercept's p-value (T1 has none)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    out = {"n": len(x)}
    if len(x) < 2 or not np.any(x):
        return out | {"note": "too few points"}
    design = _origin
    beta, cov, s2, dof = _ols(design(x), y)
    b, se = float(beta[0]), math.sqrt(cov[0, 0]) if dof > 0 else math.nan
    ss = float((y ** 2).sum())                           # 0 when every y is 0: no R² to give
    out |= {"slope": b, "dof": dof, "r2_uncentred": 1 - s2 * dof / ss if dof > 0 and ss > 0 else math.nan}
    out["slope_lo"], out["slope_hi"] = _ci(b, se, dof)
    if len(x) >= 3 and len(np.unique(x)) >= 2:
        bi, covi, _, dofi = _ols(np.column_stack([np.ones_like(x), x]), y)
        out |= {"intercept": float(bi[0]), "intercept_p": _p(bi[0], math.sqrt(covi[0, 0]), dofi)}
    res, how = _held_out(x, y, groups, design)
    return out | {"held_out_rmse": _rms(res), "held_out": how, "_beta": [b], "_cov": [[se * se]], "_s2": s2}


def one_slope_test(x, y, labels) -> dict:
    """F-test of one slope through the origin for every label against one slope per label."""
    x, y, labels = np.asarray(x, float), np.asarray(y, float), np.asarray(labels)
    names = [v for v in dict.fromkeys(labels.tolist()) if np.any(x[labels == v])]
    if len(names) < 2:
        return {"note": "one split"}
    keep = np.isin(labels, names)
    x, y, labels = x[keep], y[keep], labels[keep]
    rss1 = float(((y - x * (x @ y) / (x @ x)) ** 2).sum())
    rss2 = sum(float(((y[m] - x[m] * (x[m] @ y[m]) / (x[m] @ x[m])) ** 2).sum()) for m in (labels == v for v in names))
    df1, df2 = len(names) - 1, len(x) - len(names)
    if df2 <= 0 or rss2 <= 0:
        return {"note": "too few points"}
    f = ((rss1 - rss2) / df1) / (rss2 / df2)
    return {"F": f, "df": [df1, df2], "p": float(stats.f.sf(f, df1, df2)), "splits": names}


def _p(est: float, se: float, dof: int) -> float:
    if dof <= 0 or not se > 0:
        return math.nan
    return float(2 * stats.t.sf(abs(est / se), dof))


def _rms(r: np.ndarray) -> float:
    r = r[np.isfinite(r)]
    return float(np.sqrt((r ** 2).mean())) if len(r) else math.nan


def band(fit: dict, xs: np.ndarray, through_origin: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fitted line at `xs` and its 95% confidence band (lo, hi)."""
    X = xs[:, None] if through_origin else np.column_stack([np.ones_like(xs), xs])
    yhat = X @ np.asarray(fit["_beta"])
    se = np.sqrt(np.einsum("ij,jk,ik->i", X, np.asarray(fit["_cov"]), X))
    h = stats.t.ppf(0.5 + LEVEL / 2, max(fit["dof"], 1)) * se
    return yhat, yhat - h, yhat + h


# --------------------------------------------------------------------------------------------
# Data: a sweep folder (every finished cell) or run folders, as (cell, swept values, results)
# --------------------------------------------------------------------------------------------

def sources(paths: list[Path]) -> tuple[list[tuple[str, dict, dict]], list[str]]:
    """The finished results of every cell of each sweep folder and of each run folder in `paths`:
    [(cell name, {swept key: value}, results.json)], and the swept keys."""
    out, keys = [], []
    for p in map(Path, paths):
        if (p / "sweep.json").is_file():
            meta = json.loads((p / "sweep.json").read_text())
            keys += [k for k in meta["grid"] if k not in keys]
            for c in meta["cells"]:
                f = p / c["dir"] / "results.json"
                if f.is_file():
                    out.append((c["name"], c["values"], json.loads(f.read_text())))
        elif (p / "results.json").is_file():
            out.append((p.name if len(paths) > 1 else "", {}, json.loads((p / "results.json").read_text())))
        else:
            raise FileNotFoundError(f"{p}: no sweep.json or results.json "
                                    "(has `kgsim sweep` or `kgsim run` finished there?)")
    return out, keys


def _frame(srcs: list[tuple[str, dict, dict]], keys: list[str]) -> pd.DataFrame:
    rows = []
    for name, values, res in srcs:
        cfg = from_dict(res["config"])
        strata = {k: str(values.get(k, "")) for k in keys if k not in DOSES}
        for row in tidy_rows(res):
            share, n = set_composition(cfg, row["model"])
            rows.append(row | {"cell": name, "unknown_share": share, "ft_set_size": n,
                               "stratum": ", ".join(f"{k}={v}" for k, v in strata.items())})
    return pd.DataFrame(rows)


def _curves(srcs: list[tuple[str, dict, dict]], keys: list[str]) -> pd.DataFrame:
    rows = []
    for name, values, res in srcs:
        cfg = from_dict(res["config"])
        stratum = ", ".join(f"{k}={values.get(k, '')}" for k in keys if k not in DOSES)
        for s in res["per_seed"]:
            for model in (FT_UNKNOWN, FT_MIXED):
                if model not in s["finetune"]:
                    continue
                share, n = set_composition(cfg, model)
                xkey = "train_acc" if model == FT_UNKNOWN else "train_unknown_acc"
                curve_id = f"{stratum}|{s['seed']}|{model}|{share}|{n}"
                for r in s["finetune"][model]["curve"]:
                    if r["step"] > 0 and xkey in r:
                        rows.append({"model": model, "stratum": stratum, "curve": curve_id, "seed": s["seed"],
                                     "step": r["step"], "unknown_fitted": share * r[xkey], "id_acc": r["id_acc"]})
    return pd.DataFrame(rows).drop_duplicates(["curve", "step"]) if rows else pd.DataFrame()


# --------------------------------------------------------------------------------------------
# The three laws
# --------------------------------------------------------------------------------------------

def law1_points(df: pd.DataFrame) -> pd.DataFrame:
    """Law 1's points: the fine-tuned models' zero-shot accuracy on the structural splits, each
    (stratum, seed, stage, split, set) once (FT-Known and FT-Unknown repeat across the cells that
    share them), with the gap Δ(ρ) to FT-Known of the same set size and the dose d = n(1 − 2ρ)."""
    ft = df[df.model.isin([FT_KNOWN, FT_UNKNOWN, FT_MIXED]) & (df.prompt == ZERO_SHOT)
            & df.split.isin(STRUCTURAL_SPLITS)].copy()
    ft = ft.drop_duplicates(["stratum", "seed", "stage", "split", "unknown_share", "ft_set_size"])
    at = ["stratum", "seed", "stage", "split", "ft_set_size"]
    known = ft[ft.model == FT_KNOWN].set_index(at).accuracy
    ft["gap_rho"] = known.reindex(pd.MultiIndex.from_frame(ft[at])).values - ft.accuracy.values
    ft["dose"] = ft.ft_set_size * (1 - 2 * ft.unknown_share)
    return ft


def law_rho(points: pd.DataFrame) -> list[dict]:
    """Law 1 fits: per stratum, stage, structural split: accuracy and gap against ρ and against d."""
    out = []
    for (stratum, stage, split), g in points.groupby(["stratum", "stage", "split"], sort=False):
        for y, xname in (("accuracy", "unknown_share"), ("gap_rho", "unknown_share"), ("accuracy", "dose"),
                         ("gap_rho", "dose")):
            h = g[g.unknown_share > 0] if y == "gap_rho" else g
            fit = fit_line(h[xname], h[y], h.seed)
            out.append({"law": "1", "stratum": stratum, "stage": stage, "split": split, "y": y, "x": xname}
                       | fit | {"verdict": _verdict_linear(fit)})
    return out


def _verdict_linear(f: dict) -> str:
    if "slope" not in f:
        return "not enough data"
    if f.get("quad_p", 1.0) < 0.05:
        return "rejected: curved (quadratic term p < 0.05)"
    if f["slope_lo"] <= 0 <= f["slope_hi"]:
        return "no dose-response (slope interval holds 0)"
    return "linear fits" if "quad_p" in f else "slope only (linearity untested: needs 3 doses and 4 points)"


def law_recovery(df: pd.DataFrame) -> list[dict]:
    """Law 2 fits: per k and stage pooled, Δ*(k) on Δ through the origin; q_k = 1 − slope."""
    g = df[(df.model == FT_KNOWN) & df.gap.notna()
           & (df.split.isin(STRUCTURAL_SPLITS) | df.split.map(is_similarity_split))]
    g = g.drop_duplicates(["stratum", "ft_set_size", "seed", "stage", "split", "prompt"])
    zero = g[g.prompt == ZERO_SHOT].set_index(["stratum", "ft_set_size", "seed", "stage", "split"]).gap
    out = []
    for prompt, h in g[g.prompt != ZERO_SHOT].groupby("prompt", sort=False):
        k = shots_of(prompt)
        if not k:
            continue
        d0 = zero.reindex(pd.MultiIndex.from_frame(h[["stratum", "ft_set_size", "seed", "stage", "split"]])).values
        ok = np.isfinite(d0)
        x, y, h = d0[ok], h.gap.values[ok], h[ok]
        fit = fit_through_origin(x, y, h.seed.values)
        row = {"law": "2", "k": k, "prompt": prompt, "n_splits": int(h.split.nunique())} | fit
        if "slope" in fit:
            row |= {"q": 1 - fit["slope"], "q_lo": 1 - fit["slope_hi"], "q_hi": 1 - fit["slope_lo"]}
            row["per_split_q"] = {s: 1 - fit_through_origin(x[m], y[m]).get("slope", math.nan)
                                  for s in h.split.unique() for m in [h.split.values == s]}
        row["one_q"] = one_slope_test(x, y, h.split.values)
        row["verdict"] = _verdict_t1(row)
        row["_x"], row["_y"], row["_split"] = x.tolist(), y.tolist(), h.split.tolist()
        out.append(row)
    return sorted(out, key=lambda r: r["k"])


def _verdict_t1(r: dict) -> str:
    if "q" not in r:
        return "not enough data"
    why = []
    if r["q_hi"] < 0:
        why.append("q_k < 0 (the prompt widens the gap)")
    if r["q_lo"] > 1:
        why.append("q_k > 1 (the gap reverses: R1, not T1)")
    if r.get("intercept_p", 1.0) < 0.05:
        why.append("a non-zero intercept (p < 0.05)")
    if r["one_q"].get("p", 1.0) < 0.05:
        why.append("one q_k does not fit all splits (F-test p < 0.05)")
    return "rejected: " + "; ".join(why) if why else "T1 fits"


def law_fitting(curves: pd.DataFrame) -> list[dict]:
    """Law 3 fits: per stratum and model, ID accuracy against the share of Unknown facts fitted."""
    out = []
    if curves.empty:
        return out
    for (stratum, model), g in curves.groupby(["stratum", "model"], sort=False):
        fit = fit_line(g.unknown_fitted, g.id_acc, g.curve)
        slopes = [fit_line(c.unknown_fitted, c.id_acc).get("slope", math.nan) for _, c in g.groupby("curve")]
        slopes = [s for s in slopes if math.isfinite(s)]
        row = {"law": "3", "stratum": stratum, "model": model, "n_curves": int(g.curve.nunique())} | fit
        if len(slopes) >= 2:                  # the slope along training: each curve's, their mean and its t interval
            m, sd = float(np.mean(slopes)), float(np.std(slopes, ddof=1))
            row["pooled_slope"], row["slope"] = row.get("slope"), m
            row["slope_lo"], row["slope_hi"] = _ci(m, sd / math.sqrt(len(slopes)), len(slopes) - 1)
            row["slope_interval"] = f"mean of {len(slopes)} curves' slopes"
        else:
            row["slope_interval"] = "OLS on one curve (too narrow: points along a curve are not independent)"
        row["verdict"] = ("not enough data" if "slope" not in fit else
                          "rejected: accuracy does not fall (slope interval above 0)" if row["slope_lo"] > 0 else
                          "no trend (slope interval holds 0)" if row["slope_hi"] >= 0 else
                          "rejected: curved (quadratic term p < 0.05)" if fit.get("quad_p", 1) < 0.05 else
                          "linear fall fits")
        if row["n_curves"] == 1 and row["verdict"] != "not enough data":
            row["verdict"] += " (one curve: the interval is too narrow)"
        out.append(row)
    return out


def law_tables(paths: list[Path]) -> dict:
    """Every law's fits from the runs or sweeps at `paths` (JSON-ready)."""
    srcs, keys = sources(paths)
    if not srcs:
        return {"law1": [], "law2": [], "law3": [], "note": "no finished cell"}
    df, curves = _frame(srcs, keys), _curves(srcs, keys)
    points = law1_points(df)
    return {"law1": law_rho(points), "law2": law_recovery(df), "law3": law_fitting(curves),
            "n_cells": len(srcs), "swept": keys, "_law1": points, "_curves": curves}


# --------------------------------------------------------------------------------------------
# Tables and figures
# --------------------------------------------------------------------------------------------

def _n(v, pct: bool = False, d: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.{d}g}"


def _iv(f: dict, key: str, scale: float = 1.0) -> str:
    if key not in f:
        return "–"
    lo, hi = f.get(f"{key}_lo", math.nan), f.get(f"{key}_hi", math.nan)
    return f"{_n(f[key] * scale)} [{_n(lo * scale)}, {_n(hi * scale)}]"


def render_laws(t: dict) -> str:
    swept = ", ".join(t.get("swept", [])) or "none"
    L = ["# Dose-response laws", "", (f"{t.get('n_cells', 0)} cell(s); swept: {swept}. "
         "95% intervals (Student t); held-out residuals as RMSE in accuracy points. See kgsim.study.laws."), ""]
    L += ["## 1. Held-out accuracy and the gap against the Unknown share ρ and the edge balance d = n(1 − 2ρ)", "",
          "| stratum | stage | split | y | x | slope | R² | quadratic p | held-out RMSE | n | verdict |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in t["law1"]:
        L.append(f"| {f['stratum'] or '–'} | {f['stage']} | {f['split']} | {f['y']} | {f['x']} | {_iv(f, 'slope')} | "
                 f"{_n(f.get('r2'))} | {_n(f.get('quad_p'))} | {_n(f.get('held_out_rmse'), pct=True)} | {f['n']} | "
                 f"{f['verdict']} |")
    L += ["", "## 2. Prompt recovery: Δ*(k) = (1 − q_k)·Δ (T1)", "",
          "| k | q_k | intercept p | one q_k for all splits: F-test p | q_k per split | held-out RMSE | n | verdict |",
          "|---|---|---|---|---|---|---|---|"]
    for f in t["law2"]:
        per = ", ".join(f"{s} {_n(q)}" for s, q in f.get("per_split_q", {}).items())
        L.append(f"| {f['k']} | {_iv(f, 'q')} | {_n(f.get('intercept_p'))} | {_n(f['one_q'].get('p'))} | {per} | "
                 f"{_n(f.get('held_out_rmse'), pct=True)} | {f['n']} | {f['verdict']} |")
    L += ["", "## 3. ID accuracy against the Unknown facts fitted, N_unk / |D| (Gekhman et al.)", "",
          "| stratum | model | slope | interval from | R² | quadratic p | held-out RMSE | curves | verdict |",
          "|---|---|---|---|---|---|---|---|---|"]
    for f in t["law3"]:
        L.append(f"| {f['stratum'] or '–'} | {f['model']} | {_iv(f, 'slope')} | {f.get('slope_interval', '')} | "
                 f"{_n(f.get('r2'))} | {_n(f.get('quad_p'))} | {_n(f.get('held_out_rmse'), pct=True)} | "
                 f"{f['n_curves']} | {f['verdict']} |")
    rejected = [f for law in ("law1", "law2", "law3") for f in t[law] if f["verdict"].startswith("rejected")]
    L += ["", "## Where the data reject a law", ""]
    where = ("stratum", "stage", "split", "y", "x", "prompt", "model")
    L += [f"- law {f['law']} ({', '.join(str(f[k]) for k in where if f.get(k))}): {f['verdict']}" for f in rejected]
    if not rejected:
        L.append("- nowhere: every fitted law is consistent with the data (no proof with few cells or seeds).")
    return "\n".join(L) + "\n"


def figures(t: dict, out: Path) -> list[str]:
    import matplotlib  # lazy: plotting only when figures are written
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    made = []
    pts = t.get("_law1")
    for xname, fname in (("unknown_share", "law1_rho.png"), ("dose", "law1_dose.png")):
        if pts is None or pts.empty:
            continue
        fig, axes = plt.subplots(2, 2, figsize=(9, 7), squeeze=False)
        for j, stage in enumerate((ES, CON)):
            for i, y in enumerate(("accuracy", "gap_rho")):
                _law1_panel(axes[i, j], t["law1"], pts, stage, y, xname)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        made.append(fname)
    if pts is not None and not pts.empty and (f := _residual_figure(plt, t["law1"])) is not None:
        f.savefig(out / "law1_residuals.png", dpi=110)
        plt.close(f)
        made.append("law1_residuals.png")
    if t["law2"]:
        fig, axes = plt.subplots(1, len(t["law2"]), figsize=(4 * len(t["law2"]), 3.8), squeeze=False)
        for ax, f in zip(axes[0], t["law2"]):
            for s in dict.fromkeys(f["_split"]):
                m = np.asarray(f["_split"]) == s
                ax.scatter(np.asarray(f["_x"])[m] * 100, np.asarray(f["_y"])[m] * 100, s=12, label=s)
            if "slope" in f:
                xs = np.linspace(min(f["_x"] + [0]), max(f["_x"] + [0]), 50)
                yh, lo, hi = band(f, xs, through_origin=True)
                ax.plot(xs * 100, yh * 100, "k-", lw=1)
                ax.fill_between(xs * 100, lo * 100, hi * 100, color="k", alpha=0.15)
            ax.axline((0, 0), slope=1, ls=":", color="gray")
            ax.set_title(f"k = {f['k']}: q_k = {_n(f.get('q'))}", fontsize=9)
            ax.set_xlabel("Δ zero-shot (points)")
            ax.set_ylabel(f"Δ* {f['prompt']} (points)")
        axes[0][0].legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / "law2_recovery.png", dpi=110)
        plt.close(fig)
        made.append("law2_recovery.png")
    cv = t.get("_curves")
    if t["law3"] and cv is not None and not cv.empty:
        fig, axes = plt.subplots(1, len(t["law3"]), figsize=(4.2 * len(t["law3"]), 3.8), squeeze=False)
        for ax, f in zip(axes[0], t["law3"]):
            g = cv[(cv.stratum == f["stratum"]) & (cv.model == f["model"])]
            ax.scatter(g.unknown_fitted * 100, g.id_acc * 100, s=8, alpha=0.6)
            if "slope" in f:
                xs = np.linspace(g.unknown_fitted.min(), g.unknown_fitted.max(), 50)
                yh, lo, hi = band(f, xs)
                ax.plot(xs * 100, yh * 100, "k-", lw=1)
                ax.fill_between(xs * 100, lo * 100, hi * 100, color="k", alpha=0.15)
            ax.set_title(f"{f['model']} {f['stratum']}".strip(), fontsize=8)
            ax.set_xlabel("Unknown facts fitted / fine-tuning set (%)")
            ax.set_ylabel("ID accuracy (%)")
        fig.tight_layout()
        fig.savefig(out / "law3_fitting.png", dpi=110)
        plt.close(fig)
        made.append("law3_fitting.png")
    return made


def _residual_figure(plt, fits: list[dict]):
    """Law 1's held-out residuals (each point predicted by the fit without its seed) against ρ, ID split:
    accuracy and the gap at ES and Con., a colour per stratum; None without fits to show."""
    fits = [f for f in fits if f["split"] == "id" and f["x"] == "unknown_share" and "_res" in f]
    if not fits:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), squeeze=False, sharex=True)
    strata = list(dict.fromkeys(f["stratum"] for f in fits))
    for j, stage in enumerate((ES, CON)):
        for i, y in enumerate(("accuracy", "gap_rho")):
            ax = axes[i, j]
            for f in (f for f in fits if f["stage"] == stage and f["y"] == y):
                ax.scatter(f["_x"], np.asarray(f["_res"]) * 100, s=12, color=f"C{strata.index(f['stratum'])}",
                           label=f["stratum"] if len(strata) > 1 else None)
            ax.axhline(0, color="gray", lw=0.8)
            ax.set_title(f"{stage}: {'ID accuracy' if y == 'accuracy' else 'gap Δ(ρ)'}, held-out residuals", fontsize=9)
            ax.set_ylabel("points")
            ax.set_xlabel("ρ (Unknown share)")
    if len(strata) > 1:
        axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def _law1_panel(ax, fits: list[dict], pts: pd.DataFrame, stage: str, y: str, xname: str) -> None:
    """ID points of one stage (a colour per stratum) with each stratum's fit and 95% band."""
    d = pts[(pts.split == "id") & (pts.stage == stage)]
    if y == "gap_rho":
        d = d[d.unknown_share > 0]
    for c, (stratum, g) in enumerate(d.groupby("stratum", sort=False)):
        color = f"C{c}"
        ax.scatter(g[xname], g[y] * 100, s=12, color=color, label=stratum or None)
        f = next((f for f in fits if (f["stratum"], f["stage"], f["split"], f["y"], f["x"])
                  == (stratum, stage, "id", y, xname) and "slope" in f), None)
        if f is not None:
            xs = np.linspace(g[xname].min(), g[xname].max(), 50)
            yh, lo, hi = band(f, xs)
            ax.plot(xs, yh * 100, lw=1, color=color)
            ax.fill_between(xs, lo * 100, hi * 100, alpha=0.15, color=color)
    if d.stratum.nunique() > 1:
        ax.legend(fontsize=6)
    ax.set_title(f"{stage}: {'ID accuracy' if y == 'accuracy' else 'gap Δ(ρ) = FT-Known − model at ρ'}", fontsize=9)
    ax.set_xlabel("ρ (Unknown share)" if xname == "unknown_share" else "d = |D_kn| − |D_unk|")
    ax.set_ylabel("points")


def write_laws(path: Path, out: Path | None = None) -> Path:
    """Fit the laws from the sweep or run at `path`; write ``laws.md``, ``laws.json`` and the
    figures into `out` (default ``path/laws``); returns the path of ``laws.md``."""
    out = out or Path(path) / "laws"
    t = law_tables([Path(path)])
    figs = figures(t, out)
    md = render_laws(t) + "\n" + "\n".join(f"![{f}]({f})" for f in figs) + "\n"
    write_text(out / "laws.md", md)
    write_json(out / "laws.json", {k: [{a: b for a, b in f.items() if not a.startswith("_")} for f in v]
                                   if isinstance(v, list) and k.startswith("law") else v
                                   for k, v in t.items() if not k.startswith("_")})
    return out / "laws.md"
