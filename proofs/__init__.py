"""The theory of the factuality gap (science.md §2) as checkable statements.

- :mod:`proofs.statements`: one pure check per statement -> :class:`proofs.core.CheckResult`;
  ``check_run``, ``format_table`` and ``TwoHopEvidence`` (defined in :mod:`proofs.run`).
- :mod:`proofs.strategies`: Hypothesis strategies (graphs, test sets, edge sets, prompts).
- :mod:`proofs.counterexamples`: shrunk counterexamples for dropped assumptions.
- :mod:`proofs.one_layer`: the one-layer attention model (salience, attention imbalance).
"""
