"""`kgsim one-layer`: the Ghosal-style one-layer simulation held against kgsim's trained one-layer
attention-only model on the same world's facts (:mod:`kgsim.study.one_layer`), for one seed
(``--seed``: OUT holds the JSON and figures) or several (``--seeds 0 1 2``: OUT/seed-N per seed, and
OUT/one_layer_seeds.json / .png across them, :mod:`kgsim.study.one_layer_seeds`)."""
from __future__ import annotations

from pathlib import Path

import torch

from kgsim.cli.base import UserError, command
from kgsim.study.one_layer import TrainedOneLayerConfig, compare, format_summary, overrides_for, write_outputs
from kgsim.study.one_layer_seeds import format_aggregate, run_seeds


def _one_layer_args(p) -> None:
    p.add_argument("--out", type=Path, required=True, help="output directory (JSON, figures, training checkpoints)")
    p.add_argument("--seed", type=int, default=None, help="one seed (default 0)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="N",
                   help="several seeds: OUT/seed-N each, and OUT/one_layer_seeds.json across them")
    p.add_argument("--work", type=Path, default=None,
                   help="where training checkpoints go (train-seedN; default OUT); a finished training is reused")
    p.add_argument("--preset", default="smoke",
                   help="the world: smoke (default; with kgsim.study.one_layer.DEFAULT_OVERRIDES) or default "
                        "(the default preset's world, with DEFAULT_WORLD_OVERRIDES)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra kgsim config overrides, after the one-layer defaults")
    p.add_argument("--sim-d-model", type=int, default=TrainedOneLayerConfig.sim_d_model)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")


def _check_args(args) -> list[int]:
    """The seeds to run; UserError (one line naming the argument and value) on a bad argument."""
    if args.seed is not None and args.seeds is not None:
        raise UserError(f"--seed {args.seed} and --seeds {' '.join(map(str, args.seeds))}: give one of them")
    seeds = args.seeds if args.seeds is not None else [0 if args.seed is None else args.seed]
    if any(s < 0 for s in seeds):
        raise UserError(f"--seed(s) {' '.join(map(str, seeds))}: seeds must be >= 0")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {' '.join(map(str, seeds))}: a seed is repeated")
    if args.threads < 1:
        raise UserError(f"--threads {args.threads}: must be at least 1")
    if args.sim_d_model < 1:
        raise UserError(f"--sim-d-model {args.sim_d_model}: must be at least 1")
    return seeds


@command("one-layer", "the one-layer theory against a trained one-layer attention-only model", _one_layer_args)
def _one_layer(args) -> int:
    seeds = _check_args(args)
    torch.set_num_threads(args.threads)
    cfg = TrainedOneLayerConfig(seed=seeds[0], preset=args.preset,
                                overrides=(*overrides_for(args.preset), *args.overrides), sim_d_model=args.sim_d_model)
    cfg.experiment_config()                         # a bad preset or override: one line, exit 2, before any work
    work = args.work if args.work is not None else args.out
    if args.seeds is None:
        res = compare(cfg, work_dir=work / f"train-seed{cfg.seed}")
        write_outputs(res, args.out)
        print(format_summary(res))
        return 0
    agg = run_seeds(cfg, seeds, args.out, work)
    print(format_aggregate(agg))
    return 0
