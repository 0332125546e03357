"""Every statement of science.md §2 held against one run's measured edge sets, and the table.

A run measures E(θ, P) for every model, stage, split and prompt. :func:`check_run` takes them as a
dict keyed ``(model, stage, split, prompt)``:

- model: ``"ft-known"`` or ``"ft-unknown"``; stage: ``"es"`` or ``"con"`` (any string works);
- split: ``"id"``, ``"near-id"``, ``"open-world"``, ``"2hop"``, ... (any string);
- prompt: ``"zero-shot"``, ``f"{k}-shot"``, ``"cot"`` (the 2-hop CoT prompt), ``"direct-2hop"``
  (the 2-hop query without CoT).

(the names of :mod:`kgsim.core.names`).

For every (stage, split) with both models it holds P1 under each prompt and, for each prompt P
against its base prompt over the same test set (``"zero-shot"``, else ``"direct-2hop"``), L1, C1,
R1, T1's measured prediction and T1's same-q assumption (Fisher's exact test of equal recovery
rates). A prompt with no base over the same test set is compared with nothing. With
:class:`TwoHopEvidence` it also holds CoT path connectivity per model and stage and the CoT gap per
stage. :func:`format_table` renders the results as Markdown, failing rows included.

>>> from kgsim.core.edges import EdgeSet
>>> T = np.arange(4)
>>> es = {("ft-known", "es", "id", "zero-shot"): EdgeSet(T, np.array([1, 1, 1, 0], bool)),
...       ("ft-unknown", "es", "id", "zero-shot"): EdgeSet(T, np.array([1, 0, 0, 0], bool)),
...       ("ft-known", "es", "id", "3-shot"): EdgeSet(T, np.array([1, 1, 1, 1], bool)),
...       ("ft-unknown", "es", "id", "3-shot"): EdgeSet(T, np.array([1, 1, 1, 0], bool))}
>>> [r.name for r in check_run(es)][:3]
['P1 gap as edge count', 'P1 gap as edge count', 'L1 gap accounting']
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from kgsim.core.edges import EdgeSet
from kgsim.core.names import BASE_PROMPTS, COT, DIRECT_TWO_HOP, FT_KNOWN, FT_MODELS, FT_UNKNOWN, TWO_HOP, ZERO_SHOT
from kgsim.core.rng import stream

from .core import CheckResult
from .recovery import check_t1_equal_rates
from .statements import (
    check_c1,
    check_cot,
    check_cot_gap,
    check_l1,
    check_p1,
    check_r1,
    check_t1_measured,
    gains_losses,
    lookup,
)


@dataclass(frozen=True, eq=False)
class TwoHopEvidence:
    """Composed 2-hop queries, their hop facts in the one-hop test sets, and measured CoT outcomes.

    Query i is (s, r₁∘r₂, a) with the unique bridge m: its first hop (s, r₁, m) is global fact id
    ``hop1_ids[i]`` and its second hop (m, r₂, a) is ``hop2_ids[i]``, the same ids the one-hop
    EdgeSets' ``test_ids`` use. ``cot_correct[(model, stage)]`` is bool [Q]: the model answered
    query i correctly under the CoT prompt. The one-hop accessible edges are read from the run's
    ``one_hop_prompt`` edge sets of the same model and stage, over ``one_hop_splits`` (None: all
    splits, merged by fact id). ``weights`` (float [Q], None = uniform) weight the queries;
    ``query_ids`` (optional) name them; ``label`` is the split name shown in the table.
    Raises ValueError for mismatched shapes.

    >>> ev = TwoHopEvidence(np.array([0, 2]), np.array([1, 3]), {("ft-known", "es"): np.array([1, 0], bool)})
    >>> ev.n_queries, ev.models_stages()
    (2, [('ft-known', 'es')])
    """

    hop1_ids: np.ndarray                                  # int64 [Q]: fact id of (s, r1, m)
    hop2_ids: np.ndarray                                  # int64 [Q]: fact id of (m, r2, a)
    cot_correct: Mapping[tuple[str, str], np.ndarray]     # (model, stage) -> bool [Q]
    weights: np.ndarray | None = None                     # float [Q]; None = uniform
    query_ids: np.ndarray | None = None                   # int64 [Q], optional
    one_hop_prompt: str = ZERO_SHOT
    one_hop_splits: tuple[str, ...] | None = None         # None = every split of the run
    label: str = TWO_HOP
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        h1 = np.asarray(self.hop1_ids, np.int64)
        h2 = np.asarray(self.hop2_ids, np.int64)
        if h1.ndim != 1 or h1.shape != h2.shape:
            raise ValueError(f"hop1_ids {h1.shape} and hop2_ids {h2.shape} must be equal 1-d shapes")
        object.__setattr__(self, "hop1_ids", h1)
        object.__setattr__(self, "hop2_ids", h2)
        cot = {}
        for key, c in self.cot_correct.items():
            c = np.asarray(c, bool)
            if not (isinstance(key, tuple) and len(key) == 2) or c.shape != h1.shape:
                raise ValueError(f"cot_correct[{key!r}]: expected a (model, stage) key and bool [{h1.size}], "
                                 f"got shape {c.shape}")
            cot[key] = c
        object.__setattr__(self, "cot_correct", cot)
        for name in ("weights", "query_ids"):
            v = getattr(self, name)
            if v is not None and np.asarray(v).shape != h1.shape:
                raise ValueError(f"{name} has shape {np.asarray(v).shape}, expected {h1.shape}")

    @property
    def n_queries(self) -> int:
        return int(self.hop1_ids.size)

    def models_stages(self) -> list[tuple[str, str]]:
        return sorted(self.cot_correct)

    @classmethod
    def from_graph(cls, kg, cot_correct: Mapping[tuple[str, str], np.ndarray], rows: np.ndarray | None = None,
                   **kwargs) -> "TwoHopEvidence":
        """Evidence for the composed queries ``rows`` (int [Q, 5] rows (s, r1, r2, m, a); default
        ``kg.two_hop()``), with hop fact ids looked up in ``kg``. Raises ValueError if a hop is not
        a fact of ``kg``."""
        rows = kg.two_hop() if rows is None else np.asarray(rows, np.int64).reshape(-1, 5)
        s, r1, r2, m, a = rows.T
        return cls(fact_ids(kg, s, r1, m), fact_ids(kg, m, r2, a), cot_correct, **kwargs)

    @classmethod
    def from_run(cls, edge_sets: Mapping, hop1_ids, hop2_ids, query_ids, *, split: str = TWO_HOP,
                 prompt: str = COT, **kwargs) -> "TwoHopEvidence":
        """Evidence whose CoT outcomes are read from a run's edge sets keyed (model, stage,
        ``split``, ``prompt``), whose ``test_ids`` are the composed queries' ids ``query_ids``
        (int [Q], aligned with ``hop1_ids`` and ``hop2_ids``). Raises ValueError if no edge set
        matches or one lacks a query."""
        ids = np.asarray(query_ids, np.int64)
        cot = {}
        for (model, stage, sp, p), e in edge_sets.items():
            if sp == split and p == prompt:
                value, found = lookup(e.test_ids, e.correct, ids)
                if not found.all():
                    raise ValueError(f"edge_sets[{(model, stage, sp, p)!r}] lacks {int((~found).sum())} of the "
                                     f"{ids.size} composed queries")
                cot[(model, stage)] = value
        if not cot:
            raise ValueError(f"no edge sets with split {split!r} and prompt {prompt!r} in the run")
        return cls(hop1_ids, hop2_ids, cot, query_ids=ids, label=split, **kwargs)


def fact_ids(kg, s: np.ndarray, r: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Global fact ids (indices into ``kg.s``) of the triples (s, r, a). Raises ValueError if one
    is not a fact of ``kg``."""
    ids = kg.fact_ids(s, r, a)
    missing = np.flatnonzero(ids < 0)
    if len(missing):
        i = int(missing[0])
        raise ValueError(f"({int(np.asarray(s)[i])}, {int(np.asarray(r)[i])}, {int(np.asarray(a)[i])}) "
                         f"is not a fact of the graph")
    return ids


# --------------------------------------------------------------------------------------------
# check_run
# --------------------------------------------------------------------------------------------

def _prompt_order(prompt: str) -> tuple:
    m = re.fullmatch(r"(\d+)-shot", prompt)
    fixed = {ZERO_SHOT: 0, DIRECT_TWO_HOP: 2, COT: 3}
    return (1, int(m.group(1)), prompt) if m else (fixed.get(prompt, 4), 0, prompt)


def _scoped(r: CheckResult, scope: str, extra_assumptions=()) -> CheckResult:
    return dataclasses.replace(r, scope=scope, assumptions=tuple(r.assumptions) + tuple(extra_assumptions))


def _validate_keys(edge_sets: Mapping) -> None:
    for key, e in edge_sets.items():
        if not (isinstance(key, tuple) and len(key) == 4 and all(isinstance(k, str) for k in key)):
            raise ValueError(f"edge_sets key {key!r}: expected (model, stage, split, prompt) strings")
        if key[0] not in FT_MODELS:
            raise ValueError(f"edge_sets key {key!r}: model {key[0]!r} is not one of {FT_MODELS}")
        if not isinstance(e, EdgeSet):
            raise ValueError(f"edge_sets[{key!r}] is a {type(e).__name__}, expected kgsim.core.edges.EdgeSet")


def _same_t(first: EdgeSet, *others: EdgeSet) -> bool:
    return all(e.n == first.n and np.array_equal(e.test_ids, first.test_ids) for e in others)


def _prompt_checks(kn0, unk0, kn_p, unk_p, scope: str, delta: float, alpha: float, seed: int) -> list[CheckResult]:
    out = [_scoped(check_l1(kn0, unk0, kn_p, unk_p), scope)]
    a_kn, l_kn = gains_losses(kn0.correct, kn_p.correct)
    a_unk, l_unk = gains_losses(unk0.correct, unk_p.correct)
    no_losses = not (l_kn.any() or l_unk.any())
    c1 = check_c1(kn0, unk0, a_kn, a_unk, weights=kn0.weights)
    out.append(_scoped(c1, scope, [("no losses (E_P = E ∪ A)", no_losses)]))
    out.append(_scoped(check_r1(kn0, unk0, kn_p, unk_p), scope))
    out.append(_scoped(check_t1_measured(kn0, unk0, kn_p, unk_p, delta=delta), scope))
    rng = stream(seed, f"proofs/run/t1-equal-rates/{scope}")       # drawn from only under non-uniform weights
    out.append(_scoped(check_t1_equal_rates(kn0, unk0, kn_p, unk_p, alpha=alpha, rng=rng), scope))
    return out


def _one_hop(edge_sets: Mapping, model: str, stage: str, ev: TwoHopEvidence):
    """The merged one-hop (test_ids, correct) of a model and stage, and whether duplicates agree."""
    parts = [e for (m, st, sp, p), e in edge_sets.items()
             if m == model and st == stage and p == ev.one_hop_prompt
             and (ev.one_hop_splits is None or sp in ev.one_hop_splits)]
    if not parts:
        return None, True
    ids = np.concatenate([e.test_ids for e in parts])
    correct = np.concatenate([e.correct for e in parts])
    uniq, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    consistent = bool(np.array_equal(correct, correct[first][inverse]))
    return (uniq, correct[first]), consistent


def _cot_checks(edge_sets: Mapping, ev: TwoHopEvidence, delta: float) -> list[CheckResult]:
    out, one_hop = [], {}
    for model, stage in ev.models_stages():
        oh, consistent = _one_hop(edge_sets, model, stage, ev)
        if oh is None:
            continue
        one_hop[(model, stage)] = oh
        r = check_cot(oh, ev.hop1_ids, ev.hop2_ids, ev.cot_correct[(model, stage)], weights=ev.weights, delta=delta)
        out.append(_scoped(r, f"{model} · {stage} · {ev.label} · cot",
                           [("one-hop measurements agree across splits", consistent)]))
    for stage in sorted({st for _, st in one_hop}):
        if (FT_KNOWN, stage) in one_hop and (FT_UNKNOWN, stage) in one_hop:
            r = check_cot_gap(one_hop[(FT_KNOWN, stage)], one_hop[(FT_UNKNOWN, stage)], ev.hop1_ids,
                              ev.hop2_ids, ev.cot_correct[(FT_KNOWN, stage)],
                              ev.cot_correct[(FT_UNKNOWN, stage)], weights=ev.weights, delta=delta)
            out.append(_scoped(r, f"{stage} · {ev.label} · cot"))
    return out


def check_run(edge_sets: Mapping[tuple[str, str, str, str], EdgeSet], two_hop: TwoHopEvidence | None = None, *,
              delta: float = 0.05, alpha: float = 0.05, seed: int = 0) -> list[CheckResult]:
    """Hold every applicable statement of science.md §2 over a run's measured edge sets.

    ``edge_sets`` maps (model, stage, split, prompt) to EdgeSet (module docstring for the names).
    Per (stage, split) with both models: P1 for every prompt; for every other prompt P with a base
    prompt over the same test set: L1, C1 (with each model's measured gains, assumptions
    reported), R1, T1's measured prediction (Hoeffding tolerance at false-alarm rate ``delta``) and
    "T1 equal recovery rates" (:func:`~proofs.recovery.check_t1_equal_rates`: q̂_kn, q̂_unk, the
    two-sided p-value of Fisher's exact test of q_kn = q_unk, holds iff p ≥ ``alpha``; under
    non-uniform weights a permutation test drawing from the stream ``seed`` names for that scope).
    With ``two_hop``: CoT path connectivity per (model, stage) and the CoT gap per stage, at
    false-alarm rate ``delta``. Results come in a stable order, each with its ``scope``. Raises
    ValueError for a malformed key or value, or ``alpha`` outside (0, 1).
    """
    _validate_keys(edge_sets)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha = {alpha!r}: a test level must lie in (0, 1)")
    groups: dict[tuple[str, str, str], dict[str, EdgeSet]] = {}
    for (model, stage, split, prompt), e in edge_sets.items():
        groups.setdefault((stage, split, prompt), {})[model] = e
    out: list[CheckResult] = []
    for stage, split in sorted({(st, sp) for st, sp, _ in groups}):
        both = {p: g for (st, sp, p), g in groups.items() if (st, sp) == (stage, split) and len(g) == 2}
        prompts = sorted(both, key=_prompt_order)
        for p in prompts:
            kn, unk = both[p][FT_KNOWN], both[p][FT_UNKNOWN]
            if not _same_t(kn, unk):
                raise ValueError(f"({stage!r}, {split!r}, {p!r}): ft-known and ft-unknown were measured on "
                                 f"different test sets (N={kn.n} vs N={unk.n}); the gap is undefined")
            out.append(_scoped(check_p1(kn, unk), f"{stage} · {split} · {p}"))
        for p in (p for p in prompts if p not in BASE_PROMPTS):
            q = both[p]
            base = next((b for b in BASE_PROMPTS if b in both and _same_t(
                both[b][FT_KNOWN], both[b][FT_UNKNOWN], q[FT_KNOWN], q[FT_UNKNOWN])), None)
            if base is not None:
                b = both[base]
                out += _prompt_checks(b[FT_KNOWN], b[FT_UNKNOWN], q[FT_KNOWN], q[FT_UNKNOWN],
                                      f"{stage} · {split} · {p} vs {base}", delta, alpha, seed)
    if two_hop is not None:
        out += _cot_checks(edge_sets, two_hop, delta)
    return out


# --------------------------------------------------------------------------------------------
# format_table
# --------------------------------------------------------------------------------------------

def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _assumption_cell(r: CheckResult) -> str:
    if not r.assumptions:
        return "none"
    held = sum(h for _, h in r.assumptions)
    failed = [n for n, h in r.assumptions if not h]
    return f"{held}/{len(r.assumptions)}" + (f" (not held: {'; '.join(failed)})" if failed else "")


def format_table(results: list[CheckResult], *, detail: bool = False) -> str:
    """A Markdown table of check results, one row each, in the given order.

    Columns: statement, scope, kind, lhs, rhs, holds ("yes" / "**no**"), assumptions held (and
    which failed), residual, tolerance; where some check is a hypothesis test (``p_value`` set), also
    p: its p-value (empty for the other rows), its tolerance cell reading "α=…"; with
    ``detail=True`` also the detail string. Failing rows are shown like every other row, with their
    residual.

    >>> from proofs.statements import check_p1
    >>> print(format_table([check_p1(np.array([1, 0], bool), np.array([0, 0], bool))]))
    | statement | scope | kind | lhs | rhs | holds | assumptions held | residual | tolerance |
    |---|---|---|---|---|---|---|---|---|
    | P1 gap as edge count |  | exact | 0.5000 | 0.5000 | yes | 1/1 | +0.0000 | 1e-09 |
    """
    tests = any(r.p_value is not None for r in results)
    cols = ["statement", "scope", "kind", "lhs", "rhs", "holds", "assumptions held", "residual", "tolerance"]
    cols += ["p"] if tests else []
    cols += ["detail"] if detail else []
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results:
        row = [r.name, r.scope, r.kind, f"{r.lhs:.4f}", f"{r.rhs:.4f}", "yes" if r.holds else "**no**",
               _assumption_cell(r), f"{r.residual:+.4f}",
               f"{r.tolerance:.3g}" if r.p_value is None else f"α={r.tolerance:.3g}"]
        row += ["" if r.p_value is None else f"{r.p_value:.3g}"] if tests else []
        row += [r.detail] if detail else []
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)
