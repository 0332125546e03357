"""Benchmark of proofs.statements: the exact checks on 1,000,000-fact edge sets, and Hypothesis
examples per second per statement.

Prints a table and writes JSON (``--out``, default runs/bench/bench_proofs.json, outside the tracked tree;
benchmarks/results/ holds the committed record). Times
are the median of ``--repeats`` runs (min and max recorded too). The reference is L1 computed with
Python sets of fact ids, the obvious non-vectorised implementation. Asserts nothing.

    python benchmarks/bench_proofs.py [--n 1000000] [--repeats 5] [--examples 200] [--out PATH]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from kgsim.core.edges import EdgeSet
from kgsim.core.io import OutputPathError, check_out_file, write_json
from kgsim.core.rng import stream
from proofs import statements as S
from proofs.strategies import gap_instances


def timed(fn, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def edge_sets(n: int, weighted: bool) -> list[EdgeSet]:
    rng = stream(0, "bench/proofs")
    kn, unk = rng.random(n) < 0.6, rng.random(n) < 0.3
    kn_p = (kn | (rng.random(n) < 0.2)) & ~(rng.random(n) < 0.02)
    unk_p = (unk | (rng.random(n) < 0.4)) & ~(rng.random(n) < 0.02)
    w = rng.integers(1, 10, n).astype(np.float64) if weighted else None
    T = np.arange(n, dtype=np.int64)
    return [EdgeSet(T, m, weights=w) for m in (kn, unk, kn_p, unk_p)]


def reference_l1(sets: list[EdgeSet]) -> float:
    """L1's right side with Python sets of fact ids (uniform weights)."""
    kn, unk, kn_p, unk_p = (set(e.ids().tolist()) for e in sets)
    n = sets[0].n
    net_kn = (len(kn_p - kn) - len(kn - kn_p)) / n
    net_unk = (len(unk_p - unk) - len(unk - unk_p)) / n
    return (len(kn) - len(unk)) / n - (net_unk - net_kn)


def exact_timings(n: int, repeats: int) -> dict:
    out = {}
    for label, weighted in (("uniform", False), ("weighted", True)):
        sets = edge_sets(n, weighted)
        kn, unk, kn_p, unk_p = sets
        a_kn, a_unk = kn_p.correct & ~kn.correct, unk_p.correct & ~unk.correct
        checks = {
            "P1": lambda: S.check_p1(kn, unk),
            "L1": lambda: S.check_l1(*sets),
            "L1 gains-only": lambda: S.check_l1_gains_only(*sets),
            "C1": lambda: S.check_c1(kn, unk, a_kn, a_unk),
            "R1": lambda: S.check_r1(*sets),
        }
        rows = {name: timed(fn, repeats) for name, fn in checks.items()}
        rows["all exact (sum of medians)"] = {"median_s": sum(r["median_s"] for r in rows.values())}
        rows["T1 measured (empirical)"] = timed(lambda: S.check_t1_measured(*sets), repeats)
        trials = 100 if not weighted else 5
        rows[f"T1 Monte Carlo, {trials} trials (probabilistic)"] = timed(
            lambda: S.check_t1(kn, unk, 0.3, rng=stream(1, "bench/t1"), n_trials=trials), repeats)
        hop1 = stream(2, "bench/cot").integers(0, n, n)
        hop2 = stream(3, "bench/cot").integers(0, n, n)
        rows[f"CoT connectivity, {n} queries (empirical)"] = timed(
            lambda: S.check_cot(kn, hop1, hop2, kn_p.correct), repeats)
        copies = [EdgeSet(e.test_ids.copy(), e.correct, weights=e.weights) for e in sets]
        rows["L1, each set with its own copy of test_ids"] = timed(lambda: S.check_l1(*copies), repeats)
        if not weighted:
            rows["reference: L1 with Python sets"] = timed(lambda: reference_l1(sets), max(1, repeats // 2))
        out[label] = rows
    return out


STATEMENTS = {
    "P1": (gap_instances(), lambda g: S.check_p1(g.kn0, g.unk0)),
    "L1": (gap_instances(), lambda g: S.check_l1(*g.sets)),
    "L1 gains-only": (gap_instances(losses=False), lambda g: S.check_l1_gains_only(*g.sets)),
    "C1": (gap_instances(nested=True, augment=True), lambda g: S.check_c1(g.kn0, g.unk0, g.augment_kn)),
    "R1": (gap_instances(losses=False), lambda g: S.check_r1(*g.sets)),
    "T1 (2000 MC trials)": (st.tuples(gap_instances(from_graph=False), st.integers(0, 10)),
                            lambda t: S.check_t1(t[0].kn0, t[0].unk0, t[1] / 10, rng=stream(0, "bench/t1-hyp"))),
}


def hypothesis_rates(n_examples: int) -> dict:
    out = {}
    for name, (strategy, check) in STATEMENTS.items():
        count = [0]

        @settings(max_examples=n_examples, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def run(x):
            count[0] += 1
            r = check(x)
            assert r.holds or not r.assumptions_held or r.kind != "exact"

        t0 = time.perf_counter()
        run()
        seconds = time.perf_counter() - t0
        out[name] = {"examples": count[0], "seconds": seconds, "examples_per_s": count[0] / seconds}
    return out


def print_table(exact: dict, rates: dict, n: int) -> None:
    print(f"\nExact and empirical checks on N = {n:,} facts (median seconds)")
    print(f"| check | {' | '.join(exact)} |\n|---|" + "---|" * len(exact))
    names = list(dict.fromkeys(k for rows in exact.values() for k in rows))
    for name in names:
        cells = [f"{exact[w][name]['median_s']:.4f}" if name in exact[w] else "" for w in exact]
        print(f"| {name} | {' | '.join(cells)} |")
    print("\nHypothesis examples per second (property test of each statement)")
    print("| statement | examples | seconds | examples/s |\n|---|---|---|---|")
    for name, r in rates.items():
        print(f"| {name} | {r['examples']} | {r['seconds']:.2f} | {r['examples_per_s']:.0f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="facts per edge set")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--examples", type=int, default=200, help="Hypothesis examples per statement")
    ap.add_argument("--out", default="runs/bench/bench_proofs.json", help="JSON results (default runs/bench/)")
    args = ap.parse_args(argv)
    try:
        check_out_file(args.out)
    except OutputPathError as e:
        ap.error(str(e))
    exact = exact_timings(args.n, args.repeats)
    rates = hypothesis_rates(args.examples)
    print_table(exact, rates, args.n)
    out = Path(args.out)
    meta = {"n": args.n, "repeats": args.repeats, "examples": args.examples, "python": sys.version.split()[0],
            "numpy": np.__version__, "platform": platform.platform(), "cpus": os.cpu_count()}
    write_json(out, {"meta": meta, "exact": exact, "hypothesis": rates})
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
