"""End to end, offline, on a CPU: a tiny Llama-layout model pretrained here on a verbalised kgsim
graph, then categorised (SliCK), fine-tuned (full and LoRA) on FT-Known / FT-Unknown with ES and
Con. checkpoints, and evaluated under every prompt, giving kgsim EdgeSets.

Nothing here asserts that the tiny model learns the world well; it asserts the protocol's contracts:
balanced sets, the same prompts for both models, the gap as an edge count, resumability.
"""
import json
import os
from collections import Counter

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch

from kgsim.core.config import GraphConfig
from kgsim.core.edges import EdgeSet
from kgsim.core.names import FT_MODELS, STAGES
from kgsim.core.rng import stream
from kgsim.world.graph import generate
from llm_bridge.datasets import two_hop_examples
from llm_bridge.evaluate import load_edgesets
from llm_bridge.finetune import load_checkpoint
from llm_bridge.models import build_tokenizer, pretrain, save_model, tiny_llama
from llm_bridge.pipeline import bridge_config, run_bridge
from llm_bridge.verbalize import Verbalizer, name_graph, pretraining_documents

torch.set_num_threads(1)

SPLITS_1HOP = ("id", "sim-near-id", "sim-open-world", "sim-1", "sim-2")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A verbalised 120-fact world and a tiny Llama pretrained on it (about 200 steps, seconds)."""
    d = tmp_path_factory.mktemp("bridge")
    gcfg = GraphConfig(n_entities=60, n_types=2, n_relations=4, n_composed=1, mean_exposure=6.0,
                       never_exposed_share=0.25)
    kg = name_graph(generate(gcfg, stream(0, "graph")), stream(0, "names"))
    vb = Verbalizer.from_graph(kg)
    docs = pretraining_documents(kg, vb, stream(0, "corpus"), qa_subject_share=0.8)
    tok = build_tokenizer(docs + [f"Q: {e.question}\nA: {e.rationale}" for e in two_hop_examples(kg, vb)], 400)
    model = tiny_llama(tok, d_model=64, n_layers=2, n_heads=4, n_ctx=256, seed=0)
    losses = pretrain(model, tok, docs, steps=200, batch_size=16, lr=3e-3, seed=0)
    assert losses[-1] < 0.5 * losses[0]
    save_model(model, tok, d / "base")
    kg.save(d / "graph.npz")
    return d


def _check_contracts(res: dict, out, cfg) -> None:
    c = res["counts"]
    assert res["schema"] == "kgsim-bridge/2" and c["ft-known"] == c["ft-unknown"] > 0
    assert sum(c["categories"].values()) == c["candidates"]
    sets = json.loads((out / "splits.json").read_text())
    rel = {e: e.split("/")[0] for e in sets["candidates"]}
    assert Counter(rel[i] for i in sets["ft-known"]) == Counter(rel[i] for i in sets["ft-unknown"])
    edges = load_edgesets(out / "edges")
    splits = [s for s in (*SPLITS_1HOP, "2hop", "2hop-hops") if c["splits"].get(s)]
    assert {"id", "2hop", "2hop-hops"} <= set(splits)
    want = {(m, st, sp, p) for m in FT_MODELS for st in STAGES for sp in splits for p in cfg.eval.prompt_names(sp)}
    assert set(edges) == want and len(res["accuracy"]) == len(want)
    for m, st, sp, p in want:
        kn, unk = edges[("ft-known", st, sp, p)], edges[("ft-unknown", st, sp, p)]
        assert isinstance(kn, EdgeSet) and (kn.key, unk.key) == (("ft-known", st, sp, p), ("ft-unknown", st, sp, p))
        assert np.array_equal(kn.test_ids, unk.test_ids)                     # the same test set T
        assert kn.meta["induced"] == unk.meta["induced"]                     # the same prompts
        gap = next(g for g in res["gap"] if (g["stage"], g["split"], g["prompt"]) == (st, sp, p))
        assert gap["delta"] == pytest.approx((kn.size - unk.size) / kn.n)   # P1: the gap is an edge count
    for p in cfg.eval.prompt_names("id")[1:]:
        k = int(p.split("-")[0])
        assert all(len(ind) == k for ind in edges[("ft-known", "es", "id", p)].meta["induced"])
    for name in FT_MODELS:
        ft = res["finetune"][name]
        best = max(h["dev_acc"] for h in ft["history"])
        assert ft["es_dev_acc"] == best and ft["es_step"] == min(h["step"] for h in ft["history"] if h["dev_acc"] == best)
        assert ft["es_step"] <= ft["con_step"] == ft["steps"] == cfg.finetune.max_steps
        assert 0 <= ft["con_train_acc"] <= 1


@pytest.mark.slow
def test_full_finetuning_end_to_end(base):
    cfg = bridge_config("tiny")
    out = base / "run-full"
    res = run_bridge(base / "base", "synthetic", base / "graph.npz", cfg, out, progress=False)
    _check_contracts(res, out, cfg)
    assert res["exposure_by_category"]["Unknown"]["n"] == res["counts"]["categories"]["Unknown"]
    for stage in STAGES:
        files = {p.name for p in (out / "ft-known" / stage).iterdir()}
        assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt")) for f in files)
    es_model, _ = load_checkpoint(out / "ft-known" / "es", dtype="float32", device="cpu")
    con_model, _ = load_checkpoint(out / "ft-known" / "con", dtype="float32", device="cpu")
    if res["finetune"]["ft-known"]["es_step"] != res["finetune"]["ft-known"]["con_step"]:
        assert not torch.equal(es_model.lm_head.weight, con_model.lm_head.weight)
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["probe"]["n_shots"] == 2 and run["environment"]["transformers"]
    # resumable: a rerun reuses every stage and gives the same results
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if p.name not in ("results.json", "run.json", "splits.json")}
    again = run_bridge(base / "base", "synthetic", base / "graph.npz", cfg, out, progress=False)
    assert again["accuracy"] == res["accuracy"] and again["finetune"] == res["finetune"]
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


@pytest.mark.slow
def test_lora_end_to_end_in_stages(base):
    cfg = bridge_config("tiny", ["finetune.method=lora", "finetune.lr=1e-2", "finetune.lora_r=4"])
    out = base / "run-lora"
    first = run_bridge(base / "base", "synthetic", base / "graph.npz", cfg, out, progress=False, until="categorise")
    assert first["accuracy"] == [] and first["finetune"] == {} and (out / "slick.json").is_file()
    res = run_bridge(base / "base", "synthetic", base / "graph.npz", cfg, out, progress=False)
    assert res["counts"] == first["counts"]
    _check_contracts(res, out, cfg)
    for name in FT_MODELS:
        files = {p.name for p in (out / name / "es").iterdir()}
        assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    info = json.loads((out / "ft-unknown" / "con" / "bridge_checkpoint.json").read_text())
    assert info["method"] == "lora" and info["base_model"] == str((base / "base").resolve())
