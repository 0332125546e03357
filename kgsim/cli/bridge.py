"""`kgsim bridge ACTION`: the factuality-gap study on local Hugging Face causal LMs.

- ``kgsim bridge run``: the study on a real model, with kgsim's report, figures and checks;
- ``kgsim bridge agree``: kgsim's and the bridge's accuracy of a kgsim export, side by side;
- ``kgsim bridge pretrain``: kgsim's GPT pretrained on a verbalised graph, for the natural-language path;
- ``kgsim bridge config show``: the bridge's resolved configuration as TOML.

Each action takes only its own flags; any other flag is an error (one line, exit 2). The bridge
writes its own run directory (see :mod:`llm_bridge.pipeline`); ``run`` then adds what `kgsim run`
writes, from the same EdgeSets: ``seed-<seed>/edges.json`` (so `kgsim check` works unchanged), a
``report.md`` with the gap tables, the O1-O3 verdicts and the theory checks, and ``figures/``.

On a model exported by ``kgsim pretrain`` (``P/hf/``) and its world (``kgsim graph --out W``)::

    kgsim bridge run --model P/hf --data synthetic --data-path W --set data.format=kgsim-tokens --out OUT
    kgsim bridge agree --model P/hf --data-path W [--kgsim-model P/base.safetensors] [--out OUT]

(see :mod:`llm_bridge.kgsim_tokens` and :mod:`llm_bridge.agreement`). In natural language, with
kgsim's configuration (``pretrain``'s ``--preset``, ``--config``, ``--set`` name kgsim's keys; see
:mod:`llm_bridge.verbalised`)::

    kgsim bridge pretrain --preset default --set model.n_ctx=128 --out P
    kgsim bridge run --model P/hf --data synthetic --data-path P/world --out OUT

On a GPU node (docs/gpu-node.md)::

    kgsim bridge run --preset gpu --model meta-llama/Llama-3.1-8B --data entityquestions --data-path EQ --out OUT
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kgsim.cli.base import UserError, add_config_args, command, resolve_config
from kgsim.core.io import write_json, write_text
from kgsim.core.names import FT_MODELS, shots_of, sim_bucket_index
from kgsim.nn.model import load_model as load_kgsim
from kgsim.nn.train import DataError
from kgsim.study.finish import summarise
from kgsim.study.report import checks_section, checks_table, figures, gap_tables
from kgsim.study.results import (
    bootstrap_gaps,
    seed_figures,
    summarise_observation,
)
from kgsim.study.runner import checks_json, two_hop_summary
from llm_bridge.agreement import AgreementError, agreement, format_agreement
from llm_bridge.config import bridge_config, preset_names, to_toml
from llm_bridge.datasets import DatasetFileError
from llm_bridge.evaluate import load_edgesets, two_hop_queries
from llm_bridge.generation import ContextLengthError
from llm_bridge.models import ModelDirError
from llm_bridge.pipeline import BridgeError, run_bridge
from llm_bridge.verbalised import VerbalisedError, pretrain_verbalised

DATASETS = ["entityquestions", "popqa", "mmlu", "synthetic"]


class _ActionParser(argparse.ArgumentParser):
    """An action's parser: a bad or foreign flag is one line (``kgsim bridge run: error: ...``), exit 2."""

    def parse_known_args(self, args=None, namespace=None):
        ns, extra = super().parse_known_args(args, namespace)
        if extra:
            self.error(f"unrecognized arguments: {' '.join(extra)} (this action's flags: {self.prog} --help)")
        return ns, extra

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _action(sub, name: str, help: str, example: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help.replace("%", "%%"), description=help, epilog=f"example:\n  {example}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _bridge_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="default", help=f"bridge preset (one of {', '.join(preset_names())})")
    p.add_argument("--config", metavar="FILE", help="a TOML file of bridge keys, applied after the preset "
                   "(kgsim bridge config show prints one)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one bridge key, e.g. --set finetune.lr=1e-5 (repeatable)")


def _bridge_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_ActionParser)
    run = _action(sub, "run", "the factuality-gap study on a local Hugging Face causal LM (categorise, fine-tune, "
                  "evaluate; resumable)", "kgsim bridge run --model P/hf --data synthetic --data-path P/world "
                  "--preset tiny --out runs/bridge")
    run.add_argument("--model", help="a local Hugging Face causal LM folder, or a hub id (org/name) already in the "
                     "local Hugging Face cache (nothing is downloaded)")
    run.add_argument("--data", choices=DATASETS, help="the dataset")
    run.add_argument("--data-path", type=Path, help="the dataset's folder or file (synthetic: a kgsim world folder)")
    _bridge_config_args(run)
    run.add_argument("--out", type=Path, help="run folder (a partial run there resumes)")
    run.add_argument("--until", default="evaluate", choices=["categorise", "finetune", "evaluate"],
                     help="stop after this stage")
    agree = _action(sub, "agree", "kgsim vs the bridge: the accuracy of a kgsim export on the same facts and prompts",
                    "kgsim bridge agree --model P/hf --data-path W --kgsim-model P/base.safetensors --out runs/agree")
    agree.add_argument("--model", help="the Hugging Face export of a kgsim model (kgsim pretrain's P/hf)")
    agree.add_argument("--data-path", type=Path, help="the kgsim world folder the model was trained on")
    agree.add_argument("--k-shots", type=int, nargs="+", default=[1, 2], help="k-shot prompts besides zero-shot")
    agree.add_argument("--kgsim-model", type=Path, help="the kgsim model file (e.g. P/base.safetensors) the "
                       "simulator runs (default: the export converted back)")
    agree.add_argument("--out", type=Path, help="writes agreement.json there")
    pre = _action(sub, "pretrain", "kgsim's GPT pretrained on the world in words (BPE), exported for bridge run",
                  "kgsim bridge pretrain --preset default --set model.n_ctx=256 --out runs/bridge-pretrain")
    add_config_args(pre)                                     # kgsim's keys: the world and the GPT
    pre.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary size")
    pre.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    pre.add_argument("--out", type=Path, help="output folder (hf/: the model; world/: the named graph)")
    cfg = _action(sub, "config", "the bridge's configuration", "kgsim bridge config show --preset gpu")
    cfg_sub = cfg.add_subparsers(dest="config_action", required=True, metavar="ACTION", parser_class=_ActionParser)
    show = _action(cfg_sub, "show", "print the fully resolved bridge configuration as TOML (defaults <- preset <- "
                   "--config <- --set)", "kgsim bridge config show --preset gpu --set finetune.lr=2e-4 > my.toml")
    _bridge_config_args(show)


@command("bridge", "the study on local Hugging Face models: bridge run | agree | pretrain | config show", _bridge_args)
def _bridge(args) -> int:
    if args.action == "pretrain":
        return _pretrain(args)
    if args.action == "config":
        sys.stdout.write(to_toml(bridge_config(args.preset, args.overrides, args.config)))
        return 0
    for opt in ("model", "data_path"):
        if getattr(args, opt) is None:
            raise UserError(f"bridge {args.action}: --{opt.replace('_', '-')} is required")
    if args.action == "agree":
        return _agree(args)
    for opt in ("data", "out"):
        if getattr(args, opt) is None:
            raise UserError(f"bridge run: --{opt} is required")
    cfg = bridge_config(args.preset, args.overrides, args.config)
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


def _figures(view: dict, res: dict, out: Path) -> dict[str, str]:
    """`kgsim run`'s figures (:func:`kgsim.study.report.figures`) into ``out/figures``: the fitting
    curves from the bridge's dev-accuracy history; no memorisation curve (no pretraining exposures)."""
    nan = float("nan")
    curves = {m: {"curve": [{"step": h["step"], "train_acc": nan, "id_acc": h["dev_acc"]}
                            for h in (res.get("finetune") or {}).get(m, {}).get("history", [])]} for m in FT_MODELS}
    seeds = [{**s, "finetune": curves, "base": {"memorisation": {"buckets": []}}} for s in view["per_seed"]]
    figs = figures({**view, "per_seed": seeds}, out / "figures")
    (out / "figures" / "memorisation.png").unlink(missing_ok=True)
    figs.pop("memorisation", None)
    return figs


def write_kgsim_view(out: Path, res: dict, seed: int) -> Path:
    """seed-<seed>/edges.json in kgsim's layout, results_kgsim.json, report.md and figures/."""
    edges = load_edgesets(out / "edges")
    edge_sets, two_hop = list(edges.values()), two_hop_queries(edges)
    write_json(out / f"seed-{seed}" / "edges.json", {"edge_sets": [e.to_json() for e in edge_sets],
                                                   "two_hop": two_hop.to_json(), "splits": {}})
    figs = seed_figures(edge_sets)
    per_seed = [{"seed": seed, **figs, "two_hop": two_hop_summary(edge_sets, two_hop),
                 "checks": checks_json(edge_sets, two_hop)}]
    k_shots = tuple(k for k in {shots_of(e.prompt) for e in edge_sets} if k)
    sims = sorted({e.split for e in edge_sets if sim_bucket_index(e.split)}, key=sim_bucket_index)
    agg, obs = summarise(per_seed, sorted(k_shots), sims, bootstrap_gaps(edge_sets, seed=seed))
    view = {"config": {"prompts": {"k_shots": sorted(k_shots)}}, "seeds": [seed], "per_seed": per_seed,
            "aggregate": agg,
            "observations": obs, "sim_buckets": sims, "bridge": {k: res.get(k) for k in ("model_dir", "data", "counts")}}
    write_json(out / "results_kgsim.json", view)
    figs = _figures(view, res, out)
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
    L += ["", "## Figures", "", "The figures of `kgsim run`, from the same edge sets. Fitting speed: dev accuracy "
          "(held-out facts of the fine-tuning relations) at every Early Stop evaluation; the training-set "
          "accuracy is measured at convergence only (`results.json` finetune.*.con_train_acc). The memorisation "
          "curve needs pretraining exposures, which a real model has not: it is left out.", ""]
    L += [f"![{name}](figures/{Path(f).name})" for name, f in figs.items()]
    write_text(out / "checks.md", checks_table(view))
    path = out / "report.md"
    write_text(path, "\n".join(L))
    return path


