"""kgsim: a testbed for the factuality gap between fine-tuned language models."""
__version__ = "0.1.0"
