"""What every ``kgsim`` command shares: the command registry, the config arguments, ``UserError``.

Every command takes ``--preset NAME``, ``--config FILE`` and repeated ``--set section.key=value``.
A bad config, argument or input file prints ``kgsim: error: ...`` naming the key and value and
exits with status 2, before any output is written.
"""
from __future__ import annotations

import argparse
from typing import Callable

from kgsim.core.config import ExperimentConfig, load_config, preset_names


class UserError(Exception):
    """A problem with what the user asked for (exit status 2, one line, no traceback)."""


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None]):
    """Register the decorated function as subcommand `name`; `add_args` declares its arguments."""
    def deco(run):
        COMMANDS[name] = (help, add_args, run)
        return run
    return deco


def add_config_args(p: argparse.ArgumentParser, default_preset: str = "default") -> None:
    p.add_argument("--preset", default=default_preset, help=f"named preset (one of {', '.join(preset_names())})")
    p.add_argument("--config", metavar="FILE", help="a TOML file of overrides, applied after the preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key, e.g. --set pretrain.lr=1e-3 (repeatable)")


def resolve_config(args: argparse.Namespace) -> ExperimentConfig:
    return load_config(args.preset, args.config, args.overrides)
