"""The observation verdict rule on constructed results: one primary claim decides; an interval
that covers 0 gives "undecided" (never "does not hold"); secondary claims are Holm-corrected."""
import numpy as np
import pytest

from kgsim.study.results import PRIMARY, observations, summarise_observation
from kgsim.study.stats import holm

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
