"""Error classes (issue 12): the rule on a hand-built graph, its counts as a property over random
graphs, the answers an EdgeSet keeps (and old edges.json files without them), the aggregation
over seeds and the report's table. The check on a finished smoke run (the table is in report.md,
the counts are n - |E| per edge set) lives in tests/test_run.py, on that module's smoke run."""
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kgsim.core.edges import EdgeSet
from kgsim.core.error_classes import NOT_AN_ERROR, classify_errors, error_counts
from kgsim.core.kg import KnowledgeGraph
from kgsim.core.names import ERROR_CLASSES, FROM_FT_SET, FT_KNOWN, FT_UNKNOWN, OTHER_ERROR, RIGHT_TYPE, ZERO_SHOT
from kgsim.study.measure import answer_entities
from kgsim.study.report import error_class_section
from kgsim.study.results import error_class_counts, error_class_intervals
from kgsim.world.corpus import Vocabulary


def world() -> KnowledgeGraph:
    """Persons 0-2 (type 0), cities 3-6 (type 1), a colour 7 (type 2); relation 0 born-in (person ->
    city), relation 1 likes (person -> colour). Facts: 0 (0 born-in 3), 1 (1 born-in 4), 2 (2 born-in 5),
    3 (0 likes 7)."""
    return KnowledgeGraph(entity_types=[0, 0, 0, 1, 1, 1, 1, 2], relation_domain=[0, 0], relation_range=[1, 2],
                          s=[0, 1, 2, 0], r=[0, 0, 0, 1], a=[3, 4, 5, 7], exposure=[1, 1, 1, 1],
                          popularity=np.full(8, 1 / 8))


def test_each_class_on_a_hand_built_graph():
    kg = world()
    ft = np.array([0, 3])                           # fine-tuned on (0 born-in 3) and (0 likes 7)
    facts = np.array([1, 1, 1, 1, 1, 1, 2, 0])
    answers = np.array([4, 3, 7, 6, 1, -1, 5, 3])
    correct = kg.is_correct(kg.s[facts], kg.r[facts], np.maximum(answers, 0)) & (answers >= 0)
    assert correct.tolist() == [True, False, False, False, False, False, True, True]
    codes = classify_errors(kg, facts, correct, answers, ft)
    # 4: right; 3: an FT answer; 7: an FT answer of another relation (and type); 6: a city, not in the
    # FT set; 1: a person; -1: no entity; 5 and 3: right (3 is an FT answer, but correct is no error)
    assert codes.tolist() == [NOT_AN_ERROR, 0, 0, 1, 2, 2, NOT_AN_ERROR, NOT_AN_ERROR]
    assert error_counts(kg, facts, correct, answers, ft) == {
        "n": 8, "errors": 5, FROM_FT_SET: 2, RIGHT_TYPE: 1, OTHER_ERROR: 2}
    # the same answers against another fine-tuning set: 3 is no longer from the FT set, 7 is "other"
    assert classify_errors(kg, facts, correct, answers, np.array([1])).tolist()[:6] == [NOT_AN_ERROR, 1, 2, 1, 2, 2]
    assert error_counts(kg, facts[:0], correct[:0], answers[:0], ft)["errors"] == 0
    with pytest.raises(ValueError, match="equal 1-d shapes"):
        classify_errors(kg, facts, correct[:3], answers, ft)


@st.composite
def graphs_and_answers(draw):
    n_ent, n_types, n_rel = draw(st.integers(1, 9)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n_facts = draw(st.integers(1, 12))
    ent = st.integers(0, n_ent - 1)
    kg = KnowledgeGraph(entity_types=draw(st.lists(st.integers(0, n_types - 1), min_size=n_ent, max_size=n_ent)),
                        relation_domain=draw(st.lists(st.integers(0, n_types - 1), min_size=n_rel, max_size=n_rel)),
                        relation_range=draw(st.lists(st.integers(0, n_types - 1), min_size=n_rel, max_size=n_rel)),
                        s=draw(st.lists(ent, min_size=n_facts, max_size=n_facts)),
                        r=draw(st.lists(st.integers(0, n_rel - 1), min_size=n_facts, max_size=n_facts)),
                        a=draw(st.lists(ent, min_size=n_facts, max_size=n_facts)), exposure=np.ones(n_facts),
                        popularity=np.full(n_ent, 1 / n_ent))
    n = draw(st.integers(0, 15))
    facts = np.array(draw(st.lists(st.integers(0, n_facts - 1), min_size=n, max_size=n)), np.int64)
    answers = np.array(draw(st.lists(st.integers(-1, n_ent - 1), min_size=n, max_size=n)), np.int64)
    correct = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool)
    ft = np.array(draw(st.lists(st.integers(0, n_facts - 1), max_size=n_facts)), np.int64)
    return kg, facts, correct, answers, ft


@given(graphs_and_answers())
def test_the_classes_partition_the_errors(case):
    kg, facts, correct, answers, ft = case
    c = error_counts(kg, facts, correct, answers, ft)
    assert c["n"] == len(facts) and c["errors"] == int((~correct).sum())
    assert sum(c[k] for k in ERROR_CLASSES) == c["errors"]
    codes = classify_errors(kg, facts, correct, answers, ft)
    assert ((codes == NOT_AN_ERROR) == correct).all()
    in_ft = np.isin(answers, kg.a[ft]) & (answers >= 0)
    assert ((codes == 0) == (~correct & in_ft)).all()         # class (a) is exactly the FT set's answers
    assert (answers[codes == 1] >= 0).all()                     # class (b) holds entities only


def test_edge_sets_keep_answers_and_old_files_load():
    e = EdgeSet([5, 6, 7], [1, 0, 0], model=FT_UNKNOWN, stage="es", split="id", answers=[3, 4, -1])
    d = json.loads(json.dumps(e.to_json()))
    assert d["answers"] == [3, 4, -1]
    back = EdgeSet.from_json(d)
    assert back.answers.tolist() == [3, 4, -1] and back.correct.tolist() == [True, False, False]
    old = {k: v for k, v in d.items() if k != "answers"}       # an edges.json written before answers were kept
    assert EdgeSet.from_json(old).answers is None and "answers" not in EdgeSet.from_json(old).to_json()
    assert (e - back).answers is None                           # set algebra makes no measurement
    with pytest.raises(ValueError, match="one entry per test fact"):
        EdgeSet([5, 6], [1, 0], answers=[1])


def test_answer_tokens_become_entity_ids():
    v = Vocabulary(n_entities=3, n_relations=2)
    tokens = np.array([v.entity(0), v.entity(2), 0, v.question_relation(1), v.statement_relation(0)])
    assert answer_entities(v, tokens).tolist() == [0, 2, -1, -1, -1]


def test_counts_per_model_and_base_reference_and_aggregation():
    kg = world()
    sets = {FT_KNOWN: np.array([1]), FT_UNKNOWN: np.array([0, 3])}
    T = np.array([1, 2])
    edge_sets = [EdgeSet(T, [0, 0], model=FT_UNKNOWN, stage="con", split="id", answers=[3, 6]),
                 EdgeSet(T, [1, 0], model="base", split="id", answers=[4, 4]),
                 EdgeSet(T, [0, 0], model=FT_KNOWN, stage="con", split="id"),            # no answers kept
                 EdgeSet(T, [0, 0], model=FT_UNKNOWN, stage="con", split="2hop", prompt="cot")]
    seed = error_class_counts(edge_sets, kg, sets)
    assert set(seed) == {"ft-unknown/con", "base@ft-known", "base@ft-unknown"}
    assert seed["ft-unknown/con"]["id"][ZERO_SHOT] == {"n": 2, "errors": 2, FROM_FT_SET: 1, RIGHT_TYPE: 1,
                                                        OTHER_ERROR: 0}
    assert seed["base@ft-known"]["id"][ZERO_SHOT][FROM_FT_SET] == 1          # 4 answers FT-Known's fact 1
    assert seed["base@ft-unknown"]["id"][ZERO_SHOT][RIGHT_TYPE] == 1
    other = {"ft-unknown/con": {"id": {ZERO_SHOT: {"n": 2, "errors": 0, FROM_FT_SET: 0, RIGHT_TYPE: 0,
                                                   OTHER_ERROR: 0}}}}
    third = {"ft-unknown/con": {"id": {ZERO_SHOT: {"n": 2, "errors": 1, FROM_FT_SET: 1, RIGHT_TYPE: 0,
                                                   OTHER_ERROR: 0}}}}
    agg = error_class_intervals([{"error_classes": seed}, {"error_classes": other}, {"error_classes": third},
                                 {}])                                          # a seed from an older run
    iv = agg["ft-unknown/con"]["id"][ZERO_SHOT]
    assert iv["errors"]["mean"] == 1 and iv["errors"]["n"] == 3
    assert iv[FROM_FT_SET]["n"] == 2 and iv[FROM_FT_SET]["mean"] == pytest.approx(0.75)   # no-error seed dropped
    assert sum(iv[c]["mean"] for c in ERROR_CLASSES) == pytest.approx(1.0)
    assert not math.isnan(iv[FROM_FT_SET]["lo"])
    assert error_class_intervals([{}, {"error_classes": {}}]) == {}
    table = error_class_section({"error_classes": agg})
    assert table[0] == "## Errors by class"
    assert any(row.startswith("| ft-unknown/con | id | 1.0 [") for row in table)
    assert any(row.startswith("| base (against ft-unknown's set) | id | 1 (of 2) | 0.0 | 100.0 | 0.0 |")
               for row in table)
    assert error_class_section({}) == []
