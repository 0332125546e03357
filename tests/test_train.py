"""Contract tests of kgsim.nn.train: tiny GPTs, tens of steps, one thread.

The kill-and-resume test runs this file as a script (see the bottom): a worker process that trains
the same run as the tests and SIGKILLs itself at a chosen point, so a real kill is exercised.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

from kgsim.core.config import ModelConfig, TrainConfig
from kgsim.core.rng import stream
from kgsim.nn.model import build_model, load_model
from kgsim.nn.train import (
    BatchSchedule,
    CheckpointMismatchError,
    DataError,
    NonFiniteLossError,
    TokenRows,
    lr_at,
    param_groups,
    train,
)

MODEL = ModelConfig(d_model=16, n_layers=1, n_heads=2, n_ctx=11)
VOCAB = 24
CFG = TrainConfig(steps=40, batch_size=8, lr=1e-2, warmup_steps=4, log_every=5, eval_every=5,
                  ckpt_every=10, threads=1, bf16=True)


def make_rows(n_rows: int = 24, n_ctx: int = 12, seed: int = 0) -> TokenRows:
    """Counting rows (ids 1..VOCAB-1) from random starts, a pattern a tiny model learns in tens of
    steps; targets everywhere but j = 0."""
    start = stream(seed, "test-train-rows").integers(0, VOCAB - 1, (n_rows, 1))
    tokens = 1 + (start + np.arange(n_ctx)) % (VOCAB - 1)                   # [n_rows, n_ctx]
    mask = np.ones((n_rows, n_ctx), bool)
    mask[:, 0] = False
    return TokenRows(tokens, mask)


def eval_loss(model, step) -> dict:
    """A deterministic metric of the weights: minus the mean loss on the first 8 rows."""
    rows = make_rows()
    x = torch.as_tensor(rows.tokens[:8])
    _, loss = model(x[:, :-1], x[:, 1:], torch.as_tensor(rows.loss_mask[:8, 1:]))
    return {"neg_loss": -loss.item()}


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def lines(path) -> list[dict]:
    return [json.loads(s) for s in Path(path).read_text().splitlines()]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------------------------
# Units: schedules, data contract, parameter groups
# --------------------------------------------------------------------------------------------

def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(steps=50, lr=2.0, warmup_steps=5, min_lr_ratio=0.25)
    lrs = [lr_at(t, cfg) for t in range(1, 51)]
    assert lrs[:5] == pytest.approx([0.4, 0.8, 1.2, 1.6, 2.0])
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[-1] == pytest.approx(0.5)
    no_warmup = TrainConfig(steps=10, lr=1.0, warmup_steps=0, min_lr_ratio=0.0)
    assert lr_at(1, no_warmup) < 1.0 and lr_at(10, no_warmup) == pytest.approx(0.0)


@pytest.mark.parametrize("n_rows,batch_size", [(10, 3), (10, 10), (4, 9)])
def test_batch_schedule_covers_every_row_once_per_epoch(n_rows, batch_size):
    s = BatchSchedule(n_rows, batch_size, seed=3, name="ft")
    n_steps = 3 * n_rows  # 3 * batch_size epochs
    flat = torch.cat([s(t) for t in range(1, n_steps + 1)]).view(-1, n_rows)   # [epochs, n_rows]
    assert all(sorted(e.tolist()) == list(range(n_rows)) for e in flat)
    assert len({tuple(e.tolist()) for e in flat}) > 1                           # epochs reshuffle
    fresh = BatchSchedule(n_rows, batch_size, seed=3, name="ft")
    assert torch.equal(fresh(7), s(7))                                          # pure in the step


def test_batch_schedule_depends_on_seed_and_name():
    base = [BatchSchedule(50, 10, 0, "pretrain")(t) for t in (1, 2)]
    assert not all(torch.equal(a, b) for a, b in zip(base, [BatchSchedule(50, 10, 1, "pretrain")(t) for t in (1, 2)]))
    assert not all(torch.equal(a, b) for a, b in zip(base, [BatchSchedule(50, 10, 0, "ft-known")(t) for t in (1, 2)]))


def test_token_rows_contract():
    rows = make_rows(n_rows=3, n_ctx=5)
    assert (rows.n_rows, rows.n_ctx) == (3, 5)
    with pytest.raises(DataError, match="loss_mask"):
        TokenRows(rows.tokens, rows.loss_mask.astype(int))
    with pytest.raises(DataError, match="position 0"):
        TokenRows(rows.tokens, np.ones_like(rows.loss_mask))
    with pytest.raises(DataError, match="tokens"):
        TokenRows(rows.tokens[0], rows.loss_mask[0])
    with pytest.raises(DataError, match="no position"):
        TokenRows(rows.tokens, np.zeros_like(rows.loss_mask))
    with pytest.raises(DataError, match="n_ctx is 11"):
        train(build_model(MODEL, VOCAB, 0), make_rows(n_ctx=14), CFG, "unused", seed=0, name="x", progress=False)
    with pytest.raises(DataError, match=r"id \d+ is outside the model.s vocabulary"):
        train(build_model(MODEL, VOCAB, 0), TokenRows(rows.tokens + 10, rows.loss_mask), CFG, "unused", seed=0,
              name="x", progress=False)


def test_weight_decay_on_matrices_only():
    model = build_model(MODEL, VOCAB, 0)
    (decay, no_decay), names = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert sorted(names) == ["h.0.attn.c_attn.weight", "h.0.attn.c_proj.weight",
                             "h.0.mlp.c_fc.weight", "h.0.mlp.c_proj.weight"]
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def test_loss_falls_and_every_parameter_changes(tmp_path):
    model = build_model(MODEL, VOCAB, 0)
    before = {k: v.clone() for k, v in model.named_parameters()}
    rng_before = torch.get_rng_state()
    res = train(model, make_rows(), CFG, tmp_path, seed=0, name="pre", progress=False)
    assert torch.equal(torch.get_rng_state(), rng_before)       # the caller's global RNG is untouched
    log = [r for r in lines(res.metrics_path) if "loss" in r]
    assert [r["step"] for r in log] == list(range(5, 41, 5))
    assert log[-1]["loss"] < 0.8 * log[0]["loss"], [r["loss"] for r in log]
    unchanged = [k for k, p in model.named_parameters() if torch.equal(p, before[k])]
    assert unchanged == []
    assert_same_weights(weights(res.con_path), {k: v for k, v in model.state_dict().items()})
    assert res.final_step == 40 and not res.stopped_early and res.es_path is None and res.tokens_per_s > 0
    assert all(math.isfinite(r["grad_norm"]) and r["tokens_per_s"] > 0 for r in log)


def test_same_seed_same_curve_other_seed_differs(tmp_path):
    def curve(seed, d):
        res = train(build_model(MODEL, VOCAB, 0), make_rows(), CFG, tmp_path / d, seed=seed, name="pre",
                    progress=False)
        return [(r["step"], r["loss"], r["grad_norm"]) for r in lines(res.metrics_path) if "loss" in r]

    a, b, c = curve(0, "a"), curve(0, "b"), curve(1, "c")
    assert a == b
    assert a != c


def test_non_finite_loss_stops_with_the_step(tmp_path):
    class NaNAtCall(nn.Module):
        def __init__(self, inner, at):
            super().__init__()
            self.inner, self.at, self.calls = inner, at, 0

        def forward(self, idx, targets=None, loss_mask=None):
            logits, loss = self.inner(idx, targets, loss_mask)
            self.calls += 1
            return logits, (loss * float("nan") if self.calls == self.at else loss)

    model = NaNAtCall(build_model(MODEL, VOCAB, 0), at=17)
    with pytest.raises(NonFiniteLossError, match=r"loss at step 17: nan") as e:
        train(model, make_rows(), CFG, tmp_path, seed=0, name="pre", progress=False)
    assert e.value.step == 17
    ckpt = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    assert ckpt["step"] == 10 and not ckpt["finished"]          # nothing after the bad step was committed
    assert max(r["step"] for r in lines(tmp_path / "metrics.jsonl")) == 15


def test_early_stop_keeps_the_best_metric_checkpoint_ties_earliest(tmp_path):
    script = {0: 0.1, 5: 0.3, 10: 0.5, 15: 0.9, 20: 0.4, 25: 0.9, 30: 0.2, 35: 0.1, 40: 0.0}
    snapshots = {}

    def evaluate(model, step):
        snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"dev_acc": script[step], "other": 1.0}

    res = train(build_model(MODEL, VOCAB, 0), make_rows(), CFG, tmp_path, seed=0, name="ft",
                evaluate=evaluate, select_metric="dev_acc", progress=False)
    assert sorted(snapshots) == sorted(script)
    assert (res.es_step, res.es_metric) == (15, 0.9)
    assert_same_weights(weights(res.es_path), snapshots[15])
    assert_same_weights(weights(res.con_path), snapshots[40])
    assert not torch.equal(weights(res.es_path)["wte.weight"], snapshots[40]["wte.weight"])
    assert load_model(res.es_path).cfg == MODEL                  # kgsim.nn.model can rebuild the ES model
    log = lines(res.metrics_path)
    assert [r["dev_acc"] for r in log] == [script[s] for s in sorted(script)]
    assert "loss" not in log[0] and log[0]["step"] == 0


def test_evaluate_errors_are_named(tmp_path):
    with pytest.raises(ValueError, match="needs an evaluate"):
        train(build_model(MODEL, VOCAB, 0), make_rows(), CFG, tmp_path / "a", seed=0, name="x",
              select_metric="acc", progress=False)
    with pytest.raises(ValueError, match=r"select_metric = 'acc'.*\['dev'\]"):
        train(build_model(MODEL, VOCAB, 0), make_rows(), CFG, tmp_path / "b", seed=0, name="x",
              evaluate=lambda m, s: {"dev": 0.0}, select_metric="acc", progress=False)
    with pytest.raises(ValueError, match="reserved"):
        train(build_model(MODEL, VOCAB, 0), make_rows(), CFG, tmp_path / "c", seed=0, name="x",
              evaluate=lambda m, s: {"loss": 0.0}, progress=False)


def test_stop_ends_training_at_an_evaluation_and_is_recorded(tmp_path):
    evaluate = lambda model, step: {"fit": float(step >= 20)}  # noqa: E731
    stop = lambda row: row["fit"] == 1.0                        # noqa: E731
    res = train(build_model(MODEL, VOCAB, 0), make_rows(), CFG, tmp_path, seed=0, name="ft",
                evaluate=evaluate, select_metric="fit", stop=stop, progress=False)
    assert (res.final_step, res.stopped_early, res.es_step) == (20, True, 20)
    assert lines(res.metrics_path)[-1]["step"] == 20
    assert_same_weights(weights(res.con_path), weights(res.es_path))
    again = train(build_model(MODEL, VOCAB, 0), make_rows(), CFG, tmp_path, seed=0, name="ft",
                  evaluate=evaluate, select_metric="fit", stop=stop, progress=False)
    assert again.cached and (again.final_step, again.stopped_early) == (20, True)


def test_a_finished_run_is_reused_and_a_different_one_refused(tmp_path):
    first = train(build_model(MODEL, VOCAB, 0), make_rows(), CFG, tmp_path, seed=0, name="pre",
                  evaluate=eval_loss, select_metric="neg_loss", progress=False)
    log = (tmp_path / "metrics.jsonl").read_text()
    calls = []
    model = build_model(MODEL, VOCAB, 0)
    t0 = time.perf_counter()
    again = train(model, make_rows(), CFG, tmp_path, seed=0, name="pre", progress=False, select_metric="neg_loss",
                  evaluate=lambda m, s: calls.append(s) or eval_loss(m, s))
    assert time.perf_counter() - t0 < 1.0
    assert again.cached and not first.cached and calls == []
    assert (again.final_step, again.es_step, again.es_metric) == (first.final_step, first.es_step, first.es_metric)
    assert (tmp_path / "metrics.jsonl").read_text() == log
    assert_same_weights(dict(model.state_dict()), weights(first.con_path))   # the model holds Con. weights
    with pytest.raises(CheckpointMismatchError, match=r"config\.lr \(0\.01 there, 0\.02 now\)"):
        train(build_model(MODEL, VOCAB, 0), make_rows(), TrainConfig(**{**CFG.__dict__, "lr": 0.02}), tmp_path,
              seed=0, name="pre", evaluate=eval_loss, select_metric="neg_loss", progress=False)
    with pytest.raises(CheckpointMismatchError, match="init_weights"):
        train(build_model(MODEL, VOCAB, 1), make_rows(), CFG, tmp_path, seed=0, name="pre",
              evaluate=eval_loss, select_metric="neg_loss", progress=False)


# --------------------------------------------------------------------------------------------
# Kill and resume: a real SIGKILL in a worker process, then completion here
# --------------------------------------------------------------------------------------------

def _run_worker(out_dir: Path, kill: dict) -> int:
    proc = subprocess.run([sys.executable, __file__, str(out_dir), json.dumps(kill)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    return proc.returncode


def test_killed_runs_resume_to_bit_identical_weights(tmp_path):
    kwargs = dict(seed=0, name="pre", evaluate=eval_loss, select_metric="neg_loss", progress=False)
    ref = train(build_model(MODEL, VOCAB, 0), make_rows(), CFG, tmp_path / "ref", **kwargs)

    out = tmp_path / "killed"
    # 1: mid-checkpoint, step 20's files written but not committed -> resumes from step 10.
    _run_worker(out, {"file": "checkpoint.json", "nth": 2, "when": "before"})
    assert json.loads((out / "ckpt" / "checkpoint.json").read_text())["step"] == 10
    assert max(r["step"] for r in lines(out / "metrics.jsonl")) == 20
    # 2: inside the evaluation of step 25, between checkpoints -> resumes from step 20.
    _run_worker(out, {"eval_step": 25})
    # 3: after con.safetensors is written, before the final commit -> resumes from step 30.
    _run_worker(out, {"file": "con.safetensors", "nth": 1, "when": "after"})
    assert json.loads((out / "ckpt" / "checkpoint.json").read_text())["step"] == 30

    res = train(build_model(MODEL, VOCAB, 0), make_rows(), CFG, out, **kwargs)
    assert not res.cached and res.final_step == 40
    assert_same_weights(weights(res.con_path), weights(ref.con_path))
    assert_same_weights(weights(res.es_path), weights(ref.es_path))
    assert (res.es_step, res.es_metric) == (ref.es_step, ref.es_metric)
    ours, theirs = lines(res.metrics_path), lines(ref.metrics_path)
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]              # no duplicated lines
    drop = ("tokens_per_s",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in ours] == \
           [{k: v for k, v in r.items() if k not in drop} for r in theirs]
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == \
           ["checkpoint.json", "step0000040.model.safetensors", "step0000040.optim.safetensors"]


def _worker(out_dir: str, kill: dict) -> None:
    """Train the run of test_killed_runs_resume_to_bit_identical_weights, SIGKILLing itself at `kill`:
    {"file": name, "nth": n, "when": "before"|"after"} around the n-th os.replace onto that file, or
    {"eval_step": t} inside evaluate at step t."""
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    replace, seen = os.replace, []

    def killing_replace(src, dst):
        if Path(dst).name == kill.get("file"):
            seen.append(dst)
            if len(seen) == kill["nth"] and kill["when"] == "before":
                die()
        replace(src, dst)
        if len(seen) == kill.get("nth") and kill.get("when") == "after" and Path(dst).name == kill["file"]:
            die()

    def evaluate(model, step):
        if step == kill.get("eval_step"):
            die()
        return eval_loss(model, step)

    os.replace = killing_replace
    train(build_model(MODEL, VOCAB, 0), make_rows(), CFG, out_dir, seed=0, name="pre", evaluate=evaluate,
          select_metric="neg_loss", progress=False)
    raise SystemExit(f"the worker was not killed: {kill}")


if __name__ == "__main__":
    _worker(sys.argv[1], json.loads(sys.argv[2]))
