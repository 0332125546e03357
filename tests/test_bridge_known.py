"""SliCK categorisation: the category rule, exemplar sets, P_correct bookkeeping, the cache."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

import llm_bridge.known as known
import llm_bridge.prompts as bridge_prompts
from kgsim.core.config import ConfigError
from kgsim.core.known import category
from llm_bridge.datasets import QAExample
from llm_bridge.known import SliCKConfig, cached_categories, categorise, category_counts, exemplar_sets
from llm_bridge.models import build_tokenizer, tiny_llama

torch.set_num_threads(1)


def _ex(i: int, rel: str = "capital") -> QAExample:
    return QAExample(f"{rel}/{i}", f"What is the capital of Land{i}?", [f"City{i}"], rel)


POOL = {"capital": [_ex(100 + i) for i in range(6)], "author": [_ex(200 + i, "author") for i in range(6)]}


@pytest.mark.parametrize("pg, ps, cat", [(1.0, 0.0, "HighlyKnown"), (1.0, 1.0, "HighlyKnown"), (0.1, 0.0, "MaybeKnown"),
                                         (0.9, 1.0, "MaybeKnown"), (0.0, 0.01, "WeaklyKnown"), (0.0, 0.0, "Unknown")])
def test_category_rule(pg, ps, cat):
    assert category(pg, ps) == cat


def test_exemplar_sets_are_seeded_and_exclude_the_query():
    cfg = SliCKConfig(n_shots=2, n_exemplar_sets=5)
    a = exemplar_sets(POOL, ["capital", "author"], cfg, seed=0)
    assert a == exemplar_sets(POOL, ["author", "capital"], cfg, seed=0)
    assert a != exemplar_sets(POOL, ["capital", "author"], cfg, seed=1)
    assert all(len(s) == 3 and {e.relation for e in s} == {r} for r, sets in a.items() for s in sets)
    q = POOL["capital"][0]
    assert all(q not in known._shots(q, s, 2) and len(known._shots(q, s, 2)) == 2 for s in a["capital"])
    with pytest.raises(ValueError, match="relation 'capital': 6 demonstrations; 6-shot probing needs 7"):
        exemplar_sets(POOL, ["capital"], SliCKConfig(n_shots=6), seed=0)


def test_config_validation_names_key_and_value():
    with pytest.raises(ConfigError, match=r"probe.temperature = 0.0: must be > 0"):
        SliCKConfig(temperature=0.0).validate()
    with pytest.raises(ConfigError, match=r"probe.match = 'fuzzy'"):
        SliCKConfig(match="fuzzy").validate()


def _patch(monkeypatch, oracle) -> None:
    """The text format generates through generation.generate (greedy) and generation.sample
    (each prompt's samples), as llm_bridge.prompts imports them: route both to `oracle`, samples
    as the prompt repeated."""
    monkeypatch.setattr(bridge_prompts, "generate", oracle)
    monkeypatch.setattr(bridge_prompts, "sample", lambda model, tok, texts, *, n_samples, **kw: oracle(
        model, tok, [t for t in texts for _ in range(n_samples)], **kw))


def test_p_correct_bookkeeping_with_an_oracle(monkeypatch, tmp_path):
    """A stand-in generator: example i answers correctly under greedy decoding for the first
    `greedy_ok[i]` exemplar sets, and in `sample_ok[i]` of the sampled calls."""
    examples = [_ex(i) for i in range(4)]
    greedy_ok, sample_ok = [3, 1, 0, 0], [0, 0, 2, 0]          # with 3 sets, 4 samples per set
    calls = []

    def oracle(model, tok, texts, *, temperature=0.0, **kw):
        calls.append(temperature)
        per_ex = len(texts) // len(examples)
        out = []
        for j, _ in enumerate(texts):
            i, k = divmod(j, per_ex)
            ok = k < (greedy_ok[i] if temperature == 0 else sample_ok[i])
            out.append(f" City{i}" if ok else " Nowhere")
        return out

    _patch(monkeypatch, oracle)
    cfg = SliCKConfig(n_shots=2, n_exemplar_sets=3, n_samples=4)
    res = categorise(None, None, examples, POOL, cfg, seed=0, model_key="m", cache_path=tmp_path / "slick.json")
    assert [res[e.id].category for e in examples] == ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
    assert res["capital/1"].p_greedy == pytest.approx(1 / 3) and res["capital/2"].p_sampled == pytest.approx(2 / 12)
    assert res["capital/0"].known and not res["capital/3"].known
    assert category_counts(res) == {"HighlyKnown": 1, "MaybeKnown": 1, "WeaklyKnown": 1, "Unknown": 1}
    assert calls == [0.0, 0.5]                                   # one greedy and one sampled pass
    # cached: no generation, same results; another config or model key misses
    assert categorise(None, None, examples, POOL, cfg, seed=0, model_key="m", cache_path=tmp_path / "slick.json") == res
    assert len(calls) == 2
    assert cached_categories(examples, POOL, cfg, seed=0, model_key="m", cache_path=tmp_path / "slick.json") == res
    assert cached_categories(examples, POOL, cfg, seed=0, model_key="other", cache_path=tmp_path / "slick.json") is None
    assert cached_categories(examples, POOL, SliCKConfig(n_shots=1, n_exemplar_sets=3, n_samples=4), seed=0,
                             model_key="m", cache_path=tmp_path / "slick.json") is None


def test_resume_from_partial_cache(monkeypatch, tmp_path):
    examples = [_ex(i) for i in range(5)]
    cfg = SliCKConfig(n_shots=1, n_exemplar_sets=2, n_samples=1, chunk_size=2)
    seen = []

    def oracle(model, tok, texts, **kw):
        seen.extend(texts)
        return [" City0"] * len(texts)

    _patch(monkeypatch, oracle)
    path = tmp_path / "slick.json"
    full = categorise(None, None, examples, POOL, cfg, cache_path=path)
    import json

    data = json.loads(path.read_text())
    entry = next(iter(data["entries"].values()))
    del entry["chunks"]["1"]                                  # as if killed after chunks 0 and 2
    path.write_text(json.dumps(data))
    n_before = len(seen)
    again = categorise(None, None, examples, POOL, cfg, cache_path=path)
    assert again == full
    assert len(seen) - n_before == 2 * 2 * 2                  # only chunk 1 (2 examples x 2 sets x greedy+1 sample)


def test_categorise_a_real_tiny_model(tmp_path):
    texts = [f"Q: {e.question}\nA: {e.answer}\n" for ds in POOL.values() for e in ds]
    tok = build_tokenizer(texts, vocab_size=300)
    model = tiny_llama(tok, d_model=16, n_layers=1, n_heads=2, seed=0)
    examples = [_ex(i) for i in range(3)] + [_ex(i, "author") for i in range(2)]
    cfg = SliCKConfig(n_shots=2, n_exemplar_sets=2, n_samples=2, max_new_tokens=4)
    state = torch.get_rng_state()
    res = categorise(model, tok, examples, POOL, cfg, seed=0, model_key="tiny", cache_path=tmp_path / "c.json")
    assert torch.equal(state, torch.get_rng_state())
    assert set(res) == {e.id for e in examples}
    for r in res.values():
        assert 0 <= r.p_greedy <= 1 and 0 <= r.p_sampled <= 1 and len(r.greedy) == 2
        assert r.category == category(r.p_greedy, r.p_sampled)
    assert categorise(model, tok, examples, POOL, cfg, seed=0, model_key="tiny", cache_path=tmp_path / "c.json") == res
