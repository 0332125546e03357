"""Batched inference for any Hugging Face causal LM: one-line answers and sentence embeddings.

:func:`generate` pads prompts on the left, batches them (longest first), decodes greedily or by
seeded sampling, and stops each row at its first newline (every prompt here asks for a one-line
answer; ``generate``'s ``stop_strings=["\\n"]``, matched token by token). Sampling draws from a
``torch.Generator`` seeded from a named kgsim stream, through a logits processor that turns the
sampled token into the only finite logit, so ``model.generate`` runs its greedy loop (caches,
padding, stopping) and no global RNG is read or seeded. A fresh
``GenerationConfig`` is used, so a checkpoint's own sampling defaults never leak in.

:func:`next_tokens` is the fast path for answers that are exactly one token (kgsim-token prompts,
:mod:`llm_bridge.kgsim_tokens`): one forward pass per batch of equally long prompts (no padding), the
logits at the last position only, greedy = argmax and ``n_samples`` draws per prompt by
``torch.multinomial`` on ``softmax(logits / T)`` with the same seeded generator, all on the model's
device. Its greedy token is :func:`generate`'s first token (the same logits, float32 argmax); its
samples follow the same distribution as :func:`generate` at ``temperature`` run once per sample,
drawn in another order.

:func:`embed` pools the last hidden layer (mean over real tokens, or the last token) (used for
Near-ID vs Open-World).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from kgsim.core.rng import torch_generator


def model_device(model) -> torch.device:
    return next(model.parameters()).device


class ContextLengthError(ValueError):
    """A prompt (plus the tokens to generate) does not fit a model with learned absolute positions."""


def check_context(model, lengths: np.ndarray, new_tokens: int = 0) -> None:
    """Raise :class:`ContextLengthError` when the longest prompt plus `new_tokens` exceeds the
    model's learned positions (``config.n_positions``: GPT-2-layout models such as kgsim exports,
    whose position table has no row beyond it). Rotary models (no ``n_positions``) pass."""
    limit = getattr(getattr(model, "config", None), "n_positions", None)
    if limit is not None and len(lengths) and int(lengths.max()) + new_tokens > limit:
        raise ContextLengthError(
            f"a prompt of {int(lengths.max())} tokens + {new_tokens} to generate exceeds the model's "
            f"n_positions = {limit}; use fewer shots (probe.n_shots, eval.k_shots, eval.cot_shots), fewer "
            "new tokens (*.max_new_tokens), or a model with a longer context")


class _SeededSampler:
    """LogitsProcessor: sample one token per row at `temperature` with `generator`; the sampled
    token keeps logit 0, every other token gets -inf (so greedy decoding picks the sample)."""

    def __init__(self, temperature: float, generator: torch.Generator):
        self.temperature = temperature
        self.generator = generator

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)            # [B, V]
        pick = torch.multinomial(probs, 1, generator=self.generator)                # [B, 1]
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, pick, 0.0)


def _has_stop_strings() -> bool:
    """Whether this transformers' ``generate`` takes ``stop_strings`` (4.39 and later)."""
    from transformers import GenerationConfig

    return hasattr(GenerationConfig(), "stop_strings")


_STOP_STRINGS = _has_stop_strings()


def _tokenizer_takes_stop_strings(tokenizer) -> bool:
    """Whether ``stop_strings`` can be matched with this tokenizer: transformers' matcher encodes a
    probe text, which a closed word-level vocabulary (kgsim's tokens, no ``[UNK]``) cannot do."""
    cached = getattr(tokenizer, "_kgsim_takes_stop_strings", None)
    if cached is None:
        try:
            tokenizer("abcdef", add_special_tokens=False)
            cached = True
        except Exception:  # noqa: BLE001 - the tokenizers backend raises a bare Exception
            cached = False
        tokenizer._kgsim_takes_stop_strings = cached
    return cached


class _StopAtNewline:
    """StoppingCriteria: a row is done once its generated text holds a newline (the fallback where
    ``generate`` takes no ``stop_strings``: it decodes every row's whole continuation at every step)."""

    def __init__(self, tokenizer, prompt_len: int):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        return torch.tensor(["\n" in t for t in texts], device=input_ids.device)


def _batches(tokenizer, prompts: Sequence[str], batch_size: int, model=None, new_tokens: int = 0) -> list[np.ndarray]:
    lengths = np.array([len(ids) for ids in tokenizer(list(prompts))["input_ids"]])
    if model is not None:
        check_context(model, lengths, new_tokens)
    order = np.argsort(-lengths, kind="stable")                       # longest first: errors surface early
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 16, batch_size: int = 32,
             temperature: float = 0.0, seed: int = 0, stream: str = "sample", progress: bool = False,
             desc: str = "generate", skip_special_tokens: bool = True) -> list[str]:
    """Continue each prompt until its first newline or `max_new_tokens`; returns the generated text
    of every prompt up to (without) its first newline, special tokens dropped (kept with
    ``skip_special_tokens=False``: a token vocabulary such as kgsim's, where ``<sep>`` is an answer), in
    input order.

    Args:
        temperature: 0 for greedy decoding; > 0 samples with a generator seeded from
            ``kgsim.core.rng.torch_seed(seed, stream)`` (the same seed, stream, prompts and batch size
            give the same samples).

    Raises:
        ValueError: a negative temperature or a non-positive batch size / token budget.
        ContextLengthError: a prompt plus `max_new_tokens` exceeds the model's learned positions.
    """
    from tqdm.auto import tqdm
    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

    if temperature < 0 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"temperature = {temperature}, batch_size = {batch_size}, max_new_tokens = "
                         f"{max_new_tokens}: need temperature >= 0 and positive sizes")
    if not prompts:
        return []
    device = model_device(model)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None else tokenizer.eos_token_id
    # one new token needs no stop; else stop_strings where the tokenizer allows, the decoding stop if not
    stop = "none" if max_new_tokens == 1 else (
        "strings" if _STOP_STRINGS and _tokenizer_takes_stop_strings(tokenizer) else "decode")
    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                               pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
                               **({"stop_strings": ["\n"]} if stop == "strings" else {}))
    generator = torch_generator(seed, stream, device=device.type) if temperature > 0 else None
    was_training = model.training
    model.eval()
    out: list[str] = [""] * len(prompts)
    try:
        for idx in tqdm(_batches(tokenizer, prompts, batch_size, model, max_new_tokens), desc=desc,
                        disable=None if progress else True, leave=False):          # None: on a terminal only
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
            width = enc["input_ids"].shape[1]                                  # [B, T] left-padded
            processors = LogitsProcessorList([_SeededSampler(temperature, generator)] if generator else [])
            if stop == "strings":                                              # matched token by token
                seqs = model.generate(**enc, generation_config=gen_cfg, logits_processor=processors,
                                      tokenizer=tokenizer)
            else:                                                              # decodes every row each step
                criteria = [_StopAtNewline(tokenizer, width)] if stop == "decode" else []
                seqs = model.generate(**enc, generation_config=gen_cfg, logits_processor=processors,
                                      stopping_criteria=StoppingCriteriaList(criteria))
            texts = tokenizer.batch_decode(seqs[:, width:], skip_special_tokens=skip_special_tokens)
            for i, t in zip(idx, texts):
                out[i] = t.split("\n", 1)[0]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def _stop_ids(tokenizer, model) -> torch.Tensor:
    """bool [vocab]: tokens that end a one-line answer (their text holds a newline, or EOS).
    Cached on the tokenizer; a newline is one byte, so it lies inside one token's text."""
    cached = getattr(tokenizer, "_kgsim_stop_ids", None)
    n = model.get_output_embeddings().weight.shape[0]
    if cached is None or len(cached) != n:
        texts = tokenizer.batch_decode([[i] for i in range(min(len(tokenizer), n))])
        cached = torch.zeros(n, dtype=torch.bool)
        cached[[i for i, t in enumerate(texts) if "\n" in t]] = True
        eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None \
            else tokenizer.eos_token_id
        for e in ([eos] if isinstance(eos, int) else eos or []):
            cached[e] = True
        tokenizer._kgsim_stop_ids = cached
    return cached


@torch.no_grad()
def sample(model, tokenizer, prompts: Sequence[str], *, n_samples: int, temperature: float, max_new_tokens: int = 16,
           batch_size: int = 32, seed: int = 0, stream: str = "sample", progress: bool = False,
           desc: str = "sample") -> list[str]:
    """`n_samples` one-line continuations of every prompt at `temperature` (prompt-major: the
    samples of prompt i are ``out[i * n_samples:(i + 1) * n_samples]``), as :func:`generate` at
    that temperature on each prompt repeated `n_samples` times, but each prompt is read once: one
    forward pass over the prompts fills the key/value cache, which is then repeated for the samples
    and decoded step by step (batches of ``batch_size // n_samples`` prompts). Draws come from a
    generator seeded by ``kgsim.core.rng.torch_seed(seed, stream)``; the same arguments give the same
    samples. Models whose forward takes no ``position_ids`` fall back to :func:`generate`.

    Raises:
        ValueError: non-positive `n_samples`, temperature, batch size or token budget.
        ContextLengthError: a prompt plus `max_new_tokens` exceeds the model's learned positions.
    """
    import inspect

    from tqdm.auto import tqdm

    if n_samples < 1 or not temperature > 0 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"n_samples = {n_samples}, temperature = {temperature}, batch_size = {batch_size}, "
                         f"max_new_tokens = {max_new_tokens}: all must be positive")
    if not prompts:
        return []
    params = inspect.signature(model.forward).parameters
    cache_arg = "cache" if "cache" in params else "past_key_values"           # renamed during transformers 5.x
    if "position_ids" not in params or cache_arg not in params:
        return generate(model, tokenizer, [t for t in prompts for _ in range(n_samples)], temperature=temperature,
                        max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, stream=stream,
                        progress=progress, desc=desc)
    device = model_device(model)
    stops = _stop_ids(tokenizer, model).to(device)
    generator = torch_generator(seed, stream, device=device.type)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    out: list[str] = [""] * (len(prompts) * n_samples)
    per = max(1, batch_size // n_samples)
    try:
        for idx in tqdm(_batches(tokenizer, prompts, per, model, max_new_tokens), desc=desc,
                        disable=None if progress else True, leave=False):
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
            mask = enc["attention_mask"]                                          # [B, T] left-padded
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            res = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=pos, use_cache=True)
            cache = getattr(res, cache_arg)
            cache.batch_repeat_interleave(n_samples)                              # [B * S, ...]
            logits = res.logits[:, -1].float().repeat_interleave(n_samples, 0)   # [B * S, V]
            mask = mask.repeat_interleave(n_samples, 0)
            last = pos[:, -1:].repeat_interleave(n_samples, 0)                    # [B * S, 1]
            done = torch.zeros(len(logits), dtype=torch.bool, device=device)
            steps = []
            for t in range(max_new_tokens):
                pick = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator)  # [B*S, 1]
                pick[done] = tokenizer.pad_token_id
                steps.append(pick)
                done |= stops[pick[:, 0]]
                if bool(done.all()) or t == max_new_tokens - 1:
                    break
                mask = torch.cat([mask, torch.ones_like(pick)], 1)
                last = last + 1
                res = model(input_ids=pick, attention_mask=mask, position_ids=last, use_cache=True, **{cache_arg: cache})
                cache, logits = getattr(res, cache_arg), res.logits[:, -1].float()
            texts = tokenizer.batch_decode(torch.cat(steps, 1), skip_special_tokens=True)
            for j, i in enumerate(idx):
                for k in range(n_samples):
                    out[i * n_samples + k] = texts[j * n_samples + k].split("\n", 1)[0]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


_KEEPS_LAST: dict[type, bool] = {}          # model class -> its forward takes logits_to_keep


def _forward_last(model, ids: torch.Tensor) -> torch.Tensor:
    """float32 [B, V]: the logits after the last token of each row of `ids` [B, T] (no padding).
    Asks the model for the last position's logits only (``logits_to_keep=1``, as ``generate``'s
    prefill does) where its forward takes that argument."""
    kind = type(model)
    if _KEEPS_LAST.get(kind, True):
        try:
            out = model(input_ids=ids, use_cache=False, logits_to_keep=1)
            _KEEPS_LAST[kind] = True
            return out.logits[:, -1].float()
        except TypeError:
            _KEEPS_LAST[kind] = False
    return model(input_ids=ids, use_cache=False).logits[:, -1].float()


def _length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices grouped by prompt length (shortest first, input order within a length), in batches
    of at most `batch_size` rows: every batch is one [B, T] tensor without padding."""
    out = []
    for n in np.unique(lengths):
        rows = np.flatnonzero(lengths == n)
        out += [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    return out


@torch.no_grad()
def next_tokens(model, tokenizer, prompts: Sequence[str], *, batch_size: int = 32, n_samples: int = 0,
                temperature: float = 1.0, seed: int = 0, stream: str = "sample", progress: bool = False,
                desc: str = "next token") -> tuple[np.ndarray, np.ndarray]:
    """The next token after each prompt: ``(greedy int64 [n], samples int64 [n, n_samples])``.

    One forward pass per batch (prompts of equal token length, at most `batch_size` rows, on the
    model's device); greedy is the argmax of the float32 last-position logits (what :func:`generate`
    picks as its first token); samples are ``n_samples`` draws with replacement from
    ``softmax(logits / temperature)`` per prompt, from a generator seeded by
    ``kgsim.core.rng.torch_seed(seed, stream)`` (the same seed, stream, prompts and batch size give the
    same samples). Decode ids with :func:`decode_each`.

    Raises:
        ValueError: a non-positive batch size or temperature, or negative `n_samples`.
        ContextLengthError: a prompt longer than the model's learned positions.
    """
    from tqdm.auto import tqdm

    if batch_size < 1 or n_samples < 0 or not temperature > 0:
        raise ValueError(f"batch_size = {batch_size}, n_samples = {n_samples}, temperature = {temperature}: "
                         "need batch_size >= 1, n_samples >= 0, temperature > 0")
    n = len(prompts)
    greedy, samples = np.zeros(n, np.int64), np.zeros((n, n_samples), np.int64)
    if not n:
        return greedy, samples
    device = model_device(model)
    ids = tokenizer(list(prompts))["input_ids"]
    lengths = np.array([len(x) for x in ids])
    if lengths.min() < 1:
        raise ValueError("an empty prompt has no next token")
    check_context(model, lengths)
    generator = torch_generator(seed, stream, device=str(device)) if n_samples else None
    was_training = model.training
    model.eval()
    try:
        for idx in tqdm(_length_batches(lengths, batch_size), desc=desc, disable=None if progress else True,
                        leave=False):
            batch = torch.tensor([ids[i] for i in idx], dtype=torch.long, device=device)     # [B, T]
            logits = _forward_last(model, batch)                                             # [B, V]
            greedy[idx] = logits.argmax(-1).cpu().numpy()
            if n_samples:
                probs = torch.softmax(logits / temperature, dim=-1)
                samples[idx] = torch.multinomial(probs, n_samples, replacement=True, generator=generator).cpu().numpy()
    finally:
        model.train(was_training)
    return greedy, samples


def decode_each(tokenizer, ids: np.ndarray, skip_special_tokens: bool = False) -> list[str]:
    """The text of each single token id in `ids` (any shape, flattened), as ``tokenizer.batch_decode``
    of one-token rows gives it (each distinct id decoded once)."""
    flat = np.asarray(ids, np.int64).ravel()
    uniq = np.unique(flat)
    texts = tokenizer.batch_decode([[int(i)] for i in uniq], skip_special_tokens=skip_special_tokens)
    table = dict(zip(uniq.tolist(), texts))
    return [table[i] for i in flat.tolist()]


POOLINGS = ("mean", "last")


@torch.no_grad()
def embed(model, tokenizer, texts: Sequence[str], batch_size: int = 32, pooling: str = "mean") -> np.ndarray:
    """float32 [n, d_model]: the last hidden layer of each text, averaged over its real tokens
    (``pooling="mean"``) or at its last token (``"last"``, as kgsim's ``query_repr``).

    Raises:
        ValueError: an unknown `pooling`.
        ContextLengthError: a text longer than the model's learned positions.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling = {pooling!r}: choose one of {list(POOLINGS)}")
    side = tokenizer.padding_side
    if pooling == "last":
        tokenizer.padding_side = "left"                               # the last real token sits at -1
    device = model_device(model)
    out = np.zeros((len(texts), model.config.hidden_size), np.float32)
    was_training = model.training
    model.eval()
    try:
        for idx in _batches(tokenizer, texts, batch_size, model):
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True).to(device)
            hidden = model(**enc, output_hidden_states=True).hidden_states[-1].float()   # [B, T, D]
            mask = enc["attention_mask"].unsqueeze(-1).float()                            # [B, T, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)                  # [B, D]
            out[idx] = (pooled if pooling == "mean" else hidden[:, -1]).cpu().numpy()
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out
