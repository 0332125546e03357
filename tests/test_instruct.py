"""The instruct analogue (issue 12): ``[instruct]``, a broad QA-tuning stage between pretraining and
the probe. Off, it changes no key; on, it is one task per seed that the probe and fine-tuning build
on. Its facts stay apart from every fine-tuning, dev and test fact (tests/test_world.py,
``test_instruct_pool_holds_no_fine_tuning_dev_or_test_fact``); the end-to-end run is in
tests/test_run.py (``test_smoke_run_with_the_instruct_stage``)."""
import numpy as np
import pytest

from kgsim.cli import main
from kgsim.core.config import ConfigError, load_config
from kgsim.study import stages
from kgsim.study.runner import protocol_dict, seed_key
from kgsim.study.stages import ft_models, instruct_facts, qa_rows
from kgsim.study.sweep import expand
from kgsim.study.tasks import Cell, build_graph, finetune_key
from kgsim.world.build import build_world
from kgsim.world.corpus import A, BOS, Q


def _kinds(tasks) -> dict:
    out: dict = {}
    for t in tasks.values():
        out[t.kind] = out.get(t.kind, 0) + 1
    return out


def test_off_it_changes_no_key():
    plain = load_config("smoke")
    moved = load_config("smoke", overrides=["instruct.steps=7", "instruct.facts=10", "instruct.lr=0.1"])
    assert protocol_dict(plain) == protocol_dict(moved) and seed_key(plain, 0) == seed_key(moved, 0)
    assert "instruct" not in protocol_dict(plain)
    on = load_config("smoke", overrides=["instruct.enabled=true"])
    assert seed_key(on, 0) != seed_key(plain, 0)
    for _, which in ft_models(plain):
        assert finetune_key(plain, which) == finetune_key(moved, which) != finetune_key(on, which)


def test_on_it_is_one_task_per_seed_between_pretraining_and_the_probe(tmp_path):
    base = load_config("smoke", overrides=["run.seeds=[0, 1]"])
    cells = [Cell(n, c, tmp_path / n) for n, _, c in expand(base, {"instruct.enabled": [False, True]})]
    tasks = build_graph(cells, tmp_path / "cache")
    kinds = _kinds(tasks)
    n_ft = len(ft_models(base))
    # the cells share world and base model; each has its own probe (of another model) and fine-tuning
    assert kinds == {"world": 2, "pretrain": 2, "instruct": 2, "probe": 4, "finetune": 2 * 2 * n_ft, "seed": 4,
                     "finish": 2}
    instruct = {k for k, t in tasks.items() if t.kind == "instruct"}
    probes_on = [t for t in tasks.values() if t.kind == "probe" and set(t.deps) & instruct]
    assert len(probes_on) == 2 and all(t.cells == [cells[1].name] for t in probes_on)


def test_qa_rows_ask_each_fact_in_its_template():
    cfg = load_config("smoke", overrides=["corpus.qa_templates=3"])
    world = build_world(cfg)
    kg, vocab = world.kg, world.corpus.vocab
    facts = np.arange(6)
    templates = np.array([0, 1, 2, 2, 1, 0])
    rows = qa_rows(world, facts, templates)
    for i, (f, t) in enumerate(zip(facts, templates)):
        want = [BOS, Q, vocab.entity(kg.s[f]), vocab.question_relation(int(kg.r[f]), int(t)), A,
                vocab.entity(kg.a[f])]
        assert rows.tokens[i].tolist() == [int(x) for x in want]
    assert rows.loss_mask[:, -1].all() and not rows.loss_mask[:, :-1].any()
    assert np.array_equal(qa_rows(world, facts).tokens, qa_rows(world, facts, np.zeros(6, np.int64)).tokens)


def test_instruct_facts_are_a_seeded_draw_from_the_pool():
    cfg = load_config("smoke", overrides=["instruct.enabled=true", "instruct.facts=50"])
    world = build_world(cfg)
    a, b = instruct_facts(cfg, world), instruct_facts(cfg, world)
    assert np.array_equal(a, b) and len(a) == 50 and len(np.unique(a)) == 50
    assert world.qa_subjects[world.kg.s[a]].all()
    assert not np.isin(world.kg.r[a], world.splits.ft_relations).any()


def test_a_world_without_instruct_facts_is_one_clear_error(monkeypatch):
    cfg = load_config("smoke", overrides=["instruct.enabled=true"])
    world = build_world(cfg)
    monkeypatch.setattr(stages, "instruct_pool", lambda kg, splits: np.zeros(kg.n_facts, bool))
    with pytest.raises(ConfigError, match="instruct.enabled = true: the world has no QA-subject facts"):
        instruct_facts(cfg, world)


@pytest.mark.parametrize("key, value", [("instruct.facts", "0"), ("instruct.steps", "0"), ("instruct.enabled", "1"),
                                        ("instruct.lr", "-1")])
def test_bad_instruct_knob_is_one_line_and_exit_2(capsys, tmp_path, key, value):
    code = main(["run", "--preset", "smoke", "--set", f"{key}={value}", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and key in err
    assert not (tmp_path / "r").exists()
