"""BridgeConfig and the data stages of the pipeline (no model needed)."""
from collections import Counter
from pathlib import Path

import pytest

from kgsim.core.config import ConfigError, GraphConfig
from kgsim.core.rng import stream
from kgsim.world.graph import generate
from llm_bridge.known import SliCKResult
from llm_bridge.pipeline import (
    BridgeConfig,
    BridgeError,
    balanced_sets,
    bridge_config,
    load_data,
    load_graph,
    run_bridge,
    select,
)
from llm_bridge.verbalize import name_graph

FIXTURES = Path(__file__).parent / "fixtures"


def test_config_layers_and_errors():
    assert bridge_config() == BridgeConfig()
    cfg = bridge_config("tiny", ["data.ft_relations=['P17', 'P36']", "seed=3", "finetune.method=lora"])
    assert cfg.data.ft_relations == ("P17", "P36") and cfg.seed == 3 and cfg.finetune.method == "lora"
    for override, message in [
        ("data.ft_sise=3", r"unknown key 'data.ft_sise' \(value 3\)"),
        ("probe.n_samples=many", r"probe.n_samples = 'many': must be an integer"),
        ("probe.n_shots=20", r"probe.n_shots = 20: needs n_shots \+ 1 demonstrations per relation \(data.n_demo_pool = 16\)"),
        ("eval.k_shots=[1, 32]", r"eval.k_shots = 32: exceeds data.n_demo_pool = 16"),
        ("eval.match=contains", r"probe.match = 'em', finetune.match = 'em', eval.match = 'contains': must agree"),
        ("runtime.device=gpu0", r"runtime.device = 'gpu0'"),
        ("data.known_categories=['Unknown']", r"data.known_categories = \('Unknown',\)"),
        ("data.test_share=0.95", r"data.test_share = 0.95: dev_share \+ test_share must be < 1"),
        ("data.sim_buckets=1", r"data.sim_buckets = 1"),
    ]:
        with pytest.raises(ConfigError, match=message):
            bridge_config(overrides=[override])
    with pytest.raises(ConfigError, match="preset = 'huge'"):
        bridge_config("huge")


def test_entityquestions_selection_is_disjoint_and_balanced():
    cfg = bridge_config("tiny", ["data.ft_relations=['P17', 'P106']", "data.test_size=4", "data.dev_size=4"])
    splits, _ = load_data("entityquestions", FIXTURES / "entityquestions", cfg)
    sel = select(splits, cfg)
    assert sel.ft_relations == ["P17", "P106"] and sel.other_relations == ["P36"]
    demo_ids = {e.id for ds in sel.demos.values() for e in ds}
    assert demo_ids.isdisjoint(e.id for e in sel.candidates)
    assert {e.relation for e in sel.candidates} == {"P17", "P106"} and len(sel.candidates) == 8
    assert all(e.id.split("/")[1] == "dev" for e in sel.dev) and Counter(e.relation for e in sel.dev) == {"P17": 2, "P106": 2}
    assert {e.relation for e in sel.test_id} == {"P17", "P106"} and {e.relation for e in sel.test_other} == {"P36"}
    again = select(load_data("entityquestions", FIXTURES / "entityquestions", cfg)[0], cfg)
    assert [e.id for e in again.candidates] == [e.id for e in sel.candidates]
    with pytest.raises(BridgeError, match=r"\['P999'\] not in the training data"):
        select(splits, bridge_config("tiny", ["data.ft_relations=['P999']"]))


@pytest.mark.parametrize("data, path, n_rel", [("popqa", "popqa/popqa_sample.tsv", 4), ("mmlu", "mmlu", 2)])
def test_datasets_without_splits_are_partitioned(data, path, n_rel):
    cfg = bridge_config("tiny", ["data.test_share=0.3", "data.dev_share=0.2"])
    splits, _ = load_data(data, FIXTURES / path, cfg)
    ids = [e.id for s in ("train", "dev", "test") for e in splits[s]]
    assert len(ids) == len(set(ids)) and len({e.relation for e in splits["train"]}) == n_rel
    assert splits == load_data(data, FIXTURES / path, cfg)[0]


def test_synthetic_data_and_graph_paths(tmp_path):
    kg = name_graph(generate(GraphConfig(n_entities=40, n_types=2, n_relations=4, n_composed=1), stream(0, "g")),
                    stream(0, "n"))
    kg.save(tmp_path / "graph.npz")
    kg.to_tsv(tmp_path / "graph.tsv")
    assert load_graph(tmp_path).n_facts == load_graph(tmp_path / "graph.tsv").n_facts == kg.n_facts
    with pytest.raises(BridgeError, match="no graph file"):
        load_graph(tmp_path / "missing.npz")
    cfg = bridge_config("tiny")
    splits, info = load_data("synthetic", tmp_path / "graph.npz", cfg)
    assert info["template_version"] and len(splits["facts"]) == kg.n_facts and len(splits["2hop"]) == len(kg.two_hop())
    sel = select(splits, cfg)
    assert sel.two_hop and sel.two_hop_demos and {e.id for e in sel.two_hop}.isdisjoint(e.id for e in sel.two_hop_demos)
    assert {f for e in sel.two_hop for f in e.path} == {e.fact_id for e in sel.hops}
    with pytest.raises(BridgeError, match="data = 'wikidata'"):
        load_data("wikidata", tmp_path, cfg)


def _res(i, cat):
    return SliCKResult(i, 0.0, 0.0, cat)


def test_balanced_sets_equal_per_relation():
    cfg = bridge_config("tiny", ["data.ft_size=5"]).data
    from llm_bridge.datasets import QAExample

    cands = [QAExample(f"{r}/{i}", "q", ["a"], r) for r in ("A", "B", "C") for i in range(6)]
    cats = {"A": ["HighlyKnown"] * 4 + ["Unknown"] * 2, "B": ["MaybeKnown"] * 1 + ["Unknown"] * 5,
            "C": ["Unknown"] * 6}
    slick = {e.id: _res(e.id, cats[e.relation][int(e.id.split("/")[1])]) for e in cands}
    kn, unk = balanced_sets(cands, slick, cfg)
    assert len(kn) == len(unk) == 3
    assert Counter(e.relation for e in kn) == Counter(e.relation for e in unk) == {"A": 2, "B": 1}
    assert all(slick[e.id].category != "Unknown" for e in kn) and all(slick[e.id].category == "Unknown" for e in unk)
    none_known = {e.id: _res(e.id, "Unknown") for e in cands}
    with pytest.raises(BridgeError, match="0 Known and 18 Unknown"):
        balanced_sets(cands, none_known, cfg)


def test_run_bridge_rejects_bad_arguments(tmp_path):
    from llm_bridge.models import ModelDirError

    with pytest.raises(ModelDirError, match="does not exist"):
        run_bridge(tmp_path / "none", "synthetic", tmp_path, out_dir=tmp_path / "out")
    with pytest.raises(ConfigError, match="until = 'train'"):
        run_bridge(tmp_path, "synthetic", tmp_path, out_dir=tmp_path / "out", until="train")
