"""ConfigError and the one-line value checks every config section uses (kgsim.core.config): each
raises ConfigError naming the key, its value and what it must be.

>>> for check, key, value in ((positive, "run.workers", 0), (fraction, "finetune.unknown_share", 1.5)):
...     try:
...         check(key, value)
...     except ConfigError as e:
...         print(e)
run.workers = 0: must be >= 1
finetune.unknown_share = 1.5: must lie in [0, 1]
"""
from __future__ import annotations

import typing
from typing import Any

__all__ = ["ConfigError", "fail", "finite", "positive", "nonneg", "fraction", "one_of"]


class ConfigError(ValueError):
    """A configuration key holds a value kgsim cannot use. The message names key and value."""


def fail(key: str, value: Any, why: str) -> typing.NoReturn:
    raise ConfigError(f"{key} = {value!r}: {why}")


def finite(key: str, v: float, minimum: float | None = None, open_low: bool = False) -> None:
    if v != v or v in (float("inf"), float("-inf")):
        fail(key, v, "must be a finite number")
    if minimum is not None and (v < minimum or (open_low and v == minimum)):
        fail(key, v, f"must be {'>' if open_low else '>='} {minimum}")


def positive(key: str, v: int, minimum: int = 1) -> None:
    if v < minimum:
        fail(key, v, f"must be >= {minimum}")


def nonneg(key: str, v: int) -> None:
    if v < 0:
        fail(key, v, "must be >= 0")


def fraction(key: str, v: float, open_low: bool = False, open_high: bool = False) -> None:
    finite(key, v)
    lo_ok = v > 0 if open_low else v >= 0
    hi_ok = v < 1 if open_high else v <= 1
    if not (lo_ok and hi_ok):
        lo, hi = "(" if open_low else "[", ")" if open_high else "]"
        fail(key, v, f"must lie in {lo}0, 1{hi}")


def one_of(key: str, v: Any, options: tuple) -> None:
    if v not in options:
        fail(key, v, "must be " + (" or ".join(map(repr, options)) if len(options) == 2 else
                                   f"one of {', '.join(map(repr, options))}"))
