"""run.unsplittable_seeds: a seed whose base model knows too few facts to fill the splits either stops
the run with one line naming the seed and the key ("fail") or is left out before fine-tuning
("exclude"), with its reason on disk; it never changes a seed's key."""
import json

import pytest

from kgsim.core.config import ConfigError, load_config, replace
from kgsim.study.runner import protocol_dict, run_seed
from kgsim.study.stages import TooLittleKnown

# Known by SliCK after two pretraining steps: the base model knows next to nothing, while the world's own
# splits (ground-truth exposure) are drawn as usual.
UNTRAINED = ['run.known_by="slick"', "pretrain.steps=2", "pretrain.eval_every=1", "pretrain.ckpt_every=1",
             "pretrain.warmup_steps=1"]


def test_an_unsplittable_seed_fails_or_is_excluded(tmp_path):
    cache = tmp_path / "cache"
    failing = load_config("smoke", overrides=UNTRAINED)
    with pytest.raises(TooLittleKnown, match=r"^splits\.\w+ = \d+: .*run.unsplittable_seeds = 'exclude'"):
        run_seed(failing, 0, tmp_path / "fail", cache)
    assert not (tmp_path / "fail" / "seed-0" / "results.json").exists()
    assert issubclass(TooLittleKnown, ConfigError)                   # the CLI's one line and exit 2

    excluding = load_config("smoke", overrides=[*UNTRAINED, 'run.unsplittable_seeds="exclude"'])
    rec = run_seed(excluding, 0, tmp_path / "excl", cache)           # the cached world and base model
    assert rec["seed"] == 0 and rec["excluded"].startswith("splits.")
    assert json.loads((tmp_path / "excl" / "seed-0" / "excluded.json").read_text()) == rec
    assert not any((tmp_path / "excl" / "seed-0").glob("ft-*"))       # nothing after the probe ran
    assert protocol_dict(excluding) == protocol_dict(failing)        # no seed's key depends on the choice
    assert protocol_dict(replace(excluding, seed=3)) == protocol_dict(failing)
