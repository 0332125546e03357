"""The reference protocol (science.md §3) as cached, resumable stages.

Per seed: world (graph, splits, corpus) -> base model (pretraining; then, with ``instruct.enabled``,
broad QA tuning: :func:`instruct_stage`) -> probe (memorisation curve,
extraction, SliCK) -> Known/Unknown fine-tuning sets -> FT-Known and FT-Unknown fine-tuning
(Early Stop and Convergence checkpoints) -> measurement of every edge set (:mod:`kgsim.study.measure`).

Artefacts that do not depend on the fine-tuning protocol (worlds, base models) live in a cache
directory keyed by the hash of the config sections that made them, so `kgsim pretrain` and any
`kgsim run` with the same world and model reuse them. Everything else lives in the run directory.
Every stage writes its output atomically or resumes from its own checkpoints, so a killed run,
rerun with the same command, continues where it stopped and ends with the same numbers.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from kgsim.core import rng as rngs
from kgsim.core.config import ConfigError, ExperimentConfig
from kgsim.core.io import write_json, write_npz
from kgsim.core.known import categories, category_counts, known_rule, rule_agreement
from kgsim.core.names import (
    EXPOSURE_FILTER,
    FT_KNOWN,
    FT_MIXED,
    FT_UNKNOWN,
    OW_TYPED,
    SLICK_FILTER,
    UNFILTERED,
    UNKNOWN,
    filtered_split,
)
from kgsim.nn.model import GPT, build_model, export_hf, load_model
from kgsim.nn.probe import KgsimLM, exemplar_batches
from kgsim.nn.train import TokenRows, TrainResult, train
from kgsim.study.lm import FitResult, accuracy, correct, slick
from kgsim.study.memorisation import EXPOSURE_BUCKETS, exposure_label, memorisation_table
from kgsim.world.build import World, build_world, load_world, save_world, world_hash, world_is_current
from kgsim.world.corpus import PAD
from kgsim.world.loaded import input_fingerprint
from kgsim.world.prompts import statement, zero_shot
from kgsim.world.splits import Splits, filtered_tests, instruct_pool, make_splits, probe_candidates

Progress = Callable[[str, int, int], None]          # (stage, done, total)


def _quiet(stage: str, done: int, total: int) -> None:
    pass


@dataclass
class Base:
    model: GPT
    dir: Path
    result: TrainResult


# --------------------------------------------------------------------------------------------
# World and base model (cached across runs)
# --------------------------------------------------------------------------------------------

def world_stage(cfg: ExperimentConfig, cache: Path, progress: Progress = _quiet) -> World:
    d = cache / f"world-{world_hash(cfg)}"
    if world_is_current(d, cfg):
        return load_world(d)
    progress("world", 0, 1)
    world = build_world(cfg)
    save_world(world, cfg, d)
    progress("world", 1, 1)
    return world


def base_hash(cfg: ExperimentConfig) -> str:
    """The base model's cache key: the sections that shape it, and the world's input files."""
    h = cfg.section_hash("graph", "corpus", "splits", "model", "pretrain")
    data = input_fingerprint(cfg.graph)
    return hashlib.sha256(f"{h}:{data}".encode()).hexdigest()[:16] if data else h


def pretrain_stage(cfg: ExperimentConfig, world: World, cache: Path, progress: Progress = _quiet,
                   bar: bool = False) -> Base:
    """Pretrain (or load) the base model; export it in Hugging Face format."""
    d = cache / f"base-{base_hash(cfg)}"
    vocab = world.corpus.vocab
    model = build_model(cfg.model, vocab.size, seed=cfg.seed)
    rows = world.corpus.rows(cfg.model.n_ctx + 1)
    kg, splits = world.kg, world.splits
    probe_rng = rngs.stream(cfg.seed, "pretrain/eval-sample")
    exposed = np.flatnonzero(kg.exposure > 0)
    sample = np.sort(probe_rng.choice(exposed, min(512, len(exposed)), replace=False))
    st = statement(vocab, kg.s[sample], kg.r[sample])
    qa_ids = splits.test["id"]
    qa = zero_shot(vocab, kg.s[qa_ids], kg.r[qa_ids])

    def evaluate(m, step):
        progress("pretrain", step, cfg.pretrain.steps)
        lm = KgsimLM(m, kg, vocab)
        return {"statement_acc": accuracy(lm, st, sample), "qa_extraction_id": accuracy(lm, qa, qa_ids)}

    result = train(model, rows, cfg.pretrain, d / "train", seed=cfg.seed, name="pretrain", evaluate=evaluate,
                   progress=bar)
    if not (d / "hf" / "config.json").is_file():
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        export_hf(model, vocab.tokens, d / "hf", pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    progress("pretrain", cfg.pretrain.steps, cfg.pretrain.steps)
    return Base(model, d, result)


def instruct_facts(cfg: ExperimentConfig, world: World) -> np.ndarray:
    """The instruct stage's facts: up to ``instruct.facts`` facts (a seeded draw, sorted) of the QA
    subjects, of relations outside the fine-tuning relations. Every fine-tuning, dev and test fact
    has a non-QA subject (kgsim.world.splits), so none is among them, under either Known rule."""
    kg = world.kg
    pool = np.flatnonzero(instruct_pool(kg, world.splits))
    if not len(pool):
        raise ConfigError(f"instruct.enabled = true: the world has no QA-subject facts outside the fine-tuning "
                          f"relations (splits.ft_relations = {cfg.splits.ft_relations} of graph.n_relations = "
                          f"{kg.n_relations}; corpus.qa_subject_share = {cfg.corpus.qa_subject_share})")
    rng = rngs.stream(cfg.seed, "instruct/facts")
    return np.sort(rng.choice(pool, min(cfg.instruct.facts, len(pool)), replace=False))


def instruct_stage(cfg: ExperimentConfig, world: World, base: Base, progress: Progress = _quiet,
                   bar: bool = False) -> Base:
    """`base` itself unless ``instruct.enabled``; else the base model tuned on :func:`instruct_facts`,
    each asked in a question form drawn uniformly from ``corpus.qa_templates`` (stream
    ``instruct/templates``), loss on the answer, from the base's Convergence weights; cached in the
    base model's folder (``base-H/instruct-I/train``), where the probe of the tuned model is cached
    too. Evaluated on a sample of its own facts (form 0) and on the ID test facts (zero-shot)."""
    ic = cfg.instruct
    if not ic.enabled:
        return base
    d = base.dir / f"instruct-{cfg.section_hash('instruct')}"          # base.dir is keyed by the world already
    kg, vocab = world.kg, world.corpus.vocab
    facts = instruct_facts(cfg, world)
    templates = rngs.stream(cfg.seed, "instruct/templates").integers(0, cfg.corpus.qa_templates, len(facts))
    sample = np.sort(rngs.stream(cfg.seed, "instruct/eval-sample").choice(facts, min(512, len(facts)), replace=False))
    batches = {"instruct_acc": (zero_shot(vocab, kg.s[sample], kg.r[sample]), sample),
               "qa_extraction_id": (zero_shot(vocab, kg.s[world.splits.test["id"]], kg.r[world.splits.test["id"]]),
                                    world.splits.test["id"])}

    def evaluate(m, step):
        progress("instruct", step, ic.steps)
        lm = KgsimLM(m, kg, vocab)
        return {k: accuracy(lm, b, f) for k, (b, f) in batches.items()}

    model = load_model(base.dir / "train" / "con.safetensors")
    result = train(model, qa_rows(world, facts, templates), ic.train, d / "train", seed=cfg.seed, name="instruct",
                   evaluate=evaluate, progress=bar)
    write_json(d / "instruct.json", {"facts": int(len(facts)), "templates": int(cfg.corpus.qa_templates),
                                     "relations": int(len(np.unique(kg.r[facts]))), "steps": ic.steps})
    progress("instruct", ic.steps, ic.steps)
    return Base(model, d, result)


def base_stage(cfg: ExperimentConfig, world: World, cache: Path, progress: Progress = _quiet) -> tuple[Base, Base]:
    """(pretrained base, the model the study probes and fine-tunes): the same model unless
    ``instruct.enabled`` (:func:`instruct_stage`)."""
    pre = pretrain_stage(cfg, world, cache, progress)
    return pre, instruct_stage(cfg, world, pre, progress)


# --------------------------------------------------------------------------------------------
# Probing the base model: memorisation, extraction, SliCK
# --------------------------------------------------------------------------------------------

def memorisation(model, world: World) -> dict:
    """Statement-form accuracy of every fact, by exposure bucket (the memorisation curve), and
    zero-shot QA accuracy on statement-only subjects (extraction)."""
    kg, vocab = world.kg, world.corpus.vocab
    lm, facts = KgsimLM(model, kg, vocab), np.arange(kg.n_facts)
    ok_st = correct(lm, statement(vocab, kg.s, kg.r), facts)           # any true answer
    ok_qa = correct(lm, zero_shot(vocab, kg.s, kg.r), facts)
    plain = ~world.qa_subjects[kg.s]
    t = memorisation_table(kg.exposure, ok_st, ok_qa, plain)          # the rule the bridge also uses
    return {"buckets": t["buckets"],
            "statement_acc_exposed": t["statement_acc_exposed"],
            "statement_acc_never_shown": t["statement_acc_never_shown"],
            "chance": 1.0 / max(np.bincount(kg.entity_types).max(), 1),
            "extraction_rate": t["extraction_rate"],
            "extraction_rate_definition": "zero-shot QA accuracy on facts of statement-only subjects that "
                                          "the base model answers in statement form",
            "qa_acc_statement_only_known": _mean(ok_qa[plain & (kg.exposure >= 5)]),
            "n_statement_only_facts_known": int((ok_st & plain).sum())}


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def probe_stage(cfg: ExperimentConfig, world: World, base: Base, progress: Progress = _quiet) -> dict:
    """Memorisation curve, extraction rate and SliCK categories of the base model (cached beside it)."""
    out = base.dir / f"probe-{cfg.section_hash('probe')}"
    f = out / "probe.npz"
    if f.is_file() and (out / "probe.json").is_file():   # probe.npz is written last
        z = np.load(f)
        return json.loads((out / "probe.json").read_text()) | {k: z[k] for k in z.files}
    progress("probe", 0, 1)
    kg = world.kg
    mem = memorisation(base.model, world)
    # SliCK on every fact of a statement-only subject (the candidates for FT, dev and test sets)
    cand = probe_candidates(kg, world.splits)          # one fact per query, relations with demonstrations
    p = cfg.probe                                      # the one SliCK stage (kgsim.study.lm.slick), as the bridge's
    sets = exemplar_batches(kg, world.corpus.vocab, cand, world.splits.demos, p.n_shots, p.n_exemplar_sets,
                            rngs.stream(cfg.seed, "probe/exemplars"))
    sk = slick(KgsimLM(base.model, kg, world.corpus.vocab), sets, cand, n_samples=p.n_samples,
               temperature=p.temperature, seed=cfg.seed, stream="probe/samples")
    cat = sk.category
    table = {}
    for lo, hi in EXPOSURE_BUCKETS:
        m = (kg.exposure[cand] >= lo) & (kg.exposure[cand] <= hi)
        table[exposure_label(lo, hi)] = category_counts(cat[m])
    summary = {"memorisation": mem, "slick_by_exposure": table,
               "slick_counts": sk.counts()}
    write_json(out / "probe.json", summary)
    write_npz(f, slick_facts=cand, p_greedy=sk.p_greedy, p_sample=sk.p_sample)
    progress("probe", 1, 1)
    return summary | {"slick_facts": cand, "p_greedy": sk.p_greedy, "p_sample": sk.p_sample}


def slick_masks(cfg: ExperimentConfig, world: World, probe: dict) -> tuple[np.ndarray, np.ndarray]:
    """bool [n_facts] each: the facts SliCK calls Known (category in ``run.known_categories``) and
    Unknown; a fact not probed, or WeaklyKnown under P_greedy > 0, is neither."""
    known = np.zeros(world.kg.n_facts, bool)
    unknown = np.zeros(world.kg.n_facts, bool)
    cat = categories(probe["p_greedy"], probe["p_sample"])       # the one SliCK rule (kgsim.core.known)
    known[probe["slick_facts"]] = np.isin(cat, cfg.run.known_categories)
    unknown[probe["slick_facts"]] = cat == UNKNOWN
    return known, unknown


def known_rules(cfg: ExperimentConfig, world: World, probe: dict) -> dict:
    """SliCK (``run.known_categories``) against the exposure rule (Known: shown at least
    ``splits.known_min_exposure`` times; Unknown: never shown) over the probed facts:
    :func:`kgsim.core.known.rule_agreement` with both rules named."""
    facts, exposure = probe["slick_facts"], world.kg.exposure[probe["slick_facts"]]
    known, unknown = slick_masks(cfg, world, probe)
    out = rule_agreement(known[facts], unknown[facts], exposure >= cfg.splits.known_min_exposure, exposure == 0)
    return out | {"rows": f"SliCK ({known_rule(cfg.run.known_categories)})",
                  "columns": f"exposure (Known: shown >= {cfg.splits.known_min_exposure} times, Unknown: never)"}


def filter_test_sets(cfg: ExperimentConfig, world: World, probe: dict, splits: Splits) -> dict[str, np.ndarray]:
    """``{split@filter: fact ids}`` for every structural split and every filter of ``run.test_filters``
    (:func:`kgsim.world.splits.filtered_tests`): the facts SliCK calls Known, those shown at least
    ``splits.known_min_exposure`` times, or any; ``splits.test_size`` each at most, never a fine-tuning
    or dev fact. The filter of ``run.known_by`` is the run's own test set (the plain split name):
    it is not drawn again."""
    kg = world.kg
    masks = {SLICK_FILTER: slick_masks(cfg, world, probe)[0], EXPOSURE_FILTER: kg.exposure >= cfg.splits.known_min_exposure,
             UNFILTERED: np.ones(kg.n_facts, bool)}
    wanted = {f: masks[f] for f in cfg.run.test_filters if f != cfg.run.known_by}
    drawn = filtered_tests(kg, splits, wanted, cfg.splits.test_size,
                           lambda f, split: rngs.stream(cfg.seed, f"splits/filter/{f}/{split}"))
    return {filtered_split(split, f): ids for (split, f), ids in drawn.items()}


class TooLittleKnown(ConfigError):
    """The base model of a seed knows (by SliCK) too few facts to fill the splits."""


def splits_or_exclusion(cfg: ExperimentConfig, world: World, probe: dict) -> tuple[Splits | None, str | None]:
    """(:func:`ft_splits`, None), or (None, the reason) for a seed left out under
    ``run.unsplittable_seeds = "exclude"``; under "fail" TooLittleKnown propagates."""
    try:
        return ft_splits(cfg, world, probe), None
    except TooLittleKnown as e:
        if cfg.run.unsplittable_seeds != "exclude":
            raise
        return None, str(e)


def ft_splits(cfg: ExperimentConfig, world: World, probe: dict) -> Splits:
    """The splits the fine-tuning study uses: ground truth (exposure) or measured (SliCK) Known, with
    the Open-World test set drawn by ``splits.open_world`` (the world's own splits use the typed rule;
    under exposure with another rule they are drawn again from the same stream, so every set but
    Open-World and the 2-hop sample is the world's)."""
    kg = world.kg
    if cfg.run.known_by == "exposure":
        if cfg.splits.open_world == OW_TYPED:
            return world.splits
        return make_splits(kg, world.qa_subjects, cfg.splits, rngs.stream(cfg.seed, "splits"))
    known, unknown = slick_masks(cfg, world, probe)
    try:
        return make_splits(kg, world.qa_subjects, cfg.splits, rngs.stream(cfg.seed, "splits/measured"),
                           known=known, unknown=unknown)
    except ConfigError as e:
        raise TooLittleKnown(f"{e} (Known measured by SliCK on the base model: it knows too "
                             "little; pretrain longer, shrink the splits, set run.known_by = 'exposure', or "
                             "run.unsplittable_seeds = 'exclude' to leave such seeds out)") from None


# --------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------

def qa_rows(world: World, facts: np.ndarray, templates: np.ndarray | None = None) -> TokenRows:
    """Fine-tuning rows ``<bos> <q> s Q <a> a`` with the loss on the answer only; with `templates`
    (int [n]), fact i asked in question form ``templates[i]`` (``Q.t1``, ...), else in form 0."""
    kg, vocab = world.kg, world.corpus.vocab
    if templates is None:
        q = zero_shot(vocab, kg.s[facts], kg.r[facts]).tokens
    else:
        q = np.zeros((len(facts), 5), np.int64)
        for t in np.unique(templates):
            m = templates == t
            q[m] = zero_shot(vocab, kg.s[facts[m]], kg.r[facts[m]], int(t)).tokens
    tokens = np.concatenate([q, vocab.entity(kg.a[facts])[:, None]], 1)         # [n, 6]
    mask = np.zeros_like(tokens, bool)
    mask[:, -1] = True
    assert not (tokens == PAD).any()
    return TokenRows(tokens, mask)




def ft_models(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """(model name, fine-tuning set) pairs a seed fine-tunes: FT-Known, FT-Unknown and, when
    0 < ``finetune.unknown_share`` < 1, ``ft-mixed``."""
    pairs = [(FT_KNOWN, "known"), (FT_UNKNOWN, "unknown")]
    return pairs + [(FT_MIXED, "mixed")] if 0 < cfg.finetune.unknown_share < 1 else pairs


def _prefix_order(facts: np.ndarray, relation: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`facts` in an order whose every prefix holds the relations as evenly as possible: a random
    permutation, then stable-sorted by each fact's rank within its relation."""
    perm = facts[rng.permutation(len(facts))]
    rel = relation[perm]
    rank = np.zeros(len(perm), np.int64)
    for r in np.unique(rel):
        rank[rel == r] = np.arange((rel == r).sum())
    return perm[np.lexsort((rel, rank))]


def ft_sets(cfg: ExperimentConfig, world: World, splits: Splits) -> dict[str, np.ndarray]:
    """The fine-tuning sets {"known", "unknown", "mixed"} of ``finetune.size`` = n facts each.

    At n = ``splits.ft_size`` (``finetune.size = 0``) "known" and "unknown" are the splits' FT-Known
    and FT-Unknown sets as they are. A smaller n takes the first n facts of each pool in a seeded
    order whose prefixes keep the relations balanced. "mixed" is the first round(ρ·n) facts of the
    Unknown order and the first n − round(ρ·n) of the Known order (ρ = ``finetune.unknown_share``), so
    a larger ρ swaps further Known facts for Unknown ones and ρ = 0 / 1 give the Known / Unknown sets.
    """
    n_pool = len(splits.ft_known)
    n = cfg.finetune.size or n_pool
    if n > min(n_pool, len(splits.ft_unknown)):
        raise ConfigError(f"finetune.size = {n}: the fine-tuning pools hold {n_pool} Known and "
                          f"{len(splits.ft_unknown)} Unknown facts")
    rng = rngs.stream(cfg.seed, "finetune/sets")
    order_kn = _prefix_order(splits.ft_known, world.kg.r, rng)
    order_unk = _prefix_order(splits.ft_unknown, world.kg.r, rng)
    full = n == n_pool == len(splits.ft_unknown)
    k_unk = round(cfg.finetune.unknown_share * n)
    return {"known": splits.ft_known if full else np.sort(order_kn[:n]),
            "unknown": splits.ft_unknown if full else np.sort(order_unk[:n]),
            "mixed": np.sort(np.concatenate([order_unk[:k_unk], order_kn[:n - k_unk]]))}


@dataclass
class KgsimFineTuner:
    """kgsim's :class:`~kgsim.study.lm.FineTuner`: its own training loop (:func:`kgsim.nn.train.train`)
    from the base model's Convergence weights on ``<bos> <q> s Q <a> a`` rows (:func:`qa_rows`), the
    loss on the answer. Evaluates every ``finetune.eval_every`` steps: dev accuracy (the Early Stop
    criterion, among fine-tuned steps only), the accuracy on the training set and on each of
    `probes` ({metric name: fact ids}; with `parts`, {name: pool}, also on the training set's facts in
    each pool, ``train_{name}_acc``, where there are any). Convergence is the step budget."""

    cfg: ExperimentConfig
    world: World
    base: Path                                   # the base model's weights (safetensors)
    name: str                                    # the run's name: "finetune-{which}"
    probes: dict[str, np.ndarray] = field(default_factory=dict)
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    progress: Progress = _quiet
    bar: bool = False

    def fit(self, train_facts: np.ndarray, dev: np.ndarray, out: Path) -> FitResult:
        cfg, kg, vocab, label = self.cfg, self.world.kg, self.world.corpus.vocab, self.name.replace("finetune", "ft")
        probes = {"dev_acc": dev, **self.probes, "train_acc": train_facts}
        if self.parts:                           # the fitting curves of the set's own parts
            probes |= {f"train_{k}_acc": np.intersect1d(train_facts, pool) for k, pool in self.parts.items()}
            probes = {k: v for k, v in probes.items() if len(v)}
        batches = {k: (zero_shot(vocab, kg.s[v], kg.r[v]), v) for k, v in probes.items()}

        def evaluate(m, step):
            self.progress(label, step, cfg.finetune.steps)
            lm = KgsimLM(m, kg, vocab)
            row = {k: accuracy(lm, b, f) for k, (b, f) in batches.items()}
            # Early Stop chooses among fine-tuned checkpoints only (step 0 is the base model itself)
            return row | {"es_dev_acc": row["dev_acc"] if step > 0 else float("nan")}

        result = train(load_model(self.base), qa_rows(self.world, train_facts), cfg.finetune.train, out, seed=cfg.seed,
                       name=self.name, evaluate=evaluate, select_metric="es_dev_acc", progress=self.bar)
        curve = [json.loads(line) for line in result.metrics_path.read_text().splitlines()]
        curve = [row for row in curve if "dev_acc" in row]
        fitted = next((row["step"] for row in curve if row["train_acc"] >= 1.0), None)
        self.progress(label, cfg.finetune.steps, cfg.finetune.steps)
        return FitResult(result.es_path, result.con_path, result.es_step, result.es_metric, result.final_step, curve,
                         {"first_fitted_step": fitted})


def finetune_stage(cfg: ExperimentConfig, world: World, base: Base, splits: Splits, which: str, out: Path,
                   progress: Progress = _quiet, bar: bool = False, replicate: int = 0) -> dict:
    """Fine-tune a copy of the base model on one of :func:`ft_sets` (`which` = "known", "unknown" or
    "mixed"), into ``out/ft-{which}``, with :class:`KgsimFineTuner`: Early Stop on the dev set;
    fitting curves on a sample of each fine-tuning pool, the ID test set and (for "mixed") the
    set's Known and Unknown parts. The first step at which the training set was fitted is recorded.
    `replicate` R >= 1 names the training run ``finetune-{which}/ftR``: the same data, its own random
    stream (batch order, dropout); replicate 0 is the run as it was before replicates existed."""
    facts = ft_sets(cfg, world, splits)[which]
    sample_rng = rngs.stream(cfg.seed, "finetune/eval-sample")
    k_eval = min(cfg.run.ft_eval_facts, len(splits.ft_known))
    probes = {"id_acc": splits.test["id"],
              "ft_known_acc": np.sort(sample_rng.choice(splits.ft_known, k_eval, replace=False)),
              "ft_unknown_acc": np.sort(sample_rng.choice(splits.ft_unknown, k_eval, replace=False))}
    parts = {"known": splits.ft_known, "unknown": splits.ft_unknown} if which == "mixed" else {}
    name = f"finetune-{which}" + (f"/ft{replicate}" if replicate else "")
    tuner = KgsimFineTuner(cfg, world, base.dir / "train" / "con.safetensors", name, probes, parts, progress, bar)
    res = tuner.fit(facts, splits.dev, out / f"ft-{which}")
    return {"es_step": res.es_step, "es_dev_acc": res.es_dev_acc, "final_step": res.final_step,
            "first_fitted_step": res.summary["first_fitted_step"], "curve": res.history, "es_path": str(res.es),
            "con_path": str(res.con)}
