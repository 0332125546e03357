"""Benchmark: one bf16-autocast training step of the default preset's model with its matrix products
on float32 kernels (kgsim.nn.precision, ``KGSIM_BF16_MATMUL=float32``) against torch's own bf16
kernels (``native``), with a float32 step beside them for scale.

On a CPU with AVX2 only torch's bf16 products fall back to a generic kernel ~10x slower than
float32; on AVX512 machines oneDNN's bf16 kernels are fast and ``auto`` keeps them. The three
steps run interleaved from the same weights on the same batches (rows of the preset's shape,
64 x 64 tokens, every position a target), one thread, median step time. Also printed: the largest
difference between the first losses of the two bf16 steps (summation order only) and between bf16
and float32 (rounding), as a check that the step measured is the same computation.

    python benchmarks/bench_bf16_matmul.py              # ~1 min on an AVX2 core
    python benchmarks/bench_bf16_matmul.py --steps 3    # quicker

Writes JSON (--out, default runs/bench/bench_bf16_matmul.json; benchmarks/results/ holds the
committed record).
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from pathlib import Path

import torch

from kgsim.core.config import load_config
from kgsim.core.io import OutputPathError, check_out_file, write_json
from kgsim.nn.model import build_model
from kgsim.nn.precision import Float32Products, kernel_record

MODES = ("float32", "bf16 native", "bf16 float32 products")


def _context(mode: str):
    return Float32Products() if mode == "bf16 float32 products" else contextlib.nullcontext()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per mode (after one warm-up)")
    ap.add_argument("--vocab", type=int, default=1700, help="vocabulary size (the default world's is ~1,700)")
    ap.add_argument("--out", default="runs/bench/bench_bf16_matmul.json")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error(f"--steps = {args.steps}: must be >= 1")
    try:
        out = check_out_file(args.out)
    except OutputPathError as e:
        ap.error(str(e))
    torch.set_num_threads(1)
    cfg = load_config("default")
    B, T = cfg.pretrain.batch_size, cfg.model.n_ctx
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(0, args.vocab, (args.steps + 1, B, T + 1), generator=gen)
    mask = torch.ones(B, T, dtype=torch.bool)
    models = {m: build_model(cfg.model, args.vocab, seed=0) for m in MODES}
    opts = {m: torch.optim.AdamW(models[m].parameters(), lr=cfg.pretrain.lr) for m in MODES}
    times: dict[str, list[float]] = {m: [] for m in MODES}
    first: dict[str, float] = {}
    for s in range(args.steps + 1):
        for m in (MODES if s % 2 == 0 else MODES[::-1]):            # interleaved, order alternating
            t0 = time.perf_counter()
            with _context(m):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=m != "float32"):
                    _, loss = models[m](rows[s, :, :-1], rows[s, :, 1:], mask)
                loss.backward()
            opts[m].step()
            opts[m].zero_grad(set_to_none=True)
            if s == 0:
                first[m] = loss.item()
            else:
                times[m].append(time.perf_counter() - t0)
    med = {m: statistics.median(times[m]) for m in MODES}
    tokens = B * T
    res = {"platform": platform.platform(), "processor": platform.processor(), **kernel_record(),
           "torch": torch.__version__, "batch": [B, T], "steps": args.steps,
           "step_s": med, "tokens_per_s": {m: tokens / med[m] for m in MODES},
           "speedup_vs_native": med["bf16 native"] / med["bf16 float32 products"],
           "cost_vs_float32": med["bf16 float32 products"] / med["float32"],
           "first_loss": first}
    print(f"{'mode':<24}{'s/step':>10}{'tokens/s':>12}")
    for m in MODES:
        print(f"{m:<24}{med[m]:>10.3f}{tokens / med[m]:>12,.0f}")
    print(f"bf16 with float32 products: {res['speedup_vs_native']:.1f}x faster than torch's bf16 kernels here "
          f"({res['cpu_capability']}), {res['cost_vs_float32']:.2f}x a float32 step")
    print(f"first loss: native {first['bf16 native']:.6f}, float32 products {first['bf16 float32 products']:.6f}, "
          f"float32 {first['float32']:.6f}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_json(out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
