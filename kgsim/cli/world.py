"""`kgsim config show` and `kgsim graph`: the configuration and the world alone."""
from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from kgsim.cli.base import UserError, add_config_args, command, output_dirs, resolve_config
from kgsim.core.config import to_toml
from kgsim.core.io import copy_tree
from kgsim.study.stages import world_stage
from kgsim.world.build import world_hash, world_is_current

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
    p.add_argument("--out", type=Path, help="output directory (default runs/<preset>-world)")
    p.add_argument("--cache", help="artefact cache shared by every command (default: OUT/../.kgsim-cache)")


WORLD_FILES = ("graph.npz", "splits.npz", "corpus.npz", "facts.tsv", "summary.json", "summary.png", "config.toml")


@command("graph", "generate the knowledge graph, splits and pretraining corpus, with a summary", _graph_args)
def _graph(args) -> int:
    cfg = resolve_config(args)
    out, cache = output_dirs(args, cfg, "world")
    if world_is_current(out, cfg):
        print(f"{out}: up to date (config hash matches); nothing to do")
        return 0
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out = {str(out)!r}: the directory holds other files (another config's world?); "
                        "choose another --out or remove it")
    bar = tqdm(total=1, desc="world", unit="stage", disable=None)
    world = world_stage(cfg, cache)                     # built once, in the cache every command shares
    copy_tree(cache / f"world-{world_hash(cfg)}", out)
    bar.update(1)
    bar.close()
    sm = world.kg.summary()
    print(f"{sm['n_facts']} facts over {sm['n_entities']} entities and {sm['n_relations']} relations "
          f"({sm['never_exposed']} never shown, {sm['multi_answer_queries']} queries with several answers); "
          f"corpus of {len(world.corpus.stream)} tokens in {world.corpus.n_docs} documents")
    sp = world.splits.summary()
    print(f"splits: fine-tuning relations {sp['ft_relations']}, FT-Known/FT-Unknown {sp['ft_known']}/"
          f"{sp['ft_unknown']}, dev {sp['dev']}, test {sp['test']}")
    print(f"wrote {out}/ ({', '.join(WORLD_FILES)})")
    return 0


# --------------------------------------------------------------------------------------------

