"""The ``kgsim`` command line: parses argv, calls the library, turns user errors into one line.

Every command takes ``--preset NAME``, ``--config FILE`` and repeated ``--set section.key=value``.
A bad config, argument or input file prints ``kgsim: error: ...`` naming the key and value and
exits with status 2, before any output is written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from .config import ConfigError, ExperimentConfig, load_config, preset_names, to_toml


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


# --------------------------------------------------------------------------------------------
# kgsim config show
# --------------------------------------------------------------------------------------------

def _config_args(p):
    p.add_argument("action", choices=["show"])
    add_config_args(p)


@command("config", "show the fully resolved configuration as TOML", _config_args)
def _config(args) -> int:
    sys.stdout.write(to_toml(resolve_config(args)))
    return 0


# --------------------------------------------------------------------------------------------
# kgsim graph
# --------------------------------------------------------------------------------------------

def _graph_args(p):
    add_config_args(p)
    p.add_argument("--out", type=Path, help="output directory (default runs/<preset>/world)")


@command("graph", "generate the knowledge graph, splits and pretraining corpus, with a summary", _graph_args)
def _graph(args) -> int:
    from tqdm import tqdm

    from .world import build_world, save_world, world_is_current

    cfg = resolve_config(args)
    out = args.out or Path("runs") / (args.preset or "custom") / "world"
    if world_is_current(out, cfg):
        print(f"{out}: up to date (config hash matches); nothing to do")
        return 0
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out = {str(out)!r}: the directory holds other files (another config's world?); "
                        "choose another --out or remove it")
    bar = tqdm(total=4, desc="world", unit="stage", disable=None)

    def step(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update(1) if name != "graph" else None

    world = build_world(cfg, progress=step)
    save_world(world, cfg, out, progress=step)
    bar.update(bar.total - bar.n)
    bar.close()
    sm = world.kg.summary()
    print(f"{sm['n_facts']} facts over {sm['n_entities']} entities and {sm['n_relations']} relations "
          f"({sm['never_exposed']} never shown); corpus of {len(world.corpus.stream)} tokens in "
          f"{world.corpus.n_docs} documents")
    print(f"wrote {out}/ (graph.npz, splits.npz, corpus.npz, facts.tsv, summary.json, summary.png, config.toml)")
    return 0


# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kgsim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_, add_args, _) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_, description=help_))
    return parser


def _load_plugins() -> None:
    """Import the modules that register further commands (kept out of import-time of this file)."""
    import importlib

    for mod in ("kgsim.cli_experiment", "llm_bridge.cli"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def main(argv: list[str] | None = None) -> int:
    _load_plugins()
    parser = build_parser()
    args = parser.parse_args(argv)
    from .graph import GraphFileError

    try:
        return COMMANDS[args.command][2](args)
    except (ConfigError, GraphFileError, UserError) as e:
        print(f"kgsim: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kgsim: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover - `python -m kgsim.cli`: use the one registry of kgsim.cli
    from kgsim.cli import main as _main

    sys.exit(_main())
