"""One typed configuration tree for every kgsim command.

Values come from the dataclass defaults, then a named preset (``kgsim/presets/NAME.toml``), then a
TOML file (``--config FILE``), then dotted overrides (``--set train.lr=3e-4``). Every layer is
validated the same way: an unknown key, a value of the wrong type or an impossible value raises
:class:`ConfigError` naming the dotted key and the value, before any work starts.

>>> cfg = load_config("smoke", overrides=["graph.n_entities=300"])
>>> cfg.graph.n_entities
300
>>> load_config("smoke", overrides=["graph.n_entitis=3"])
Traceback (most recent call last):
...
kgsim.core.validate.ConfigError: unknown key 'graph.n_entitis' (value 3)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w

from kgsim.core.io import InputFileError, read_text
from kgsim.core.keys import hashed_section
from kgsim.core.known import FT_KNOWN_CATEGORIES, known_categories_problem
from kgsim.core.names import OPEN_WORLD_RULES, TEST_FILTERS, UNSPLITTABLE_SEEDS
from kgsim.core.validate import ConfigError
from kgsim.core.validate import fail as _fail
from kgsim.core.validate import finite as _finite
from kgsim.core.validate import fraction as _fraction
from kgsim.core.validate import nonneg as _nonneg
from kgsim.core.validate import one_of as _one_of
from kgsim.core.validate import positive as _positive

# --------------------------------------------------------------------------------------------
# Sections. Each component owns one frozen dataclass; `validate(prefix)` checks impossible values.
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GraphConfig:
    """The synthetic (or loaded) knowledge graph and the exposure each fact gets in pretraining."""

    generator: str = "zipf"            # uniform | zipf | preferential | community | tsv | entityquestions
    n_entities: int = 1000
    n_types: int = 4                   # entity types; relations map a domain type to a range type
    n_relations: int = 8
    n_composed: int = 2                # composable relation pairs (r1, r2) giving 2-hop queries
    facts_per_subject: float = 1.0     # share of (s, r) pairs with a matching domain that get a fact
    zipf_exponent: float = 1.1         # subject popularity ~ rank^-exponent
    mean_exposure: float = 8.0         # mean pretraining repetitions over exposed facts
    max_exposure: int = 64             # cap on one fact's repetitions
    never_exposed_share: float = 0.1   # share of facts never shown in pretraining
    n_communities: int = 4             # for the community generator
    community_mixing: float = 0.05     # chance an object is drawn outside the subject's community
    tsv_path: str = ""                 # for generator = "tsv": head<TAB>relation<TAB>tail lines
    data_path: str = ""                # for generator = "entityquestions": the dataset folder (ROOT/train/...)
    relations: tuple[str, ...] = ()    # loaded graphs (tsv, entityquestions): keep only these relations (() = all)
    max_facts: int = 0                 # loaded graphs: keep at most this many facts, whole subjects at a time (0 = all)

    @property
    def loaded(self) -> bool:
        """True for graphs read from files (their size comes from the file, not n_entities/n_relations)."""
        return self.generator in LOADED_GENERATORS

    def validate(self, p: str) -> None:
        if self.generator not in GRAPH_GENERATORS:
            _fail(f"{p}.generator", self.generator, f"unknown generator; choose one of {sorted(GRAPH_GENERATORS)}")
        if self.generator == "tsv" and not self.tsv_path:
            _fail(f"{p}.tsv_path", self.tsv_path, "the tsv generator needs a file path")
        if self.generator == "entityquestions" and not self.data_path:
            _fail(f"{p}.data_path", self.data_path, "the entityquestions generator needs the dataset's folder "
                  "(ROOT/train/P17.train.jsonl, ROOT/relation_query_templates.json)")
        for i, name in enumerate(self.relations):
            if not name.strip():
                _fail(f"{p}.relations[{i}]", name, "must name a relation")
        if len(set(self.relations)) != len(self.relations):
            _fail(f"{p}.relations", list(self.relations), "names a relation twice")
        _nonneg(f"{p}.max_facts", self.max_facts)
        _positive(f"{p}.n_entities", self.n_entities, minimum=2)
        _positive(f"{p}.n_types", self.n_types)
        if self.n_types > self.n_entities:
            _fail(f"{p}.n_types", self.n_types, f"more types than entities ({self.n_entities})")
        _positive(f"{p}.n_relations", self.n_relations)
        _nonneg(f"{p}.n_composed", self.n_composed)
        if self.n_composed * 2 > self.n_relations:
            _fail(f"{p}.n_composed", self.n_composed,
                  f"each composed pair needs two distinct relations; only {self.n_relations} exist")
        _fraction(f"{p}.facts_per_subject", self.facts_per_subject, open_low=True)
        _finite(f"{p}.zipf_exponent", self.zipf_exponent, minimum=0.0)
        _finite(f"{p}.mean_exposure", self.mean_exposure, minimum=0.0)
        _positive(f"{p}.max_exposure", self.max_exposure)
        if self.mean_exposure > self.max_exposure:
            _fail(f"{p}.mean_exposure", self.mean_exposure, f"exceeds max_exposure ({self.max_exposure})")
        _fraction(f"{p}.never_exposed_share", self.never_exposed_share, open_high=True)
        _positive(f"{p}.n_communities", self.n_communities)
        _fraction(f"{p}.community_mixing", self.community_mixing)


@dataclass(frozen=True)
class CorpusConfig:
    """Pretraining documents and the question-answer format."""

    facts_per_doc: int = 4
    relation_doc_share: float = 0.5    # share of a fact's repetitions placed in relation-grouped docs
    surface_forms: int = 1             # statement tokens per relation (augmentation)
    qa_subject_share: float = 0.5      # subjects whose facts also appear as QA documents (mixed pretraining)
    shuffle_facts: bool = True         # permute the order of facts inside each document
    two_hop_qa_share: float = 0.0      # share of QA subjects' 2-hop queries shown as composed QA (<q> s Q1 Q2 <a> a)
    qa_templates: int = 1              # question forms per relation in QA documents (fine-tuning uses the first)

    def validate(self, p: str) -> None:
        _positive(f"{p}.facts_per_doc", self.facts_per_doc)
        _fraction(f"{p}.two_hop_qa_share", self.two_hop_qa_share)
        _positive(f"{p}.qa_templates", self.qa_templates)
        _fraction(f"{p}.relation_doc_share", self.relation_doc_share)
        _positive(f"{p}.surface_forms", self.surface_forms)
        _fraction(f"{p}.qa_subject_share", self.qa_subject_share, open_high=True)


@dataclass(frozen=True)
class SplitConfig:
    """Known/Unknown pools, balanced fine-tuning sets and held-out test sets."""

    ft_relations: int = 4              # relations used for fine-tuning (the ID relations)
    ft_size: int = 300                 # facts in each of FT-Known and FT-Unknown
    dev_size: int = 100                # held-out known facts of the ID relations, for Early Stop
    test_size: int = 300               # per test split (ID, Near-ID, Open-World)
    known_min_exposure: int = 6        # ground-truth "known": shown at least this often
    n_demo_pool: int = 64              # per relation, facts reserved for few-shot demonstrations
    min_demo_pool: int = 0             # fewer demos: out of FT and tests (0 = n_demo_pool, all must have it)
    ft_relation_names: tuple[str, ...] = ()  # fine-tuning relations by name (() = chosen; synthetic: r0, r1, ...)
    open_world: str = "typed"          # Open-World draw: "typed" (subject types no FT relation takes, where
                                       # enough) or "factorial" (balanced cells, kgsim.world.splits)

    @property
    def demo_floor(self) -> int:
        """The fewest demonstration facts a relation in fine-tuning or tests has."""
        return self.min_demo_pool or self.n_demo_pool

    def validate(self, p: str) -> None:
        _positive(f"{p}.ft_relations", self.ft_relations)
        _positive(f"{p}.ft_size", self.ft_size)
        _positive(f"{p}.dev_size", self.dev_size)
        _positive(f"{p}.test_size", self.test_size)
        _positive(f"{p}.known_min_exposure", self.known_min_exposure)
        _positive(f"{p}.n_demo_pool", self.n_demo_pool)
        _nonneg(f"{p}.min_demo_pool", self.min_demo_pool)
        if self.min_demo_pool > self.n_demo_pool:
            _fail(f"{p}.min_demo_pool", self.min_demo_pool, f"exceeds splits.n_demo_pool ({self.n_demo_pool})")
        names = self.ft_relation_names
        if names and len(names) != self.ft_relations:
            _fail(f"{p}.ft_relation_names", list(names), f"names {len(names)} relations but splits.ft_relations = "
                  f"{self.ft_relations}; set both")
        if len(set(names)) != len(names):
            _fail(f"{p}.ft_relation_names", list(names), "names a relation twice")
        _one_of(f"{p}.open_world", self.open_world, OPEN_WORLD_RULES)


@dataclass(frozen=True)
class ModelConfig:
    """A small causal transformer (GPT-2 layout, tied embeddings)."""

    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    n_ctx: int = 32
    mlp_ratio: int = 4
    attention_only: bool = False       # no MLP blocks (the theory's one-layer model)
    dropout: float = 0.0

    def validate(self, p: str) -> None:
        _positive(f"{p}.d_model", self.d_model)
        _positive(f"{p}.n_layers", self.n_layers)
        _positive(f"{p}.n_heads", self.n_heads)
        if self.d_model % self.n_heads:
            _fail(f"{p}.n_heads", self.n_heads, f"must divide d_model ({self.d_model})")
        _positive(f"{p}.n_ctx", self.n_ctx, minimum=4)
        _positive(f"{p}.mlp_ratio", self.mlp_ratio)
        _fraction(f"{p}.dropout", self.dropout, open_high=True)


@dataclass(frozen=True)
class TrainConfig:
    """One training phase (pretraining or fine-tuning)."""

    steps: int = 3000
    batch_size: int = 256
    lr: float = 3e-3
    min_lr_ratio: float = 0.1          # cosine decay to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    grad_clip: float = 1.0
    bf16: bool = False                 # bf16 autocast; on a CPU without bf16 kernels (AVX2 only) its products
    #                                    run on float32 kernels, 1.1-1.6x a float32 step (kgsim.nn.precision)
    log_every: int = 50
    eval_every: int = 250
    ckpt_every: int = 500
    threads: int = 0                   # torch threads; 0 = leave torch's default

    @property
    def train(self) -> TrainConfig:
        """The optimisation settings alone (what a training checkpoint's identity records)."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)})

    def validate(self, p: str) -> None:
        _positive(f"{p}.steps", self.steps)
        _positive(f"{p}.batch_size", self.batch_size)
        _finite(f"{p}.lr", self.lr, minimum=0.0, open_low=True)
        _fraction(f"{p}.min_lr_ratio", self.min_lr_ratio)
        _nonneg(f"{p}.warmup_steps", self.warmup_steps)
        _finite(f"{p}.weight_decay", self.weight_decay, minimum=0.0)
        _fraction(f"{p}.beta1", self.beta1, open_high=True)
        _fraction(f"{p}.beta2", self.beta2, open_high=True)
        _finite(f"{p}.grad_clip", self.grad_clip, minimum=0.0)
        _positive(f"{p}.log_every", self.log_every)
        _positive(f"{p}.eval_every", self.eval_every)
        _positive(f"{p}.ckpt_every", self.ckpt_every)
        _nonneg(f"{p}.threads", self.threads)


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    """The fine-tuning phase: a TrainConfig plus the fine-tuning set's composition.

    ``unknown_share`` = ρ is the share of Unknown facts in the set of the cell's ρ-model: FT-Known is
    ρ = 0, FT-Unknown ρ = 1, and for 0 < ρ < 1 a third model ``ft-mixed`` is fine-tuned on
    round(ρ·n) Unknown and n − round(ρ·n) Known facts (nested: a larger ρ swaps further Known facts
    for Unknown ones). ``size`` = n is the number of facts every fine-tuning set holds (0 = all of
    ``splits.ft_size``); a smaller size subsamples the sets without touching the world or the base."""

    unknown_share: float = 0.0
    size: int = 0

    def validate(self, p: str) -> None:
        super().validate(p)
        _fraction(f"{p}.unknown_share", self.unknown_share)
        _nonneg(f"{p}.size", self.size)


@dataclass(frozen=True)
class InstructConfig(TrainConfig):
    """The instruct analogue (off unless ``enabled``): a stage between pretraining and the probe that
    tunes the base model on broad question answering, as instruction tuning precedes fine-tuning in
    the paper's instruct models. Its data: ``facts`` facts of the QA subjects (so never a fine-tuning,
    dev or test fact) of relations fine-tuning does not use, each asked in one of the corpus's
    ``corpus.qa_templates`` question forms at random. With it on, SliCK, the splits and both
    fine-tuning runs start from the tuned model; O1's instruct clause is the gap with it against the
    gap without it (``kgsim sweep --grid instruct.enabled=false,true`` shares world and base model).
    The defaults are gentle (~2 epochs at a tenth of fine-tuning's rate): fine-tuning's own schedule
    cut ID extraction 75% -> 29% on the default world (docs/study-design-run/README.md)."""

    enabled: bool = False
    facts: int = 2000                  # QA facts tuned on (at most the ones there are)

    def validate(self, p: str) -> None:
        super().validate(p)
        _positive(f"{p}.facts", self.facts)


@dataclass(frozen=True)
class ProbeConfig:
    """SliCK categorisation by few-shot probing of the base model."""

    n_shots: int = 4
    n_exemplar_sets: int = 10
    n_samples: int = 16                # sampled answers per exemplar set, at `temperature`
    temperature: float = 0.5
    batch_size: int = 4096

    def validate(self, p: str) -> None:
        _nonneg(f"{p}.n_shots", self.n_shots)
        _positive(f"{p}.n_exemplar_sets", self.n_exemplar_sets)
        _nonneg(f"{p}.n_samples", self.n_samples)
        _finite(f"{p}.temperature", self.temperature, minimum=0.0, open_low=True)
        _positive(f"{p}.batch_size", self.batch_size)


@dataclass(frozen=True)
class PromptConfig:
    """Test-time prompts: zero-shot, k-shot (induced subgraph), CoT (induced path)."""

    k_shots: tuple[int, ...] = (1, 2, 4, 8)
    cot: bool = True                   # measure 2-hop queries directly and with Chain of Thought
    cot_shots: int = 2                 # demonstrations (full paths) in the 2-hop prompts
    recall_cot: bool = True            # one-hop CoT on the structural splits: recall a related fact, then answer

    def validate(self, p: str) -> None:
        for i, k in enumerate(self.k_shots):
            _positive(f"{p}.k_shots[{i}]", k)
        _nonneg(f"{p}.cot_shots", self.cot_shots)


@dataclass(frozen=True)
class RunConfig:
    """How `kgsim run` runs the protocol: seeds, the Known rule, similarity buckets, parallelism."""

    seeds: tuple[int, ...] = (0,)      # one process per seed, `workers` at a time
    workers: int = 2                   # parallel seed processes (one torch thread each)
    ft_replicates: int = 1             # fine-tuning runs per base model (the nested design: variance components)
    known_by: str = "slick"            # "slick": FT-Known / FT-Unknown by SliCK; "exposure": ground truth
    known_categories: tuple[str, ...] = FT_KNOWN_CATEGORIES   # SliCK's FT-Known: P_greedy > 0 (+ WeaklyKnown:
                                                              # P_correct > 0)
    test_filters: tuple[str, ...] = TEST_FILTERS   # test sets measured per structural split: facts SliCK calls
                                                   # Known, shown >= splits.known_min_exposure times, or any
    sim_buckets: int = 3               # similarity-quantile test buckets (high / mid / low similarity)
    ft_eval_facts: int = 200           # facts of each FT set scored at every evaluation (fitting curves)
    unsplittable_seeds: str = "fail"   # a seed whose base model knows too few facts to fill the splits: "fail"
                                       # the run, or "exclude" it (named with its reason in results and report)

    def validate(self, p: str) -> None:
        if not self.seeds:
            _fail(f"{p}.seeds", list(self.seeds), "give at least one seed")
        for i, sd in enumerate(self.seeds):
            _nonneg(f"{p}.seeds[{i}]", sd)
        if len(set(self.seeds)) != len(self.seeds):
            _fail(f"{p}.seeds", list(self.seeds), "seeds must be distinct")
        _positive(f"{p}.workers", self.workers)
        _positive(f"{p}.ft_replicates", self.ft_replicates)
        _one_of(f"{p}.known_by", self.known_by, ("slick", "exposure"))
        _one_of(f"{p}.unsplittable_seeds", self.unsplittable_seeds, UNSPLITTABLE_SEEDS)
        for i, f in enumerate(self.test_filters):
            if f not in TEST_FILTERS:
                _fail(f"{p}.test_filters[{i}]", f, f"must be one of {list(TEST_FILTERS)}")
        if len(set(self.test_filters)) != len(self.test_filters):
            _fail(f"{p}.test_filters", list(self.test_filters), "name each filter once")
        if (why := known_categories_problem(self.known_categories)) is not None:
            _fail(f"{p}.known_categories", list(self.known_categories) if isinstance(self.known_categories, tuple)
                  else self.known_categories, why)
        _positive(f"{p}.sim_buckets", self.sim_buckets, minimum=2)
        _positive(f"{p}.ft_eval_facts", self.ft_eval_facts)


@dataclass(frozen=True)
class VerdictConfig:
    """How the observations are judged, declared before the run: one primary claim per observation
    (claim names as in results.json's ``observations``), the equivalence margin below which an effect
    counts as absent (two one-sided tests), and the effect the report says how many seeds would need.
    Gaps are fractions: 0.05 = 5 points."""

    primary_o1: str = "gap_grows_es_to_con"
    primary_o2: str = "con: gap_open_world_smaller_than_id"
    primary_o3: str = "con: 4-shot shrinks the ID gap"
    margin: float = 0.05               # "no effect" only when equivalence within ±margin is shown (TOST)
    target_effect: float = 0.10        # the report gives the seeds a one-sample t-test needs for this effect

    def validate(self, p: str) -> None:
        for key in ("primary_o1", "primary_o2", "primary_o3"):
            if not getattr(self, key).strip():
                _fail(f"{p}.{key}", getattr(self, key), "name one claim of the observation")
        _finite(f"{p}.margin", self.margin, minimum=0.0, open_low=True)
        _finite(f"{p}.target_effect", self.target_effect, minimum=0.0, open_low=True)
        for key in ("margin", "target_effect"):
            if getattr(self, key) > 1:
                _fail(f"{p}.{key}", getattr(self, key), "gaps are fractions in [-1, 1]: 0.05 = 5 points")


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole tree. `seed` is the one seed every stream derives from."""

    seed: int = 0
    graph: GraphConfig = field(default_factory=GraphConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: TrainConfig = field(default_factory=TrainConfig)
    instruct: InstructConfig = field(default_factory=lambda: InstructConfig(   # ~2 epochs of 2,000 facts at
        steps=120, batch_size=32, lr=1e-4, warmup_steps=10, log_every=10, eval_every=20,  # a tenth of FT's lr
        ckpt_every=60))
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(
        steps=600, batch_size=32, lr=1e-3, warmup_steps=10, log_every=10, eval_every=10, ckpt_every=50))
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    run: RunConfig = field(default_factory=RunConfig)
    verdicts: VerdictConfig = field(default_factory=VerdictConfig)

    def validate(self, p: str = "") -> None:
        _nonneg("seed", self.seed)
        for f in dataclasses.fields(self):
            sub = getattr(self, f.name)
            if dataclasses.is_dataclass(sub):
                sub.validate(f.name)
        max_k = max(self.prompts.k_shots, default=0)
        floor = self.splits.demo_floor
        pool = (f"splits.n_demo_pool = {self.splits.n_demo_pool}" if not self.splits.min_demo_pool else
                f"splits.min_demo_pool = {self.splits.min_demo_pool}")
        if max_k > floor:
            _fail("prompts.k_shots", list(self.prompts.k_shots),
                  f"k = {max_k} exceeds the demonstrations available per relation ({pool})")
        if self.prompts.recall_cot and self.prompts.cot_shots > floor:
            _fail("prompts.cot_shots", self.prompts.cot_shots,
                  f"recall-CoT draws its demonstrations per relation and only {floor} are available ({pool})")
        if self.probe.n_shots > floor:
            _fail("probe.n_shots", self.probe.n_shots,
                  f"exceeds the demonstrations available per relation ({pool})")
        need = {"prompts.k_shots": 1 + 6 * max_k + 4, "probe.n_shots": 1 + 6 * self.probe.n_shots + 4,
                "prompts.cot_shots": (1 + 12 * self.prompts.cot_shots + 10)      # 2-hop CoT and recall-CoT
                if self.prompts.cot or self.prompts.recall_cot else 0}
        for key, n in need.items():
            if n > self.model.n_ctx:
                value = list(self.prompts.k_shots) if key == "prompts.k_shots" else \
                    self.probe.n_shots if key == "probe.n_shots" else self.prompts.cot_shots
                _fail(key, value, f"its prompts are {n} tokens long, more than model.n_ctx = {self.model.n_ctx}")
        if self.finetune.size > self.splits.ft_size:
            _fail("finetune.size", self.finetune.size,
                  f"more than the fine-tuning pools hold (splits.ft_size = {self.splits.ft_size})")
        if not self.graph.loaded and self.splits.ft_relations > self.graph.n_relations:
            _fail("splits.ft_relations", self.splits.ft_relations,
                  f"more than the graph's relations ({self.graph.n_relations})")

    def section_hash(self, *sections: str) -> str:
        """Hash of the named sections (and the seed): the cache key of an artefact made from them. A
        key added after caches existed counts only when set away from the value that changes nothing,
        and a key only the study's draw reads counts never (:mod:`kgsim.core.keys`), so worlds and
        models cached before them still match."""
        blob = {"seed": self.seed} | {s: hashed_section(s, to_dict(getattr(self, s))) for s in sections}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


LOADED_GENERATORS = {"tsv", "entityquestions"}
GRAPH_GENERATORS = {"uniform", "zipf", "preferential", "community"} | LOADED_GENERATORS


# --------------------------------------------------------------------------------------------
# Dict / TOML <-> dataclass, with type checking
# --------------------------------------------------------------------------------------------

def to_dict(cfg: Any) -> dict:
    """A plain nested dict of a config (tuples become lists), ready for TOML or JSON."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = to_dict(v) if dataclasses.is_dataclass(v) else (list(v) if isinstance(v, tuple) else v)
    return out


def to_toml(cfg: ExperimentConfig) -> str:
    return tomli_w.dumps(to_dict(cfg))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        (elem, _) = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(f"{key}[{i}]", v, elem) for i, v in enumerate(value))
    else:  # pragma: no cover - a programming error, not a user error
        raise TypeError(f"unsupported config type {tp} for {key}")
    name = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(tp, "a list")
    _fail(key, value, f"must be {name}")


def _build(cls: type, data: dict, prefix: str, base: Any) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            _fail_unknown(f"{prefix}{k}", data[k])
    kwargs = {}
    for f in dataclasses.fields(cls):
        current = getattr(base, f.name)
        if f.name not in data:
            kwargs[f.name] = current
            continue
        v, key = data[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            if not isinstance(v, dict):
                _fail(key, v, "must be a table of keys")
            kwargs[f.name] = _build(hints[f.name], v, key + ".", current)
        else:
            kwargs[f.name] = _coerce(key, v, hints[f.name])
    return cls(**kwargs)


def _fail_unknown(key: str, value: Any) -> typing.NoReturn:
    raise ConfigError(f"unknown key {key!r} (value {value!r})")


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        value = raw  # a bare word is a string: --set graph.generator=uniform
    return key.split("."), value


def apply_table(cls: type, cfg: Any, table: dict) -> Any:
    """`cfg` (an instance of the config dataclass `cls`) with the values of a nested dict applied
    (a preset or TOML table), type-checked but not validated.

    Raises:
        ConfigError: an unknown key or a value of the wrong type, naming the dotted key.
    """
    return _build(cls, table, "", cfg)


def apply_overrides(cls: type, cfg: Any, overrides: typing.Sequence[str]) -> Any:
    """`cfg` (an instance of the config dataclass `cls`) with dotted ``key=value`` overrides applied
    in order (a value is parsed as TOML, else kept as a bare string), type-checked but not validated.

    >>> apply_overrides(GraphConfig, GraphConfig(), ["n_entities=50"]).n_entities
    50

    Raises:
        ConfigError: an item without ``=``, an unknown key, a value of the wrong type.
    """
    for item in overrides:
        parts, value = _parse_override(item)
        nested: dict = {}
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        cfg = _build(cls, nested, "", cfg)
    return cfg


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("kgsim.presets").iterdir() if p.name.endswith(".toml"))


def _read_toml(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML ({e})") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid TOML (nested too deeply)") from None


def load_config(preset: str | None = "default", config_file: str | Path | None = None,
                overrides: typing.Sequence[str] = ()) -> ExperimentConfig:
    """Resolve defaults <- preset <- config file <- overrides, and validate the result."""
    cfg = ExperimentConfig()
    if preset:
        if preset not in preset_names():
            raise ConfigError(f"preset = {preset!r}: unknown preset; choose one of {preset_names()}")
        text = resources.files("kgsim.presets").joinpath(f"{preset}.toml").read_text()
        cfg = apply_table(ExperimentConfig, cfg, _read_toml(text, f"preset {preset}"))
    if config_file:
        path = Path(config_file)
        if not path.exists():
            raise ConfigError(f"--config = {str(path)!r}: no such file")
        try:
            text = read_text(path, "a TOML file of config keys")
        except InputFileError as e:
            raise ConfigError(f"--config: {e}") from None
        table = _read_toml(text, str(path))
        try:
            cfg = apply_table(ExperimentConfig, cfg, table)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    cfg = apply_overrides(ExperimentConfig, cfg, overrides)
    cfg.validate()
    return cfg


def from_dict(data: dict) -> ExperimentConfig:
    """Rebuild (and validate) a config from `to_dict` output, e.g. a run directory's config."""
    cfg = _build(ExperimentConfig, data, "", ExperimentConfig())
    cfg.validate()
    return cfg


def replace(cfg: Any, **changes: Any) -> Any:
    """`dataclasses.replace` for nested sections: replace(cfg, graph=dict(n_entities=10))."""
    kw = {k: (dataclasses.replace(getattr(cfg, k), **v) if isinstance(v, dict) else v) for k, v in changes.items()}
    return dataclasses.replace(cfg, **kw)

