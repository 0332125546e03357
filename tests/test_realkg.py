"""Real knowledge graphs through the whole study: TSVs shaped like the usual benchmark KGs (100-200
entities, 40+ relations, most queries with several answers) through the realkg preset; a graph too
small for a setting gets one line naming a setting that works (EntityQuestions: test_entityquestions.py)."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgsim.cli import main
from kgsim.core.config import ConfigError, load_config
from kgsim.world.build import build_world
from kgsim.world.graph import load_tsv
from kgsim.world.splits import probe_candidates, query_representatives

# A short study: every stage runs, nothing has to be learnt well.
SHORT = ["--set", "pretrain.steps=40", "--set", "finetune.steps=10", "--set", "finetune.eval_every=5",
         "--set", "probe.n_exemplar_sets=1", "--set", "probe.n_samples=2"]


def benchmark_tsv(path: Path, n_entities: int = 150, n_relations: int = 46, extra_answers: float = 2.5,
                  seed: int = 0) -> Path:
    """A TSV shaped like UMLS or Kinship: each relation links a random set of subjects (10-45% of the
    entities) to answers from a random range set; a query has 1 + Poisson(extra_answers) answers, so
    most queries have several."""
    rng = np.random.default_rng(seed)
    lines = []
    for r in range(n_relations):
        dom = rng.choice(n_entities, int(rng.uniform(0.10, 0.45) * n_entities), replace=False)
        rng_set = rng.choice(n_entities, int(rng.integers(6, 40)), replace=False)
        for s in dom:
            k = min(1 + rng.poisson(extra_answers), len(rng_set))
            lines += [f"entity {s}\trelation {r}\tentity {a}" for a in rng.choice(rng_set, k, replace=False)]
    path.write_text("\n".join(lines) + "\n")
    return path


def multi_answer_share(kg) -> float:
    keys = kg.query_keys(kg.s, kg.r)
    _, counts = np.unique(keys, return_counts=True)
    return float((counts > 1).mean())


def kgsim(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------------------------
# Worlds of benchmark-shaped TSVs (Hypothesis over the shapes)
# --------------------------------------------------------------------------------------------

@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(n_entities=st.integers(100, 200), n_relations=st.integers(40, 60), extra=st.floats(1.8, 4.0),
       seed=st.integers(0, 2**16), world_seed=st.integers(0, 3))
def test_realkg_preset_builds_a_world_for_every_benchmark_shape(tmp_path_factory, n_entities, n_relations, extra,
                                                                seed, world_seed):
    tsv = benchmark_tsv(tmp_path_factory.mktemp("kg") / "kg.tsv", n_entities, n_relations, extra, seed)
    cfg = load_config("realkg", overrides=[f"graph.tsv_path='{tsv}'", f"seed={world_seed}"])
    world = build_world(cfg)
    kg, sp = world.kg, world.splits
    assert multi_answer_share(kg) >= 0.8 and kg.n_relations >= 40 and kg.n_entities <= n_entities
    sp.check_disjoint()
    sets = {k: v for k, v in sp.named_sets().items() if k != "demos"}
    # one fact per query, and no query in two sets (a multi-answer query is never split across sets)
    keys = {k: kg.query_keys(kg.s[v], kg.r[v]) for k, v in sets.items()}
    assert all(len(np.unique(k)) == len(k) for k in keys.values())
    allk = np.concatenate(list(keys.values()))
    assert len(np.unique(allk)) == len(allk)
    rep = query_representatives(kg)
    assert all(rep[v].all() for v in sets.values())
    # multi-answer queries are fine-tuned on one answer and tested: they are in the sets
    n_ans = kg.n_answers()
    assert (n_ans[np.concatenate(list(sets.values()))] > 1).mean() > 0.5
    # Unknown: no answer of the query ever shown; Known: the fine-tuned answer shown often enough
    unk = sp.ft_unknown
    assert all(kg.exposure[(kg.s == kg.s[f]) & (kg.r == kg.r[f])].max() == 0 for f in unk)
    assert (kg.exposure[sp.ft_known] >= cfg.splits.known_min_exposure).all()
    # every relation prompted in tests or SliCK has its demonstrations
    used = np.unique(kg.r[np.concatenate([*sets.values(), probe_candidates(kg, sp)])])
    assert all(len(sp.demos[int(r)]) >= cfg.splits.min_demo_pool for r in used)
    assert all(len(v) <= cfg.splits.n_demo_pool for v in sp.demos.values())


def test_fine_tuning_relations_named_by_the_user(tmp_path):
    tsv = benchmark_tsv(tmp_path / "kg.tsv", seed=3)
    auto = build_world(load_config("realkg", overrides=[f"graph.tsv_path='{tsv}'"]))
    names = auto.splits.meta["ft_relation_names"]
    kg = auto.kg
    same = build_world(load_config("realkg", overrides=[f"graph.tsv_path='{tsv}'",
                                                      f"splits.ft_relation_names={names[::-1]}"]))
    assert np.array_equal(same.splits.ft_relations, auto.splits.ft_relations)
    assert np.array_equal(same.splits.test["open-world"], auto.splits.test["open-world"])
    two = names[-2:]
    w = build_world(load_config("realkg", overrides=[f"graph.tsv_path='{tsv}'", "splits.ft_relations=2",
                                                   f"splits.ft_relation_names={two}", "splits.ft_size=8",
                                                   "splits.dev_size=4", "splits.test_size=8"]))
    assert w.splits.meta["ft_relation_names"] == two
    for ids in (w.splits.ft_known, w.splits.ft_unknown, w.splits.dev, w.splits.test["id"]):
        assert {kg.relation_name(int(r)) for r in kg.r[ids]} <= set(two)
    assert not {kg.relation_name(int(r)) for r in kg.r[w.splits.test["near-id"]]} & set(two)
    with pytest.raises(ConfigError, match=r"splits.ft_relation_names = \['no such'\]: the graph has no relation"):
        build_world(load_config("realkg", overrides=[f"graph.tsv_path='{tsv}'", "splits.ft_relations=1",
                                                   "splits.ft_relation_names=['no such']"]))
    with pytest.raises(ConfigError, match="names 1 relations but splits.ft_relations = 6"):
        load_config("realkg", overrides=[f"graph.tsv_path='{tsv}'", "splits.ft_relation_names=['x']"])


# --------------------------------------------------------------------------------------------
# A graph too small for a setting: one line, and the setting it names works
# --------------------------------------------------------------------------------------------

def test_too_small_graph_gets_one_line_naming_a_setting_that_works(capsys, tmp_path):
    tsv = benchmark_tsv(tmp_path / "small.tsv", n_entities=60, n_relations=12, seed=5)
    overrides = [f"graph.tsv_path='{tsv}'"]
    seen = []
    for _ in range(8):                                 # follow the advice until the world builds
        code, _, err = kgsim(capsys, "graph", "--preset", "realkg", *sum((["--set", o] for o in overrides), []),
                             "--out", tmp_path / "w")
        if code == 0:
            break
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        m = re.search(r"the largest (splits\.\w+) that fits is (\d+)", err)
        assert m, err                                  # every refusal names a value that fits
        seen.append(m.group(1))
        overrides.append(f"{m.group(1)}={m.group(2)}")
    assert code == 0 and seen, (seen, err)
    assert (tmp_path / "w" / "splits.npz").is_file()


def test_demonstration_pool_short_of_n_demo_pool(capsys, tmp_path):
    """With the smoke preset (every relation must fill splits.n_demo_pool), one line says which
    relation falls short and which key lets such relations stay out of fine-tuning and tests."""
    tsv = benchmark_tsv(tmp_path / "kg.tsv", seed=1)
    code, _, err = kgsim(capsys, "graph", "--preset", "smoke", "--set", "graph.generator=tsv",
                         "--set", f"graph.tsv_path='{tsv}'", "--set", "splits.n_demo_pool=16",
                         "--out", tmp_path / "w")
    assert code == 2 and err.count("\n") == 1
    assert "splits.n_demo_pool = 16: relation 'relation" in err and "splits.min_demo_pool" in err


# --------------------------------------------------------------------------------------------
# The whole study on a benchmark-shaped TSV
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_kgsim_run_realkg_on_a_benchmark_tsv(capsys, tmp_path):
    tsv = benchmark_tsv(tmp_path / "kg.tsv", n_entities=140, n_relations=44, seed=11)
    assert multi_answer_share(load_tsv(tsv)) >= 0.8
    out = tmp_path / "run"
    code, stdout, err = kgsim(capsys, "run", "--preset", "realkg", "--set", f"graph.tsv_path='{tsv}'", *SHORT,
                              "--out", out)
    assert code == 0, err
    assert (out / "report.md").is_file() and "report.md" in stdout
    res = json.loads((out / "results.json").read_text())
    seed = res["per_seed"][0]
    assert seed["world"]["multi_answer_queries"] > 0
    gaps = seed["gaps"]
    assert set(gaps) == {"es", "con"} and "zero-shot" in gaps["con"]["id"]
    # test facts include multi-answer queries, scored with any true answer
    world = build_world(load_config("realkg", overrides=[f"graph.tsv_path='{tsv}'"]))
    edges = json.loads((out / "seed-0" / "edges.json").read_text())
    test_ids = np.array(edges["splits"]["id"])
    assert (world.kg.n_answers()[test_ids] > 1).any()
    assert "**O1**" in (out / "report.md").read_text()


def test_an_edited_graph_file_is_a_new_world(tmp_path):
    """Worlds and base models are cached by config hash; for a graph read from a file the key also
    covers the file's contents, so an edited TSV at the same path is not served from the cache."""
    from kgsim.study.stages import base_hash
    from kgsim.world.build import world_hash

    tsv = benchmark_tsv(tmp_path / "kg.tsv", seed=2)
    cfg = load_config("realkg", overrides=[f"graph.tsv_path='{tsv}'"])
    before = world_hash(cfg), base_hash(cfg)
    assert (world_hash(cfg), base_hash(cfg)) == before
    tsv.write_text(tsv.read_text() + "entity 1\trelation 0\tentity 999\n")
    assert world_hash(cfg) != before[0] and base_hash(cfg) != before[1]
