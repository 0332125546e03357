"""Benchmark: training tokens/s of kgsim's GPT vs ``transformers.GPT2LMHeadModel`` of the same shape.

Both models start from the same weights (the HF model is ``kgsim.nn.model.to_hf`` of ours, so the
first losses must agree: printed as a check), see the same token batches, and run the same train
step: forward + loss under the same precision (bf16 autocast unless --no-bf16), backward, gradient
clipping at 1.0, fused AdamW (foreach where fused is missing), ``zero_grad(set_to_none=True)``.

Rows are shaped as kgsim's trainer makes them: ``rows`` [B, n_ctx]; inputs ``rows[:, :-1]``,
targets ``rows[:, 1:]``, loss mask ``mask[:, 1:]``. Two masks: ``pretrain`` (every position but the
first: packed documents) and ``finetune`` (one answer token per row: QA fine-tuning). On CPU kgsim
computes the LM head only where the mask is True; HF receives the same targets as ``labels`` /
``shift_labels`` with -100 elsewhere (its standard loss path). HF gets its faster attention of
``sdpa`` and ``eager`` (both timed in warm-up; the choice is reported).

Steps of the two models are interleaved (ours, HF, HF, ours, ...) so that load from other users of
the machine hits both alike; tokens/s is every input position (B * (n_ctx - 1)) over the median
step time (the mean-based figure is in the JSON too).

CPU (default): ~1M (d 128, 2 layers, V 4096) and ~10M (d 384, 4 layers, V 8192) parameters, rows
of 33 tokens, 1 thread (a shared 2-core box; --threads to change); --preset cpu-deep adds a 10-layer
d-256 ~10M model. CUDA (--device cuda): ~5M, ~30M, ~90M parameters, 10k vocabulary, sequences of
32; bf16 autocast; both models torch.compile'd (--compile off to skip; a model whose compilation
fails runs eagerly and the error is recorded); on CUDA kgsim's loss runs the LM head on every row
(masked rows weighted 0: no host sync, one graph). Reports model-FLOPs utilisation (MFU):

    FLOPs per token = 6 * N + 12 * n_layers * T * d_model
    N = parameters less the position embedding (the tied LM head counted once, as a matmul);
    the second term is attention's QK^T and AV, forward and backward, without causal savings
    (the PaLM convention). Every position is counted, whatever the loss mask.
    MFU = FLOPs per token * tokens/s / peak; peak = 989 TFLOP/s (H100 SXM bf16 dense, spec) and,
    as a second column, the bf16 matmul rate measured on this device at start-up.

    python benchmarks/bench_train.py                          # CPU, ~50 s
    python benchmarks/bench_train.py --device cuda            # H100, ~3-4 min (compilation ~15-30 s
                                                              # per model); --budget caps the run
    python benchmarks/bench_train.py --device cuda --compile off --quick   # H100, ~35 s
    python benchmarks/bench_train.py --device cpu --preset cuda --rows 2 --steps 2   # CUDA logic on CPU

Prints a table and writes JSON (--out, default runs/bench/bench_train_<device>.json, outside the
tracked tree; benchmarks/results/ holds the committed record).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from kgsim.core.io import OutputPathError, check_out_file, write_json  # noqa: E402

H100_BF16_DENSE_PEAK = 989e12   # FLOP/s, spec sheet (SXM); about 800e12 is what large matmuls reach


@dataclass(frozen=True)
class Shape:
    name: str
    d_model: int
    n_layers: int
    n_heads: int
    vocab: int
    n_ctx: int      # row length; the model sees n_ctx - 1 positions
    rows: int       # batch size B


PRESETS = {
    "cpu": [Shape("1M", 128, 2, 4, 4096, 33, 64),
            Shape("10M", 384, 4, 6, 8192, 33, 32)],
    "cpu-deep": [Shape("10M-deep", 256, 10, 8, 8192, 33, 32)],
    "cuda": [Shape("5M", 256, 4, 4, 10000, 33, 1024),
             Shape("30M", 512, 8, 8, 10000, 33, 512),
             Shape("90M", 768, 12, 12, 10000, 33, 512)],
}


# --------------------------------------------------------------------------------------------
# Models, data, steps
# --------------------------------------------------------------------------------------------

def make_models(shape: Shape, device: str, hf_attn: str):
    from kgsim.core.config import ModelConfig
    from kgsim.nn.model import build_model, to_hf

    cfg = ModelConfig(d_model=shape.d_model, n_layers=shape.n_layers, n_heads=shape.n_heads,
                      n_ctx=shape.n_ctx - 1)
    ours = build_model(cfg, shape.vocab, seed=0)
    hf = to_hf(ours, attn_implementation=hf_attn)
    return ours.to(device).train(), hf.to(device).train()


def make_batches(shape: Shape, task: str, device: str, n: int = 4):
    """`n` batches (inputs, targets, loss_mask, hf_labels) drawn from a seeded generator."""
    g = torch.Generator().manual_seed(1234)
    out = []
    for _ in range(n):
        rows = torch.randint(1, shape.vocab, (shape.rows, shape.n_ctx), generator=g)   # [B, n_ctx]
        mask = torch.ones_like(rows, dtype=torch.bool)
        mask[:, 0] = False                                    # the first token has no prefix
        if task == "finetune":                                # one answer token per row, near the end
            ans = torch.randint(shape.n_ctx // 2, shape.n_ctx, (shape.rows,), generator=g)
            mask = torch.zeros_like(mask).scatter_(1, ans[:, None], True)
        x, t, m = rows[:, :-1], rows[:, 1:], mask[:, 1:]     # [B, T] each, T = n_ctx - 1
        labels = t.masked_fill(~m, -100).contiguous()         # HF: same targets, -100 elsewhere
        out.append(tuple(a.to(device) for a in (x.contiguous(), t.contiguous(), m.contiguous(), labels)))
    return out


def make_optimizer(model, device: str):
    kw = dict(lr=1e-3, betas=(0.9, 0.98), weight_decay=0.1)
    try:
        return torch.optim.AdamW(model.parameters(), fused=True, **kw)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(model.parameters(), foreach=True, **kw)


def make_step(model, opt, kind: str, device: str, bf16: bool, compiled):
    """One train step on batch b -> loss (a tensor; no sync)."""
    fwd = compiled if compiled is not None else model
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_of(b):
        x, t, m, labels = b
        if kind == "ours":
            return fwd(x, t, m)[1]
        return fwd(input_ids=x, labels=labels, shift_labels=labels).loss

    def step(b):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_of(b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(step, batches, device: str, k: int) -> float:
    """Mean seconds per step over k steps (one sync at each end: a GPU's queue stays full)."""
    sync(device)
    t0 = time.perf_counter()
    for i in range(k):
        step(batches[i % len(batches)])
    sync(device)
    return (time.perf_counter() - t0) / k


# --------------------------------------------------------------------------------------------
# One shape
# --------------------------------------------------------------------------------------------

def flops_per_token(model, shape: Shape) -> float:
    n = model.n_params() - model.wpe.weight.numel()
    return 6.0 * n + 12.0 * shape.n_layers * (shape.n_ctx - 1) * shape.d_model


def pick_hf_attention(shape: Shape, task: str, device: str, args) -> tuple[str, dict]:
    """Time a few HF steps with each attention implementation; return the faster one."""
    times = {}
    for impl in ("sdpa", "eager"):
        _, hf = make_models(shape, device, impl)
        step = make_step(hf, make_optimizer(hf, device), "hf", device, args.bf16, None)
        batches = make_batches(shape, task, device, n=2)
        step(batches[0])
        times[impl] = min(timed(step, batches, device, 1) for _ in range(2))
        del hf, step
    return min(times, key=times.get), times


def run_shape(shape: Shape, task: str, device: str, args, time_share: float) -> dict:
    hf_attn, attn_probe = (args.hf_attn, {}) if args.hf_attn != "auto" else pick_hf_attention(shape, task, device, args)
    ours, hf = make_models(shape, device, hf_attn)
    batches = make_batches(shape, task, device)
    compile_on = args.compile == "on" or (args.compile == "auto" and device == "cuda")
    steps, compile_s, compiled, errors = {}, {}, {}, {}
    first = {}
    for kind, model in (("ours", ours), ("hf", hf)):
        # Warm-up (compilation happens here); the first losses must agree: same weights, same batch.
        # A model whose compilation fails runs eagerly, and the error is reported.
        for use_compile in ([True, False] if compile_on else [False]):
            opt = make_optimizer(model, device)
            steps[kind] = make_step(model, opt, kind, device, args.bf16, torch.compile(model) if use_compile else None)
            t0 = time.perf_counter()
            try:
                first[kind] = steps[kind](batches[0]).item()
                for i in range(1, args.warmup):
                    steps[kind](batches[i % len(batches)])
                sync(device)
            except Exception as e:  # noqa: BLE001 - report it and measure the eager model
                if not use_compile:
                    raise
                errors[kind] = f"{type(e).__name__}: {str(e)[:300]}"
                print(f"  {shape.name} {kind}: torch.compile failed, running eagerly ({errors[kind][:120]})")
                model.zero_grad(set_to_none=True)
                continue
            compile_s[kind], compiled[kind] = time.perf_counter() - t0, use_compile
            break
    # Measured blocks of steps, interleaved: ours, hf, hf, ours, ours, hf, ...
    k = args.block
    t_start = time.perf_counter()
    times = {"ours": [], "hf": []}
    for i in range(max(1, args.steps // k)):
        order = ("ours", "hf") if i % 2 == 0 else ("hf", "ours")
        for kind in order:
            times[kind].append(timed(steps[kind], batches, device, k))
        if (i + 1) * k >= args.min_steps and time.perf_counter() - t_start > time_share:
            break
    tokens = shape.rows * (shape.n_ctx - 1)
    res = dict(shape=asdict(shape), task=task, device=device, params=ours.n_params(), tokens_per_step=tokens,
               steps=len(times["ours"]) * k, block=k, hf_attn=hf_attn, hf_attn_probe_s=attn_probe,
               first_loss=first, warmup_s=compile_s, compiled=compiled, compile_errors=errors, bf16=args.bf16,
               step_s=times)
    for kind in ("ours", "hf"):   # median step time: robust to bursts of load from other users
        res[f"{kind}_tok_s"] = tokens / statistics.median(times[kind])
        res[f"{kind}_tok_s_mean"] = tokens / statistics.mean(times[kind])
    res["ratio"] = res["ours_tok_s"] / res["hf_tok_s"]
    fpt = flops_per_token(ours, shape)
    res["flops_per_token"] = fpt
    for kind in ("ours", "hf"):
        res[f"{kind}_tflop_s"] = fpt * res[f"{kind}_tok_s"] / 1e12
        if device == "cuda":
            res[f"{kind}_mfu_spec"] = fpt * res[f"{kind}_tok_s"] / H100_BF16_DENSE_PEAK
            if args.measured_peak:
                res[f"{kind}_mfu_measured"] = fpt * res[f"{kind}_tok_s"] / args.measured_peak
    del ours, hf, steps
    if device == "cuda":
        torch.cuda.empty_cache()
    return res


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def measure_matmul_peak(device: str, seconds: float = 1.0) -> float | None:
    """bf16 matmul FLOP/s reached on this device (8192^3), or None off CUDA."""
    if device != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            a @ b
        sync(device)
        n += 10
    return 2 * 8192 ** 3 * n / (time.perf_counter() - t0)


def table(results: list[dict], device: str) -> str:
    head = ["shape", "task", "params", "tok/step", "steps", "ours tok/s", "HF tok/s", "ratio", "HF attn",
            "loss0 ours/HF"]
    if device == "cuda":
        head += ["MFU ours", "MFU HF", "MFU* ours", "compiled ours/HF"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = [r["shape"]["name"], r["task"], f"{r['params'] / 1e6:.2f}M", str(r["tokens_per_step"]),
               str(r["steps"]), f"{r['ours_tok_s']:,.0f}", f"{r['hf_tok_s']:,.0f}", f"{r['ratio']:.2f}x",
               r["hf_attn"], f"{r['first_loss']['ours']:.4f}/{r['first_loss']['hf']:.4f}"]
        if device == "cuda":
            row += [f"{100 * r['ours_mfu_spec']:.1f}%", f"{100 * r['hf_mfu_spec']:.1f}%",
                    f"{100 * r.get('ours_mfu_measured', float('nan')):.1f}%",
                    "/".join("yes" if r["compiled"].get(k) else "no" for k in ("ours", "hf"))]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def environment(device: str, threads: int) -> dict:
    import transformers

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = ""
    env = dict(python=platform.python_version(), torch=torch.__version__, transformers=transformers.__version__,
               machine=platform.processor() or platform.machine(), threads=threads, git_commit=commit,
               date=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    return env


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--preset", choices=sorted(PRESETS), help="shape set (default: the device's)")
    p.add_argument("--only", nargs="*", help="shape names to run (e.g. 1M)")
    p.add_argument("--tasks", nargs="*", default=None, choices=["pretrain", "finetune"],
                   help="loss masks to run (default: pretrain and finetune on CPU, pretrain on CUDA)")
    p.add_argument("--rows", type=int, help="override every shape's batch size (logic checks)")
    p.add_argument("--steps", type=int, help="measured steps per model and shape (an upper bound)")
    p.add_argument("--block", type=int, help="steps timed together (default 1 on CPU, 5 on CUDA)")
    p.add_argument("--warmup", type=int, help="warm-up steps per model (compilation included)")
    p.add_argument("--min-steps", type=int, default=3, help="measured steps even past the time budget")
    p.add_argument("--budget", type=float,
                   help="seconds for the whole run; shapes that no longer fit are skipped "
                        "(default CPU 60, CUDA 240; --quick: 30 and 150)")
    p.add_argument("--quick", action="store_true", help="fewer steps and a smaller budget")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto", help="auto: on for CUDA")
    p.add_argument("--hf-attn", choices=["auto", "sdpa", "eager"], default="auto")
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    cuda = a.device == "cuda"
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    a.preset = a.preset or a.device
    a.tasks = a.tasks or (["pretrain"] if cuda else ["pretrain", "finetune"])
    a.steps = a.steps or ((20 if cuda else 6) if a.quick else (40 if cuda else 12))
    a.block = a.block or (5 if cuda else 1)
    a.warmup = a.warmup or (3 if cuda else 2)
    a.budget = a.budget or ((150.0 if cuda else 30.0) if a.quick else (240.0 if cuda else 60.0))
    a.out = a.out or Path("runs") / "bench" / f"bench_train_{a.device}.json"
    try:
        check_out_file(a.out)
    except OutputPathError as e:
        p.error(str(e))
    return a


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    shapes = [s for s in PRESETS[args.preset] if not args.only or s.name in args.only]
    if args.rows:
        shapes = [Shape(**{**asdict(s), "rows": args.rows}) for s in shapes]
    args.measured_peak = measure_matmul_peak(args.device)
    jobs = [(s, t) for s in shapes for t in args.tasks]
    results, skipped, t0, setup = [], [], time.perf_counter(), 0.0
    for i, (shape, task) in enumerate(jobs):
        left = args.budget - (time.perf_counter() - t0)
        if results and left < setup:          # not even time to set the next one up: stop here
            skipped = [f"{s.name} {t}" for s, t in jobs[i:]]
            print(f"time budget ({args.budget:.0f} s) spent: skipping {', '.join(skipped)}")
            break
        t_job = time.perf_counter()
        r = run_shape(shape, task, args.device, args, max(0.0, left / (len(jobs) - i) - setup))
        measured = (sum(r["step_s"]["ours"]) + sum(r["step_s"]["hf"])) * r["block"]
        setup = time.perf_counter() - t_job - measured   # model building, probing, compiling, warm-up
        results.append(r)
        print(f"{shape.name} {task}: ours {r['ours_tok_s']:,.0f} tok/s, HF[{r['hf_attn']}] {r['hf_tok_s']:,.0f} "
              f"tok/s, ratio {r['ratio']:.2f}x ({r['steps']} steps; loss0 {r['first_loss']['ours']:.4f} vs "
              f"{r['first_loss']['hf']:.4f})", flush=True)
    print()
    print(table(results, args.device))
    if args.device == "cuda":
        print(f"\nMFU: FLOPs/token = 6*N + 12*n_layers*T*d_model; peak {H100_BF16_DENSE_PEAK / 1e12:.0f} TFLOP/s "
              f"(H100 bf16 dense spec). MFU*: against the measured bf16 matmul rate "
              f"{(args.measured_peak or 0) / 1e12:.0f} TFLOP/s.")
    out = dict(benchmark="bench_train", environment=environment(args.device, args.threads),
               args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               peak_flops_spec=H100_BF16_DENSE_PEAK if args.device == "cuda" else None,
               results=results, skipped=skipped, wall_s=time.perf_counter() - t0)
    write_json(args.out, out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
