"""Causal LMs and tokenizers: load from a local directory, or build tiny ones for tests.

- :func:`load_model` loads any causal LM that transformers implements natively (Llama, Mistral,
  Qwen, GPT-2, ...) with its tokenizer from a local directory, or a hub id (``org/name``) already in
  the local Hugging Face cache: ``local_files_only=True`` (nothing is downloaded), never
  ``trust_remote_code``; ``device_map`` is passed through when set. The tokenizer pads on the left
  (batched generation) and gets a pad token (its EOS) if it has none.
- :func:`build_tokenizer` trains a small byte-level BPE tokenizer on given texts (no downloads),
  :func:`tiny_llama` builds a seeded, randomly initialised Llama-layout model from a config, and
  :func:`pretrain` trains it on documents with a plain loop (seconds on a CPU for test worlds).
- :func:`model_fingerprint` identifies a model directory's contents for cache keys;
  :func:`model_revision` records the hub id and commit of a cached snapshot (provenance).

>>> tok = build_tokenizer(["Q: Where was Kato born?\\nA: Sabi\\n"] * 4, vocab_size=300)
>>> model = tiny_llama(tok, d_model=16, n_layers=1, n_heads=2, seed=0)
>>> tok.decode(tok("Where was Kato born?")["input_ids"])
'Where was Kato born?'
>>> model.config.vocab_size == len(tok), model.config.num_hidden_layers
(True, 1)
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import re
import sys
from pathlib import Path
from typing import Sequence

import torch

from kgsim.core.io import InputFileError, check_safetensors, read_json
from kgsim.core.rng import stream, torch_generator

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


class ModelDirError(ValueError):
    """A model directory is missing, incomplete, or would need remote code; the message names it."""


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; 'cpu', 'cuda', 'cuda:N' and 'mps' pass through.

    Raises:
        ValueError: another string, or 'cuda' without a CUDA device.
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" or device == "mps" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device = {device!r}: no CUDA device is available")
        return device
    raise ValueError(f"device = {device!r}: choose auto, cpu, cuda, cuda:N or mps")


def resolve_dtype(dtype: str):
    """A dtype name -> the torch dtype (or 'auto': the checkpoint's own).

    Raises:
        ValueError: an unknown name.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype = {dtype!r}: choose one of {list(DTYPES)}")
    return DTYPES[dtype]


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def hub_snapshot(repo_id: str, cache_dir: str | Path | None = None, revision: str | None = None) -> Path | None:
    """The folder of `repo_id` (``org/name``) in the local Hugging Face cache (``cache_dir``, default
    ``HF_HUB_CACHE``), at `revision` (default: the cached ``main``); None when it is not cached.
    Never downloads (``snapshot_download(..., local_files_only=True)``)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if not _HUB_ID.match(repo_id):
        return None
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None


def check_model_dir(model_dir: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The directory of a loadable model: config.json naming a built-in model type, weights, and a
    tokenizer. Returns the resolved path. `model_dir` is a local folder or a hub id (``org/name``)
    already in the local Hugging Face cache (see :func:`hub_snapshot`; never downloaded).

    Raises:
        ModelDirError: what is missing or wrong, with the path.
    """
    from transformers import CONFIG_MAPPING

    d = Path(model_dir).expanduser()
    if not d.exists():
        d = hub_snapshot(str(model_dir), cache_dir) or d
    if not d.is_dir():
        raise ModelDirError(f"model directory {str(d)!r} is a file, not a folder" if d.exists() else
                            f"model directory {str(d)!r} does not exist, and no Hugging Face cache holds it as a hub "
                            "id (models load from local folders or the local cache only; nothing is downloaded)")
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise ModelDirError(f"{str(d)!r} is not a model directory: no config.json")
    try:
        cfg = read_json(cfg_path, "a Hugging Face model config.json")
        for w in sorted(d.glob("*.safetensors")):
            check_safetensors(w, "a Hugging Face weights file (.safetensors)")
    except InputFileError as e:
        raise ModelDirError(str(e)) from None
    mtype = cfg.get("model_type")
    if mtype not in CONFIG_MAPPING:
        raise ModelDirError(f"{cfg_path}: model_type {mtype!r} is not built into transformers "
                            "(remote code is never trusted)")
    if not any(any(d.glob(p)) for p in _WEIGHT_PATTERNS):
        raise ModelDirError(f"{str(d)!r}: no weights (*.safetensors or pytorch_model*.bin)")
    if not any((d / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelDirError(f"{str(d)!r}: no tokenizer files ({', '.join(_TOKENIZER_FILES)})")
    return d.resolve()


def load_tokenizer(model_dir: str | Path):
    """The directory's tokenizer, padding on the left, with a pad token (EOS if it had none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)
    tok.padding_side = "left"
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ModelDirError(f"{str(model_dir)!r}: the tokenizer has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
    return tok


@contextlib.contextmanager
def terminal_bars_only():
    """transformers' own progress bars (loading weights) off while stderr is not a terminal."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if was and not sys.stderr.isatty():
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load_model(model_dir: str | Path, dtype: str = "auto", device: str | None = "auto", device_map: str = ""):
    """Load ``(model, tokenizer)`` from a local directory (or a cached hub id), in eval mode.

    Args:
        model_dir: a directory holding config.json, weights and tokenizer files, or a hub id in the
            local Hugging Face cache (:func:`check_model_dir`).
        dtype: 'auto' (the checkpoint's), 'float32', 'bfloat16' or 'float16'.
        device: see :func:`resolve_device`; None leaves the model on the CPU it loads to (the
            Trainer then places it, e.g. one device per process under ``accelerate launch``).
        device_map: '' loads, then moves the whole model to `device`; any other value ('auto',
            'balanced', ...) is passed to ``from_pretrained`` (accelerate places the layers while
            loading; `device` is then ignored).

    Raises:
        ModelDirError: the directory is missing or not a loadable model directory.
        ValueError: an unknown dtype or device.
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = resolve_dtype(dtype)
    dev = resolve_device(device) if device is not None and not device_map else None
    d = check_model_dir(model_dir)
    tok = load_tokenizer(d)
    placement = {"device_map": device_map} if device_map else {}
    with terminal_bars_only():
        model = AutoModelForCausalLM.from_pretrained(str(d), local_files_only=True, trust_remote_code=False,
                                                     dtype=torch_dtype, **placement)
    if dev is not None:
        model.to(dev)
    model.eval()
    return model, tok


def model_revision(model_dir: str | Path) -> dict:
    """Where a resolved model folder came from: ``{"hub_id", "revision"}`` for a snapshot of the
    Hugging Face cache (``.../models--org--name/snapshots/<commit>``), else ``{"hub_id": None,
    "revision": None}``; plus ``config_sha256`` of its config.json (what defines the architecture)."""
    d = Path(model_dir).resolve()
    hub_id = revision = None
    if d.parent.name == "snapshots" and d.parent.parent.name.startswith("models--"):
        hub_id, revision = d.parent.parent.name[len("models--"):].replace("--", "/"), d.name
    cfg = d / "config.json"
    sha = hashlib.sha256(cfg.read_bytes()).hexdigest() if cfg.is_file() else None
    return {"hub_id": hub_id, "revision": revision, "config_sha256": sha}


def model_fingerprint(model_dir: str | Path) -> str:
    """A 16-hex-digit key of a model directory's contents: config.json, the names, sizes and
    modification times of its weight files, and adapter config if any (fast: no weights are read)."""
    d = Path(model_dir).resolve()
    h = hashlib.sha256(str(d).encode())
    for name in ("config.json", "adapter_config.json"):
        if (d / name).is_file():
            h.update((d / name).read_bytes())
    for p in sorted(q for pat in (*_WEIGHT_PATTERNS, "adapter_model.*") for q in d.glob(pat)):
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Tiny local models for tests
# --------------------------------------------------------------------------------------------

def build_tokenizer(texts: Sequence[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on `texts` (any Unicode text round-trips exactly), with
    ``<pad> <s> </s> <unk>`` special tokens, left padding; a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, padding_side="left", **SPECIAL_TOKENS)


def tiny_llama(tokenizer, d_model: int = 64, n_layers: int = 2, n_heads: int = 4, n_ctx: int = 256,
               mlp_ratio: int = 4, seed: int = 0):
    """A randomly initialised ``LlamaForCausalLM`` sized for CPU tests, its vocabulary and special
    ids taken from `tokenizer`. Weights are drawn from a seeded ``torch.Generator`` (normal with the
    config's ``initializer_range``; norms at one); the global RNG state is left as it was.

    Raises:
        ValueError: `n_heads` does not divide `d_model`.
    """
    from transformers import LlamaConfig, LlamaForCausalLM


    if d_model % n_heads:
        raise ValueError(f"n_heads = {n_heads}: must divide d_model ({d_model})")
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=d_model, intermediate_size=mlp_ratio * d_model,
                      num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_heads,
                      max_position_embeddings=n_ctx, tie_word_embeddings=True,
                      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng(devices=[]):          # the default init draws are discarded: restore the state
        model = LlamaForCausalLM(cfg)
    g = torch_generator(seed, "tiny-llama-init")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * cfg.initializer_range)
            elif name.endswith("norm.weight"):
                p.fill_(1.0)
    return model


def save_model(model, tokenizer, out_dir: str | Path) -> Path:
    """Save model (safetensors) and tokenizer to `out_dir`, loadable by :func:`load_model`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with terminal_bars_only():
        model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def pretrain(model, tokenizer, texts: Sequence[str], *, steps: int, batch_size: int = 32, lr: float = 3e-3,
             warmup: int = 20, weight_decay: float = 0.0, seed: int = 0) -> list[float]:
    """Train a causal LM on documents (each ends with EOS, truncated to the model's context) with
    AdamW and a warmup + cosine schedule; batches are drawn from ``kgsim.core.rng.stream(seed,
    "bridge-pretrain")``. Returns the loss of every step. For tiny test models, not for real ones.
    """

    n_ctx = model.config.max_position_embeddings
    docs = [ids[:n_ctx] for ids in tokenizer([t + tokenizer.eos_token for t in texts],
                                             add_special_tokens=False)["input_ids"]]
    rng = stream(seed, "bridge-pretrain")
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min(1.0, (t + 1) / max(warmup, 1)) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / steps))))
    model.train()
    losses = []
    for _ in range(steps):
        batch = [docs[i] for i in rng.integers(0, len(docs), batch_size)]
        width = max(len(b) for b in batch)
        ids = torch.full((batch_size, width), tokenizer.pad_token_id, dtype=torch.long)   # [B, T] right-padded
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for i, b in enumerate(batch):
            ids[i, : len(b)] = torch.tensor(b)
            mask[i, : len(b)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


__all__ = ["DTYPES", "ModelDirError", "build_tokenizer", "check_model_dir", "hub_snapshot", "load_model",
           "load_tokenizer", "model_fingerprint", "model_revision", "pretrain", "resolve_device", "resolve_dtype",
           "save_model", "terminal_bars_only", "tiny_llama"]
