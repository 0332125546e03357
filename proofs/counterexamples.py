"""Counterexamples: each assumption a statement names, shown to matter by a shrunk instance.

For every (statement, assumption) pair a *finder* searches, with ``hypothesis.find``, instances in
which the assumption is dropped and the statement's conclusion fails; Hypothesis shrinks the first
one it finds to a minimal one. The search is seeded (``random=Random(0)``, no example database), so
the shrunk examples are reproducible for a given Hypothesis version. :func:`render_markdown` turns
them into docs/counterexamples.md; regenerate it with::

    python -c "from proofs.counterexamples import write_markdown; write_markdown('docs/counterexamples.md')"

>>> cx = find_counterexample("C1 without nesting")
>>> cx.result.holds, dict(cx.result.assumptions)["nested E_unk ⊆ E_kn"]
(False, False)
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from random import Random
from typing import Callable

import numpy as np
from hypothesis import Phase, find, settings
from hypothesis import strategies as st

from kgsim.core.edges import EdgeSet
from kgsim.core.rng import stream

from .core import CheckResult, mass
from .run import format_table
from .statements import (
    COMMON_GAINS,
    GAP_POSITIVE,
    NESTED,
    NO_LOSSES,
    SAME_Q,
    SAME_W,
    UNIFORM_W,
    check_c1,
    check_l1,
    check_l1_gains_only,
    check_p1,
    check_r1,
    check_t1,
    expected_prompt_gap,
)
from .strategies import GapInstance, gap_instances

FIND_SETTINGS = settings(max_examples=5000, database=None, deadline=None, phases=[Phase.generate, Phase.shrink])
T1_TRIALS = 2000                     # Monte Carlo trials of the T1 checks in the finders


@dataclass(frozen=True)
class Counterexample:
    """A shrunk instance on which ``statement`` fails once ``dropped`` is dropped."""

    title: str
    statement: str          # the statement as science.md §2 gives it
    dropped: str            # the assumption dropped (its name in ``result.assumptions``)
    fails: str              # the conclusion that fails
    instance: str           # the shrunk instance, readable
    result: CheckResult     # the statement's check on the instance
    why: str                # why it fails, in words
    case: object = None     # the shrunk instance itself (a GapInstance, or a recovery tuple)


@dataclass(frozen=True)
class _Finder:
    statement: str
    dropped: str
    fails: str
    strategy: st.SearchStrategy
    condition: Callable
    check: Callable[..., CheckResult]
    render: Callable[..., str]
    why: str


# --------------------------------------------------------------------------------------------
# Rendering instances
# --------------------------------------------------------------------------------------------

def _set(mask: np.ndarray) -> str:
    ids = np.flatnonzero(mask)
    return "{" + ", ".join(f"t{i}" for i in ids) + "}" if len(ids) else "∅"


def _weights(e: EdgeSet) -> str:
    if e.weights is None:
        return "uniform"
    fr = [Fraction(float(x)).limit_denominator(1000) for x in e.weights]
    return "w = (" + ", ".join(str(f) for f in fr) + ")"


def _header(g: GapInstance) -> str:
    return f"T = {_set(np.ones(g.kn0.n, bool))}, {_weights(g.kn0)}"


def _render_pair(g: GapInstance) -> str:
    return f"{_header(g)}; E_kn = {_set(g.kn0.correct)}, E_unk = {_set(g.unk0.correct)}"


def _render_prompt(g: GapInstance) -> str:
    text = (f"{_render_pair(g)}; under the prompt E_kn_p = {_set(g.kn_p.correct)}, "
            f"E_unk_p = {_set(g.unk_p.correct)}")
    if _weights(g.kn_p) != _weights(g.kn0):
        text += f", scored under {_weights(g.kn_p)}"
    return text


def _render_augment(g: GapInstance) -> str:
    same = g.augment_unk is g.augment_kn
    gains = (f"A = {_set(g.augment_kn)} (both models)" if same else
             f"A_kn = {_set(g.augment_kn)}, A_unk = {_set(g.augment_unk)}")
    return f"{_render_pair(g)}; {gains}"


def _render_recovery(case) -> str:
    g, q_kn, q_unk, l_kn, l_unk = case
    parts = [f"q_kn = {q_kn:g}", f"q_unk = {q_unk:g}"] + [f"{n} = {v:g}" for n, v in
                                                        (("loss_kn", l_kn), ("loss_unk", l_unk)) if v]
    e = expected_prompt_gap(g.kn0, g.unk0, q_kn, q_unk, loss_kn=l_kn, loss_unk=l_unk)
    return f"{_render_pair(g)}; {', '.join(parts)}; exact E[Δ*] = {e:.4f}"


# --------------------------------------------------------------------------------------------
# The searches
# --------------------------------------------------------------------------------------------

def _gap(g: GapInstance) -> float:
    return g.kn0.fact() - g.unk0.fact()


def _gap_p(g: GapInstance) -> float:
    return g.kn_p.fact() - g.unk_p.fact()


def _small(**kw) -> st.SearchStrategy:
    return gap_instances(from_graph=False, max_n=5, **kw)


_PROB = st.integers(0, 10).map(lambda k: k / 10)


def _recovery(same_q: bool, losses: bool) -> st.SearchStrategy:
    q_unk = st.none() if same_q else _PROB
    loss = _PROB if losses else st.just(0.0)
    return st.tuples(_small(weighted=False), _PROB, q_unk, loss, loss).map(
        lambda t: (t[0], t[1], t[1] if t[2] is None else t[2], t[3], t[4]))


def _t1(case) -> CheckResult:
    g, q_kn, q_unk, l_kn, l_unk = case
    return check_t1(g.kn0, g.unk0, q_kn, q_unk=q_unk, loss_kn=l_kn, loss_unk=l_unk,
                    rng=stream(0, "proofs/counterexamples/t1"), n_trials=T1_TRIALS)


def _gains(g: GapInstance) -> tuple[float, float]:
    a_kn, a_unk = g.kn_p.correct & ~g.kn0.correct, g.unk_p.correct & ~g.unk0.correct
    return mass(a_kn, g.kn0.weights), mass(a_unk, g.kn0.weights)


def _reweighted(t) -> GapInstance:
    g, w2 = t
    return GapInstance(g.kn0, g.unk0, EdgeSet(g.kn_p.test_ids, g.kn_p.correct, weights=w2),
                       EdgeSet(g.unk_p.test_ids, g.unk_p.correct, weights=w2))


def _w2(g: GapInstance):
    return st.lists(st.integers(1, 9), min_size=g.kn0.n, max_size=g.kn0.n).map(lambda v: (g, np.array(v, float)))


FINDERS: dict[str, _Finder] = {
    "P1 count form without uniform weights": _Finder(
        "P1: Δ_fact = (|E_kn| − |E_unk|) / N under uniform w", UNIFORM_W,
        "Δ_fact = (|E_kn| − |E_unk|) / N",
        _small(weighted=True), lambda g: not check_p1(g.kn0, g.unk0, count_form=True).holds,
        lambda g: check_p1(g.kn0, g.unk0, count_form=True), _render_pair,
        "Under non-uniform weights the gap is a weighted edge count, w(E_kn ∖ E_unk) − w(E_unk ∖ E_kn); "
        "counting edges weighs a heavy edge like a light one."),
    "L1 with different weights per edge set": _Finder(
        "L1: Δ* = Δ − [(w(A_unk) − w(L_unk)) − (w(A_kn) − w(L_kn))]", SAME_W,
        "the accounting identity",
        _small(weighted=False).flatmap(_w2).map(_reweighted), lambda g: not check_l1(*g.sets).holds,
        lambda g: check_l1(*g.sets), _render_prompt,
        "If the prompted sets are scored under another distribution than the plain ones, Δ* and Δ are "
        "measured in different units and no accounting of gains and losses connects them."),
    "L1 gains-only iff, 'if' direction, with losses": _Finder(
        "L1 without losses: Δ* ≤ Δ iff w(A_unk) ≥ w(A_kn)", NO_LOSSES,
        "w(A_unk) ≥ w(A_kn) ⇒ Δ* ≤ Δ",
        _small(weighted=False, losses=True),
        lambda g: _gains(g)[1] >= _gains(g)[0] and _gap_p(g) > _gap(g) + 1e-9,
        lambda g: check_l1_gains_only(*g.sets), _render_prompt,
        "FT-Unknown gains at least as much as FT-Known, but the prompt also costs FT-Unknown edges it "
        "had: the net gains decide (the full L1 identity with losses holds on this instance)."),
    "L1 gains-only iff, 'only if' direction, with losses": _Finder(
        "L1 without losses: Δ* ≤ Δ iff w(A_unk) ≥ w(A_kn)", NO_LOSSES,
        "Δ* ≤ Δ ⇒ w(A_unk) ≥ w(A_kn)",
        _small(weighted=False, losses=True),
        lambda g: _gains(g)[1] < _gains(g)[0] and _gap_p(g) <= _gap(g) + 1e-9,
        lambda g: check_l1_gains_only(*g.sets), _render_prompt,
        "The gap does not grow although FT-Known gains more, because the prompt costs FT-Known edges: "
        "the net gains decide (the full L1 identity with losses holds on this instance)."),
    "T1 with model-dependent q": _Finder(
        "T1: E[Δ*] = (1 − q)·Δ ≤ Δ", SAME_Q,
        "E[Δ*] = (1 − q)·Δ ≤ Δ (checked with q = q_kn)",
        _recovery(same_q=False, losses=False),
        lambda c: _gap(c[0]) > 0 and expected_prompt_gap(c[0].kn0, c[0].unk0, c[1], c[2]) > _gap(c[0])
        and not _t1(c).holds,
        _t1, _render_recovery,
        "When the prompt recovers FT-Known's missing edges more often than FT-Unknown's, the gap widens in "
        "expectation: E[Δ*] = Δ + q_kn·w(T∖E_kn) − q_unk·w(T∖E_unk) > Δ."),
    "T1 with losses": _Finder(
        "T1: E[Δ*] = (1 − q)·Δ ≤ Δ", NO_LOSSES,
        "E[Δ*] = (1 − q)·Δ ≤ Δ",
        _recovery(same_q=True, losses=True),
        lambda c: _gap(c[0]) > 0 and expected_prompt_gap(c[0].kn0, c[0].unk0, c[1], c[2], loss_kn=c[3],
                                                         loss_unk=c[4]) > _gap(c[0]) and not _t1(c).holds,
        _t1, _render_recovery,
        "A prompt that makes FT-Unknown lose edges it answered widens the gap even when both models "
        "recover missing edges alike."),
    "C1 without nesting": _Finder(
        "C1: E_unk ⊆ E_kn and common gains A ⇒ w(E_kn ∪ A) − w(E_unk ∪ A) ≤ Δ", NESTED,
        "w(E_kn ∪ A) − w(E_unk ∪ A) ≤ Δ (with Δ > 0)",
        _small(weighted=False, nested=False, augment=True, common_gains=True),
        lambda g: _gap(g) > 0 and _gap_p(g) > _gap(g) + 1e-9,
        lambda g: check_c1(g.kn0, g.unk0, g.augment_kn), _render_augment,
        "A common gain inside E_unk ∖ E_kn hands FT-Known edges FT-Unknown already had: FT-Known catches "
        "up there, so the gap widens."),
    "C1 without common gains": _Finder(
        "C1: E_unk ⊆ E_kn and common gains A ⇒ w(E_kn ∪ A) − w(E_unk ∪ A) ≤ Δ", COMMON_GAINS,
        "w(E_kn ∪ A_kn) − w(E_unk ∪ A_unk) ≤ Δ (with Δ > 0)",
        _small(weighted=False, nested=True, augment=True, common_gains=False),
        lambda g: _gap(g) > 0 and _gap_p(g) > _gap(g) + 1e-9,
        lambda g: check_c1(g.kn0, g.unk0, g.augment_kn, g.augment_unk), _render_augment,
        "If the prompt augments FT-Known with edges it does not give FT-Unknown, nested sets do not "
        "protect the inequality."),
    "R1 with losses": _Finder(
        "R1: with no losses and Δ > 0, Δ* < 0 iff q̂_unk·w(T∖E_unk) − q̂_kn·w(T∖E_kn) > Δ, and needs "
        "q̂_unk > q̂_kn", NO_LOSSES,
        "the reversal condition",
        _small(weighted=False, losses=True),
        lambda g: _gap(g) > 0 and not check_r1(*g.sets).holds,
        lambda g: check_r1(*g.sets), _render_prompt,
        "With losses Δ* = Δ − advantage − w(L_kn) + w(L_unk): an edge FT-Known loses under the prompt "
        "pushes Δ* below 0 although FT-Unknown's recovery advantage does not exceed Δ."),
    "R1 without Δ > 0": _Finder(
        "R1: with no losses and Δ > 0, a reversal Δ* < 0 needs q̂_unk > q̂_kn", GAP_POSITIVE,
        "Δ* < 0 ⇒ q̂_unk > q̂_kn",
        _small(weighted=False, losses=False),
        lambda g: not check_r1(*g.sets).holds,
        lambda g: check_r1(*g.sets), _render_prompt,
        "If FT-Unknown is ahead already, Δ* < 0 needs no recovery advantage: there is nothing to reverse."),
}


def find_counterexample(title: str) -> Counterexample:
    """Run the finder ``title`` (a key of :data:`FINDERS`) and return its shrunk counterexample.
    Raises KeyError for an unknown title and hypothesis.errors.NoSuchExample if none is found."""
    f = FINDERS[title]
    case = find(f.strategy, f.condition, settings=FIND_SETTINGS, random=Random(0))
    return Counterexample(title, f.statement, f.dropped, f.fails, f.render(case), f.check(case), f.why, case)


def find_all() -> list[Counterexample]:
    """Every finder's counterexample, in the order of :data:`FINDERS`."""
    return [find_counterexample(t) for t in FINDERS]


def render_markdown(cxs: list[Counterexample]) -> str:
    """docs/counterexamples.md from found counterexamples."""
    out = ["# Counterexamples: the assumptions of science.md §2 matter", "",
           "Generated by `proofs.counterexamples` from the examples `hypothesis.find` shrank; do not edit by hand.",
           "Regenerate with", "",
           "    python -c \"from proofs.counterexamples import write_markdown; "
           "write_markdown('docs/counterexamples.md')\"", "",
           "Each case drops one assumption of one statement and shows a minimal instance on which the conclusion "
           "fails. Test facts are t0, t1, ...; E_kn and E_unk are the plain-prompt accessible edges of FT-Known and "
           "FT-Unknown, E_kn_p and E_unk_p those under the prompt, A the gained edges; Δ and Δ* the gaps. "
           "The table row is the statement's check on the instance (`proofs.statements`).", ""]
    for cx in cxs:
        out += [f"## {cx.title}", "",
                f"- **Statement.** {cx.statement}",
                f"- **Assumption dropped.** {cx.dropped}",
                f"- **Conclusion that fails.** {cx.fails}",
                f"- **Shrunk instance.** {cx.instance}",
                f"- **Why.** {cx.why}", "",
                format_table([cx.result], detail=True), ""]
    return "\n".join(out)


def write_markdown(path: str | Path) -> str:
    """Find every counterexample and write the Markdown to ``path``; returns the text."""
    text = render_markdown(find_all())
    Path(path).write_text(text)
    return text
