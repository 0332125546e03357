"""The bridge's configuration: one frozen dataclass tree, owned by llm_bridge.

Values come from the dataclass defaults, then a named preset (a TOML file of ``llm_bridge/presets/``:
``default``, ``tiny`` for CPU tests, ``gpu`` for a 7-8B model on a GPU node), then a TOML file
(``--config``), then dotted
``key=value`` overrides (``--set finetune.lr=1e-4``), parsed and type-checked by the same machinery
as kgsim's own tree; an unknown key, a wrong type or an impossible value raises
:class:`kgsim.core.config.ConfigError` naming the key and the value.

Sections: ``runtime`` (dtype, device, device_map), ``data`` (:class:`DataConfig`), ``probe``
(:class:`llm_bridge.known.SliCKConfig`), ``finetune`` (:class:`llm_bridge.finetune.FinetuneConfig`),
``eval`` (:class:`llm_bridge.evaluate.EvalConfig`), and the one ``seed``.

>>> cfg = bridge_config("tiny", ["finetune.lr=3e-4"])
>>> cfg.finetune.lr, cfg.probe.n_shots
(0.0003, 2)
>>> bridge_config(overrides=["data.ft_size=0"])
Traceback (most recent call last):
...
kgsim.core.validate.ConfigError: data.ft_size = 0: must be >= 1
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

import tomli_w

from kgsim.core.config import ConfigError, apply_overrides, apply_table, to_dict
from kgsim.core.known import FT_KNOWN_CATEGORIES, known_categories_problem

from .evaluate import EvalConfig
from .finetune import FinetuneConfig
from .known import SliCKConfig
from .models import DTYPES
from .prompts import FORMATS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEVICE_MAPS = ("", "auto", "balanced", "balanced_low_0", "sequential")


@dataclass(frozen=True)
class RuntimeConfig:
    dtype: str = "auto"                 # auto | float32 | bfloat16 | float16
    device: str = "auto"                # auto | cpu | cuda | cuda:N | mps (probing and evaluation)
    device_map: str = ""                # "" (load, then move whole to `device`) | auto | balanced | ... (accelerate)

    def validate(self, p: str = "runtime") -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"{p}.dtype = {self.dtype!r}: choose one of {list(DTYPES)}")
        d = self.device
        if not (d in ("auto", "cpu", "cuda", "mps") or (d.startswith("cuda:") and d[5:].isdigit())):
            raise ConfigError(f"{p}.device = {d!r}: choose auto, cpu, cuda, cuda:N or mps")
        if self.device_map not in DEVICE_MAPS:
            raise ConfigError(f"{p}.device_map = {self.device_map!r}: choose one of {list(DEVICE_MAPS)}")


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
        if (why := known_categories_problem(list(self.known_categories))) is not None:
            fail("known_categories", why)
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


def preset_names() -> list[str]:
    """The bridge presets: the TOML files of ``llm_bridge/presets/`` (package data)."""
    return sorted(p.name[:-5] for p in resources.files("llm_bridge.presets").iterdir() if p.name.endswith(".toml"))


def _read_toml(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML ({e})") from None


def preset_table(name: str) -> dict:
    """The table of bridge preset `name`.

    Raises:
        ConfigError: an unknown preset.
    """
    if name not in preset_names():
        raise ConfigError(f"preset = {name!r}: unknown bridge preset; choose one of {preset_names()}")
    return _read_toml(resources.files("llm_bridge.presets").joinpath(f"{name}.toml").read_text(), f"preset {name}")


PRESETS: dict[str, dict] = {name: preset_table(name) for name in preset_names()}


def bridge_config(preset: str = "default", overrides: Sequence[str] = (),
                  config_file: str | Path | None = None) -> BridgeConfig:
    """Defaults <- preset (``llm_bridge/presets/NAME.toml``) <- a TOML file of keys <- dotted
    ``key=value`` overrides, validated.

    Raises:
        ConfigError: unknown preset or key, a missing or unreadable config file, a value of the wrong
            type, an impossible value (each names the key or file).
    """
    cfg = apply_table(BridgeConfig, BridgeConfig(), preset_table(preset))
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"--config = {str(path)!r}: " + ("not a file" if path.exists() else "no such file"))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"--config = {str(path)!r}: cannot be read as UTF-8 text ({e})") from None
        try:
            cfg = apply_table(BridgeConfig, cfg, _read_toml(text, str(path)))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    cfg = apply_overrides(BridgeConfig, cfg, overrides)
    cfg.validate()
    return cfg


def to_toml(cfg: BridgeConfig) -> str:
    """The whole resolved tree as TOML (what ``kgsim bridge config show`` prints; ``--config`` reads it back).

    >>> bridge_config(config_file=None) == bridge_config()
    True
    >>> "[finetune]" in to_toml(bridge_config("gpu"))
    True
    """
    return tomli_w.dumps(to_dict(cfg))


__all__ = ["PRESETS", "BridgeConfig", "DataConfig", "RuntimeConfig", "bridge_config", "preset_names", "preset_table",
           "to_toml"]
