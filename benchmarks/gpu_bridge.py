"""GPU check: the bridge on a ~100M-parameter kgsim export.

``--format text`` (default): pretrains kgsim's GPT (d_model 768, 12 layers: ~86M parameters) on the
default world *verbalised* (natural-language statements and Q/A, a BPE tokenizer:
:mod:`llm_bridge.verbalised`) on the GPU (bf16), exports it to Hugging Face format, and runs the
bridge on it as on a real LLM (``data.format = text``: generated multi-token answers, answer
matching). ``--format kgsim-tokens``: pretrains on kgsim's token corpus instead and runs the bridge
on kgsim's own prompts, which adds the bridge-vs-simulator agreement.

Either way: SliCK categorisation, FT-Known / FT-Unknown fine-tuning with the transformers Trainer,
evaluation under every prompt; reports pretraining tokens/s, the bridge's stage times and
fine-tuning tokens/s, and the gap table. ``gpu_bridge.json`` is rewritten after every phase, so a
run cut off by its time box still leaves what it measured. ``--tiny`` runs the same logic on CPU in
seconds (a check of the script, not of the GPU).

    python benchmarks/gpu_bridge.py --out /tmp/gpu_bridge                  # on the H100
    python benchmarks/gpu_bridge.py --out /tmp/gpu_bridge_cpu --tiny       # logic check on CPU
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from kgsim.core.config import load_config
from kgsim.nn.model import build_model, export_hf
from kgsim.nn.train import train
from kgsim.study.stages import memorisation
from kgsim.world.build import build_world, save_world


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--format", choices=["text", "kgsim-tokens"], default="text")
    ap.add_argument("--steps", type=int, help="pretraining steps (default 400 text (rows of 256), 800 kgsim-tokens (rows of 64))")
    ap.add_argument("--resume", action="store_true", help="keep --out: every stage resumes from its cache")
    args = ap.parse_args()
    if not args.resume:
        shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    dev = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if dev == "cuda":                  # TF32 for the float32 export's probing and evaluation matmuls
        torch.set_float32_matmul_precision("high")
    text = args.format == "text"
    steps = args.steps or (400 if text else 800)
    model_ov = ([] if args.tiny else
                ["model.d_model=768", "model.n_layers=12", "model.n_heads=12", f"pretrain.steps={steps}",
                 "pretrain.batch_size=128", "pretrain.lr=1e-3", "pretrain.warmup_steps=80",
                 "pretrain.eval_every=10000", "pretrain.ckpt_every=10000"])
    if text:
        model_ov += ["model.n_ctx=256", *(["model.d_model=64", "model.n_heads=2", "pretrain.steps=400"] if args.tiny else [])]
    cfg = load_config("smoke" if args.tiny else "default", overrides=["run.seeds=[0]", *model_ov])
    summary: dict = {"device": dev, "gpu": torch.cuda.get_device_name() if dev == "cuda" else None,
                     "format": args.format}

    def save() -> None:
        (args.out / "gpu_bridge.json").write_text(json.dumps(summary, indent=1, default=str))

    t0 = time.perf_counter()
    if text:
        from llm_bridge.verbalised import pretrain_verbalised

        pre = pretrain_verbalised(cfg, args.out / "pretrain", vocab_size=1024, device=dev, progress=False,
                                  probe_facts=2000)
        model_dir, data_path = args.out / "pretrain" / "hf", args.out / "pretrain" / "world"
        summary.update(params=pre["params"], pretrain=pre["pretrain"], base=pre["base"])
        base = pre["base"]
        print(f"pretrained {pre['params']:,} parameters on {dev} (text, BPE {pre['vocab_size']}): "
              f"{pre['pretrain']['tokens_per_s']:,.0f} tokens/s, {pre['pretrain']['wall_s']:.0f} s; statement acc "
              f"{base['statement_acc_exposed']:.3f}, extraction {base['extraction_rate']}", flush=True)
    else:
        model_dir, data_path = _pretrain_kgsim_tokens(cfg, args.out, dev, summary)
    save()
    from kgsim.cli.bridge import write_kgsim_view
    from llm_bridge.config import bridge_config
    from llm_bridge.pipeline import run_bridge

    new = (["probe.max_new_tokens=8", "eval.max_new_tokens=8", "finetune.max_new_tokens=8", "eval.cot_max_new_tokens=48"]
           if text else ["probe.max_new_tokens=1", "eval.max_new_tokens=1", "finetune.max_new_tokens=1"])
    sets = [f"data.format={args.format}", f"runtime.device={dev}", "finetune.lr=1e-5", "finetune.max_steps=300",
            "finetune.eval_every=10", "finetune.batch_size=32", f"finetune.bf16={'true' if dev == 'cuda' else 'false'}",
            "probe.n_exemplar_sets=5", *new, "data.ft_size=200", f"data.n_candidates={1500 if text else 2000}", "probe.batch_size=1024",
            "eval.batch_size=1024", "finetune.eval_batch_size=1024"]
    if args.tiny:
        sets = [s for s in sets if not s.startswith(("finetune.max_steps", "data.ft_size", "data.n_candidates"))]
        sets += ["finetune.max_steps=6", "data.ft_size=8", "data.n_candidates=240", "data.test_size=16",
                 "data.dev_size=8", "eval.cot_shots=1", "probe.n_exemplar_sets=2", "probe.n_samples=2"]
    bcfg = bridge_config("default", sets)
    tb = time.perf_counter()
    bres = run_bridge(model_dir, "synthetic", data_path, bcfg, args.out / "bridge", progress=False)
    summary["bridge_wall_s"] = time.perf_counter() - tb
    report = write_kgsim_view(args.out / "bridge", bres, bcfg.seed)
    ft = bres.get("finetune", {})
    summary["bridge_timings"] = bres.get("timings")
    summary["bridge"] = {"counts": bres.get("counts"), "agreement": bres.get("agreement"),
                         "finetune": {m: {k: v for k, v in (ft.get(m) or {}).items() if not isinstance(v, (list, dict))}
                                      for m in ("ft-known", "ft-unknown")},
                         "gap": bres.get("gap")}
    summary["total_s"] = time.perf_counter() - t0
    save()
    print(f"bridge: {summary['bridge_wall_s']:.0f} s; report {report}")
    print("  stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in (bres.get("timings") or {}).items()))
    for m in ("ft-known", "ft-unknown"):
        f = ft.get(m) or {}
        if "train_tokens_per_s" in f:
            print(f"  {m}: {f['steps']} steps in {f['train_wall_s']:.1f} s ({f['train_tokens_per_s']:,.0f} tokens/s "
                  f"with dev evaluations), ES step {f['es_step']}")
    for g in bres.get("gap", []):
        if g["split"] not in ("id", "near-id", "open-world", "2hop"):
            continue
        print(f"  {g['stage']:>4} {g['split']:>11} {g['prompt']:>12}: FT-Known {100 * g['fact_known']:5.1f}  "
              f"FT-Unknown {100 * g['fact_unknown']:5.1f}  gap {100 * g['delta']:+6.1f}")
    print(f"agreement with the simulator: {bres.get('agreement')}")
    print(f"total {summary['total_s']:.0f} s")


def _pretrain_kgsim_tokens(cfg, out: Path, dev: str, summary: dict) -> tuple[Path, Path]:
    """kgsim's GPT on kgsim's token corpus, exported; returns (model dir, world dir)."""
    world = build_world(cfg)
    save_world(world, cfg, out / "world", with_exports=False)
    vocab = world.corpus.vocab
    model = build_model(cfg.model, vocab.size, seed=cfg.seed).to(dev)
    summary["params"] = model.n_params()
    res = train(model, world.corpus.rows(cfg.model.n_ctx + 1), cfg.pretrain, out / "train", seed=cfg.seed,
                name="pretrain", progress=False)
    summary["pretrain"] = {"steps": res.final_step, "tokens_per_s": res.tokens_per_s, "wall_s": res.wall_time_s}
    mem = memorisation(model, world)
    summary["base"] = {"statement_acc_exposed": mem["statement_acc_exposed"], "extraction_rate": mem["extraction_rate"],
                       "buckets": [(b["exposure"], round(b["statement_acc"], 3)) for b in mem["buckets"]]}
    print(f"pretrained {summary['params']:,} parameters on {dev}: {res.tokens_per_s:,.0f} tokens/s, "
          f"{res.wall_time_s:.0f} s; statement acc {mem['statement_acc_exposed']:.3f}, "
          f"extraction {mem['extraction_rate']:.3f}", flush=True)
    export_hf(model.cpu(), vocab.tokens, out / "hf", pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    return out / "hf", out / "world"


if __name__ == "__main__":
    main()
