"""The Ghosal-style one-layer attention model: factual salience and attention imbalance.

Model (Ghosal, Hashimoto, Raghunathan 2024, in the testbed's notation). A query (s, r) is two
tokens, x_s = φ(s) + p_subj and x_r = φ(r) + p_rel (token embedding plus a role embedding shared by
all facts). The prediction position (the relation token) attends to both with logits
z_t = x_tᵀ B x_r, α = softmax(z); its output is h = α_s·W_V x_s + α_r·W_V x_r, and the answer
is argmax_a φ(a)ᵀ h over all entities' (tied) unembeddings. The factual salience of a fact is
S(s, r, a) = φ(a)ᵀ W_V φ(s): how much the subject's value vector points at its answer.

Pretrained state, built directly: W_V maps each *known* subject to its answer with salience drawn
from ``salience_known`` and each *unknown* subject with ``salience_unknown`` (0: nothing stored),
and maps each relation to its plausible answers (its answer pool, the most common answer
strongest: the "generic" answer). B = 0, so attention is split evenly.

Fine-tuning: full-batch gradient descent on the cross-entropy of a set of high-salience (FT-Known)
or low-salience (FT-Unknown) facts, updating B and (``train_value``) W_V. Measured on held-out known
facts: the attention mass on the subject token, and the accessible edges (argmax correct).
The claim (science.md §2): steps on low-salience facts move attention from the subject to the
relation token, and the model then answers held-out known facts generically (loses edges).
:func:`simulate` reports what happens, whichever way it goes.

For a trained model (kgsim's one-layer attention-only model, or any other), :func:`attention_shift`
takes measured attention weights and correctness arrays, and :func:`check_attention_shift` compares
a measured shift with the simulated one.

>>> res = simulate(OneLayerConfig(subjects_per_relation=16, n_finetune=8, steps=20))
>>> sorted(res.runs)
['ft-known', 'ft-unknown']
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kgsim.core.rng import stream

from .core import CheckResult, result


@dataclass(frozen=True)
class OneLayerConfig:
    """The simulated world and fine-tuning. Raises ValueError (naming the field) from validate()."""

    n_relations: int = 4
    subjects_per_relation: int = 64          # half known, half unknown
    answers_per_relation: int = 8            # each relation's answer pool; answer 0 is the generic one
    generic_share: float = 0.3               # share of a relation's facts answered by its generic answer
    d_model: int = 128
    salience_known: tuple[float, float] = (3.0, 8.0)   # S of known facts, uniform in this range
    salience_unknown: float = 0.0
    relation_strength: float = 2.0           # φ(a)ᵀ W_V φ(r) of the generic answer (others: a third)
    n_finetune: int = 32                     # facts per fine-tuning set
    steps: int = 100
    lr: float = 1.0
    train_value: bool = True
    seed: int = 0

    def validate(self) -> "OneLayerConfig":
        for name in ("n_relations", "subjects_per_relation", "d_model", "n_finetune", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"one_layer.{name} = {getattr(self, name)!r}: must be at least 1")
        if self.answers_per_relation < 2:
            raise ValueError(f"one_layer.answers_per_relation = {self.answers_per_relation!r}: need at least 2")
        if not 0.0 <= self.generic_share <= 1.0:
            raise ValueError(f"one_layer.generic_share = {self.generic_share!r}: must lie in [0, 1]")
        lo, hi = self.salience_known
        if not lo <= hi:
            raise ValueError(f"one_layer.salience_known = {self.salience_known!r}: need low <= high")
        if self.lr <= 0:
            raise ValueError(f"one_layer.lr = {self.lr!r}: must be positive")
        known_pool = self.n_relations * (self.subjects_per_relation // 2)
        if 2 * self.n_finetune > known_pool:
            raise ValueError(f"one_layer.n_finetune = {self.n_finetune}: needs 2·n_finetune ≤ {known_pool} "
                             f"known facts (one FT set and held-out test facts)")
        return self


# --------------------------------------------------------------------------------------------
# Attention measurements (for the simulation and for any trained model)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttentionShift:
    """Mean attention mass on subject and relation tokens and accessible edges, before and after."""

    subject_before: float
    subject_after: float
    relation_before: float
    relation_after: float
    edges_before: int
    edges_after: int
    edges_gained: int
    edges_lost: int
    n: int

    @property
    def shift(self) -> float:
        """Change of the mean attention mass on the subject (negative: towards the relation)."""
        return self.subject_after - self.subject_before

    @property
    def edge_change(self) -> int:
        return self.edges_after - self.edges_before


def attention_mass(attn, subject_mask, relation_mask) -> tuple[np.ndarray, np.ndarray]:
    """Per-fact attention mass on subject and relation tokens.

    ``attn``: float [n_facts, ..., n_keys], the attention of the answer-predicting position over
    key positions (middle axes, e.g. heads, are averaged). ``subject_mask`` / ``relation_mask``:
    bool [n_keys] or [n_facts, n_keys], the key positions of subject and relation tokens.
    Returns (subject, relation), float [n_facts] each. Raises ValueError on shape mismatch.

    >>> s, r = attention_mass(np.array([[0.7, 0.2, 0.1]]), np.array([1, 0, 0], bool), np.array([0, 1, 0], bool))
    >>> float(s[0]), float(r[0])
    (0.7, 0.2)
    """
    a = np.asarray(attn, np.float64)
    if a.ndim < 2:
        raise ValueError(f"attn must be [n_facts, ..., n_keys], got shape {a.shape}")
    a = a.reshape(a.shape[0], -1, a.shape[-1]).mean(axis=1)          # [n_facts, n_keys]
    out = []
    for name, m in (("subject_mask", subject_mask), ("relation_mask", relation_mask)):
        m = np.broadcast_to(np.asarray(m, bool), a.shape) if np.ndim(m) == 1 else np.asarray(m, bool)
        if m.shape != a.shape:
            raise ValueError(f"{name} has shape {m.shape}, attention is {a.shape}")
        out.append((a * m).sum(axis=1))
    return out[0], out[1]


def attention_shift(attn_before, attn_after, subject_mask, relation_mask, correct_before, correct_after,
                    subject_mask_after=None, relation_mask_after=None) -> AttentionShift:
    """Summarise measured attention and correctness on the same facts before and after fine-tuning.

    ``attn_*`` as in :func:`attention_mass`; ``correct_*`` bool [n_facts] (the accessible edges);
    the ``*_mask_after`` default to the masks before. Works for any model whose attention weights
    can be read out, e.g. kgsim's one-layer attention-only model.

    >>> sh = attention_shift([[0.5, 0.5]], [[0.2, 0.8]], [True, False], [False, True], [True], [False])
    >>> round(sh.shift, 2), sh.edge_change
    (-0.3, -1)
    """
    s0, r0 = attention_mass(attn_before, subject_mask, relation_mask)
    s1, r1 = attention_mass(attn_after, subject_mask if subject_mask_after is None else subject_mask_after,
                            relation_mask if relation_mask_after is None else relation_mask_after)
    c0, c1 = np.asarray(correct_before, bool), np.asarray(correct_after, bool)
    if not (c0.shape == c1.shape == s0.shape == s1.shape):
        raise ValueError(f"correctness {c0.shape}/{c1.shape} and attention {s0.shape}/{s1.shape} must cover "
                         f"the same facts")
    return AttentionShift(float(s0.mean()), float(s1.mean()), float(r0.mean()), float(r1.mean()),
                          int(c0.sum()), int(c1.sum()), int((c1 & ~c0).sum()), int((c0 & ~c1).sum()), int(c0.size))


def _sign(x: float, tol: float) -> int:
    return 0 if abs(x) <= tol else (1 if x > 0 else -1)


def check_attention_shift(predicted: AttentionShift, measured: AttentionShift, *, label: str = "",
                          tol: float = 0.01) -> CheckResult:
    """Does a measured model shift attention (and edges) the way the one-layer model predicts? (empirical)

    lhs: the measured subject-mass shift; rhs: the predicted one; ``holds`` iff the shifts have
    the same sign (|shift| ≤ ``tol`` counts as no shift) and so do the edge changes. The residual
    is lhs − rhs; magnitudes are not expected to match across models.
    """
    same_attn = _sign(measured.shift, tol) == _sign(predicted.shift, tol)
    same_edges = np.sign(measured.edge_change) == np.sign(predicted.edge_change)
    detail = (f"edges {measured.edges_before}→{measured.edges_after} measured, "
              f"{predicted.edges_before}→{predicted.edges_after} predicted; attention sign "
              f"{'agrees' if same_attn else 'DISAGREES'}, edge sign {'agrees' if same_edges else 'DISAGREES'}")
    r = result("One-layer attention shift", measured.shift, predicted.shift, bool(same_attn and same_edges),
               kind="empirical", assumptions=[], tolerance=tol, detail=detail)
    return r if not label else CheckResult(**{**r.__dict__, "scope": label})


# --------------------------------------------------------------------------------------------
# The simulation
# --------------------------------------------------------------------------------------------

@dataclass
class _World:
    phi: np.ndarray            # [n_entities, d]: entity embeddings = unembeddings
    phi_rel: np.ndarray        # [n_relations, d]
    p_subj: np.ndarray         # [d]
    p_rel: np.ndarray          # [d]
    w_v: np.ndarray            # [d, d]: pretrained value matrix
    s: np.ndarray              # [n_facts] subject entity ids
    r: np.ndarray              # [n_facts]
    a: np.ndarray              # [n_facts] answer entity ids
    known: np.ndarray          # bool [n_facts]
    generic: np.ndarray        # [n_relations] generic answer entity of each relation


def _outer_unit(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """M with uᵀ M v = 1: u vᵀ / (|u|² |v|²)."""
    return np.outer(u, v) / ((u @ u) * (v @ v))


def _value_matrix(phi: np.ndarray, phi_rel: np.ndarray, s: np.ndarray, a: np.ndarray, sal: np.ndarray,
                  pools, relation_strength: float) -> np.ndarray:
    """W_V = Σ_f sal_f φ(a_f) φ(s_f)ᵀ/‖·‖² + Σ_r Σ_{ans ∈ pool_r} strength · φ(ans) φ(r)ᵀ/‖·‖² (the
    first answer of each pool is the generic one, at ``relation_strength``; the others at a third)."""
    d = phi.shape[1]
    w_v = np.zeros((d, d))
    for f in range(s.size):
        w_v += sal[f] * _outer_unit(phi[a[f]], phi[s[f]])
    for rel, pool in enumerate(pools):
        for j, ans in enumerate(pool):
            strength = relation_strength * (1.0 if j == 0 else 1 / 3)
            w_v += strength * _outer_unit(phi[ans], phi_rel[rel])
    return w_v


def build_world(cfg: OneLayerConfig) -> _World:
    """The pretrained one-layer model and its facts (seeded by ``cfg.seed``)."""
    cfg.validate()
    rng = stream(cfg.seed, "proofs/one_layer/world")
    n_rel, n_sub, n_ans, d = cfg.n_relations, cfg.subjects_per_relation, cfg.answers_per_relation, cfg.d_model
    n_entities = n_rel * (n_sub + n_ans)
    phi = rng.normal(0, 1 / np.sqrt(d), (n_entities, d))
    phi_rel = rng.normal(0, 1 / np.sqrt(d), (n_rel, d))
    p_subj, p_rel = rng.normal(0, 1 / np.sqrt(d), (2, d))
    r = np.repeat(np.arange(n_rel), n_sub)
    s = np.arange(n_rel * n_sub)                                      # one fact per subject
    pools = n_rel * n_sub + np.arange(n_rel * n_ans).reshape(n_rel, n_ans)
    pick = np.where(rng.random(s.size) < cfg.generic_share, 0, rng.integers(1, n_ans, s.size))
    a = pools[r, pick]
    known = (np.arange(s.size) % n_sub) < n_sub // 2
    sal = np.where(known, rng.uniform(*cfg.salience_known, s.size), cfg.salience_unknown)
    w_v = _value_matrix(phi, phi_rel, s, a, sal, pools, cfg.relation_strength)
    return _World(phi, phi_rel, p_subj, p_rel, w_v, s, r, a, known, pools[:, 0])


def world_from_facts(s, r, a, sal, known, n_entities: int, n_relations: int, cfg: OneLayerConfig) -> _World:
    """The pretrained one-layer model over *given* facts (e.g. a kgsim world's graph).

    ``s``, ``r``, ``a``: int [n_facts] entity / relation ids (entities < ``n_entities``, relations <
    ``n_relations``); ``sal``: float [n_facts], each fact's salience S(s, r, a) in the pretrained W_V;
    ``known``: bool [n_facts], recorded on the world. Each relation's answer pool is the set of its
    facts' distinct answers, most frequent first (that one is its generic answer; ties: lowest id).
    Embeddings are drawn from ``cfg.seed``'s stream ``proofs/one_layer/facts-world``, of dimension
    ``cfg.d_model``; ``cfg.relation_strength`` sets the relation-to-answer values. Raises ValueError
    on arrays of different lengths, ids out of range, or a relation without facts.
    """
    s, r, a = (np.asarray(x, np.int64) for x in (s, r, a))
    sal, known = np.asarray(sal, np.float64), np.asarray(known, bool)
    if not (s.shape == r.shape == a.shape == sal.shape == known.shape) or s.ndim != 1:
        shapes = [x.shape for x in (s, r, a, sal, known)]
        raise ValueError(f"s, r, a, sal, known must be 1-d of one length, got shapes {shapes}")
    if s.size and (min(s.min(), a.min(), r.min()) < 0 or max(s.max(), a.max()) >= n_entities
                   or r.max() >= n_relations):
        raise ValueError(f"fact ids out of range: n_entities = {n_entities}, n_relations = {n_relations}")
    d = cfg.d_model
    rng = stream(cfg.seed, "proofs/one_layer/facts-world")
    phi = rng.normal(0, 1 / np.sqrt(d), (n_entities, d))
    phi_rel = rng.normal(0, 1 / np.sqrt(d), (n_relations, d))
    p_subj, p_rel = rng.normal(0, 1 / np.sqrt(d), (2, d))
    pools = []
    for rel in range(n_relations):
        ans, counts = np.unique(a[r == rel], return_counts=True)
        if not ans.size:
            raise ValueError(f"relation {rel} has no facts: every relation needs an answer pool")
        pools.append(ans[np.argsort(-counts, kind="stable")])
    # the sums of _value_matrix as two matrix products (same terms, other rounding order)
    sq = (phi ** 2).sum(1)
    w_v = (phi[a] * (sal / (sq[a] * sq[s]))[:, None]).T @ phi[s]
    pr = np.concatenate([np.full(len(p), k) for k, p in enumerate(pools)])
    pa = np.concatenate(pools)
    first = np.concatenate([[True] + [False] * (len(p) - 1) for p in pools])
    strength = cfg.relation_strength * np.where(first, 1.0, 1 / 3) / (sq[pa] * (phi_rel[pr] ** 2).sum(1))
    w_v += (phi[pa] * strength[:, None]).T @ phi_rel[pr]
    return _World(phi, phi_rel, p_subj, p_rel, w_v, s, r, a, known, np.array([p[0] for p in pools]))


def salience(world: _World, facts: np.ndarray, w_v: np.ndarray | None = None) -> np.ndarray:
    """S(s, r, a) = φ(a)ᵀ W_V φ(s) of the given facts (float [n])."""
    w_v = world.w_v if w_v is None else w_v
    return np.einsum("nd,de,ne->n", world.phi[world.a[facts]], w_v, world.phi[world.s[facts]])


def _forward(torch, world_t, facts, b, w_v):
    """(attention [n, 2] over (subject, relation), logits [n, n_entities])."""
    x_s = world_t["phi"][world_t["s"][facts]] + world_t["p_subj"]          # [n, d]
    x_r = world_t["phi_rel"][world_t["r"][facts]] + world_t["p_rel"]       # [n, d]
    x = torch.stack([x_s, x_r], dim=1)                                     # [n, 2, d]
    z = ((x @ b) * x_r[:, None, :]).sum(-1)                                # [n, 2]: x_tᵀ B x_r
    alpha = torch.softmax(z, dim=1)                                        # [n, 2]
    h = (alpha[:, :, None] * (x @ w_v.T)).sum(1)                           # [n, d]: Σ_t α_t W_V x_t
    return alpha, h @ world_t["phi"].T                                     # [n, n_entities]


@dataclass
class FinetuneRun:
    """One fine-tuning run: trajectories on the held-out known test facts, and the summary."""

    ft_salience: float                 # mean salience of the fine-tuning facts
    subject_attention: np.ndarray      # [steps + 1] mean α_s on the test facts
    accessible: np.ndarray             # [steps + 1] accessible test edges
    train_accuracy: np.ndarray         # [steps + 1] on the fine-tuning facts
    generic_answers: np.ndarray        # [steps + 1] test facts answered with their relation's generic answer
    shift: AttentionShift              # before vs after, on the test facts


@dataclass
class OneLayerResult:
    config: OneLayerConfig
    n_test: int
    runs: dict[str, FinetuneRun] = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-ready numbers: per run the FT salience, subject-attention shift and edge change."""
        return {name: {"ft_salience": run.ft_salience, "subject_attention_before": run.shift.subject_before,
                       "subject_attention_after": run.shift.subject_after, "shift": run.shift.shift,
                       "edges_before": run.shift.edges_before, "edges_after": run.shift.edges_after,
                       "edges_gained": run.shift.edges_gained, "edges_lost": run.shift.edges_lost,
                       "generic_answers_after": int(run.generic_answers[-1]), "n_test": self.n_test}
                for name, run in self.runs.items()}


def _finetune(torch, world: _World, world_t, train: np.ndarray, test: np.ndarray, cfg: OneLayerConfig) -> FinetuneRun:
    d = cfg.d_model
    b = torch.zeros(d, d, dtype=torch.float64, requires_grad=True)
    w_v = torch.tensor(world.w_v, requires_grad=cfg.train_value)
    params = [b] + ([w_v] if cfg.train_value else [])
    target = world_t["a"][train]
    test_answer = world_t["a"][test]
    generic = world_t["generic"][world_t["r"][test]]
    att, acc, tr_acc, gen, first = [], [], [], [], None
    for step in range(cfg.steps + 1):
        with torch.no_grad():
            alpha, logits = _forward(torch, world_t, test, b, w_v)
            guess = logits.argmax(dim=1)
            correct = (guess == test_answer).numpy()
            att.append(float(alpha[:, 0].mean()))
            acc.append(int(correct.sum()))
            gen.append(int((guess == generic).sum()))
            tr_acc.append(float((_forward(torch, world_t, train, b, w_v)[1].argmax(1) == target).double().mean()))
            last = (alpha.numpy().copy(), correct)
            first = last if first is None else first
        if step == cfg.steps:
            break
        _, logits = _forward(torch, world_t, train, b, w_v)
        loss = torch.nn.functional.cross_entropy(logits, target)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= cfg.lr * g
    mask_s, mask_r = np.array([True, False]), np.array([False, True])
    shift = attention_shift(first[0], last[0], mask_s, mask_r, first[1], last[1])
    return FinetuneRun(float(salience(world, train).mean()), np.array(att), np.array(acc), np.array(tr_acc),
                       np.array(gen), shift)


def simulate(cfg: OneLayerConfig = OneLayerConfig()) -> OneLayerResult:
    """Fine-tune the pretrained one-layer model on high-salience (FT-Known) and low-salience
    (FT-Unknown) facts; measure attention and accessible edges on held-out known facts.

    Seeded by ``cfg.seed``: the world and the choice of fine-tuning and test facts. Returns an
    :class:`OneLayerResult` (``summary()`` for the numbers, :func:`write_figure` for a plot).
    """
    world = build_world(cfg)
    rng = stream(cfg.seed, "proofs/one_layer/split")
    known, unknown = np.flatnonzero(world.known), np.flatnonzero(~world.known)
    known = rng.permutation(known)
    ft_known, test = known[: cfg.n_finetune], known[cfg.n_finetune:]
    ft_unknown = rng.permutation(unknown)[: cfg.n_finetune]
    return simulate_on(world, ft_known, ft_unknown, test, cfg)


def simulate_on(world: _World, ft_known, ft_unknown, test, cfg: OneLayerConfig = OneLayerConfig()) -> OneLayerResult:
    """Fine-tune `world`'s pretrained model (from :func:`build_world` or :func:`world_from_facts`)
    on the facts ``ft_known`` and, separately, ``ft_unknown`` (int arrays of indices into the world's
    facts) and measure on ``test``; ``cfg`` gives ``steps``, ``lr`` and ``train_value``. Returns an
    :class:`OneLayerResult` with runs "ft-known" and "ft-unknown". Deterministic (no randomness)."""
    import torch

    world_t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in
               (("phi", world.phi), ("phi_rel", world.phi_rel), ("p_subj", world.p_subj), ("p_rel", world.p_rel),
                ("s", world.s), ("r", world.r), ("a", world.a), ("generic", world.generic))}
    test = np.asarray(test, np.int64)
    out = OneLayerResult(cfg, int(test.size))
    for name, train in (("ft-known", ft_known), ("ft-unknown", ft_unknown)):
        out.runs[name] = _finetune(torch, world, world_t, np.asarray(train, np.int64), test, cfg)
    return out


def write_figure(res: OneLayerResult, path: str | Path) -> Path:
    """A PNG (Agg) with the subject-attention mass and the accessible held-out edges per step."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax_att, ax_acc = fig.subplots(1, 2)
    for name, run in res.runs.items():
        label = f"{name} (FT salience {run.ft_salience:.2f})"
        ax_att.plot(run.subject_attention, label=label)
        ax_acc.plot(run.accessible / res.n_test, label=label)
    ax_att.set(xlabel="fine-tuning step", ylabel="attention mass on subject", title="Attention imbalance")
    ax_acc.set(xlabel="fine-tuning step", ylabel="accessible held-out known facts", title="Accessible edges",
               ylim=(0, 1.02))
    ax_att.legend(fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
