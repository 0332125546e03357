"""results.json -> report.md (and, through kgsim.study.figures, its PNG figures). Every number shown is
read from results.json."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from kgsim.core.io import write_text
from kgsim.core.known import AGREEMENT_LABELS
from kgsim.core.names import (
    BASE,
    CATEGORIES,
    CON,
    COT,
    DIRECT_TWO_HOP,
    ERROR_CLASSES,
    ES,
    FT_KNOWN,
    FT_MIXED,
    FT_UNKNOWN,
    ID,
    NEAR_ID,
    OPEN_WORLD,
    RECALL_COT,
    STAGE_TITLES,
    STAGES,
    STRUCTURAL_SPLITS,
    TEST_FILTERS,
    TWO_HOP_SPLITS,
    ZERO_SHOT,
    filtered_split,
    k_shot_name,
    label,
    split_filter,
)
from kgsim.study.figures import _get, _row_name, error_class_rows, figures
from kgsim.study.results import FACTORS, cut_to_unit, factor_contrasts, interval, summarise_observation


def _f(iv: dict | None, pct: bool = True) -> str:
    """'12.3 [8.1, 16.5]' (points) from an interval dict."""
    if not iv or iv.get("n", 0) == 0 or math.isnan(iv["mean"]):
        return "–"
    s = 100 if pct else 1
    if math.isnan(iv["lo"]):                      # one seed: no interval (unless bootstrapped)
        return f"{s * iv['mean']:.1f}"
    return f"{s * iv['mean']:.1f} [{s * iv['lo']:.1f}, {s * iv['hi']:.1f}]"


def _pts(x) -> str:
    return "" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def _p(x) -> str:
    return "" if x is None or math.isnan(x) else f"{x:.3g}"


# --------------------------------------------------------------------------------------------
# report.md
# --------------------------------------------------------------------------------------------

def render(res: dict, run_dir: Path) -> Path:
    """Write report.md and figures/ for a run; returns the report path."""
    run_dir = Path(run_dir)
    figs = figures(res, run_dir / "figures")
    agg = res["aggregate"]
    seeds = res["seeds"]
    L = ["# kgsim run report", "",
         f"Seeds {seeds}; preset config in `config.toml`; kgsim {res['environment']['kgsim']}, torch "
         f"{res['environment']['torch']}, git {res['environment']['git_commit']}"
         f"{' (dirty)' if res['environment']['git_dirty'] else ''}. Figures are means with 95% Student-t "
         f"intervals over seeds (points; [lo, hi]; intervals of accuracies, rates and shares cut to [0, 100]); "
         f"with one seed, no interval.", ""]
    if excl := res.get("excluded_seeds"):
        L += [f"Left out (`run.unsplittable_seeds = \"exclude\"`, decided from the base model's probe before any "
              f"fine-tuning): {len(excl)} seed(s) whose base model knows too few facts to fill the splits: "
              + "; ".join(f"seed {e['seed']} ({e['reason'].split(' (')[0]})" for e in excl) + ".", ""]
    boot = any(v.get("method") for parts in res["observations"].values() for v in parts.values())
    reps = res["per_seed"][0].get("replicates", 1) if len(res["per_seed"]) == 1 else 1
    if boot and reps > 1:
        L += [f"One seed, {reps} fine-tuning replicates: the intervals of gaps and of the claims below are 95% "
              "two-stage bootstrap intervals (test facts, then replicates, resampled); they cover test-fact "
              "sampling and fine-tuning's batch order, not world and pretraining (that needs more seeds).", ""]
    elif boot:
        L += ["One seed: the intervals of gaps and of the claims below are 95% bootstrap intervals over "
              "test facts; they cover test-set sampling only (training randomness needs more seeds).", ""]
    vc = res["config"].get("verdicts")
    eq_rule = (f", or when two one-sided tests show it inside ±{100 * vc['margin']:g} points (verdict "
               f"\"equivalent to 0\", `verdicts.margin`)" if vc else "")
    target = (f"; \"seeds for {100 * vc['target_effect']:g}\" gives the seeds a one-sample t-test needs to detect "
              f"{100 * vc['target_effect']:g} points at 80% power, from this run's spread" if vc else "")
    L += ["## Observations", "",
          "Each observation is judged on one primary claim, declared in the config before the run "
          "(`[verdicts]`): it **holds** when the claim's 95% interval excludes 0 on the claimed side, "
          f"**fails** when it excludes 0 on the other side{eq_rule}, and is **undecided** otherwise (an interval "
          "covering 0 is absence of evidence; the column \"detectable\" gives the effect these seeds could "
          f"find at 80% power{target}). The other claims are secondary: with several seeds their t-test "
          "p-values are Holm-corrected within the observation.", ""]
    tgt = f"seeds for {100 * vc['target_effect']:g}" if vc else "seeds for target"
    for name, text in (("O1", "Δ_fact > 0 in-distribution, and it grows from ES to Con."),
                       ("O2", "the gap persists on Near-ID data and shrinks or vanishes on Open-World data"),
                       ("O3", "few-shot and CoT prompts shrink the gap (and in many settings reverse it)")):
        parts = res["observations"][name]
        L += [f"**{name}** ({text}): **{summarise_observation(parts)}** in this run (judged on its "
              "primary claim).", "",
              f"| claim | value (points) | verdict | detectable at 80% power | {tgt} | TOST p | Holm p |",
              "|---|---|---|---|---|---|---|"]
        L += [f"| {'**primary**: ' if v.get('primary') else ''}{k} | {_f(v)} | {v['verdict']} | "
              f"{_pts(v.get('mde'))} | {v.get('seeds_for_target', '')} | {_p(v.get('p_equivalence'))} | "
              f"{_p(v.get('p_holm'))} |" for k, v in parts.items()]
        L += [""]
    L += instruct_lines(res)
    L += variance_section(res)
    L += (_base_section(res, agg) + gap_tables(res, agg) + similarity_section(res) + factor_section(agg, res)
          + mechanism_section(res, agg)
          + test_filter_section(res, agg) + error_class_section(agg) + _two_hop_section(agg))
    L += checks_section(res)
    L += ["## Figures", ""] + [f"![{k}](figures/{Path(v).name})" for k, v in figs.items()] + [""]
    path = run_dir / "report.md"
    write_text(run_dir / "checks.md", checks_table(res))
    write_text(path, "\n".join(L))
    return path


def similarity_section(res: dict) -> list[str]:
    """Markdown lines: what each similarity bucket is made of (test facts from each structural split,
    summed over seeds) and its similarity range (mean over seeds); the histogram is a figure."""
    seeds = [s["similarity"] for s in res["per_seed"] if s.get("similarity")]
    if not seeds:
        return []
    L = ["## What the similarity buckets hold", "",
         "Each bucket's test facts by the structural split they come from (summed over seeds) and its range of "
         "max cosine similarity to the fine-tuning queries (mean over seeds); the histogram is "
         "`figures/similarity.png`. Mean similarity per split: "
         + ", ".join(f"{k} {np.nanmean([s['splits'][k]['mean'] for s in seeds]):.3f}" for k in seeds[0]["splits"])
         + ".", "", "| bucket | range | n | " + " | ".join(seeds[0]["splits"]) + " |",
         "|---|---|---|" + "---|" * len(seeds[0]["splits"])]
    for b in seeds[0]["buckets"]:
        bs = [s["buckets"][b] for s in seeds if b in s["buckets"]]
        n = sum(x["n"] for x in bs)
        parts = [sum(x["from"].get(k, 0) for x in bs) for k in seeds[0]["splits"]]
        L.append(f"| {b} | {np.nanmean([x['lo'] for x in bs]):.3f} to {np.nanmean([x['hi'] for x in bs]):.3f} | {n} | "
                 + " | ".join(f"{c} ({100 * c / n:.0f}%)" if n else "0" for c in parts) + " |")
    return L + [""]


def instruct_lines(res: dict) -> list[str]:
    """Markdown lines on O1's instruct clause: what this run's instruct stage did, or how to test it."""
    ins = [s["instruct"] for s in res["per_seed"] if s.get("instruct")]
    if not ins:
        return ["O1's clause on instruction-tuned models (a smaller gap) is not tested by this run: it has no "
                "instruct stage. `kgsim sweep --grid instruct.enabled=false,true` measures it (the instruct analogue: "
                "broad multi-template QA tuning on other relations before fine-tuning).", ""]
    i = ins[0]
    acc = lambda k: interval([x.get(k, float("nan")) for x in ins])  # noqa: E731
    return [f"**Instruct analogue**: before SliCK and fine-tuning, every base model here was tuned on {i['facts']} QA "
            f"facts of {i['relations']} relations fine-tuning does not use, asked in {i['templates']} question "
            "form(s), "
            f"for {i['steps']} steps (accuracy on those facts {_f(acc('instruct_acc_before'))} -> "
            f"{_f(acc('instruct_acc_after'))}; zero-shot ID extraction {_f(acc('qa_extraction_id_before'))} -> "
            f"{_f(acc('qa_extraction_id_after'))}). Every figure below is of the tuned model and its fine-tuned "
            "copies; O1's instruct clause is the gap here against a run without the stage.", ""]


def _sd(v) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{100 * math.sqrt(max(v, 0.0)):.1f}"


def _sd_interval(ci) -> str:
    """' [lo, hi]' in sd points from a variance interval, or '' where there is none."""
    if not ci or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in ci):
        return ""
    return f" [{_sd(ci[0])}, {_sd(ci[1])}]"


def variance_section(res: dict) -> list[str]:
    """Markdown lines: each primary contrast's spread split into world-and-pretraining, fine-tuning and
    test-fact sampling (``results["variance_components"]``, :func:`kgsim.study.stats.nested_components`),
    as standard deviations in points; with the seeds a target effect needs per replicate count."""
    vcs = res.get("variance_components")
    if not vcs:
        return []
    reps = (res["config"].get("run") or {}).get("ft_replicates", 1)
    t = (res["config"].get("verdicts") or {}).get("target_effect")
    tname = f"{100 * t:g} points" if t else "T"
    L = ["## Variance components", "",
         f"Where each primary contrast's spread comes from (sd in points). {len(res['seeds'])} seed(s) (a world and "
         f"a base model each) x {reps} fine-tuning replicate(s) (same data, their own batch order). Test facts: "
         "the mean bootstrap sd over each unit's test facts; fine-tuning: the sd across a seed's replicates; "
         "world and pretraining: the between-seed component less test-fact sampling (a seed's replicates "
         "share its test facts). Brackets: 95% intervals of each sd (chi-square; for world and pretraining "
         "the modified large-sample interval of a difference of mean squares). The intervals above are over "
         f"seeds' replicate means, and so combine all three. \"seeds for {tname}\": the seeds a one-sample "
         "t-test over seed means needs to detect that effect at 80% power with 1, 2 or 4 fine-tuning "
         "replicates per seed; \"at most\": the seeds it needs if the seed mean's sd is at the top of its "
         "interval, which few seeds make wide.", "",
         "| observation | primary claim | world + pretraining | fine-tuning | world + fine-tuning | test facts "
         f"| seed mean [95%] | seeds for {tname} (1 / 2 / 4 reps) | at most | what this design cannot separate |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for o, v in vcs.items():
        need = v.get("seeds_for_target") or {}
        need = " / ".join(str(need.get(j, need.get(str(j), "–"))) for j in (1, 2, 4)) if need else "–"
        world = _sd(v.get("world_pretraining")) + _sd_interval(v.get("world_pretraining_ci"))
        L.append(f"| {o} | {v['claim']} | {world} | "
                 f"{_sd(v.get('fine_tuning'))}{_sd_interval(v.get('fine_tuning_ci'))} | "
                 f"{_sd(v.get('world_and_fine_tuning'))} | {_sd(v.get('test_facts'))} | "
                 f"{_sd(v.get('per_seed_mean'))}{_sd_interval(v.get('per_seed_mean_ci'))} | {need} | "
                 f"{v.get('seeds_for_target_upper', '–')} | {v.get('note', '')} |")
    return L + [""]


def _base_section(res, agg) -> list[str]:
    base = agg.get("base", {})
    mem = base.get("memorisation", {})
    L = ["## Base model", "",
         f"- statement-form accuracy on facts shown at least once: {_f(mem.get('statement_acc_exposed'))}; "
         f"on never-shown facts: {_f(mem.get('statement_acc_never_shown'))} "
         f"(chance ≈ {_f(mem.get('chance'))})",
         f"- **extraction rate** (zero-shot QA accuracy on facts of subjects never seen as questions in "
         f"pretraining, among those the model answers in statement form): {_f(mem.get('extraction_rate'))}", "",
         "| times shown | facts | statement acc | QA acc (statement-only subjects) | QA acc (QA subjects) |",
         "|---|---|---|---|---|"]
    seeds = res["per_seed"]
    for i, b in enumerate(seeds[0]["base"]["memorisation"]["buckets"]):
        col = lambda key: _f(cut_to_unit(_interval_of([s["base"]["memorisation"]["buckets"][i][key] for s in seeds])))  # noqa
        L.append(f"| {b['exposure']} | {b['n']} | {col('statement_acc')} | "
                 f"{col('qa_acc_statement_only_subjects')} | {col('qa_acc_qa_subjects')} |")
    L += ["", "SliCK category (few-shot probe of the base model) against true exposure, summed over seeds:", "",
          f"| times shown | {' | '.join(CATEGORIES)} |", "|---|---|---|---|---|"]
    tables = [s["base"]["slick_by_exposure"] for s in seeds]
    for bucket in tables[0]:
        row = {c: sum(t[bucket][c] for t in tables) for c in tables[0][bucket]}
        L.append(f"| {bucket} | " + " | ".join(str(row[c]) for c in CATEGORIES) + " |")
    L += [""] + known_rules_section(res, agg)
    ft = agg.get("finetune", {})
    fc = res["config"]["finetune"]
    n = fc.get("size") or res["config"]["splits"]["ft_size"]
    rho = fc.get("unknown_share", 0.0)
    mixed = f"; {FT_MIXED} has round(ρ·n) = {round(rho * n)} Unknown facts (ρ = {rho:g})" if FT_MIXED in ft else ""
    L += ["## Fine-tuning", "",
          f"Every fine-tuning set holds n = {n} facts: {FT_KNOWN} none Unknown (ρ = 0), {FT_UNKNOWN} only Unknown "
          f"(ρ = 1){mixed}.", "",
          "| set | Early Stop step | dev acc at ES | first step the training set was fitted |", "|---|---|---|---|"]
    for which in [m for m in (FT_KNOWN, FT_MIXED, FT_UNKNOWN) if m in ft]:
        L.append(f"| {which} | {_f(_get(ft, which, 'es_step'), pct=False)} | {_f(_get(ft, which, 'es_dev_acc'))} | "
                 f"{_f(_get(ft, which, 'first_fitted_step'), pct=False)} |")
    L += ["", f"Convergence is the step budget ({res['config']['finetune']['steps']} steps).", ""]
    return L


def known_rules_section(res: dict, agg: dict) -> list[str]:
    """Markdown lines: the two Known rules against each other over the probed facts (counts summed
    over seeds) with Cohen's kappa, and which rule chose this run's fine-tuning sets and tests."""
    rules = [s["known_rules"] for s in res["per_seed"] if "known_rules" in s]
    if not rules:
        return []
    iv = agg.get("known_rules", {})
    by = res["config"]["run"]["known_by"]
    L = [f"Known by two rules: {rules[0]['rows']} (rows) against {rules[0]['columns']} (columns), probed facts "
         f"summed over seeds. Cohen's kappa on the facts both rules call Known or Unknown: "
         f"**{_kappa_iv(iv.get('kappa'))}** (agreement {_f(iv.get('agreement'))}%; "
         f"per seed {', '.join(_kappa(r['kappa']) for r in rules)}). This run's fine-tuning sets and test sets "
         f"follow the {'SliCK' if by == 'slick' else 'exposure'} rule (`run.known_by = \"{by}\"`); the other "
         "rule's gaps come from a run with the other setting (`kgsim sweep --grid run.known_by=slick,exposure`).",
         "", "| SliCK \\ exposure | " + " | ".join(AGREEMENT_LABELS) + " |", "|---|---|---|---|"]
    for a in AGREEMENT_LABELS:
        L.append(f"| {a} | " + " | ".join(str(sum(r["table"][a][b] for r in rules)) for b in AGREEMENT_LABELS) + " |")
    return L + [""]


def _kappa(x) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.2f}"


def _kappa_iv(iv: dict | None) -> str:
    """'0.42 [0.31, 0.53]' (Student t over seeds), or the one seed's value."""
    if not iv or iv.get("n", 0) == 0:
        return "–"
    return _kappa(iv["mean"]) + ("" if math.isnan(iv["lo"]) else f" [{_kappa(iv['lo'])}, {_kappa(iv['hi'])}]")


def _interval_of(values):
    return interval([float(v) for v in values])


def gap_tables(res: dict, agg: dict) -> list[str]:
    """Markdown lines: per stage, every one-hop split and prompt with FT-Known, FT-Unknown, the gap
    and the base model (each an interval dict of `agg`; prompts from ``res["config"]["prompts"]``)."""
    acc, gaps = agg.get("accuracy", {}), agg.get("gaps", {})
    prompts = [ZERO_SHOT, *(k_shot_name(k) for k in res["config"]["prompts"]["k_shots"])]
    measured = [p for by_split in gaps.values() for by_prompt in by_split.values() for p in by_prompt]
    prompts += [p for p in dict.fromkeys(measured) if p not in prompts and p not in (DIRECT_TWO_HOP, COT)]
    mixed = any(k.startswith(FT_MIXED + "/") for k in acc)           # 0 < finetune.unknown_share < 1
    L = ["## Accuracy and gaps", ""]
    recall = agg.get("recall_cot", {})
    if recall:
        L += [f"`{RECALL_COT}`: the model first answers another question about the subject (a fact of another "
              "relation, drawn per query), then the query, after demonstrations that do the same. Share of "
              "related facts recalled right, ID split: "
              + "; ".join(f"{m} {_f(v.get(ID))}" for m, v in recall.items()) + ".", ""]
    for st in STAGES:
        L += [f"### {STAGE_TITLES[st]}", "", "| split | prompt | FT-Known | FT-Unknown | Δ (points) | base |"
              + (" ft-mixed |" if mixed else ""), "|---|---|---|---|---|---|" + ("---|" if mixed else "")]
        for split in gaps.get(st, {}):
            if split in TWO_HOP_SPLITS or split_filter(split):         # filtered test sets: their own section
                continue
            for p in (p for p in prompts if p in gaps[st][split]):
                L.append(f"| {split} | {p} | {_f(_get(acc, label(FT_KNOWN, st), split, p))} | "
                         f"{_f(_get(acc, label(FT_UNKNOWN, st), split, p))} | {_f(_get(gaps, st, split, p))} | "
                         f"{_f(_get(acc, BASE, split, p))} |"
                         + (f" {_f(_get(acc, label(FT_MIXED, st), split, p))} |" if mixed else ""))
        L.append("")
    return L


def factor_section(agg: dict, res: dict | None = None) -> list[str]:
    """Markdown lines: the zero-shot gap on Near-ID and Open-World facts per level of each factor of
    distance from the fine-tuning data (relation, subject type, answer type; ``ft`` marks a type a
    fine-tuning relation takes), after the Open-World rule the run's splits record. Empty for a run
    without them."""
    fg = agg.get("factor_gaps", {})
    if not fg:
        return []
    rules = sorted({s.get("splits", {}).get("open_world_rule") for s in (res or {}).get("per_seed", [])} - {None})
    rule = [f"Open-World test facts: {'; '.join(rules)}.", ""] if rules else []
    L = ["## Near-ID and Open-World by factor", "",
         "The zero-shot gap on each split's facts grouped by one factor at a time: the relation, the "
         "subject's type and the answer's type (`ft`: a type some fine-tuning relation takes; `other`: "
         "none does), and the subject's graph distance to the nearest fine-tuning subject (hops over "
         "every fact, either direction). N = facts per seed (mean). A factor with one level does not "
         "vary in this world.", "", *rule,
         "| split | factor | level | N | Δ Early Stop | Δ Convergence |", "|---|---|---|---|---|---|"]
    for split in (NEAR_ID, OPEN_WORLD):
        for factor in FACTORS:
            levels = list(dict.fromkeys([*(_get(fg, CON, split, factor) or {}), *(_get(fg, ES, split, factor) or {})]))
            for lv in levels:
                n = _get(fg, CON, split, factor, lv, "n") or _get(fg, ES, split, factor, lv, "n")
                L.append(f"| {split} | {factor} | {lv} | {n['mean']:.0f} | "
                         f"{_f(_get(fg, ES, split, factor, lv, 'gap'))} | {_f(_get(fg, CON, split, factor, lv, 'gap'))} |")
    return L + [""] + _contrast_lines(factor_contrasts((res or {}).get("per_seed", [])))


def _contrast_lines(fc: dict) -> list[str]:
    """The near-minus-far gap per factor (:func:`kgsim.study.results.factor_contrasts`), paired within seed."""
    rows = [(split, factor) for split in (NEAR_ID, OPEN_WORLD) for factor in FACTORS
            if _get(fc, ES, split, factor) or _get(fc, CON, split, factor)]
    if not rows:
        return []
    L = ["Near minus far, paired within seed: the gap on the facts nearest the fine-tuning data minus the "
         "gap on the farthest, per factor (O2 predicts > 0); mean [95% t over the seeds that have both].", "",
         "| split | factor | near − far | seeds | Δ Early Stop | Δ Convergence |", "|---|---|---|---|---|---|"]
    for split, factor in rows:
        c = _get(fc, CON, split, factor) or _get(fc, ES, split, factor)
        L.append(f"| {split} | {factor} | {c['near']} − {c['far']} | {c['n']} | {_f(_get(fc, ES, split, factor))} | "
                 f"{_f(_get(fc, CON, split, factor))} |")
    return L + [""]


def mechanism_section(res: dict, agg: dict) -> list[str]:
    """Markdown lines: how each prompt moves the ID gap. Per stage and prompt, each fine-tuned model's
    gross gains and losses against zero-shot (facts the prompt gets right that zero-shot missed, and
    the reverse), and the shrink of the gap split exactly into FT-Known's net loss and FT-Unknown's
    net gain (shrink = Δ zero-shot − Δ prompt = (loss − gain)_Known + (gain − loss)_Unknown, per
    seed). Empty for a run without transitions."""
    tr = agg.get("transitions", {})
    if not tr:
        return []
    per_seed = res["per_seed"]
    L = ["## Mechanisms: what each prompt gains and loses (ID split)", "",
         "Gross gain = share of the ID test facts a prompt answers right that the zero-shot question got "
         "wrong; gross loss = the reverse (points; 95% intervals over seeds). The shrink of the gap splits "
         "exactly into FT-Known's net loss and FT-Unknown's net gain: shrink = (loss − gain) of FT-Known + "
         "(gain − loss) of FT-Unknown.", ""]
    pull = agg.get("pull", {})
    if pull:
        L += ["The pull toward the base model: a k-shot prompt moves each fine-tuned model a share λ of the way "
              "from its zero-shot accuracy to the base model's k-shot accuracy, acc(k) = acc(0) + λ·(base(k) − "
              "acc(0)). λ is fitted on the ID split (FT-Known and FT-Unknown) and predicts Near-ID and "
              "Open-World; residual = mean |measured − predicted| (points), beside the residual of \"the prompt "
              "changes nothing\" (λ = 0).", "",
              "| stage | prompt | λ | residual Near-ID | (λ = 0) | residual Open-World | (λ = 0) |",
              "|---|---|---|---|---|---|---|"]
        for st in (CON, ES):
            for p, v in (pull.get(st) or {}).items():
                L.append(f"| {STAGE_TITLES[st]} | {p} | {_kappa_iv(v.get('lambda'))} | "
                         f"{_f(_get(v, 'residual', NEAR_ID))} | {_f(_get(v, 'residual_no_pull', NEAR_ID))} | "
                         f"{_f(_get(v, 'residual', OPEN_WORLD))} | {_f(_get(v, 'residual_no_pull', OPEN_WORLD))} |")
        L.append("")
    for st in (CON, ES):
        kn, unk = label(FT_KNOWN, st), label(FT_UNKNOWN, st)
        prompts = [p for p in _get(tr, kn, ID) or {} if p in (_get(tr, unk, ID) or {})]
        if not prompts:
            continue
        L += [f"### {STAGE_TITLES[st]}", "",
              "| prompt | FT-Known gain | FT-Known loss | FT-Unknown gain | FT-Unknown loss | shrink | "
              "from FT-Known's net loss | from FT-Unknown's net gain |", "|---|---|---|---|---|---|---|---|"]
        for p in prompts:
            net_k = _interval_of([s["transitions"][kn][ID][p]["loss"] - s["transitions"][kn][ID][p]["gain"]
                                  for s in per_seed])
            net_u = _interval_of([s["transitions"][unk][ID][p]["gain"] - s["transitions"][unk][ID][p]["loss"]
                                  for s in per_seed])
            shrink = _interval_of([sum(x) for x in zip(net_k["values"], net_u["values"])])
            L.append(f"| {p} | {_f(_get(tr, kn, ID, p, 'gain'))} | {_f(_get(tr, kn, ID, p, 'loss'))} | "
                     f"{_f(_get(tr, unk, ID, p, 'gain'))} | {_f(_get(tr, unk, ID, p, 'loss'))} | {_f(shrink)} | "
                     f"{_f(net_k)} | {_f(net_u)} |")
        L.append("")
    return L


def test_filter_section(res: dict, agg: dict) -> list[str]:
    """Markdown lines: each structural split's gaps on test facts drawn with each filter of
    ``run.test_filters`` (SliCK-Known, exposure-Known, any), zero-shot and k-shot, and the k-shot
    shrink (zero-shot gap minus k-shot gap, per seed then over seeds): how far the Known filter on
    test sets decides O3. Empty for a run without filtered test sets."""
    acc = agg.get("accuracy", {})
    gaps = agg.get("gaps", {})
    drawn = [split_filter(n) for n in gaps.get(CON, {}) if split_filter(n)]
    if not drawn:
        return []
    by = res["config"]["run"]["known_by"]
    rows = sorted(set(drawn) | {(split, by) for split in STRUCTURAL_SPLITS},   # the run's own: the plain split
                  key=lambda sf: (STRUCTURAL_SPLITS.index(sf[0]), TEST_FILTERS.index(sf[1])))
    per_seed = res["per_seed"]
    ks = list(res["config"]["prompts"]["k_shots"])
    k = 4 if 4 in ks else max(ks)
    kp = k_shot_name(k)
    L = ["## Test-set filters", "",
         "Every structural split's test facts drawn three ways from the same pool (one fact per query, "
         "statement-only subjects, no fine-tuning or dev fact): those SliCK calls Known on the base model "
         "(**slick**), those shown at least `splits.known_min_exposure` times in pretraining (**exposure**), "
         f"and any (**unfiltered**). This run's own test sets are the `{by}` rows (`run.known_by`). "
         f"Shrink = zero-shot gap minus {kp} gap, per seed (points; 95% intervals as in the gap tables).", ""]
    for st in (CON, ES):
        L += [f"### {STAGE_TITLES[st]}", "",
              f"| split | filter | N | FT-Known | FT-Unknown | Δ zero-shot | Δ {kp} | shrink |", "|---|---|---|---|---|---|---|---|"]
        for split, filt in rows:
            n = split if filt == by else filtered_split(split, filt)
            sizes = [_get(s.get("sizes", {}), label(FT_KNOWN, st), n, ZERO_SHOT) for s in per_seed]
            size = "/".join(sorted({str(x["N"]) for x in sizes if x}))
            shrink = _interval_of([_get(s["gaps"], st, n, ZERO_SHOT) - _get(s["gaps"], st, n, kp)
                                   for s in per_seed if _get(s["gaps"], st, n, kp) is not None])
            L.append(f"| {split} | {filt}{' (own)' if filt == by else ''} | {size} | "
                     f"{_f(_get(acc, label(FT_KNOWN, st), n, ZERO_SHOT))} | "
                     f"{_f(_get(acc, label(FT_UNKNOWN, st), n, ZERO_SHOT))} | {_f(_get(gaps, st, n, ZERO_SHOT))} | "
                     f"{_f(_get(gaps, st, n, kp))} | {_f(shrink)} |")
        L.append("")
    return L


def error_class_section(agg: dict) -> list[str]:
    """Markdown lines: "Errors by class", each model's zero-shot wrong answers on each structural
    split (``agg["error_classes"]``): how many, and their shares per class. Empty for a run that did
    not classify its errors."""
    errors = agg.get("error_classes", {})
    rows = error_class_rows(errors)
    if not rows:
        return []
    L = ["## Errors by class", "",
         "Each wrong zero-shot answer, in the first class it fits: **from FT set**, an entity that is the "
         "answer of a fact in the model's own fine-tuning set (any relation); **right type**, otherwise an "
         "entity of the relation's answer type; **other**, anything else (another type, a token naming no "
         "entity). The base model has no fine-tuning set: its rows classify its errors against each "
         "fine-tuned model's set, the reference for that model's share. Shares are of the errors "
         "(points; 95% intervals over seeds).", "",
         "| model | split | errors (of N) | % from FT set | % right type | % other |", "|---|---|---|---|---|---|"]
    for r in rows:
        for split in STRUCTURAL_SPLITS:
            c = _get(errors, r, split, ZERO_SHOT)
            if not c:
                continue
            errs = _f(c["errors"], pct=False) if c["errors"]["n"] > 1 else f"{c['errors']['mean']:g}"
            L.append(f"| {_row_name(r)} | {split} | {errs} (of {c['n']['mean']:g}) | "
                     + " | ".join(_f(c[cls]) for cls in ERROR_CLASSES) + " |")
    return L + [""]


def _two_hop_section(agg) -> list[str]:
    th = agg.get("two_hop", {})
    if not th:
        return []
    in_prompt = any(v.get("predicted_cot_in_prompt") is not None for v in th.values())
    L = ["## 2-hop queries: direct vs Chain of Thought", "",
         "CoT predicted (zero-shot) = share of 2-hop queries whose two one-hop facts are both in the model's "
         "zero-shot edge set (path connectivity); measured = CoT accuracy. "
         + ("In the CoT prompt: bridge = first step names the bridge entity; 2nd hop = second step right when "
            "given the true bridge; predicted (in prompt) = both right for the same query, the hops measured "
            "where CoT runs (the zero-shot prediction misses what the prompt adds or takes away). "
            if in_prompt else "")
         + "Direct 2-hop is in format only when pretraining shows composed questions "
           "(`corpus.two_hop_qa_share` > 0).", "",
         "| model | direct | CoT measured | CoT predicted (zero-shot) | bridge | "
         + ("2nd hop (in prompt) | CoT predicted (in prompt) |" if in_prompt else ""),
         "|---|---|---|---|---|" + ("---|---|" if in_prompt else "")]
    for m, v in th.items():
        L.append(f"| {m} | {_f(v.get('direct'))} | {_f(v.get('cot'))} | {_f(v.get('predicted_cot'))} | "
                 f"{_f(v.get('bridge'))} |"
                 + (f" {_f(v.get('hop2_in_prompt'))} | {_f(v.get('predicted_cot_in_prompt'))} |" if in_prompt else ""))
    return L + [""]


def checks_section(res: dict) -> list[str]:
    """Markdown lines: the theory checks of every seed (``res["per_seed"][i]["checks"]``), one row
    per statement and kind."""
    rows = [c for s in res["per_seed"] for c in s.get("checks", [])]
    if not rows:
        return ["## Theory checks", "", "No statement checks were recorded for this run.", ""]
    by: dict = {}
    for c in rows:
        by.setdefault((c["name"], c["kind"]), []).append(c)
    head = ["| statement | kind | instances | holds | assumptions held | holds where assumptions held | "
            "largest |residual| where it fails |", "|---|---|---|---|---|---|---|"]
    L = ["## Theory checks (science.md §2), all seeds", "",
         "Every statement held against every (stage, split, prompt) of every seed; the full table with "
         "each instance's sides and residual is in `checks.md` (and `kgsim check RUN_DIR` prints it). "
         "A statement whose assumptions held in few instances was rarely in scope: its \"holds\" count "
         "says little. \"T1 equal recovery rates\" is a hypothesis test per instance (Fisher's exact test "
         "of q_kn = q_unk on the missing test edges each model's prompt recovers; holds = p >= α, with no "
         "correction across instances; the p-values are in `checks.md`).", "", "### Statements that can fail", "",
         *head]
    book = ["", "### Consistency checks of the bookkeeping", "",
            f"{' and '.join(BOOKKEEPING)} hold for any edge sets (set algebra): a failure here is a bug in "
            "the measurement, not a finding about the models.", "", *head]
    for (name, kind), cs in by.items():
        ok = [c for c in cs if all(h for _, h in c["assumptions"])]
        fails = [abs(c["residual"]) for c in cs if not c["holds"]]
        row = (f"| {name} | {kind} | {len(cs)} | {sum(c['holds'] for c in cs)} | {len(ok)} | "
               f"{sum(c['holds'] for c in ok)} / {len(ok)} | {max(fails) if fails else 0:.4g} |")
        (book if name.split()[0] in BOOKKEEPING else L).append(row)
    return L + book + [""]


BOOKKEEPING = ("P1", "L1")      # identities of set algebra: consistency checks, not tests of the theory


def checks_table(res) -> str:
    """The full table of every check of every seed (Markdown)."""
    L = ["# Theory checks, every instance", "", "| seed | statement | scope | kind | lhs | rhs | holds | "
         "assumptions (failed ones named) | residual | tolerance | p |", "|" + "---|" * 11]
    for s in res["per_seed"]:
        for c in s.get("checks", []):
            failed = [n for n, h in c["assumptions"] if not h]
            assum = "all held" if not failed else "failed: " + "; ".join(failed)
            L.append(f"| {s['seed']} | {c['name']} | {c['scope']} | {c['kind']} | {c['lhs']:.4g} | {c['rhs']:.4g} | "
                     f"{'yes' if c['holds'] else '**no**'} | {assum} | {c['residual']:.4g} | "
                     f"{('α=' if c.get('p_value') is not None else '') + format(c['tolerance'], '.3g')} | "
                     f"{'' if c.get('p_value') is None else format(c['p_value'], '.3g')} |")
    return "\n".join(L) + "\n"
