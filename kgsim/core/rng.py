"""One seed, many named and independent random streams.

Every stochastic function in kgsim takes a ``numpy.random.Generator`` (or a ``torch.Generator``)
as an argument; this module is the only place streams are made. Streams are keyed by name, so
adding a new consumer never shifts the numbers an existing one draws.

>>> a = stream(0, "graph").integers(0, 1000, 3)
>>> b = stream(0, "graph").integers(0, 1000, 3)
>>> bool((a == b).all()), bool((a == stream(0, "corpus").integers(0, 1000, 3)).all())
(True, False)
"""
from __future__ import annotations

import hashlib

import numpy as np


def _key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def seed_sequence(seed: int, name: str) -> np.random.SeedSequence:
    """The SeedSequence of stream `name` under `seed` (stable across runs and platforms)."""
    return np.random.SeedSequence([int(seed), _key(name)])


def stream(seed: int, name: str) -> np.random.Generator:
    """A fresh numpy Generator for stream `name` under `seed`."""
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, name)))


def torch_seed(seed: int, name: str) -> int:
    """A 63-bit integer seed for a ``torch.Generator`` of stream `name` under `seed`."""
    return int(seed_sequence(seed, name).generate_state(2, np.uint64)[0] >> np.uint64(1))


def torch_generator(seed: int, name: str, device: str = "cpu"):
    """A seeded ``torch.Generator`` for stream `name` (no global torch state is touched)."""
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(torch_seed(seed, name))
    return g
