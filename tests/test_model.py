"""Contract tests of kgsim.nn.model: exact Hugging Face GPT-2 mapping, export, loss, causality, seeds.

CPU, offline, one thread, tiny models (milliseconds each; the export round trip about a second).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from kgsim.core.config import ConfigError, ModelConfig  # noqa: E402
from kgsim.nn.model import (  # noqa: E402
    GPT,
    IGNORE_INDEX,
    LinearCrossEntropy,
    build_model,
    export_hf,
    from_hf,
    load_model,
    load_weights,
    save_weights,
    to_hf,
)

torch.set_num_threads(1)

CFG = ModelConfig(d_model=32, n_layers=2, n_heads=4, n_ctx=16)
ATTN_ONLY = ModelConfig(d_model=32, n_layers=1, n_heads=2, n_ctx=16, attention_only=True)
VOCAB = 40
TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"] + [f"e{i}" for i in range(VOCAB - 4)]


def ids(shape, seed=0, high=VOCAB):
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed))


def hf_gpt2_from_config(seed: int = 0):
    """A GPT2LMHeadModel built offline from a config, every tensor (LayerNorms and biases too)
    drawn from an explicit generator so that the weight mapping is checked everywhere."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                        activation_function="gelu_new", bos_token_id=None, eos_token_id=None)
    with torch.random.fork_rng(devices=[]):          # HF's own init draws from the global RNG
        hf = GPT2LMHeadModel(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in hf.named_parameters():            # LayerNorm gains near 1, the rest near 0
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if "ln_" in name and "weight" in name else 0.0))
    return hf.eval()


# -- the first test: kgsim's GPT computes what Hugging Face's GPT-2 computes --------------------

def test_logits_match_hf_gpt2_built_from_config():
    hf = hf_gpt2_from_config()
    ours = from_hf(hf).eval()
    idx = ids((3, 16))
    with torch.no_grad():
        diff = (ours(idx) - hf(idx).logits).abs().max().item()
    assert diff <= 1e-4, diff
    assert ours.n_params() == sum(p.numel() for p in hf.parameters())   # tied head counted once
    assert ours.cfg == dataclasses.replace(CFG, dropout=0.1)            # GPT2Config's default pdrop


def test_to_hf_and_back_is_exact():
    ours = build_model(CFG, VOCAB, seed=3).eval()
    hf = to_hf(ours)
    idx = ids((2, 12), seed=1)
    with torch.no_grad():
        assert (ours(idx) - hf(idx).logits).abs().max().item() <= 1e-4
    back = from_hf(hf)
    assert back.cfg == ours.cfg
    for k, v in ours.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_export_round_trip_through_auto_classes(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ours = build_model(CFG, VOCAB, seed=1).eval()
    out = export_hf(ours, TOKENS, tmp_path / "hf", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config and config["model_type"] == "gpt2"
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    idx = ids((2, 10), seed=2, high=VOCAB)
    with torch.no_grad():
        assert (ours(idx) - model(idx).logits).abs().max().item() <= 1e-4
    prompt = [TOKENS[i] for i in idx[0].tolist()]
    assert tok(" ".join(prompt))["input_ids"] == idx[0].tolist()          # no BOS added
    assert tok.decode(idx[0].tolist()) == " ".join(prompt)
    assert tok("e1 never-seen e2")["input_ids"] == [5, 3, 6]               # unknown word -> <unk>
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (1, 2, 0)


def test_export_with_bos_prepends_it(tmp_path):
    from transformers import AutoTokenizer

    export_hf(build_model(CFG, VOCAB, seed=1), TOKENS, tmp_path, bos_token="<bos>", add_bos=True)
    tok = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert tok("e0 e1")["input_ids"] == [1, 4, 5]


def test_attention_only_exports_exactly(tmp_path):
    from transformers import AutoModelForCausalLM

    ours = build_model(ATTN_ONLY, VOCAB, seed=0).eval()
    assert not any(".mlp." in k or ".ln_2." in k for k in ours.state_dict())
    export_hf(ours, TOKENS, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True).eval()
    idx = ids((2, 16), seed=4)
    with torch.no_grad():
        assert (ours(idx) - hf(idx).logits).abs().max().item() <= 1e-4
    back = from_hf(hf)
    assert back.cfg.attention_only and back.n_params() == ours.n_params()


# -- the loss --------------------------------------------------------------------------------

def test_masked_loss_equals_full_cross_entropy_and_its_gradient():
    model = build_model(CFG, VOCAB, seed=0)
    row = ids((4, 17), seed=5)
    idx, targets = row[:, :-1], row[:, 1:]                  # targets[b, t] follows idx[b, :t+1]
    mask = torch.rand(4, 16, generator=torch.Generator().manual_seed(6)) < 0.4
    _, loss = model(idx, targets, mask)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    logits = model(idx)                                                  # [B, T, V]
    ref = F.cross_entropy(logits[mask], targets[mask])
    ref.backward()
    assert abs(loss.item() - ref.item()) <= 1e-5
    for n, p in model.named_parameters():
        assert torch.allclose(grads[n], p.grad, atol=1e-6, rtol=1e-4), n


def test_loss_without_gathering_rows_is_the_same():
    """The device path (every row through the LM head, masked rows weighted 0) on CPU."""
    model = build_model(CFG, VOCAB, seed=0)
    row = ids((3, 17), seed=14)
    mask = torch.rand(3, 16, generator=torch.Generator().manual_seed(15)) < 0.3
    _, loss = model(row[:, :-1], row[:, 1:], mask)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.gather_loss_rows = False
    _, loss2 = model(row[:, :-1], row[:, 1:], mask)
    loss2.backward()
    assert abs(loss.item() - loss2.item()) <= 1e-6
    for n, p in model.named_parameters():
        assert torch.allclose(grads[n], p.grad, atol=1e-7, rtol=1e-5), n


def test_loss_without_mask_ignores_ignore_index_and_return_logits():
    model = build_model(CFG, VOCAB, seed=0)
    row = ids((2, 9), seed=7)
    targets = row[:, 1:].clone()
    targets[0, :3] = IGNORE_INDEX
    _, loss = model(row[:, :-1], targets)
    logits, loss2 = model(row[:, :-1], targets, return_logits=True)
    ref = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    assert abs(loss.item() - ref.item()) <= 1e-5 and abs(loss2.item() - ref.item()) <= 1e-5


def test_linear_cross_entropy_in_chunks_matches_standard():
    g = torch.Generator().manual_seed(8)
    h = torch.randn(13, 8, generator=g, requires_grad=True)
    w = torch.randn(50, 8, generator=g, requires_grad=True)
    t = torch.randint(0, 50, (13,), generator=g)
    t[[2, 7]] = IGNORE_INDEX
    loss = LinearCrossEntropy.apply(h, w, t, 3)              # 5 chunks, the last one short
    (2.0 * loss).backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref = F.cross_entropy(h @ w.t(), t, ignore_index=IGNORE_INDEX)
    (2.0 * ref).backward()
    assert abs(loss.item() - ref.item()) <= 1e-5
    assert torch.allclose(gh, h.grad, atol=1e-6) and torch.allclose(gw, w.grad, atol=1e-6)


def test_bf16_autocast_loss_is_close_to_float32():
    model = build_model(CFG, VOCAB, seed=0)
    row = ids((4, 17), seed=9)
    mask = torch.ones(4, 16, dtype=torch.bool)
    _, ref = model(row[:, :-1], row[:, 1:], mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss = model(row[:, :-1], row[:, 1:], mask)
    assert loss.dtype == torch.float32 and abs(loss.item() - ref.item()) <= 2e-2


# -- causality and attention -------------------------------------------------------------------

@pytest.mark.parametrize("bf16", [False, True])   # SDPA (float32) and the explicit CPU bf16 path
def test_future_tokens_do_not_change_past_logits(bf16):
    model = build_model(CFG, VOCAB, seed=0).eval()
    a = ids((2, 16), seed=10)
    b = a.clone()
    b[:, 9:] = ids((2, 7), seed=11)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        la, lb = model(a), model(b)
    assert torch.equal(la[:, :9], lb[:, :9])
    assert not torch.equal(la[:, 9:], lb[:, 9:])


def test_attention_only_model_and_its_attention_weights():
    model = build_model(ATTN_ONLY, VOCAB, seed=0).eval()
    idx = ids((3, 7), seed=12)
    with torch.no_grad():
        logits, atts = model.forward_with_attention(idx)
        assert (logits - model(idx)).abs().max().item() <= 1e-5         # explicit path == SDPA path
    assert len(atts) == 1 and atts[0].shape == (3, 2, 7, 7)
    assert torch.allclose(atts[0].sum(-1), torch.ones(3, 2, 7), atol=1e-6)
    assert torch.all(atts[0].triu(1) == 0)                              # no weight on the future
    assert model.attention_weights(idx)[0].shape == (3, 2, 7, 7)
    n_attn = 1 * (4 * 32 * 32 + 4 * 32 + 2 * 32)                         # qkv, proj, biases, ln_1
    assert model.n_params() == VOCAB * 32 + 16 * 32 + n_attn + 2 * 32


# -- seeds, checkpoints, errors ----------------------------------------------------------------

def test_same_seed_same_init_different_seed_different_and_no_global_rng():
    state = torch.get_rng_state()
    a, b, c = build_model(CFG, VOCAB, 0), build_model(CFG, VOCAB, 0), build_model(CFG, VOCAB, 1)
    assert torch.equal(state, torch.get_rng_state())
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(a.wte.weight, c.wte.weight)
    proj = a.h[0].attn.c_proj.weight.std().item()                        # GPT-2: 0.02 / sqrt(2 * n_layers)
    assert 0.5 * 0.01 < proj < 1.5 * 0.01 and torch.equal(a.h[0].ln_1.weight, torch.ones(32))


def test_save_and_load_weights(tmp_path):
    model = build_model(CFG, VOCAB, seed=2).eval()
    path = save_weights(model, tmp_path / "m.safetensors")
    state = load_weights(path)
    assert "wte.weight" in state and not any("lm_head" in k for k in state)   # tied: stored once
    back = load_model(path).eval()
    assert back.cfg == CFG and back.vocab_size == VOCAB
    idx = ids((2, 16), seed=13)
    with torch.no_grad():
        assert torch.equal(model(idx), back(idx))
    fresh = GPT(CFG, VOCAB)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.wte.weight, model.wte.weight)


def test_errors_name_the_values(tmp_path):
    model = build_model(CFG, VOCAB, seed=0)
    with pytest.raises(ValueError, match="more than n_ctx = 16"):
        model(ids((1, 17)))
    with pytest.raises(ValueError, match="selects no position"):
        model(ids((1, 4)), ids((1, 4)), torch.zeros(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="vocab_size is 40"):
        export_hf(model, TOKENS[:-1], tmp_path)
    with pytest.raises(ValueError, match="no whitespace"):
        export_hf(model, TOKENS[:-1] + ["a b"], tmp_path)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        export_hf(model, TOKENS, tmp_path, bos_token="<s>")
    with pytest.raises(ConfigError, match="model.n_heads"):
        build_model(ModelConfig(d_model=30, n_heads=4), VOCAB, 0)


def test_benchmark_cuda_logic_runs_on_cpu(tmp_path, monkeypatch):
    """The CUDA benchmark's code path, on CPU with one tiny batch (MFU columns need CUDA)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"
    spec = importlib.util.spec_from_file_location("bench_train", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_train", bench)            # dataclasses look their module up
    spec.loader.exec_module(bench)
    out = tmp_path / "b.json"
    bench.main(["--device", "cpu", "--preset", "cuda", "--only", "5M", "--rows", "1", "--steps", "1",
                "--warmup", "1", "--min-steps", "1", "--hf-attn", "sdpa", "--out", str(out)])
    res = json.loads(out.read_text())["results"][0]
    assert res["steps"] == 1 and res["ours_tok_s"] > 0 and res["hf_tok_s"] > 0
    assert abs(res["first_loss"]["ours"] - res["first_loss"]["hf"]) < 0.05   # same weights, same batch
