"""The factuality-gap study on real Hugging Face causal LMs (science.md §1), offline and local.

Modules (importing this package loads none of them, nor torch):

- :mod:`llm_bridge.models`     load a local causal LM + tokenizer; tiny Llama-layout models for tests
- :mod:`llm_bridge.generation` batched left-padded greedy / seeded-sampled generation, embeddings
- :mod:`llm_bridge.verbalize`  kgsim graphs <-> questions, answers, statements (versioned templates)
- :mod:`llm_bridge.datasets`   EntityQuestions, PopQA, MMLU-style CSV, synthetic -> :class:`QAExample`
- :mod:`llm_bridge.matching`   normalised exact match and containment, as the datasets score
- :mod:`llm_bridge.prompts`    the one Q/A prompt format: zero-shot, k-shot, CoT, direct 2-hop
- :mod:`llm_bridge.kgsim_tokens` kgsim's own token prompts, for models exported by ``kgsim pretrain``
- :mod:`llm_bridge.agreement`  kgsim vs the bridge on the same facts and prompts of a kgsim export
- :mod:`llm_bridge.known`      SliCK probing in words (the category rule is kgsim's)
- :mod:`llm_bridge.finetune`   Trainer fine-tuning (full / LoRA) with ES and Con. checkpoints
- :mod:`llm_bridge.evaluate`   accessible edges per (model, stage, split, prompt) as kgsim EdgeSets
- :mod:`llm_bridge.config`     the frozen BridgeConfig tree, presets and ``key=value`` overrides
- :mod:`llm_bridge.data`       load a dataset, choose relations, candidates, dev/test and FT sets
- :mod:`llm_bridge.pipeline`   ``run_bridge``: categorise -> fine-tune -> evaluate, cached and resumable

The study's rules (SliCK categories, balanced sets, similarity splits, gaps, cache keys,
provenance) are kgsim's (:mod:`kgsim.core.known`, :mod:`kgsim.core.selection`,
:mod:`kgsim.study.results`, :mod:`kgsim.core.provenance`); this package adapts Hugging Face models
and datasets in words to them.
"""
