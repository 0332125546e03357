"""The EntityQuestions world (Sciavolino et al. 2021, MIT licence): real named facts as a kgsim world
that the models are pretrained on from scratch, in kgsim's tokens; and a TSV cut from it through the
realkg preset. Tests on the full dataset are skipped where it is absent."""
import json
from pathlib import Path

import numpy as np
import pytest

from kgsim.cli import main
from kgsim.core.config import ConfigError, GraphConfig, load_config
from kgsim.core.rng import stream
from kgsim.world.build import build_world
from kgsim.world.graph import load_entityquestions, load_tsv

EQ_DATA = Path("/work/shared/data/entityquestions")
EQ_FIXTURE = Path(__file__).parent / "fixtures" / "entityquestions"
needs_eq = pytest.mark.skipif(not (EQ_DATA / "train").is_dir(), reason="EntityQuestions not at " + str(EQ_DATA))
# A short study: every stage runs, nothing has to be learnt well.
SHORT = ["--set", "pretrain.steps=40", "--set", "finetune.steps=10", "--set", "finetune.eval_every=5",
         "--set", "probe.n_exemplar_sets=1", "--set", "probe.n_samples=2"]


def kgsim(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_entityquestions_fixture_reads_as_a_graph():
    kg = load_entityquestions(EQ_FIXTURE)
    assert kg.relation_names == ["P17", "P36", "P106"]                       # natural order
    names = {n: i for i, n in enumerate(kg.entity_names)}
    assert "France" in names and "Painblanc" in names
    p17 = kg.relation_names.index("P17")
    assert kg.is_correct(np.array([names["Painblanc"]]), np.array([p17]), np.array([names["France"]]))[0]
    sub = load_entityquestions(EQ_FIXTURE, GraphConfig(generator="entityquestions", data_path=str(EQ_FIXTURE),
                                                       relations=("P36",)))
    assert sub.relation_names == ["P36"] and sub.n_facts < kg.n_facts
    with pytest.raises(ConfigError, match=r"graph.relations = \['P999'\]: .* no files for relation 'P999'"):
        load_entityquestions(EQ_FIXTURE, GraphConfig(generator="entityquestions", data_path="x", relations=("P999",)))


@needs_eq
def test_entityquestions_world_keeps_whole_subjects_and_named_facts():
    cfg = load_config("entityquestions", overrides=[f"graph.data_path='{EQ_DATA}'"])
    kg = load_entityquestions(EQ_DATA, cfg.graph, stream(0, "graph"))
    assert kg.n_facts <= cfg.graph.max_facts and kg.n_facts > 0.95 * cfg.graph.max_facts
    assert kg.relation_names == ["P19", "P20", "P26", "P40", "P69", "P106"]
    full = load_entityquestions(EQ_DATA, GraphConfig(generator="entityquestions", data_path=str(EQ_DATA),
                                                     relations=cfg.graph.relations))
    per_subject = {}
    for g in (kg, full):
        names_s = np.array(g.entity_names, dtype=object)[g.s]
        per_subject[id(g)] = dict(zip(*np.unique(names_s, return_counts=True)))
    cut, whole = per_subject[id(kg)], per_subject[id(full)]
    assert all(whole[name] == n for name, n in cut.items())                   # whole subjects only
    names = set(kg.entity_names)
    assert {"politician", "actor"} <= names                                    # occupations as entities
    world = build_world(cfg)
    assert world.splits.meta["ft_relation_names"] == ["P20", "P40"]
    assert len(world.splits.test["near-id"]) == cfg.splits.test_size


@needs_eq
@pytest.mark.slow
def test_kgsim_run_on_a_tsv_cut_from_entityquestions(capsys, tmp_path):
    """The realkg preset on a TSV cut from EntityQuestions (its facts in tab-separated names)."""
    cut = load_entityquestions(EQ_DATA, GraphConfig(generator="entityquestions", data_path=str(EQ_DATA),
                                                    max_facts=1500), stream(0, "graph"))
    tsv = tmp_path / "eq.tsv"
    cut.to_tsv(tsv)
    assert load_tsv(tsv).n_facts == cut.n_facts
    out = tmp_path / "run"
    code, _, err = kgsim(capsys, "run", "--preset", "realkg", "--set", f"graph.tsv_path='{tsv}'", *SHORT,
                         "--set", "splits.ft_size=16", "--out", out)
    assert code == 0, err
    assert (out / "report.md").is_file()


@needs_eq
@pytest.mark.slow
def test_entityquestions_world_runs_end_to_end(capsys, tmp_path):
    out = tmp_path / "run"
    code, _, err = kgsim(capsys, "run", "--preset", "entityquestions", "--set", f"graph.data_path='{EQ_DATA}'",
                         *SHORT, "--set", "finetune.batch_size=8", "--set", "run.known_by=exposure", "--out", out)
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    mem = res["per_seed"][0]["base"]["memorisation"]
    assert [b["exposure"] for b in mem["buckets"]][0] == "0-0" and sum(b["n"] for b in mem["buckets"]) > 3900
    assert "**O1**" in (out / "report.md").read_text()
