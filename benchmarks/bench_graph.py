"""Benchmark: a 1,000,000-fact knowledge graph with exposure counts and its pretraining corpus.

Measures kgsim's vectorised construction (``kgsim.world.graph.generate`` + ``kgsim.world.corpus.build_corpus``)
against a plain construction of the same world with networkx and Python loops (a MultiDiGraph
with an ``exposure`` attribute per edge; documents assembled from the adjacency lists), each in
its own child process so that peak memory (max RSS) is measured cleanly. Prints a table and the
ratio, and writes JSON.

    python benchmarks/bench_graph.py                 # 1M facts
    python benchmarks/bench_graph.py --facts 100000  # quicker
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import time
from pathlib import Path

from kgsim.core.io import OutputPathError, check_out_file, write_json

OUT_NOTE = "(default runs/bench/, outside the tracked tree; benchmarks/results/ holds the committed record)"


def world_config(n_facts: int):
    from kgsim.core.config import CorpusConfig, GraphConfig

    n_relations = 16
    return (GraphConfig(generator="zipf", n_entities=n_facts // n_relations, n_types=1, n_relations=n_relations,
                        n_composed=2, zipf_exponent=1.1, mean_exposure=8.0, never_exposed_share=0.1),
            CorpusConfig(facts_per_doc=4, relation_doc_share=0.5, qa_subject_share=0.5))


def run_kgsim(n_facts: int) -> dict:
    from kgsim.core.rng import stream
    from kgsim.world.corpus import build_corpus
    from kgsim.world.graph import generate
    from kgsim.world.splits import assign_qa_subjects

    gcfg, ccfg = world_config(n_facts)
    t0 = time.perf_counter()
    kg = generate(gcfg, stream(0, "graph"))
    t1 = time.perf_counter()
    qa = assign_qa_subjects(kg.n_entities, ccfg.qa_subject_share, stream(0, "qa"))
    corpus = build_corpus(kg, qa, ccfg, stream(0, "corpus"))
    t2 = time.perf_counter()
    return {"facts": kg.n_facts, "tokens": int(len(corpus.stream)), "graph_s": t1 - t0, "corpus_s": t2 - t1,
            "total_s": t2 - t0}


def run_networkx(n_facts: int) -> dict:
    """The plain way: Python's random, a networkx MultiDiGraph, documents built in loops."""
    import random

    import networkx as nx

    gcfg, ccfg = world_config(n_facts)
    rnd = random.Random(0)
    n, n_rel = gcfg.n_entities, gcfg.n_relations
    t0 = time.perf_counter()
    order = list(range(n))
    rnd.shuffle(order)
    weight = [0.0] * n
    for rank, e in enumerate(order, 1):
        weight[e] = rank ** -gcfg.zipf_exponent
    g = nx.MultiDiGraph()
    g.add_nodes_from(range(n))
    for s in range(n):
        for r in range(n_rel):
            g.add_edge(s, rnd.randrange(n), key=r, exposure=0)
    edges = list(g.edges(keys=True))
    hidden = set(rnd.sample(range(len(edges)), int(round(gcfg.never_exposed_share * len(edges)))))
    shown = [i for i in range(len(edges)) if i not in hidden]
    budget = int(round(gcfg.mean_exposure * len(shown))) - len(shown)
    picks = rnd.choices(shown, weights=[weight[edges[i][0]] for i in shown], k=budget)
    counts = [0] * len(edges)
    for i in picks:
        counts[i] += 1
    for i in shown:
        s, a, r = edges[i]
        g.edges[s, a, r]["exposure"] = min(1 + counts[i], gcfg.max_exposure)
    t1 = time.perf_counter()
    qa = set(rnd.sample(range(n), int(round(ccfg.qa_subject_share * n))))
    subj_docs, rel_items = [], {}
    for s in g.nodes:
        items = []
        for _, a, r, d in g.out_edges(s, keys=True, data=True):
            for _ in range(d["exposure"]):
                if rnd.random() < ccfg.relation_doc_share:
                    rel_items.setdefault((r, s in qa), []).append((s, r, a))
                else:
                    items.append((s, r, a))
        rnd.shuffle(items)
        subj_docs += [(items[i:i + ccfg.facts_per_doc], s in qa) for i in range(0, len(items), ccfg.facts_per_doc)]
    for (r, is_qa), items in rel_items.items():
        rnd.shuffle(items)
        subj_docs += [(items[i:i + ccfg.facts_per_doc], is_qa) for i in range(0, len(items), ccfg.facts_per_doc)]
    rnd.shuffle(subj_docs)
    E, R, Q = 6, 6 + n, 6 + n + n_rel
    stream = []
    for facts, is_qa in subj_docs:
        stream.append(1)
        as_qa = is_qa and rnd.random() < 0.5
        for j, (s, r, a) in enumerate(facts):
            stream += [4, E + s, Q + r, 5, E + a] if as_qa else [E + s, R + r, E + a]
            stream.append(2 if j == len(facts) - 1 else 3)
    t2 = time.perf_counter()
    return {"facts": g.number_of_edges(), "tokens": len(stream), "graph_s": t1 - t0, "corpus_s": t2 - t1,
            "total_s": t2 - t0}


def _child(fn_name: str, n_facts: int, q) -> None:
    out = globals()[fn_name](n_facts)
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    q.put(out)


def measure(fn_name: str, n_facts: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn_name, n_facts, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--facts", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/bench_graph.json"),
                    help="JSON results " + OUT_NOTE)
    args = ap.parse_args()
    try:
        check_out_file(args.out)
    except OutputPathError as e:
        ap.error(str(e))
    ours = measure("run_kgsim", args.facts)
    ref = measure("run_networkx", args.facts)
    print(f"{'':<22}{'facts':>10}{'tokens':>12}{'graph s':>10}{'corpus s':>10}{'total s':>10}{'peak MB':>10}")
    for name, m in (("kgsim (numpy)", ours), ("networkx + loops", ref)):
        print(f"{name:<22}{m['facts']:>10}{m['tokens']:>12}{m['graph_s']:>10.2f}{m['corpus_s']:>10.2f}"
              f"{m['total_s']:>10.2f}{m['max_rss_mb']:>10.0f}")
    ratio = ref["total_s"] / ours["total_s"]
    print(f"speed-up: {ratio:.1f}x faster; memory: {ref['max_rss_mb'] / ours['max_rss_mb']:.1f}x less peak RSS")
    write_json(args.out, {"kgsim": ours, "networkx": ref, "speedup": ratio,
                          "machine": platform.platform(), "python": platform.python_version()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
