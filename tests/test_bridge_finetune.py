"""The Early Stop callback: the best dev step's weights are kept in memory and written once, when
training ends; the model keeps its last weights (Con.)."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

from types import SimpleNamespace

import pytest
import torch

import llm_bridge.finetune as ft
from llm_bridge.datasets import QAExample
from llm_bridge.finetune import DevAccuracyCallback, FinetuneConfig, load_checkpoint
from llm_bridge.models import build_tokenizer, tiny_llama

torch.set_num_threads(1)


@pytest.mark.parametrize("accs, best", [([0.1, 0.5, 0.5, 0.3], 2), ([0.1, 0.2, 0.2, 0.4], 4)])
def test_es_weights_are_the_earliest_best_and_written_once(monkeypatch, tmp_path, accs, best):
    tok = build_tokenizer(["Q: Where was Kato born?\nA: Sabi\n"] * 4, vocab_size=270)
    model = tiny_llama(tok, d_model=16, n_layers=1, n_heads=2, seed=0)
    dev = [QAExample("d", "Where was Kato born?", ["Sabi"], "birthplace")]
    scores = iter(accs)
    monkeypatch.setattr(ft, "accuracy", lambda *a, **k: next(scores))
    writes = []
    save = ft.save_checkpoint
    monkeypatch.setattr(ft, "save_checkpoint", lambda *a, **k: writes.append(a[3]) or save(*a, **k))
    cb = DevAccuracyCallback(dev, tok, FinetuneConfig(eval_every=1), tmp_path / "es", {"method": "full"})
    weights = {}
    for step in range(1, len(accs) + 1):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * step)                                  # "training"
        weights[step] = {k: v.clone() for k, v in model.state_dict().items()}
        cb.on_step_end(None, SimpleNamespace(global_step=step, epoch=step, is_world_process_zero=True), None,
                       model=model)
    state = SimpleNamespace(global_step=len(accs), epoch=len(accs), is_world_process_zero=True)
    cb.on_train_end(None, state, None, model=model)
    assert len(writes) == 1 and writes[0]["step"] == best == cb.best_step and writes[0]["dev_acc"] == max(accs)
    assert [h["dev_acc"] for h in cb.history] == accs
    es, _ = load_checkpoint(tmp_path / "es", dtype="float32", device="cpu")
    for k, v in es.state_dict().items():
        assert torch.equal(v, weights[best][k]), k                   # the best step's weights, bit for bit
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[len(accs)][k]), k              # the model keeps its last weights
