"""Do the bridge and the simulator agree? One model, the same facts, the same prompts, both measured.

:func:`agreement` takes a model exported by ``kgsim pretrain`` (``P/hf/``) and its world (``kgsim
graph --out W``, or the world the pretraining cached) and measures, on the same queries with the
same demonstrations:

- **kgsim** (the simulator): prompts built by :mod:`kgsim.world.prompts` as token rows, answered by
  :func:`kgsim.study.lm.answer_and_score` on a kgsim GPT as a :class:`kgsim.nn.probe.KgsimLM` (the one given,
  e.g. the pretrained model in memory or ``P/base.safetensors``; else :func:`kgsim.nn.model.from_hf` of
  the export), 2-hop queries as :func:`kgsim.study.measure.measure_seed` does;
- **the bridge**: the same prompts as text (:class:`llm_bridge.kgsim_tokens.KgsimTokens`), the
  export loaded by :func:`llm_bridge.models.load_model`, answered by Hugging Face generation
  (:func:`llm_bridge.evaluate.answer_prompts`: the first generated token, matched exactly).

Facts: by default the world's ID test facts, a seeded sample of its known facts (exposure at least
``splits.known_min_exposure`` of the world's config, no demonstration facts) and its 2-hop test
queries; k-shot demonstrations come from the world's demonstration pool (kgsim's), 2-hop
demonstrations from the graph's other 2-hop queries of the same composed relation. Both sides run in
float32 unless ``bf16=True``.

>>> format_agreement({"rows": [{"facts": "id", "prompt": "zero-shot", "n": 24, "kgsim": 0.125,
...     "bridge": 0.125, "n_disagree": 0, "n_same_answer": 24, "same_prompt_tokens": True}], "max_abs_diff": 0.0})
'facts  prompt     n   kgsim  bridge  disagree  same answer  same tokens\\nid     zero-shot  24  12.5   12.5    0         24/24        yes\\nlargest difference: 0.00 points'
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from kgsim.core.config import ConfigError, load_config
from kgsim.core.kg import KnowledgeGraph
from kgsim.core.names import COT, DIRECT_TWO_HOP, ID, TWO_HOP, TWO_HOP_PROMPTS, ZERO_SHOT, k_shot_name, shots_of
from kgsim.core.rng import stream
from kgsim.nn.precision import bf16_autocast
from kgsim.nn.probe import KgsimLM, answers
from kgsim.study.lm import answer_and_score
from kgsim.world.prompts import (
    cot_first_hop,
    cot_second_hop,
    direct_two_hop,
    draw_demonstrations,
    k_shot,
    two_hop_demos,
    zero_shot,
)
from kgsim.world.splits import Splits

from .evaluate import EvalConfig, answer_prompts, build_prompts
from .kgsim_tokens import KgsimTokens, kgsim_model
from .models import load_model


class AgreementError(ValueError):
    """The inputs cannot be compared (no kgsim world, facts outside the graph); the message says why."""


def _world(world_dir: str | Path):

    d = Path(world_dir)
    if not (d / "graph.npz").is_file() or not (d / "splits.npz").is_file():
        raise AgreementError(f"world_dir = {str(d)!r}: not a kgsim world directory (graph.npz and splits.npz, "
                             "as `kgsim graph --out DIR` writes)")
    kg = KnowledgeGraph.load(d / "graph.npz")
    min_exposure = 1
    if (d / "config.toml").is_file():
        try:
            min_exposure = load_config(None, d / "config.toml").splits.known_min_exposure
        except ConfigError:
            pass
    return KgsimTokens.from_path(kg, d), Splits.load(d / "splits.npz"), min_exposure


def default_facts(fmt: KgsimTokens, splits, min_exposure: int, n_known: int = 256, seed: int = 0) -> dict:
    """``{"id": the ID test facts, "known": up to n_known known facts (exposure >= min_exposure, not
    demonstrations), "2hop": the 2-hop test rows' indices in kg.two_hop()}`` (seeded sample)."""
    kg = fmt.kg
    demos = np.concatenate(list(splits.demos.values())) if splits.demos else np.zeros(0, np.int64)
    known = np.setdiff1d(np.flatnonzero(kg.exposure >= min_exposure), demos)
    rng = stream(seed, "agreement/known")
    known = np.sort(rng.choice(known, min(n_known, len(known)), replace=False))
    index = {tuple(r): i for i, r in enumerate(fmt.rows.tolist())}
    two = np.array([index[tuple(r)] for r in np.asarray(splits.two_hop).tolist() if tuple(r) in index], np.int64)
    return {ID: np.asarray(splits.test[ID], np.int64), "known": known, TWO_HOP: two}


def _two_hop_demo_rows(fmt: KgsimTokens, queries: np.ndarray, k: int, seed: int) -> np.ndarray:
    """int [n, k]: for each 2-hop query (row index), k other rows of its composed relation."""

    rows = fmt.rows
    pool = np.setdiff1d(np.arange(len(rows)), queries)
    try:
        pick = two_hop_demos(rows[pool], rows[queries, 1], rows[queries, 2], k, stream(seed, "agreement/2hop"))
    except ValueError as e:
        raise AgreementError(f"2-hop demonstrations: {e}") from None
    return pool[pick]


def _kgsim_side(sim, fmt: KgsimTokens, prompt: str, ids: np.ndarray, d: np.ndarray, bf16: bool):
    """(predicted tokens, correct, the prompt's token rows; CoT: its first step) by kgsim alone."""

    kg, v = fmt.kg, fmt.vocab
    if prompt in TWO_HOP_PROMPTS:                            # as kgsim.study.measure.measure_seed
        rows, demo_rows = fmt.rows[ids], fmt.rows[d]
        first = (direct_two_hop if prompt == DIRECT_TWO_HOP else cot_first_hop)(v, rows, demo_rows)
        batch = cot_second_hop(v, first, rows, answers(sim, first, bf16=bf16)) if prompt == COT else first
        guess = answers(sim, batch, bf16=bf16)
        return guess, guess == v.entity(rows[:, 4]), first.tokens
    s, r = kg.s[ids], kg.r[ids]
    batch = zero_shot(v, s, r) if prompt == ZERO_SHOT else k_shot(v, s, r, d, kg)
    guess, correct = answer_and_score(KgsimLM(sim, kg, v, {"bf16": bf16}), batch, ids)
    return guess, correct, batch.tokens


def _demo_ids(fmt: KgsimTokens, splits, name: str, prompt: str, ids: np.ndarray, cot_shots: int,
              seed: int) -> np.ndarray:
    """int [n, k]: the demonstrations of every query (fact ids; 2-hop: rows of kg.two_hop())."""

    if prompt in TWO_HOP_PROMPTS:
        return _two_hop_demo_rows(fmt, ids, cot_shots, seed)
    if prompt == ZERO_SHOT:
        return np.zeros((len(ids), 0), np.int64)
    k = shots_of(prompt)
    try:
        return draw_demonstrations(fmt.kg.r[ids], k, splits.demos, stream(seed, f"agreement/{name}/{k}"), exclude=ids)
    except (KeyError, ValueError) as e:                 # a relation without (enough) demonstrations
        raise AgreementError(f"facts[{name!r}], {prompt}: no demonstrations for relation {e}") from None


def _compare(sim, hf, tok, fmt: KgsimTokens, ecfg: EvalConfig, name: str, prompt: str, ids: np.ndarray,
             examples: list, d: np.ndarray, demos: list, bf16: bool, seed: int) -> dict:
    """One row of :func:`agreement`: both sides on the same queries and demonstrations."""
    guess, ok_sim, tokens = _kgsim_side(sim, fmt, prompt, ids, d, bf16)
    texts, _ = build_prompts(name, prompt, examples, {}, ecfg, seed, fmt, demos=demos)
    outs, ok_bridge = answer_prompts(hf, tok, texts, examples, prompt, ecfg, fmt)
    answer = [o.split()[-1] if o.split() else "" for o in outs]          # CoT: the final token
    return {"facts": name, "prompt": prompt, "n": len(ids), "kgsim": float(ok_sim.mean()),
            "bridge": float(ok_bridge.mean()), "n_disagree": int((ok_sim != ok_bridge).sum()),
            "n_same_answer": int(sum(a == fmt.tokens[g] for a, g in zip(answer, guess))),
            "same_prompt_tokens": tok(texts)["input_ids"] == tokens.tolist()}


def agreement(model_dir: str | Path, world_dir: str | Path, facts: dict | Sequence[int] | None = None, *,
              k_shots: Sequence[int] = (1, 2), cot_shots: int = 1, kgsim_gpt=None, n_known: int = 256,
              seed: int = 0, device: str = "cpu", bf16: bool = False, batch_size: int = 256) -> dict:
    """kgsim's and the bridge's accuracy of one model on the same facts and prompts.

    Args:
        model_dir: a Hugging Face export of a kgsim model (``kgsim pretrain``'s ``hf/``).
        world_dir: its kgsim world directory (graph.npz, splits.npz[, corpus.npz, config.toml]).
        facts: ``{name: fact ids}`` (a ``"2hop"`` entry holds rows of ``kg.two_hop()``), or one
            array of fact ids (named ``"facts"``); default :func:`default_facts`.
        k_shots: the k-shot prompts besides zero-shot; cot_shots: demonstrations of 2-hop prompts.
        kgsim_gpt: the kgsim GPT the simulator runs (default: ``kgsim.nn.model.from_hf`` of the export).
        bf16: bf16 autocast on both sides (default float32 on both).

    Returns:
        ``{"model_dir", "world_dir", "simulator", "dtype", "rows": [{"facts", "prompt", "n", "kgsim",
        "bridge", "n_disagree", "n_same_answer", "same_prompt_tokens"}], "max_abs_diff"}``:
        accuracies as shares; ``n_disagree`` counts queries one side gets right and the other wrong,
        ``n_same_answer`` those where both predict the same token, ``same_prompt_tokens`` whether the
        bridge's prompt text tokenises to exactly kgsim's token rows (CoT: its first step).

    Raises:
        AgreementError: not a world directory, or facts outside the graph.
        ModelDirError: the model's tokenizer is not the world's vocabulary.
    """
    import torch


    fmt, splits, min_exposure = _world(world_dir)
    smallest = min((len(x) for x in splits.demos.values()), default=0)
    if max(k_shots, default=0) > smallest:
        raise AgreementError(f"k_shots = {list(k_shots)}: the world's demonstration pool holds {smallest} facts "
                             "for some relation")
    if facts is None:
        facts = default_facts(fmt, splits, min_exposure, n_known, seed)
    elif not isinstance(facts, dict):
        facts = {"facts": np.asarray(facts, np.int64)}
    hf, tok = load_model(model_dir, dtype="float32", device=device)
    fmt.check_model(tok, getattr(hf.config, "n_positions", None),
                    fmt.prompt_lengths(k_shots, 0, cot_shots if TWO_HOP in facts else None))
    sim = (kgsim_gpt if kgsim_gpt is not None else kgsim_model(hf)).to(device)
    ecfg = EvalConfig(k_shots=tuple(k_shots) or (1,), cot_shots=cot_shots, batch_size=batch_size)
    all_two = fmt.two_hop_examples()
    rows = []
    with bf16_autocast(torch.device(device).type, bf16):      # both sides, products placed alike
        for name, ids in facts.items():
            ids, two_hop = np.asarray(ids, np.int64), name == TWO_HOP
            n_max = len(fmt.rows) if two_hop else fmt.kg.n_facts
            if len(ids) and (ids.min() < 0 or ids.max() >= n_max):
                raise AgreementError(f"facts[{name!r}]: ids outside 0..{n_max - 1}")
            examples = [all_two[i] if two_hop else fmt.example(i) for i in ids]
            for prompt in ([DIRECT_TWO_HOP, COT] if two_hop else [ZERO_SHOT, *map(k_shot_name, k_shots)]):
                if not len(ids):
                    continue
                d = _demo_ids(fmt, splits, name, prompt, ids, cot_shots, seed)
                demos = [[all_two[j] if two_hop else fmt.example(j) for j in row] for row in d]
                rows.append(_compare(sim, hf, tok, fmt, ecfg, name, prompt, ids, examples, d, demos, bf16, seed))
    return {"model_dir": str(Path(model_dir).resolve()), "world_dir": str(Path(world_dir).resolve()),
            "simulator": "given kgsim GPT" if kgsim_gpt is not None else "kgsim.nn.model.from_hf(model_dir)",
            "dtype": "bfloat16 autocast" if bf16 else "float32", "rows": rows,
            "max_abs_diff": max((abs(r["kgsim"] - r["bridge"]) for r in rows), default=0.0)}


def format_agreement(res: dict) -> str:
    """The rows of :func:`agreement` as a plain-text table, accuracies in points."""
    head = ["facts", "prompt", "n", "kgsim", "bridge", "disagree", "same answer", "same tokens"]
    body = [[r["facts"], r["prompt"], str(r["n"]), f"{100 * r['kgsim']:.1f}", f"{100 * r['bridge']:.1f}",
             str(r["n_disagree"]), f"{r['n_same_answer']}/{r['n']}", "yes" if r["same_prompt_tokens"] else "NO"]
            for r in res["rows"]]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in [head, *body]]
    return "\n".join(lines + [f"largest difference: {100 * res['max_abs_diff']:.2f} points"])


__all__ = ["AgreementError", "agreement", "default_facts", "format_agreement"]
