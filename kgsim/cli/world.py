"""`kgsim config show` and `kgsim graph`: the configuration and the world alone."""
from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from kgsim.cli.base import UserError, add_config_args, command, resolve_config
from kgsim.core.config import to_toml
from kgsim.world.build import build_world, save_world, world_is_current

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

