"""Bad input everywhere: every file kgsim reads (TSV, TOML, results JSON, safetensors, model folders,
EntityQuestions folders) with undecodable bytes, truncation or the wrong type, and every output path
kind (an existing file, an unwritable folder, another command's folder) gives one line naming the
file and the problem, exit 2, and writes nothing. Hypothesis feeds each file reader arbitrary bytes:
only the documented error escapes.

Fuzzing follows the Hypothesis profile (tests/conftest.py): the same examples on every run and
machine, at least 150 per reader; ``HYPOTHESIS_PROFILE=hunt`` draws 2,000 fresh random ones per reader
to look for new failures. Each failure found that way is pinned below as an ``@example``."""
import gzip
import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kgsim.cli import main
from kgsim.core.config import ConfigError, load_config
from kgsim.core.io import InputFileError, check_out_dir, check_safetensors, read_json
from kgsim.nn.model import build_model, load_model, save_weights
from kgsim.study.finish import seed_edges
from kgsim.world.graph import GraphFileError, load_entityquestions, load_tsv
from llm_bridge.models import ModelDirError, check_model_dir

EQ_FIXTURE = Path(__file__).parent / "fixtures" / "entityquestions"
GOOD_TSV = b"a\tr\tb\nb\tr\tc\nc\ts\ta\n"
FUZZ = settings(max_examples=max(150, settings.default.max_examples), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def kgsim(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code, err, *needles):
    assert code == 2, err
    assert err.startswith("kgsim: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert str(n) in err, (n, err)


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """Run in an empty folder, so default outputs (runs/...) land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def only_documented_error(read, path, error):
    """Call `read()` on the fuzzed file at `path`: it succeeds or raises `error` as one line naming
    the file; anything else escapes (the test fails)."""
    try:
        read()
    except error as e:
        assert "\n" not in str(e) and str(path) in str(e)


def unwritable_dir(tmp_path: Path) -> Path:
    """A folder nobody may create files in: /sys for root (root ignores permission bits), else a
    folder without write permission."""
    if os.geteuid() == 0:
        if not Path("/sys").is_dir():
            pytest.skip("no /sys to stand for an unwritable folder")
        return Path("/sys")
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    return d


# --------------------------------------------------------------------------------------------
# TSV graphs
# --------------------------------------------------------------------------------------------

TSV_CASES = {
    "undecodable": (GOOD_TSV + b"\xff\xfe\tr\tc\n", ":4: not UTF-8"),
    "truncated": (GOOD_TSV + b"d\tr", ":4: expected 3 tab-separated columns"),
    "empty tail": (b"a\tr\t\n", ":1: column 3 (tail) empty"),
    "empty head and tail": (b" \tr\t \n", "column 1 (head) and column 3 (tail) empty"),
    "gzip": (gzip.compress(GOOD_TSV), "not UTF-8"),
    "empty": (b"\n\n", "empty file"),
}


@pytest.mark.parametrize("case", sorted(TSV_CASES))
def test_bad_tsv_is_one_line_and_writes_nothing(capsys, cwd, case):
    data, message = TSV_CASES[case]
    f = cwd / "kg.tsv"
    f.write_bytes(data)
    code, _, err = kgsim(capsys, "graph", "--preset", "realkg", "--set", f"graph.tsv_path='{f}'", "--out", cwd / "w")
    assert_one_line(code, err, f, message)
    assert sorted(p.name for p in cwd.iterdir()) == ["kg.tsv"]          # no output, no cache


@pytest.mark.parametrize("kind", ["folder", "missing"])
def test_tsv_path_of_the_wrong_kind(capsys, cwd, kind):
    f = cwd / "kg"
    if kind == "folder":
        f.mkdir()
    code, _, err = kgsim(capsys, "run", "--preset", "realkg", "--set", f"graph.tsv_path='{f}'", "--out", cwd / "r")
    assert_one_line(code, err, f, "is a folder" if kind == "folder" else "no such file")
    assert not (cwd / "r").exists() and not (cwd / ".kgsim-cache").exists()


@FUZZ
@given(data=st.binary(max_size=400) | st.text(alphabet="ab\t\n\r \x00é", max_size=200).map(str.encode))
def test_fuzz_tsv_reader_only_raises_graph_file_error(tmp_path_factory, data):
    f = tmp_path_factory.mktemp("fuzz") / "kg.tsv"
    f.write_bytes(data)
    try:
        kg = load_tsv(f)
    except GraphFileError as e:
        assert "\n" not in str(e) and str(f) in str(e)
        return
    assert kg.n_facts >= 1 and (kg.exposure >= 0).all()


# --------------------------------------------------------------------------------------------
# TOML configs
# --------------------------------------------------------------------------------------------

TOML_CASES = {
    "undecodable": (b"[graph]\nn_entities = 30\xff\n", "not UTF-8"),
    "truncated": (b"[graph]\nn_entities = 300\n[spl", "not valid TOML"),
    "wrong type": (b"graph = 5\n", "graph = 5: must be a table"),
    "wrong value type": (b"[graph]\nn_entities = 'many'\n", "graph.n_entities = 'many'"),
}


@pytest.mark.parametrize("case", sorted(TOML_CASES))
def test_bad_config_file_is_one_line(capsys, cwd, case):
    data, message = TOML_CASES[case]
    f = cwd / "c.toml"
    f.write_bytes(data)
    code, _, err = kgsim(capsys, "graph", "--preset", "smoke", "--config", f, "--out", cwd / "w")
    assert_one_line(code, err, message)
    assert str(f) in err or "graph" in message
    assert sorted(p.name for p in cwd.iterdir()) == ["c.toml"]


def test_config_file_that_is_a_folder(capsys, cwd):
    code, _, err = kgsim(capsys, "config", "show", "--config", cwd)
    assert_one_line(code, err, "--config", "is a folder")


@FUZZ
@given(data=st.binary(max_size=300) | st.text(alphabet="[]=.\"'\n abgrphseed0123_", max_size=120).map(str.encode))
def test_fuzz_config_reader_only_raises_config_error(tmp_path_factory, data):
    f = tmp_path_factory.mktemp("fuzz") / "c.toml"
    f.write_bytes(data)
    try:
        load_config("smoke", f)
    except ConfigError as e:
        assert "\n" not in str(e)


# --------------------------------------------------------------------------------------------
# results.json (kgsim report)
# --------------------------------------------------------------------------------------------

RESULTS = json.dumps({"config": {}, "seeds": [0], "environment": {}, "per_seed": [], "aggregate": {},
                      "observations": {}}).encode()
RESULTS_CASES = {
    "undecodable": (b'{"config": "\xff"}', "not UTF-8"),
    "truncated": (RESULTS[: len(RESULTS) // 2], "not valid JSON"),
    "a list": (b"[1, 2]", "holds a list, not an object"),
    "another tool's": (json.dumps({"schema": 1, "edge_sets": []}).encode(), "no key 'config'"),
    "wrong value type": (RESULTS.replace(b'"per_seed": []', b'"per_seed": 3'), "key 'per_seed' holds int"),
}


@pytest.mark.parametrize("case", sorted(RESULTS_CASES))
def test_bad_results_json_is_one_line_and_renders_nothing(capsys, tmp_path, case):
    data, message = RESULTS_CASES[case]
    (tmp_path / "results.json").write_bytes(data)
    code, _, err = kgsim(capsys, "report", tmp_path)
    assert_one_line(code, err, tmp_path / "results.json", message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


@FUZZ
@given(data=st.binary(max_size=300))
def test_fuzz_results_reader_only_raises_input_file_error(tmp_path_factory, data):
    f = tmp_path_factory.mktemp("fuzz") / "results.json"
    f.write_bytes(data)
    require = {"per_seed": list, "aggregate": dict}
    only_documented_error(lambda: read_json(f, "results", require=require), f, InputFileError)


EDGES_CASES = {
    "undecodable": (b'{"edge_sets": ["\xff"]}', "not UTF-8"),
    "truncated": (b'{"edge_sets": [], "two_h', "not valid JSON"),
    "wrong type": (b'{"edge_sets": {}, "two_hop": {}}', "key 'edge_sets' holds dict"),
    "malformed edge set": (b'{"edge_sets": [{"model": "base"}], "two_hop": {}}', "an edge set or the 2-hop record"),
}


@pytest.mark.parametrize("case", sorted(EDGES_CASES))
def test_bad_edges_json_is_one_line(capsys, tmp_path, case):
    data, message = EDGES_CASES[case]
    (tmp_path / "seed-0").mkdir()
    (tmp_path / "seed-0" / "edges.json").write_bytes(data)
    code, _, err = kgsim(capsys, "check", tmp_path)
    assert_one_line(code, err, tmp_path / "seed-0" / "edges.json", message)


@FUZZ
@given(data=st.binary(max_size=200) | st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(
    st.sampled_from(["edge_sets", "two_hop", "x"]), st.lists(st.dictionaries(st.sampled_from(
        ["model", "prompt", "split", "test_ids", "correct"]), st.integers() | st.text(max_size=3)), max_size=2)
    | st.dictionaries(st.sampled_from(["rows", "hop1"]), st.integers()))))
@example(data=b'{"edge_sets":[],"two_hop":{"rows":9223372036854775808}}')   # past int64: found by CI's fuzzing
def test_fuzz_edges_reader_only_raises_input_file_error(tmp_path_factory, data):
    f = tmp_path_factory.mktemp("fuzz") / "edges.json"
    f.write_bytes(data)
    only_documented_error(lambda: seed_edges(f), f, InputFileError)


# --------------------------------------------------------------------------------------------
# safetensors checkpoints
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = load_config("smoke")
    path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
    save_weights(build_model(cfg.model, 50, seed=0), path)
    return path


def _safetensors_cases(good: bytes) -> dict:
    return {"undecodable": b"\xff" * 40, "truncated": good[: len(good) // 2], "header only": good[:8],
            "wrong type": json.dumps({"model": "gpt2"}).encode(), "empty": b""}


def test_bad_checkpoints_raise_one_line_naming_the_file(checkpoint, tmp_path):
    assert isinstance(load_model(checkpoint), torch.nn.Module)
    for name, data in _safetensors_cases(checkpoint.read_bytes()).items():
        f = tmp_path / f"{name}.safetensors"
        f.write_bytes(data)
        with pytest.raises(InputFileError) as e:
            load_model(f)
        assert str(f) in str(e.value) and "\n" not in str(e.value), name
    foreign = tmp_path / "foreign.safetensors"                      # valid safetensors, not a kgsim model
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(InputFileError, match="no kgsim_model_config"):
        load_model(foreign)


@pytest.mark.parametrize("case", ["truncated", "wrong type"])
def test_bad_kgsim_model_on_the_command_line(capsys, checkpoint, tmp_path, case):
    f = tmp_path / "bad.safetensors"
    f.write_bytes(_safetensors_cases(checkpoint.read_bytes())[case])
    code, _, err = kgsim(capsys, "bridge", "agree", "--model", tmp_path, "--data-path", tmp_path,
                         "--kgsim-model", f, "--out", tmp_path / "o")
    assert_one_line(code, err, f)
    assert not (tmp_path / "o").exists()


_json = st.recursive(st.none() | st.booleans() | st.integers(-3, 10**6) | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                     max_leaves=12)
_tensor = st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "I64", "XX", 3]),
                                 "shape": st.lists(st.integers(-1, 4), max_size=3),
                                 "data_offsets": st.lists(st.integers(-2, 64), min_size=2, max_size=2)})


@FUZZ
@given(raw=st.binary(max_size=200),
       header=st.dictionaries(st.text(max_size=5), _tensor | _json, max_size=3), tail=st.binary(max_size=64),
       structured=st.booleans())
def test_fuzz_safetensors_reader_only_raises_input_file_error(tmp_path_factory, raw, header, tail, structured):
    if structured:                                   # a well-formed length and JSON header, anything after
        h = json.dumps(header).encode()
        raw = struct.pack("<Q", len(h)) + h + tail
    f = tmp_path_factory.mktemp("fuzz") / "m.safetensors"
    f.write_bytes(raw)
    only_documented_error(lambda: load_model(f), f, InputFileError)


def test_checker_accepts_what_safetensors_writes(tmp_path):
    from safetensors.torch import save_file
    f = tmp_path / "ok.safetensors"
    save_file({"a": torch.zeros(3, 5), "b": torch.ones(2, dtype=torch.int64), "e": torch.zeros(0)}, str(f),
              metadata={"k": "v"})
    assert check_safetensors(f) == {"k": "v"}


# --------------------------------------------------------------------------------------------
# Hugging Face model folders (kgsim bridge run --model)
# --------------------------------------------------------------------------------------------

MODEL_CASES = {
    "a file": ("file", "is a file, not a folder"),
    "empty folder": ({}, "no config.json"),
    "undecodable config": ({"config.json": b"\xff\xfe"}, "not UTF-8"),
    "truncated config": ({"config.json": b'{"model_type": "gp'}, "not valid JSON"),
    "config of the wrong type": ({"config.json": b"[1]"}, "holds a list, not an object"),
    "truncated weights": ({"config.json": b'{"model_type": "gpt2"}', "model.safetensors": b"\x10\0\0\0\0\0\0\0{}"},
                          "model.safetensors: not a Hugging Face weights file"),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_bad_model_folder_is_one_line(capsys, tmp_path, case):
    files, message = MODEL_CASES[case]
    m = tmp_path / "model"
    if files == "file":
        m.write_text("not a model")
    else:
        m.mkdir()
        for name, data in files.items():
            (m / name).write_bytes(data)
    code, _, err = kgsim(capsys, "bridge", "run", "--model", m, "--data", "entityquestions", "--data-path",
                         EQ_FIXTURE, "--out", tmp_path / "o")
    assert_one_line(code, err, m, message)
    assert not (tmp_path / "o").exists()


@FUZZ
@given(config=st.binary(max_size=200) | st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(
    st.sampled_from(["model_type", "x"]), st.sampled_from(["gpt2", "nope", 3, None]))))
def test_fuzz_model_folder_check_only_raises_model_dir_error(tmp_path_factory, config):
    m = tmp_path_factory.mktemp("model")
    (m / "config.json").write_bytes(config)
    try:
        check_model_dir(m)
    except ModelDirError as e:
        assert "\n" not in str(e)


# --------------------------------------------------------------------------------------------
# EntityQuestions folders (graph.generator = entityquestions)
# --------------------------------------------------------------------------------------------

def _eq_copy(tmp_path: Path) -> Path:
    root = tmp_path / "eq"
    shutil.copytree(EQ_FIXTURE, root)
    return root


EQ_CASES = {
    "undecodable line": (("train", "P17.train.jsonl"), b'{"question": "Which country is \xff located in?"}\n',
                         "P17.train.jsonl:1: not UTF-8"),
    "truncated line": (("train", "P17.train.jsonl"), b'{"question": "Which country is X located in?", "ans',
                       "P17.train.jsonl:1: not valid JSON"),
    "answers of the wrong type": (("train", "P36.train.jsonl"), b'{"question": "What is the capital of X?", '
                                  b'"answers": "Y"}\n', "'answers' must be a non-empty list of strings"),
    "templates of the wrong type": (("relation_query_templates.json",), b"[]", "holds a list, not an object"),
}


@pytest.mark.parametrize("case", sorted(EQ_CASES))
def test_bad_entityquestions_folder_is_one_line(capsys, tmp_path, case):
    where, data, message = EQ_CASES[case]
    root = _eq_copy(tmp_path)
    root.joinpath(*where).write_bytes(data)
    code, _, err = kgsim(capsys, "graph", "--preset", "smoke", "--set", "graph.generator=entityquestions",
                         "--set", f"graph.data_path='{root}'", "--out", tmp_path / "w")
    assert_one_line(code, err, message)
    assert not (tmp_path / "w").exists() and not (tmp_path / ".kgsim-cache").exists()


def test_entityquestions_folder_missing_or_a_file(capsys, tmp_path):
    for root, message in ((tmp_path / "nope", "no such folder"), (Path(__file__), "is a file")):
        code, _, err = kgsim(capsys, "graph", "--preset", "smoke", "--set", "graph.generator=entityquestions",
                             "--set", f"graph.data_path='{root}'", "--out", tmp_path / "w")
        assert_one_line(code, err, root, message)


@FUZZ
@given(data=st.binary(max_size=300) | st.text(max_size=120).map(str.encode))
def test_fuzz_entityquestions_reader_only_raises_graph_file_error(tmp_path_factory, data):
    root = _eq_copy(tmp_path_factory.mktemp("fuzz"))
    (root / "train" / "P17.train.jsonl").write_bytes(data)
    try:
        kg = load_entityquestions(root)
    except GraphFileError as e:
        assert "\n" not in str(e)
        return
    assert kg.n_facts > 0


# --------------------------------------------------------------------------------------------
# Output paths
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["graph", "pretrain", "run"])
def test_out_naming_an_existing_file(capsys, cwd, command):
    f = cwd / "taken"
    f.write_text("x")
    code, _, err = kgsim(capsys, command, "--preset", "smoke", "--out", f)
    assert_one_line(code, err, "--out", f, "is an existing file")
    assert f.read_text() == "x" and sorted(p.name for p in cwd.iterdir()) == ["taken"]


@pytest.mark.parametrize("command", ["graph", "run"])
def test_out_inside_a_file_and_cache_naming_a_file(capsys, cwd, command):
    f = cwd / "taken"
    f.write_text("x")
    code, _, err = kgsim(capsys, command, "--preset", "smoke", "--out", f / "sub")
    assert_one_line(code, err, "--out", "is a file, not a folder")
    code, _, err = kgsim(capsys, command, "--preset", "smoke", "--out", cwd / "o", "--cache", f)
    assert_one_line(code, err, "--cache", "is an existing file")
    assert sorted(p.name for p in cwd.iterdir()) == ["taken"]


@pytest.mark.parametrize("command", ["graph", "pretrain", "run"])
def test_out_in_an_unwritable_folder(capsys, cwd, tmp_path, command):
    ro = unwritable_dir(tmp_path)
    code, _, err = kgsim(capsys, command, "--preset", "smoke", "--out", ro / "kgsim-out")
    assert_one_line(code, err, "--out", "cannot write there")
    assert not (ro / "kgsim-out").exists()


def test_check_out_dir_accepts_new_and_existing_folders(tmp_path):
    assert check_out_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert check_out_dir(tmp_path) == tmp_path
    assert not (tmp_path / "a").exists()                       # checking creates nothing


def test_another_commands_folder_is_refused(capsys, cwd):
    code, _, err = kgsim(capsys, "graph", "--preset", "smoke", "--out", cwd / "w")
    assert code == 0, err
    before = sorted(p.name for p in (cwd / "w").iterdir())
    code, _, err = kgsim(capsys, "run", "--preset", "smoke", "--out", cwd / "w")        # a run into a world
    assert_one_line(code, err, "--out", "holds other files")
    code, _, err = kgsim(capsys, "pretrain", "--preset", "smoke", "--out", cwd / "w")   # a pretraining into it
    assert_one_line(code, err, "--out", "holds other files")
    code, _, err = kgsim(capsys, "graph", "--preset", "smoke", "--set", "seed=3", "--out", cwd / "w")
    assert_one_line(code, err, "--out", "holds other files")
    assert sorted(p.name for p in (cwd / "w").iterdir()) == before
    (cwd / "p").mkdir()
    (cwd / "p" / "summary.json").write_bytes(b"\xff")                                # a broken pretraining
    code, _, err = kgsim(capsys, "pretrain", "--preset", "smoke", "--out", cwd / "p")
    assert_one_line(code, err, "summary.json", "not UTF-8")


# --------------------------------------------------------------------------------------------
# A Dask scheduler nobody answers at
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_unreachable_scheduler_is_one_line_and_no_run_folder(capsys, cwd):
    """kgsim run --scheduler ADDRESS where nothing listens: one line naming the address, exit 2, and
    no run folder (the world in the cache is a whole artefact a rerun reuses)."""
    code = main(["run", "--preset", "smoke", "--scheduler", "tcp://127.0.0.1:9", "--out", "runs/x"])
    assert_one_line(code, capsys.readouterr().err, "--scheduler = 'tcp://127.0.0.1:9'", "cannot connect")
    assert not (cwd / "runs" / "x").exists()


@pytest.mark.slow
def test_config_that_misfits_the_trained_model_is_one_line_and_no_run_folder(capsys, cwd):
    """A config error only a trained model reveals (the smoke base model knows too few facts for
    SliCK-measured splits of these sizes): after pretraining, one line naming the key, exit 2, no run
    folder, and the base model kept in the cache, so the rerun with run.known_by = 'exposure' reuses it."""
    code = main(["run", "--preset", "smoke", "--set", "run.known_by=slick", "--out", "runs/x"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("kgsim: error: seed 0: ") and "TooLittleKnown: splits." in last, err
    assert "Traceback" not in err and not (cwd / "runs" / "x").exists()
    assert list((cwd / "runs" / ".kgsim-cache").glob("base-*/train/*.safetensors"))
    code = main(["run", "--preset", "smoke", "--out", "runs/x"])
    assert code == 0 and "pretrain (cached)" in capsys.readouterr().err
