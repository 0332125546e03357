"""`kgsim one-layer`: the Ghosal-style one-layer simulation held against kgsim's trained one-layer
attention-only model on the same world's facts (:mod:`kgsim.study.one_layer`)."""
from __future__ import annotations

from pathlib import Path

import torch

from kgsim.cli.base import command
from kgsim.study.one_layer import DEFAULT_OVERRIDES, TrainedOneLayerConfig, compare, format_summary, write_outputs


def _one_layer_args(p) -> None:
    p.add_argument("--out", type=Path, required=True, help="output directory (JSON, figures, training checkpoints)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="smoke")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra kgsim config overrides, after the one-layer defaults")
    p.add_argument("--sim-d-model", type=int, default=TrainedOneLayerConfig.sim_d_model)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")


@command("one-layer", "the one-layer theory against a trained one-layer attention-only model", _one_layer_args)
def _one_layer(args) -> int:
    torch.set_num_threads(args.threads)
    cfg = TrainedOneLayerConfig(seed=args.seed, preset=args.preset, overrides=(*DEFAULT_OVERRIDES, *args.overrides),
                                sim_d_model=args.sim_d_model)
    res = compare(cfg, work_dir=args.out / f"train-seed{args.seed}")
    write_outputs(res, args.out)
    print(format_summary(res))
    return 0
