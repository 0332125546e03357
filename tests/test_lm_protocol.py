"""The study's LanguageModel and FineTuner protocols (kgsim.study.lm): kgsim's GPT (KgsimLM) and
its exact Hugging Face export (HFLM over kgsim tokens) implement them and, on the same facts and
prompts, give the same answers, correctness, hidden states and SliCK categories through the one
shared stage. A smoke world and a GPT fine-tuned for a few seconds on some of its facts, one thread.
"""
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch

from kgsim.core.config import TrainConfig, load_config
from kgsim.core.known import categories
from kgsim.core.rng import stream
from kgsim.nn.model import build_model, export_hf
from kgsim.nn.probe import KgsimLM, exemplar_batches
from kgsim.nn.train import train
from kgsim.study.lm import FineTuner, LanguageModel, answer_and_score, correct, slick
from kgsim.study.stages import KgsimFineTuner, qa_rows
from kgsim.world.build import build_world
from kgsim.world.prompts import zero_shot
from kgsim.world.splits import probe_candidates
from llm_bridge.finetune import FinetuneConfig, HFFineTuner
from llm_bridge.kgsim_tokens import KgsimTokens
from llm_bridge.lm import HFLM
from llm_bridge.models import load_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(world, facts, KgsimLM, HFLM, format): a GPT that learnt half of `facts` and its HF export."""
    d = tmp_path_factory.mktemp("lm")
    cfg = load_config("smoke")
    world = build_world(cfg)
    kg, vocab = world.kg, world.corpus.vocab
    facts = probe_candidates(kg, world.splits)[:96]
    gpt = build_model(cfg.model, vocab.size, seed=0)
    tcfg = TrainConfig(steps=150, batch_size=16, lr=1e-2, warmup_steps=10, bf16=False, log_every=50, eval_every=150,
                       ckpt_every=150, threads=1)
    train(gpt, qa_rows(world, facts[:48]), tcfg, d / "train", seed=0, name="lm-protocol")
    gpt.eval()
    export_hf(gpt, vocab.tokens, d / "hf", pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    hf, tok = load_model(d / "hf", dtype="float32", device="cpu")
    fmt = KgsimTokens(kg, vocab)
    return world, facts, KgsimLM(gpt, kg, vocab), HFLM(hf, tok, fmt, batch_size=256), fmt


def test_both_adapters_and_both_fine_tuners_satisfy_the_protocols(pair):
    _, _, klm, hlm, _ = pair
    assert isinstance(klm, LanguageModel) and isinstance(hlm, LanguageModel)
    assert not isinstance(object(), LanguageModel)
    cfg = load_config("smoke")
    assert isinstance(KgsimFineTuner(cfg, pair[0], Path("con.safetensors"), "finetune-known"), FineTuner)
    assert isinstance(HFFineTuner("model-dir", FinetuneConfig()), FineTuner)


def test_same_answers_correctness_and_hidden_states(pair):
    world, facts, klm, hlm, fmt = pair
    kg, vocab = world.kg, world.corpus.vocab
    examples = [fmt.example(i) for i in facts]
    k_ans, k_ok = answer_and_score(klm, zero_shot(vocab, kg.s[facts], kg.r[facts]), facts)
    h_ans, h_ok = answer_and_score(hlm, fmt.zero_shot(examples), examples)
    assert [vocab.tokens[a] for a in k_ans] == h_ans
    assert k_ok.tolist() == h_ok.tolist()
    assert 0 < k_ok.sum() < len(facts)                               # it knows some facts, not all
    assert k_ok[:48].mean() > k_ok[48:].mean()                       # mostly the ones it was trained on
    h_k = klm.hidden(zero_shot(vocab, kg.s[facts], kg.r[facts]))
    h_h = hlm.hidden(fmt.zero_shot(examples))
    assert h_k.shape == h_h.shape and np.allclose(h_k, h_h, atol=1e-5)
    # scoring is the family's rule: any true answer of (s, r), specials wrong
    assert correct(klm, zero_shot(vocab, kg.s[facts], kg.r[facts]), facts).tolist() == k_ok.tolist()
    assert not hlm.score(["<eos>"], examples[:1]).any()


@pytest.mark.parametrize("n_shots, n_sets, n_samples", [(1, 3, 0), (1, 1, 8)])
def test_same_slick_rates_and_categories(pair, n_shots, n_sets, n_samples):
    """Greedy over several exemplar sets (MaybeKnown appears), and one set with samples at a high
    temperature (WeaklyKnown appears; one set, so both draw from one generator in the same order)."""
    world, facts, klm, hlm, fmt = pair
    kg, vocab = world.kg, world.corpus.vocab
    sets = list(exemplar_batches(kg, vocab, facts, world.splits.demos, n_shots, n_sets, stream(0, "test/exemplars")))
    examples = [fmt.example(i) for i in facts]
    texts = [fmt.few_shot(examples, [[fmt.example(d) for d in row] for row in b.induced]) for b in sets]
    kw = {"n_samples": n_samples, "temperature": 3.0, "seed": 0, "stream": "test/samples"}
    k, h = slick(klm, sets, facts, **kw), slick(hlm, texts, examples, **kw)
    assert k.p_greedy.tolist() == h.p_greedy.tolist() and k.p_sample.tolist() == h.p_sample.tolist()
    assert k.category.tolist() == h.category.tolist() == categories(k.p_greedy, k.p_sample).tolist()
    assert [[vocab.tokens[a] for a in g] for g in k.greedy] == h.greedy
    assert len(set(k.category.tolist())) >= 2
