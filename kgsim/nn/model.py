"""A small causal transformer in GPT-2 layout, its checkpoints, and its exact Hugging Face export.

Read top to bottom: attention, MLP, block, the loss (LM head and cross-entropy in one step), the
model (forward, attention weights, GPT-2 initialisation), kgsim checkpoints (safetensors), and the
mapping to and from ``transformers.GPT2LMHeadModel`` with the tokenizer export.

The layout is GPT-2's, so that the Hugging Face mapping is exact (logits equal to float rounding):
token + learned position embeddings; each block is ``x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))``
(pre-LayerNorm, eps 1e-5); a final ``ln_f``; the LM head is the token embedding itself (tied, no
bias). Attention is one fused ``c_attn`` projection d_model -> 3 * d_model (with bias), scaled
dot-product attention with a causal mask, and ``c_proj``; the MLP is ``c_fc`` -> GELU (tanh
approximation) -> ``c_proj``. ``attention_only=True`` drops ``ln_2`` and the MLP (the theory's
attention-only model); it exports to GPT-2 as an MLP whose weights are all zero.

Shapes: B batch, T positions (T <= n_ctx), C = d_model, H = n_heads, D = C // H, V = vocabulary.

Targets are aligned with positions: ``targets[b, t]`` is the token that should follow
``idx[b, :t + 1]``. For a row ``r`` of T + 1 tokens: ``idx = r[:, :-1]``, ``targets = r[:, 1:]``,
and a loss mask over the row is sliced the same way as the targets: ``mask[:, 1:]``.

Speed (see benchmarks/bench_train.py): the loss runs the LM head only at masked positions on CPU
and never materialises float32 logits; on CPU under bf16 autocast, attention is computed
explicitly (SDPA's CPU flash kernel is 3-5x slower there for kgsim's short rows); elsewhere it is
``F.scaled_dot_product_attention(is_causal=True)``.

>>> from kgsim.core.config import ModelConfig
>>> cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, n_ctx=8)
>>> model = build_model(cfg, vocab_size=50, seed=0)
>>> row = torch.tensor([[5, 6, 7, 8, 9]])
>>> model(row[:, :-1]).shape
torch.Size([1, 4, 50])
>>> _, loss = model(row[:, :-1], targets=row[:, 1:], loss_mask=torch.tensor([[False, False, True, True]]))
>>> round(loss.item(), 1)  # about log(50) at initialisation
3.9
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from kgsim.core.config import ModelConfig, to_dict
from kgsim.core.io import InputFileError, check_safetensors, file_mode
from kgsim.core.rng import torch_generator

__all__ = [
    "GPT", "build_model", "save_weights", "load_weights", "load_model",
    "to_hf", "from_hf", "export_hf", "make_tokenizer", "linear_cross_entropy", "IGNORE_INDEX",
]

LN_EPS = 1e-5          # GPT-2's layer_norm_epsilon
INIT_STD = 0.02        # GPT-2's initializer_range
IGNORE_INDEX = -100    # a target that takes no part in the loss (as in torch and Hugging Face)


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------

class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one fused qkv projection (GPT-2's ``c_attn``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.d_head = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, need_weights: bool = False):
        """x [B, T, C] -> (y [B, T, C], attention [B, H, T, T] float32, or None unless need_weights)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)                    # 3 x [B, T, C]
        q = q.view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # [B, H, T, D]
        k = k.view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # [B, H, T, D]
        v = v.view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # [B, H, T, D]
        p = self.dropout if self.training else 0.0
        # SDPA, except where the weights are wanted or where it is slow: CPU bf16/fp16, where its
        # flash kernel is 3-5x slower than the explicit version for kgsim's short sequences.
        explicit = need_weights or (x.device.type == "cpu" and q.dtype != torch.float32)
        if not explicit:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # [B, H, T, D]
            att = None
        else:  # the same computation written out, softmax in float32
            scores = (q @ k.transpose(-2, -1)).float() * self.d_head ** -0.5   # [B, H, T, T]
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            att = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)   # [B, H, T, T], rows sum to 1
            y = F.dropout(att, p, self.training).to(v.dtype) @ v               # [B, H, T, D]
        y = y.transpose(1, 2).reshape(B, T, C)                       # [B, T, C]: heads side by side
        return self.resid_dropout(self.c_proj(y)), (att if need_weights else None)


class MLP(nn.Module):
    """GPT-2's feed-forward block: c_fc (C -> mlp_ratio * C), GELU (tanh), c_proj (back to C)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model)
        self.c_proj = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, C] -> [B, T, C]
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-LayerNorm residual block: attention, then (unless attention_only) the MLP."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=LN_EPS)
        self.attn = CausalSelfAttention(cfg)
        if not cfg.attention_only:
            self.ln_2 = nn.LayerNorm(cfg.d_model, eps=LN_EPS)
            self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, need_weights: bool = False):
        a, att = self.attn(self.ln_1(x), need_weights)
        x = x + a
        if hasattr(self, "mlp"):
            x = x + self.mlp(self.ln_2(x))
        return x, att


# --------------------------------------------------------------------------------------------
# The loss: LM head and cross-entropy in one step, without float32 logits
# --------------------------------------------------------------------------------------------

_CHUNK_ELEMENTS = 1 << 18   # the CPU loss works on [rows, V] float32 blocks of 1 MiB: they stay in L2
_CHUNK_ELEMENTS_GPU = 1 << 28  # elsewhere, blocks of up to 1 GiB (one block for most batches)
_LOG2E = 1.4426950408889634  # exp(x) = exp2(x * log2(e))


class LinearCrossEntropy(torch.autograd.Function):
    """Mean over rows with a target of CE(h_i @ weight^T, t_i); dloss/dlogits made in the forward.

    Rows whose target is IGNORE_INDEX count for nothing (no rows at all: NaN, as in torch).
    The standard path (logits -> float32 copy -> log_softmax -> nll, and back) makes and reads
    several [N, V] float32 tensors. Here one [N, V] buffer in the compute dtype holds the logits;
    block by block (float32, in cache) each row gets its log-sum-exp, and the buffer is overwritten
    with dloss/dlogits = (softmax - onehot) / n_valid, with one exp per logit. Backward is two
    matmuls. The precision is that of autocast's standard path, whose logits gradient also reaches
    the matmuls in the compute dtype.
    """

    @staticmethod
    def forward(ctx, h, weight, targets, chunk_rows: int):
        n = h.shape[0]                                            # h [N, C], weight [V, C], targets [N]
        valid = (targets != IGNORE_INDEX).float()[:, None]        # [N, 1]
        row_w = valid / valid.sum()                               # [N, 1] each row's weight in the mean
        safe = targets.clamp_min(0)[:, None]                      # [N, 1]
        g = h @ weight.t()                                        # [N, V] logits, in h's dtype
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        buf = torch.empty(min(chunk_rows, n), weight.shape[0], dtype=torch.float32, device=h.device)
        for s in range(0, n, chunk_rows):
            gc, t, w = g[s:s + chunk_rows], safe[s:s + chunk_rows], row_w[s:s + chunk_rows]
            x = buf[:gc.shape[0]]                                 # [n_c, V] float32
            torch.sub(gc, gc.amax(dim=1, keepdim=True).float(), out=x)     # logits - row max
            picked = x.gather(1, t)                               # [n_c, 1] target logit - max
            z = x.mul_(_LOG2E).exp2_().sum(dim=1, keepdim=True)   # [n_c, 1] sum of exp (exp2: 5x faster on CPU)
            total += ((z.log() - picked) * w).sum()               # weighted -log softmax[target]
            x.scatter_add_(1, t, -z)                              # exp - z * onehot
            torch.mul(x, w / z, out=gc)                           # (softmax - onehot) * w, in g's dtype
        ctx.save_for_backward(h, weight, g)
        return total

    @staticmethod
    def backward(ctx, grad):
        h, weight, g = ctx.saved_tensors
        grad_h = (g @ weight).mul_(grad) if ctx.needs_input_grad[0] else None     # [N, C]
        grad_w = (g.t() @ h).mul_(grad) if ctx.needs_input_grad[1] else None      # [V, C]
        return grad_h, grad_w, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits ``h @ weight.T`` [N, V] against ``targets`` [N] (float32 loss),
    over the rows whose target is not IGNORE_INDEX.

    Under autocast the matmuls run in the autocast dtype, as ``F.linear`` would.
    """
    dev = h.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype
    budget = _CHUNK_ELEMENTS if dev == "cpu" else _CHUNK_ELEMENTS_GPU
    rows = max(1, budget // weight.shape[0])
    with torch.autocast(dev, enabled=False):
        return LinearCrossEntropy.apply(h.to(dtype), weight.to(dtype), targets, rows)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class GPT(nn.Module):
    """A GPT-2-layout causal LM over a vocabulary of `vocab_size` token ids.

    Parameters are initialised GPT-2 style from ``generator`` (a ``torch.Generator``); without one,
    from kgsim's ``model-init`` stream of seed 0. No global random state is read or advanced. Use
    :func:`build_model` for a seeded model.

    ``gather_loss_rows``: whether the loss gathers the masked positions before the LM head (a
    win on CPU when the vocabulary is large, but boolean indexing syncs a GPU with the host and
    splits a compiled graph). None (the default): gather on CPU only.
    """

    gather_loss_rows: bool | None = None

    def __init__(self, cfg: ModelConfig, vocab_size: int, *, generator: torch.Generator | None = None):
        super().__init__()
        cfg.validate("model")
        if vocab_size < 1:
            raise ValueError(f"vocab_size = {vocab_size}: must be >= 1")
        self.cfg, self.vocab_size = cfg, vocab_size
        with torch.device("meta"):  # shapes only: torch's default init would draw from the global RNG
            self.wte = nn.Embedding(vocab_size, cfg.d_model)
            self.wpe = nn.Embedding(cfg.n_ctx, cfg.d_model)
            self.drop = nn.Dropout(cfg.dropout)
            self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
            self.ln_f = nn.LayerNorm(cfg.d_model, eps=LN_EPS)
        self.to_empty(device="cpu")
        self.init_weights(generator if generator is not None else torch_generator(0, "model-init"))

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator) -> None:
        """GPT-2 init: matrices and embeddings N(0, 0.02); residual projections (``c_proj``)
        N(0, 0.02 / sqrt(number of residual branches)); biases 0; LayerNorm gains 1."""
        n_branches = self.cfg.n_layers * (1 if self.cfg.attention_only else 2)
        for name, p in self.named_parameters():  # a fixed order, so a seed fixes every value
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, INIT_STD / math.sqrt(n_branches), generator=generator)
            elif p.dim() == 2:
                nn.init.normal_(p, 0.0, INIT_STD, generator=generator)
            elif ".ln_" in name or name.startswith("ln_"):
                nn.init.ones_(p) if name.endswith("weight") else nn.init.zeros_(p)
            else:
                nn.init.zeros_(p)

    def n_params(self, non_embedding: bool = False) -> int:
        """Parameter count (the tied LM head counted once); ``non_embedding`` leaves out wte and wpe."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() - self.wpe.weight.numel() if non_embedding else n

    def _check_idx(self, idx: torch.Tensor) -> None:
        if idx.dim() != 2:
            raise ValueError(f"idx has shape {tuple(idx.shape)}: expected [batch, positions]")
        if idx.shape[1] > self.cfg.n_ctx:
            raise ValueError(f"idx has {idx.shape[1]} positions: more than n_ctx = {self.cfg.n_ctx}")

    def hidden(self, idx: torch.Tensor, need_weights: bool = False):
        """idx [B, T] -> (final hidden states after ln_f [B, T, C], per-layer attention or Nones)."""
        self._check_idx(idx)
        pos = torch.arange(idx.shape[1], device=idx.device)          # [T]
        x = self.drop(self.wte(idx) + self.wpe(pos))                  # [B, T, C]
        atts = []
        for block in self.h:
            x, att = block(x, need_weights)
            atts.append(att)
        return self.ln_f(x), atts

    def lm_head(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states [..., C] -> logits [..., V] (the tied token embedding, no bias)."""
        return F.linear(h, self.wte.weight)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                loss_mask: torch.Tensor | None = None, *, return_logits: bool = False):
        """Logits, or the training loss.

        - ``model(idx)`` -> logits [B, T, V].
        - ``model(idx, targets, loss_mask)`` -> ``(None, loss)``: loss is the mean cross-entropy
          (in float32) over positions where ``loss_mask`` [B, T] (bool) is True; ``targets`` [B, T]
          holds the next token of each position (see the module docstring). On CPU the LM head
          runs only at those positions (see ``gather_loss_rows``). Without ``loss_mask``, every
          position whose target is not ``IGNORE_INDEX`` counts. ``return_logits=True`` returns
          the full logits [B, T, V] in place of None (computing them everywhere).

        Raises ValueError on a shape mismatch, or on a mask that selects no position where rows
        are gathered (elsewhere such a loss is NaN, as torch's cross-entropy makes it).
        """
        h, _ = self.hidden(idx)                                       # [B, T, C]
        if targets is None:
            return self.lm_head(h)                                    # [B, T, V]
        if targets.shape != idx.shape:
            raise ValueError(f"targets shape {tuple(targets.shape)} != idx shape {tuple(idx.shape)}")
        if loss_mask is None:
            loss_mask = targets != IGNORE_INDEX
        elif loss_mask.shape != idx.shape or loss_mask.dtype != torch.bool:
            raise ValueError(f"loss_mask must be a bool tensor of shape {tuple(idx.shape)}, "
                             f"got {loss_mask.dtype} {tuple(loss_mask.shape)}")
        if return_logits:
            logits = self.lm_head(h)                                  # [B, T, V]
            t = targets.masked_fill(~loss_mask, IGNORE_INDEX)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), t.flatten(), ignore_index=IGNORE_INDEX)
            return logits, loss
        gather = self.gather_loss_rows if self.gather_loss_rows is not None else h.device.type == "cpu"
        if gather:    # the rows that count, alone: the LM head runs only there
            h, targets = h[loss_mask], targets[loss_mask]            # [N, C], [N]
            if h.shape[0] == 0:
                raise ValueError("loss_mask selects no position: the loss would be undefined")
        else:         # every row, the others weighted 0: no host-device sync, one compiled graph
            h, targets = h.flatten(0, 1), targets.masked_fill(~loss_mask, IGNORE_INDEX).flatten()  # [B*T, C], [B*T]
        return None, linear_cross_entropy(h, self.wte.weight, targets)

    def forward_with_attention(self, idx: torch.Tensor):
        """idx [B, T] -> (logits [B, T, V], list over layers of attention weights [B, H, T, T]).

        The weights are computed explicitly in float32 (each row sums to 1 over positions <= t);
        ``att[l][b, h, t, j]`` is how much position t attends to position j in layer l, head h.
        """
        h, atts = self.hidden(idx, need_weights=True)
        return self.lm_head(h), atts

    def attention_weights(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """The per-layer attention weights [B, H, T, T] of :meth:`forward_with_attention`."""
        return self.forward_with_attention(idx)[1]


def build_model(cfg: ModelConfig, vocab_size: int, seed: int) -> GPT:
    """A GPT initialised from the ``model-init`` stream of `seed` (same seed, same weights).

    Raises kgsim.core.config.ConfigError on an invalid ``cfg`` and ValueError on ``vocab_size < 1``.
    """
    return GPT(cfg, vocab_size, generator=torch_generator(seed, "model-init"))


# --------------------------------------------------------------------------------------------
# kgsim checkpoints: safetensors, with the ModelConfig and vocabulary size in the metadata
# --------------------------------------------------------------------------------------------

def _unwrap(model: nn.Module) -> GPT:
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper holds the model here
    if not isinstance(model, GPT):
        raise TypeError(f"expected a kgsim GPT, got {type(model).__name__}")
    return model


def save_weights(model: GPT, path: str | Path) -> Path:
    """Write the weights (float tensors as they are; the tied head is stored once, as wte.weight)
    and the model's config to a safetensors file. Returns the path."""
    from safetensors.torch import save_file

    model = _unwrap(model)
    path = Path(path)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    meta = {"kgsim_model_config": json.dumps(to_dict(model.cfg)), "vocab_size": str(model.vocab_size)}
    save_file(state, str(path), metadata=meta)
    os.chmod(path, file_mode())                 # safetensors writes 0600: give the umask's permissions
    return path


def load_weights(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The state dict saved by :func:`save_weights` (load it with ``model.load_state_dict``)."""
    from safetensors.torch import load_file

    return load_file(str(path), device=device)


def load_model(path: str | Path, device: str = "cpu") -> GPT:
    """Rebuild the model saved by :func:`save_weights` from its metadata and weights.

    Raises:
        InputFileError: (a ValueError) the file is missing, truncated, not safetensors, or holds no
            kgsim model (one line naming it).
    """
    what = "a kgsim model file (.safetensors from kgsim pretrain or run)"
    meta = check_safetensors(path, what)
    if "kgsim_model_config" not in meta:
        raise InputFileError(f"{path}: no kgsim_model_config in the safetensors metadata (expected {what})")
    try:
        fields = json.loads(meta["kgsim_model_config"])
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(ModelConfig)})
        if unknown:
            raise InputFileError(f"{path}: model config keys {unknown} are unknown to this kgsim version")
        model = GPT(ModelConfig(**fields), int(meta["vocab_size"]))
        model.load_state_dict(load_weights(path))
    except InputFileError:
        raise
    except Exception as e:  # noqa: BLE001 - any inconsistency of a structurally valid file
        raise InputFileError(f"{path}: holds no loadable kgsim model ({type(e).__name__}: {str(e)[:100]}; "
                             f"expected {what})") from None
    return model.to(device)


# --------------------------------------------------------------------------------------------
# Hugging Face: GPT2LMHeadModel <-> GPT (same names under "transformer."; HF's Conv1D stores
# weights as [in, out], the transpose of nn.Linear's [out, in])
# --------------------------------------------------------------------------------------------

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_python_tanh")  # the same function


def _hf_config(model: GPT, **token_ids):
    from transformers import GPT2Config

    cfg = model.cfg
    return GPT2Config(
        vocab_size=model.vocab_size, n_positions=cfg.n_ctx, n_embd=cfg.d_model, n_layer=cfg.n_layers,
        n_head=cfg.n_heads, n_inner=1 if cfg.attention_only else cfg.mlp_ratio * cfg.d_model,
        activation_function="gelu_pytorch_tanh", layer_norm_epsilon=LN_EPS, initializer_range=INIT_STD,
        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        tie_word_embeddings=True, use_cache=True, loss_type="ForCausalLM", kgsim_attention_only=cfg.attention_only,
        bos_token_id=token_ids.get("bos_token_id"), eos_token_id=token_ids.get("eos_token_id"),
        pad_token_id=token_ids.get("pad_token_id"),
    )


def to_hf(model: GPT, *, bos_token_id: int | None = None, eos_token_id: int | None = None,
          pad_token_id: int | None = 0, attn_implementation: str = "sdpa"):
    """A ``transformers.GPT2LMHeadModel`` (float32, eval mode) with the same function as `model`.

    An attention-only model maps to GPT-2 with ``n_inner = 1`` and all MLP weights zero (its MLP
    adds exactly 0); ``config.kgsim_attention_only`` records it for :func:`from_hf`.
    """
    from transformers import GPT2LMHeadModel

    model = _unwrap(model)
    config = _hf_config(model, bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):  # HF initialises from the global RNG; leave it as it was
        hf = GPT2LMHeadModel(config)
    ours = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    new = {}
    for name, p in hf.state_dict().items():
        key = name.removeprefix("transformer.")
        if name == "lm_head.weight":
            new[name] = ours["wte.weight"]
        elif key in ours:
            new[name] = ours[key].t() if key.endswith(_CONV1D) else ours[key]
        elif model.cfg.attention_only and (".mlp." in key or ".ln_2." in key):
            new[name] = torch.ones_like(p) if key.endswith("ln_2.weight") else torch.zeros_like(p)
        else:  # pragma: no cover - a transformers layout change
            raise KeyError(f"no kgsim weight for Hugging Face parameter {name}")
    hf.load_state_dict(new, strict=True)
    return hf.eval()


def from_hf(hf_model) -> GPT:
    """A kgsim GPT (float32, CPU) with the same function as a ``transformers.GPT2LMHeadModel``.

    Raises ValueError when the model uses a feature kgsim's layout lacks (untied head, another
    activation or LayerNorm eps, cross-attention, layer-scaled attention, an MLP width that is not
    a multiple of d_model).
    """
    c = hf_model.config
    n_inner = c.n_inner if c.n_inner is not None else 4 * c.n_embd
    attention_only = bool(getattr(c, "kgsim_attention_only", False))
    problems = {
        "activation_function": (c.activation_function, c.activation_function in _GELU_TANH),
        "layer_norm_epsilon": (c.layer_norm_epsilon, c.layer_norm_epsilon == LN_EPS),
        "tie_word_embeddings": (c.tie_word_embeddings, bool(c.tie_word_embeddings)),
        "add_cross_attention": (c.add_cross_attention, not c.add_cross_attention),
        "scale_attn_weights": (c.scale_attn_weights, bool(c.scale_attn_weights)),
        "scale_attn_by_inverse_layer_idx": (c.scale_attn_by_inverse_layer_idx, not c.scale_attn_by_inverse_layer_idx),
        "n_inner": (n_inner, attention_only or n_inner % c.n_embd == 0),
    }
    for key, (value, ok) in problems.items():
        if not ok:
            raise ValueError(f"GPT2Config.{key} = {value!r}: not supported by kgsim's GPT layout")
    cfg = ModelConfig(d_model=c.n_embd, n_layers=c.n_layer, n_heads=c.n_head, n_ctx=c.n_positions,
                      mlp_ratio=max(1, n_inner // c.n_embd), attention_only=attention_only,
                      dropout=float(c.resid_pdrop))
    model = GPT(cfg, c.vocab_size)
    theirs = {k: v.detach().float().cpu() for k, v in hf_model.state_dict().items()}
    new = {}
    for key in model.state_dict():
        w = theirs[f"transformer.{key}"]
        new[key] = w.t().contiguous() if key.endswith(_CONV1D) else w
    if attention_only:
        dropped = [k for k, v in theirs.items() if ".mlp." in k and v.abs().max() > 0]
        if dropped:
            raise ValueError(f"config.kgsim_attention_only is set but MLP weights are non-zero: {dropped[:3]}")
    model.load_state_dict(new, strict=True)
    return model


def _check_vocab(tokens: list[str], vocab_size: int, specials: dict[str, str | None]) -> None:
    if len(tokens) != vocab_size:
        raise ValueError(f"tokens has {len(tokens)} entries, the model's vocab_size is {vocab_size}")
    seen: set[str] = set()
    for i, t in enumerate(tokens):
        if not t or any(ch.isspace() for ch in t):
            raise ValueError(f"tokens[{i}] = {t!r}: a token must be non-empty and hold no whitespace")
        if t in seen:
            raise ValueError(f"tokens[{i}] = {t!r}: duplicate token")
        seen.add(t)
    for name, t in specials.items():
        if t is not None and t not in seen:
            raise ValueError(f"{name} = {t!r}: not in the vocabulary")


def make_tokenizer(tokens: list[str], *, pad_token: str | None = "<pad>", bos_token: str | None = None,
                   eos_token: str | None = None, unk_token: str | None = None, add_bos: bool = False,
                   model_max_length: int | None = None):
    """A ``PreTrainedTokenizerFast`` with id = position in `tokens` (WordLevel, split on whitespace).

    ``tokenizer(" ".join(words))["input_ids"]`` is ``[tokens.index(w) for w in words]``, with the
    BOS id in front only if ``add_bos``. An unknown word maps to ``unk_token`` (an error without one).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = {"pad_token": pad_token, "bos_token": bos_token, "eos_token": eos_token, "unk_token": unk_token}
    _check_vocab(tokens, len(tokens), specials)
    if add_bos and bos_token is None:
        raise ValueError("add_bos = True needs a bos_token")
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk_token))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()           # no decoder: decode joins with spaces
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A", pair=f"{bos_token} $A $B", special_tokens=[(bos_token, vocab[bos_token])])
    kwargs = {k: v for k, v in specials.items() if v is not None}
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length,
                                   clean_up_tokenization_spaces=False, **kwargs)


def export_hf(model: GPT, tokens: list[str], out_dir: str | Path, *, pad_token: str | None = "<pad>",
              bos_token: str | None = None, eos_token: str | None = None, unk_token: str | None = None,
              add_bos: bool = False) -> Path:
    """Write a Hugging Face model directory (config.json, model.safetensors, tokenizer files).

    ``AutoModelForCausalLM.from_pretrained(out_dir, local_files_only=True)`` and
    ``AutoTokenizer.from_pretrained(out_dir, local_files_only=True)`` load it without remote code.
    `tokens` is the vocabulary (index = id; whitespace-free, unique). Returns ``out_dir``.

    Raises ValueError if `tokens` does not match the model or a named special token is missing.
    """
    model = _unwrap(model)
    specials = {"pad_token": pad_token, "bos_token": bos_token, "eos_token": eos_token, "unk_token": unk_token}
    _check_vocab(tokens, model.vocab_size, specials)
    ids = {f"{k}_id": (tokens.index(v) if v is not None else None) for k, v in specials.items() if k != "unk_token"}
    tokenizer = make_tokenizer(tokens, pad_token=pad_token, bos_token=bos_token, eos_token=eos_token,
                               unk_token=unk_token, add_bos=add_bos, model_max_length=model.cfg.n_ctx)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    to_hf(model, **ids).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    for f in out_dir.iterdir():
        if f.is_file():
            os.chmod(f, file_mode())
    return out_dir
