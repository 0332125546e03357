"""Issue 12's study-design knobs. Known by two rules and test-set filters: SliCK's threshold as a
config choice, SliCK against the exposure ground truth as a confusion table with Cohen's kappa
(checked against statsmodels), the masks the fine-tuning splits take from it, the test-set filters'
knob, bad values as one line and exit 2; the tables in a finished run's report are checked in
tests/test_run.py (they need the smoke run). 2-hop in format: the composed-QA
knob's bad values; the corpus it writes is checked in tests/test_world.py. Recall-CoT: the related
fact it recalls, its two prompt steps token by token, its config checks."""
import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.inter_rater import cohens_kappa

from kgsim.cli import main
from kgsim.core.config import ConfigError, load_config, to_dict
from kgsim.core.known import AGREEMENT_LABELS, FT_KNOWN_CATEGORIES, known_rule, rule_agreement
from kgsim.core.names import HIGHLY_KNOWN, MAYBE_KNOWN, WEAKLY_KNOWN
from kgsim.study.report import _contrast_lines
from kgsim.study.results import factor_contrasts
from kgsim.study.stages import known_rules, slick_masks

# A rule's class per fact: 0 Known, 1 Unknown, 2 neither.
classes = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=60)


def masks(pairs):
    a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    return a == 0, a == 1, b == 0, b == 1


@settings(max_examples=200, deadline=None, derandomize=True)
@given(pairs=classes)
def test_kappa_matches_statsmodels_and_the_table_partitions_the_facts(pairs):
    ak, au, bk, bu = masks(pairs)
    r = rule_agreement(ak, au, bk, bu)
    assert sum(r["table"][x][y] for x in AGREEMENT_LABELS for y in AGREEMENT_LABELS) == len(pairs)
    both = (ak | au) & (bk | bu)
    assert r["n"] == both.sum()
    if r["n"] == 0:
        assert np.isnan(r["kappa"]) and np.isnan(r["agreement"])
        return
    t = np.array([[r["table"][x][y] for y in ("Known", "Unknown")] for x in ("Known", "Unknown")])
    assert r["agreement"] == pytest.approx(np.trace(t) / t.sum())
    p_e = (t.sum(1) @ t.sum(0)) / t.sum() ** 2
    if p_e == 1:
        assert np.isnan(r["kappa"])
    else:
        assert r["kappa"] == pytest.approx(cohens_kappa(t, return_results=False), abs=1e-12)


def test_kappa_by_hand_and_at_the_ends():
    # 10 facts: Known/Known 4, Known/Unknown 1, Unknown/Known 2, Unknown/Unknown 3
    pairs = [(0, 0)] * 4 + [(0, 1)] + [(1, 0)] * 2 + [(1, 1)] * 3
    r = rule_agreement(*masks(pairs))
    p_o, p_e = 0.7, (5 * 6 + 5 * 4) / 100                      # = 0.5
    assert r["kappa"] == pytest.approx((p_o - p_e) / (1 - p_e)) == pytest.approx(0.4)
    assert rule_agreement(*masks([(0, 0), (1, 1)]))["kappa"] == 1.0           # perfect agreement
    assert rule_agreement(*masks([(0, 1), (1, 0)]))["kappa"] == -1.0          # perfect disagreement
    with pytest.raises(ValueError, match="both Known and Unknown"):
        rule_agreement([True], [True], [True], [False])


def test_known_rule_names_the_threshold():
    assert known_rule(FT_KNOWN_CATEGORIES) == "P_greedy > 0"
    assert known_rule([WEAKLY_KNOWN, MAYBE_KNOWN, HIGHLY_KNOWN]) == "P_correct > 0"
    assert known_rule([HIGHLY_KNOWN]) == "P_greedy = 1"
    assert known_rule([WEAKLY_KNOWN]) == "category in {WeaklyKnown}"


class _World:
    """The two attributes slick_masks and known_rules read from a World."""

    def __init__(self, exposure):
        self.kg = type("KG", (), {"n_facts": len(exposure), "exposure": np.asarray(exposure)})()


def test_the_threshold_moves_weakly_known_facts_only():
    # facts 0..5 probed: HighlyKnown, MaybeKnown, WeaklyKnown, Unknown, Unknown, WeaklyKnown; 6 not probed
    probe = {"slick_facts": np.arange(6), "p_greedy": np.array([1, .5, 0, 0, 0, 0.]),
             "p_sample": np.array([1, .5, .2, 0, 0, .1])}
    world = _World([5, 0, 4, 0, 9, 1, 3])
    greedy = load_config("smoke")
    correct = load_config("smoke", overrides=["run.known_categories=['HighlyKnown','MaybeKnown','WeaklyKnown']"])
    kn_g, unk_g = slick_masks(greedy, world, probe)
    kn_c, unk_c = slick_masks(correct, world, probe)
    assert kn_g.tolist() == [1, 1, 0, 0, 0, 0, 0] and kn_c.tolist() == [1, 1, 1, 0, 0, 1, 0]
    assert unk_g.tolist() == unk_c.tolist() == [0, 0, 0, 1, 1, 0, 0]
    r = known_rules(greedy, world, probe)          # exposure: Known >= 3 (smoke), Unknown == 0, else neither
    assert r["table"]["Known"] == {"Known": 1, "Unknown": 1, "neither": 0}
    assert r["table"]["Unknown"] == {"Known": 1, "Unknown": 1, "neither": 0}
    assert r["table"]["neither"] == {"Known": 1, "Unknown": 0, "neither": 1}
    assert r["n"] == 4 and r["kappa"] == pytest.approx(0.0) and "P_greedy > 0" in r["rows"]
    assert known_rules(correct, world, probe)["table"]["Known"] == {"Known": 2, "Unknown": 1, "neither": 1}


@pytest.mark.parametrize("value, message", [
    ("['Unknown']", "'Unknown' is not one of"),
    ("[]", "give a non-empty list"),
    ("['HighlyKnown', 'HighlyKnown']", "name each category once"),
    ("'HighlyKnown'", "must be a list"),
])
def test_bad_known_categories_is_one_line_and_exit_2(capsys, tmp_path, value, message):
    with pytest.raises(ConfigError, match=f"run.known_categories = .*{message}"):
        load_config("smoke", overrides=[f"run.known_categories={value}"])
    code = main(["run", "--preset", "smoke", "--set", f"run.known_categories={value}", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "run.known_categories" in err and message in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("value, message", [
    ("['slick', 'nope']", "run.test_filters[1] = 'nope': must be one of"),
    ("['exposure', 'exposure']", "run.test_filters = ['exposure', 'exposure']: name each filter once"),
    ("'unfiltered'", "run.test_filters = 'unfiltered': must be a list"),
])
def test_bad_test_filters_is_one_line_and_exit_2(capsys, tmp_path, value, message):
    code = main(["run", "--preset", "smoke", "--set", f"run.test_filters={value}", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "r").exists()


def test_test_filters_default_and_off():
    assert load_config("smoke").run.test_filters == ("slick", "exposure", "unfiltered")
    assert load_config("smoke", overrides=["run.test_filters=[]"]).run.test_filters == ()


@pytest.mark.parametrize("key, value", [("corpus.two_hop_qa_share", v) for v in ("-0.1", "1.5", "nan")]
                         + [("corpus.qa_templates", v) for v in ("0", "-1", "1.5")]
                         + [("splits.open_world", v) for v in ("far", "1", '"Factorial"')]
                         + [("run.unsplittable_seeds", v) for v in ("skip", "true")])
def test_bad_corpus_knob_is_one_line_and_exit_2(capsys, tmp_path, key, value):
    code = main(["run", "--preset", "smoke", "--set", f"{key}={value}", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and key in err
    assert not (tmp_path / "r").exists()


def test_one_question_template_keeps_every_cache_key():
    cfg = load_config("smoke")
    before = {k: v for k, v in to_dict(cfg.corpus).items() if k not in ("two_hop_qa_share", "qa_templates")}
    blob = json.dumps({"seed": cfg.seed, "corpus": before}, sort_keys=True).encode()
    assert cfg.section_hash("corpus") == hashlib.sha256(blob).hexdigest()[:16]
    assert load_config("smoke", overrides=["corpus.qa_templates=2"]).section_hash("corpus") != cfg.section_hash("corpus")


def test_two_hop_qa_share_zero_keeps_every_cache_key():
    """A knob added after caches existed hashes only away from its no-op value: the corpus section
    at share 0 hashes as it did before the key existed, so cached worlds and base models still match."""
    from kgsim.study.stages import base_hash
    from kgsim.world.build import world_hash
    cfg = load_config("smoke")
    before = {k: v for k, v in to_dict(cfg.corpus).items() if k not in ("two_hop_qa_share", "qa_templates")}
    blob = json.dumps({"seed": cfg.seed, "corpus": before}, sort_keys=True).encode()
    assert cfg.section_hash("corpus") == hashlib.sha256(blob).hexdigest()[:16]
    some = load_config("smoke", overrides=["corpus.two_hop_qa_share=0.5"])
    assert world_hash(some) != world_hash(cfg) and base_hash(some) != base_hash(cfg)


# --- recall-CoT (one hop: recall another fact of the subject, then answer) ----------------------

def _kg():
    from kgsim.core.kg import KnowledgeGraph
    # subject 0: relations 0, 1, 2; subject 1: relation 0 only; answers are entities 2-5
    return KnowledgeGraph(entity_types=[0, 0, 1, 1, 1, 1], relation_domain=[0, 0, 0], relation_range=[1, 1, 1],
                          s=[0, 0, 0, 1], r=[0, 1, 2, 0], a=[2, 3, 4, 5], exposure=[1, 1, 1, 1],
                          popularity=np.full(6, 1 / 6))


@settings(max_examples=30, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31))
def test_related_facts_are_the_subjects_other_relations(seed):
    from kgsim.world.prompts import related_facts

    kg = _kg()
    rel = related_facts(kg, np.array([0, 1, 2, 3]), np.random.default_rng(seed))
    for f, g in zip([0, 1, 2], rel[:3]):
        assert g >= 0 and kg.s[g] == kg.s[f] and kg.r[g] != kg.r[f]
    assert rel[3] == -1                                            # subject 1 has no other relation


def test_recall_prompts_token_by_token():
    from kgsim.world.corpus import Vocabulary
    from kgsim.world.prompts import recall_first, recall_second

    kg, v = _kg(), Vocabulary(n_entities=6, n_relations=3)
    first = recall_first(v, kg, np.array([0]), np.array([2]), np.array([[1]]), np.array([[0]]))
    assert v.decode(first.tokens[0]) == "<bos> <q> E0 Q0 <a> E2 <sep> <q> E0 Q1 <a> E3 <sep> <q> E0 Q2 <a>"
    assert first.induced.tolist() == [[1, 0]]
    second = recall_second(v, first, np.array([0]), np.array([0]), np.array([v.entity(4)]))
    assert v.decode(second.tokens[0]).endswith("<q> E0 Q2 <a> E4 <sep> <q> E0 Q0 <a>")


@pytest.mark.parametrize("overrides, message", [
    (["prompts.cot_shots=40"], "prompts.cot_shots = 40"),
    (["prompts.cot=false", "prompts.cot_shots=40"], "prompts.cot_shots = 40"),
])
def test_recall_cot_prompts_must_fit(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("smoke", overrides=overrides)
    load_config("smoke", overrides=["prompts.cot=false", "prompts.recall_cot=false", "prompts.cot_shots=40"])


def test_similarity_makeup_counts_each_bucket_by_split():
    """Issue 12: the similarity buckets' make-up and the histogram of the scores, on constructed sets."""
    from types import SimpleNamespace

    from kgsim.core.selection import similarity_buckets
    from kgsim.study.measure import SIM_BINS, similarity_makeup
    splits = SimpleNamespace(test={"id": np.array([10, 11, 12]), "near-id": np.array([20, 21]),
                                   "open-world": np.array([30, 31, 32])})
    sim = np.array([0.9, 0.8, 0.85, 0.5, 0.95, 0.1, 0.2, 0.55])       # pooled: id, near-id, open-world
    pooled = np.array([10, 11, 12, 20, 21, 30, 31, 32])
    buckets = {f"b{i}": np.sort(pooled[p]) for i, p in enumerate(similarity_buckets(sim, 2))}
    out = similarity_makeup(splits, buckets, sim)
    assert [out["splits"][k]["n"] for k in ("id", "near-id", "open-world")] == [3, 2, 3]
    assert sum(out["splits"]["id"]["hist"]) == 3 and len(out["splits"]["id"]["hist"]) == len(SIM_BINS) - 1
    assert out["splits"]["open-world"]["mean"] == pytest.approx(np.mean([0.1, 0.2, 0.55]))
    for b, ids in buckets.items():
        got = out["buckets"][b]
        assert got["n"] == len(ids) == sum(got["from"].values())
        assert got["lo"] == sim[np.isin(pooled, ids)].min() and got["hi"] == sim[np.isin(pooled, ids)].max()
        assert got["from"]["id"] == int(np.isin(ids, splits.test["id"]).sum())


@settings(max_examples=40)
@given(seed=st.integers(0, 2**31), n=st.integers(2, 40), m=st.integers(0, 60), k=st.integers(0, 4))
def test_subject_distance_is_the_breadth_first_distance(seed, n, m, k):
    """Issue 12's graph-distance factor: hops to the nearest source over every fact, either direction."""
    from collections import deque

    from kgsim.core.kg import KnowledgeGraph
    from kgsim.world.splits import subject_distance
    rng = np.random.default_rng(seed)
    s, a = rng.integers(0, n, m), rng.integers(0, n, m)
    kg = KnowledgeGraph(entity_types=[0] * n, relation_domain=[0], relation_range=[0], s=s, r=np.zeros(m, int), a=a,
                        exposure=np.ones(m, int), popularity=np.full(n, 1 / n))
    sources = rng.choice(n, min(k, n), replace=False)
    want = np.full(n, np.inf)
    nbrs = [set() for _ in range(n)]
    for x, y in zip(s, a):
        nbrs[x].add(y)
        nbrs[y].add(x)
    queue = deque(int(x) for x in sources)
    want[sources] = 0
    while queue:
        x = queue.popleft()
        for y in nbrs[x]:
            if want[y] == np.inf:
                want[y] = want[x] + 1
                queue.append(y)
    assert np.array_equal(subject_distance(kg, sources), want)


def test_factor_contrasts_pair_levels_within_seed_and_reach_the_report():
    """Near minus far per factor, paired within seed: type factors pool the ft levels against the other
    levels by their facts; graph distance takes the nearest and farthest levels two seeds share."""
    def seed(near, far, hops1, hops3):
        return {"factor_gaps": {"es": {"open-world": {
            "subject type": {"t0 (ft)": {"n": 10, "gap": near}, "t2 (ft)": {"n": 10, "gap": near + 0.2},
                             "t1 (other)": {"n": 20, "gap": far}},
            "answer type": {"t0 (ft)": {"n": 40, "gap": 0.5}},
            "graph distance": {"1 hop": {"n": 30, "gap": hops1}, "3+ hops": {"n": 10, "gap": hops3}}}}}}
    fc = factor_contrasts([seed(0.4, 0.1, 0.5, 0.2), seed(0.6, 0.2, 0.4, 0.4)])["es"]["open-world"]
    assert fc["subject type"]["values"] == pytest.approx([0.4, 0.5])       # (0.4 + 0.6) / 2 - 0.1, ...
    assert fc["subject type"]["near"] == "t0 (ft), t2 (ft)" and fc["subject type"]["far"] == "t1 (other)"
    assert fc["graph distance"]["values"] == pytest.approx([0.3, 0.0]) and fc["graph distance"]["far"] == "3+ hops"
    assert "answer type" not in fc                                          # one side only: no contrast
    lines = "\n".join(_contrast_lines({"es": {"open-world": fc}}))
    assert "| open-world | subject type | t0 (ft), t2 (ft) − t1 (other) | 2 | 45.0 [" in lines
