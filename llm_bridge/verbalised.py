"""kgsim's GPT pretrained on a verbalised graph: a natural-language model for the bridge.

``kgsim pretrain`` trains on kgsim's token language (one token per entity), which the bridge reads
with ``data.format = kgsim-tokens``. The bridge's natural-language path (``data.format = text``,
the path real LLMs take: multi-token names, generated answers, answer matching) needs a model that
reads English-like text. :func:`pretrain_verbalised` trains the same GPT with kgsim's own loop
(bf16, resumable bit-identically, safetensors) on the graph said in words
(:func:`llm_bridge.verbalize.pretraining_documents`: subject- and relation-grouped documents,
statements in several forms, question-answer form for a share of the subjects), with a byte-level
BPE tokenizer trained on those documents, and exports it in Hugging Face format. Directory ``out``::

    world/            graph.npz (the named graph: the bridge's ``--data-path``), config.toml (the
                      kgsim configuration), hash.txt, tokenizer/ (the BPE tokenizer)
    train/            kgsim.nn.train's checkpoints and metrics (a killed run resumes from them)
    hf/               GPT2LMHeadModel + tokenizer: the bridge's ``--model``
    pretrain.json     parameters, tokens/s, and the base model's memorisation and extraction
    pretraining.png   the loss curve and the memorisation curve (accuracy by times shown)

From the command line::

    kgsim bridge pretrain --preset default --set model.n_ctx=128 --out P
    kgsim bridge run --model P/hf --data synthetic --data-path P/world --out R

The graph, its entity names, the QA subjects and the documents each come from their own named
stream of ``cfg.seed``; the same configuration gives the same files.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from kgsim.core import rng as rngs
from kgsim.core.config import ExperimentConfig, to_toml
from kgsim.core.io import atomic_dir, write_json
from kgsim.core.kg import KnowledgeGraph
from kgsim.core.provenance import content_hash
from kgsim.nn.model import build_model, to_hf
from kgsim.nn.train import TokenRows, train
from kgsim.study.memorisation import memorisation_table
from kgsim.world.graph import generate
from kgsim.world.plots import plot_pretraining
from kgsim.world.splits import assign_qa_subjects

from .generation import generate as generate_text
from .matching import is_correct
from .models import build_tokenizer, load_tokenizer
from .prompts import zero_shot
from .verbalize import Verbalizer, name_graph, pretraining_documents


class VerbalisedError(ValueError):
    """``out`` holds another configuration's run, or the model cannot hold the documents."""


def config_hash(cfg: ExperimentConfig, vocab_size: int) -> str:
    """Hash of what decides the pretrained model: the graph, corpus, model and pretrain sections, the
    seed and the BPE vocabulary size (other sections, e.g. finetune, may change freely)."""
    return content_hash({"sections": cfg.section_hash("graph", "corpus", "model", "pretrain"),
                         "vocab_size": vocab_size, "version": 1})


def verbalised_graph(cfg: ExperimentConfig) -> tuple[KnowledgeGraph, np.ndarray]:
    """The configured graph with entity and relation names, and the QA-subject mask (as kgsim's
    world draws it: the same graph and QA subjects as ``kgsim graph`` for the same config)."""
    kg = generate(cfg.graph, rngs.stream(cfg.seed, "graph"))
    kg = name_graph(kg, rngs.stream(cfg.seed, "names"))
    qa = assign_qa_subjects(kg.n_entities, cfg.corpus.qa_subject_share, rngs.stream(cfg.seed, "qa-subjects"))
    return kg, qa


def document_rows(docs: list[str], tokenizer, n_ctx: int) -> TokenRows:
    """Documents, each followed by EOS, concatenated and cut into rows of `n_ctx` tokens (the tail
    padded with the pad id, which must be 0, as kgsim.nn.train's rows require)."""
    if tokenizer.pad_token_id != 0:
        raise VerbalisedError(f"tokenizer pad id = {tokenizer.pad_token_id}: kgsim.nn.train rows pad with id 0")
    ids = tokenizer([d + tokenizer.eos_token for d in docs], add_special_tokens=False)["input_ids"]
    return TokenRows.from_stream(np.fromiter((t for doc in ids for t in doc), dtype=np.int64), n_ctx)


def pretrain_verbalised(cfg: ExperimentConfig, out: str | Path, *, vocab_size: int = 2048, device: str = "auto",
                        probe_facts: int = 2000, progress: bool = True,
                        log: Callable[[str], None] = print) -> dict:
    """Pretrain kgsim's GPT (``cfg.model``, ``cfg.pretrain``) on the verbalised graph of ``cfg``
    and export it to ``out/hf``; returns (and writes) the ``pretrain.json`` summary. A finished run
    returns its summary at once; a killed one resumes from its last checkpoint.

    Args:
        vocab_size: the BPE vocabulary (special tokens included).
        device: "auto" (CUDA when available), "cpu", "cuda", ...
        probe_facts: facts (a seeded sample) whose statement and zero-shot QA answers are generated
            for the memorisation table; 0 skips it.

    Raises:
        VerbalisedError: ``out`` holds a run of another configuration, or other files.
    """
    out = Path(out)
    h = config_hash(cfg, vocab_size)
    world = out / "world"
    if (out / "pretrain.json").is_file() and (done := json.loads((out / "pretrain.json").read_text()))["config_hash"] == h:
        return done
    if (world / "hash.txt").is_file():
        if (old := (world / "hash.txt").read_text().strip()) != h:
            raise VerbalisedError(f"out = {str(out)!r}: holds a run of another configuration (hash {old}, this "
                                  f"one {h}); choose another --out")
    elif out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise VerbalisedError(f"out = {str(out)!r}: not empty and not a verbalised pretraining run")
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device

    kg, qa = verbalised_graph(cfg)
    vb = Verbalizer.from_graph(kg)
    docs = pretraining_documents(kg, vb, rngs.stream(cfg.seed, "verbalised-corpus"),
                                 facts_per_doc=cfg.corpus.facts_per_doc, qa_subjects=qa,
                                 relation_doc_share=cfg.corpus.relation_doc_share)
    if not (world / "hash.txt").is_file():
        with atomic_dir(world) as tmp:                   # graph, config and tokenizer appear together
            kg.save(tmp / "graph.npz")
            (tmp / "config.toml").write_text(to_toml(cfg))
            build_tokenizer(docs, vocab_size).save_pretrained(str(tmp / "tokenizer"))
            (tmp / "hash.txt").write_text(h + "\n")
    tokenizer = load_tokenizer(world / "tokenizer")
    rows = document_rows(docs, tokenizer, cfg.model.n_ctx + 1)
    model = build_model(cfg.model, len(tokenizer), seed=cfg.seed).to(dev)
    log(f"pretraining {model.n_params():,} parameters on {dev}: {len(docs):,} documents, "
        f"{int(rows.loss_mask.sum()):,} target tokens in {rows.n_rows:,} rows")
    res = train(model, rows, cfg.pretrain, out / "train", seed=cfg.seed, name="pretrain-verbalised",
                progress=progress)
    model.eval()
    hf = to_hf(model, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id).to(dev)
    summary = {"config_hash": h, "params": model.n_params(), "device": dev, "vocab_size": len(tokenizer),
               "n_docs": len(docs), "n_target_tokens": int(rows.loss_mask.sum()),
               "pretrain": {"steps": res.final_step, "tokens_per_s": res.tokens_per_s, "wall_s": res.wall_time_s},
               "base": base_accuracy(hf, tokenizer, kg, vb, qa, probe_facts, cfg.seed) if probe_facts else None}
    with atomic_dir(out / "hf") as tmp:
        hf.cpu().save_pretrained(str(tmp))
        tokenizer.model_max_length = cfg.model.n_ctx
        tokenizer.save_pretrained(str(tmp))
    if summary["base"]:

        plot_pretraining(out / "train" / "metrics.jsonl", summary["base"], out / "pretraining.png")
    write_json(out / "pretrain.json", summary)
    return summary


@torch.no_grad()
def base_accuracy(hf, tokenizer, kg: KnowledgeGraph, vb: Verbalizer, qa_subjects: np.ndarray, n: int,
                  seed: int, batch_size: int = 256) -> dict:
    """On a seeded sample of `n` facts: statement completion (``'<s> was born in'`` -> the answer)
    and zero-shot QA accuracy by exposure bucket, and the extraction rate (zero-shot QA accuracy on
    facts of statement-only subjects that the model completes as statements), by kgsim's rule
    (:func:`kgsim.study.memorisation.memorisation_table`; an empty mean is None)."""
    idx = np.sort(rngs.stream(seed, "verbalised-probe").choice(kg.n_facts, min(n, kg.n_facts), replace=False))
    prefixes, answers = [], []
    for i in idx.tolist():
        s, r = int(kg.s[i]), int(kg.r[i])
        form = next(f for f in vb.relations[r].statements if f.rstrip(".").endswith("{a}"))
        prefixes.append(form.split("{a}")[0].replace("{s}", vb.name(s)).rstrip())
        answers.append(tuple(vb.name(x) for x in kg.answers(s, r)))
    st = generate_text(hf, tokenizer, prefixes, max_new_tokens=12, batch_size=batch_size)
    qa = generate_text(hf, tokenizer, [zero_shot(vb.question(int(kg.s[i]), int(kg.r[i]))) for i in idx],
                       max_new_tokens=12, batch_size=batch_size)
    ok_st = np.array([is_correct(t.split(".")[0], a) for t, a in zip(st, answers)], bool)
    ok_qa = np.array([is_correct(t, a) for t, a in zip(qa, answers)], bool)
    exp, plain = kg.exposure[idx], ~qa_subjects[kg.s[idx]]
    known_qa = ok_qa[~plain & (exp > 0)]
    return {"n_facts": len(idx), **memorisation_table(exp, ok_st, ok_qa, plain, missing=None),
            "qa_acc_qa_subjects": float(known_qa.mean()) if len(known_qa) else None}


__all__ = ["VerbalisedError", "base_accuracy", "config_hash", "document_rows", "pretrain_verbalised",
           "verbalised_graph"]
