"""Fine-tuning a causal LM on question-answer examples: full or LoRA, with Early Stop and
Convergence checkpoints (science.md §1: FT-Known / FT-Unknown at ES and Con.).

Method and precision. ``method`` is ``full``, ``lora``, or ``auto`` (LoRA for a model of at least
``lora_min_params`` parameters, counted from its config; full below). ``master_dtype = "runtime"``
trains the weights in ``runtime.dtype`` (pure bf16 AdamW when that is bfloat16: for 8B, ~64 GB of
weights, gradients and optimiser state); ``"float32"`` keeps the trainable weights (all of them, or
the adapter) and AdamW's state in float32, and ``bf16 = true`` runs the forward and backward under
bf16 autocast (the ``gpu`` preset: LoRA over a bf16 base from 3B parameters).

:func:`finetune` trains with the transformers ``Trainer`` on ``Q: question\\nA: answer\\n``
examples (loss on the answer tokens only). A :class:`DevAccuracyCallback` measures
**generation-based** dev accuracy (greedy, zero-shot, the same matching as evaluation) every
``eval_every`` optimiser steps and at the last step, and keeps the best-so-far weights (earliest step
on ties) as the **ES** checkpoint; the model after the last step is the **Con.** checkpoint, whose
fit to the training set is measured and recorded. Checkpoints are safetensors: the whole model for
``method="full"``, the adapter for ``method="lora"`` (plus ``bridge_checkpoint.json`` naming the base
model); :func:`load_checkpoint` loads either (LoRA merged into the base for fast inference).

Each checkpoint is written once: the best-so-far ES weights (the trainable parameters: every weight,
or the adapter) are copied into host memory at each improvement and written to ``es/`` when
training ends, not on every improvement. Resuming is unchanged: a run is cached only once
``finetune.json`` is written (after ``es/`` and ``con/``), and an interrupted fine-tuning starts
again from the base model (there is no mid-training resume), so a killed run leaves no ES checkpoint
that a rerun would trust.

Randomness: the Trainer seeds its own data order (and dropout) from ``args.seed``, derived from the
run seed by ``kgsim.core.rng.torch_seed(seed, "finetune")`` (the Trainer's ``set_seed`` is the one global
seeding, at this fine-tuning boundary); LoRA ``A`` matrices are drawn from a seeded generator.

Multi-GPU (data parallel). :func:`finetune` runs unchanged under a launcher, one process per GPU::

    accelerate launch --num_processes 4 -m kgsim bridge run --model DIR ... --out RUN
    torchrun --nproc_per_node 4 -m kgsim bridge run --model DIR ... --out RUN

(or any script that calls :func:`llm_bridge.pipeline.run_bridge` or :func:`finetune`).

Every process loads the model and the Trainer wraps it in DDP; every process computes the same
greedy dev accuracy (so all agree on the best step) and only the main process writes checkpoints and
``finetune.json``. Sharded training (FSDP, DeepSpeed ZeRO-3) is not supported: the dev callback
generates with the unwrapped model. Under the same launch the pipeline shares its other stages
among the processes (:mod:`llm_bridge.pipeline`): SliCK chunks and evaluation checkpoints are dealt
round-robin, each on its rank's GPU, with one process's results; the similarity split (seconds)
runs on the main process.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from kgsim.core.config import ConfigError
from kgsim.core.rng import torch_generator, torch_seed
from kgsim.study.lm import FitResult
from kgsim.study.lm import accuracy as study_accuracy

from .datasets import QAExample
from .lm import HFLM
from .matching import MATCH_MODES
from .models import load_model, load_tokenizer, terminal_bars_only
from .prompts import TEXT

METHODS = ("full", "lora", "auto")
MASTER_DTYPES = ("runtime", "float32")
CHECKPOINT_INFO = "bridge_checkpoint.json"


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run (applied identically to FT-Known and FT-Unknown)."""

    method: str = "full"                # full | lora | auto (lora at >= lora_min_params parameters, else full)
    lora_min_params: int = 3_000_000_000
    epochs: float = 10.0                # training length (Con.) unless max_steps > 0
    max_steps: int = 0
    batch_size: int = 8                 # per device
    grad_accum: int = 1
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_scheduler: str = "constant"      # any transformers scheduler name
    eval_every: int = 10                # optimiser steps between dev evaluations (Early Stop granularity)
    eval_batch_size: int = 32
    max_new_tokens: int = 16
    max_length: int = 256               # tokens per training example
    fit_eval_size: int = 256            # training examples scored at Con. to report the fit
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: str = "all-linear"    # or comma-separated module names, e.g. "q_proj,v_proj"
    bf16: bool = False                  # bf16 autocast (the Trainer's mixed precision)
    master_dtype: str = "runtime"       # trainable weights and optimiser state: runtime.dtype, or float32
    activation_checkpointing: bool = False  # (gradient checkpointing) trade compute for memory
    match: str = "em"

    def validate(self, p: str = "finetune") -> None:
        def fail(key: str, why: str):
            raise ConfigError(f"{p}.{key} = {getattr(self, key)!r}: {why}")

        if self.method not in METHODS:
            fail("method", f"choose one of {list(METHODS)}")
        if self.match not in MATCH_MODES:
            fail("match", f"choose one of {list(MATCH_MODES)}")
        if self.master_dtype not in MASTER_DTYPES:
            fail("master_dtype", f"choose one of {list(MASTER_DTYPES)}")
        for key in ("batch_size", "grad_accum", "eval_every", "eval_batch_size", "max_new_tokens", "max_length",
                    "fit_eval_size", "lora_r", "lora_alpha", "lora_min_params"):
            if getattr(self, key) < 1:
                fail(key, "must be >= 1")
        for key in ("max_steps", "warmup_steps"):
            if getattr(self, key) < 0:
                fail(key, "must be >= 0")
        for key in ("epochs", "lr"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                fail(key, "must be a finite number > 0")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            fail("weight_decay", "must be a finite number >= 0")
        if not 0 <= self.lora_dropout < 1:
            fail("lora_dropout", "must lie in [0, 1)")
        if not self.lora_targets.strip():
            fail("lora_targets", "name 'all-linear' or some modules")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def encode_example(tokenizer, example: QAExample, max_length: int, fmt=TEXT) -> dict:
    """Token ids of prompt + target (``fmt.finetune_pair``), with labels -100 on the prompt (loss on
    the answer only)."""
    prompt, target = fmt.finetune_pair(example)
    p_ids = tokenizer(prompt)["input_ids"]
    ids = tokenizer(prompt + target)["input_ids"]
    n = 0
    while n < min(len(p_ids), len(ids)) and p_ids[n] == ids[n]:   # shared prefix (merges may cross the seam)
        n += 1
    ids = ids[:max_length]
    labels = [-100] * min(n, len(ids)) + ids[n:]
    return {"input_ids": ids, "labels": labels}


class QADataset(torch.utils.data.Dataset):
    def __init__(self, examples: Sequence[QAExample], tokenizer, max_length: int, fmt=TEXT):
        self.items = [encode_example(tokenizer, e, max_length, fmt) for e in examples]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class PadCollator:
    """Right-pads a batch: input_ids [B, T], attention_mask [B, T], labels [B, T] (-100 on pads)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def accuracy(model, tokenizer, examples: Sequence[QAExample], *, match: str = "em", batch_size: int = 32,
             max_new_tokens: int = 16, fmt=TEXT) -> float:
    """Share of examples answered correctly under the zero-shot prompt (of format `fmt`), greedy
    (:func:`kgsim.study.lm.accuracy` on the model as an :class:`~llm_bridge.lm.HFLM`; 0.0 for none)."""
    if not examples:
        return 0.0
    lm = HFLM(model, tokenizer, fmt, match=match, batch_size=batch_size, max_new_tokens=max_new_tokens)
    return study_accuracy(lm, fmt.zero_shot(examples), examples)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def save_checkpoint(model, tokenizer, out_dir: str | Path, info: dict) -> Path:
    """Save model (or LoRA adapter) + tokenizer as safetensors, and `info` as bridge_checkpoint.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with terminal_bars_only():
        model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    (out / CHECKPOINT_INFO).write_text(json.dumps(info, indent=1))
    return out


def load_checkpoint(ckpt_dir: str | Path, dtype: str = "auto", device: str | None = "auto", device_map: str = ""):
    """``(model, tokenizer)`` of an ES or Con. checkpoint (a LoRA adapter is merged into its base).

    Raises:
        FileNotFoundError: not a checkpoint written by :func:`finetune`.
    """
    d = Path(ckpt_dir)
    if not (d / CHECKPOINT_INFO).is_file():
        raise FileNotFoundError(f"{d}: no {CHECKPOINT_INFO} (not a bridge checkpoint)")
    info = json.loads((d / CHECKPOINT_INFO).read_text())
    if info["method"] != "lora":
        return load_model(d, dtype=dtype, device=device, device_map=device_map)
    # peft is an optional dependency (the llm extra): imported on use
    from peft import PeftModel

    base, _ = load_model(info["base_model"], dtype=dtype, device=device, device_map=device_map)
    model = PeftModel.from_pretrained(base, str(d)).merge_and_unload()
    model.eval()
    return model, load_tokenizer(d)


class _Snapshot:
    """Host copies of a model's trainable parameters (every weight, or a LoRA adapter), refreshed in
    place (pinned buffers and asynchronous copies from a GPU: training goes on meanwhile)."""

    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}

    def take(self, model) -> None:
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            buf = self.buffers.get(name)
            if buf is None:
                pin = p.is_cuda and torch.cuda.is_available()
                buf = self.buffers[name] = torch.empty(p.shape, dtype=p.dtype, device="cpu", pin_memory=pin)
            buf.copy_(p.detach(), non_blocking=True)

    @torch.no_grad()
    def put(self, model) -> None:
        """Copy the snapshot back into `model`'s parameters."""
        if torch.cuda.is_available():
            torch.cuda.synchronize()                          # the host copies are complete
        params = dict(model.named_parameters())
        for name, buf in self.buffers.items():
            params[name].copy_(buf)


class DevAccuracyCallback:
    """TrainerCallback: dev accuracy every `eval_every` steps and at the end; keeps the best weights
    (ES) in host memory and writes them to `es_dir` when training ends."""

    def __init__(self, dev: Sequence[QAExample], tokenizer, cfg: FinetuneConfig, es_dir: Path, info: dict,
                 fmt=TEXT):
        self.dev, self.tokenizer, self.cfg, self.es_dir, self.info, self.fmt = dev, tokenizer, cfg, es_dir, info, fmt
        self.history: list[dict] = []
        self.best_acc, self.best_step = -1.0, -1
        self.best = _Snapshot()

    def _evaluate(self, state, model) -> None:
        acc = accuracy(model, self.tokenizer, self.dev, match=self.cfg.match, batch_size=self.cfg.eval_batch_size,
                       max_new_tokens=self.cfg.max_new_tokens, fmt=self.fmt)
        self.history.append({"step": state.global_step, "epoch": state.epoch, "dev_acc": acc, "loss": None})
        if acc > self.best_acc:                              # strict: the earliest best step is kept
            self.best_acc, self.best_step = acc, state.global_step
            if state.is_world_process_zero:
                self.best.take(model)

    def _save_best(self, state, model) -> None:
        """Write the ES checkpoint: the best weights, swapped into `model` and back."""
        info = {**self.info, "stage": "es", "step": self.best_step, "dev_acc": self.best_acc}
        if self.best_step == state.global_step:              # the model holds the best weights
            save_checkpoint(model, self.tokenizer, self.es_dir, info)
            return
        current = _Snapshot()
        current.take(model)
        self.best.put(model)
        try:
            save_checkpoint(model, self.tokenizer, self.es_dir, info)
        finally:
            current.put(model)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # the Trainer logs the mean training loss since its last log right after on_step_end
        if logs and "loss" in logs and self.history and self.history[-1]["step"] == state.global_step:
            self.history[-1]["loss"] = float(logs["loss"])

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.cfg.eval_every == 0:
            self._evaluate(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if not self.history or self.history[-1]["step"] != state.global_step:
            self._evaluate(state, model)
        if state.is_world_process_zero:
            self._save_best(state, model)


def _callback(dev, tokenizer, cfg, es_dir, info, fmt=TEXT):
    """A DevAccuracyCallback that is also a transformers TrainerCallback (imported lazily)."""
    from transformers import TrainerCallback

    cls = type("DevAccuracyTrainerCallback", (DevAccuracyCallback, TrainerCallback), {})
    return cls(dev, tokenizer, cfg, es_dir, info, fmt)


def _add_lora(model, cfg: FinetuneConfig, seed: int):
    from peft import LoraConfig, get_peft_model

    targets = "all-linear" if cfg.lora_targets.strip() == "all-linear" else [
        t.strip() for t in cfg.lora_targets.split(",") if t.strip()]
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                             lora_dropout=cfg.lora_dropout, target_modules=targets))
    g = torch_generator(seed, "lora-init")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name:                                       # kaiming-uniform bound, a = sqrt(5)
                bound = 1.0 / math.sqrt(p.shape[1])
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
    return model


def parameter_count(model_dir: str | Path) -> int:
    """The parameters of the model in `model_dir`, from its config.json alone (built on the meta
    device: no weights are read)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def resolve_method(cfg: FinetuneConfig, model_dir: str | Path) -> str:
    """``cfg.method``, with ``auto`` resolved: ``lora`` for a model of at least
    ``cfg.lora_min_params`` parameters, else ``full``."""
    if cfg.method != "auto":
        return cfg.method
    return "lora" if parameter_count(model_dir) >= cfg.lora_min_params else "full"


def _checkpointing(args_cls, cfg: FinetuneConfig) -> dict:
    """The activation-checkpointing argument under its name in this transformers version (renamed
    from ``gradient_checkpointing`` during 5.x); nothing when it is off."""
    if not cfg.activation_checkpointing:
        return {}
    fields = getattr(args_cls, "__dataclass_fields__", {})
    return {"activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing": True}


def finetune(model_dir: str | Path, train: Sequence[QAExample], dev: Sequence[QAExample], cfg: FinetuneConfig,
             out_dir: str | Path, *, seed: int = 0, dtype: str = "auto", progress: bool = False,
             fmt=TEXT) -> dict:
    """Fine-tune the model in `model_dir` on `train`; write ``out_dir/es``, ``out_dir/con`` and
    ``out_dir/finetune.json``. Examples are written and dev answers read in the prompt format
    `fmt` (:mod:`llm_bridge.prompts`).

    Returns:
        ``{"method", "n_train", "n_dev", "steps", "es_step", "es_dev_acc", "con_step",
        "con_dev_acc", "con_train_acc", "train_wall_s", "train_tokens_per_s",
        "history": [{"step", "epoch", "dev_acc", "loss"}, ...]}``
        (``loss``: the Trainer's mean training loss since its previous log, logged every
        ``eval_every`` steps; None where an evaluation falls between logs, e.g. the last step;
        ``train_wall_s``: ``Trainer.train`` with its dev evaluations; ``train_tokens_per_s``: the
        training examples' real tokens (pads excluded) per second of it).

    Raises:
        ConfigError: an invalid `cfg`. ValueError: empty `train` or `dev`.
    """
    from transformers import PrinterCallback, Trainer, TrainingArguments

    cfg.validate()
    if not train or not dev:
        raise ValueError(f"fine-tuning needs training and dev examples (got {len(train)} and {len(dev)})")
    out = Path(out_dir)
    method = resolve_method(cfg, model_dir)
    full_fp32 = method == "full" and cfg.master_dtype == "float32"
    model, tok = load_model(model_dir, dtype="float32" if full_fp32 else dtype, device=None)
    if method == "lora":
        model = _add_lora(model, cfg, seed)
        if cfg.master_dtype == "float32":
            for p in model.parameters():
                if p.requires_grad:
                    p.data = p.data.float()
    info = {"base_model": str(Path(model_dir).resolve()), "method": method, "config": asdict(cfg), "seed": seed}
    args = TrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1, learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps, lr_scheduler_type=cfg.lr_scheduler, logging_steps=cfg.eval_every,
        save_strategy="no", eval_strategy="no", report_to="none", seed=torch_seed(seed, "finetune") % (2**31 - 1),
        bf16=cfg.bf16, remove_unused_columns=False, disable_tqdm=not progress, dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(), **_checkpointing(TrainingArguments, cfg))
    cb = _callback(dev, tok, cfg, out / "es", info, fmt)
    trainer = Trainer(model=model, args=args, train_dataset=QADataset(train, tok, cfg.max_length, fmt),
                      data_collator=PadCollator(tok.pad_token_id), processing_class=tok, callbacks=[cb])
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    step = trainer.state.global_step
    mean_len = sum(len(x["input_ids"]) for x in trainer.train_dataset.items) / len(train)
    tokens = step * cfg.batch_size * cfg.grad_accum * trainer.args.world_size * mean_len      # real tokens, no pads
    con_dev = next(h["dev_acc"] for h in reversed(cb.history) if h["step"] == step)
    fit = accuracy(trainer.model, tok, list(train)[: cfg.fit_eval_size], match=cfg.match,
                   batch_size=cfg.eval_batch_size, max_new_tokens=cfg.max_new_tokens, fmt=fmt)
    summary = {"method": method, "n_train": len(train), "n_dev": len(dev), "steps": step,
               "es_step": cb.best_step, "es_dev_acc": cb.best_acc, "con_step": step, "con_dev_acc": con_dev,
               "con_train_acc": fit, "train_wall_s": round(wall, 3), "train_tokens_per_s": round(tokens / wall, 1),
               "history": cb.history}
    if trainer.is_world_process_zero():
        save_checkpoint(trainer.model, tok, out / "con", {**info, "stage": "con", "step": step, "dev_acc": con_dev,
                                                         "train_acc": fit})
        (out / "finetune.json").write_text(json.dumps(summary, indent=1))
    trainer.accelerator.wait_for_everyone()
    return summary


@dataclass(frozen=True)
class HFFineTuner:
    """The bridge's :class:`~kgsim.study.lm.FineTuner`: :func:`finetune` of the model in `model_dir`
    (the transformers Trainer, full or LoRA as `cfg` says), examples in prompt format `fmt`."""

    model_dir: str | Path
    cfg: FinetuneConfig
    seed: int = 0
    dtype: str = "auto"
    progress: bool = False
    fmt: object = TEXT

    def fit(self, train: Sequence[QAExample], dev: Sequence[QAExample], out: str | Path) -> FitResult:
        """Fine-tune into `out` (``es/``, ``con/``, ``finetune.json``); the summary is
        :func:`finetune`'s."""
        summary = finetune(self.model_dir, train, dev, self.cfg, out, seed=self.seed, dtype=self.dtype,
                           progress=self.progress, fmt=self.fmt)
        return FitResult(Path(out) / "es", Path(out) / "con", summary["es_step"], summary["es_dev_acc"],
                         summary["steps"], summary["history"], summary)
