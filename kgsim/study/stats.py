"""Statistics for verdicts that decide: intervals on the right scale, equivalence, multiplicity,
power, variance components, and the verdict rule (issue: "Verdicts that decide").

Everything here is a pure function of arrays of numbers (numpy + scipy), so each rule is tested
against a hand computation or statsmodels (``tests/test_stats.py``), and its coverage is checked on
simulated data with a known truth.

- :func:`wilson`: an interval for one proportion k/n that never leaves [0, 1].
- :func:`logit_interval`: a mean of per-seed proportions with a Student-t interval on the logit
  scale, mapped back (inside [0, 1]).
- :func:`t_interval`: a mean difference with a Student-t interval (for gaps, which live in [-1, 1]).
- :func:`tost`: two one-sided t-tests of ``|mean| < margin`` (equivalence), the only way a
  "no effect" verdict is reached.
- :func:`holm`: Holm's step-down adjusted p-values for a family of secondary claims.
- :func:`mde` / :func:`seeds_needed`: the minimum detectable effect of a one-sample t-test at a
  given power, and the seeds a target effect needs.
- :func:`variance_components`: a nested design's between-group and within-group variance
  (world-and-pretraining vs fine-tuning), by the one-way random-effects ANOVA estimator.
- :func:`nested_components`: the three sources of a contrast's spread (world-and-pretraining,
  fine-tuning, test-fact sampling) from a nested run, with what its design cannot separate.
- :func:`decide`: holds / fails / undecided from an interval, an equivalence test and the MDE.

>>> lo, hi = wilson(0, 20)
>>> lo == 0.0 and 0.15 < hi < 0.17
True
>>> round(mde(sd=10.0, n=24), 1)          # points: 24 seeds detect ~6 points when sd is 10
6.0
>>> seeds_needed(sd=16.6, effect=10.0)
24
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

__all__ = ["wilson", "logit_interval", "t_interval", "tost", "holm", "mde", "seeds_needed",
           "variance_components", "variance_interval", "nested_components", "Decision", "decide"]


def _clean(values) -> np.ndarray:
    x = np.asarray([v for v in np.ravel(np.asarray(values, float))], float)
    return x[~np.isnan(x)]


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion with `k` successes out of `n` (inside [0, 1]).

    >>> [round(v, 4) for v in wilson(8, 10)]
    [0.4902, 0.9433]
    """
    if n <= 0:
        return (float("nan"), float("nan"))
    if not 0 <= k <= n:
        raise ValueError(f"k = {k}: must lie in [0, n = {n}]")
    z = stats.norm.ppf(0.5 + level / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def t_interval(values, level: float = 0.95) -> dict:
    """Mean and Student-t interval of per-seed `values` (NaNs dropped); ``sd`` is the sample sd.
    With fewer than 2 values the interval is NaN."""
    x = _clean(values)
    n = len(x)
    if n == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "sd": float("nan"), "n": 0}
    m = float(x.mean())
    if n < 2:
        return {"mean": m, "lo": float("nan"), "hi": float("nan"), "sd": float("nan"), "n": 1}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))
    return {"mean": m, "lo": m - half, "hi": m + half, "sd": sd, "n": n}


def logit_interval(props, n_facts=None, level: float = 0.95) -> dict:
    """Mean accuracy over seeds with an interval that stays inside [0, 1]: a Student-t interval of
    the seeds' logits, mapped back through the logistic function.

    A proportion of exactly 0 or 1 has no logit; it is moved half a fact inside, (k + 1/2)/(n + 1)
    with `n_facts` (the test-set size per seed), or by 1e-3 without it. ``mean`` is the plain mean of
    the proportions; ``lo``/``hi`` come from the logit scale, so they need not be symmetric.

    >>> iv = logit_interval([0.98, 1.0, 0.99], n_facts=[100, 100, 100])
    >>> 0 <= iv["lo"] <= iv["mean"] <= iv["hi"] <= 1
    True
    """
    p = np.asarray(props, float)
    keep = ~np.isnan(p)
    p = p[keep]
    if n_facts is not None:
        n = np.asarray(n_facts, float)[keep]
        p_adj = np.where((p <= 0) | (p >= 1), (p * n + 0.5) / (n + 1), p)
    else:
        p_adj = np.clip(p, 1e-3, 1 - 1e-3)
    out = {"mean": float(p.mean()) if len(p) else float("nan"), "n": int(len(p))}
    if len(p) < 2:
        return out | {"lo": float("nan"), "hi": float("nan")}
    z = np.log(p_adj / (1 - p_adj))
    iv = t_interval(z, level)
    return out | {"lo": float(1 / (1 + math.exp(-iv["lo"]))), "hi": float(1 / (1 + math.exp(-iv["hi"])))}


def tost(values, margin: float, level: float = 0.95) -> dict:
    """Two one-sided t-tests (Schuirmann) of equivalence ``-margin < mean < margin`` for per-seed
    `values`. ``p`` is the larger one-sided p-value; ``equivalent`` is ``p < 1 - level`` (the
    (1 - 2 alpha) interval lies inside the margin).

    >>> r = tost([0.5, -0.4, 0.2, 0.1, -0.3, 0.0], margin=2.0)
    >>> r["equivalent"], round(r["p"], 6) < 1e-3
    (True, True)
    """
    if margin <= 0:
        raise ValueError(f"margin = {margin}: must be > 0")
    x = _clean(values)
    n = len(x)
    if n < 2:
        return {"p": float("nan"), "equivalent": False, "n": n, "margin": margin}
    m, se = float(x.mean()), float(x.std(ddof=1) / math.sqrt(n))
    if se == 0:
        p = 0.0 if abs(m) < margin else 1.0
    else:
        p_low = stats.t.sf((m + margin) / se, n - 1)        # H0: mean <= -margin
        p_up = stats.t.cdf((m - margin) / se, n - 1)         # H0: mean >= +margin
        p = float(max(p_low, p_up))
    return {"p": p, "equivalent": bool(p < 1 - level), "n": n, "margin": margin}


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order.

    >>> holm([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(pvalues, float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def _power(effect: float, sd: float, n: int, alpha: float) -> float:
    """Power of a two-sided one-sample t-test of mean 0 when the true mean is `effect`."""
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = effect / (sd / math.sqrt(n))
    upper = float(np.nan_to_num(stats.nct.sf(crit, df, nc), nan=1.0 if nc > crit else 0.0))
    lower = float(np.nan_to_num(stats.nct.sf(crit, df, -nc), nan=0.0))   # = P(T < -crit), by symmetry
    return min(1.0, upper + lower)


def mde(sd: float, n: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest true mean a two-sided one-sample t-test over `n` seeds detects with `power`
    when the seeds' sd is `sd` (same units as `sd`). NaN for n < 2 or a non-finite sd."""
    if n < 2 or not np.isfinite(sd) or sd < 0:
        return float("nan")
    if sd == 0:
        return 0.0
    return float(optimize.brentq(lambda e: _power(e, sd, n, alpha) - power, 1e-12 * sd, 50 * sd))


def seeds_needed(sd: float, effect: float, power: float = 0.8, alpha: float = 0.05, max_n: int = 10_000) -> int:
    """The fewest seeds (>= 2) whose one-sample t-test detects `effect` with `power`."""
    if effect <= 0:
        raise ValueError(f"effect = {effect}: must be > 0")
    for n in range(2, max_n + 1):
        if _power(effect, sd, n, alpha) >= power:
            return n
    return max_n


def variance_components(groups) -> dict:
    """One-way random-effects ANOVA over a nested design: `groups` is a list of arrays, one per
    outer unit (a world and its pretrained base), each holding the values of its inner replicates
    (fine-tuning seeds). Returns ``between`` (variance of the outer units' true means),
    ``within`` (variance across inner replicates) and the share of the total that is between
    (ICC). ``between`` is truncated at 0 (the usual estimator can go negative).

    >>> vc = variance_components([[1.0, 1.2, 0.8], [3.0, 3.1, 2.9], [5.0, 5.2, 4.8]])
    >>> round(vc["between"], 2), round(vc["within"], 3)
    (3.99, 0.03)
    """
    ms = _mean_squares(groups)
    if ms is None:
        k, N = len([g for g in groups if len(_clean(g))]), int(sum(len(_clean(g)) for g in groups))
        return {"between": float("nan"), "within": float("nan"), "icc": float("nan"), "groups": k, "n": N}
    ms_b, ms_w, n0, k, N = ms
    between = float(max(0.0, (ms_b - ms_w) / n0))
    total = between + ms_w
    return {"between": between, "within": float(ms_w), "icc": between / total if total > 0 else float("nan"),
            "groups": k, "n": int(N)}


def _mean_squares(groups):
    """(MS_between, MS_within, n0, groups, n) of a one-way layout (n0: the effective group size of an
    unbalanced design), or None with fewer than 2 non-empty groups or no within-group df."""
    gs = [np.asarray(_clean(g)) for g in groups]
    gs = [g for g in gs if len(g)]
    k, ns = len(gs), np.array([len(g) for g in gs], float)
    N = ns.sum()
    if k < 2 or N - k < 1:
        return None
    grand = np.concatenate(gs).mean()
    ms_b = float(sum(len(g) * (g.mean() - grand) ** 2 for g in gs)) / (k - 1)
    ms_w = float(sum(((g - g.mean()) ** 2).sum() for g in gs)) / (N - k)
    return ms_b, ms_w, (N - (ns ** 2).sum() / N) / (k - 1), k, int(N)


def variance_interval(var: float, df: int, level: float = 0.95) -> tuple[float, float]:
    """The chi-square interval of a normal variance estimated with `df` degrees of freedom:
    [df·s²/χ²(1 − α/2), df·s²/χ²(α/2)]; NaNs for df < 1.

    >>> lo, hi = variance_interval(4.0, 2)
    >>> round(lo, 3), round(hi, 1)
    (1.084, 158.0)
    """
    if df < 1 or not np.isfinite(var):
        return (float("nan"), float("nan"))
    a = 1 - level
    return (float(df * var / stats.chi2.ppf(1 - a / 2, df)), float(df * var / stats.chi2.ppf(a / 2, df)))


def difference_interval(c1: float, ms1: float, df1: int, c2: float, ms2: float, df2: int,
                        level: float = 0.95) -> tuple[float, float]:
    """An interval for θ = c1·ms1 − c2·ms2 (c1, c2 > 0; ms1, ms2 independent mean squares with df1,
    df2 degrees of freedom), the modified large-sample (MLS) interval of Ting, Burdick, Graybill and
    Gui (1990) for a variance component that is a difference of mean squares, such as the between-seed
    component (MS_between − MS_within) / n0. Not truncated at 0; NaNs for df < 1. Its coverage on
    simulated nested designs is tested (tests/test_nested.py).

    >>> lo, hi = difference_interval(1 / 3, 30.0, 2, 1 / 3, 3.0, 6)
    >>> round(lo, 2), round(hi, 1)
    (1.07, 393.8)
    """
    if df1 < 1 or df2 < 1 or not (np.isfinite(ms1) and np.isfinite(ms2)):
        return (float("nan"), float("nan"))
    a = (1 - level) / 2
    f_hi = lambda d1, d2: stats.f.ppf(1 - a, d1, d2)    # noqa: E731  the upper a point
    f_lo = lambda d1, d2: stats.f.ppf(a, d1, d2)        # noqa: E731  the lower a point
    g1, h1 = 1 - 1 / (stats.chi2.ppf(1 - a, df1) / df1), 1 / (stats.chi2.ppf(a, df1) / df1) - 1
    g2, h2 = 1 - 1 / (stats.chi2.ppf(1 - a, df2) / df2), 1 / (stats.chi2.ppf(a, df2) / df2) - 1
    fa, fb = f_hi(df1, df2), f_lo(df1, df2)
    g12 = ((fa - 1) ** 2 - g1 ** 2 * fa ** 2 - h2 ** 2) / fa
    h12 = ((1 - fb) ** 2 - h1 ** 2 * fb ** 2 - g2 ** 2) / fb
    u1, u2 = c1 * ms1, c2 * ms2
    theta = u1 - u2
    lo = theta - math.sqrt(max(0.0, g1 ** 2 * u1 ** 2 + h2 ** 2 * u2 ** 2 + g12 * u1 * u2))
    hi = theta + math.sqrt(max(0.0, h1 ** 2 * u1 ** 2 + g2 ** 2 * u2 ** 2 + h12 * u1 * u2))
    return (float(lo), float(hi))


def between_interval(groups, level: float = 0.95) -> tuple[float, float]:
    """The MLS interval (:func:`difference_interval`) of the between-group variance that
    :func:`variance_components` estimates, cut at 0; NaNs with fewer than 2 groups or no replicates.

    >>> lo, hi = between_interval([[1.0, 1.2, 0.8], [3.0, 3.1, 2.9], [5.0, 5.2, 4.8]])
    >>> round(lo, 2), round(hi, 1)
    (1.08, 158.0)
    """
    ms = _mean_squares(groups)
    if ms is None:
        return (float("nan"), float("nan"))
    ms_b, ms_w, n0, k, N = ms
    lo, hi = difference_interval(1 / n0, ms_b, k - 1, 1 / n0, ms_w, N - k, level)
    return (max(0.0, lo), max(0.0, hi))


def nested_components(values, sampling_var=None, target: float | None = None) -> dict:
    """The spread of one contrast split into its three sources, from a nested run: `values[i]` holds
    the contrast of base seed i's fine-tuning replicates (one world and base model per seed; the
    replicates share its splits and test facts and differ only in fine-tuning's random stream);
    `sampling_var[i][j]` (optional) is replicate j's variance under resampling its test facts (the
    bootstrap). Returns variances (units of the values squared; NaN where the design cannot
    separate them, with the reason in ``note``):

    - ``test_facts``: the mean bootstrap variance;
    - ``fine_tuning``: the pooled within-seed variance across replicates (needs a seed with >= 2);
    - ``world_pretraining``: the between-seed component (one-way random-effects ANOVA,
      :func:`variance_components`) less ``test_facts``, since every seed draws its own test facts and
      its replicates share them; truncated at 0 (needs >= 2 seeds);
    - ``world_and_fine_tuning``: with one replicate per seed, the seeds' variance less ``test_facts``
      (the two cannot be told apart);
    - ``per_seed_mean``: the variance of one seed's replicate mean, world + test facts + fine-tuning /
      J (J: the replicates per seed), which the Student-t interval over seeds estimates directly;

    and with `target` (an effect, same units) ``seeds_for_target``: {J: the seeds a one-sample t-test
    over seed means needs to detect `target` at 80% power with J replicates per seed} for J = 1, 2, 4,
    where all three components are separated. ``fine_tuning_ci`` and ``per_seed_mean_ci`` are 95%
    intervals of those variances (:func:`variance_interval`; few seeds make the second wide),
    ``world_pretraining_ci`` that of the world component (:func:`between_interval`, less
    ``test_facts``, which is taken as known: its bootstrap rests on hundreds of facts), and
    ``seeds_for_target_upper`` the seeds the target needs if the seed mean's variance is at the top
    of its interval, at this run's replicates per seed.

    A hand check: two seeds whose replicates differ by ±1 around means 0 and 4, bootstrap variance 0.5:

    >>> vc = nested_components([[-1.0, 1.0], [3.0, 5.0]], [[0.5, 0.5], [0.5, 0.5]])
    >>> vc["fine_tuning"], vc["test_facts"], vc["world_pretraining"]
    (2.0, 0.5, 6.5)
    """
    gs = [np.asarray(_clean(g)) for g in values]
    gs = [g for g in gs if len(g)]
    sv = _clean(np.concatenate([np.asarray(v, float).ravel() for v in sampling_var])) if sampling_var else np.array([])
    out = {"n_seeds": len(gs), "n_units": int(sum(len(g) for g in gs)),
           "replicates": sorted({len(g) for g in gs}), "test_facts": float(sv.mean()) if len(sv) else float("nan"),
           "fine_tuning": float("nan"), "world_pretraining": float("nan"), "world_and_fine_tuning": float("nan"),
           "per_seed_mean": float("nan")}
    notes = []
    if not gs:
        return out | {"note": "not measured"}
    t = out["test_facts"] if len(sv) else 0.0
    if not len(sv):
        notes.append("no bootstrap: test-fact sampling is not separated")
    multi = [g for g in gs if len(g) >= 2]
    if multi:
        ss_w = sum(float(((g - g.mean()) ** 2).sum()) for g in multi)
        out["fine_tuning"] = ss_w / sum(len(g) - 1 for g in multi)
        out["fine_tuning_ci"] = variance_interval(out["fine_tuning"], sum(len(g) - 1 for g in multi))
    else:
        notes.append("one fine-tuning run per seed: fine-tuning is not separated from world-and-pretraining")
    if len(gs) >= 2:
        means = np.array([g.mean() for g in gs])
        out["per_seed_mean"] = float(means.var(ddof=1))
        out["per_seed_mean_ci"] = variance_interval(out["per_seed_mean"], len(gs) - 1)
        if multi:
            vc = variance_components(gs)
            out["world_pretraining"] = max(0.0, vc["between"] - t)
            b_lo, b_hi = between_interval(gs)
            out["world_pretraining_ci"] = (max(0.0, b_lo - t), max(0.0, b_hi - t))
        else:
            out["world_and_fine_tuning"] = max(0.0, float(np.concatenate(gs).var(ddof=1)) - t)
    else:
        notes.append("one seed: world-and-pretraining is not separated (nor in any interval)")
    sep = [out[k] for k in ("world_pretraining", "fine_tuning", "test_facts")]
    if target is not None and all(np.isfinite(sep)):
        w, f, tf = sep
        out["seeds_for_target"] = {j: seeds_needed(math.sqrt(w + tf + f / j), target) if w + tf + f > 0 else 2
                                   for j in (1, 2, 4)}
    if target is not None and "per_seed_mean_ci" in out and np.isfinite(out["per_seed_mean_ci"][1]):
        out["seeds_for_target_upper"] = seeds_needed(math.sqrt(out["per_seed_mean_ci"][1]), target)
    return out | {"note": "; ".join(notes) if notes else "all three separated"}


@dataclass(frozen=True)
class Decision:
    """A verdict on one contrast: ``holds`` (the interval excludes 0 in the predicted direction),
    ``fails`` (it excludes 0 the other way, or equivalence to 0 was shown within the margin) or
    ``undecided`` (neither; ``mde`` says which effect the seeds at hand could have detected)."""

    verdict: str
    reason: str
    mean: float
    lo: float
    hi: float
    n: int
    mde: float
    p_equivalence: float


def decide(values, positive: bool = True, margin: float | None = None, level: float = 0.95,
           power: float = 0.8) -> Decision:
    """The verdict rule: an observation holds, fails (opposite, or equivalence shown), or is
    undecided (with the MDE that would decide it).

    >>> decide([10, 12, 9, 11]).verdict
    'holds'
    >>> decide([-10, -12, -9, -11]).verdict
    'fails'
    >>> d = decide([3, -4, 5, -2]); d.verdict, d.mde > 5
    ('undecided', True)
    >>> decide([0.1, -0.2, 0.15, -0.05, 0.0, 0.1], margin=2.0).verdict
    'fails'
    """
    iv = t_interval(values, level)
    m = mde(iv["sd"], iv["n"], power, 1 - level) if iv["n"] >= 2 else float("nan")
    eq = tost(values, margin, level) if margin is not None else {"p": float("nan"), "equivalent": False}
    base = dict(mean=iv["mean"], lo=iv["lo"], hi=iv["hi"], n=iv["n"], mde=m, p_equivalence=eq["p"])
    if iv["n"] < 2:
        return Decision("undecided", "fewer than 2 values: no interval", **base)
    holds, opposite = (iv["lo"] > 0, iv["hi"] < 0) if positive else (iv["hi"] < 0, iv["lo"] > 0)
    if holds:
        return Decision("holds", f"the {level:.0%} interval excludes 0 in the predicted direction", **base)
    if opposite:
        return Decision("fails", f"the {level:.0%} interval excludes 0 in the opposite direction", **base)
    if eq["equivalent"]:
        return Decision("fails", f"equivalent to 0 within ±{margin:g} (TOST p = {eq['p']:.3g})", **base)
    return Decision("undecided", f"the interval covers 0; detectable at 80% power: {m:.3g}", **base)
