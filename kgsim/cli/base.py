"""What every ``kgsim`` command shares: the command registry, the config arguments, ``UserError``,
the default output folders and the one cache every command uses.

Every command takes ``--preset NAME``, ``--config FILE`` and repeated ``--set section.key=value``.
A bad config, argument, input file or output path prints ``kgsim: error: ...`` naming the key, file
or folder and exits with status 2, before any output is written.

Default folders (under ``runs/``, never shared by two commands or two configs)::

    runs/LABEL-world      kgsim graph
    runs/LABEL-pretrain   kgsim pretrain
    runs/LABEL            kgsim run
    runs/.kgsim-cache     worlds and base models, keyed by config hash, shared by all three

LABEL is the preset's name, followed by ``-`` and 8 hex digits of the config hash when ``--config``
or ``--set`` change what the command makes. Every command's cache is ``OUT/../.kgsim-cache`` (or
``--cache``), so commands whose outputs sit side by side (the defaults, or ``--out A/x``,
``--out A/y``) share one cache: ``kgsim graph``, then ``kgsim pretrain``, then ``kgsim run`` build
the world once and pretrain once.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
from pathlib import Path
from typing import Callable

from kgsim.core.config import ExperimentConfig, load_config, preset_names, replace
from kgsim.core.io import InputFileError, OutputPathError, check_out_dir
from kgsim.study.runner import protocol_dict
from kgsim.study.stages import base_hash, world_stage
from kgsim.world.build import world_hash

RUNS = Path("runs")
CACHE_NAME = ".kgsim-cache"


class UserError(Exception):
    """A problem with what the user asked for (exit status 2, one line, no traceback)."""


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None]):
    """Register the decorated function as subcommand `name`; `add_args` declares its arguments.
    A bad input file or output path it meets (:class:`~kgsim.core.io.InputFileError`,
    :class:`~kgsim.core.io.OutputPathError`) becomes a :class:`UserError`."""
    def deco(run):
        @functools.wraps(run)
        def guarded(args):
            try:
                return run(args)
            except (InputFileError, OutputPathError) as e:
                raise UserError(str(e)) from None
        COMMANDS[name] = (help, add_args, guarded)
        return run
    return deco


def add_config_args(p: argparse.ArgumentParser, default_preset: str = "default") -> None:
    p.add_argument("--preset", default=default_preset, help=f"named preset (one of {', '.join(preset_names())})")
    p.add_argument("--config", metavar="FILE", help="a TOML file of overrides, applied after the preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key, e.g. --set pretrain.lr=1e-3 (repeatable)")


def resolve_config(args: argparse.Namespace) -> ExperimentConfig:
    return load_config(args.preset, args.config, args.overrides)


# --------------------------------------------------------------------------------------------
# Output folders and the cache
# --------------------------------------------------------------------------------------------

def _what_it_makes(cfg: ExperimentConfig, kind: str) -> str:
    """The hash of what command `kind` makes from `cfg` (its output folder's identity)."""
    if kind == "world":
        return world_hash(cfg)
    if kind == "pretrain":
        return base_hash(cfg)
    return hashlib.sha256(json.dumps(protocol_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]


def default_out(args: argparse.Namespace, cfg: ExperimentConfig, kind: str) -> Path:
    """``runs/LABEL`` (kind ``run``) or ``runs/LABEL-KIND`` (``world``, ``pretrain``); see the module
    docstring for LABEL."""
    preset = args.preset or "custom"
    label = preset
    if args.config or args.overrides:
        plain = load_config(preset) if preset in preset_names() else ExperimentConfig()
        if _what_it_makes(cfg, kind) != _what_it_makes(plain, kind):
            label = f"{preset}-{_what_it_makes(cfg, kind)[:8]}"
    return RUNS / (label if kind == "run" else f"{label}-{kind}")


def output_dirs(args: argparse.Namespace, cfg: ExperimentConfig, kind: str) -> tuple[Path, Path]:
    """(output folder, cache folder) of a command, both checked (a file in the way, not writable:
    :class:`UserError`). The cache is ``--cache`` or ``OUT/../.kgsim-cache``."""
    out = Path(args.out) if getattr(args, "out", None) else default_out(args, cfg, kind)
    cache = Path(args.cache) if getattr(args, "cache", None) else out.parent / CACHE_NAME
    try:
        check_out_dir(out, "--out")
        check_out_dir(cache, "--cache")
    except OutputPathError as e:
        raise UserError(str(e)) from None
    refuse_foreign(out, kind)
    return out, cache


MARKERS = {"world": ("graph.npz", "corpus.npz", "splits.npz"), "pretrain": ("base.safetensors", "hf"),
           "run": ("results.json", "report.md", "seed-*")}
NAMES = {"world": "kgsim graph", "pretrain": "kgsim pretrain", "run": "kgsim run"}


def refuse_foreign(out: Path, kind: str) -> None:
    """Refuse an output folder holding what another command (`kind` = world, pretrain, run) writes."""
    if not out.is_dir():
        return
    for other, patterns in MARKERS.items():
        found = [p.name for pat in patterns for p in out.glob(pat)] if other != kind else []
        if found:
            raise UserError(f"--out = {str(out)!r} holds other files: a {NAMES[other]} folder's ({found[0]}); "
                            "choose another --out")


def check_worlds(cfg: ExperimentConfig, cache: Path) -> None:
    """Build (or find in the cache) the world of every seed of ``run.seeds`` before a run folder is
    written: a bad graph file or a graph too small for the splits stops the command here, with one
    line, instead of inside a seed's worker process."""
    for seed in cfg.run.seeds:
        world_stage(replace(cfg, seed=seed), cache)
