"""SliCK: is a fact Known to a model before fine-tuning? (Gekhman et al. 2024; science.md §1)

Each example is asked under ``n_exemplar_sets`` different k-shot prompts (k exemplars of its own
relation, drawn from a demonstration pool), once greedily and ``n_samples`` times sampled at
``temperature`` (``fmt.generate_with_samples``: in the text format ``generate`` on every prompt
repeated ``n_samples`` times; with kgsim tokens, whose answer is one token, the greedy token and the
samples come from one forward pass's logits). With P_greedy the share of prompts whose greedy
answer is correct and P_sampled the share of correct samples, the category is kgsim's one SliCK
rule (:func:`kgsim.core.known.categories`: HighlyKnown, MaybeKnown, WeaklyKnown, Unknown). Coarse
Known is ``P_correct > 0``: any category but Unknown.

Exemplar sets are drawn per relation from ``kgsim.core.rng.stream(seed, "slick-exemplars/<relation>")``
(an example never serves as its own exemplar); sampling uses a seeded ``torch.Generator``
(:func:`llm_bridge.generation.generate`), never global seeding. Results are cached in a JSON file
under a key hashing (model key, data, config, seed; :func:`kgsim.core.provenance.content_hash`),
chunk by chunk, so an interrupted run resumes.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kgsim.core.config import ConfigError
from kgsim.core.known import category_counts as _counts
from kgsim.core.names import UNKNOWN
from kgsim.core.provenance import content_hash
from kgsim.core.rng import stream
from kgsim.study.lm import slick

from .datasets import QAExample, by_relation
from .lm import HFLM
from .matching import MATCH_MODES
from .prompts import TEXT

CACHE_VERSION = 1


@dataclass(frozen=True)
class SliCKConfig:
    """How the base model is probed (defaults: SliCK's 4-shot, 10 sets, greedy + 16 samples at T=0.5)."""

    n_shots: int = 4
    n_exemplar_sets: int = 10
    n_samples: int = 16                 # sampled answers per exemplar set
    temperature: float = 0.5
    max_new_tokens: int = 16
    batch_size: int = 32
    chunk_size: int = 256               # examples per cached chunk
    match: str = "em"                   # em | contains (see llm_bridge.matching)

    def validate(self, p: str = "probe") -> None:
        for key in ("n_exemplar_sets", "max_new_tokens", "batch_size", "chunk_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{p}.{key} = {getattr(self, key)!r}: must be >= 1")
        for key in ("n_shots", "n_samples"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{p}.{key} = {getattr(self, key)!r}: must be >= 0")
        if not self.temperature > 0:
            raise ConfigError(f"{p}.temperature = {self.temperature!r}: must be > 0")
        if self.match not in MATCH_MODES:
            raise ConfigError(f"{p}.match = {self.match!r}: choose one of {list(MATCH_MODES)}")


@dataclass(frozen=True)
class SliCKResult:
    id: str
    p_greedy: float
    p_sampled: float
    category: str
    greedy: tuple[str, ...] = ()        # the greedy answer under each exemplar set

    @property
    def known(self) -> bool:
        """Coarse Known: P_correct > 0."""
        return self.category != UNKNOWN


def exemplar_sets(pool: Mapping[str, Sequence[QAExample]], relations: Sequence[str], cfg: SliCKConfig,
                  seed: int) -> dict[str, list[list[QAExample]]]:
    """``{relation: n_exemplar_sets lists of n_shots + 1 pool examples}`` (one spare, used when an
    example would be its own exemplar).

    Raises:
        ValueError: a relation's pool holds fewer than ``n_shots + 1`` examples.
    """
    need = cfg.n_shots + 1 if cfg.n_shots else 0
    out = {}
    for rel in sorted(set(relations)):
        cands = list(pool.get(rel, ()))
        if len(cands) < need:
            raise ValueError(f"relation {rel!r}: {len(cands)} demonstrations; {cfg.n_shots}-shot probing needs {need}")
        rng = stream(seed, f"slick-exemplars/{rel}")
        out[rel] = [[cands[i] for i in rng.choice(len(cands), need, replace=False)] for _ in range(cfg.n_exemplar_sets)]
    return out


def _shots(ex: QAExample, exemplars: list[QAExample], k: int) -> list[QAExample]:
    return [e for e in exemplars if e.id != ex.id][:k]


def data_key(examples: Sequence[QAExample], pool: Mapping[str, Sequence[QAExample]]) -> str:
    """Hash of the examples and the demonstration pool (ids, questions, answers)."""
    return content_hash([[[e.id, e.question, e.answers, e.choices] for e in examples],
                         [[rel, e.id, e.question, e.answer] for rel in sorted(pool) for e in pool[rel]]])


def _load_cache(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {"version": CACHE_VERSION, "entries": {}}
    data = json.loads(path.read_text())
    return data if data.get("version") == CACHE_VERSION else {"version": CACHE_VERSION, "entries": {}}


def _save_cache(path: Path | None, data: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _probe_chunk(model, tokenizer, chunk: Sequence[QAExample], sets: dict, cfg: SliCKConfig, seed: int,
                 name: str, progress: bool, fmt=TEXT) -> list[SliCKResult]:
    """SliCK on one chunk: its prompts under every exemplar set, through kgsim's one SliCK stage
    (:func:`kgsim.study.lm.slick`) on the model as an :class:`~llm_bridge.lm.HFLM`."""
    S = cfg.n_exemplar_sets
    prompt_sets = [fmt.few_shot(chunk, [_shots(e, sets[e.relation][j], cfg.n_shots) for e in chunk]) for j in range(S)]
    lm = HFLM(model, tokenizer, fmt, match=cfg.match, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
              progress=progress, desc=f"SliCK {name}")
    rates = slick(lm, prompt_sets, chunk, n_samples=cfg.n_samples, temperature=cfg.temperature, seed=seed,
                  stream=f"slick-sample/{name}")
    cat = rates.category
    return [SliCKResult(e.id, float(rates.p_greedy[i]), float(rates.p_sample[i]), str(cat[i]),
                        tuple(g[i] for g in rates.greedy)) for i, e in enumerate(chunk)]


def _cache_key(examples, pool, cfg: SliCKConfig, seed: int, model_key: str, fmt=TEXT) -> str:
    blob = {"model": model_key, "data": data_key(examples, pool), "seed": seed, "config": dataclasses.asdict(cfg)}
    if fmt is not TEXT:                                   # (text keys stay as they were)
        blob["format"] = fmt.name
    return content_hash(blob)


def _chunk_names(n: int, cfg: SliCKConfig) -> list[str]:
    return [str(c // cfg.chunk_size) for c in range(0, n, cfg.chunk_size)]


def _collect(entry: dict, names: list[str]) -> dict[str, SliCKResult]:
    results = [SliCKResult(**{**d, "greedy": tuple(d["greedy"])}) for n in names for d in entry["chunks"][n]]
    return {r.id: r for r in results}


def _grouped(pool) -> Mapping[str, Sequence[QAExample]]:
    return pool if isinstance(pool, Mapping) else by_relation(pool)


def cached_categories(examples: Sequence[QAExample], pool, cfg: SliCKConfig = SliCKConfig(), *, seed: int = 0,
                      model_key: str = "", cache_path: str | Path | None = None,
                      fmt=TEXT) -> dict[str, SliCKResult] | None:
    """The results :func:`categorise` would return, if all of them are in the cache; else None
    (no model needed: lets a caller skip loading the model)."""
    pool = _grouped(pool)
    entry = _load_cache(Path(cache_path) if cache_path else None)["entries"].get(
        _cache_key(examples, pool, cfg, seed, model_key, fmt))
    names = _chunk_names(len(examples), cfg)
    if entry is None or any(n not in entry["chunks"] for n in names):
        return None
    return _collect(entry, names)


def categorise(model, tokenizer, examples: Sequence[QAExample], pool: Mapping[str, Sequence[QAExample]] | Sequence[QAExample],
               cfg: SliCKConfig = SliCKConfig(), *, seed: int = 0, model_key: str = "",
               cache_path: str | Path | None = None, progress: bool = False, fmt=TEXT,
               group=None) -> dict[str, SliCKResult]:
    """SliCK results of every example, by example id.

    Args:
        pool: demonstrations by relation (or a flat list, grouped here); every example's relation
            needs at least ``n_shots + 1`` of them.
        model_key: identifies the model in the cache key (e.g. :func:`llm_bridge.models.model_fingerprint`).
        cache_path: a JSON file; chunks already there under the same key are reused, new ones added
            (and saved chunk by chunk, so an interrupted run resumes).
        fmt: the prompt format (:mod:`llm_bridge.prompts`; default the text Q/A format).
        group: the processes sharing the work (``rank``, ``world_size``, ``is_main``, ``gather(obj)
            -> [obj of every rank]``; None: this process alone). Chunks missing from the cache are
            dealt round-robin, one round of ``world_size`` chunks at a time, gathered after each
            round on every rank, and saved by the main process. Each chunk samples from its own
            stream (``slick-sample/<chunk>``), so the results equal one process's.

    Raises:
        ValueError: a relation lacks demonstrations; duplicate example ids.
    """
    cfg.validate()
    if len({e.id for e in examples}) != len(examples):
        raise ValueError("example ids must be unique")
    pool = _grouped(pool)
    sets = exemplar_sets(pool, [e.relation for e in examples], cfg, seed)
    key = _cache_key(examples, pool, cfg, seed, model_key, fmt)
    path = Path(cache_path) if cache_path else None
    cache = _load_cache(path)
    entry = cache["entries"].setdefault(key, {"model": model_key, "config": dataclasses.asdict(cfg), "chunks": {}})
    names = _chunk_names(len(examples), cfg)
    todo = [(k, name) for k, name in enumerate(names) if name not in entry["chunks"]]
    rank, world = (group.rank, group.world_size) if group is not None else (0, 1)
    for r in range(0, len(todo), world):
        done = []
        if r + rank < len(todo):
            k, name = todo[r + rank]
            chunk = examples[k * cfg.chunk_size:(k + 1) * cfg.chunk_size]
            res = _probe_chunk(model, tokenizer, chunk, sets, cfg, seed, name, progress, fmt)
            done = [(name, [dataclasses.asdict(x) for x in res])]
        for part in (group.gather(done) if group is not None else [done]):
            entry["chunks"].update(part)
        if group is None or group.is_main:
            _save_cache(path, cache)
    return _collect(entry, names)


def category_counts(results: Mapping[str, SliCKResult]) -> dict[str, int]:
    """How many examples fall in each category (every category listed;
    :func:`kgsim.core.known.category_counts`)."""
    return _counts(r.category for r in results.values())
