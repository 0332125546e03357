"""`kgsim run` end to end on the smoke preset: outputs, golden numbers, kill-and-resume, bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kgsim.cli import main

GOLDEN = Path(__file__).parent / "golden" / "smoke_run.json"


def numbers(res: dict) -> dict:
    """The figures a run must reproduce exactly: accuracies, gaps, base-model and fine-tuning numbers."""
    keep = {}
    for s in res["per_seed"]:
        keep[str(s["seed"])] = {
            "accuracy": s["accuracy"], "gaps": s["gaps"], "two_hop": s["two_hop"],
            "memorisation": s["base"]["memorisation"]["buckets"], "slick": s["base"]["slick_counts"],
            "es_steps": {m: s["finetune"][m]["es_step"] for m in ("ft-known", "ft-unknown")},
            "curves": {m: [{k: v for k, v in row.items() if k != "tokens_per_s"} for row in s["finetune"][m]["curve"]]
                       for m in ("ft-known", "ft-unknown")},
        }
    return keep


def _kgsim(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "kgsim", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "run"
    t0 = time.perf_counter()
    p = _kgsim("run", "--preset", "smoke", "--out", str(out))
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    return out, time.perf_counter() - t0


def test_smoke_run_writes_everything(smoke_run):
    out, seconds = smoke_run
    res = json.loads((out / "results.json").read_text())
    for key in ("config", "seeds", "environment", "per_seed", "aggregate", "observations"):
        assert key in res
    assert res["environment"]["torch"] and "git_commit" in res["environment"]
    assert set(res["observations"]) == {"O1", "O2", "O3"}
    for parts in res["observations"].values():        # one seed: judged on a bootstrap over test facts
        for claim in parts.values():
            assert claim["verdict"] == "not measured" or (
                claim["method"] == "bootstrap over test facts" and claim["lo"] <= claim["hi"]
                and claim["verdict"] in ("holds", "inconclusive", "opposite"))
    report = (out / "report.md").read_text()
    assert "**O1**" in report and "extraction rate" in report and "95% bootstrap intervals over test facts" in report
    for fig in ("gap_by_split", "gap_vs_k", "gap_es_vs_con", "direct_vs_cot", "fitting_speed", "memorisation"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000, fig
    edges = json.loads((out / "seed-0" / "edges.json").read_text())
    prompts = {(f"{e['model']}/{e['stage']}", e["prompt"]) for e in edges["edge_sets"]}
    assert ("ft-known/es", "1-shot") in prompts and ("ft-unknown/con", "cot") in prompts


def test_smoke_run_matches_golden_numbers(smoke_run):
    out, _ = smoke_run
    got = numbers(json.loads((out / "results.json").read_text()))
    if os.environ.get("KGSIM_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True))
    assert got == json.loads(GOLDEN.read_text())


def test_killed_run_resumes_to_the_same_numbers(smoke_run, tmp_path):
    out = tmp_path / "run"
    p = _kgsim("run", "--preset", "smoke", "--out", str(out), "--cache", str(tmp_path / "cache"))
    marker = out / "seed-0" / "ft-known" / "ckpt" / "checkpoint.json"
    deadline = time.time() + 300
    while not marker.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "results.json").exists(), "the run finished before it could be killed"
    p = _kgsim("run", "--preset", "smoke", "--out", str(out), "--cache", str(tmp_path / "cache"))
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    resumed = numbers(json.loads((out / "results.json").read_text()))
    assert resumed == numbers(json.loads((smoke_run[0] / "results.json").read_text()))


def _err(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_bad_input_exits_2_and_leaves_results_untouched(smoke_run, capsys, tmp_path):
    out, _ = smoke_run
    before = (out / "results.json").read_bytes()
    code, err = _err(capsys, "run", "--preset", "nope", "--out", str(out))
    assert code == 2 and "preset = 'nope'" in err
    code, err = _err(capsys, "run", "--preset", "smoke", "--set", "prompts.k_shots=[1, 50]", "--out", str(out))
    assert code == 2 and "prompts.k_shots" in err and "demonstrations" in err
    code, err = _err(capsys, "run", "--preset", "smoke", "--set", "finetune.lr=0.5", "--out", str(out))
    assert code == 2 and "holds another run's files" in err and "finetune.lr" in err
    assert (out / "results.json").read_bytes() == before
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    code, err = _err(capsys, "run", "--preset", "smoke", "--out", str(stray))
    assert code == 2 and (stray / "notes.txt").read_text() == "mine" and len(list(stray.iterdir())) == 1
