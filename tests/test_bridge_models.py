"""Local model loading, tiny models and tokenizers, batched generation (offline, CPU)."""
import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch

from llm_bridge.generation import decode_each, embed, generate, next_tokens, sample
from llm_bridge.models import (
    ModelDirError,
    build_tokenizer,
    load_model,
    model_fingerprint,
    pretrain,
    resolve_device,
    save_model,
    tiny_llama,
)

torch.set_num_threads(1)

TEXTS = ["Q: Where was Kato born?\nA: Sabi\n", "Kato was born in Sabi.", "Q: Who founded Mirelu?\nA: Trevasu\n",
         "Çandarlı Ibrahim Pasha was a qadi."] * 8
PROMPTS = ["Q: Where was Kato born?\nA:", "Q: Who founded Mirelu?\nA:", "Kato", "Q: Where was Çandarlı born?\nA:"]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(TEXTS, vocab_size=300)


@pytest.fixture(scope="module")
def saved(tok, tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    return save_model(tiny_llama(tok, d_model=32, n_layers=2, n_heads=2, n_ctx=64, seed=3), tok, d)


def test_tokenizer_round_trips_and_pads_left(tok):
    for t in TEXTS[:4] + ["unseen: Ωmega ✓ 東京\n"]:
        assert tok.decode(tok(t)["input_ids"]) == t
    enc = tok(["Kato", "Q: Where was Kato born?"], padding=True)
    assert tok.padding_side == "left" and enc["input_ids"][0][0] == tok.pad_token_id


def test_tiny_llama_is_seeded_without_global_rng(tok):
    state = torch.get_rng_state()
    a, b = tiny_llama(tok, d_model=16, n_layers=1, n_heads=2, seed=1), tiny_llama(tok, d_model=16, n_layers=1, n_heads=2, seed=1)
    c = tiny_llama(tok, d_model=16, n_layers=1, n_heads=2, seed=2)
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not torch.equal(pa["model.embed_tokens.weight"], pc["model.embed_tokens.weight"])
    assert a.config.model_type == "llama" and a.config.vocab_size == len(tok)
    with pytest.raises(ValueError, match="n_heads = 3"):
        tiny_llama(tok, d_model=16, n_heads=3)
    assert torch.equal(state, torch.get_rng_state())


def test_save_load_round_trip(saved, tok):
    files = {p.name for p in saved.iterdir()}
    assert "model.safetensors" in files and "tokenizer.json" in files
    model, tok2 = load_model(saved, dtype="float32", device="cpu")
    ref = tiny_llama(tok, d_model=32, n_layers=2, n_heads=2, n_ctx=64, seed=3)
    x = torch.tensor([tok("Kato was born in Sabi.")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(x).logits, ref(x).logits, atol=1e-6)
    assert tok2.padding_side == "left" and tok2.pad_token == "<pad>"
    half, _ = load_model(saved, dtype="bfloat16", device="cpu")
    assert next(half.parameters()).dtype == torch.bfloat16


def test_load_errors(tmp_path, saved):
    with pytest.raises(ModelDirError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(ModelDirError, match="no config.json"):
        load_model(tmp_path)
    d = tmp_path / "remote"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "my_custom_lm", "auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(ModelDirError, match="not built into transformers"):
        load_model(d)
    (d / "config.json").write_text((saved / "config.json").read_text())
    with pytest.raises(ModelDirError, match="no weights"):
        load_model(d)
    (d / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    with pytest.raises(ModelDirError, match="no tokenizer"):
        load_model(d)
    with pytest.raises(ValueError, match="dtype = 'fp8'"):
        load_model(saved, dtype="fp8")
    with pytest.raises(ValueError, match="device = 'gpu'"):
        resolve_device("gpu")


def test_fingerprint_tracks_contents(saved, tmp_path):
    fp = model_fingerprint(saved)
    assert fp == model_fingerprint(saved) and len(fp) == 16
    cfg = json.loads((saved / "config.json").read_text())
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in saved.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    assert model_fingerprint(copy) != fp                 # another directory is another model
    (copy / "config.json").write_text(json.dumps({**cfg, "rms_norm_eps": 1e-5}))
    assert model_fingerprint(copy) != fp


def test_batched_generation_matches_single_and_sampling_is_seeded(saved):
    model, tok = load_model(saved, dtype="float32", device="cpu")
    batched = generate(model, tok, PROMPTS, max_new_tokens=6, batch_size=4)
    single = [generate(model, tok, [p], max_new_tokens=6)[0] for p in PROMPTS]
    assert batched == single                             # left padding does not change greedy answers
    assert all("\n" not in g for g in batched)
    state = torch.get_rng_state()
    s1 = generate(model, tok, PROMPTS * 3, max_new_tokens=6, temperature=1.0, seed=5, stream="t")
    s2 = generate(model, tok, PROMPTS * 3, max_new_tokens=6, temperature=1.0, seed=5, stream="t")
    s3 = generate(model, tok, PROMPTS * 3, max_new_tokens=6, temperature=1.0, seed=6, stream="t")
    assert s1 == s2 and s1 != s3
    assert torch.equal(state, torch.get_rng_state())     # sampling never touches the global generator
    assert generate(model, tok, []) == []
    with pytest.raises(ValueError, match="temperature = -1"):
        generate(model, tok, PROMPTS, temperature=-1)


def test_shared_prefill_sampling_is_generate_on_repeated_prompts(saved):
    """`sample` reads each prompt once and repeats its key/value cache: near T = 0 every sample is
    generate's greedy answer (left padding, positions and cache line up, here on a rotary model),
    and with aligned batches its draws are generate's on the repeated prompts, draw for draw."""
    model, tok = load_model(saved, dtype="float32", device="cpu")
    greedy = generate(model, tok, PROMPTS, max_new_tokens=6, batch_size=4)
    cold = sample(model, tok, PROMPTS, n_samples=3, temperature=1e-7, max_new_tokens=6, batch_size=6)
    assert cold == [g for g in greedy for _ in range(3)]
    state = torch.get_rng_state()
    ours = sample(model, tok, PROMPTS, n_samples=5, temperature=1.0, max_new_tokens=6, batch_size=20, seed=5, stream="t")
    reps = generate(model, tok, [p for p in PROMPTS for _ in range(5)], max_new_tokens=6, batch_size=20,
                    temperature=1.0, seed=5, stream="t")
    assert ours == reps and len(set(ours)) > 1 and all("\n" not in t for t in ours)
    assert torch.equal(state, torch.get_rng_state())     # no global RNG
    assert ours != sample(model, tok, PROMPTS, n_samples=5, temperature=1.0, max_new_tokens=6, batch_size=20,
                          seed=6, stream="t")
    assert sample(model, tok, [], n_samples=2, temperature=1.0) == []
    with pytest.raises(ValueError, match="n_samples = 0"):
        sample(model, tok, PROMPTS, n_samples=0, temperature=1.0)


def test_next_tokens_is_generates_first_token_and_samples_are_seeded(saved):
    """The one-forward fast path: greedy = generate's first token (prompts of unequal length are
    grouped by length, never padded); samples seeded, drawn from softmax(logits / T)."""
    model, tok = load_model(saved, dtype="float32", device="cpu")
    prompts = PROMPTS * 3
    state = torch.get_rng_state()
    greedy, samples = next_tokens(model, tok, prompts, batch_size=2, n_samples=5, temperature=0.7, seed=5, stream="t")
    first = [generate(model, tok, [p], max_new_tokens=1, skip_special_tokens=False)[0] for p in PROMPTS] * 3
    assert [t.split("\n", 1)[0] for t in decode_each(tok, greedy)] == first
    assert greedy.shape == (12,) and samples.shape == (12, 5)
    again = next_tokens(model, tok, prompts, batch_size=2, n_samples=5, temperature=0.7, seed=5, stream="t")[1]
    other = next_tokens(model, tok, prompts, batch_size=2, n_samples=5, temperature=0.7, seed=6, stream="t")[1]
    assert np.array_equal(samples, again) and not np.array_equal(samples, other)
    assert torch.equal(state, torch.get_rng_state())     # sampling never touches the global generator
    # 4000 draws for one prompt follow softmax(logits / T): the likeliest token's share within 5 SE
    _, many = next_tokens(model, tok, PROMPTS[:1], n_samples=4000, temperature=0.7, seed=1, stream="t")
    with torch.no_grad():
        p = torch.softmax(model(**tok(PROMPTS[:1], return_tensors="pt")).logits[0, -1] / 0.7, -1)
    top, p_top = int(p.argmax()), float(p.max())
    assert abs((many[0] == top).mean() - p_top) < 5 * (p_top * (1 - p_top) / 4000) ** 0.5
    assert next_tokens(model, tok, [])[0].shape == (0,)
    assert next_tokens(model, tok, PROMPTS)[1].shape == (4, 0)
    with pytest.raises(ValueError, match="temperature = 0"):
        next_tokens(model, tok, PROMPTS, n_samples=2, temperature=0)


def test_embed_shapes_and_padding_invariance(saved):
    model, tok = load_model(saved, dtype="float32", device="cpu")
    e = embed(model, tok, PROMPTS, batch_size=4)
    assert e.shape == (4, 32) and np.isfinite(e).all()
    assert np.allclose(e[2], embed(model, tok, PROMPTS[2:3])[0], atol=1e-5)


def test_pretrain_lowers_the_loss(tok):
    model = tiny_llama(tok, d_model=32, n_layers=1, n_heads=2, n_ctx=64, seed=0)
    losses = pretrain(model, tok, TEXTS, steps=60, batch_size=8, lr=1e-2, warmup=5, seed=0)
    assert len(losses) == 60 and np.mean(losses[-5:]) < 0.5 * losses[0]
    assert not model.training
