"""The training loop for pretraining and fine-tuning: one readable file, in the manner of nanoGPT.

``train(model, rows, cfg, out_dir, seed=..., name=...)`` runs ``cfg.steps`` AdamW updates of next-token
cross-entropy on :class:`TokenRows`, writes one JSON line per logged step to ``metrics.jsonl``,
checkpoints to ``out_dir`` and returns a :class:`TrainResult`. Read top to bottom: the data
contract, the results and errors, the learning-rate schedule, the batch schedule, the optimizer,
checkpoint files, the loop.

Determinism and resumption. Everything random about update ``t`` is a pure function of
``(seed, name, t)``: its rows come from per-epoch permutations drawn from stream
``f"{name}/epoch{e}"``, and torch's global RNG (dropout) is reseeded from stream ``f"{name}/step{t}"``
inside a ``fork_rng`` block, so the caller's global RNG is left as it was and ``evaluate`` cannot
shift the training noise. A checkpoint (weights, AdamW moments, best Early-Stop value) is written
every ``cfg.ckpt_every`` steps and at the end, each file atomically, committed by one atomic write of
``ckpt/checkpoint.json``. A run killed at any point and restarted with the same arguments continues
from its last commit and, on CPU, ends with weights bit-identical to an uninterrupted run.
``metrics.jsonl`` is cut back to the checkpoint's step on resume, so no line is duplicated. A run
whose final checkpoint exists returns at once, with the Convergence weights loaded into ``model``.

Files in ``out_dir``: ``metrics.jsonl``; ``con.safetensors`` (Convergence: the final weights);
``es.safetensors`` (Early Stop: the weights at the best ``select_metric``, rewritten whenever it
improves); ``ckpt/checkpoint.json`` and the ``ckpt/step*.safetensors`` it names.

A line of ``metrics.jsonl`` is written at every ``log_every``, ``eval_every`` and ``ckpt_every``
step and at the end (and at step 0 when there is an ``evaluate``): ``step``; ``loss``, the mean
training loss over the steps since the previous line; ``lr`` and ``grad_norm`` (before clipping) of
this step; ``tokens_per_s``, input positions per second since the previous line; and the numbers
``evaluate`` returned at this step, if it ran.

>>> import tempfile
>>> from kgsim.core.config import ModelConfig
>>> from kgsim.nn.model import build_model
>>> tokens = np.tile(np.arange(1, 9), (16, 1))               # 16 rows of 8 tokens: 1 2 ... 8
>>> mask = np.ones_like(tokens, dtype=bool); mask[:, 0] = False
>>> model = build_model(ModelConfig(d_model=16, n_layers=1, n_heads=2, n_ctx=8), vocab_size=10, seed=0)
>>> cfg = TrainConfig(steps=20, batch_size=4, lr=1e-2, warmup_steps=2, log_every=10, eval_every=10, ckpt_every=10)
>>> out = tempfile.TemporaryDirectory()
>>> res = train(model, TokenRows(tokens, mask), cfg, out.name, seed=0, name="doc", progress=False)
>>> res.final_step, res.stopped_early, res.con_path.name
(20, False, 'con.safetensors')
>>> [json.loads(line)["step"] for line in open(res.metrics_path)]
[10, 20]
>>> out.cleanup()
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, load_model, save_file, save_model
from tqdm.auto import tqdm

from kgsim.core.config import TrainConfig, to_dict
from kgsim.core.io import file_mode
from kgsim.core.rng import torch_seed
from kgsim.core.rows import DataError, TokenRows
from kgsim.nn.model import GPT, save_weights
from kgsim.nn.precision import bf16_products

__all__ = ["TokenRows", "TrainResult", "train", "lr_at", "param_groups",
           "DataError", "NonFiniteLossError", "CheckpointMismatchError"]

TRAIN_KEYS = ("step", "loss", "lr", "grad_norm", "tokens_per_s")  # reserved keys of a metrics line


# --------------------------------------------------------------------------------------------
# Data contract, results, errors
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    ``es_step``/``es_metric``/``es_path`` are None without ``select_metric``. ``wall_time_s`` sums the
    sessions of a resumed run (work lost to a kill is not counted); ``tokens_per_s`` counts input
    positions per second of training (evaluation and checkpoints excluded). ``cached`` is True when
    the run had already finished and nothing was trained.
    """

    final_step: int
    stopped_early: bool
    es_step: int | None
    es_metric: float | None
    es_path: Path | None
    con_path: Path
    metrics_path: Path
    wall_time_s: float
    tokens_per_s: float
    cached: bool = False


class NonFiniteLossError(FloatingPointError):
    """The training loss (or gradient norm) became NaN or infinite; the message names step and value."""

    def __init__(self, step: int, value: float, what: str = "loss"):
        super().__init__(f"non-finite training {what} at step {step}: {value}")
        self.step, self.value = step, value


class CheckpointMismatchError(ValueError):
    """``out_dir`` holds a checkpoint of a different run (config, seed, name, data or initial weights)."""


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------

def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of update `step` (1-based): linear warmup over ``warmup_steps`` updates, then
    cosine decay from ``lr`` to ``lr * min_lr_ratio`` at update ``steps``.

    >>> cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    >>> lr_at(5, cfg), lr_at(10, cfg), lr_at(55, cfg), lr_at(100, cfg)
    (0.5, 1.0, 0.55, 0.1)
    """
    if step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    lr_min = cfg.lr * cfg.min_lr_ratio
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return lr_min + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - lr_min)


class BatchSchedule:
    """The rows of every update, a pure function of ``(seed, name, step)``.

    Rows are visited in epochs, each a permutation drawn from stream ``f"{name}/epoch{e}"``; update
    ``t`` (1-based) takes positions ``[(t-1)B, tB)`` of the epochs laid end to end, so every row is
    seen once per epoch and any step can be recomputed without replaying the ones before it.

    >>> s = BatchSchedule(n_rows=6, batch_size=4, seed=0, name="x")
    >>> sorted(torch.cat([s(1), s(2)[:2]]).tolist())   # the first epoch: every row once
    [0, 1, 2, 3, 4, 5]
    >>> bool((s(2) == BatchSchedule(6, 4, 0, "x")(2)).all())
    True
    """

    def __init__(self, n_rows: int, batch_size: int, seed: int, name: str):
        self.n_rows, self.batch_size, self.seed, self.name = n_rows, batch_size, seed, name
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(torch_seed(self.seed, f"{self.name}/epoch{epoch}"))
            self._perms[epoch] = torch.randperm(self.n_rows, generator=g)   # [n_rows]
        return self._perms[epoch]

    def __call__(self, step: int) -> torch.Tensor:
        """Row indices of update `step`: LongTensor [batch_size] (CPU)."""
        start = (step - 1) * self.batch_size
        first, last = start // self.n_rows, (start + self.batch_size - 1) // self.n_rows
        for e in [e for e in self._perms if e < first]:
            del self._perms[e]
        perm = torch.cat([self._perm(e) for e in range(first, last + 1)])   # [(last-first+1) * n_rows]
        offset = start - first * self.n_rows
        return perm[offset: offset + self.batch_size]


# --------------------------------------------------------------------------------------------
# Optimizer
# --------------------------------------------------------------------------------------------

def param_groups(model: nn.Module, weight_decay: float) -> tuple[list[dict], list[str]]:
    """AdamW parameter groups: decoupled weight decay on the weight matrices (every parameter of 2 or
    more dimensions) except embedding tables; none on biases, LayerNorm gains and embeddings.

    Embeddings are left undecayed because a row of the (tied) token embedding gets gradient only
    when its token occurs: decay would erode rarely shown entities between exposures, and exposure
    is the variable the study controls. Returns (groups, names of the decayed parameters).
    """
    embedding = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, decay_names = [], [], []
    for name, p in model.named_parameters():   # shared (tied) parameters are listed once
        if not p.requires_grad:
            continue
        if p.dim() >= 2 and id(p) not in embedding:
            decay.append(p)
            decay_names.append(name)
        else:
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return groups, decay_names


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.AdamW, list[str]]:
    """Fused AdamW where torch has the kernel for the device (CPU and CUDA in torch >= 2.4), else foreach."""
    groups, decay_names = param_groups(model, cfg.weight_decay)
    kw = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)
    try:
        return torch.optim.AdamW(groups, fused=True, **kw), decay_names
    except (RuntimeError, TypeError):  # pragma: no cover - older torch or an unsupported device
        return torch.optim.AdamW(groups, foreach=True, **kw), decay_names


# --------------------------------------------------------------------------------------------
# Files: atomic writes, run identity, checkpoints
# --------------------------------------------------------------------------------------------

def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write `path` via a temp file in the same directory, flushed to disk, then os.replace."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, file_mode())                  # safetensors writes 0600; a collaborator may read a run
    os.replace(tmp, path)


def _write_json(path: Path, obj: object) -> None:
    _atomic(path, lambda p: p.write_text(json.dumps(obj, indent=1) + "\n"))


def _write_weights(model: nn.Module, path: Path) -> None:
    """Public weights (es, con): kgsim.nn.model's format for a GPT (kgsim.nn.model.load_model reads it)."""
    if isinstance(getattr(model, "_orig_mod", model), GPT):
        _atomic(path, lambda p: save_weights(model, p))
    else:
        _atomic(path, lambda p: save_model(model, str(p)))


def _digest(*arrays: np.ndarray | torch.Tensor) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _identity(model: nn.Module, rows: TokenRows, cfg: TrainConfig, seed: int, name: str,
              select_metric: str | None) -> dict:
    """What makes a run this run; a checkpoint is reused only if every entry matches."""
    state = model.state_dict()
    return {
        "config": to_dict(cfg), "seed": seed, "name": name, "select_metric": select_metric,
        "data": _digest(rows.tokens.astype(np.int64, copy=False), rows.loss_mask),
        "params": hashlib.sha256(repr([(k, tuple(v.shape), str(v.dtype)) for k, v in state.items()])
                                 .encode()).hexdigest()[:16],
        "init_weights": _digest(*state.values()),
    }


def _check_identity(saved: dict, current: dict, out_dir: Path) -> None:
    diffs = []
    for key, value in current.items():
        if key == "config":
            old = saved.get("config", {})
            diffs += [f"config.{k} ({old.get(k)!r} there, {v!r} now)" for k, v in value.items() if old.get(k) != v]
        elif saved.get(key) != value:
            diffs.append(f"{key} ({saved.get(key)!r} there, {value!r} now)")
    if diffs:
        raise CheckpointMismatchError(
            f"{out_dir} holds a checkpoint of a different run: {'; '.join(diffs)}. "
            "Pass the same model (as first built or loaded), rows, config, seed and name, or use another out_dir.")


def _read_checkpoint(out_dir: Path) -> dict | None:
    path = out_dir / "ckpt" / "checkpoint.json"
    return json.loads(path.read_text()) if path.exists() else None


def _optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """AdamW state as flat tensors ('{param index}.{key}') for safetensors, plus any non-tensor values."""
    tensors, scalars = {}, {}
    for i, state in opt.state_dict()["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"{i}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{i}.{k}"] = v
    return tensors, scalars


def _load_optimizer_state(opt: torch.optim.Optimizer, path: Path, scalars: dict[str, object]) -> None:
    state: dict[int, dict] = {}
    for key, v in [*load_file(str(path)).items(), *scalars.items()]:
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    # Hyperparameters come from the current config (the identity check guarantees they match).
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

class _Run:
    """The state of one training run; :func:`train` is its public face."""

    def __init__(self, model, rows, cfg, out_dir, seed, name, evaluate, select_metric, stop, identity):
        self.model, self.cfg, self.out_dir, self.seed, self.name = model, cfg, out_dir, seed, name
        self.evaluate, self.select_metric, self.stop, self.identity = evaluate, select_metric, stop, identity
        self.device = next(model.parameters()).device
        self.tokens = torch.as_tensor(rows.tokens, dtype=torch.long, device=self.device)   # [n_rows, n_ctx]
        self.mask = torch.as_tensor(rows.loss_mask, device=self.device)                    # [n_rows, n_ctx]
        self.batches = BatchSchedule(rows.n_rows, cfg.batch_size, seed, name)
        self.opt, self.decay_names = _make_optimizer(model, cfg)
        self.params = [p for g in self.opt.param_groups for p in g["params"]]
        self.tokens_per_step = cfg.batch_size * (rows.n_ctx - 1)
        self.step, self.best, self.best_step = 0, None, None
        self.train_time, self.wall_before, self.t_start = 0.0, 0.0, time.perf_counter()
        self.t_window = self.t_start                                  # start of the current log window
        self.window: list[tuple[torch.Tensor, torch.Tensor]] = []   # (loss, grad norm) since the last flush

    # -- resumption ---------------------------------------------------------------------------

    def resume(self, ckpt: dict) -> None:
        """Load the weights, AdamW state, Early-Stop best and clocks of checkpoint `ckpt`."""
        d = self.out_dir / "ckpt"
        load_model(self.model, str(d / ckpt["model_file"]), device=str(self.device))
        _load_optimizer_state(self.opt, d / ckpt["optim_file"], ckpt["optim_scalars"])
        self.step, self.best, self.best_step = ckpt["step"], ckpt["best"], ckpt["best_step"]
        self.train_time, self.wall_before = ckpt["train_time_s"], ckpt["wall_time_s"]

    def truncate_metrics(self) -> None:
        """Keep the metrics lines of steps <= self.step (a killed run may have logged past it)."""
        path = self.out_dir / "metrics.jsonl"
        if not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= self.step:
                    keep.append(line + "\n")
            except (json.JSONDecodeError, KeyError):   # a line cut short by the kill
                pass
        _atomic(path, lambda p: p.write_text("".join(keep)))

    # -- one update ---------------------------------------------------------------------------

    def train_step(self, t: int) -> None:
        lr = lr_at(t, self.cfg)
        for g in self.opt.param_groups:
            g["lr"] = lr
        idx = self.batches(t).to(self.device)                                # [B]
        rows, mask = self.tokens[idx], self.mask[idx]                        # [B, n_ctx]
        torch.manual_seed(torch_seed(self.seed, f"{self.name}/step{t}"))     # dropout noise of update t
        with bf16_products(self.device.type, self.cfg.bf16):                # forward and backward
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
                _, loss = self.model(rows[:, :-1], rows[:, 1:], mask[:, 1:])    # inputs, targets [B, n_ctx-1]
            loss.backward()
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)   # pre-clip norm, no sync
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.window.append((loss.detach().float(), grad_norm.detach().float()))

    def flush(self, t: int) -> dict:
        """Sync once: check the window's losses are finite and summarise it as a metrics row."""
        values = torch.stack([torch.stack(v) for v in self.window]).tolist()   # [n, 2]
        first = t - len(values) + 1
        for k, (loss, gn) in enumerate(values):
            if not math.isfinite(loss):
                raise NonFiniteLossError(first + k, loss)
            if not math.isfinite(gn):
                raise NonFiniteLossError(first + k, gn, what="gradient norm")
        dt = time.perf_counter() - self.t_window
        self.train_time += dt
        self.window = []
        return {"step": t, "loss": sum(v[0] for v in values) / len(values), "lr": lr_at(t, self.cfg),
                "grad_norm": values[-1][1], "tokens_per_s": len(values) * self.tokens_per_step / max(dt, 1e-9)}

    # -- evaluation, Early Stop ---------------------------------------------------------------

    def eval_row(self, t: int) -> dict:
        """evaluate(model, t) in eval mode under no_grad; saves es.safetensors when select_metric improves."""
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            row = {k: float(v) for k, v in self.evaluate(self.model, t).items()}
        self.model.train(was_training)
        if clash := sorted(row.keys() & set(TRAIN_KEYS)):
            raise ValueError(f"evaluate() returned reserved metric names {clash}; rename them")
        if self.select_metric is not None:
            if self.select_metric not in row:
                raise ValueError(f"select_metric = {self.select_metric!r}: not among evaluate()'s "
                                 f"metrics {sorted(row)}")
            value = row[self.select_metric]
            if math.isfinite(value) and (self.best is None or value > self.best):   # ties keep the earliest
                self.best, self.best_step = value, t
                _write_weights(self.model, self.out_dir / "es.safetensors")
        return row

    # -- checkpoints ----------------------------------------------------------------------------

    def save(self, t: int, finished: bool, stopped_early: bool) -> dict:
        """Write checkpoint t (and con.safetensors if finished); commit by writing checkpoint.json."""
        d, tag = self.out_dir / "ckpt", f"step{t:07d}"
        model_file, optim_file = f"{tag}.model.safetensors", f"{tag}.optim.safetensors"
        _atomic(d / model_file, lambda p: save_model(self.model, str(p)))
        tensors, scalars = _optimizer_state(self.opt)
        _atomic(d / optim_file, lambda p: save_file(tensors, str(p)))
        if finished:
            _write_weights(self.model, self.out_dir / "con.safetensors")
        meta = {
            "step": t, "finished": finished, "stopped_early": stopped_early,
            "best": self.best, "best_step": self.best_step, "select_metric": self.select_metric,
            "model_file": model_file, "optim_file": optim_file, "optim_scalars": scalars,
            "train_time_s": self.train_time, "tokens": t * self.tokens_per_step,
            "wall_time_s": self.wall_before + time.perf_counter() - self.t_start,
            "decayed_params": self.decay_names,
            "streams": {"seed": self.seed, "batches": f"{self.name}/epoch{{e}}", "dropout": f"{self.name}/step{{t}}"},
            "identity": self.identity,
            "config_hash": hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:16],
        }
        _write_json(d / "checkpoint.json", meta)
        for f in d.glob("*.safetensors"):   # older checkpoints and files of a killed write
            if f.name not in (model_file, optim_file):
                f.unlink()
        return meta

    def run(self, progress: bool) -> dict:
        """Train from self.step to the end (or until stop()); returns the final checkpoint's metadata."""
        cfg, evaluate = self.cfg, self.evaluate
        self.truncate_metrics()
        with open(self.out_dir / "metrics.jsonl", "a") as log, \
                tqdm(total=cfg.steps, initial=self.step, desc=self.name, disable=not progress,
                     dynamic_ncols=True) as bar:
            def write(row):
                log.write(json.dumps(row) + "\n")
                log.flush()

            self.model.train()
            if self.step == 0 and evaluate is not None:
                row = {"step": 0} | self.eval_row(0)
                write(row)
                if self.stop is not None and self.stop(row):
                    return self.save(0, finished=True, stopped_early=True)
            self.t_window, meta = time.perf_counter(), None
            for t in range(self.step + 1, cfg.steps + 1):
                self.train_step(t)
                bar.update()
                last = t == cfg.steps
                is_eval = evaluate is not None and (t % cfg.eval_every == 0 or last)
                is_ckpt = t % cfg.ckpt_every == 0 or last
                if not (t % cfg.log_every == 0 or is_eval or is_ckpt):
                    continue
                row = self.flush(t)
                if is_eval:
                    row |= self.eval_row(t)
                write(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
                stopped = is_eval and not last and self.stop is not None and bool(self.stop(row))
                if is_ckpt or stopped:
                    meta = self.save(t, finished=last or stopped, stopped_early=stopped)
                    if stopped:
                        return meta
                self.t_window = time.perf_counter()
        assert meta is not None, "the last step always commits a finished checkpoint"
        return meta


def _result(out_dir: Path, meta: dict, cached: bool) -> TrainResult:
    has_es = meta["select_metric"] is not None and meta["best_step"] is not None
    return TrainResult(
        final_step=meta["step"], stopped_early=meta["stopped_early"],
        es_step=meta["best_step"] if has_es else None, es_metric=meta["best"] if has_es else None,
        es_path=out_dir / "es.safetensors" if has_es else None, con_path=out_dir / "con.safetensors",
        metrics_path=out_dir / "metrics.jsonl", wall_time_s=meta["wall_time_s"],
        tokens_per_s=meta["tokens"] / meta["train_time_s"] if meta["train_time_s"] > 0 else 0.0, cached=cached)


def train(model: nn.Module, rows: TokenRows, cfg: TrainConfig, out_dir: str | Path, *, seed: int, name: str,
          evaluate: Callable[[nn.Module, int], Mapping[str, float]] | None = None,
          select_metric: str | None = None, stop: Callable[[dict], bool] | None = None,
          progress: bool = True) -> TrainResult:
    """Train `model` in place on `rows` for ``cfg.steps`` AdamW updates (see the module docstring).

    - ``model(idx, targets, loss_mask) -> (logits | None, loss)``; rows are shifted here
      (``idx = tokens[:, :-1]``, ``targets = tokens[:, 1:]``, ``loss_mask = loss_mask[:, 1:]``).
    - ``evaluate(model, step) -> {metric: number}`` runs at step 0, every ``cfg.eval_every`` steps and
      at the end, in eval mode under no_grad; its numbers join that step's metrics line. It must be
      deterministic for a resumed run to reproduce the same Early Stop choice.
    - ``select_metric``: a key of evaluate's output; the weights at its best value (higher is better,
      ties keep the earliest step, step 0 included) are the Early Stop checkpoint ``es.safetensors``.
    - ``stop(metrics_row) -> bool``, asked after each evaluation before the end: True ends training
      there (``stopped_early``), and that step's weights are the Convergence checkpoint.
    - ``progress``: show a tqdm bar.

    On return `model` holds the Convergence weights (also when the finished run was cached).
    `seed` and `name` key the random streams (batches, dropout), so two phases trained with the
    same seed draw different batches when their names differ.

    Raises NonFiniteLossError (naming the step) when the loss or gradient norm is not finite,
    CheckpointMismatchError when `out_dir` holds a checkpoint of a different run, ValueError on
    ``select_metric`` without ``evaluate`` or absent from its output, DataError on rows that do not
    fit the model's context.
    """
    if select_metric is not None and evaluate is None:
        raise ValueError(f"select_metric = {select_metric!r} needs an evaluate function")
    n_ctx, vocab_size = getattr(getattr(model, "cfg", None), "n_ctx", None), getattr(model, "vocab_size", None)
    if n_ctx is not None and rows.n_ctx - 1 > n_ctx:
        raise DataError(f"rows hold {rows.n_ctx} tokens (inputs of {rows.n_ctx - 1}) but the model's n_ctx is {n_ctx}")
    if vocab_size is not None and rows.tokens.max() >= vocab_size:
        raise DataError(f"tokens: id {int(rows.tokens.max())} is outside the model's vocabulary (vocab_size {vocab_size})")
    out_dir = Path(out_dir)
    (out_dir / "ckpt").mkdir(parents=True, exist_ok=True)
    for tmp in [*out_dir.glob(".*.tmp"), *(out_dir / "ckpt").glob(".*.tmp")]:   # left by a killed write
        tmp.unlink()
    identity = _identity(model, rows, cfg, seed, name, select_metric)
    ckpt = _read_checkpoint(out_dir)
    if ckpt is not None:
        _check_identity(ckpt["identity"], identity, out_dir)
        if ckpt["finished"]:
            load_model(model, str(out_dir / "con.safetensors"), device=str(next(model.parameters()).device))
            return _result(out_dir, ckpt, cached=True)

    device = next(model.parameters()).device
    threads, was_training = torch.get_num_threads(), model.training
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            run = _Run(model, rows, cfg, out_dir, seed, name, evaluate, select_metric, stop, identity)
            if ckpt is not None:
                run.resume(ckpt)
            meta = run.run(progress)
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)
    return _result(out_dir, meta, cached=False)
