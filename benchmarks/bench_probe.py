"""Benchmark: probing 100,000 facts with a ~1M-parameter model (accessible_edges, zero-shot and
4-shot), against a plain per-fact loop over the same model for a sample, in the same run.

    python benchmarks/bench_probe.py [--facts 100000] [--threads 1]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from kgsim.core.config import GraphConfig, ModelConfig
from kgsim.core.io import OutputPathError, check_out_file, write_json
from kgsim.core.rng import stream
from kgsim.nn.model import build_model
from kgsim.study.measure import accessible_edges
from kgsim.world.corpus import Vocabulary
from kgsim.world.graph import generate
from kgsim.world.prompts import zero_shot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--facts", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/bench_probe.json"),
                    help="JSON results (default runs/bench/, outside the tracked tree; benchmarks/results/ holds "
                         "the committed record)")
    args = ap.parse_args()
    try:
        check_out_file(args.out)
    except OutputPathError as e:
        ap.error(str(e))
    torch.set_num_threads(args.threads)
    # ~1M parameters: 2,000 entities x 51 relations (>= 100k facts), d_model 128, 2 layers
    n_rel = -(-(args.facts + 8 * 51) // 2000)
    kg = generate(GraphConfig(n_entities=2000, n_types=1, n_relations=n_rel, n_composed=0), stream(0, "graph"))
    vocab = Vocabulary(kg.n_entities, kg.n_relations)
    model = build_model(ModelConfig(d_model=128, n_layers=2, n_heads=4, n_ctx=64), vocab.size, seed=0)
    demos = {r: np.flatnonzero(kg.r == r)[:8] for r in range(kg.n_relations)}      # 8 demonstrations per relation
    facts = np.setdiff1d(np.arange(kg.n_facts), np.concatenate(list(demos.values())))[: args.facts]
    rows = {"params": model.n_params(), "facts": int(len(facts)), "threads": args.threads}
    for k, bf16 in ((0, False), (0, True), (4, False)):
        t = time.perf_counter()
        es = accessible_edges(model, kg, vocab, facts, k, demos=demos, rng=stream(0, "demos"), bf16=bf16)
        rows[f"{k}-shot{'_bf16' if bf16 else ''}_s"] = time.perf_counter() - t
        assert es.n == len(facts)
    # reference: one forward per fact (the plain way), timed on 500 facts and extrapolated
    sample = facts[:500]
    toks = torch.as_tensor(zero_shot(vocab, kg.s[sample], kg.r[sample]).tokens)
    t = time.perf_counter()
    with torch.no_grad():
        for i in range(len(sample)):
            model(toks[i:i + 1])[0, -1].argmax()
    rows["per_fact_loop_s_extrapolated"] = (time.perf_counter() - t) / len(sample) * len(facts)
    rows["speedup_zero_shot"] = rows["per_fact_loop_s_extrapolated"] / rows["0-shot_s"]
    print(f"{rows['facts']} facts, model of {rows['params']:,} parameters, {args.threads} thread(s)")
    print(f"  zero-shot: {rows['0-shot_s']:.2f} s (bf16 autocast: {rows['0-shot_bf16_s']:.2f} s)   "
          f"4-shot: {rows['4-shot_s']:.2f} s   "
          f"per-fact loop (extrapolated): {rows['per_fact_loop_s_extrapolated']:.1f} s   "
          f"speed-up {rows['speedup_zero_shot']:.0f}x")
    write_json(args.out, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
