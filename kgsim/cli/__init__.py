"""The ``kgsim`` command line: parses argv, calls the library, turns user errors into one line.

Every command takes ``--preset NAME``, ``--config FILE`` and repeated ``--set section.key=value``.
A bad config, argument or input file prints ``kgsim: error: ...`` naming the key and value and
exits with status 2, before any output is written. Each module here registers its commands with
:func:`kgsim.cli.base.command`; importing this package imports all of them.
"""
from __future__ import annotations

import argparse
import sys

from kgsim.cli import bridge, experiment, one_layer, sweep, world  # noqa: F401  (each registers its commands)
from kgsim.cli.base import COMMANDS, UserError
from kgsim.core.config import ConfigError
from kgsim.core.version import __version__
from kgsim.nn.precision import bf16_matmul
from kgsim.world.graph import GraphFileError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kgsim", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"kgsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_, add_args, _) in COMMANDS.items():
        add_args(sub.add_parser(name, help=_literal(help_), description=help_))
    return parser


def _literal(text: str) -> str:
    """`text` as an argparse help string, which argparse %-formats: "95% interval" must not read as a
    conversion (``kgsim --help`` raised TypeError on it)."""
    return text.replace("%", "%%")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        bf16_matmul()                  # a bad KGSIM_BF16_MATMUL is a one-line error before any work
        return COMMANDS[args.command][2](args)
    except (ConfigError, GraphFileError, UserError) as e:
        print(f"kgsim: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kgsim: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
