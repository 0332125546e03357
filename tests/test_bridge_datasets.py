"""Loaders: EntityQuestions (fixture and, when present, the full copy), PopQA, MMLU, synthetic."""
import json
import os
import shutil
from pathlib import Path

import pytest

from kgsim.core.config import GraphConfig
from kgsim.core.rng import stream
from kgsim.world.graph import generate
from llm_bridge.datasets import (
    DatasetFileError,
    QAExample,
    entityquestions_counts,
    fact_index,
    load_entityquestions,
    load_mmlu,
    load_popqa,
    synthetic_examples,
    two_hop_examples,
)
from llm_bridge.verbalize import Verbalizer, name_graph

FIXTURES = Path(__file__).parent / "fixtures"
EQ = FIXTURES / "entityquestions"
# Published EntityQuestions sizes (24 relations): checked against the full copy when it is present.
EQ_TOTALS = {"train": 176560, "dev": 22068, "test": 22075}


def _shared_eq() -> Path | None:
    root = Path(os.environ["KGSIM_SHARED"]) if os.environ.get("KGSIM_SHARED") else \
        Path(__file__).resolve().parents[1].parent / "shared"
    d = root / "data" / "entityquestions"
    return d if (d / "test").is_dir() else None


# --- EntityQuestions ----------------------------------------------------------------------------

def test_eq_fixture_counts_and_records():
    assert entityquestions_counts(EQ) == {s: {"P17": n, "P36": n, "P106": n} for s, n in
                                          (("train", 8), ("dev", 4), ("test", 4))}
    dev = load_entityquestions(EQ, "dev")
    assert [e.relation for e in dev] == ["P17"] * 4 + ["P36"] * 4 + ["P106"] * 4    # natural relation order
    e = next(x for x in dev if x.relation == "P106" and x.id.endswith("/0"))
    assert e.question == "What kind of work does Çandarlı Ibrahim Pasha do?"
    assert e.subject == "Çandarlı Ibrahim Pasha" and e.answers == ("qadi",)
    multi = next(x for x in dev if "Wecksell" in x.question)
    assert multi.answers == ("playwright", "poet") and multi.subject == "Josef Julius Wecksell"
    cap = load_entityquestions(EQ, "test", relations=["P36"])
    assert [x.subject for x in cap][:2] == ["Marin County", "Panjgur District"]


def test_eq_ids_unique_across_splits_and_limit():
    all_ex = [e for s in ("train", "dev", "test") for e in load_entityquestions(EQ, s)]
    assert len({e.fact_id for e in all_ex}) == len({e.id for e in all_ex}) == len(all_ex) == 48
    assert len(load_entityquestions(EQ, "train", max_per_relation=2)) == 6


def test_eq_errors_name_file_and_line(tmp_path):
    with pytest.raises(DatasetFileError, match="no such directory"):
        load_entityquestions(tmp_path, "dev")
    with pytest.raises(DatasetFileError, match="split = 'validation'"):
        load_entityquestions(EQ, "validation")
    with pytest.raises(DatasetFileError, match=r"no files for relations \['P999'\]"):
        load_entityquestions(EQ, "dev", relations=["P999"])
    root = tmp_path / "eq"
    shutil.copytree(EQ, root)
    bad = root / "dev" / "P17.dev.jsonl"
    lines = bad.read_text().splitlines()
    bad.write_text("\n".join(lines[:2] + ['{"question": "Which country is X located in?", "answers": []}']) + "\n")
    with pytest.raises(DatasetFileError, match=r"P17\.dev\.jsonl:3: 'answers' must be a non-empty list"):
        load_entityquestions(root, "dev")
    bad.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(DatasetFileError, match=r"P17\.dev\.jsonl:2: not valid JSON"):
        load_entityquestions(root, "dev")


def test_eq_json_list_files(tmp_path):
    root = tmp_path / "eq"
    (root / "test").mkdir(parents=True)
    shutil.copy(EQ / "relation_query_templates.json", root)
    recs = [json.loads(x) for x in (EQ / "test" / "P36.test.jsonl").read_text().splitlines()]
    (root / "test" / "P36.test.json").write_text(json.dumps(recs))
    ex = load_entityquestions(root, "test")
    assert [e.answers for e in ex] == [tuple(r["answers"]) for r in recs] and ex[0].subject == "Marin County"


def test_eq_full_copy():
    root = _shared_eq()
    if root is None:
        pytest.skip("no EntityQuestions copy under $KGSIM_SHARED/data or ../shared/data")
    counts = entityquestions_counts(root)
    assert {s: sum(c.values()) for s, c in counts.items()} == EQ_TOTALS
    assert all(len(c) == 24 for c in counts.values())
    for split in ("train", "dev", "test"):
        ex = load_entityquestions(root, split)
        assert len(ex) == EQ_TOTALS[split]
        assert all(e.subject for e in ex)                   # every question fits its relation's template
        assert len({e.fact_id for e in ex}) == len(ex)


# --- PopQA -------------------------------------------------------------------------------------

def test_popqa_fixture():
    ex = load_popqa(FIXTURES / "popqa" / "popqa_sample.tsv")
    assert len(ex) == 8 and [e.fact_id for e in ex] == list(range(101, 109))
    curie = ex[0]
    assert curie.relation == "occupation" and curie.subject == "Marie Curie" and curie.popularity == 250000.0
    assert curie.answers == ("physicist", "chemist") and curie.question == "What is Marie Curie's occupation?"
    assert ex[3].answers == ("Coyoacán", "Coyoacan")
    assert {e.relation for e in ex} == {"occupation", "place of birth", "capital", "author"}


def _write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


def test_popqa_without_question_column_uses_templates(tmp_path):
    p = _write_tsv(tmp_path / "p.tsv", ["subj", "prop", "obj", "s_pop", "possible_answers"],
                   [["Bhutan", "capital", "Thimphu", "80000", '["Thimphu"]'],
                    ["Dune", "author", "Frank Herbert", "5", '["Herbert"]']])
    ex = load_popqa(p)
    assert ex[0].question == "What is the capital of Bhutan?" and ex[0].fact_id == 0
    assert ex[1].answers == ("Frank Herbert", "Herbert")       # obj is always a gold answer


@pytest.mark.parametrize("header, row, message", [
    (["subj", "prop", "obj", "possible_answers"], ["A", "capital", "B", '["B"]'], r"p\.tsv:1: missing columns \['s_pop'\]"),
    (["subj", "prop", "obj", "s_pop", "possible_answers"], ["A", "capital", "B", "12", "B"], r"p\.tsv:2: possible_answers is not a JSON list"),
    (["subj", "prop", "obj", "s_pop", "possible_answers"], ["A", "capital", "B", "many", '["B"]'], r"p\.tsv:2: s_pop = 'many'"),
    (["subj", "prop", "obj", "s_pop", "possible_answers"], ["A", "sibling", "B", "3", '["B"]'], r"p\.tsv:2: no question column"),
    (["subj", "prop", "obj", "s_pop", "possible_answers"], ["A", "capital", "B"], r"p\.tsv:2: expected 5 tab-separated"),
])
def test_popqa_errors(tmp_path, header, row, message):
    with pytest.raises(DatasetFileError, match=message):
        load_popqa(_write_tsv(tmp_path / "p.tsv", header, [row]))


# --- MMLU --------------------------------------------------------------------------------------

def test_mmlu_fixture():
    test = load_mmlu(FIXTURES / "mmlu", split="test")
    assert len(test) == 7 and {e.relation for e in test} == {"astronomy", "geography"}
    q = test[2]
    assert q.choices == ("Time", "Distance", "Brightness", "Mass, in solar units") and q.answers == ("B",)
    assert q.question.splitlines()[-1] == "(D) Mass, in solar units"
    dev = load_mmlu(FIXTURES / "mmlu" / "dev" / "astronomy_dev.csv")     # header row skipped
    assert len(dev) == 1 and dev[0].answers == ("B",) and dev[0].relation == "astronomy"
    assert len(load_mmlu(FIXTURES / "mmlu")) == 8


def test_mmlu_errors(tmp_path):
    (tmp_path / "bad_test.csv").write_text("Q1,a,b,c,d,A\nQ2,a,b,c,E\n")
    with pytest.raises(DatasetFileError, match=r"bad_test\.csv:2: expected 6 columns"):
        load_mmlu(tmp_path / "bad_test.csv")
    (tmp_path / "bad_test.csv").write_text("Q1,a,b,c,d,E\n")
    with pytest.raises(DatasetFileError, match=r"bad_test\.csv:1: answer 'E'"):
        load_mmlu(tmp_path / "bad_test.csv")
    with pytest.raises(DatasetFileError, match="no .*_val.csv files"):
        load_mmlu(tmp_path, split="val")


# --- synthetic ---------------------------------------------------------------------------------

def test_synthetic_examples_match_the_graph():
    kg = name_graph(generate(GraphConfig(n_entities=60, n_types=2, n_relations=4, n_composed=1), stream(0, "graph")),
                    stream(0, "names"))
    vb = Verbalizer.from_graph(kg)
    facts = synthetic_examples(kg, vb)
    assert [e.fact_id for e in facts] == list(range(kg.n_facts))
    for e in facts[:20]:
        s, r = vb.parse_question(e.question)
        assert (s, r) == (kg.s[e.fact_id], kg.r[e.fact_id]) and e.answer == vb.name(kg.a[e.fact_id])
        assert e.exposure == kg.exposure[e.fact_id]
    two = two_hop_examples(kg, vb)
    rows = kg.two_hop()
    assert len(two) == len(rows) > 0
    for e, (s, r1, r2, m, a) in zip(two, rows):
        f1, f2 = e.path
        assert (kg.s[f1], kg.r[f1], kg.a[f1]) == (s, r1, m) and (kg.s[f2], kg.r[f2], kg.a[f2]) == (m, r2, a)
        assert e.bridge == vb.name(m) and e.answer == vb.name(a) and vb.name(m) in e.rationale
    s0, r0 = int(kg.s[0]), int(kg.r[0])
    wrong = next(x for x in range(kg.n_entities) if x not in set(kg.answers(s0, r0).tolist()))
    assert fact_index(kg, [s0], [r0], [wrong]).tolist() == [-1]
    assert fact_index(kg, kg.s, kg.r, kg.a).tolist() == list(range(kg.n_facts))


def test_qaexample_rejects_bad_answers():
    with pytest.raises(TypeError):
        QAExample("x", "q", "Paris", "r")
    with pytest.raises(ValueError, match="no gold answer"):
        QAExample("x", "q", [], "r")
