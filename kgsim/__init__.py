"""kgsim: a testbed for the factuality gap between fine-tuned language models.

The Python API (the same study as the ``kgsim`` command):

- :func:`kgsim.run` runs the study and returns its run directory;
- :func:`kgsim.load_results` reads a run directory as a tidy pandas table, one row per seed,
  model, stage, split and prompt.

The layers below it, each importing only those under it: :mod:`kgsim.core` (config, random
streams, the graph and edge-set types, I/O), :mod:`kgsim.world` (generators, splits, corpus,
prompts), :mod:`kgsim.nn` (the GPT, training, probing), :mod:`proofs` (the theory),
:mod:`kgsim.study` (the stages, results, report), :mod:`llm_bridge` (Hugging Face models) and
:mod:`kgsim.cli`.
"""
from kgsim.core.version import __version__
from kgsim.study.api import load_results, run

__all__ = ["__version__", "run", "load_results"]
