"""Shared test setup: offline, single-threaded torch, Hypothesis profiles, the test tiers.

Tiers (markers in pyproject.toml): ``slow`` marks full smoke runs and long trainings; the quick tier
is ``python -m pytest -n 2 -m "not slow"``, and ``python -m pytest -n 2`` runs every tier. ``gpu``
marks tests that need a CUDA device: they are skipped where torch sees none. Under pytest-xdist
(``--dist loadgroup`` in pyproject's addopts) the slow tests of one module run on one worker, so the
module-scoped fixture they share (a smoke run, a pretraining) is made once, not once per worker.
"""
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from hypothesis import HealthCheck, settings

# Property tests draw the same examples on every run and machine (derandomize): a suite that passed
# cannot fail by chance. HYPOTHESIS_PROFILE=hunt draws fresh random examples, many of them, to look
# for new failures; each one found is pinned as an @example beside its test.
settings.register_profile("dev", max_examples=50, deadline=None, derandomize=True, database=None)
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("hunt", max_examples=2000, deadline=None, derandomize=False,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


def _cuda() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return torch.cuda.is_available()


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") is not None and not _cuda():
        pytest.skip("marker gpu: needs a CUDA device, and torch sees none")


@pytest.hookimpl(tryfirst=True)            # before xdist reads the groups (xdist/remote.py)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(Path(item.nodeid.split("::")[0]).stem))
