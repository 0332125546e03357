"""What made an artefact and where it ran: content hashes (cache keys) and the environment record.

Every cached stage of both families is keyed by :func:`content_hash` of what made it, and every
run directory (``kgsim run``'s results.json, ``kgsim bridge run``'s run.json and results.json)
records :func:`environment`.

>>> content_hash({"b": 1, "a": [1, 2]}) == content_hash({"a": [1, 2], "b": 1})
True
>>> len(content_hash(["model", 3])), content_hash(("model", 3)) == content_hash(["model", 3])
(16, True)
>>> sorted(environment())[:4]
['accelerate', 'argv', 'git_commit', 'git_dirty']
"""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import platform
import subprocess
import sys
from pathlib import Path

from kgsim.core.version import __version__

PACKAGES = ("torch", "transformers", "peft", "accelerate", "numpy")


def content_hash(obj, n: int = 16) -> str:
    """The first `n` hex digits of the SHA-256 of `obj` as canonical JSON (keys sorted; what JSON
    cannot hold is written as ``str``): equal inputs give equal keys across processes and runs."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _version(package: str) -> str | None:
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return None


def git_state(where: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout holding `where` (default: this package); (None, None)
    outside one or without git."""
    cwd = Path(where) if where is not None else Path(__file__).parent
    try:
        git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True, cwd=cwd,  # noqa: E731
                                        timeout=5).stdout.strip()
        return git("rev-parse", "HEAD") or None, bool(git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return None, None


def environment() -> dict:
    """kgsim's version, Python's, the installed versions of torch, transformers, peft, accelerate
    and numpy (None when absent), the platform, the git commit (and whether the tree was dirty) and
    the command line."""
    commit, dirty = git_state()
    return {"kgsim": __version__, "python": sys.version.split()[0], **{p: _version(p) for p in PACKAGES},
            "platform": platform.platform(), "git_commit": commit, "git_dirty": dirty, "argv": sys.argv}


__all__ = ["PACKAGES", "content_hash", "environment", "git_state"]
