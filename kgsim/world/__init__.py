"""The world layer (numpy only): graph generators and the TSV loader, splits, corpus, prompts.

Imports only :mod:`kgsim.core`.
"""
