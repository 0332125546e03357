"""Splits and corpus: disjointness, what pretraining may and may not contain, exposure accounting."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kgsim.core.config import ConfigError, CorpusConfig, GraphConfig, SplitConfig, load_config
from kgsim.core.rng import stream
from kgsim.study.runner import protocol_dict
from kgsim.world.build import build_world, world_hash
from kgsim.world.corpus import BOS, EOS, PAD, A, Corpus, Q, Vocabulary, build_corpus, composed_qa_rows, parse_facts
from kgsim.world.graph import GENERATORS, generate
from kgsim.world.splits import (
    OW_FACTORIAL_RULE,
    Splits,
    assign_qa_subjects,
    even_counts,
    filtered_tests,
    instruct_pool,
    make_splits,
    open_world_cells,
    split_pools,
    subject_distance,
)

SYNTHETIC = sorted(g for g in GENERATORS if g not in ("tsv", "entityquestions"))


@st.composite
def worlds(draw):
    gcfg = GraphConfig(generator=draw(st.sampled_from(SYNTHETIC)), n_entities=draw(st.integers(200, 600)),
                       n_types=draw(st.integers(1, 2)), n_relations=draw(st.integers(4, 8)),
                       n_composed=draw(st.integers(0, 2)), zipf_exponent=draw(st.floats(0.0, 1.3)),
                       mean_exposure=draw(st.floats(2.0, 12.0)), never_exposed_share=draw(st.floats(0.1, 0.4)))
    ccfg = CorpusConfig(facts_per_doc=draw(st.integers(1, 6)), relation_doc_share=draw(st.floats(0, 1)),
                        surface_forms=draw(st.integers(1, 3)), qa_subject_share=draw(st.floats(0.1, 0.6)),
                        shuffle_facts=draw(st.booleans()), qa_templates=draw(st.integers(1, 3)))
    scfg = SplitConfig(ft_relations=draw(st.integers(1, 2)), ft_size=draw(st.integers(2, 12)),
                       dev_size=draw(st.integers(1, 8)), test_size=draw(st.integers(1, 10)),
                       known_min_exposure=draw(st.integers(1, 4)), n_demo_pool=draw(st.integers(1, 4)))
    return gcfg, ccfg, scfg, draw(st.integers(0, 2**31))


def _world(gcfg, ccfg, scfg, seed):
    kg = generate(gcfg, stream(seed, "graph"))
    qa = assign_qa_subjects(kg.n_entities, ccfg.qa_subject_share, stream(seed, "qa"))
    try:
        splits = make_splits(kg, qa, scfg, stream(seed, "splits"))
    except ConfigError:
        splits = None          # this world is too small for the requested sizes: a clean error
    return kg, qa, splits, build_corpus(kg, qa, ccfg, stream(seed, "corpus"))


@settings(max_examples=60)
@given(w=worlds())
def test_splits_disjoint_and_well_formed(w):
    kg, qa, splits, _ = _world(*w)
    if splits is None:
        return
    splits.check_disjoint()                          # raises on any shared fact
    sets = splits.named_sets()
    assert len(splits.ft_known) == len(splits.ft_unknown) == w[2].ft_size
    # balanced: same count per relation
    assert np.array_equal(np.bincount(kg.r[splits.ft_known], minlength=kg.n_relations),
                          np.bincount(kg.r[splits.ft_unknown], minlength=kg.n_relations))
    assert (kg.exposure[splits.ft_unknown] == 0).all()
    assert (kg.exposure[splits.ft_known] >= w[2].known_min_exposure).all()
    # ID on fine-tuning relations; Near-ID / Open-World off them; OW about other subjects
    assert np.isin(kg.r[splits.test["id"]], splits.ft_relations).all()
    for name in ("near-id", "open-world"):
        assert not np.isin(kg.r[splits.test[name]], splits.ft_relations).any()
    ft_subj = np.concatenate([splits.ft_known, splits.ft_unknown, splits.dev, splits.test["id"]])
    assert np.isin(kg.s[splits.test["near-id"]], kg.s[ft_subj]).all()
    assert not np.isin(kg.s[splits.test["open-world"]], kg.s[ft_subj]).any()
    # every tuned or tested fact is about a subject never seen in QA form
    for name, ids in sets.items():
        if name != "demos":
            assert not qa[kg.s[ids]].any(), name
    assert qa[kg.s[sets["demos"]]].all()


@settings(max_examples=60)
@given(w=worlds())
def test_corpus_holds_each_fact_exactly_its_exposure(w):
    kg, qa, splits, corpus = _world(*w)
    s, r, a, is_qa = parse_facts(corpus.stream, corpus.vocab)
    ids = kg.fact_ids(s, r, a)
    assert (ids >= 0).all()                                          # only true facts are written
    counts = np.bincount(ids, minlength=kg.n_facts)
    assert np.array_equal(counts, kg.exposure)                       # exposure in corpus == drawn counts
    assert counts[kg.exposure == 0].sum() == 0                       # never-exposed: in no document
    assert qa[s[is_qa]].all()                                        # QA form only for QA subjects
    if splits is not None:
        held_out = np.concatenate([splits.dev, *splits.test.values(), splits.ft_known, splits.ft_unknown])
        assert not np.isin(ids[is_qa], held_out).any()               # no tuned/tested fact in QA form
        assert counts[splits.ft_unknown].sum() == 0


@settings(max_examples=60)
@given(w=worlds(), known_share=st.floats(0, 1), size=st.integers(1, 40))
def test_filtered_test_sets_keep_their_split_apart_from_fine_tuning(w, known_share, size):
    """Issue 12's test-set filters: every split@filter set lies in its split's pool (ID: fine-tuning
    relations; Near-ID: other relations, fine-tuned subjects; Open-World: other relations, other
    subjects), holds no fine-tuning, dev or demonstration fact and no QA subject, passes its filter,
    is at most `size` facts (all of the pool when fewer); the run's own test sets come from the same pools."""
    kg, qa, splits, _ = _world(*w)
    if splits is None:
        return
    rng = np.random.default_rng(w[3])
    filters = {"slick": rng.random(kg.n_facts) < known_share, "exposure": kg.exposure >= w[2].known_min_exposure,
               "unfiltered": np.ones(kg.n_facts, bool)}
    drawn = filtered_tests(kg, splits, filters, size, lambda f, split: stream(w[3], f"filter/{f}/{split}"))
    pools = split_pools(kg, splits)
    tuned = np.concatenate([splits.ft_known, splits.ft_unknown, splits.dev, *splits.demos.values()])
    ft_subjects = kg.s[np.concatenate([splits.ft_known, splits.ft_unknown, splits.dev, splits.test["id"]])]
    assert set(drawn) == {(split, f) for split in ("id", "near-id", "open-world") for f in filters}
    for (split, f), ids in drawn.items():
        assert pools[split][ids].all() and filters[f][ids].all() and len(np.unique(ids)) == len(ids)
        assert len(ids) == min(size, int((pools[split] & filters[f]).sum()))
        assert not np.isin(ids, tuned).any() and not qa[kg.s[ids]].any()
        in_ft = np.isin(kg.r[ids], splits.ft_relations)
        assert in_ft.all() if split == "id" else not in_ft.any()
        if split == "near-id":
            assert np.isin(kg.s[ids], ft_subjects).all()
        if split == "open-world":
            assert not np.isin(kg.s[ids], ft_subjects).any()
    for split in ("id", "near-id", "open-world"):                  # the run's own tests come from the same pools
        assert pools[split][splits.test[split]].all()


@settings(max_examples=40)
@given(w=worlds(), share=st.floats(0.05, 1))
def test_composed_qa_adds_documents_and_changes_nothing_else(w, share):
    """Issue 12's 2-hop in format: with corpus.two_hop_qa_share > 0 the stream is share 0's stream
    with composed-QA documents <bos> <q> s Q1 Q2 <a> a <eos> inserted between documents: one per
    repetition of each drawn query (QA subjects, both hops shown, as often as the less-shown hop);
    fact counts are unchanged."""
    gcfg, ccfg, scfg, seed = w
    gcfg = dataclasses.replace(gcfg, n_composed=max(gcfg.n_composed, 1))
    kg = generate(gcfg, stream(seed, "graph"))
    qa = assign_qa_subjects(kg.n_entities, ccfg.qa_subject_share, stream(seed, "qa"))
    plain = build_corpus(kg, qa, ccfg, stream(seed, "corpus"))
    mixed = build_corpus(kg, qa, dataclasses.replace(ccfg, two_hop_qa_share=share), stream(seed, "corpus"))
    v = plain.vocab
    rng = stream(seed, "corpus")
    build_corpus(kg, qa, ccfg, rng)                                  # advance as the builder did, then draw
    expected = composed_qa_rows(kg, qa, share, rng)
    docs = np.split(mixed.stream, np.flatnonzero(mixed.stream == BOS)[1:])
    is_q = lambda t: (t >= v.question_offset) & (t < v.size)                                  # noqa: E731
    composed = [d for d in docs if len(d) == 8 and d[1] == Q and is_q(d[3]) and is_q(d[4])]
    rest = [d for d in docs if not (len(d) == 8 and d[1] == Q and is_q(d[3]) and is_q(d[4]))]
    assert np.array_equal(np.concatenate(rest) if rest else np.zeros(0, np.int32), plain.stream)
    assert len(composed) == expected[:, 5].sum() == mixed.n_docs - plain.n_docs
    got = sorted(tuple(int(x) for x in (d[2] - v.entity_offset, d[3] - v.question_offset, d[4] - v.question_offset,
                                        d[6] - v.entity_offset)) for d in composed)
    want = sorted(tuple(int(x) for x in r[[0, 1, 2, 4]]) for r in np.repeat(expected, expected[:, 5], axis=0))
    assert got == want and all(d[5] == A and d[7] == EOS for d in composed)
    if len(expected):
        assert qa[expected[:, 0]].all()
        f1 = kg.fact_ids(expected[:, 0], expected[:, 1], expected[:, 3])
        f2 = kg.fact_ids(expected[:, 3], expected[:, 2], expected[:, 4])
        assert (expected[:, 5] == np.minimum(kg.exposure[f1], kg.exposure[f2])).all() and (expected[:, 5] > 0).all()
    s_, r_, a_, _ = parse_facts(mixed.stream, v)                                              # facts as before
    assert np.array_equal(np.bincount(kg.fact_ids(s_, r_, a_), minlength=kg.n_facts), kg.exposure)


def test_rows_cover_the_stream_and_mask_padding():
    cfg = load_config("smoke")
    world = build_world(cfg)
    rows = world.corpus.rows(cfg.model.n_ctx)
    flat = rows.tokens.reshape(-1)
    assert np.array_equal(flat[: len(world.corpus.stream)], world.corpus.stream)
    assert (flat[len(world.corpus.stream):] == PAD).all()
    assert not rows.loss_mask[:, 0].any() and not rows.loss_mask[rows.tokens == PAD].any()


def test_same_seed_same_world_other_seed_other_world():
    a, b = build_world(load_config("smoke")), build_world(load_config("smoke"))
    c = build_world(load_config("smoke", overrides=["seed=1"]))
    assert np.array_equal(a.corpus.stream, b.corpus.stream) and a.config_hash == b.config_hash
    assert not np.array_equal(a.corpus.stream[:500], c.corpus.stream[:500]) and a.config_hash != c.config_hash


def test_too_many_held_out_facts_is_a_config_error():
    with pytest.raises(ConfigError, match=r"splits.test_size = 100000"):
        build_world(load_config("smoke", overrides=["splits.test_size=100000"]))


def test_save_load(tmp_path):
    world = build_world(load_config("smoke"))
    world.splits.save(tmp_path / "s.npz")
    world.corpus.save(tmp_path / "c.npz")
    s2, c2 = Splits.load(tmp_path / "s.npz"), Corpus.load(tmp_path / "c.npz")
    assert np.array_equal(s2.test["near-id"], world.splits.test["near-id"]) and s2.demos.keys() == world.splits.demos.keys()
    assert np.array_equal(c2.stream, world.corpus.stream) and c2.vocab == world.corpus.vocab


def test_vocabulary_tokens_are_unique_and_whitespace_free():
    for v in (Vocabulary(10, 3, surface_forms=2), Vocabulary(10, 3, surface_forms=2, qa_templates=3)):
        assert len(v.tokens) == len(set(v.tokens)) == v.size
        assert all(t and not any(ch.isspace() for ch in t) for t in v.tokens)
    one, three = Vocabulary(10, 3), Vocabulary(10, 3, qa_templates=3)
    assert three.tokens[:one.size] == one.tokens and one.to_json() == {"n_entities": 10, "n_relations": 3,
                                                                        "surface_forms": 1}
    assert three.tokens[three.question_relation(2, 1)] == "Q2.t1" and Vocabulary(**three.to_json()) == three


def test_question_templates_in_pretraining_only():
    """Issue 12's question templates: with corpus.qa_templates = 2 pretraining asks QA subjects' facts
    in both forms (and counts each as a shown fact), while fine-tuning rows and the standard prompts
    use template 0 and zero-shot-t1 asks in template 1."""
    from kgsim.study.stages import qa_rows
    from kgsim.world.prompts import zero_shot

    world = build_world(load_config("smoke", overrides=["corpus.qa_templates=2"]))
    v, kg = world.corpus.vocab, world.kg
    t1 = (world.corpus.stream >= v.question_relation(0, 1)) & (world.corpus.stream < v.size)
    t0 = (world.corpus.stream >= v.question_offset) & (world.corpus.stream < v.question_relation(0, 1))
    assert t1.sum() > 0 and t0.sum() > 0
    rows = qa_rows(world, world.splits.ft_known).tokens
    assert ((rows >= v.question_relation(0, 1)) & (rows < v.size)).sum() == 0
    p = zero_shot(v, kg.s[:3], kg.r[:3], template=1)
    assert p.name == "zero-shot-t1" and (p.tokens[:, 3] == v.question_relation(kg.r[:3], 1)).all()


@settings(max_examples=60)
@given(w=worlds(), known_share=st.floats(0, 1))
def test_instruct_pool_holds_no_fine_tuning_dev_or_test_fact(w, known_share):
    """Issue 12's instruct analogue tunes on instruct_pool: QA subjects' facts of other relations. It
    shares no fact with the fine-tuning pools, dev or any test set (both hops of the 2-hop queries
    included) of the structural splits or of splits remade from a measured Known mask, and no
    fine-tuning relation."""
    kg, qa, splits, _ = _world(*w)
    if splits is None:
        return
    rng = np.random.default_rng(w[3])
    known = rng.random(kg.n_facts) < known_share
    try:
        measured = make_splits(kg, qa, w[2], stream(w[3], "splits/measured"), known=known, unknown=~known)
    except ConfigError:
        measured = None
    pool = instruct_pool(kg, splits)
    assert qa[kg.s[pool]].all() and not np.isin(kg.r[pool], splits.ft_relations).any()
    for sp in (splits, measured):
        if sp is None:
            continue
        assert np.array_equal(instruct_pool(kg, sp), pool)
        q = sp.two_hop
        hops = [kg.fact_ids(q[:, 0], q[:, 1], q[:, 3]), kg.fact_ids(q[:, 3], q[:, 2], q[:, 4])] if len(q) else []
        held = [sp.ft_known, sp.ft_unknown, sp.dev, *sp.test.values(), *hops]
        assert not pool[np.concatenate([np.asarray(h, np.int64) for h in held])].any()


def _evenly_spread(groups: np.ndarray, chosen: np.ndarray, available: np.ndarray) -> bool:
    """The rule of :func:`even_counts` on the `chosen` facts, grouped by `groups` among the `available`."""
    keys, have = np.unique(groups[available], return_counts=True)
    took = np.array([(groups[chosen] == k).sum() for k in keys])
    return _even(took, have)


def _even(took: np.ndarray, have: np.ndarray) -> bool:
    """No group holds more than one above a group that kept facts back (a group may hold fewer only by
    having given all it had)."""
    short = took < have
    return not short.any() or took.max() <= took[short].min() + 1


@settings(max_examples=60)
@given(w=worlds(), n=st.integers(1, 30))
def test_factorial_open_world_is_far_along_each_factor_and_even_over_cells(w, n):
    """Issue 12's factorial Open-World (splits.open_world = "factorial"): the same fine-tuning, dev, ID
    and Near-ID sets as the typed rule (it is drawn after them); no fine-tuning relation and no subject
    of a fine-tuning, dev or ID fact (graph distance >= 1 along the neighbourhood factor); its facts
    spread over the cells of subject type x answer type x distance so that a cell holds fewer than
    another only when it had no more, and likewise over the relations inside each cell."""
    gcfg, ccfg, scfg, seed = w
    scfg = dataclasses.replace(scfg, test_size=n)
    kg, qa, typed, _ = _world(gcfg, ccfg, scfg, seed)
    if typed is None:
        return
    try:
        fact = make_splits(kg, qa, dataclasses.replace(scfg, open_world="factorial"), stream(seed, "splits"))
    except ConfigError:                    # refused only when fewer than n known far facts exist
        far = split_pools(kg, dataclasses.replace(typed, meta=typed.meta | {"open_world_rule": OW_FACTORIAL_RULE}))
        assert (far["open-world"] & (kg.exposure >= scfg.known_min_exposure)).sum() < n
        return
    fact.check_disjoint()
    for name in ("ft_known", "ft_unknown", "dev"):
        assert np.array_equal(getattr(fact, name), getattr(typed, name))
    assert np.array_equal(fact.test["id"], typed.test["id"]) and np.array_equal(fact.test["near-id"],
                                                                                  typed.test["near-id"])
    ow = fact.test["open-world"]
    assert len(ow) == n and fact.meta["open_world_rule"] == OW_FACTORIAL_RULE
    assert not np.isin(kg.r[ow], fact.ft_relations).any()
    tuned = np.concatenate([fact.ft_known, fact.ft_unknown, fact.dev, fact.test["id"]])
    assert not np.isin(kg.s[ow], kg.s[tuned]).any()
    dist = subject_distance(kg, kg.s[np.concatenate([fact.ft_known, fact.ft_unknown])])
    assert (dist[kg.s[ow]] >= 1).all()
    pool = np.flatnonzero(split_pools(kg, fact)["open-world"] & (kg.exposure >= scfg.known_min_exposure))
    assert np.isin(ow, pool).all()
    cells = open_world_cells(kg, np.concatenate([fact.ft_known, fact.ft_unknown]))
    assert _evenly_spread(cells, ow, pool)
    for c in np.unique(cells[ow]):
        assert _evenly_spread(kg.r, ow[cells[ow] == c], pool[cells[pool] == c])


def test_even_counts_spreads_as_evenly_as_the_groups_allow():
    rng = np.random.default_rng(0)
    for avail, n in (([5, 5, 5], 9), ([1, 10, 10], 12), ([0, 3, 7], 10), ([2, 2], 3), ([4], 4), ([3, 1, 9, 2], 11)):
        take = even_counts(np.array(avail), n, rng)
        assert take.sum() == n and (take >= 0).all() and (take <= avail).all()
        assert _even(take, np.array(avail)), (avail, n, take)


def test_the_world_keeps_the_typed_open_world_and_its_hash():
    """splits.open_world is the study's draw: the world (and so the base model) is the same object for
    both rules, and a typed config's protocol is the one written before the key existed."""
    typed = load_config("smoke")
    fact = load_config("smoke", overrides=['splits.open_world="factorial"'])
    assert world_hash(typed) == world_hash(fact)
    assert "open_world" not in protocol_dict(typed)["splits"]
    assert protocol_dict(fact)["splits"]["open_world"] == "factorial"
    with pytest.raises(ConfigError, match="splits.open_world"):
        load_config("smoke", overrides=['splits.open_world="far"'])


@settings(max_examples=40)
@given(w=worlds(), known_share=st.floats(0.2, 1), size=st.integers(1, 20))
def test_filtered_open_world_keeps_the_factorial_rule(w, known_share, size):
    """Under splits.open_world = "factorial" every filter's Open-World set (split@filter) is drawn by the
    same rule from its filtered pool: evenly over the cells, and over relations inside each."""
    gcfg, ccfg, scfg, seed = w
    kg, qa, _, _ = _world(gcfg, ccfg, scfg, seed)
    try:
        splits = make_splits(kg, qa, dataclasses.replace(scfg, open_world="factorial"), stream(seed, "splits"))
    except ConfigError:
        return
    rng = np.random.default_rng(seed)
    filters = {"slick": rng.random(kg.n_facts) < known_share, "unfiltered": np.ones(kg.n_facts, bool)}
    drawn = filtered_tests(kg, splits, filters, size, lambda f, split: stream(seed, f"filter/{f}/{split}"))
    cells = open_world_cells(kg, np.concatenate([splits.ft_known, splits.ft_unknown]))
    for f, mask in filters.items():
        ow, pool = drawn[("open-world", f)], np.flatnonzero(split_pools(kg, splits)["open-world"] & mask)
        assert len(ow) == min(size, len(pool)) and np.isin(ow, pool).all()
        assert _evenly_spread(cells, ow, pool)
        for c in np.unique(cells[ow]):
            assert _evenly_spread(kg.r, ow[cells[ow] == c], pool[cells[pool] == c])
