"""The synthetic world of one config: graph, QA subjects, splits and pretraining corpus.

A world is a pure function of ``(seed, graph, corpus, splits)`` config sections; it is saved in a
directory with the hash of those sections and reused whenever the hash matches.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from kgsim.core import rng as rngs
from kgsim.core.config import ExperimentConfig, to_toml
from kgsim.core.io import InputFileError, atomic_dir, read_json, write_json
from kgsim.core.kg import KnowledgeGraph
from kgsim.core.names import OW_TYPED
from kgsim.world.corpus import Corpus, build_corpus
from kgsim.world.graph import generate
from kgsim.world.loaded import input_fingerprint
from kgsim.world.plots import plot_graph_summary
from kgsim.world.splits import Splits, assign_qa_subjects, make_splits

WORLD_SECTIONS = ("graph", "corpus", "splits")


@dataclass(eq=False)
class World:
    kg: KnowledgeGraph
    splits: Splits
    corpus: Corpus
    config_hash: str

    @property
    def qa_subjects(self) -> np.ndarray:
        return self.splits.qa_subjects


def world_hash(cfg: ExperimentConfig) -> str:
    """The world's cache key: its config sections and, for a graph read from files, their contents."""
    h = cfg.section_hash(*WORLD_SECTIONS)
    data = input_fingerprint(cfg.graph)
    return hashlib.sha256(f"{h}:{data}".encode()).hexdigest()[:16] if data else h


def build_world(cfg: ExperimentConfig, progress=None) -> World:
    """Generate graph, splits and corpus from `cfg` (each from its own named random stream)."""
    step = progress or (lambda name: None)
    step("graph")
    kg = generate(cfg.graph, rngs.stream(cfg.seed, "graph"))
    step("splits")
    qa = assign_qa_subjects(kg.n_entities, cfg.corpus.qa_subject_share, rngs.stream(cfg.seed, "qa-subjects"))
    # The world's own splits use the typed Open-World rule: splits.open_world is the study's draw
    # (kgsim.study.stages.ft_splits) and in no world's hash.
    splits = make_splits(kg, qa, replace(cfg.splits, open_world=OW_TYPED), rngs.stream(cfg.seed, "splits"))
    step("corpus")
    h = world_hash(cfg)
    corpus = build_corpus(kg, qa, cfg.corpus, rngs.stream(cfg.seed, "corpus"), config_hash=h)
    return World(kg, splits, corpus, h)


def save_world(world: World, cfg: ExperimentConfig, out: Path, with_exports: bool = True, progress=None) -> None:
    """Write the world into directory `out` atomically (all files appear at once or none)."""
    step = progress or (lambda name: None)
    with atomic_dir(out) as tmp:
        world.kg.save(tmp / "graph.npz")
        world.splits.save(tmp / "splits.npz")
        world.corpus.save(tmp / "corpus.npz")
        (tmp / "config.toml").write_text(to_toml(cfg))
        summary = {"config_hash": world.config_hash, "graph": world.kg.summary(), "splits": world.splits.summary(),
                   "corpus": {"n_tokens": int(len(world.corpus.stream)), "n_docs": world.corpus.n_docs,
                              "vocab_size": world.corpus.vocab.size}}
        write_json(tmp / "summary.json", summary)
        if with_exports:
            step("exports")
            world.kg.to_tsv(tmp / "facts.tsv")
            plot_graph_summary(world.kg, tmp / "summary.png")


def load_world(path: Path) -> World:
    path = Path(path)
    h = json.loads((path / "summary.json").read_text())["config_hash"]
    return World(KnowledgeGraph.load(path / "graph.npz"), Splits.load(path / "splits.npz"),
                 Corpus.load(path / "corpus.npz"), h)


def world_is_current(path: Path, cfg: ExperimentConfig) -> bool:
    """`path` holds the world of `cfg` (False for an unreadable or foreign summary.json)."""
    try:
        summary = read_json(Path(path) / "summary.json", "a kgsim world's summary.json")
    except InputFileError:
        return False
    return summary.get("config_hash") == world_hash(cfg)
