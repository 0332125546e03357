"""The study layer: the stages as functions of explicit inputs with cached outputs, the runner,
results, statistics, report and figures. Imports every layer below it and :mod:`proofs`.
"""
