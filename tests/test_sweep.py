"""`kgsim sweep` and the task-graph engine (kgsim.study.tasks): the grid, the graph's sharing, the
fine-tuning sets at an Unknown share, and (slow) real sweeps on a LocalCluster and on a Dask
scheduler with workers started here, one of them killed mid-task."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kgsim.cli import main
from kgsim.core.config import ConfigError, load_config, replace
from kgsim.study.api import load_results
from kgsim.study.stages import ft_sets
from kgsim.study.sweep import SweepError, expand, parse_grid, run_sweep
from kgsim.study.tasks import Cell, build_graph
from kgsim.world.build import build_world

BIN = Path(sys.executable).parent


def numbers(res: dict) -> dict:
    """The figures two runs of one config must share exactly (as tests/test_run.py compares)."""
    keep = {}
    for s in res["per_seed"]:
        keep[s["seed"]] = {"accuracy": s["accuracy"], "gaps": s["gaps"], "two_hop": s["two_hop"],
                           "memorisation": s["base"]["memorisation"]["buckets"], "slick": s["base"]["slick_counts"],
                           "es_steps": {m: f["es_step"] for m, f in s["finetune"].items()},
                           "curves": {m: [{k: v for k, v in row.items() if k != "tokens_per_s"} for row in f["curve"]]
                                      for m, f in s["finetune"].items()}}
    return keep


# --------------------------------------------------------------------------------------------
# The grid (fast)
# --------------------------------------------------------------------------------------------

def test_parse_grid_values_are_toml_and_lists_stay_whole():
    assert parse_grid(["finetune.unknown_share=0,0.5,1", "graph.generator=zipf,uniform"]) == {
        "finetune.unknown_share": [0, 0.5, 1], "graph.generator": ["zipf", "uniform"]}
    assert parse_grid(["prompts.k_shots=[1,2],[1,2,4]"]) == {"prompts.k_shots": [[1, 2], [1, 2, 4]]}


def test_expand_names_every_cell_and_checks_it():
    cells = expand(load_config("smoke"), {"finetune.unknown_share": [0, 0.5], "finetune.lr": [1e-4, 3e-4]})
    assert [n for n, _, _ in cells] == ["unknown_share-0__lr-0.0001", "unknown_share-0__lr-0.0003",
                                        "unknown_share-0.5__lr-0.0001", "unknown_share-0.5__lr-0.0003"]
    assert cells[3][2].finetune.unknown_share == 0.5 and cells[3][2].finetune.lr == 3e-4
    with pytest.raises(SweepError, match="cell unknown_share-1.5"):
        expand(load_config("smoke"), {"finetune.unknown_share": [0, 1.5]})


@pytest.mark.parametrize("grid, message", [
    ("finetune.unknown_shar=0,1", "unknown key 'finetune.unknown_shar'"),
    ("finetune.lr=", "give at least one value"),
    ("finetune.lr=fast,1e-3", "finetune.lr = 'fast': must be a number"),
    ("finetune.size=-1", "finetune.size = -1: must be >= 0"),
    ("run.seeds=0,1", "cannot be swept"),
    ("finetune.lr", "expected section.key=value1,value2"),
])
def test_bad_grid_is_one_line_exit_2_before_any_work(tmp_path, capsys, grid, message):
    out = tmp_path / "sweep"
    assert main(["sweep", "--preset", "smoke", "--grid", grid, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kgsim: error: ") and message in err and "\n" not in err
    assert not out.exists() and not (tmp_path / ".kgsim-cache").exists()


def test_sweep_table_in_a_config_file(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text('[finetune]\nlr = 1e-3\n\n[sweep]\n"finetune.unknown_share" = [0.0, "half"]\n')
    assert main(["sweep", "--preset", "smoke", "--config", str(f), "--out", str(tmp_path / "o")]) == 2
    assert "finetune.unknown_share = 'half': must be a number" in capsys.readouterr().err


def test_unknown_share_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match=r"finetune.unknown_share = 1.2: must lie in \[0, 1\]"):
        load_config("smoke", overrides=["finetune.unknown_share=1.2"])
    with pytest.raises(ConfigError, match="finetune.size = 25: more than the fine-tuning pools hold"):
        load_config("smoke", overrides=["finetune.size=25"])


# --------------------------------------------------------------------------------------------
# Fine-tuning sets at an Unknown share (fast: the smoke world is built in milliseconds)
# --------------------------------------------------------------------------------------------

def test_mixed_sets_are_nested_balanced_and_end_at_known_and_unknown():
    cfg = load_config("smoke", overrides=["run.known_by='exposure'"])
    world = build_world(cfg)
    sp = world.splits
    full = ft_sets(cfg, world, sp)
    assert np.array_equal(full["known"], sp.ft_known) and np.array_equal(full["unknown"], sp.ft_unknown)
    prev_unk = set()
    for rho in (0.0, 0.25, 0.5, 0.75, 1.0):
        s = ft_sets(replace(cfg, finetune={"unknown_share": rho, "size": 12}), world, sp)
        mixed = set(s["mixed"].tolist())
        unk = mixed & set(sp.ft_unknown.tolist())
        assert len(s["mixed"]) == 12 and len(unk) == round(12 * rho) and prev_unk <= unk
        prev_unk = unk
        counts_kn = np.bincount(world.kg.r[s["known"]], minlength=world.kg.n_relations)
        counts_unk = np.bincount(world.kg.r[s["unknown"]], minlength=world.kg.n_relations)
        assert np.array_equal(counts_kn, counts_unk) and counts_kn.max() - counts_kn[counts_kn > 0].min() <= 1
    assert set(ft_sets(replace(cfg, finetune={"unknown_share": 0.0, "size": 12}), world, sp)["mixed"].tolist()) \
        == set(s["known"].tolist())
    assert set(s["mixed"].tolist()) == set(s["unknown"].tolist())


# --------------------------------------------------------------------------------------------
# The graph (fast: built, not run)
# --------------------------------------------------------------------------------------------

def test_graph_shares_what_cells_do_not_change(tmp_path):
    base = load_config("smoke", overrides=["run.seeds=[0, 1]"])
    cells = [Cell(n, c, tmp_path / n) for n, _, c in
             expand(base, {"finetune.unknown_share": [0.0, 0.25, 0.5], "finetune.lr": [1e-4, 3e-4]})]
    kinds = {}
    for t in build_graph(cells, tmp_path / "cache").values():
        kinds[t.kind] = kinds.get(t.kind, 0) + 1
    # per seed: one world, base, probe; per (seed, lr): FT-Known, FT-Unknown; per (seed, lr, rho > 0
    # and < 1): a mixed set; per cell and seed: one measurement; per cell: one finish
    assert kinds == {"world": 2, "pretrain": 2, "probe": 2, "finetune": 2 * 2 * (2 + 2), "seed": 12, "finish": 6}


# --------------------------------------------------------------------------------------------
# Real sweeps (slow)
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    cfg = load_config("smoke", overrides=["run.seeds=[0]"])
    t0 = time.perf_counter()
    res = run_sweep(cfg, {"finetune.unknown_share": [0.0, 0.5]}, root / "sweep", root / "cache", workers=2,
                    show=False)
    return res, root, time.perf_counter() - t0


@pytest.mark.slow
@pytest.mark.xdist_group("kgsim-sweep")
def test_local_sweep_trains_the_shared_base_once(local_sweep):
    _, root, seconds = local_sweep
    out = root / "sweep"
    meta = json.loads((out / "sweep.json").read_text())
    assert [c["status"] for c in meta["cells"]] == ["done", "done"]
    assert meta["tasks_by_kind"]["pretrain"] == 1 and meta["computed_by_kind"]["pretrain"] == 1
    assert meta["tasks_by_kind"]["finetune"] == 3                  # FT-Known, FT-Unknown once; ft-mixed
    steps = [json.loads(line)["step"] for line in next(root.glob("cache/base-*/train/metrics.jsonl")).open()]
    assert steps == sorted(set(steps))                             # one pretraining, never a second pass
    mixed = out / "cells" / "unknown_share-0.5" / "seed-0"
    assert (mixed / "ft-known").is_symlink() and (mixed / "ft-mixed" / "con.safetensors").is_file()
    for cell in ("unknown_share-0", "unknown_share-0.5"):
        assert (out / "cells" / cell / "report.md").is_file()
    report = (out / "cells" / "unknown_share-0.5" / "report.md").read_text()     # rho, n and ft-mixed shown
    assert "n = 24 facts" in report and "ft-mixed has round(ρ·n) = 12 Unknown facts (ρ = 0.5)" in report
    assert "| base | ft-mixed |" in report and "| base | ft-mixed |" not in (
        out / "cells" / "unknown_share-0" / "report.md").read_text()
    table = load_results(out)
    assert {"cell", "finetune.unknown_share", "unknown_share", "ft_set_size"} <= set(table.columns)
    m = table[(table.model == "ft-mixed")]
    assert len(m) and set(m.cell) == {"unknown_share-0.5"} and set(m.unknown_share) == {0.5}
    assert (out / "tidy.csv").is_file() and (out / "laws" / "laws.md").is_file()
    md = (out / "sweep.md").read_text()
    assert "| unknown_share-0.5 | 0.5 | 0.5 | 24 | done |" in md
    head, rule = [line for line in md.splitlines() if line.startswith("|")][:2]    # a table GitHub renders
    assert head.count("|") == rule.count("|") and "[laws/laws.md]" in md
    k = numbers(json.loads((out / "cells" / "unknown_share-0" / "results.json").read_text()))
    k5 = numbers(json.loads((out / "cells" / "unknown_share-0.5" / "results.json").read_text()))
    assert k[0]["curves"]["ft-known"] == k5[0]["curves"]["ft-known"]
    print(f"smoke sweep, 2 cells x 1 seed: {seconds:.0f} s")


@pytest.mark.slow
@pytest.mark.xdist_group("kgsim-sweep")
def test_compare_and_laws_commands_read_the_sweep(local_sweep, capsys):
    _, root, _ = local_sweep
    out = root / "sweep"
    assert main(["compare", str(out), str(out / "cells" / "unknown_share-0"), "--stage", "con"]) == 0
    text = capsys.readouterr().out
    assert "| unknown_share-0.5 | con | id | zero-shot |" in text and "– (one seed)" in text
    assert main(["laws", str(out), "--out", str(root / "laws-again")]) == 0
    assert "## 3. ID accuracy" in capsys.readouterr().out and (root / "laws-again" / "laws.json").is_file()
    assert main(["compare", str(root / "nothing")]) == 2


@pytest.mark.slow
@pytest.mark.xdist_group("kgsim-sweep")
def test_rerun_sweep_resumes_with_every_stage_cached(local_sweep):
    _, root, _ = local_sweep
    cfg = load_config("smoke", overrides=["run.seeds=[0]"])
    again = run_sweep(cfg, {"finetune.unknown_share": [0.0, 0.5]}, root / "sweep", root / "cache", workers=2,
                      show=False, laws=False)
    computed = {t["kind"] for t in again.graph.tasks if t.get("cached") is False}
    assert computed == {"finish"} and not again.failed


@pytest.mark.slow
@pytest.mark.xdist_group("kgsim-sweep")
def test_a_failing_cell_is_reported_and_the_others_finish(local_sweep):
    _, root, _ = local_sweep
    cfg = load_config("smoke", overrides=["run.seeds=[0]"])
    res = run_sweep(cfg, {"splits.ft_size": [24, 2000]}, root / "fails", root / "cache", workers=2, show=False,
                    laws=False)
    status = {c["name"]: c["status"] for c in res.cells}
    assert status == {"ft_size-24": "done", "ft_size-2000": "failed"}
    assert "splits.ft_size = 2000" in res.failed[0]["error"]
    assert (root / "fails" / "cells" / "ft_size-2000" / "error.log").is_file()


@pytest.mark.slow
@pytest.mark.xdist_group("kgsim-sweep")
def test_engine_numbers_equal_run_seed(local_sweep, tmp_path):
    import torch

    from kgsim.study.runner import run_seed
    _, root, _ = local_sweep
    cfg = load_config("smoke", overrides=["finetune.unknown_share=0.5"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                      # as every engine task runs
    try:
        direct = run_seed(cfg, 0, tmp_path / "run", tmp_path / "cache")
    finally:
        torch.set_num_threads(threads)
    engine = json.loads((root / "sweep" / "cells" / "unknown_share-0.5" / "results.json").read_text())
    assert numbers({"per_seed": [direct]}) == numbers(engine)


def _spawn(*args):
    return subprocess.Popen([str(BIN / "dask"), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


@pytest.mark.slow
@pytest.mark.xdist_group("kgsim-sweep")
def test_distributed_sweep_survives_a_killed_worker(local_sweep, tmp_path):
    from distributed import Client
    _, root, _ = local_sweep
    sfile = tmp_path / "scheduler.json"
    procs = {"scheduler": _spawn("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                 "--scheduler-file", str(sfile))}
    try:
        for name in ("w0", "w1"):
            procs[name] = _spawn("worker", "--scheduler-file", str(sfile), "--nthreads", "1", "--nworkers", "1",
                                 "--name", name, "--host", "127.0.0.1", "--no-dashboard")
        deadline = time.time() + 120
        while not sfile.is_file() and time.time() < deadline:
            time.sleep(0.5)
        with Client(scheduler_file=str(sfile), timeout="60s") as client:
            client.wait_for_workers(2, timeout=180)
            out, cache = tmp_path / "sweep", tmp_path / "cache"
            sweep = subprocess.Popen([sys.executable, "-m", "kgsim", "sweep", "--preset", "smoke", "--seeds", "0",
                                      "--grid", "finetune.unknown_share=0", "--out", str(out), "--cache", str(cache),
                                      "--scheduler", client.scheduler.address, "--no-laws"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            pids = client.run(os.getpid)                          # worker address -> its process id
            victim = None
            while victim is None and time.time() < deadline + 300:
                busy = [a for a, keys in client.processing().items()
                        if any(str(k).startswith("pretrain-") for k in keys)]
                if busy and list(cache.glob("base-*/train/ckpt/checkpoint.json")):   # mid-task: a checkpoint written
                    victim = busy[0]
                time.sleep(0.2)
            assert victim is not None, "pretraining never started"
            os.killpg(procs[client.scheduler_info()["workers"][victim]["name"]].pid, signal.SIGKILL)
            _, err = sweep.communicate(timeout=900)
            assert sweep.returncode == 0, err
        meta = json.loads((out / "sweep.json").read_text())
        (pre,) = [t for t in meta["tasks"] if t["kind"] == "pretrain"]
        assert pre["status"] == "finished" and pre["worker"].rsplit(":", 1)[1] != str(pids[victim])
        got = numbers(json.loads((out / "cells" / "unknown_share-0" / "results.json").read_text()))
        local = numbers(json.loads((root / "sweep" / "cells" / "unknown_share-0" / "results.json").read_text()))
        assert got == local
    finally:
        for p in procs.values():
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
