"""The study's shared rules (kgsim.core): one implementation that kgsim and llm_bridge both call.

SliCK categories, balanced fine-tuning sets, similarity splits, content hashes, and the EdgeSet /
2-hop records with their names; and that llm_bridge's adapters give what the rules give.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kgsim.core.edges import EdgeSet, TwoHopQueries
from kgsim.core.known import FT_KNOWN_CATEGORIES, categories, category
from kgsim.core.names import CATEGORIES, UNKNOWN, label, shots_of, sim_bucket_index
from kgsim.core.provenance import content_hash
from kgsim.core.rng import stream
from kgsim.core.selection import balanced_counts, balanced_sets, similarity_buckets, split_at_quantile
from llm_bridge.config import bridge_config
from llm_bridge.data import balanced_sets as bridge_balanced_sets
from llm_bridge.datasets import QAExample
from llm_bridge.known import SliCKResult

rates = st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0])


@given(st.lists(st.tuples(rates, rates), min_size=1, max_size=20))
def test_slick_rule_vectorised_is_the_scalar_rule(pairs):
    g, s = np.array(pairs).T
    cats = categories(g, s)
    assert cats.tolist() == [category(a, b) for a, b in pairs]
    assert set(cats) <= set(CATEGORIES)
    assert ((cats == UNKNOWN) == ((g == 0) & (s == 0))).all()
    assert (np.isin(cats, FT_KNOWN_CATEGORIES) == (g > 0)).all()         # FT-Known: P_greedy > 0


@given(st.lists(st.integers(0, 6), min_size=1, max_size=5), st.lists(st.integers(0, 6), min_size=5, max_size=5),
       st.integers(1, 20), st.integers(0, 10**6))
def test_balanced_sets_are_balanced_disjoint_and_seeded(n_known, n_unknown, n, seed):
    n_unknown = n_unknown[:len(n_known)]
    rel = np.concatenate([np.full(a + b, r) for r, (a, b) in enumerate(zip(n_known, n_unknown))]).astype(np.int64)
    known = np.concatenate([np.flatnonzero(rel == r)[:a] for r, a in enumerate(n_known)]).astype(np.int64)
    unknown = np.setdiff1d(np.arange(len(rel)), known)
    rels = range(len(n_known))
    kn, unk = balanced_sets(known, unknown, rel, rels, n, np.random.default_rng(seed), strict=False)
    assert len(kn) == len(unk) <= n and np.isin(kn, known).all() and np.isin(unk, unknown).all()
    per_relation = lambda ids: np.bincount(rel[ids], minlength=len(n_known)).tolist()  # noqa: E731
    assert per_relation(kn) == per_relation(unk)
    again = balanced_sets(known, unknown, rel, rels, n, np.random.default_rng(seed), strict=False)
    assert all(np.array_equal(a, b) for a, b in zip((kn, unk), again))
    caps = np.minimum(n_known, n_unknown)
    assert len(kn) == min(n, int(caps.sum()))                           # the round robin uses what there is
    if (balanced_counts([n] * len(caps), [n] * len(caps), n) > caps).any():
        with pytest.raises(ValueError, match="of each needed"):
            balanced_sets(known, unknown, rel, rels, n, np.random.default_rng(seed))


def test_bridge_fine_tuning_sets_are_kgsims_draw():
    cands = [QAExample(f"{r}/{i}", "q", ["a"], r) for r in ("A", "B") for i in range(6)]
    cats = {"A": ["HighlyKnown"] * 3 + ["WeaklyKnown"] + ["Unknown"] * 2, "B": ["MaybeKnown"] * 2 + ["Unknown"] * 4}
    slick = {e.id: SliCKResult(e.id, 0.0, 0.0, cats[e.relation][int(e.id.split("/")[1])]) for e in cands}
    d = bridge_config(overrides=["data.ft_size=10"]).data
    kn, unk = bridge_balanced_sets(cands, slick, d, seed=3)
    assert len(kn) == len(unk) == 4 and all(slick[e.id].category in FT_KNOWN_CATEGORIES for e in kn)
    # the same draw as kgsim's rule over candidate positions, with the seed's stream
    rel = np.array([0] * 6 + [1] * 6)
    pos = {e.id: i for i, e in enumerate(cands)}
    want = balanced_sets([0, 1, 2, 6, 7], [4, 5, 8, 9, 10, 11], rel, [0, 1], 10, stream(3, "bridge-ft-sets"),
                         strict=False)
    assert ([pos[e.id] for e in kn], [pos[e.id] for e in unk]) == tuple(w.tolist() for w in want)


def test_similarity_rules():
    sim = np.array([0.3, 0.9, 0.1, 0.9, 0.5])
    assert [b.tolist() for b in similarity_buckets(sim, 2)] == [[1, 3, 4], [0, 2]]    # ties keep input order
    near, far = split_at_quantile(sim, 0.6)
    assert near.tolist() == [1, 3] and far.tolist() == [0, 2, 4]


def test_names_and_hashes():
    assert label("ft-known", "es") == "ft-known/es" and label("base", "") == "base"
    assert [shots_of(p) for p in ("zero-shot", "3-shot", "cot", "k-shot")] == [0, 3, None, None]
    assert [sim_bucket_index(s) for s in ("sim-1", "sim-12", "sim-near-id", "near-id")] == [1, 12, None, None]
    assert content_hash(("a", {"y": 1, "x": 2})) == content_hash(["a", {"x": 2, "y": 1}]) != content_hash(["a"])


def test_edge_set_and_two_hop_records_read_older_files():
    old = {"model": "ft-unknown/con", "prompt": "cot", "test_set": "2hop", "test_ids": [0, 1], "correct": [1, 0]}
    e = EdgeSet.from_json(old)
    assert e.key == ("ft-unknown", "con", "2hop", "cot") and e.label == "ft-unknown/con"
    assert EdgeSet.from_json(e.to_json()).key == e.key
    base = EdgeSet.from_json({**old, "model": "base"})
    assert (base.model, base.stage, base.label) == ("base", "", "base")
    th = TwoHopQueries.from_json({"rows": [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]], "hop1": [3, 4], "hop2": [5, 6],
                                  "measured": {}})
    assert th.measured and th.query_ids.tolist() == [0, 1]
    assert not TwoHopQueries.from_json({"rows": [[0, 1, 2, 3, 4]], "hop1": None, "hop2": None}).measured
    with pytest.raises(ValueError, match="do not describe the same queries"):
        TwoHopQueries(np.zeros((3, 5)), np.arange(2), np.arange(2))
