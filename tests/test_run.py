"""`kgsim run` end to end on the smoke preset: outputs, reproducibility, kill-and-resume, bad input.

The numbers of a full run (CPU training) are compared exactly only within one machine: two
runs started together in this session, and a killed and resumed run, must give identical numbers
and edge sets. Across machines they differ with the kernels oneDNN and ATen pick for the CPU's
instruction set; what holds on any machine is in tests/test_regression.py.

Every test here needs a finished smoke run (minutes of CPU): the module is in the ``slow`` tier.
"""
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kgsim.cli import main
from kgsim.core.config import load_config
from kgsim.core.known import AGREEMENT_LABELS
from kgsim.study.finish import finish

pytestmark = pytest.mark.slow            # (tests/conftest.py keeps a module's slow tests on one xdist worker)


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
    kw = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True} | kw
    return subprocess.Popen([sys.executable, "-m", "kgsim", *args], **kw)


def _flat(obj, path=""):
    """(path, JSON text of the leaf) pairs, so NaN equals NaN and the first difference can be named."""
    if isinstance(obj, dict):
        for k in sorted(obj):
            yield from _flat(obj[k], f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _flat(v, f"{path}[{i}]")
    else:
        yield path, json.dumps(obj)


def assert_identical(what: str, a, b) -> None:
    """Exact equality of two JSON-like objects; the message names the first differing entry."""
    fa, fb = dict(_flat(a)), dict(_flat(b))
    diff = [k for k in sorted(fa.keys() | fb.keys()) if fa.get(k) != fb.get(k)]
    assert not diff, (f"{what}: {len(diff)} of {len(fa)} entries differ; first {diff[0]}: "
                      f"{fa.get(diff[0], '(absent)')} vs {fb.get(diff[0], '(absent)')}")


def run_numbers(out: Path) -> dict:
    return numbers(json.loads((out / "results.json").read_text()))


def run_edges(out: Path) -> dict:
    """Every seed's edge sets (which test facts each model × prompt answers correctly)."""
    return {d.name: json.loads((d / "edges.json").read_text()) for d in sorted(out.glob("seed-*"))}


def cache_of(out: Path) -> Path:
    return out.parent / f"cache-{out.name}"


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two smoke runs started together, each with its own cache, so each builds its world and
    pretrains its base model from scratch."""
    base = tmp_path_factory.mktemp("smoke")
    outs = (base / "run", base / "again")
    logs = [base / f"{o.name}.log" for o in outs]          # files, not pipes: neither run waits on a full pipe
    procs = []
    for o, log in zip(outs, logs):
        with open(log, "w") as f:
            procs.append(_kgsim("run", "--preset", "smoke", "--out", str(o), "--cache", str(cache_of(o)),
                                stdout=f, stderr=subprocess.STDOUT))
    for p, log in zip(procs, logs):
        p.wait(timeout=900)
        assert p.returncode == 0, log.read_text()[-4000:]
    return outs


@pytest.fixture(scope="module")
def smoke_run(smoke_runs) -> Path:
    return smoke_runs[0]


def test_smoke_run_writes_everything(smoke_run):
    out = smoke_run
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
    assert "## What the similarity buckets hold" in report
    for fig in ("gap_by_split", "gap_vs_k", "gap_es_vs_con", "direct_vs_cot", "fitting_speed", "memorisation",
                "similarity"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000, fig
    edges = json.loads((out / "seed-0" / "edges.json").read_text())
    prompts = {(f"{e['model']}/{e['stage']}", e["prompt"]) for e in edges["edge_sets"]}
    assert ("ft-known/es", "1-shot") in prompts and ("ft-unknown/con", "cot") in prompts


def test_smoke_run_reports_both_rules(smoke_run):
    """Issue 12's two Known rules on the finished smoke run: a known_rules record per seed that adds up
    to the probed facts, kappa aggregated, and the confusion table in the report."""
    res = json.loads((smoke_run / "results.json").read_text())
    s = res["per_seed"][0]
    r = s["known_rules"]
    probed = sum(s["base"]["slick_counts"].values())
    assert sum(r["table"][x][y] for x in AGREEMENT_LABELS for y in AGREEMENT_LABELS) == probed
    assert -1 <= r["kappa"] <= 1 and res["aggregate"]["known_rules"]["kappa"]["mean"] == r["kappa"]
    report = (smoke_run / "report.md").read_text()
    assert "Known by two rules: SliCK (P_greedy > 0)" in report and "| SliCK \\ exposure | Known |" in report


def test_smoke_run_measures_filtered_test_sets(smoke_run):
    """Issue 12's test-set filters on the finished smoke run (known_by = exposure): the other two
    filters' sets measured per structural split and prompt, never overlapping fine-tuning, and the
    report's section with the run's own rows."""
    res = json.loads((smoke_run / "results.json").read_text())
    edges = json.loads((smoke_run / "seed-0" / "edges.json").read_text())
    splits = edges["splits"]
    for split in ("id", "near-id", "open-world"):
        assert f"{split}@exposure" not in splits                      # the run's own test set is not drawn again
        for f in ("slick", "unfiltered"):
            assert f"{split}@{f}" in splits
            assert res["per_seed"][0]["gaps"]["con"][f"{split}@{f}"]["zero-shot"] is not None
    assert len(splits["id@unfiltered"]) == res["config"]["splits"]["test_size"]
    report = (smoke_run / "report.md").read_text()
    section = report.split("## Test-set filters")[1].split("\n## ")[0]
    assert "| id | exposure (own) |" in section and "| open-world | unfiltered |" in section
    assert "id@unfiltered" not in report.split("## Accuracy and gaps")[1].split("\n## ")[0]


def test_smoke_run_measures_the_hops_inside_the_cot_prompt(smoke_run):
    """Issue 12's in-prompt CoT prediction: a query with both hops right inside the prompt (the bridge
    named, the second step right given the true bridge) is answered right by CoT, so the in-prompt
    prediction never exceeds CoT, the bridge or the second hop; the report shows the columns."""
    th = json.loads((smoke_run / "results.json").read_text())["per_seed"][0]["two_hop"]
    assert th
    for v in th.values():
        assert v["predicted_cot_in_prompt"] <= min(v["cot"], v["bridge"], v["hop2_in_prompt"]) + 1e-12
    assert "CoT predicted (in prompt)" in (smoke_run / "report.md").read_text()


def test_smoke_run_measures_recall_cot(smoke_run):
    """Issue 12's one-hop CoT variant on the finished smoke run: a recall-CoT edge set for every model
    and structural split over the split's facts (every smoke subject has facts of several relations),
    the share of related facts recalled, its O3 claim, and its rows in the report."""
    res = json.loads((smoke_run / "results.json").read_text())
    edges = json.loads((smoke_run / "seed-0" / "edges.json").read_text())
    recall = [e for e in edges["edge_sets"] if e["prompt"] == "recall-cot"]
    assert {(e["model"], e["stage"], e["split"]) for e in recall} == {
        (m, st, sp) for m, st in (("base", ""), ("ft-known", "es"), ("ft-known", "con"), ("ft-unknown", "es"),
                                  ("ft-unknown", "con")) for sp in ("id", "near-id", "open-world")}
    for e in recall:
        assert e["test_ids"] == edges["splits"][e["split"]] and 0 <= e["meta"]["recall_correct"] <= 1
        assert len(e["meta"]["induced"][0]) == 2 * res["config"]["prompts"]["cot_shots"]
    assert "con: recall-CoT shrinks the ID gap" in res["observations"]["O3"]
    assert "| id | recall-cot |" in (smoke_run / "report.md").read_text()


def test_smoke_run_splits_the_few_shot_shrink(smoke_run):
    """Issue 13's mechanisms on the finished smoke run: per prompt, FT-Known's net loss plus
    FT-Unknown's net gain on the ID split is the O3 shrink claim's value; the report has the table."""
    res = json.loads((smoke_run / "results.json").read_text())
    s = res["per_seed"][0]
    for st in ("es", "con"):
        for k in res["config"]["prompts"]["k_shots"]:
            p = f"{k}-shot"
            kn, unk = s["transitions"][f"ft-known/{st}"]["id"][p], s["transitions"][f"ft-unknown/{st}"]["id"][p]
            claim = res["observations"]["O3"][f"{st}: {k}-shot shrinks the ID gap"]["mean"]
            assert (kn["loss"] - kn["gain"]) + (unk["gain"] - unk["loss"]) == pytest.approx(claim, abs=1e-12)
    report = (smoke_run / "report.md").read_text()
    assert "## Mechanisms: what each prompt gains and loses (ID split)" in report and "| stage | prompt | λ |" in report
    for st in ("es", "con"):                                  # the pull model fitted per stage and k
        assert set(s["pull"][st]) == {f"{k}-shot" for k in res["config"]["prompts"]["k_shots"]}


def test_smoke_run_breaks_the_far_splits_down_by_factor(smoke_run):
    """Issue 12's factor levels on the finished smoke run: for each far split, factor and stage the
    levels partition the split's facts, and their gaps weighted by size give the split's gap."""
    res = json.loads((smoke_run / "results.json").read_text())
    s = res["per_seed"][0]
    for st in ("es", "con"):
        for split in ("near-id", "open-world"):
            for factor in ("relation", "subject type", "answer type", "graph distance"):
                levels = s["factor_gaps"][st][split][factor]
                n = sum(v["n"] for v in levels.values())
                assert n == s["sizes"][f"ft-known/{st}"][split]["zero-shot"]["N"]
                assert sum(v["n"] * v["gap"] for v in levels.values()) / n == pytest.approx(
                    s["gaps"][st][split]["zero-shot"], abs=1e-12)
    assert "0 hops" not in s["factor_gaps"]["con"]["open-world"]["graph distance"]   # other subjects than FT's
    assert "## Near-ID and Open-World by factor" in (smoke_run / "report.md").read_text()


def test_smoke_run_classifies_errors(smoke_run):
    """Issue 12's error classes on the finished smoke run: the table in report.md, the figure, and per
    kept edge set counts that partition its n - |E| wrong answers (base: against each FT set)."""
    out = smoke_run
    res = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    assert "## Errors by class" in report and "| ft-unknown/con | open-world |" in report
    assert (out / "figures" / "error_classes.png").stat().st_size > 1000
    counts = res["per_seed"][0]["error_classes"]
    edges = json.loads((out / "seed-0" / "edges.json").read_text())["edge_sets"]
    kept = [e for e in edges if "answers" in e]
    assert {e["split"] for e in kept} >= {"id", "near-id", "open-world"} and all(len(e["answers"]) == e["n"]
                                                                                for e in kept)
    for e in kept:
        labels = [f"{e['model']}/{e['stage']}"] if e["model"] != "base" else ["base@ft-known", "base@ft-unknown"]
        for lab in labels:
            c = counts[lab][e["split"]][e["prompt"]]
            assert c["n"] == e["n"] and c["errors"] == e["n"] - e["size"]
            assert c["from-ft-set"] + c["right-type"] + c["other"] == c["errors"], (lab, e["split"], e["prompt"])
    shares = res["aggregate"]["error_classes"]["ft-unknown/con"]["id"]["zero-shot"]
    if shares["errors"]["mean"] > 0:
        assert abs(sum(shares[k]["mean"] for k in ("from-ft-set", "right-type", "other")) - 1) < 1e-9


def test_two_runs_give_identical_numbers_and_edge_sets(smoke_runs):
    """Same machine, same command, two processes: bit-identical numbers and the same edge sets."""
    a, b = smoke_runs
    assert_identical("numbers of two smoke runs", run_numbers(a), run_numbers(b))
    assert_identical("edge sets of two smoke runs", run_edges(a), run_edges(b))


def test_killed_run_resumes_to_the_same_numbers(smoke_runs, tmp_path):
    """Killed while fine-tuning and rerun: the numbers of the uninterrupted run. It reuses the world and
    base model of the second run's cache (test_two_runs_give_identical_numbers_and_edge_sets has
    shown that a run from scratch makes the same ones)."""
    smoke_run, cache = smoke_runs[0], cache_of(smoke_runs[1])
    out = tmp_path / "run"
    p = _kgsim("run", "--preset", "smoke", "--out", str(out), "--cache", str(cache))
    marker = out / "seed-0" / "ft-known" / "ckpt" / "checkpoint.json"
    deadline = time.time() + 300
    while not marker.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "results.json").exists(), "the run finished before it could be killed"
    p = _kgsim("run", "--preset", "smoke", "--out", str(out), "--cache", str(cache))
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    assert_identical("numbers of a killed and resumed run vs an uninterrupted one", run_numbers(out),
                     run_numbers(smoke_run))
    assert_identical("edge sets of a killed and resumed run vs an uninterrupted one", run_edges(out),
                     run_edges(smoke_run))


@pytest.mark.slow
@pytest.mark.xdist_group("kgsim-run")
def test_smoke_run_with_fine_tuning_replicates(smoke_runs, tmp_path):
    """run.ft_replicates = 2 (the nested design) on the second run's cached world and base model:
    replicate 0 is the plain run's seed 0, edge for edge; replicate 1 fine-tunes the same data in
    another order; verdicts rest on the replicates' mean, and the variance components say that one
    seed cannot separate world-and-pretraining. A rerun finds every unit done."""
    out, cache = tmp_path / "nested", cache_of(smoke_runs[1])
    argv = ("run", "--preset", "smoke", "--set", "run.ft_replicates=2", "--out", str(out), "--cache", str(cache))
    _, err = (p := _kgsim(*argv)).communicate(timeout=900)
    assert p.returncode == 0, err
    assert_identical("replicate 0 vs the plain run's seed 0", run_edges(out)["seed-0"],
                     run_edges(smoke_runs[0])["seed-0"])
    res = json.loads((out / "results.json").read_text())
    units = {u.get("replicate", 0): u for u in res["per_unit"]}
    assert sorted(units) == [0, 1] and len(res["per_seed"]) == 1 and res["per_seed"][0]["replicates"] == 2
    losses = [[row.get("loss") for row in units[r]["finetune"]["ft-known"]["curve"]] for r in (0, 1)]
    assert losses[0] != losses[1]                                        # another batch order
    mean = res["per_seed"][0]["gaps"]["con"]["id"]["zero-shot"]
    assert mean == pytest.approx(np.mean([units[r]["gaps"]["con"]["id"]["zero-shot"] for r in (0, 1)]))
    for o in ("O1", "O2", "O3"):
        vc = res["variance_components"][o]
        assert vc["n_units"] == 2 and vc["fine_tuning"] >= 0 and vc["test_facts"] > 0, vc
        assert vc["world_pretraining"] is None or math.isnan(vc["world_pretraining"])
        assert "one seed" in vc["note"]
    assert "## Variance components" in (out / "report.md").read_text()
    _, err = (p := _kgsim(*argv)).communicate(timeout=300)
    assert p.returncode == 0, err
    assert_identical("a rerun of the nested run", json.loads((out / "results.json").read_text())["per_unit"],
                     res["per_unit"])


@pytest.mark.slow
@pytest.mark.xdist_group("kgsim-run")
def test_smoke_run_with_the_instruct_stage(smoke_runs, tmp_path):
    """instruct.enabled = true on the second run's cached world and base model: the tuned model is
    cached beside the base, probed there, and fine-tuned from; the results and report say so."""
    out, cache = tmp_path / "instruct", cache_of(smoke_runs[1])
    p = _kgsim("run", "--preset", "smoke", "--set", "instruct.enabled=true", "--set", "instruct.steps=60",
               "--out", str(out), "--cache", str(cache))
    _, err = p.communicate(timeout=900)
    assert p.returncode == 0, err
    tuned = list(cache.glob("base-*/instruct-*/train/con.safetensors"))
    assert len(tuned) == 1 and list(tuned[0].parent.parent.glob("probe-*/probe.npz"))
    seed = json.loads((out / "results.json").read_text())["per_seed"][0]
    ins = seed["instruct"]
    assert ins["facts"] > 0 and ins["steps"] == 60 and seed["timing"]["instruct_s"] > 0
    for k in ("instruct_acc_before", "instruct_acc_after", "qa_extraction_id_before", "qa_extraction_id_after"):
        assert 0.0 <= ins[k] <= 1.0, k
    assert "**Instruct analogue**" in (out / "report.md").read_text()
    plain = json.loads((smoke_runs[0] / "results.json").read_text())["per_seed"][0]
    assert seed["base"]["slick_counts"] != plain["base"]["slick_counts"] or seed["gaps"] != plain["gaps"]


def _err(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_bad_input_exits_2_and_leaves_results_untouched(smoke_run, capsys, tmp_path):
    out = smoke_run
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


def test_an_excluded_seed_is_named_and_changes_no_figure(smoke_run, tmp_path):
    """finish() given the smoke run's seed 0 and a seed left out under run.unsplittable_seeds =
    "exclude": the figures are the plain run's, ``seeds`` lists the measured one, ``excluded_seeds``
    names the other with its reason, and the report says so."""
    out = tmp_path / "run"
    shutil.copytree(smoke_run, out)
    cfg = load_config(None, config_file=out / "config.toml")
    unit = json.loads((out / "seed-0" / "results.json").read_text())
    gone = {"seed": 7, "replicate": 0, "excluded": "splits.ft_size = 24: only 3 known facts (after fine-tuning)"}
    finish(cfg, out, [unit, gone])
    res, plain = json.loads((out / "results.json").read_text()), json.loads((smoke_run / "results.json").read_text())
    assert res["seeds"] == [0] and res["excluded_seeds"] == [{"seed": 7, "reason": gone["excluded"]}]
    assert_identical("figures with a seed excluded", res["aggregate"], plain["aggregate"])
    assert "seed 7 (splits.ft_size = 24: only 3 known facts)" in (out / "report.md").read_text()
