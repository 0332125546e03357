"""`kgsim bridge ACTION` (issue 15): per-action flags, `--config`, `config show`, TOML presets with
the gpu preset and its keys, `kgsim --version`; models by hub id from the local cache only,
`device_map`, `stop_strings`, progress bars on a terminal only, and a bridge run's figures and
provenance."""
import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

import llm_bridge.generation as gen
from kgsim.cli import main
from kgsim.core.config import ConfigError, apply_table
from kgsim.core.version import __version__
from llm_bridge.config import BridgeConfig, bridge_config, preset_names, to_toml
from llm_bridge.datasets import QAExample
from llm_bridge.finetune import CHECKPOINT_INFO, FinetuneConfig, finetune, parameter_count, resolve_method
from llm_bridge.models import (
    ModelDirError,
    build_tokenizer,
    check_model_dir,
    load_model,
    model_revision,
    pretrain,
    save_model,
    tiny_llama,
)
from llm_bridge.pipeline import provenance

torch.set_num_threads(1)

TEXTS = ["Q: Where was Kato born?\nA: Sabi\n", "Q: Who founded Mirelu?\nA: Trevasu\n",
         "Q: Where was Mira born?\nA: Olen\n", "Kato was born in Sabi.\nMira was born in Olen.\n"] * 8
PROMPTS = ["Q: Where was Kato born?\nA:", "Q: Who founded Mirelu?\nA:", "Q: Where was Mira born?\nA:", "Kato",
           "Q: Where", "Mira was"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Llama pretrained for seconds on Q/A lines, so that it answers and then writes newlines."""
    tok = build_tokenizer(TEXTS, vocab_size=300)
    model = tiny_llama(tok, d_model=32, n_layers=2, n_heads=2, n_ctx=64, seed=0)
    pretrain(model, tok, TEXTS, steps=60, batch_size=8, lr=1e-2, seed=0)
    return save_model(model, tok, tmp_path_factory.mktemp("tiny") / "m")


def _err(capsys, *argv) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["bridge", "run"], ["bridge", "agree"], ["bridge", "pretrain"],
                                  ["bridge", "config", "show"]])
def test_every_action_has_its_help_with_an_example(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and f"example:\n  kgsim {' '.join(argv)} " in out


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"kgsim {__version__}"


@pytest.mark.parametrize("action, flag", [("run", ["--vocab-size", "4096"]), ("run", ["--device", "cuda"]),
                                          ("run", ["--k-shots", "1"]), ("run", ["--kgsim-model", "x"]),
                                          ("agree", ["--preset", "tiny"]), ("agree", ["--set", "a=1"]),
                                          ("pretrain", ["--k-shots", "1"]), ("pretrain", ["--until", "evaluate"])])
def test_a_flag_the_action_does_not_use_is_one_line(capsys, tmp_path, action, flag):
    code, err = _err(capsys, "bridge", action, "--out", tmp_path / "o", *flag)
    assert code == 2 and err.count("\n") == 1 and flag[0] in err and f"kgsim bridge {action}: error:" in err
    assert not (tmp_path / "o").exists()


def test_run_config_file(capsys, tmp_path):
    code, err = _err(capsys, "bridge", "run", "--model", tmp_path, "--data", "synthetic", "--data-path", tmp_path,
                     "--config", tmp_path / "missing.toml", "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1 and "missing.toml" in err and "no such file" in err
    assert not (tmp_path / "o").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text("[finetune]\nlr = -1\n")
    code, err = _err(capsys, "bridge", "run", "--model", tmp_path, "--data", "synthetic", "--data-path", tmp_path,
                     "--config", bad, "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1 and "finetune.lr = -1" in err
    bad.write_text("[finetune]\nlrr = 1\n")
    with pytest.raises(ConfigError, match="bad.toml: unknown key 'finetune.lrr'"):
        bridge_config(config_file=bad)


def test_config_show_prints_toml_that_config_reads_back(capsys, tmp_path):
    assert main(["bridge", "config", "show", "--preset", "gpu", "--set", "finetune.lr=2e-4"]) == 0
    text = capsys.readouterr().out
    (tmp_path / "c.toml").write_text(text)
    cfg = bridge_config("default", config_file=tmp_path / "c.toml")
    assert cfg == bridge_config("gpu", ["finetune.lr=2e-4"]) and to_toml(cfg) == text
    assert bridge_config("tiny", ["probe.n_samples=3"], tmp_path / "c.toml").probe.n_samples == 3   # --set last
    code, err = _err(capsys, "bridge", "config", "show", "--preset", "huge")
    assert code == 2 and "preset = 'huge'" in err and "gpu" in err


# --------------------------------------------------------------------------------------------
# Presets and the new keys
# --------------------------------------------------------------------------------------------

OLD_TINY = {  # the Python-dict preset the TOML file replaced
    "data": {"n_ft_relations": 2, "ft_size": 8, "n_candidates": 48, "dev_size": 8, "test_size": 8,
             "n_demo_pool": 4, "two_hop_size": 8, "sim_buckets": 2},
    "probe": {"n_shots": 2, "n_exemplar_sets": 2, "n_samples": 2, "max_new_tokens": 8, "batch_size": 64},
    "finetune": {"max_steps": 12, "batch_size": 4, "lr": 1e-3, "eval_every": 3, "max_new_tokens": 8,
                 "fit_eval_size": 16, "eval_batch_size": 64},
    "eval": {"k_shots": [1, 2], "cot_shots": 1, "max_new_tokens": 8, "cot_max_new_tokens": 40, "batch_size": 64},
}


def test_presets_are_toml_package_data():
    assert {"default", "tiny", "gpu"} <= set(preset_names())
    assert bridge_config("tiny") == apply_table(BridgeConfig, BridgeConfig(), OLD_TINY)
    assert bridge_config("default") == BridgeConfig()
    gpu = bridge_config("gpu")
    assert gpu.probe.batch_size >= 100 and gpu.eval.batch_size >= 100 and gpu.finetune.eval_batch_size >= 100
    assert gpu.finetune.method == "auto" and gpu.finetune.lora_min_params == 3_000_000_000
    assert gpu.finetune.bf16 and gpu.finetune.master_dtype == "float32" and gpu.runtime.dtype == "bfloat16"


@pytest.mark.parametrize("override, message", [
    ("finetune.method=half", "finetune.method = 'half': choose one of ['full', 'lora', 'auto']"),
    ("finetune.master_dtype=bfloat16", "finetune.master_dtype = 'bfloat16': choose one of ['runtime', 'float32']"),
    ("finetune.lora_min_params=0", "finetune.lora_min_params = 0: must be >= 1"),
    ("runtime.device_map=gpu0", "runtime.device_map = 'gpu0': choose one of"),
])
def test_new_keys_are_validated(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        bridge_config("gpu", [override])


def test_auto_method_is_lora_from_the_threshold_and_checkpoints_are_adapters(tiny, tmp_path):
    model, _ = load_model(tiny, dtype="float32", device="cpu")
    n = sum(p.numel() for p in model.parameters())
    assert parameter_count(tiny) == n
    assert resolve_method(FinetuneConfig(method="auto"), tiny) == "full"                 # n << 3B
    assert resolve_method(FinetuneConfig(method="auto", lora_min_params=n), tiny) == "lora"
    ex = [QAExample(f"e{i}", q.split("\n")[0][3:], [q.split("A: ")[1].strip()], "r") for i, q in enumerate(TEXTS[:3])]
    cfg = FinetuneConfig(method="auto", lora_min_params=n, master_dtype="float32", max_steps=2, eval_every=1,
                         batch_size=2, lr=1e-3, max_new_tokens=4)
    summary = finetune(tiny, ex, ex, cfg, tmp_path / "ft", dtype="bfloat16")
    assert summary["method"] == "lora"
    for stage in ("es", "con"):
        d = tmp_path / "ft" / stage
        assert json.loads((d / CHECKPOINT_INFO).read_text())["method"] == "lora"
        assert (d / "adapter_model.safetensors").is_file() and not (d / "model.safetensors").exists()
        from safetensors.torch import load_file
        assert {t.dtype for t in load_file(d / "adapter_model.safetensors").values()} == {torch.float32}


# --------------------------------------------------------------------------------------------
# Models: hub ids from the local cache, device_map; generation: stop_strings, progress
# --------------------------------------------------------------------------------------------

def _fake_cache(tiny, root, repo="org/tiny-llama", commit="0123456789abcdef0123456789abcdef01234567"):
    """A Hugging Face hub cache as huggingface_hub lays it out: refs/main -> snapshots/<commit>/."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in tiny.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    return snap


def test_hub_id_resolves_from_the_local_cache_only(tiny, tmp_path, monkeypatch):
    import huggingface_hub.constants

    snap = _fake_cache(tiny, tmp_path / "hub")
    assert check_model_dir("org/tiny-llama", cache_dir=tmp_path / "hub") == snap.resolve()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model, tok = load_model("org/tiny-llama", dtype="float32", device="cpu")
    assert model.config.vocab_size == len(tok)
    rev = model_revision(check_model_dir("org/tiny-llama"))
    assert rev["hub_id"] == "org/tiny-llama" and rev["revision"] == snap.name and len(rev["config_sha256"]) == 64
    with pytest.raises(ModelDirError, match="'org/absent' does not exist, and no Hugging Face cache holds it"):
        check_model_dir("org/absent")
    assert model_revision(tiny)["hub_id"] is None


def test_device_map_is_passed_through(tiny, monkeypatch):
    from transformers import AutoModelForCausalLM

    seen = []
    real = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: seen.append(k) or real(*a, **k))
    model, _ = load_model(tiny, dtype="float32", device="cpu", device_map="auto")
    load_model(tiny, dtype="float32", device="cpu")
    assert seen[0]["device_map"] == "auto" and "device_map" not in seen[1]
    assert next(model.parameters()).device.type == "cpu"


def test_stop_strings_give_the_results_of_the_decoding_criterion(tiny, monkeypatch):
    """generate's stop_strings and the old per-step decoding stop (_StopAtNewline) give equal answers,
    greedy and sampled; some continuations do stop at a newline before the token budget."""
    model, tok = load_model(tiny, dtype="float32", device="cpu")
    assert gen._STOP_STRINGS
    prompts = PROMPTS * 3
    runs = {}
    for flag in (True, False):
        monkeypatch.setattr(gen, "_STOP_STRINGS", flag)
        runs[flag] = [gen.generate(model, tok, prompts, max_new_tokens=12, batch_size=5, temperature=t, seed=1)
                      for t in (0.0, 1.0)]
    assert runs[True] == runs[False]
    raw = gen.generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=5)
    assert any(r for r in raw)
    seqs = model.generate(**tok(PROMPTS[:1], return_tensors="pt"), max_new_tokens=12, do_sample=False,
                          stop_strings=["\n"], tokenizer=tok, pad_token_id=tok.pad_token_id)
    assert tok.decode(seqs[0, -1:]).endswith("\n") and seqs.shape[1] < len(tok(PROMPTS[0])["input_ids"]) + 12


def test_progress_bars_only_on_a_terminal(tiny, capsys):
    model, tok = load_model(tiny, dtype="float32", device="cpu")
    gen.generate(model, tok, PROMPTS, max_new_tokens=2, progress=True)
    assert capsys.readouterr().err == ""                     # captured stderr is not a terminal


def test_provenance_records_date_device_and_model(tiny, tmp_path):
    snap = _fake_cache(tiny, tmp_path / "hub")
    env = provenance(snap, bridge_config(overrides=["runtime.device=cpu"]).runtime)
    assert {"git_commit", "git_dirty", "argv", "torch", "transformers", "date", "device", "gpus",
            "world_size"} <= set(env)
    assert env["device"] == "cpu" and env["date"].endswith("+00:00")
    assert env["model"]["hub_id"] == "org/tiny-llama" and env["model"]["revision"] == snap.name


# --------------------------------------------------------------------------------------------
# A bridge run end to end: kgsim run's figures and the provenance
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A verbalised 60-entity world and a tiny Llama pretrained on it (as test_bridge_e2e's)."""
    from kgsim.core.config import GraphConfig
    from kgsim.core.rng import stream
    from kgsim.world.graph import generate
    from llm_bridge.verbalize import Verbalizer, name_graph, pretraining_documents

    d = tmp_path_factory.mktemp("world")
    gcfg = GraphConfig(n_entities=60, n_types=2, n_relations=4, n_composed=1, mean_exposure=6.0,
                       never_exposed_share=0.25)
    kg = name_graph(generate(gcfg, stream(0, "graph")), stream(0, "names"))
    docs = pretraining_documents(kg, Verbalizer.from_graph(kg), stream(0, "corpus"), qa_subject_share=0.8)
    tok = build_tokenizer(docs, 400)
    model = tiny_llama(tok, d_model=64, n_layers=2, n_heads=4, n_ctx=256, seed=0)
    pretrain(model, tok, docs, steps=200, batch_size=16, lr=3e-3, seed=0)
    save_model(model, tok, d / "base")
    kg.save(d / "graph.npz")
    return d


SETS = ["probe.chunk_size=8", "runtime.device=cpu", "runtime.dtype=float32"]   # SliCK chunks to share


@pytest.mark.slow
def test_bridge_run_writes_kgsim_figures_and_provenance(world, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["bridge", "run", "--model", world / "base", "--data", "synthetic", "--data-path", world / "graph.npz",
            "--preset", "tiny", *[x for s in SETS for x in ("--set", s)], "--out", out]
    assert main([str(a) for a in argv]) == 0
    capsys.readouterr()
    figs = {p.name for p in (out / "figures").glob("*.png")}
    assert figs == {"gap_by_split.png", "gap_vs_k.png", "gap_es_vs_con.png", "direct_vs_cot.png", "fitting_speed.png"}
    report = (out / "report.md").read_text()
    assert all(f"(figures/{f})" in report for f in figs)
    for name in ("run.json", "results.json"):
        env = json.loads((out / name).read_text())["environment"]
        assert env["device"] == "cpu" and env["date"] and env["argv"] and "git_dirty" in env
        assert env["model"]["config_sha256"] and env["model"]["hub_id"] is None


RANK_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from llm_bridge.config import bridge_config
from llm_bridge.pipeline import run_bridge
model, graph, out = sys.argv[1:4]
run_bridge(model, "synthetic", graph, bridge_config("tiny", sys.argv[4:]), out, progress=False)
"""


@pytest.mark.slow
def test_two_processes_share_slick_and_evaluation_with_one_process_results(world, tmp_path):
    """Two CPU processes (gloo, as accelerate launch starts them): SliCK chunks and evaluation
    checkpoints dealt between the ranks and gathered give one process's categories, splits and
    edge sets (fine-tuning, data-parallel, is reused from the one-process run)."""
    import shutil
    import socket
    import subprocess
    import sys

    from llm_bridge.pipeline import run_bridge

    one = tmp_path / "one"
    res1 = run_bridge(world / "base", "synthetic", world / "graph.npz", bridge_config("tiny", SETS), one,
                      progress=False)
    two = tmp_path / "two"
    for name in ("ft-known", "ft-unknown"):                     # the fine-tuned checkpoints, cached
        shutil.copytree(one / name, two / name)
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**os.environ, "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        procs.append(subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(world / "base"), str(world / "graph.npz"),
                                       str(two), *SETS], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    logs = [p.communicate(timeout=600)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    res2 = json.loads((two / "results.json").read_text())
    assert res2["environment"]["world_size"] == 2
    for key in ("counts", "accuracy", "gap"):
        assert res2[key] == res1[key], key
    slick = [json.loads((d / "slick.json").read_text())["entries"] for d in (one, two)]
    assert slick[0] == slick[1] and len(next(iter(slick[0].values()))["chunks"]) >= 3        # rounds of 2
    assert json.loads((one / "splits.json").read_text()) == json.loads((two / "splits.json").read_text())
    for f in sorted((one / "edges").glob("*.json")):
        a, b = (json.loads(p.read_text()) for p in (f, two / "edges" / f.name))
        assert a["correct"] == b["correct"] and a["meta"]["predictions"] == b["meta"]["predictions"], f.name
