"""`kgsim bridge run`: the study on a real Hugging Face model, with kgsim's report and checks;
`kgsim bridge agree`: kgsim's and the bridge's accuracy of a kgsim export, side by side;
`kgsim bridge pretrain`: kgsim's GPT pretrained on a verbalised graph, for the natural-language path.

The bridge writes its own run directory (see :mod:`llm_bridge.pipeline`); this command then adds
what `kgsim run` writes, from the same EdgeSets: ``seed-<seed>/edges.json`` (so `kgsim check`
works unchanged), a ``report.md`` with the gap tables, the O1-O3 verdicts and the theory checks.

On a model exported by ``kgsim pretrain`` (``P/hf/``) and its world (``kgsim graph --out W``)::

    kgsim bridge run --model P/hf --data synthetic --data-path W --set data.format=kgsim-tokens --out OUT
    kgsim bridge agree --model P/hf --data-path W [--kgsim-model P/base.safetensors] [--out OUT]

(see :mod:`llm_bridge.kgsim_tokens` and :mod:`llm_bridge.agreement`). In natural language, with
kgsim's configuration (``--preset``, ``--config``, ``--set`` name kgsim's keys here; see
:mod:`llm_bridge.verbalised`)::

    kgsim bridge pretrain --preset default --set model.n_ctx=128 --out P
    kgsim bridge run --model P/hf --data synthetic --data-path P/world --out OUT
"""
from __future__ import annotations

import argparse
from pathlib import Path

from kgsim.cli.base import UserError, command, resolve_config
from kgsim.core.io import write_json, write_text
from kgsim.core.names import shots_of, sim_bucket_index
from kgsim.nn.model import load_model as load_kgsim
from kgsim.nn.train import DataError
from kgsim.study.report import checks_section, checks_table, gap_tables
from kgsim.study.results import (
    aggregate,
    bootstrap_gap_intervals,
    bootstrap_gaps,
    observations,
    seed_figures,
    summarise_observation,
)
from kgsim.study.runner import checks_json
from llm_bridge.agreement import AgreementError, agreement, format_agreement
from llm_bridge.config import bridge_config
from llm_bridge.datasets import DatasetFileError
from llm_bridge.evaluate import load_edgesets, two_hop_queries
from llm_bridge.generation import ContextLengthError
from llm_bridge.models import ModelDirError
from llm_bridge.pipeline import BridgeError, run_bridge
from llm_bridge.verbalised import VerbalisedError, pretrain_verbalised


def _bridge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["run", "agree", "pretrain"],
                   help="run: the study; agree: kgsim vs bridge accuracy of a kgsim export on the same facts; "
                        "pretrain: kgsim's GPT on a verbalised graph, exported for run")
    p.add_argument("--model", type=Path, help="a local Hugging Face causal LM directory (run, agree)")
    p.add_argument("--data", choices=["entityquestions", "popqa", "mmlu", "synthetic"],
                   help="the dataset (run; agree takes a kgsim world)")
    p.add_argument("--data-path", type=Path,
                   help="the dataset's directory or file (synthetic / agree: a kgsim world directory)")
    p.add_argument("--preset", default="default", help="bridge preset (default, tiny); pretrain: kgsim preset")
    p.add_argument("--config", metavar="FILE", help="pretrain: a TOML file of kgsim overrides")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a bridge key (run), or a kgsim key (pretrain), e.g. finetune.lr=1e-5")
    p.add_argument("--vocab-size", type=int, default=2048, help="pretrain: BPE vocabulary size")
    p.add_argument("--device", default="auto", help="pretrain: auto, cpu, cuda, cuda:N")
    p.add_argument("--out", type=Path, help="run directory (a partial run there resumes); agree: writes "
                   "agreement.json there")
    p.add_argument("--until", default="evaluate", choices=["categorise", "finetune", "evaluate"])
    p.add_argument("--k-shots", type=int, nargs="+", default=[1, 2], help="agree: k-shot prompts besides zero-shot")
    p.add_argument("--kgsim-model", type=Path, help="agree: the kgsim model file (e.g. P/base.safetensors) the "
                   "simulator runs (default: the export converted back)")


@command("bridge", "run the factuality-gap study on a local Hugging Face model", _bridge_args)
def _bridge(args) -> int:

    if args.action == "pretrain":
        return _pretrain(args)
    for opt in ("model", "data_path"):
        if getattr(args, opt) is None:
            raise UserError(f"bridge {args.action}: --{opt.replace('_', '-')} is required")
    if args.action == "agree":
        return _agree(args)
    for opt in ("data", "out"):
        if getattr(args, opt) is None:
            raise UserError(f"bridge run: --{opt} is required")
    cfg = bridge_config(args.preset, args.overrides)
    try:
        res = run_bridge(args.model, args.data, args.data_path, cfg, args.out, until=args.until)
    except (ModelDirError, DatasetFileError, BridgeError, ContextLengthError) as e:
        raise UserError(str(e)) from None
    if args.until == "evaluate":
        report = write_kgsim_view(args.out, res, cfg.seed)
        print(f"report: {report}")
    return 0


def _pretrain(args) -> int:
    """`kgsim bridge pretrain`: :func:`llm_bridge.verbalised.pretrain_verbalised`, with a summary."""


    if args.out is None:
        raise UserError("bridge pretrain: --out is required")
    if args.vocab_size < 260:
        raise UserError(f"--vocab-size = {args.vocab_size}: must be >= 260 (256 bytes and 4 special tokens)")
    cfg = resolve_config(args)
    if cfg.model.n_ctx < 128:
        print(f"note: model.n_ctx = {cfg.model.n_ctx}: a 4-shot prompt in words is ~90 tokens and a CoT prompt "
              "~150; the bridge will refuse prompts beyond it (--set model.n_ctx=256 fits the defaults)")
    try:
        s = pretrain_verbalised(cfg, args.out, vocab_size=args.vocab_size, device=args.device)
    except (VerbalisedError, DataError) as e:
        raise UserError(str(e)) from None
    p = s["pretrain"]
    print(f"pretraining: {s['params']:,} parameters, {p['steps']} steps, {p['tokens_per_s']:,.0f} tokens/s, "
          f"{p['wall_s']:.0f} s")
    if s["base"]:
        b = s["base"]
        print(f"on {b['n_facts']} sampled facts | times shown | facts | statement acc | QA acc (statement-only subjects)")
        for row in b["buckets"]:
            pct = ["-" if v is None else f"{100 * v:.1f}%" for v in (row["statement_acc"],
                                                                   row["qa_acc_statement_only_subjects"])]
            print(f"{row['exposure']:>11} | {row['n']:>5} | {pct[0]:>12} | {pct[1]:>6}")
        ex = b["extraction_rate"]
        print(f"extraction rate: {'-' if ex is None else f'{100 * ex:.1f}%'}")
    print(f"wrote {args.out}/ (hf/: the model for --model; world/: the graph for --data-path; pretraining.png)")
    return 0


def _agree(args) -> int:
    """`kgsim bridge agree`: print (and write) :func:`llm_bridge.agreement.agreement`."""


    gpt = None
    if args.kgsim_model is not None:

        try:
            gpt = load_kgsim(args.kgsim_model)
        except (OSError, ValueError) as e:           # missing file, not a kgsim safetensors file
            raise UserError(f"--kgsim-model = {str(args.kgsim_model)!r}: {e}") from None
    try:
        res = agreement(args.model, args.data_path, k_shots=args.k_shots, kgsim_gpt=gpt)
    except (ModelDirError, AgreementError) as e:
        raise UserError(str(e)) from None
    print(format_agreement(res))
    if args.out is not None:
        write_json(args.out / "agreement.json", res)
        print(f"wrote {args.out / 'agreement.json'}")
    return 0


def write_kgsim_view(out: Path, res: dict, seed: int) -> Path:
    """seed-<seed>/edges.json in kgsim's layout, results_kgsim.json and report.md."""
    edges = load_edgesets(out / "edges")
    edge_sets, two_hop = list(edges.values()), two_hop_queries(edges)
    write_json(out / f"seed-{seed}" / "edges.json", {"edge_sets": [e.to_json() for e in edge_sets],
                                                   "two_hop": two_hop.to_json(), "splits": {}})
    figs = seed_figures(edge_sets)
    per_seed = [{"seed": seed, **figs, "checks": checks_json(edge_sets, two_hop)}]
    k_shots = tuple(k for k in {shots_of(e.prompt) for e in edge_sets} if k)
    sims = sorted({e.split for e in edge_sets if sim_bucket_index(e.split)}, key=sim_bucket_index)
    boot = bootstrap_gaps(edge_sets, seed=seed)
    obs = observations(per_seed, tuple(sorted(k_shots)), sims, boot=boot)
    agg = aggregate([{k: s[k] for k in ("accuracy", "gaps")} for s in per_seed])
    agg["gaps"] = bootstrap_gap_intervals(figs["gaps"], boot)
    view = {"config": {"prompts": {"k_shots": sorted(k_shots)}}, "seeds": [seed], "per_seed": per_seed,
            "aggregate": agg,
            "observations": obs, "sim_buckets": sims, "bridge": {k: res.get(k) for k in ("model_dir", "data", "counts")}}
    write_json(out / "results_kgsim.json", view)
    L = ["# kgsim bridge report", "", f"Model `{res.get('model_dir')}`, data `{res.get('data')}`, seed {seed}. "
         "One seed: each claim is judged on a 95% bootstrap interval over test facts (it holds when the "
         "interval lies on the claimed side of zero); that covers test-set sampling, not training "
         "randomness.", "", "## Observations", ""]
    for name, parts in obs.items():
        L += [f"**{name}**: **{summarise_observation(parts)}**", "",
              "| claim | value (points) | 95% interval | verdict |", "|---|---|---|---|"]
        L += [f"| {k} | {100 * v['mean']:.1f} | [{100 * v['lo']:.1f}, {100 * v['hi']:.1f}] | {v['verdict']} |"
              for k, v in parts.items()] + [""]
    L += gap_tables(view, view["aggregate"]) + checks_section(view)
    write_text(out / "checks.md", checks_table(view))
    path = out / "report.md"
    write_text(path, "\n".join(L))
    return path


