"""The model layer (torch): the GPT, its training loop, probing, the Hugging Face export.

Imports :mod:`kgsim.world` and :mod:`kgsim.core`.
"""
