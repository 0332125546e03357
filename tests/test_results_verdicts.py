"""The observation verdict rule on constructed results: one primary claim, declared in the config,
decides; an interval that covers 0 gives "undecided" (never "does not hold") unless two one-sided
tests show equivalence within the declared margin ("fails"); secondary claims are Holm-corrected;
bad rules are one line and exit 2 before any work."""
import numpy as np
import pytest

from kgsim.core.config import VerdictConfig
from kgsim.study.results import (
    EQUIVALENT,
    PRIMARY,
    check_verdicts,
    observations,
    summarise_observation,
    verdict_rules,
)
from kgsim.study.stats import holm, seeds_needed

SPLITS = ("id", "near-id", "open-world")
PROMPTS = ("zero-shot", "1-shot", "4-shot")


def _seeds(gap, n=8, seed=0):
    """per-seed dicts whose gaps[stage][split][prompt] = gap(stage, split, prompt) + noise. The noise
    of each cell is antithetic (n/2 draws and their negatives), so every cell's mean over seeds, and
    every difference of cells, is exactly the noiseless value while the spread is real."""
    rng = np.random.default_rng(seed)
    half = rng.normal(0, 0.02, (n // 2, 2, len(SPLITS), len(PROMPTS)))
    noise = np.concatenate([half, -half])
    return [{"gaps": {st: {sp: {pr: gap(st, sp, pr) + noise[i, a, b, c] for c, pr in enumerate(PROMPTS)}
                           for b, sp in enumerate(SPLITS)} for a, st in enumerate(("es", "con"))}}
            for i in range(n)]


def test_noise_around_zero_everywhere_is_undecided_not_does_not_hold():
    obs = observations(_seeds(lambda st, sp, pr: 0.0), (1, 4), [])
    for name, parts in obs.items():
        verdict = summarise_observation(parts)
        assert verdict.startswith("undecided"), (name, verdict)
        assert "detectable at 80% power" in verdict
        assert sum(bool(c.get("primary")) for c in parts.values()) == 1
        assert parts[PRIMARY[name]]["primary"]


def test_a_clear_effect_holds_and_its_opposite_fails():
    grows = lambda st, sp, pr: (0.5 if st == "con" else 0.1) * (0.3 if pr == "4-shot" else 1.0) \
        * (0.2 if sp == "open-world" else 1.0)  # noqa: E731
    obs = observations(_seeds(grows), (1, 4), [])
    assert [summarise_observation(obs[o]) for o in ("O1", "O2", "O3")] == ["holds", "holds", "holds"]
    shrinks = lambda st, sp, pr: (0.1 if st == "con" else 0.5)  # noqa: E731
    assert summarise_observation(observations(_seeds(shrinks), (1, 4), [])["O1"]) == "fails"


def test_secondary_claims_are_holm_corrected_within_their_observation():
    obs = observations(_seeds(lambda st, sp, pr: 0.01, seed=3), (1, 4), [])
    for parts in obs.values():
        sec = [(n, c) for n, c in parts.items() if not c.get("primary")]
        raw = [c["p"] for _, c in sec]
        assert [c["p_holm"] for _, c in sec] == pytest.approx(holm(raw).tolist())
        assert all(c["p_holm"] >= c["p"] for _, c in sec)


# --- declared rules ([verdicts]): equivalence margin, target effect, the primary by name -------

def _rules(**kw):
    return verdict_rules(VerdictConfig(**kw))


def test_noise_well_inside_the_margin_fails_by_equivalence_and_outside_it_stays_undecided():
    """Spread 0.02 around 0 over 8 seeds: TOST shows |mean| < 0.05 (fails: equivalent to 0); with a
    margin of 0.005 it cannot (undecided). The TOST p is statsmodels' one-sample TOST."""
    from statsmodels.stats.weightstats import ttost_paired

    seeds = _seeds(lambda st, sp, pr: 0.0)
    wide = observations(seeds, (1, 4), [], rules=_rules(margin=0.05))
    primary = wide["O1"][PRIMARY["O1"]]
    assert primary["verdict"] == EQUIVALENT
    assert summarise_observation(wide["O1"]).startswith("fails (equivalent to 0 within ±5 points")
    values = np.array(primary["values"])
    p_sm = ttost_paired(values, np.zeros_like(values), -0.05, 0.05)[0]
    assert primary["p_equivalence"] == pytest.approx(p_sm, rel=1e-9)
    narrow = observations(seeds, (1, 4), [], rules=_rules(margin=0.005))
    assert summarise_observation(narrow["O1"]).startswith("undecided")
    assert narrow["O1"][PRIMARY["O1"]]["verdict"] == "inconclusive"


def test_a_clear_effect_is_never_called_equivalent():
    grows = lambda st, sp, pr: (0.5 if st == "con" else 0.1)  # noqa: E731
    obs = observations(_seeds(grows), (1, 4), [], rules=_rules(margin=0.5))
    assert summarise_observation(obs["O1"]) == "holds"


def test_seeds_for_the_target_effect_come_from_the_spread():
    obs = observations(_seeds(lambda st, sp, pr: 0.0), (1, 4), [], rules=_rules(margin=0.001, target_effect=0.1))
    c = obs["O1"][PRIMARY["O1"]]
    assert c["seeds_for_target"] == seeds_needed(float(np.std(c["values"], ddof=1)), 0.1)
    assert f"{c['seeds_for_target']} seeds would detect 10" in summarise_observation(obs["O1"])


def test_the_declared_primary_decides():
    """Primary O3 moved from 4-shot to 1-shot: only the 1-shot claim carries the flag, and the
    observation follows it (the 1-shot prompt shrinks the gap, the 4-shot one widens it)."""
    g = lambda st, sp, pr: {"zero-shot": 0.3, "1-shot": 0.1, "4-shot": 0.6}[pr]  # noqa: E731
    default = observations(_seeds(g), (1, 4), [])
    assert summarise_observation(default["O3"]) == "fails"
    moved = observations(_seeds(g), (1, 4), [], rules=_rules(primary_o3="con: 1-shot shrinks the ID gap"))
    assert summarise_observation(moved["O3"]) == "holds"
    assert [n for n, c in moved["O3"].items() if c.get("primary")] == ["con: 1-shot shrinks the ID gap"]


@pytest.mark.parametrize("override, message", [
    ("verdicts.primary_o3='con: 3-shot shrinks the ID gap'", "verdicts.primary_o3 = 'con: 3-shot shrinks the ID gap': "
                                                            "not a claim of O3 in this run"),
    ("verdicts.margin=0", "verdicts.margin = 0"),
    ("verdicts.margin=5", "verdicts.margin = 5.0: gaps are fractions"),
    ("verdicts.target_effect=-0.1", "verdicts.target_effect = -0.1"),
    ("verdicts.primary_o1=''", "verdicts.primary_o1 = ''"),
])
def test_bad_verdict_rules_are_one_line_and_exit_2(capsys, tmp_path, override, message):
    from kgsim.cli import main

    code = main(["run", "--preset", "smoke", "--set", override, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_every_preset_declares_primaries_its_run_judges():
    from kgsim.core.config import load_config

    for preset in ("smoke", "default"):
        check_verdicts(load_config(preset))


def test_bookkeeping_identities_are_listed_apart_from_statements_that_can_fail():
    from kgsim.study.report import checks_section

    def check(name, holds, in_scope=True):
        return {"name": name, "kind": "exact", "holds": holds, "residual": 0.0 if holds else 0.3,
                "assumptions": [("a", in_scope)]}
    res = {"per_seed": [{"checks": [check("P1 gap as edge count", True), check("L1 gap accounting", True),
                                    check("R1 reversal condition", False), check("C1 common augmentation", True,
                                                                                 in_scope=False)]}]}
    text = "\n".join(checks_section(res))
    can_fail, book = text.split("### Consistency checks of the bookkeeping")
    assert "| R1 reversal condition | exact | 1 | 0 | 1 | 0 / 1 | 0.3 |" in can_fail
    assert "| C1 common augmentation | exact | 1 | 1 | 0 | 0 / 0 | 0 |" in can_fail
    assert "P1 gap as edge count" in book and "L1 gap accounting" in book and "P1" not in can_fail


def test_figure_captions_name_the_interval_kind():
    from kgsim.study.figures import interval_kind

    boot = {"mean": 0.1, "lo": 0.0, "hi": 0.2, "n": 1, "method": "bootstrap over test facts"}
    seeds = {"mean": 0.1, "lo": 0.0, "hi": 0.2, "n": 5}
    one = {"mean": 0.1, "lo": float("nan"), "hi": float("nan"), "n": 1}
    assert interval_kind([boot, None]) == "95% bootstrap intervals over test facts, one seed"
    assert interval_kind([seeds, one]) == "95% Student-t intervals over 5 seeds"
    assert interval_kind([one]) == "one seed: no interval"
