"""Prompts, demonstrations as induced edges, similarity splits, EdgeSet keys and files."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch

from kgsim.core.config import ConfigError, GraphConfig
from kgsim.core.edges import EdgeSet
from kgsim.core.rng import stream
from kgsim.core.selection import similarity_buckets, split_at_quantile
from kgsim.world.graph import generate
from llm_bridge import prompts
from llm_bridge.datasets import by_relation, synthetic_examples, two_hop_examples
from llm_bridge.evaluate import (
    EvalConfig,
    build_prompts,
    draw_demos,
    edge_key,
    evaluate_model,
    load_edgesets,
    max_similarity,
    save_edgesets,
)
from llm_bridge.finetune import FinetuneConfig, PadCollator, encode_example, load_checkpoint
from llm_bridge.models import build_tokenizer, tiny_llama
from llm_bridge.verbalize import Verbalizer, name_graph

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world():
    kg = name_graph(generate(GraphConfig(n_entities=40, n_types=2, n_relations=4, n_composed=1), stream(0, "graph")),
                    stream(0, "names"))
    vb = Verbalizer.from_graph(kg)
    facts, two = synthetic_examples(kg, vb), two_hop_examples(kg, vb)
    return kg, facts, two


@pytest.fixture(scope="module")
def tiny(world):
    _, facts, two = world
    tok = build_tokenizer([prompts.qa_block(e.question, e.answer) for e in facts] +
                          [prompts.qa_block(e.question, e.rationale) for e in two], vocab_size=400)
    return tiny_llama(tok, d_model=16, n_layers=1, n_heads=2, seed=0), tok


def test_k_shot_demos_same_relation_never_self_and_model_independent(world):
    _, facts, _ = world
    pool = by_relation(facts[::2])
    test = facts[1::2][:12] + facts[:2]                          # two test items are also in the pool
    cfg = EvalConfig(k_shots=(3,))
    texts, induced = build_prompts("id", "3-shot", test, pool, cfg, seed=0)
    assert (texts, induced) == build_prompts("id", "3-shot", test, pool, cfg, seed=0)   # same prompts for both models
    assert texts != build_prompts("id", "3-shot", test, pool, cfg, seed=1)[0]
    for e, t, ind in zip(test, texts, induced):
        assert len(ind) == 3 and e.fact_id not in ind and t.endswith(prompts.zero_shot(e.question))
        assert all(facts[f].relation == e.relation for f in ind)
        assert t.count("\nA: ") == 3
    with pytest.raises(ValueError, match="demonstrations for a 9-shot prompt"):
        draw_demos(test, {r: p[:8] for r, p in pool.items()}, 9, stream(0, "x"))


def test_cot_and_direct_prompts_share_demonstrations(world):
    _, facts, two = world
    demos, test = two[:4], two[4:9]
    cfg = EvalConfig(cot_shots=2)
    cot_t, cot_ind = build_prompts("2hop", "cot", test, {"*": demos}, cfg, seed=0)
    dir_t, dir_ind = build_prompts("2hop", "direct-2hop", test, {"*": demos}, cfg, seed=0)
    for c, d, ci, di in zip(cot_t, dir_t, cot_ind, dir_ind):
        assert "So the answer is" in c and "So the answer is" not in d
        assert len(ci) == 4 and len(di) == 2                  # cot induces the demos' paths, direct their queries
    assert [e for e in cfg.prompt_names("2hop")] == ["cot", "direct-2hop"]
    assert cfg.prompt_names("2hop-hops") == ["zero-shot"] and cfg.prompt_names("id")[1:] == ["1-shot", "4-shot"]


def test_eval_config_and_keys():
    with pytest.raises(ConfigError, match=r"eval.k_shots\[1\] = 0"):
        EvalConfig(k_shots=(1, 0)).validate()
    with pytest.raises(ValueError, match="model 'base'"):
        edge_key("base", "es", "id", "zero-shot")


def test_similarity_splits_partition(world, tiny):
    """The bridge's similarities feed kgsim's rules (kgsim.core.selection)."""
    _, facts, _ = world
    model, tok = tiny
    ref, cands = facts[:10], facts[10:31]
    sim = max_similarity(model, tok, ref, cands)
    assert sim.shape == (21,) and (sim <= 1 + 1e-5).all()
    near, far = split_at_quantile(sim, 0.5)
    assert len(near) == 11 and len(far) == 10 and set(near.tolist()).isdisjoint(far.tolist())
    assert min(sim[near]) >= max(sim[far])
    b = similarity_buckets(sim, 3)
    assert sum(map(len, b)) == 21 and np.mean(sim[b[0]]) >= np.mean(sim[b[2]])


def test_evaluate_model_edgesets_round_trip(world, tiny, tmp_path):
    _, facts, two = world
    model, tok = tiny
    splits = {"id": facts[:6], "2hop": two[2:5], "2hop-hops": facts[6:9]}
    cfg = EvalConfig(k_shots=(1,), cot_shots=1, max_new_tokens=4, cot_max_new_tokens=8)
    edges = evaluate_model(model, tok, splits, by_relation(facts[10:]), cfg, model_name="ft-known", stage="es",
                           two_hop_pool=two[:2])
    assert set(edges) == {("ft-known", "es", "id", "zero-shot"), ("ft-known", "es", "id", "1-shot"),
                          ("ft-known", "es", "2hop", "cot"), ("ft-known", "es", "2hop", "direct-2hop"),
                          ("ft-known", "es", "2hop-hops", "zero-shot")}
    es = edges[("ft-known", "es", "2hop", "cot")]
    assert isinstance(es, EdgeSet) and es.key == ("ft-known", "es", "2hop", "cot") and es.n == 3
    assert es.meta["path"] == [list(e.path) for e in two[2:5]] and len(es.meta["predictions"]) == 3
    save_edgesets(edges, tmp_path)
    back = load_edgesets(tmp_path)
    assert set(back) == set(edges)
    for k in edges:
        assert np.array_equal(back[k].correct, edges[k].correct) and np.array_equal(back[k].test_ids, edges[k].test_ids)


def test_finetune_encoding_masks_the_prompt(world, tiny):
    _, facts, _ = world
    _, tok = tiny
    enc = encode_example(tok, facts[0], max_length=64)
    n_masked = sum(x == -100 for x in enc["labels"])
    assert tok.decode(enc["input_ids"][:n_masked]) == prompts.zero_shot(facts[0].question)
    assert tok.decode([t for t in enc["labels"] if t != -100]) == f" {facts[0].answer}\n"
    batch = PadCollator(tok.pad_token_id)([enc, encode_example(tok, facts[1], 64)])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    assert len(encode_example(tok, facts[0], max_length=5)["input_ids"]) == 5


def test_finetune_config_and_checkpoint_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"finetune.method = 'qlora'"):
        FinetuneConfig(method="qlora").validate()
    with pytest.raises(ConfigError, match=r"finetune.lr = 0.0"):
        FinetuneConfig(lr=0.0).validate()
    with pytest.raises(FileNotFoundError, match="not a bridge checkpoint"):
        load_checkpoint(tmp_path)
