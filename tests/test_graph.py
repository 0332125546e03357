"""Knowledge-graph generators: properties that must hold for every registered generator."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kgsim.core.config import ConfigError, GraphConfig
from kgsim.core.kg import KnowledgeGraph, fitted_popularity_exponent
from kgsim.core.rng import stream
from kgsim.world.graph import GENERATORS, generate

SYNTHETIC = sorted(g for g in GENERATORS if g not in ("tsv", "entityquestions"))


@st.composite
def graph_configs(draw, generator=st.sampled_from(SYNTHETIC)):
    n_rel = draw(st.integers(1, 8))
    n_ent = draw(st.integers(4, 300))
    return GraphConfig(
        generator=draw(generator), n_entities=n_ent, n_types=draw(st.integers(1, min(4, n_ent))),
        n_relations=n_rel, n_composed=draw(st.integers(0, n_rel // 2)),
        facts_per_subject=draw(st.sampled_from([1.0, 0.7, 0.3])),
        zipf_exponent=draw(st.floats(0.0, 2.0)), mean_exposure=draw(st.floats(0.0, 20.0)),
        max_exposure=draw(st.sampled_from([32, 64, 10_000])), never_exposed_share=draw(st.floats(0.0, 0.9)),
        n_communities=draw(st.integers(1, 5)), community_mixing=draw(st.floats(0.0, 1.0)))


@given(cfg=graph_configs(), seed=st.integers(0, 2**32))
def test_facts_are_as_declared(cfg, seed):
    kg = generate(cfg, stream(seed, "graph"))
    # ids in range
    assert kg.entity_types.min() >= 0 and kg.entity_types.max() < cfg.n_types
    for arr, hi in ((kg.s, cfg.n_entities), (kg.a, cfg.n_entities), (kg.r, cfg.n_relations)):
        assert arr.size == 0 or (arr.min() >= 0 and arr.max() < hi)
    # typed: subject of the relation's domain type, answer of its range type
    assert np.array_equal(kg.entity_types[kg.s], kg.relation_domain[kg.r])
    assert np.array_equal(kg.entity_types[kg.a], kg.relation_range[kg.r])
    # functional: each (s, r) has exactly the declared answer
    assert (kg.n_answers() == 1).all()
    for i in range(min(kg.n_facts, 20)):
        assert kg.answers(int(kg.s[i]), int(kg.r[i])).tolist() == [int(kg.a[i])]
    assert kg.is_correct(kg.s, kg.r, kg.a).all()
    # exposure: exactly the configured share never shown; every other fact at least once
    assert (kg.exposure == 0).sum() == round(cfg.never_exposed_share * kg.n_facts)
    shown = kg.exposure > 0
    assert (kg.exposure[shown] >= 1).all() and (kg.exposure <= cfg.max_exposure).all()
    if shown.any() and kg.exposure.max() < cfg.max_exposure:       # cap not reached: the budget is exact
        assert kg.exposure.sum() == max(round(cfg.mean_exposure * shown.sum()), shown.sum())


@given(cfg=graph_configs(), seed=st.integers(0, 2**32))
def test_two_hop_paths_are_unique_and_true(cfg, seed):
    kg = generate(cfg, stream(seed, "graph"))
    for r1, r2 in kg.composed:
        assert kg.relation_range[r1] == kg.relation_domain[r2]
    rows = kg.two_hop()
    if len(rows):
        s, r1, r2, m, a = rows.T
        assert kg.is_correct(s, r1, m).all() and kg.is_correct(m, r2, a).all()


@given(cfg=graph_configs(), seed=st.integers(0, 2**31))
def test_same_seed_same_arrays_other_seed_other_arrays(cfg, seed):
    one, two = generate(cfg, stream(seed, "graph")), generate(cfg, stream(seed, "graph"))
    for name in ("entity_types", "relation_domain", "relation_range", "s", "r", "a", "exposure", "popularity"):
        assert np.array_equal(getattr(one, name), getattr(two, name)), name
    other = generate(cfg, stream(seed + 1, "graph"))
    assume(one.n_facts >= 20 and cfg.n_entities >= 20)
    assert not (np.array_equal(one.a, other.a) and np.array_equal(one.s, other.s)
                and np.array_equal(one.exposure, other.exposure))


POPULARITY_TOLERANCE = 0.15   # |fitted - configured| Zipf exponent, for >= 2000 subjects (see graph docs)


@settings(max_examples=25)
@given(generator=st.sampled_from([g for g in SYNTHETIC if g != "uniform"]), exponent=st.floats(0.5, 1.5),
       n=st.integers(2000, 4000), seed=st.integers(0, 2**31))
def test_fitted_zipf_exponent_matches_configured(generator, exponent, n, seed):
    cfg = GraphConfig(generator=generator, n_entities=n, n_types=1, n_relations=4, n_composed=0,
                      zipf_exponent=exponent, mean_exposure=8.0, max_exposure=64)
    kg = generate(cfg, stream(seed, "graph"))
    assert abs(fitted_popularity_exponent(kg) - exponent) <= POPULARITY_TOLERANCE


def test_uniform_generator_has_flat_popularity():
    kg = generate(GraphConfig(generator="uniform", n_entities=500), stream(0, "graph"))
    assert np.allclose(kg.popularity, 1 / 500)


def test_preferential_answers_are_heavier_tailed_than_uniform():
    cfg = GraphConfig(n_entities=5000, n_types=1, n_relations=2, n_composed=0)
    uni = generate(GraphConfig(**{**cfg.__dict__, "generator": "uniform"}), stream(0, "graph"))
    pa = generate(GraphConfig(**{**cfg.__dict__, "generator": "preferential"}), stream(0, "graph"))
    assert np.bincount(pa.a).max() > 3 * np.bincount(uni.a).max()


def test_community_answers_stay_in_community_mostly():
    kg = generate(GraphConfig(generator="community", n_entities=2000, n_types=1, n_relations=2, n_composed=0,
                              n_communities=4, community_mixing=0.0), stream(0, "graph"))
    # With no mixing, the answer graph splits into (at most) the configured communities.
    import networkx as nx
    g = nx.Graph()
    g.add_edges_from(zip(kg.s.tolist(), kg.a.tolist()))
    assert nx.number_connected_components(g) <= 4


def test_save_load_roundtrip(tmp_path):
    kg = generate(GraphConfig(n_entities=100, n_relations=4, n_composed=1), stream(3, "graph"))
    kg.save(tmp_path / "g.npz")
    back = KnowledgeGraph.load(tmp_path / "g.npz")
    assert np.array_equal(back.exposure, kg.exposure) and np.array_equal(back.composed, kg.composed)
    nxg = kg.to_networkx()
    assert nxg.number_of_edges() == kg.n_facts and nxg.number_of_nodes() == kg.n_entities


def test_unknown_generator_is_a_config_error():
    with pytest.raises(ConfigError, match="graph.generator"):
        GraphConfig(generator="nope").validate("graph")
