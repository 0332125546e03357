"""Verbalised knowledge graphs: templates, round trips, 2-hop questions, pretraining documents."""
import numpy as np
import pytest

from kgsim.core.config import GraphConfig
from kgsim.core.rng import stream
from kgsim.world.graph import generate
from llm_bridge.verbalize import (
    THEMES,
    RelationTemplate,
    VerbalizeError,
    Verbalizer,
    cot_final_answer,
    entity_names,
    name_graph,
    pretraining_documents,
    relation_templates,
)


@pytest.fixture(scope="module")
def world():
    kg = name_graph(generate(GraphConfig(n_entities=80, n_types=2, n_relations=6, n_composed=2), stream(1, "graph")),
                    stream(1, "names"))
    return kg, Verbalizer.from_graph(kg)


def test_themes_are_distinct_and_well_formed():
    names = [t.name for t in THEMES]
    assert len(set(names)) == len(names)
    forms = [q for t in THEMES for q in t.questions]
    assert len(set(forms)) == len(forms)                       # no two relations share a question form
    assert all(len(t.questions) >= 2 and len(t.statements) >= 2 for t in THEMES)


def test_bad_templates_and_names_rejected():
    with pytest.raises(VerbalizeError, match="must hold"):
        RelationTemplate("x", "x", ("What is x?",), ("{s} is {a}.",))
    with pytest.raises(VerbalizeError, match="used by entities 0 and 1"):
        Verbalizer(["Kato", "Kato"], [THEMES[0]])
    with pytest.raises(VerbalizeError, match="unique"):
        relation_templates(["capital", "capital"])


def test_round_trip_every_fact_every_form(world):
    kg, vb = world
    for i in range(kg.n_facts):
        s, r, a = int(kg.s[i]), int(kg.r[i]), int(kg.a[i])
        for form in range(vb.n_question_forms(r)):
            assert vb.parse_question(vb.question(s, r, form)) == (s, r)
        for form in range(len(vb.relations[r].statements)):
            assert vb.parse_statement(vb.statement(s, r, a, form)) == (s, r, a)
    with pytest.raises(VerbalizeError, match="not a question"):
        vb.parse_question("Where was Nobody Atall born?")


def test_names_seeded_unique_and_generic_relations():
    a, b = entity_names(300, stream(0, "n")), entity_names(300, stream(0, "n"))
    assert a == b and len(set(a)) == 300 and a != entity_names(300, stream(1, "n"))
    t = relation_templates(["capital", "place_of_birth"])
    assert t[0] is THEMES[2] and t[1].noun == "place of birth"
    assert [x.name for x in relation_templates(len(THEMES) + 1)][-1] == f"property {len(THEMES)}"


def test_two_hop_and_cot(world):
    kg, vb = world
    rows = kg.two_hop()
    assert len(rows)
    s, r1, r2, m, a = (int(x) for x in rows[0])
    q = vb.two_hop_question(s, r1, r2)
    assert vb.name(s) in q and vb.relations[r1].noun in q and vb.relations[r2].noun in q
    cot = vb.cot_answer(s, r1, r2, m, a)
    assert vb.name(m) in cot and cot_final_answer(cot) == vb.name(a)
    assert cot_final_answer(" Sabi") == "Sabi"                # a direct answer still scores
    assert cot_final_answer("so the answer is Sabi\nQ: more") == "Sabi"


def test_pretraining_documents_show_each_fact_by_its_exposure(world):
    kg, vb = world
    docs = pretraining_documents(kg, vb, stream(0, "corpus"), facts_per_doc=3, qa_subject_share=0.5)
    assert docs == pretraining_documents(kg, vb, stream(0, "corpus"), facts_per_doc=3, qa_subject_share=0.5)
    seen = np.zeros(kg.n_facts, int)
    lines = [ln for d in docs for ln in d.split("\n")]
    key = {(int(s), int(r), int(a)): i for i, (s, r, a) in enumerate(zip(kg.s, kg.r, kg.a))}
    k = 0
    while k < len(lines):
        if lines[k].startswith("Q: "):                    # a QA pair spans two lines
            s, r = vb.parse_question(lines[k][3:])
            a = vb.entity_id(lines[k + 1][3:])
            k += 2
        else:
            s, r, a = vb.parse_statement(lines[k])
            k += 1
        seen[key[(s, r, a)]] += 1
    assert (seen == kg.exposure).all()
    assert max(d.count("\n") for d in docs) <= 2 * 3 - 1
