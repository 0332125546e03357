"""Each assumption of a statement matters: Hypothesis finds a counterexample once it is dropped.

The shrunk counterexamples are those docs/counterexamples.md shows; the last test checks the
document is what proofs.counterexamples renders from them now.
"""
from pathlib import Path

import pytest

from proofs import statements as S
from proofs.counterexamples import FINDERS, find_counterexample, render_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "counterexamples.md"
REGENERATE = ("python -c \"from proofs.counterexamples import write_markdown; "
              "write_markdown('docs/counterexamples.md')\"")


@pytest.fixture(scope="module")
def found():
    return {title: find_counterexample(title) for title in FINDERS}


@pytest.mark.parametrize("title", list(FINDERS))
def test_dropping_the_assumption_gives_a_counterexample(found, title):
    cx = found[title]
    held = dict(cx.result.assumptions)
    assert not cx.result.holds, cx.result
    assert held[cx.dropped] is False, f"the counterexample should violate {cx.dropped!r}"
    others = {name: h for name, h in held.items() if name != cx.dropped}
    assert all(others.values()), f"only {cx.dropped!r} may be dropped, got {others}"


def test_every_statement_with_assumptions_has_a_counterexample():
    statements = {title.split()[0] for title in FINDERS}
    assert {"P1", "L1", "T1", "C1", "R1"} <= statements
    dropped = {(title.split()[0], f.dropped) for title, f in FINDERS.items()}
    assert ("C1", S.NESTED) in dropped and ("T1", S.SAME_Q) in dropped and ("L1", S.NO_LOSSES) in dropped


@pytest.mark.parametrize("title", [t for t in FINDERS if t.startswith("L1 gains-only")])
def test_full_l1_accounting_holds_where_the_gains_only_iff_fails(found, title):
    g = found[title].case
    assert S.check_l1(*g.sets).holds


def test_counterexamples_are_small(found):
    for cx in found.values():
        g = cx.case[0] if isinstance(cx.case, tuple) else cx.case
        assert g.kn0.n <= 5, (cx.title, cx.instance)


def test_counterexample_doc_is_current(found):
    text = render_markdown([found[t] for t in FINDERS])
    assert DOC.exists(), f"docs/counterexamples.md is missing; generate it with {REGENERATE}"
    assert DOC.read_text() == text, f"docs/counterexamples.md is stale; regenerate it with {REGENERATE}"
