"""bf16 autocast, with its matrix products on float32 kernels where the CPU has no bf16 kernels.

Under ``torch.autocast(dtype=bfloat16)`` the matrix products (``mm``, ``addmm``, ``bmm``,
``baddbmm``) take bf16 inputs, multiply and accumulate in float32 and round the result to bf16
once. CPUs with AVX512 (and GPUs) have fast kernels for that. A CPU with AVX2 only falls back to a
generic kernel about 9x slower than float32: 4.6 s against 0.54 s for one step of the default
preset's model, measured on an AMD EPYC, 97% of it in those four products.

The same products can be computed by a float32 kernel: bf16 values are exact in float32, so
``(a.float() @ b.float()).to(bfloat16)`` is the same arithmetic (float32 products and accumulation,
one rounding to bf16) in another summation order, the same kind of difference as between two
instruction sets' kernels. Everything else stays bf16 autocast as it is: the dtypes that flow
between ops, the elementwise ops in bf16, float32 where autocast puts it. One training step then
costs 0.59 s instead of 4.6 s (benchmarks/bench_bf16_matmul.py; 1.6x a float32 step with both cores
busy); tests/test_precision.py checks the arithmetic.

``KGSIM_BF16_MATMUL`` chooses where the products run:

- ``auto`` (default): native kernels on a GPU and on CPUs oneDNN has bf16 kernels for (AVX512);
  float32 kernels on other CPUs;
- ``native``: always torch's own bf16 kernels;
- ``float32``: always float32 kernels for bf16 products on the CPU.

Each run records the choice (``environment.bf16_matmul`` in results.json). It is not part of any
cache key, as the instruction set is not: it changes summation order, not the computation.

>>> bf16_matmul("cuda") in ("native",)
True
"""
from __future__ import annotations

import contextlib
import os

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from kgsim.core.validate import ConfigError

ENV = "KGSIM_BF16_MATMUL"
CHOICES = ("auto", "native", "float32")

_aten = torch.ops.aten
_PRODUCTS = frozenset({_aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default})


class Bf16MatmulError(ConfigError):
    """KGSIM_BF16_MATMUL holds a value other than auto, native or float32."""


def bf16_matmul(device_type: str = "cpu") -> str:
    """``"native"`` or ``"float32"``: where bf16 matrix products run on `device_type` (see the
    module docstring); raises :class:`Bf16MatmulError` for a bad ``KGSIM_BF16_MATMUL``."""
    choice = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise Bf16MatmulError(f"{ENV} = {os.environ[ENV]!r}: choose one of {', '.join(CHOICES)}")
    if device_type != "cpu" or choice == "native":
        return "native"
    if choice == "float32":
        return "float32"
    return "native" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"


class Float32Products(TorchDispatchMode):
    """Runs every bf16 ``mm``/``addmm``/``bmm``/``baddbmm`` on float32 kernels and rounds the
    result to bf16 once; every other op runs as it would. Below autograd, so the backward's
    products are caught too when the backward runs inside the mode."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _PRODUCTS and any(isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in args):
            wide = [a.float() if isinstance(a, torch.Tensor) else a for a in args]
            return func(*wide, **kwargs).to(torch.bfloat16)
        return func(*args, **kwargs)


def bf16_products(device_type: str, enabled: bool):
    """A context in which bf16 products on `device_type` run where :func:`bf16_matmul` says (a no-op
    when not `enabled` or when native). Wrap forward and backward both."""
    if enabled and bf16_matmul(device_type) == "float32":
        return Float32Products()
    return contextlib.nullcontext()


@contextlib.contextmanager
def bf16_autocast(device_type: str, enabled: bool):
    """``torch.autocast(device_type, bfloat16, enabled)``, its products placed by :func:`bf16_products`."""
    with bf16_products(device_type, enabled), torch.autocast(device_type, dtype=torch.bfloat16, enabled=enabled):
        yield


def kernel_record() -> dict:
    """What a run records about its kernels: the CPU capability torch dispatches to (``AVX2``,
    ``AVX512``, ...) and where bf16 products ran on the CPU (:func:`bf16_matmul`)."""
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "bf16_matmul": bf16_matmul("cpu")}
