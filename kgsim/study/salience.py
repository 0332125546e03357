"""Factual salience measured from a trained one-layer attention-only model, and how well it predicts lost edges.

Salience. science.md defines S(s, r, a) = φ(a)ᵀ W_V φ(s): how far the value vector the subject token
writes points at its answer. In kgsim's one-layer attention-only GPT (:mod:`kgsim.nn.model`) the
answer is read at the last position of ``<bos> <q> s Q <a>``; its residual stream is
z = x_last + Σ_h Σ_j α_h[j] · (W_O^h W_V^h LN_1(x_j) + W_O^h b_V^h) + b_O with x_j = wte[tok_j] + wpe[j],
and the logit of token a is wte[a] · ln_f(z) (tied unembedding). The direct value-path contribution of
the subject (position ``pos``) through head h, per unit of attention, is therefore

    S_h(s, a) = (γ_f ⊙ wte[a])ᵀ · P · W_O^h W_V^h · LN_1(wte[s] + wpe[pos])

and S(s, a) = Σ_h S_h(s, a) (every head's value path at full attention on the subject: the theory's
single W_V). How the two LayerNorms are handled:

- LN_1 (input side) is applied exactly: it acts on each token's own vector, so LN_1(wte[s] + wpe[pos])
  depends on s and the position alone.
- ln_f (output side) acts on the whole residual sum z, so it is not linear. Writing
  ln_f(z) = γ_f ⊙ P z / σ(z) + β_f with P = I − 11ᵀ/C (centring, linear), the gain γ_f and P are
  folded into the unembedding; the bias β_f is dropped (it adds wte[a]·β_f to every prompt's logit of
  a, whatever the subject); the scale 1/σ(z) is dropped: it is one positive number per prompt, shared
  by all vocabulary entries, and depends on everything in the stream, not on (s, a). S is thus in
  units of σ(z): the exact logit contribution of the subject's value path at the prompt is
  Σ_h α_h[pos] · S_h / σ(z) (:func:`direct_logit_attribution` computes it; the parts over all
  positions plus the bias terms add up to the model's logit).
- The value bias b_V is no part of any token's contribution: attention rows sum to 1, so it adds
  W_O^h b_V^h to the stream whatever is attended.

Prediction. :func:`auroc` scores how well a score ranks positives above negatives (Mann-Whitney:
P(score of a positive > score of a negative) + ½ P(tie)); :func:`bootstrap_auroc` gives a percentile
interval from resampling facts with replacement within each class (stratified, so every resample has
both classes), from an explicit ``numpy.random.Generator`` (it collapses when a class has one or two
facts: :func:`hanley_mcneil` gives a normal-approximation interval that does not); :func:`loss_prediction` asks whether low
salience on the base model predicts that a fact correct on the base model is wrong after fine-tuning
(AUROC of −S for "lost"; 0.5: no information, above 0.5: low salience goes with loss, as the theory
says). :func:`t_interval` is the across-seed mean with a Student-t interval.
"""
from __future__ import annotations

import numpy as np

from kgsim.study.stats import t_interval as _student_t

__all__ = ["value_output", "salience", "direct_logit_attribution", "auroc", "bootstrap_auroc", "hanley_mcneil",
           "loss_prediction", "t_interval"]


def _one_layer_attention_only(model) -> None:
    cfg = getattr(model, "cfg", None)
    if cfg is None or not (cfg.attention_only and cfg.n_layers == 1):
        got = None if cfg is None else (cfg.attention_only, cfg.n_layers)
        raise ValueError(f"model (attention_only, n_layers) = {got}: salience is defined here for kgsim's "
                         f"one-layer attention-only GPT only")


def value_output(model):
    """The per-head value-output maps W_O^h W_V^h of a one-layer attention-only GPT: float64 [H, C, C]
    (``out[h] @ u`` is what head h writes into the stream for a fully attended LN_1 output u, less the
    value and output biases). Raises ValueError for another architecture."""
    import torch

    _one_layer_attention_only(model)
    attn = model.h[0].attn
    H, D = attn.n_heads, attn.d_head
    C = H * D
    with torch.no_grad():
        w_v = attn.c_attn.weight[2 * C:].double()                  # [C_out, C_in]: v = W_v x + b_v
        w_o = attn.c_proj.weight.double()                          # [C_out, C_in]: y = W_o v + b_o
        w_v = w_v.view(H, D, C)                                    # [H, D, C]: head h's rows of W_v
        w_o = w_o.view(C, H, D).permute(1, 0, 2)                   # [H, C, D]: head h's columns of W_o
        return (w_o @ w_v).numpy()                                 # [H, C, C]


def salience(model, subjects, answers, position: int = 2, per_head: bool = False) -> np.ndarray:
    """Measured salience S(s, a) of token pairs (see the module docstring for the formula and the LayerNorms).

    ``subjects``, ``answers``: int token ids [n] (vocabulary ids, not entity ids); ``position``: the
    subject's position in the prompt (2 in ``<bos> <q> s Q <a>``). Returns float64 [n] (summed over
    heads) or, with ``per_head``, [n, H]. Raises ValueError on ids out of the vocabulary, a position
    outside n_ctx, or a model that is not one-layer attention-only."""
    import torch

    ov = value_output(model)                                       # [H, C, C]
    s, a = np.asarray(subjects, np.int64), np.asarray(answers, np.int64)
    if s.shape != a.shape or s.ndim != 1:
        raise ValueError(f"subjects {s.shape} and answers {a.shape} must be 1-d of one length")
    V = model.vocab_size
    if s.size and (min(s.min(), a.min()) < 0 or max(s.max(), a.max()) >= V):
        raise ValueError(f"token ids out of range: vocabulary size {V}")
    if not 0 <= position < model.cfg.n_ctx:
        raise ValueError(f"position = {position}: must lie in [0, n_ctx = {model.cfg.n_ctx})")
    with torch.no_grad():
        wte, wpe = model.wte.weight.double(), model.wpe.weight.double()
        x = _ln(model.h[0].ln_1, wte[torch.as_tensor(s)] + wpe[position]).numpy()       # [n, C]: LN_1 exact
        u = (wte[torch.as_tensor(a)] * model.ln_f.weight.double()).numpy()               # [n, C]: γ_f ⊙ wte[a]
    u = u - u.mean(axis=1, keepdims=True)                          # uᵀ P = (P u)ᵀ: ln_f's centring
    per = np.einsum("nc,hcd,nd->nh", u, ov, x)                     # [n, H]
    return per if per_head else per.sum(axis=1)


def _ln(ln, x):
    """LayerNorm module `ln` applied to x in float64 (the module itself is left as it is)."""
    import torch.nn.functional as F

    return F.layer_norm(x.double(), ln.normalized_shape, ln.weight.double(), ln.bias.double(), ln.eps)


def direct_logit_attribution(model, tokens) -> dict:
    """The logit of each vocabulary entry at the last position, split into what each key position's
    value path writes and the rest (exact, with ln_f's scale σ taken at each prompt's own value).

    ``tokens``: int [n, T]. Returns float64 arrays {"positions": [n, T, V] (Σ_h α_h[j] · S_h(tok_j, ·)
    / σ, S_h as in :func:`salience` at position j), "rest": [n, V] (the last token's own skip path
    x_last, the value and output biases W_O b_V + b_O, through ln_f, and ln_f's bias β_f), "logits":
    [n, V] (the model's own), "sigma": [n] (σ(z) of the last position)}. ``positions.sum(1) + rest``
    equals ``logits`` to float rounding: every part is computed separately, nothing is a remainder."""
    import torch

    ov = value_output(model)                                                             # [H, C, C]
    model.eval()
    block, attn = model.h[0], model.h[0].attn
    C = model.cfg.d_model
    idx = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    with torch.no_grad():
        logits = model(idx)[:, -1].double().numpy()                                      # [n, V]
        x = model.wte(idx) + model.wpe(torch.arange(idx.shape[1]))                       # [n, T, C]
        _, att = attn(block.ln_1(x), need_weights=True)                                  # [n, H, T, T]
        alpha = att[:, :, -1, :].double().numpy()                                        # [n, H, T]
        ln1 = _ln(block.ln_1, x).numpy()                                                 # [n, T, C]
        bias = (attn.c_proj.weight.double() @ attn.c_attn.bias[2 * C:].double()
                + attn.c_proj.bias.double()).numpy()                                     # [C]: W_O b_V + b_O
        x_last = x[:, -1].double().numpy()                                               # [n, C]
        gain, beta = model.ln_f.weight.double().numpy(), model.ln_f.bias.double().numpy()
        wte = model.wte.weight.double().numpy()                                          # [V, C]
    per_pos = np.einsum("nht,hcd,ntd->ntc", alpha, ov, ln1)                              # [n, T, C]
    rest_stream = x_last + bias                                                          # [n, C]
    z = per_pos.sum(axis=1) + rest_stream                                                # [n, C]: the stream
    sigma = np.sqrt(z.var(axis=1) + model.ln_f.eps)                                      # [n]
    u = wte * gain
    u = u - u.mean(axis=1, keepdims=True)                                                # [V, C]: P (γ_f ⊙ wte)
    positions = np.einsum("ntc,vc->ntv", per_pos, u) / sigma[:, None, None]              # [n, T, V]
    rest = rest_stream @ u.T / sigma[:, None] + wte @ beta                               # [n, V]
    return {"positions": positions, "rest": rest, "logits": logits, "sigma": sigma}


# --------------------------------------------------------------------------------------------
# Prediction: AUROC, its bootstrap interval, and across-seed intervals
# --------------------------------------------------------------------------------------------

def _check_binary(score, label) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(score, np.float64), np.asarray(label)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"score {x.shape} and label {y.shape} must be 1-d of one length")
    if not np.isfinite(x).all():
        raise ValueError("score has non-finite values")
    return x, y.astype(bool)


def auroc(score, label) -> float:
    """Area under the ROC curve of `score` for the positives of `label` (bool [n]): the Mann-Whitney
    probability that a positive scores above a negative, ties counting ½. NaN without both classes.

    >>> auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    0.75
    """
    from scipy.stats import rankdata

    x, y = _check_binary(score, label)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(x)                                            # average ranks for ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_auroc(score, label, rng: np.random.Generator, n_boot: int = 2000,
                    level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`auroc`: resample positives and negatives with
    replacement, each class to its own size (stratified), ``n_boot`` times, from `rng`. Returns
    (low, high); (NaN, NaN) without both classes. Raises ValueError on n_boot < 1 or level outside (0, 1)."""
    from scipy.stats import rankdata

    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"n_boot = {n_boot}, level = {level}: need n_boot >= 1 and 0 < level < 1")
    x, y = _check_binary(score, label)
    pos, neg = x[y], x[~y]
    if not (pos.size and neg.size):
        return float("nan"), float("nan")
    p = pos[rng.integers(0, pos.size, (n_boot, pos.size))]         # [n_boot, n_pos]
    q = neg[rng.integers(0, neg.size, (n_boot, neg.size))]         # [n_boot, n_neg]
    ranks = rankdata(np.concatenate([p, q], axis=1), axis=1)       # [n_boot, n_pos + n_neg]
    stats = (ranks[:, :pos.size].sum(1) - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size)
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def hanley_mcneil(a: float, n_pos: int, n_neg: int, level: float = 0.95) -> tuple[float, float]:
    """Hanley & McNeil's (1982) normal interval for an AUROC `a` from n_pos positives and n_neg negatives:
    a ± z·SE, SE² = [a(1−a) + (n_pos−1)(Q1−a²) + (n_neg−1)(Q2−a²)] / (n_pos·n_neg), Q1 = a/(2−a),
    Q2 = 2a²/(1+a) (an exponential-score approximation), clipped to [0, 1]. Unlike a bootstrap it stays
    wide when a class has one or two members (a bootstrap of one member always redraws it).

    >>> [round(x, 3) for x in hanley_mcneil(0.8, 20, 30)]
    [0.668, 0.932]
    """
    from scipy.stats import norm

    if not (n_pos >= 1 and n_neg >= 1 and 0 <= a <= 1 and 0 < level < 1):
        raise ValueError(f"a = {a}, n_pos = {n_pos}, n_neg = {n_neg}, level = {level}: need a in [0, 1], "
                         f"both counts >= 1, 0 < level < 1")
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = np.sqrt(max(a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a), 0.0) / (n_pos * n_neg))
    z = norm.ppf((1 + level) / 2)
    return float(max(0.0, a - z * se)), float(min(1.0, a + z * se))


def loss_prediction(sal, correct_before, correct_after, rng: np.random.Generator, n_boot: int = 2000,
                    level: float = 0.95) -> dict:
    """Does low salience predict a lost edge? Among facts with ``correct_before`` (bool [n]), "lost" =
    not ``correct_after``; the AUROC of −``sal`` for lost (above 0.5: lower salience goes with loss)
    with :func:`bootstrap_auroc`'s interval ("low", "high") and :func:`hanley_mcneil`'s ("hm_low",
    "hm_high"; the one to read when a class has only a few facts) and the mean of `sal` over lost and kept
    facts ("mean_lost", "mean_kept"). Returns a JSON-ready dict; the AUROC and its intervals are None
    where there are no lost or no kept facts."""
    s = np.asarray(sal, np.float64)
    c0, c1 = np.asarray(correct_before, bool), np.asarray(correct_after, bool)
    if not (s.shape == c0.shape == c1.shape):
        raise ValueError(f"sal {s.shape}, correct_before {c0.shape}, correct_after {c1.shape} must agree")
    s, lost = s[c0], ~c1[c0]
    a = auroc(-s, lost)
    lo, hi = bootstrap_auroc(-s, lost, rng, n_boot, level)
    ok = np.isfinite(a)
    hm = hanley_mcneil(a, int(lost.sum()), int((~lost).sum()), level) if ok else (None, None)
    return {"direction": "low salience predicts loss (AUROC of -salience for lost)",
            "interval": f"{level:.0%} percentile bootstrap over facts, stratified by class, {n_boot} resamples",
            "n_correct_before": int(c0.sum()), "n_lost": int(lost.sum()), "n_kept": int((~lost).sum()),
            "auroc": float(a) if ok else None, "low": lo if ok else None, "high": hi if ok else None,
            "hm_low": hm[0], "hm_high": hm[1], "hm_interval": f"{level:.0%} Hanley-McNeil (normal approximation)",
            "mean_lost": float(s[lost].mean()) if lost.any() else None,
            "mean_kept": float(s[~lost].mean()) if (~lost).any() else None}


def t_interval(values, level: float = 0.95) -> dict:
    """Mean of `values` (None entries left out) with a Student-t interval
    (:func:`kgsim.study.stats.t_interval`) as JSON-ready {"mean", "low", "high", "n", "values"}; low/high
    are None with fewer than 2 values, everything None with none."""
    v = [float(x) for x in values if x is not None]
    iv = _student_t(v, level)
    ok = lambda x: None if x != x else x  # noqa: E731 - NaN -> None
    return {"n": len(v), "values": v, "mean": ok(iv["mean"]), "low": ok(iv["lo"]), "high": ok(iv["hi"])}
