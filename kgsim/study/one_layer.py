"""The one-layer simulation held against kgsim's trained one-layer attention-only model, on the same facts.

Trained side. A small kgsim world (preset ``smoke`` by default, see :data:`DEFAULT_OVERRIDES`) and
kgsim's GPT with ``attention_only = true, n_layers = 1`` are pretrained with :func:`kgsim.nn.train.train`
on the world's corpus; two copies are then fine-tuned with it on QA rows ``<bos> <q> s Q <a> a`` of
the world's FT-Known and FT-Unknown facts (Known / Unknown by exposure, the ground truth; no SliCK).
On the held-out known ID test facts' zero-shot prompts ``<bos> <q> s Q <a>`` the answer is predicted
at the last position; its attention (averaged over heads, and per head) onto the subject token
(position 2) and the relation token ``Q`` (position 3), and the accessible edges (greedy answer
correct), are measured on the base model ("before") and on each fine-tuned model at Convergence
("after": the final weights) and at Early Stop (kgsim's rule: the fine-tuned step of best dev
accuracy), and every ``finetune.eval_every`` steps in between (the curves).

Simulated side, twice.

- **Same facts** (``simulated``): the Ghosal-style model of :mod:`proofs.one_layer` built over the
  kgsim world's own facts (:func:`proofs.one_layer.world_from_facts`): one random entity embedding
  per kgsim entity, one fact per kgsim fact (every relation), salience S(s, r, a) drawn from
  ``salience_known`` scaled by min(1, exposure / known_min_exposure) (never-shown facts S = 0, facts
  shown at least ``known_min_exposure`` times full salience), each relation's answer pool its facts'
  answers (kgsim's relations have no strong generic answer: the answer distribution is nearly flat).
  It is fine-tuned on the same FT-Known and FT-Unknown fact ids and measured on the same ID test
  fact ids. Its width ``sim_d_model`` (default 1024) is chosen so that crosstalk between the random
  embeddings of ~1,800 facts is small, i.e. so that the pretrained W_V stores what the salience says
  (at the trained model's own d_model = 128 it answers only a handful of the known test facts, and the
  direction of its FT-Unknown shift then varies with the seed).
- **Synthetic, sized alike** (``synthetic``): :func:`proofs.one_layer.simulate` on its own world
  (one fact per subject, a generic answer per relation), with the trained world's numbers of
  fine-tuning relations, FT facts and ID test facts.

The simulation's only two tokens are subject and relation; the trained model also attends to
``<bos>``, ``<q>`` and ``<a>``: that mass is reported as "other".

Quantitative parts (issue 13). :func:`magnitudes`: the subject and relation masses, trained (before,
Convergence) and simulated on the same facts (before, after), side by side with each change and the
ratio simulated change / trained change. :func:`measure_salience`: the *base* model's salience of each
ID test fact measured from its weights (:func:`kgsim.study.salience.salience`: the subject token's
direct value-path contribution to the answer's logit, summed over heads; the module docstring there
says how the LayerNorms are handled), and how well low salience predicts that a fact correct on the
base model is wrong after fine-tuning at Convergence (AUROC with a 95% stratified bootstrap interval
over facts and a Hanley-McNeil one; also for the realised contribution Σ_h α_h · S_h / σ). Both are in ``summary()`` and
:func:`format_summary`; :mod:`kgsim.study.one_layer_seeds` runs several seeds and aggregates them.

Worlds. ``preset = "smoke"`` (the default) takes :data:`DEFAULT_OVERRIDES`; ``preset = "default"``
takes :data:`DEFAULT_WORLD_OVERRIDES` (the default preset's graph, corpus, splits and schedules with
the one-layer attention-only model, float32, fine-tuning lr 1e-3); :func:`overrides_for` picks them.

For each of FT-Known and FT-Unknown, :func:`proofs.one_layer.check_attention_shift` compares the
trained model's measured shift (at Convergence, and at Early Stop) with the simulated one
(empirical checks: reported, never asserted).

What it showed when written (default configuration, seeds 0-4; tests/test_proofs_trained_one_layer.py
has the numbers): FT-Unknown always cost most accessible test edges (e.g. 28 -> 7 of 40) while the
fine-tuned model came to answer test questions with the FT set's own answers (68-90% of answers);
its attention moved from subject to relation early in fine-tuning in 4 of 5 seeds (sharply, inside
the one or two heads that read the subject), then largely moved back as the FT-Unknown facts were
fitted, so that at Convergence the sign of the subject shift varied; in one seed the (saturated)
heads did not move at all and the edges were lost all the same. FT-Known raised the subject mass in
every seed. The simulation predicts a much larger, monotone shift.

Run ``kgsim one-layer --out DIR`` (writes ``trained_one_layer.json``,
``trained_one_layer.png``, and the simulations' own figures ``one_layer_sim.png`` and
``one_layer_sim_synthetic.png``), ``kgsim one-layer --preset default --seeds 0 1 2 3 4 --out DIR``
for several seeds (docs/one-layer-run), or call :func:`compare`.
"""
from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kgsim.core.config import ConfigError, load_config
from kgsim.core.rng import stream
from kgsim.nn.model import build_model, load_model
from kgsim.nn.probe import answers, correct_of
from kgsim.nn.train import train
from kgsim.study.salience import direct_logit_attribution, loss_prediction, salience
from kgsim.study.stages import qa_rows
from kgsim.world.build import build_world
from kgsim.world.prompts import statement, zero_shot
from proofs.core import CheckResult
from proofs.one_layer import (
    AttentionShift,
    OneLayerConfig,
    OneLayerResult,
    attention_shift,
    check_attention_shift,
    simulate,
    simulate_on,
    world_from_facts,
    write_figure,
)

SUBJECT_POS, RELATION_POS = 2, 3            # in <bos> <q> s Q <a>
RUNS = ("ft-known", "ft-unknown")
DEFAULT_OVERRIDES = (
    # the smoke preset, with kgsim's one-layer attention-only model, wide enough to memorise
    "model.attention_only=true", "model.n_layers=1", "model.d_model=128", "model.n_heads=4",
    # a few more entities, so that 40 ID test facts (and the Near-ID / Open-World sets) exist
    "graph.n_entities=600", "splits.test_size=40",
    # pretraining long enough to memorise (the preset's 300 steps are not); float32 on CPU
    "pretrain.steps=800", "pretrain.eval_every=800", "pretrain.ckpt_every=800", "pretrain.log_every=100",
    "pretrain.bf16=false",
    # fine-tuning long enough to fit FT-Unknown, with the curve every 5 steps
    "finetune.steps=100", "finetune.lr=1e-3", "finetune.batch_size=8", "finetune.warmup_steps=5",
    "finetune.bf16=false", "finetune.eval_every=5", "finetune.log_every=5", "finetune.ckpt_every=100",
)
DEFAULT_WORLD_OVERRIDES = (
    # the default preset's graph, corpus, splits and schedules, with kgsim's one-layer attention-only model
    # (its d_model = 128 and n_heads = 4 are the preset's own); float32 on CPU (bf16 is ~10x slower there)
    "model.attention_only=true", "model.n_layers=1", "pretrain.bf16=false", "finetune.bf16=false",
    # the one-layer comparison's fine-tuning learning rate (the preset's 1e-4 is the 2-layer model's),
    # with the preset's 300 steps of 32 rows (48 passes over an FT set of 200 facts), the curve every 5 steps
    "finetune.lr=1e-3", "finetune.ckpt_every=300",
)
ONE_LAYER_OVERRIDES = {"default": DEFAULT_WORLD_OVERRIDES}   # per preset; any other preset: DEFAULT_OVERRIDES


def overrides_for(preset: str) -> tuple[str, ...]:
    """The one-layer overrides applied to `preset`: :data:`DEFAULT_WORLD_OVERRIDES` for ``default``
    (its world as it is), :data:`DEFAULT_OVERRIDES` (sized for ``smoke``) for any other preset."""
    return ONE_LAYER_OVERRIDES.get(preset, DEFAULT_OVERRIDES)


@dataclass(frozen=True)
class TrainedOneLayerConfig:
    """The comparison: a kgsim config (``preset`` + ``overrides``, seed ``seed``) and the simulation's
    fine-tuning (``sim``: its ``salience_known``, ``salience_unknown``, ``relation_strength``,
    ``steps``, ``lr``, ``train_value``, and for the synthetic simulation ``d_model`` and the answer
    pools; its sizes come from the world). ``sim_d_model``: the width of the same-facts simulation.
    ``tol``: |shift| at or below it counts as no shift in the check."""

    seed: int = 0
    preset: str = "smoke"
    overrides: tuple[str, ...] = DEFAULT_OVERRIDES
    sim: OneLayerConfig = OneLayerConfig()
    sim_d_model: int = 1024
    tol: float = 0.01

    def experiment_config(self):
        """The validated kgsim ExperimentConfig. Raises kgsim.core.config.ConfigError on a bad override or
        a model that is not one-layer attention-only."""

        cfg = load_config(self.preset, overrides=[*self.overrides, f"seed={self.seed}"])
        if not (cfg.model.attention_only and cfg.model.n_layers == 1):
            raise ConfigError(f"model.attention_only = {cfg.model.attention_only!r}, model.n_layers = "
                              f"{cfg.model.n_layers!r}: this comparison needs a one-layer attention-only model")
        return cfg


@dataclass
class TrainedRun:
    """One fine-tuned copy, measured on the ID test facts against the base model.

    ``shift``: before vs Convergence; ``shift_es``: before vs Early Stop (step ``es_step``).
    ``by_head``: "subject" / "relation" -> {"before", "es", "after"}: mean attention mass per head
    (float [H]). ``ft_answer_share``: {"before", "es", "after"}: share of test answers that are the
    answer of some fact of this run's FT set. ``curve``: per evaluated step (0 = the base model),
    "step", "subject", "relation" (mean masses), "edges" (accessible test edges), "train_acc" (on the
    FT set), "dev_acc" (the Early Stop criterion)."""

    shift: AttentionShift
    shift_es: AttentionShift
    es_step: int
    by_head: dict
    ft_answer_share: dict
    curve: dict


@dataclass
class Comparison:
    """Everything :func:`compare` measured; ``summary()`` gives the JSON-ready numbers."""

    config: TrainedOneLayerConfig
    n_test: int
    base: dict                         # the base model: statement / QA accuracy
    trained: dict[str, TrainedRun] = field(default_factory=dict)
    simulated: OneLayerResult | None = None            # same facts
    synthetic: OneLayerResult | None = None            # the simulation's own world, sized alike
    checks: dict[str, CheckResult] = field(default_factory=dict)   # "<run>", "<run> at ES", "<run> vs synthetic"
    attention: dict[str, np.ndarray] = field(default_factory=dict)  # "base", "<run>", "<run> at ES": [n_test, H, T]
    salience: dict = field(default_factory=dict)       # see measure_salience

    def summary(self) -> dict:
        """JSON-ready numbers: per run, trained (Con. and ES) and simulated attention and edges, and the checks."""
        runs = {}
        for name in RUNS:
            tr = self.trained[name]
            runs[name] = {
                "trained": _shift_dict(tr.shift) | {
                    "es_step": tr.es_step, "early_stop": _shift_dict(tr.shift_es),
                    "subject_min_during": float(min(tr.curve["subject"])),
                    "subject_min_step": int(tr.curve["step"][int(np.argmin(tr.curve["subject"]))]),
                    "train_accuracy_after": float(tr.curve["train_acc"][-1]),
                    "by_head": {k: {when: np.asarray(v).tolist() for when, v in d.items()}
                                for k, d in tr.by_head.items()},
                    "ft_answer_share": tr.ft_answer_share, "curve": tr.curve},
                "simulated": _sim_dict(self.simulated.runs[name]),
                "synthetic": _sim_dict(self.synthetic.runs[name]),
                "checks": {key: self.checks[key].to_json() for key in (name, f"{name} at ES", f"{name} vs synthetic")}}
        sal = self.salience
        return {"seed": self.config.seed, "preset": self.config.preset, "overrides": list(self.config.overrides),
                "sim_d_model": self.config.sim_d_model, "tol": self.config.tol, "n_test": self.n_test,
                "base": self.base, "runs": runs, "magnitudes": magnitudes(self),
                "salience": {"prediction": sal["prediction"],
                             "facts": {k: np.asarray(v).tolist() for k, v in sal.items() if k != "prediction"}},
                "sim_config": _cfg_dict(self.simulated.config), "synthetic_config": _cfg_dict(self.synthetic.config)}


def _shift_dict(sh: AttentionShift) -> dict:
    return {"subject_before": sh.subject_before, "subject_after": sh.subject_after,
            "relation_before": sh.relation_before, "relation_after": sh.relation_after,
            "other_before": 1 - sh.subject_before - sh.relation_before,
            "other_after": 1 - sh.subject_after - sh.relation_after, "shift": sh.shift,
            "edges_before": sh.edges_before, "edges_after": sh.edges_after,
            "edges_gained": sh.edges_gained, "edges_lost": sh.edges_lost, "n": sh.n}


def _sim_dict(run) -> dict:
    return _shift_dict(run.shift) | {"ft_salience": run.ft_salience,
                                     "train_accuracy_after": float(run.train_accuracy[-1]),
                                     "generic_answers_after": int(run.generic_answers[-1])}


def _cfg_dict(c: OneLayerConfig) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in c.__dict__.items()}


# --------------------------------------------------------------------------------------------
# Training and measuring kgsim's model
# --------------------------------------------------------------------------------------------

def measure(model, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Attention of the last position and the greedy answer, for prompt rows `tokens` int [n, T].

    Returns (attention float64 [n, H, T]: layer 0, last query row, each row summing to 1; answer
    token ids int64 [n], argmax over the whole vocabulary). The model is put in eval mode."""
    import torch

    model.eval()
    with torch.no_grad():
        logits, atts = model.forward_with_attention(torch.as_tensor(tokens, dtype=torch.long))
    return atts[0][:, :, -1, :].double().numpy(), logits[:, -1].argmax(-1).numpy().astype(np.int64)


def _masks(T: int) -> tuple[np.ndarray, np.ndarray]:
    subj, rel = np.zeros(T, bool), np.zeros(T, bool)
    subj[SUBJECT_POS], rel[RELATION_POS] = True, True
    return subj, rel


CURVE_KEYS = {"step": "step", "subject": "subject_attention", "relation": "relation_attention",
              "edges": "accessible", "train_acc": "train_acc", "dev_acc": "dev_acc"}


def _curve(metrics_path: Path) -> dict:
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    rows = [r for r in rows if "subject_attention" in r]
    return {k: [r[m] for r in rows] for k, m in CURVE_KEYS.items()}


def _train_models(cfg, world, work: Path, progress: bool = False):
    """Pretrain the base model, then fine-tune a copy on each FT set with Early Stop on dev accuracy.

    Returns (base model, {run: (Convergence model, Early Stop model, ES step, curve)})."""

    kg, vocab, splits = world.kg, world.corpus.vocab, world.splits
    base = build_model(cfg.model, vocab.size, seed=cfg.seed)
    train(base, world.corpus.rows(cfg.model.n_ctx + 1), cfg.pretrain, work / "pretrain", seed=cfg.seed,
          name="pretrain", progress=progress)
    test, dev = splits.test["id"], splits.dev
    prompts = zero_shot(vocab, kg.s[test], kg.r[test]).tokens
    dev_prompts, dev_answer = zero_shot(vocab, kg.s[dev], kg.r[dev]).tokens, vocab.entity(kg.a[dev])
    subj, rel = _masks(prompts.shape[1])
    out = {}
    for name, facts in (("ft-known", splits.ft_known), ("ft-unknown", splits.ft_unknown)):
        ft_prompts, ft_answer = zero_shot(vocab, kg.s[facts], kg.r[facts]).tokens, vocab.entity(kg.a[facts])

        def evaluate(m, step):
            attn, guess = measure(m, prompts)
            a = attn.mean(axis=1)                                              # [n, T]: heads averaged
            dev_acc = float((measure(m, dev_prompts)[1] == dev_answer).mean())
            return {"subject_attention": float(a[:, subj].sum(1).mean()),
                    "relation_attention": float(a[:, rel].sum(1).mean()),
                    "accessible": int(correct_of(kg, vocab, kg.s[test], kg.r[test], guess).sum()),
                    "train_acc": float((measure(m, ft_prompts)[1] == ft_answer).mean()), "dev_acc": dev_acc,
                    # Early Stop chooses among fine-tuned checkpoints only, as kgsim.study.stages does
                    "es_dev_acc": dev_acc if step > 0 else float("nan")}

        model = copy.deepcopy(base)
        res = train(model, qa_rows(world, facts), cfg.finetune, work / name, seed=cfg.seed, name=f"finetune-{name}",
                    evaluate=evaluate, select_metric="es_dev_acc", progress=progress)
        out[name] = (model, load_model(res.es_path), int(res.es_step), _curve(res.metrics_path))
    return base, out


def _base_summary(base, world) -> dict:

    kg, vocab, splits = world.kg, world.corpus.vocab, world.splits
    known = kg.exposure >= splits_known_min(world)
    plain = ~world.qa_subjects[kg.s]
    ok_st = answers(base, statement(vocab, kg.s, kg.r)) == vocab.entity(kg.a)
    ok_qa = answers(base, zero_shot(vocab, kg.s, kg.r)) == vocab.entity(kg.a)
    ids = {name: getattr(splits, name) for name in ("ft_known", "ft_unknown")} | {"test_id": splits.test["id"]}
    return {"statement_acc_known": float(ok_st[known].mean()),
            "qa_acc_known_statement_only_subjects": float(ok_qa[known & plain].mean()),
            "qa_acc_known_qa_subjects": float(ok_qa[known & ~plain].mean()),
            **{f"qa_acc_{k}": float(ok_qa[v].mean()) for k, v in ids.items()},
            **{f"n_{k}": int(len(v)) for k, v in ids.items()}}


def splits_known_min(world) -> int:
    """The exposure at which the world's splits count a fact as Known (from the splits' record)."""
    rule = world.splits.meta.get("known_rule", "")
    if not rule.startswith("exposure >= "):
        raise ValueError(f"splits.meta['known_rule'] = {rule!r}: expected 'exposure >= N' (Known by exposure)")
    return int(rule.split(">=")[1])


# --------------------------------------------------------------------------------------------
# The simulation on the same facts
# --------------------------------------------------------------------------------------------

def simulate_world(world, cfg: TrainedOneLayerConfig) -> OneLayerResult:
    """The Ghosal-style model over the kgsim world's facts (width ``cfg.sim_d_model``), fine-tuned on
    the same FT sets and measured on the same ID test facts (see the module docstring); its
    ``config`` records the OneLayerConfig used (``subjects_per_relation`` etc. do not apply)."""

    kg, splits = world.kg, world.splits
    kmin = splits_known_min(world)
    sim = OneLayerConfig(**{**cfg.sim.__dict__, "d_model": cfg.sim_d_model, "seed": cfg.seed,
                            "n_relations": kg.n_relations, "n_finetune": len(splits.ft_known)})
    lo, hi = sim.salience_known
    draw = stream(cfg.seed, "proofs/trained_one_layer/salience").uniform(lo, hi, kg.n_facts)
    scale = np.minimum(1.0, kg.exposure / kmin)
    sal = np.where(kg.exposure > 0, draw * scale, sim.salience_unknown)
    w = world_from_facts(kg.s, kg.r, kg.a, sal, kg.exposure >= kmin, kg.n_entities, kg.n_relations, sim)
    return simulate_on(w, splits.ft_known, splits.ft_unknown, splits.test["id"], sim)


def simulate_sized(world, cfg: TrainedOneLayerConfig) -> OneLayerResult:
    """:func:`proofs.one_layer.simulate` on its own synthetic world, with the kgsim world's number of
    fine-tuning relations, FT-set size and ID test-set size (``cfg.sim`` for everything else)."""
    splits = world.splits
    n_rel, n_ft, n_test = len(splits.ft_relations), len(splits.ft_known), len(splits.test["id"])
    per_rel = -(-(n_ft + n_test) // n_rel)                          # known subjects per relation
    return simulate(OneLayerConfig(**{**cfg.sim.__dict__, "seed": cfg.seed, "n_relations": n_rel,
                                      "subjects_per_relation": 2 * per_rel, "n_finetune": n_ft}))


# --------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------

def compare(cfg: TrainedOneLayerConfig = TrainedOneLayerConfig(), work_dir: str | Path | None = None,
            progress: bool = False) -> Comparison:
    """Train, fine-tune and measure kgsim's one-layer model; simulate on the same facts; compare.

    ``work_dir``: where kgsim.nn.train writes its checkpoints (a finished run there with the same
    config is reused); a temporary directory when None. Seeded by ``cfg.seed`` (world, model
    initialisation, batches, simulation); on CPU the numbers are reproducible. Returns a
    :class:`Comparison`. Raises kgsim.core.config.ConfigError on a bad config."""

    exp = cfg.experiment_config()
    world = build_world(exp)
    kg, vocab, splits = world.kg, world.corpus.vocab, world.splits
    test = splits.test["id"]
    with tempfile.TemporaryDirectory() as tmp:
        base, tuned = _train_models(exp, world, Path(work_dir) if work_dir is not None else Path(tmp), progress)
    prompts = zero_shot(vocab, kg.s[test], kg.r[test]).tokens
    subj, rel = _masks(prompts.shape[1])
    attn0, guess0 = measure(base, prompts)
    ok0 = correct_of(kg, vocab, kg.s[test], kg.r[test], guess0)
    out = Comparison(cfg, int(len(test)), _base_summary(base, world), attention={"base": attn0})
    ok_after = {}
    out.simulated, out.synthetic = simulate_world(world, cfg), simulate_sized(world, cfg)
    for name in RUNS:
        con, es, es_step, curve = tuned[name]
        ft_answers = vocab.entity(kg.a[splits.ft_known if name == "ft-known" else splits.ft_unknown])
        shifts, share = {}, {"before": float(np.isin(guess0, ft_answers).mean())}
        by_head = {"subject": {"before": attn0[:, :, SUBJECT_POS].mean(0)},
                   "relation": {"before": attn0[:, :, RELATION_POS].mean(0)}}
        for when, model in (("after", con), ("es", es)):
            attn1, guess1 = measure(model, prompts)
            out.attention[name if when == "after" else f"{name} at ES"] = attn1
            ok1 = correct_of(kg, vocab, kg.s[test], kg.r[test], guess1)
            if when == "after":
                ok_after[name] = ok1
            shifts[when] = attention_shift(attn0, attn1, subj, rel, ok0, ok1)
            by_head["subject"][when] = attn1[:, :, SUBJECT_POS].mean(0)
            by_head["relation"][when] = attn1[:, :, RELATION_POS].mean(0)
            share[when] = float(np.isin(guess1, ft_answers).mean())
        out.trained[name] = TrainedRun(shifts["after"], shifts["es"], es_step, by_head, share, curve)
        label = f"trained one-layer {name} · seed {cfg.seed}"
        sim, syn = out.simulated.runs[name].shift, out.synthetic.runs[name].shift
        out.checks[name] = check_attention_shift(sim, shifts["after"], tol=cfg.tol,
                                                 label=f"{label} · Con. vs simulation on the same facts")
        out.checks[f"{name} at ES"] = check_attention_shift(
            sim, shifts["es"], tol=cfg.tol, label=f"{label} · ES (step {es_step}) vs simulation on the same facts")
        out.checks[f"{name} vs synthetic"] = check_attention_shift(syn, shifts["after"], tol=cfg.tol,
                                                                   label=f"{label} · Con. vs synthetic simulation")
    out.salience = measure_salience(base, prompts, vocab.entity(kg.a[test]), ok0, ok_after, cfg.seed)
    out.salience["fact"] = np.asarray(test)
    return out


def measure_salience(base, prompts: np.ndarray, answer_tokens: np.ndarray, correct_before: np.ndarray,
                     correct_after: dict[str, np.ndarray], seed: int, n_boot: int = 2000) -> dict:
    """The base model's measured salience of each test fact, and how well it predicts lost edges.

    ``prompts``: int [n, T] zero-shot prompts (subject at :data:`SUBJECT_POS`); ``answer_tokens``: int [n];
    ``correct_*``: bool [n] (after: per run, at Convergence). Two predictors, both from the base model:
    "salience", S(s, a) of :func:`kgsim.study.salience.salience` summed over heads (the theory's
    attention-free S; primary), and "realised", the subject's actual direct logit contribution to the
    answer at its prompt, Σ_h α_h · S_h / σ (:func:`kgsim.study.salience.direct_logit_attribution`).
    Returns {"salience": float [n], "salience_by_head": float [n, H], "realised": float [n],
    "correct_before": bool [n], "correct_after_<run>": bool [n], "prediction": {run: {predictor:
    :func:`kgsim.study.salience.loss_prediction`}}}; bootstrap streams ``study/one_layer/bootstrap/<run>/
    <predictor>`` of `seed`."""
    by_head = salience(base, prompts[:, SUBJECT_POS], answer_tokens, position=SUBJECT_POS, per_head=True)
    dla = direct_logit_attribution(base, prompts)
    realised = dla["positions"][np.arange(len(prompts)), SUBJECT_POS, answer_tokens]
    out = {"salience": by_head.sum(1), "salience_by_head": by_head, "realised": realised,
           "correct_before": np.asarray(correct_before, bool)}
    out |= {f"correct_after_{name}": np.asarray(ok, bool) for name, ok in correct_after.items()}
    out["prediction"] = {name: {k: loss_prediction(out[k], correct_before, ok,
                                                   stream(seed, f"study/one_layer/bootstrap/{name}/{k}"), n_boot)
                                for k in ("salience", "realised")} for name, ok in correct_after.items()}
    return out


def magnitudes(res: Comparison) -> dict:
    """Mean attention mass of the answer position on subject and relation, trained (before, Convergence)
    and simulated on the same facts (before, after), per run, with each change and the ratio of the
    changes (simulated / trained; None where the trained change is exactly 0)."""
    out = {}
    for name in RUNS:
        tr, sim = res.trained[name].shift, res.simulated.runs[name].shift
        out[name] = {}
        for key in ("subject", "relation"):
            t0, t1 = getattr(tr, f"{key}_before"), getattr(tr, f"{key}_after")
            s0, s1 = getattr(sim, f"{key}_before"), getattr(sim, f"{key}_after")
            out[name][key] = {"trained_before": t0, "trained_after": t1, "trained_change": t1 - t0,
                              "simulated_before": s0, "simulated_after": s1, "simulated_change": s1 - s0,
                              "ratio": (s1 - s0) / (t1 - t0) if t1 != t0 else None}
    return out


COLOURS = {"ft-known": "tab:blue", "ft-unknown": "tab:red"}


def _attention_panel(ax, title: str, bars: dict[str, list[float]], ticks: list[str]) -> None:
    x = np.arange(len(ticks))
    for k, (name, values) in enumerate(bars.items()):
        b = ax.bar(x + (k - 0.5) * 0.38, values, 0.38, color=COLOURS[name], alpha=0.8, label=name)
        ax.bar_label(b, fmt="%.2f", fontsize=6)
    ax.set(xticks=x, ylim=(0, 1.2), ylabel="mean attention mass of the answer position", title=title)
    ax.set_xticklabels(ticks, fontsize=8)
    ax.legend(fontsize=8, loc="upper center", ncol=2)


def _edges_panel(ax, res: Comparison) -> None:
    """Bars of accessible test edges (share of each test set): trained before / ES / Con., simulated before / after."""
    tr = res.trained
    groups = [("trained", res.n_test, {n: (tr[n].shift.edges_before, tr[n].shift_es.edges_after,
                                           tr[n].shift.edges_after) for n in RUNS})]
    for title, sim in (("simulated,\nsame facts", res.simulated), ("simulated,\nsynthetic", res.synthetic)):
        groups.append((title, sim.n_test, {n: (sim.runs[n].shift.edges_before, sim.runs[n].shift.edges_after)
                                           for n in RUNS}))
    centres, x0 = [], 0.0
    for title, n_test, edges in groups:
        start = x0
        for name in RUNS:
            values = edges[name]
            for j, v in enumerate(values):
                ax.bar(x0, v / n_test, 0.8, color=COLOURS[name], alpha=0.3 + 0.6 * j / max(len(values) - 1, 1))
                ax.text(x0, v / n_test + 0.01, str(v), ha="center", fontsize=6)
                x0 += 1
            x0 += 0.5
        centres.append((start + x0 - 1.5) / 2)
        x0 += 1
    ax.set(xticks=centres, ylim=(0, 1.1), ylabel="accessible ID test edges (share)",
           title="Edges: before → (ES →) after; blue FT-Known, red FT-Unknown")
    ax.set_xticklabels([g[0] for g in groups], fontsize=8)


def write_comparison_figure(res: Comparison, path: str | Path) -> Path:
    """A PNG (Agg). Top: mean attention mass of the answer position on subject and relation, before and
    after fine-tuning (trained: also at Early Stop), for the trained model and both simulations.
    Bottom: accessible test edges, and the trained model's curves over fine-tuning steps."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 8.5), layout="constrained")
    (ax_t, ax_s, ax_y), (ax_e, ax_ct, ax_ce) = fig.subplots(2, 3)
    tr = res.trained
    _attention_panel(ax_t, "trained (kgsim, 1 layer, 4 heads averaged)",
                     {n: [tr[n].shift.subject_before, tr[n].shift_es.subject_after, tr[n].shift.subject_after,
                          tr[n].shift.relation_before, tr[n].shift_es.relation_after, tr[n].shift.relation_after]
                      for n in RUNS},
                     ["subject\nbefore", "subject\nES", "subject\nCon.", "relation\nbefore", "relation\nES",
                      "relation\nCon."])
    for ax, title, sim in ((ax_s, "simulated, same facts", res.simulated), (ax_y, "simulated, synthetic world",
                                                                           res.synthetic)):
        _attention_panel(ax, title, {n: [sim.runs[n].shift.subject_before, sim.runs[n].shift.subject_after,
                                         sim.runs[n].shift.relation_before, sim.runs[n].shift.relation_after]
                                     for n in RUNS},
                         ["subject\nbefore", "subject\nafter", "relation\nbefore", "relation\nafter"])
    _edges_panel(ax_e, res)
    for name in RUNS:
        c = tr[name].curve
        ax_ct.plot(c["step"], c["subject"], color=COLOURS[name], label=f"{name} subject")
        ax_ct.plot(c["step"], c["relation"], color=COLOURS[name], ls="--", label=f"{name} relation")
        ax_ct.axvline(tr[name].es_step, color=COLOURS[name], lw=0.8, ls=":")
        ax_ce.plot(c["step"], np.array(c["edges"]) / res.n_test, color=COLOURS[name], label=f"{name} test edges")
        ax_ce.plot(c["step"], c["train_acc"], color=COLOURS[name], ls=":", label=f"{name} FT-set accuracy")
    ax_ct.set(xlabel="fine-tuning step (dotted: Early Stop)", ylabel="mean attention mass",
              title="Trained: attention over fine-tuning")
    ax_ce.set(xlabel="fine-tuning step", ylabel="share", ylim=(0, 1.02), title="Trained: test edges and FT fit")
    share = "\n".join(f"{n}: {tr[n].ft_answer_share['before']:.2f} → {tr[n].ft_answer_share['after']:.2f}"
                      for n in RUNS)
    ax_ce.text(0.98, 0.93, f"test answers that answer some FT fact:\n{share}", transform=ax_ce.transAxes,
               ha="right", va="top", fontsize=7)
    ax_ct.legend(fontsize=7)
    ax_ce.legend(fontsize=7, loc="center right")
    fig.suptitle(f"One-layer attention shift: kgsim's trained one-layer attention-only model vs the Ghosal-style "
                 f"simulation (seed {res.config.seed}; simulation curves: one_layer_sim*.png)")
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def write_outputs(res: Comparison, out: Path) -> None:
    """``trained_one_layer.json`` (the summary), ``trained_one_layer.png`` (both models side by side)
    and the simulation's curves ``one_layer_sim.png`` / ``one_layer_sim_synthetic.png`` in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "trained_one_layer.json").write_text(json.dumps(res.summary(), indent=1) + "\n")
    write_comparison_figure(res, out / "trained_one_layer.png")
    write_figure(res.simulated, out / "one_layer_sim.png")
    write_figure(res.synthetic, out / "one_layer_sim_synthetic.png")


def format_summary(res: Comparison) -> str:
    """A plain-text table of :class:`Comparison`: masses, edges, per-head masses and the checks."""
    lines = []
    for name in RUNS:
        tr = res.trained[name]
        rows = [(f"trained, ES (step {tr.es_step})", tr.shift_es), ("trained, Con.", tr.shift),
                ("simulated, same facts", res.simulated.runs[name].shift),
                ("simulated, synthetic", res.synthetic.runs[name].shift)]
        for title, sh in rows:
            lines.append(f"{name:10s} {title:24s} subject {sh.subject_before:.3f} -> {sh.subject_after:.3f}, relation "
                         f"{sh.relation_before:.3f} -> {sh.relation_after:.3f}, edges {sh.edges_before} -> "
                         f"{sh.edges_after} of {sh.n}")
        hs = {k: {w: np.round(v, 2).tolist() for w, v in d.items()} for k, d in tr.by_head.items()}
        lines.append(f"  trained, by head: subject {hs['subject']['before']} -> ES {hs['subject']['es']} -> Con. "
                     f"{hs['subject']['after']}; relation {hs['relation']['before']} -> Con. {hs['relation']['after']}")
        share = tr.ft_answer_share
        lines.append(f"  trained: lowest subject mass during fine-tuning {min(tr.curve['subject']):.3f}; test answers "
                     f"that answer some FT fact {share['before']:.2f} -> {share['after']:.2f}")
        for key in (f"{name} at ES", name, f"{name} vs synthetic"):
            c = res.checks[key]
            lines.append(f"  check {c.scope}: {'holds' if c.holds else 'does not hold'} ({c.detail})")
        for key, m in magnitudes(res)[name].items():
            ratio = "n/a" if m["ratio"] is None else f"{m['ratio']:.2f}"
            lines.append(f"  magnitude, {key:8s} (Con.): trained {m['trained_before']:.3f} -> {m['trained_after']:.3f} "
                         f"({m['trained_change']:+.3f}), simulated {m['simulated_before']:.3f} -> "
                         f"{m['simulated_after']:.3f} ({m['simulated_change']:+.3f}), ratio simulated/trained {ratio}")
        for key, p in res.salience["prediction"][name].items():
            lines.append(f"  {format_prediction(p, key)}")
    return "\n".join(lines)


def format_prediction(p: dict, predictor: str = "salience") -> str:
    """One line of :func:`kgsim.study.salience.loss_prediction`'s numbers."""
    auc = "n/a" if p["auroc"] is None else (f"{p['auroc']:.3f} [{p['low']:.3f}, {p['high']:.3f}] (bootstrap), "
                                            f"[{p['hm_low']:.3f}, {p['hm_high']:.3f}] (Hanley-McNeil)")
    means = ", ".join(f"{k} {p[f'mean_{k}']:.3f}" for k in ("lost", "kept")
                      if p[f"mean_{k}"] is not None)
    return (f"base {predictor} -> lost edge: AUROC (low {predictor} predicts loss) {auc}; "
            f"{p['n_lost']} lost, {p['n_kept']} kept of {p['n_correct_before']} correct before"
            + (f"; mean {means}" if means else ""))

