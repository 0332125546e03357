"""The command line: config resolution, bad input (one line, exit 2, nothing written), real-KG TSVs."""
import numpy as np
import pytest

from kgsim.cli import main
from kgsim.cli.base import COMMANDS
from kgsim.core.config import ConfigError, load_config, to_toml
from kgsim.core.rng import stream
from kgsim.world.graph import GraphFileError, load_tsv

FIXTURE = "tests/fixtures/multi_answer_kg.tsv"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv", [[], *[[name] for name in COMMANDS], ["bridge", "run"], ["bridge", "agree"], ["bridge", "pretrain"]])
def test_every_help_prints(capsys, argv):
    """``kgsim --help`` and every command's ``--help`` print and exit 0 (a "95% interval" in a help
    string once made argparse raise TypeError)."""
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    out, _ = capsys.readouterr()
    assert e.value.code == 0 and "usage: kgsim" in out


def test_config_show_prints_resolved_toml(capsys):
    code, out, err = run(capsys, "config", "show", "--preset", "smoke", "--set", "pretrain.lr=0.01",
                         "--set", "graph.generator=uniform")
    assert code == 0 and 'generator = "uniform"' in out and "lr = 0.01" in out
    assert to_toml(load_config("smoke", overrides=["pretrain.lr=0.01", "graph.generator=uniform"])) == out


@pytest.mark.parametrize("override, key", [
    ("graph.n_entitis=5", "graph.n_entitis"),                  # unknown key
    ("graph.zipf_exponent=fast", "graph.zipf_exponent"),      # not a number
    ("graph.n_entities=-4", "graph.n_entities"),              # negative size
    ("model.n_heads=3", "model.n_heads"),                     # does not divide d_model
    ("prompts.k_shots=[1, 99]", "prompts.k_shots"),            # more demonstrations than reserved
    ("splits.test_size=100000", "splits.test_size"),          # more held-out facts than exist
    ("pretrain.lr=nan", "pretrain.lr"),
])
def test_bad_config_is_one_line_exit_2_and_no_output(capsys, tmp_path, override, key):
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "graph", "--preset", "smoke", "--set", override, "--out", str(out_dir))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("kgsim: error: ") and key in err
    assert "Traceback" not in err and not out_dir.exists()


def test_unknown_preset_and_missing_config_file(capsys, tmp_path):
    code, _, err = run(capsys, "config", "show", "--preset", "nope")
    assert code == 2 and "preset = 'nope'" in err
    code, _, err = run(capsys, "config", "show", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "--config" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[graph]\nn_entities = 'many'\n")
    code, _, err = run(capsys, "config", "show", "--config", str(bad))
    assert code == 2 and "graph.n_entities = 'many'" in err


def test_graph_command_writes_world_and_reuses_it(capsys, tmp_path):
    out_dir = tmp_path / "w"
    code, out, _ = run(capsys, "graph", "--preset", "smoke", "--out", str(out_dir))
    assert code == 0
    for f in ("graph.npz", "splits.npz", "corpus.npz", "facts.tsv", "summary.json", "summary.png", "config.toml"):
        assert (out_dir / f).is_file(), f
    code, out, _ = run(capsys, "graph", "--preset", "smoke", "--out", str(out_dir))
    assert code == 0 and "up to date" in out
    code, _, err = run(capsys, "graph", "--preset", "smoke", "--set", "seed=5", "--out", str(out_dir))
    assert code == 2 and "holds other files" in err


def test_multi_answer_tsv_loads_and_any_answer_counts():
    kg = load_tsv(FIXTURE, rng=stream(0, "graph"))
    names = {n: i for i, n in enumerate(kg.entity_names)}
    lang = kg.relation_names.index("official_language")
    answers = sorted(kg.entity_names[a] for a in kg.answers(names["Belgium"], lang))
    assert answers == ["Dutch", "French", "German"]
    guess = np.array([names["Dutch"], names["German"], names["Paris"]])
    ok = kg.is_correct(np.full(3, names["Belgium"]), np.full(3, lang), guess)
    assert ok.tolist() == [True, True, False]
    assert (kg.n_answers() > 1).sum() == 8      # Belgium: 3 languages; German: 3 countries; Dutch: 2


def test_real_kg_runs_through_kgsim_graph(capsys, tmp_path):
    """A TSV graph with multi-answer queries (names with spaces) goes through `kgsim graph`."""
    from kgsim.core.config import GraphConfig
    from kgsim.world.graph import generate

    kg = generate(GraphConfig(n_entities=400, n_types=1, n_relations=6, n_composed=0), stream(1, "graph"))
    tsv = tmp_path / "real.tsv"
    kg.to_tsv(tsv)
    extra = [f"e{s} the entity\tr{r}\te{(a + 1) % 400} the entity" for s, r, a in zip(kg.s[:40], kg.r[:40], kg.a[:40])]
    lines = [f"{h} the entity\t{r}\t{t} the entity" for h, r, t in (l.split("\t") for l in tsv.read_text().splitlines())]
    tsv.write_text("\n".join(lines + extra) + "\n")
    out_dir = tmp_path / "real"
    code, out, err = run(capsys, "graph", "--preset", "smoke", "--out", str(out_dir),
                         "--set", "graph.generator=tsv", "--set", f"graph.tsv_path='{tsv}'")
    assert code == 0, err
    import json
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["graph"]["multi_answer_queries"] == 40
    assert summary["graph"]["n_facts"] == kg.n_facts + 40


@pytest.mark.parametrize("content, message", [
    ("a\tb\n", "expected 3 tab-separated columns"),
    ("a\tb\tc\td\n", "expected 3 tab-separated columns"),
    ("", "empty file"),
    ("\n\n", "empty file"),
    ("a\tr\tb\nc\tr\td\na\tr\tb\n", "duplicate of line 1"),
])
def test_malformed_tsv(capsys, tmp_path, content, message):
    f = tmp_path / "kg.tsv"
    f.write_text(content)
    with pytest.raises(GraphFileError, match=message):
        load_tsv(f, rng=stream(0, "graph"))
    out_dir = tmp_path / "out"
    code, _, err = run(capsys, "graph", "--preset", "smoke", "--set", "graph.generator=tsv",
                       "--set", f"graph.tsv_path='{f}'", "--out", str(out_dir))
    assert code == 2 and message in err and err.count("\n") == 1 and not out_dir.exists()


def test_config_error_names_key_and_value():
    with pytest.raises(ConfigError) as e:
        load_config("default", overrides=["corpus.facts_per_doc=0"])
    assert "corpus.facts_per_doc = 0" in str(e.value)


@pytest.mark.slow
def test_pretrain_command_writes_checkpoint_export_plot_and_probe(capsys, tmp_path):
    """`kgsim pretrain` on the smoke preset: every promised file, an HF export that loads offline
    and gives kgsim's logits, and a second call that reuses the cached model."""
    import torch
    from transformers import AutoModelForCausalLM

    from kgsim.nn.model import load_model

    out = tmp_path / "pre"
    code, stdout, err = run(capsys, "pretrain", "--preset", "smoke", "--out", str(out))
    assert code == 0, err
    for f in ("base.safetensors", "metrics.jsonl", "pretraining.png", "probe.json", "summary.json", "hf/config.json"):
        assert (out / f).is_file(), f
    assert "extraction rate" in stdout and "SliCK vs exposure" in stdout
    ours = load_model(out / "base.safetensors").eval()
    hf = AutoModelForCausalLM.from_pretrained(out / "hf", local_files_only=True).eval()
    idx = torch.tensor([[1, 4, 10, 410, 5]])
    with torch.no_grad():
        assert (ours(idx) - hf(idx).logits).abs().max() < 1e-4
    before = (out / "metrics.jsonl").read_bytes()
    code, _, _ = run(capsys, "pretrain", "--preset", "smoke", "--out", str(out))
    assert code == 0 and (out / "metrics.jsonl").read_bytes() == before       # reused, not retrained
    code, _, err = run(capsys, "pretrain", "--preset", "smoke", "--set", "pretrain.steps=7", "--out", str(out))
    assert code == 2 and "another pretraining" in err


# --------------------------------------------------------------------------------------------
# Default folders, one cache, files a collaborator can read
# --------------------------------------------------------------------------------------------

TINY = ["--set", "pretrain.steps=30", "--set", "finetune.steps=10", "--set", "probe.n_exemplar_sets=1"]


def _modes(root):
    """{path relative to root: permission bits} of everything under root (hidden temp files included)."""
    import os
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            out[os.path.relpath(p, root)] = os.stat(p).st_mode & 0o777
    return out


@pytest.fixture
def umask022():
    import os
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.slow
def test_graph_pretrain_run_with_default_folders_share_one_cache(capsys, tmp_path, monkeypatch, umask022):
    """`kgsim graph`, `kgsim pretrain`, `kgsim run` with no --out: three folders that do not collide,
    one world built once, one base model pretrained once, and every file readable by group and others."""
    import os
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "graph", "--preset", "smoke", *TINY)
    assert code == 0, err
    assert "runs/smoke-world/" in out                        # the world is the preset's: no hash in its name
    cache = Path("runs/.kgsim-cache")
    (world,) = cache.glob("world-*")
    stamp = (world / "corpus.npz").stat().st_mtime_ns
    code, out, err = run(capsys, "pretrain", "--preset", "smoke", *TINY)
    assert code == 0, err
    (pre,) = Path("runs").glob("smoke-*-pretrain")           # TINY changes the base model: a hashed name
    assert (pre / "base.safetensors").is_file()
    (base,) = cache.glob("base-*")
    metrics = (base / "train" / "metrics.jsonl").read_bytes()
    code, out, err = run(capsys, "run", "--preset", "smoke", *TINY)
    assert code == 0, err
    (run_dir,) = [p for p in Path("runs").iterdir() if p.name.startswith("smoke-") and p.name.count("-") == 1
                  and p.name != "smoke-world"]
    assert (run_dir / "report.md").is_file() and f"{run_dir}/report.md" in out
    assert list(cache.glob("world-*")) == [world] and (world / "corpus.npz").stat().st_mtime_ns == stamp
    assert list(cache.glob("base-*")) == [base] and (base / "train" / "metrics.jsonl").read_bytes() == metrics
    assert sorted(p.name for p in Path("runs").iterdir()) == sorted(
        [".kgsim-cache", "smoke-world", pre.name, run_dir.name])
    modes = _modes("runs")
    assert modes and all(m & 0o044 == 0o044 for m in modes.values()), \
        {p: oct(m) for p, m in modes.items() if m & 0o044 != 0o044}
    assert all(m & 0o011 == 0o011 for p, m in modes.items() if os.path.isdir(os.path.join("runs", p)))
    temp = [p for p in modes if os.path.basename(p).startswith(".") and os.path.basename(p) != ".kgsim-cache"]
    assert not temp                                                                     # no temp files left


def test_files_follow_the_umask(capsys, tmp_path):
    import os

    from kgsim.core.io import atomic_dir, copy_file, write_json, write_npz, write_text

    for mask, f_mode, d_mode in ((0o022, 0o644, 0o755), (0o027, 0o640, 0o750), (0o077, 0o600, 0o700)):
        old = os.umask(mask)
        try:
            d = tmp_path / f"m{mask:o}"
            write_json(d / "a.json", {"x": 1})
            write_text(d / "b.txt", "x")
            write_npz(d / "c.npz", x=np.zeros(2))
            copy_file(d / "b.txt", d / "e.txt")
            with atomic_dir(d / "sub") as t:
                (t / "f").write_text("x")
            code, _, err = run(capsys, "graph", "--preset", "smoke", "--out", str(d / "world"))
            assert code == 0, err
        finally:
            os.umask(old)
        for p, m in _modes(d).items():
            assert m == (d_mode if (d / p).is_dir() else f_mode), (mask, p, oct(m))


def test_default_folders_never_collide():
    import argparse

    from kgsim.cli.base import default_out

    def out(kind, *overrides, preset="smoke"):
        args = argparse.Namespace(preset=preset, config=None, overrides=list(overrides))
        return str(default_out(args, load_config(preset, overrides=list(overrides)), kind))

    assert out("world") == "runs/smoke-world" and out("pretrain") == "runs/smoke-pretrain" and out("run") == "runs/smoke"
    assert out("run", "run.seeds=[0, 1]") == out("run", "seed=3") == "runs/smoke"   # seeds: the same run
    assert out("world", "pretrain.steps=7") == "runs/smoke-world"          # the world does not change
    other = out("pretrain", "pretrain.steps=7")
    assert other.startswith("runs/smoke-") and other.endswith("-pretrain") and other != "runs/smoke-pretrain"
    assert len({out("run"), out("run", "splits.ft_size=20"), out("run", "finetune.lr=0.1"), out("world"), out("pretrain"),
                out("run", preset="default")}) == 6
