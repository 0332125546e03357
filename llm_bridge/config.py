"""The bridge's configuration: one frozen dataclass tree, owned by llm_bridge.

Values come from the dataclass defaults, then a named preset (:data:`PRESETS`), then dotted
``key=value`` overrides (``--set finetune.lr=1e-4``), parsed and type-checked by the same machinery
as kgsim's own tree; an unknown key, a wrong type or an impossible value raises
:class:`kgsim.core.config.ConfigError` naming the key and the value.

Sections: ``runtime`` (dtype, device), ``data`` (:class:`DataConfig`), ``probe``
(:class:`llm_bridge.known.SliCKConfig`), ``finetune`` (:class:`llm_bridge.finetune.FinetuneConfig`),
``eval`` (:class:`llm_bridge.evaluate.EvalConfig`), and the one ``seed``.

>>> cfg = bridge_config("tiny", ["finetune.lr=3e-4"])
>>> cfg.finetune.lr, cfg.probe.n_shots
(0.0003, 2)
>>> bridge_config(overrides=["data.ft_size=0"])
Traceback (most recent call last):
...
kgsim.core.config.ConfigError: data.ft_size = 0: must be >= 1
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

from kgsim.core.config import ConfigError, apply_overrides, apply_table
from kgsim.core.known import FT_KNOWN_CATEGORIES
from kgsim.core.names import CATEGORIES, UNKNOWN

from .evaluate import EvalConfig
from .finetune import FinetuneConfig
from .known import SliCKConfig
from .models import DTYPES
from .prompts import FORMATS


@dataclass(frozen=True)
class RuntimeConfig:
    dtype: str = "auto"                 # auto | float32 | bfloat16 | float16
    device: str = "auto"                # auto | cpu | cuda | cuda:N | mps (probing and evaluation)

    def validate(self, p: str = "runtime") -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"{p}.dtype = {self.dtype!r}: choose one of {list(DTYPES)}")
        d = self.device
        if not (d in ("auto", "cpu", "cuda", "mps") or (d.startswith("cuda:") and d[5:].isdigit())):
            raise ConfigError(f"{p}.device = {d!r}: choose auto, cpu, cuda, cuda:N or mps")


@dataclass(frozen=True)
class DataConfig:
    n_ft_relations: int = 4
    ft_relations: tuple[str, ...] = ()  # explicit FT relations (overrides n_ft_relations)
    ft_size: int = 300                  # examples in each of FT-Known and FT-Unknown (at most)
    n_candidates: int = 3000            # train examples of the FT relations that SliCK categorises
    dev_size: int = 100
    test_size: int = 300                # per test split
    n_demo_pool: int = 16               # per relation (and 2-hop demonstrations)
    known_categories: tuple[str, ...] = FT_KNOWN_CATEGORIES   # FT-Known's categories (kgsim's: P_greedy > 0)
    near_quantile: float = 0.5          # similarity quantile above which other-relation tests are near-id
    sim_buckets: int = 3                # similarity-quantile buckets sim-1..n of all one-hop tests (0 = none)
    dev_share: float = 0.1              # for data without its own splits
    test_share: float = 0.2
    max_per_relation: int = 0           # EntityQuestions: read at most this many lines per file (0 = all)
    question_form: int = 0              # synthetic: which question template
    two_hop_size: int = 100             # synthetic: 2-hop test queries
    format: str = "text"                # synthetic: "text" (verbalised) | "kgsim-tokens" (kgsim's own prompts)

    def validate(self, p: str = "data") -> None:
        def fail(key, why):
            raise ConfigError(f"{p}.{key} = {getattr(self, key)!r}: {why}")

        for key in ("n_ft_relations", "ft_size", "n_candidates", "dev_size", "test_size", "n_demo_pool", "two_hop_size"):
            if getattr(self, key) < 1:
                fail(key, "must be >= 1")
        for key in ("max_per_relation", "question_form", "sim_buckets"):
            if getattr(self, key) < 0:
                fail(key, "must be >= 0")
        known = [c for c in CATEGORIES if c != UNKNOWN]
        if not self.known_categories or not set(self.known_categories) <= set(known):
            fail("known_categories", f"choose a non-empty subset of {known}")
        if not 0 < self.near_quantile < 1:
            fail("near_quantile", "must lie in (0, 1)")
        for key in ("dev_share", "test_share"):
            if not 0 < getattr(self, key) < 1:
                fail(key, "must lie in (0, 1)")
        if self.dev_share + self.test_share >= 1:
            fail("test_share", f"dev_share + test_share must be < 1 (dev_share = {self.dev_share})")
        if self.format not in FORMATS:
            fail("format", f"choose one of {list(FORMATS)}")


@dataclass(frozen=True)
class BridgeConfig:
    """The whole bridge tree; values from defaults, a preset, then ``--set key=value`` overrides."""

    seed: int = 0
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    probe: SliCKConfig = field(default_factory=SliCKConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        if self.seed < 0:
            raise ConfigError(f"seed = {self.seed!r}: must be >= 0")
        for f in dataclasses.fields(self):
            sub = getattr(self, f.name)
            if dataclasses.is_dataclass(sub):
                sub.validate(f.name)
        pool = self.data.n_demo_pool
        if self.probe.n_shots + 1 > pool:
            raise ConfigError(f"probe.n_shots = {self.probe.n_shots}: needs n_shots + 1 demonstrations per relation "
                              f"(data.n_demo_pool = {pool})")
        if self.data.sim_buckets == 1:
            raise ConfigError("data.sim_buckets = 1: use 0 (none) or at least 2 buckets")
        for key, k in (("eval.k_shots", max(self.eval.k_shots, default=0)), ("eval.cot_shots", self.eval.cot_shots)):
            if k > pool:
                raise ConfigError(f"{key} = {k}: exceeds data.n_demo_pool = {pool}")
        if not self.probe.match == self.finetune.match == self.eval.match:
            raise ConfigError(f"probe.match = {self.probe.match!r}, finetune.match = {self.finetune.match!r}, "
                              f"eval.match = {self.eval.match!r}: must agree")
        if self.data.format == "kgsim-tokens" and self.eval.match != "em":
            raise ConfigError(f"eval.match = {self.eval.match!r}: data.format = 'kgsim-tokens' matches the first "
                              "generated token exactly; use 'em'")


PRESETS: dict[str, dict] = {
    "default": {},
    "tiny": {  # seconds on a CPU with a tiny model: every stage runs, nothing is meant to be learnt well
        "data": {"n_ft_relations": 2, "ft_size": 8, "n_candidates": 48, "dev_size": 8, "test_size": 8,
                 "n_demo_pool": 4, "two_hop_size": 8, "sim_buckets": 2},
        "probe": {"n_shots": 2, "n_exemplar_sets": 2, "n_samples": 2, "max_new_tokens": 8, "batch_size": 64},
        "finetune": {"max_steps": 12, "batch_size": 4, "lr": 1e-3, "eval_every": 3, "max_new_tokens": 8,
                     "fit_eval_size": 16, "eval_batch_size": 64},
        "eval": {"k_shots": [1, 2], "cot_shots": 1, "max_new_tokens": 8, "cot_max_new_tokens": 40, "batch_size": 64},
    },
}


def bridge_config(preset: str = "default", overrides: Sequence[str] = ()) -> BridgeConfig:
    """Defaults <- preset (:data:`PRESETS`) <- dotted ``key=value`` overrides, validated.

    Raises:
        ConfigError: unknown preset or key, a value of the wrong type, an impossible value.
    """
    if preset not in PRESETS:
        raise ConfigError(f"preset = {preset!r}: unknown bridge preset; choose one of {sorted(PRESETS)}")
    cfg = apply_table(BridgeConfig, BridgeConfig(), PRESETS[preset])
    cfg = apply_overrides(BridgeConfig, cfg, overrides)
    cfg.validate()
    return cfg


__all__ = ["PRESETS", "BridgeConfig", "DataConfig", "RuntimeConfig", "bridge_config"]
