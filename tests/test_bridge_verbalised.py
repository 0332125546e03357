"""kgsim's GPT pretrained on a verbalised graph (llm_bridge.verbalised, `kgsim bridge pretrain`):
packing, QA subjects, the Hugging Face export, caching, bad input, and a bridge run in text form."""
import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch

from kgsim.cli import main
from kgsim.core.config import load_config
from kgsim.core.kg import KnowledgeGraph
from kgsim.core.names import FT_MODELS
from kgsim.core.rng import stream
from kgsim.nn.model import load_model as load_kgsim
from llm_bridge.config import bridge_config
from llm_bridge.generation import ContextLengthError, generate, next_tokens, sample
from llm_bridge.models import build_tokenizer, load_model, load_tokenizer
from llm_bridge.pipeline import run_bridge
from llm_bridge.verbalised import VerbalisedError, document_rows, pretrain_verbalised, verbalised_graph
from llm_bridge.verbalize import VerbalizeError, Verbalizer, pretraining_documents

torch.set_num_threads(1)

# A 60-entity world and a 2-layer d_model-32 GPT with room for the tiny bridge preset's prompts.
OVERRIDES = ["graph.n_entities=60", "graph.n_relations=4", "graph.n_composed=1", "graph.mean_exposure=6",
             "model.d_model=32", "model.n_heads=2", "model.n_layers=2", "model.n_ctx=192",
             "pretrain.steps=120", "pretrain.batch_size=16", "pretrain.ckpt_every=40", "pretrain.eval_every=40"]


def _cfg(*extra):
    return load_config("smoke", overrides=[*OVERRIDES, *extra])


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    out = tmp_path_factory.mktemp("verbalised") / "p"
    summary = pretrain_verbalised(_cfg(), out, vocab_size=400, device="cpu", probe_facts=64, progress=False,
                                  log=lambda s: None)
    return out, summary


def test_document_rows_pack_every_document_and_pad_only_the_tail():
    kg, qa = verbalised_graph(_cfg())
    vb = Verbalizer.from_graph(kg)
    docs = pretraining_documents(kg, vb, stream(0, "docs"), qa_subjects=qa)
    tok = build_tokenizer(docs, 300)
    rows = document_rows(docs, tok, 33)
    flat = rows.tokens.ravel()
    n = int((flat != 0).sum())
    assert (flat[:n] != 0).all() and (flat[n:] == 0).all()            # padding (id 0) only after the stream
    assert tok.decode(flat[:n].tolist()) == "".join(d + tok.eos_token for d in docs)
    assert not rows.loss_mask[:, 0].any()
    assert np.array_equal(rows.loss_mask[:, 1:], rows.tokens[:, 1:] != 0)


def test_qa_form_only_for_the_given_qa_subjects():
    kg, qa = verbalised_graph(_cfg())
    vb = Verbalizer.from_graph(kg)
    docs = pretraining_documents(kg, vb, stream(0, "docs"), qa_subjects=qa)
    asked = {vb.parse_question(line[3:])[0] for d in docs for line in d.split("\n") if line.startswith("Q: ")}
    assert asked and asked <= set(np.flatnonzero(qa).tolist())
    n_said = sum(len(d.split("\n")) - d.count("Q: ") for d in docs)         # statements + Q/A pairs
    assert n_said == int(kg.exposure.sum())                                # each fact `exposure` times
    with pytest.raises(VerbalizeError, match="qa_subjects"):
        pretraining_documents(kg, vb, stream(0, "docs"), qa_subjects=qa[:-1])


@pytest.mark.slow
def test_export_loads_in_transformers_and_computes_kgsims_function(export):
    out, summary = export
    assert summary["pretrain"]["steps"] == 120 and summary["params"] > 0
    kg = KnowledgeGraph.load(out / "world" / "graph.npz")
    assert kg.entity_names and kg.relation_names                          # the bridge verbalises these
    hf = load_model(out / "hf", dtype="float32", device="cpu")
    hf = hf[0] if isinstance(hf, tuple) else hf
    tok = load_tokenizer(out / "hf")
    ids = torch.tensor([tok("Q: " + Verbalizer.from_graph(kg).question(0, 0) + "\nA:")["input_ids"]])
    gpt = load_kgsim(out / "train" / "con.safetensors")
    with torch.no_grad():
        ours = gpt(ids)
        theirs = hf(input_ids=ids).logits
    assert torch.allclose(ours.float(), theirs, atol=1e-4)
    base = summary["base"]
    assert base["n_facts"] == 64 and sum(b["n"] for b in base["buckets"]) == 64
    assert json.loads((out / "pretrain.json").read_text()) == summary
    assert (out / "pretraining.png").stat().st_size > 1000


@pytest.mark.slow
def test_rerun_is_cached_and_another_config_is_refused(export, tmp_path):
    out, summary = export
    stamp = (out / "train").stat().st_mtime_ns, (out / "hf" / "model.safetensors").stat().st_mtime_ns
    assert pretrain_verbalised(_cfg(), out, vocab_size=400, device="cpu", progress=False) == summary
    assert stamp == ((out / "train").stat().st_mtime_ns, (out / "hf" / "model.safetensors").stat().st_mtime_ns)
    with pytest.raises(VerbalisedError, match="another configuration"):
        pretrain_verbalised(_cfg("pretrain.lr=1e-3"), out, vocab_size=400, device="cpu", progress=False)
    with pytest.raises(VerbalisedError, match="another configuration"):
        pretrain_verbalised(_cfg(), out, vocab_size=500, device="cpu", progress=False)
    # sections that do not shape the base model may change: the finished run is reused
    assert pretrain_verbalised(_cfg("finetune.lr=1e-3"), out, vocab_size=400, device="cpu", progress=False) == summary
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(VerbalisedError, match="not empty"):
        pretrain_verbalised(_cfg(), tmp_path, vocab_size=400, device="cpu", progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_a_prompt_beyond_the_learned_positions_is_a_clear_error(export):
    out, _ = export
    hf = load_model(out / "hf", dtype="float32", device="cpu")
    hf = hf[0] if isinstance(hf, tuple) else hf
    tok = load_tokenizer(out / "hf")
    long = "Q: who?\nA: x\n" * 60
    with pytest.raises(ContextLengthError, match="n_positions = 192"):
        generate(hf, tok, ["Q: who?\nA:", long], max_new_tokens=4)
    with pytest.raises(ContextLengthError, match="n_positions = 192"):
        next_tokens(hf, tok, [long])
    fits = "Q: who?\nA: x\n" * 5
    assert len(generate(hf, tok, [fits], max_new_tokens=4)) == 1
    with pytest.raises(ContextLengthError, match="n_positions = 192"):
        sample(hf, tok, [long], n_samples=2, temperature=1.0, max_new_tokens=4)


@pytest.mark.slow
def test_shared_prefill_sampling_on_a_gpt2_export(export):
    """kgsim exports have learned positions: `sample` must give left-padded rows the positions
    generate gives them; near T = 0 its samples are generate's greedy answers."""
    out, _ = export
    hf = load_model(out / "hf", dtype="float32", device="cpu")
    hf = hf[0] if isinstance(hf, tuple) else hf
    tok = load_tokenizer(out / "hf")
    vb = Verbalizer.from_graph(KnowledgeGraph.load(out / "world" / "graph.npz"))
    prompts = ["Q: " + vb.question(s, r) + "\nA:" if s % 2 else vb.statement(s, r, 0).rsplit(" ", 1)[0]
               for s in range(8) for r in range(2)]
    greedy = generate(hf, tok, prompts, max_new_tokens=6, batch_size=16)
    assert sample(hf, tok, prompts, n_samples=2, temperature=1e-7, max_new_tokens=6, batch_size=8) == \
        [g for g in greedy for _ in range(2)]


@pytest.mark.slow
def test_bridge_runs_in_text_form_on_the_export(export, tmp_path):
    out, _ = export
    cfg = bridge_config("tiny", ["runtime.device=cpu", "runtime.dtype=float32"])
    res = run_bridge(out / "hf", "synthetic", out / "world", cfg, tmp_path / "run", progress=False)
    assert res["counts"]["ft-known"] == res["counts"]["ft-unknown"] > 0
    assert {a["model"] for a in res["accuracy"]} == set(FT_MODELS)
    assert {g["split"] for g in res["gap"]} >= {"id", "2hop"}


def test_cli_pretrain_bad_input_is_one_line(capsys, tmp_path):
    code = main(["bridge", "pretrain", "--preset", "smoke", "--vocab-size", "100", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--vocab-size = 100" in err and not (tmp_path / "o").exists()
    code = main(["bridge", "pretrain", "--preset", "smoke", "--set", "model.d_model=-8", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "model.d_model" in err and not (tmp_path / "o").exists()
    code = main(["bridge", "run", "--data", "synthetic", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "--model is required" in err


@pytest.mark.slow
def test_eval_prompts_that_cannot_fit_stop_the_run_before_fine_tuning(export, tmp_path):
    out, _ = export
    cfg = bridge_config("tiny", ["runtime.device=cpu", "eval.max_new_tokens=190"])
    with pytest.raises(ContextLengthError, match="eval.k_shots, eval.max_new_tokens"):
        run_bridge(out / "hf", "synthetic", out / "world", cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "slick.json").is_file() and not (tmp_path / "run" / "ft-known").exists()
