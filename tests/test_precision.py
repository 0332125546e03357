"""bf16 products on float32 kernels (kgsim.nn.precision): the same arithmetic as torch's bf16 kernels
up to summation order, still bf16 (not float32), caught in the backward too, and chosen by one
environment variable whose bad values are one line and exit 2.

CPU, one thread, tiny tensors; "native" here is whatever bf16 kernel this machine has (oneDNN's on
AVX512, torch's generic one on AVX2), so the comparisons hold on any x86-64 machine.
"""
from __future__ import annotations

import contextlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from kgsim.cli import main  # noqa: E402
from kgsim.core.config import ConfigError, ModelConfig  # noqa: E402
from kgsim.nn.model import build_model  # noqa: E402
from kgsim.nn.precision import (  # noqa: E402
    _PRODUCTS,
    ENV,
    Bf16MatmulError,
    Float32Products,
    bf16_matmul,
    bf16_products,
    kernel_record,
)

torch.set_num_threads(1)
BF = torch.bfloat16
CFG = ModelConfig(d_model=64, n_layers=2, n_heads=4, n_ctx=32)
VOCAB = 50


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _within_one_ulp(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Every element of two bf16 tensors equal or one bf16 step apart (a step is at most 2^-7 of
    the value)."""
    a, b = a.float(), b.float()
    return bool(((a - b).abs() <= 2.0 ** -7 * torch.maximum(a.abs(), b.abs())).all())


@pytest.mark.parametrize("op", ["mm", "addmm", "bmm", "baddbmm"])
def test_float32_products_round_like_bf16_kernels(op):
    a, b, c = _randn(8, 96, 64, seed=1).to(BF), _randn(8, 64, 80, seed=2).to(BF), _randn(80, seed=3).to(BF)
    args = {"mm": (a[0], b[0]), "addmm": (c, a[0], b[0]), "bmm": (a, b), "baddbmm": (c.expand(8, 96, 80), a, b)}[op]
    fn = getattr(torch, op)
    native = fn(*args)
    with Float32Products():
        ours = fn(*args)
    wide = fn(*[x.float() for x in args])
    assert ours.dtype == native.dtype == BF
    assert _within_one_ulp(ours, native)
    assert (ours == native).float().mean() >= 0.99          # differences are rare rounding flips
    assert not torch.equal(ours.float(), wide)               # and the result is rounded to bf16


def _step(mode: str):
    """Logits, and the gradients of one forward and backward of the tiny model, under bf16 autocast
    with the products where `mode` says, or in float32."""
    model = build_model(CFG, VOCAB, seed=0)
    x = torch.randint(0, VOCAB, (8, 33), generator=torch.Generator().manual_seed(4))
    mask = torch.ones(8, 32, dtype=torch.bool)
    counter = _Counting() if mode == "float32-products" else contextlib.nullcontext()
    with counter, torch.autocast("cpu", dtype=BF, enabled=mode != "float32"):
        with torch.no_grad():
            logits = model(x[:, :-1]).float()
        _, loss = model(x[:, :-1], x[:, 1:], mask)
        loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    return logits, grads, counter


class _Counting(Float32Products):
    """Float32Products that counts the bf16 products it caught (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.caught = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _PRODUCTS and any(isinstance(a, torch.Tensor) and a.dtype == BF for a in args):
            self.caught += 1
        return super().__torch_dispatch__(func, types, args, kwargs)


def test_a_training_step_is_bf16_arithmetic_and_the_backward_is_caught():
    out_n, g_n, _ = _step("native")
    out_o, g_o, counter = _step("float32-products")
    out_f, g_f, _ = _step("float32")
    # Forward: 2 layers x (qkv, proj, fc, proj, q@k, att@v) + the LM head = 13 products; the
    # backward has about two per product: far more than 13 caught means the backward is caught.
    assert counter.caught >= 30
    # Against torch's bf16 kernels we differ by summation order only, against float32 by bf16
    # rounding everywhere: the first difference is a small part of the second.
    assert (out_o - out_n).norm() < 0.25 * (out_n - out_f).norm()
    assert (g_o - g_n).norm() < 0.25 * (g_n - g_f).norm()


def test_the_choice_and_its_errors(monkeypatch):
    monkeypatch.setenv(ENV, "float32")
    assert bf16_matmul("cpu") == "float32" and bf16_matmul("cuda") == "native"
    assert kernel_record()["bf16_matmul"] == "float32"
    monkeypatch.setenv(ENV, "native")
    assert bf16_matmul("cpu") == "native"
    assert isinstance(bf16_products("cpu", True), contextlib.nullcontext)     # native: plain autocast
    assert isinstance(bf16_products("cpu", False), contextlib.nullcontext)
    monkeypatch.setenv(ENV, "auto")
    assert bf16_matmul("cpu") == ("native" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32")
    monkeypatch.setenv(ENV, "fast")
    with pytest.raises(Bf16MatmulError, match="KGSIM_BF16_MATMUL = 'fast': choose one of auto, native, float32"):
        bf16_matmul()
    assert issubclass(Bf16MatmulError, ConfigError)


def test_a_bad_choice_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(ENV, "fp8")
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["kgsim: error: KGSIM_BF16_MATMUL = 'fp8': choose one of auto, native, float32"]
    assert not (tmp_path / "r").exists()
