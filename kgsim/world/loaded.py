"""Knowledge graphs read from files: a TSV of ``head<TAB>relation<TAB>tail`` lines, and the
EntityQuestions dataset (Sciavolino et al. 2021, MIT licence) read as a graph of named facts.

Both become a :class:`~kgsim.core.kg.KnowledgeGraph` the same way (:func:`graph_from_triples`):

- ``graph.relations`` keeps only the named relations, ``graph.max_facts`` keeps whole subjects (those
  with facts of the most relations first, then in random order) until the next would pass the cap;
- one entity type (0) and domain = range = 0 for every relation; no composed pairs;
- popularity: Zipf (``graph.zipf_exponent``) over entities ranked by degree (most connected = most
  popular); exposure: a ``graph.never_exposed_share`` of *queries* (s, r) is never shown — all
  answers of a multi-answer query are hidden together, so "Unknown" means no answer was ever seen —
  and every shown fact gets 1 + its share of the remaining budget by its subject's popularity,
  capped at ``graph.max_exposure`` (mean ``graph.mean_exposure`` before the cap).

Every problem with a file raises :class:`GraphFileError` (one line naming the file and line);
a relation named in the config but absent from the data raises ConfigError naming the key.

>>> import tempfile, pathlib
>>> f = pathlib.Path(tempfile.mkdtemp()) / "kg.tsv"
>>> _ = f.write_text("Belgium\\tlanguage\\tFrench\\nBelgium\\tlanguage\\tDutch\\nFrance\\tlanguage\\tFrench\\n")
>>> kg = load_tsv(f)
>>> kg.n_entities, kg.n_relations, kg.n_facts, int((kg.n_answers() > 1).sum())
(4, 1, 3, 2)
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from kgsim.core.config import ConfigError, GraphConfig
from kgsim.core.io import InputFileError, decode_utf8, read_bytes, read_json
from kgsim.core.kg import KnowledgeGraph

__all__ = ["GraphFileError", "load_tsv", "load_entityquestions", "graph_from_triples", "draw_query_exposure",
           "EQ_SPLITS", "input_fingerprint"]

EQ_SPLITS = ("train", "dev", "test")
_COLUMNS = ("head", "relation", "tail")


class GraphFileError(InputFileError):
    """A knowledge-graph file is malformed; the message names the file and line."""


def _read(path: Path, what: str) -> str:
    try:
        return decode_utf8(read_bytes(path, what), path, what)
    except InputFileError as e:
        raise GraphFileError(str(e)) from None


def input_fingerprint(cfg: GraphConfig) -> str:
    """A hash of the files a loaded graph is read from ("" for synthetic graphs, or when a file cannot
    be read: loading it then raises the error), so that a cache keyed by config notices an edited file."""
    if cfg.generator == "tsv":
        paths = [Path(cfg.tsv_path)]
    elif cfg.generator == "entityquestions":
        root = Path(cfg.data_path)
        wanted = set(cfg.relations)
        paths = [root / "relation_query_templates.json"] + sorted(
            p for split in EQ_SPLITS if (root / split).is_dir() for p in (root / split).iterdir()
            if p.name.endswith(f".{split}.jsonl") and (not wanted or p.name.split(".")[0] in wanted))
    else:
        return ""
    h = hashlib.sha256()
    try:
        for p in paths:
            h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    except OSError:
        return ""
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Named triples -> KnowledgeGraph
# --------------------------------------------------------------------------------------------

def draw_query_exposure(s: np.ndarray, r: np.ndarray, n_relations: int, subject_weight: np.ndarray,
                        cfg: GraphConfig, rng: np.random.Generator) -> np.ndarray:
    """Per-fact exposure counts with never-shown *queries*: ``round(never_exposed_share * n_queries)``
    queries, chosen uniformly, have every fact at 0; each other fact gets 1 plus its share of the
    remaining budget (a multinomial draw in proportion to its subject's weight), capped."""
    n = len(s)
    exposure = np.zeros(n, np.int64)
    _, query = np.unique(s * n_relations + r, return_inverse=True)
    n_queries = int(query.max()) + 1 if n else 0
    hidden = rng.permutation(n_queries)[: int(round(cfg.never_exposed_share * n_queries))]
    shown = ~np.isin(query, hidden)
    n_shown = int(shown.sum())
    if n_shown == 0:
        return exposure
    budget = max(int(round(cfg.mean_exposure * n_shown)) - n_shown, 0)
    w = subject_weight[s[shown]]
    extra = rng.multinomial(budget, w / w.sum()) if w.sum() > 0 else np.zeros(n_shown, np.int64)
    exposure[shown] = np.minimum(1 + extra, cfg.max_exposure)
    return exposure


def _keep_relations(rel: np.ndarray, rel_names: list[str], wanted: Sequence[str], source: str) -> np.ndarray:
    """bool mask of the triples whose relation is among `wanted` (all when empty)."""
    if not wanted:
        return np.ones(len(rel), bool)
    missing = [w for w in wanted if w not in rel_names]
    if missing:
        shown = ", ".join(rel_names[:10]) + (", ..." if len(rel_names) > 10 else "")
        raise ConfigError(f"graph.relations = {list(wanted)}: {source} has no relation {missing[0]!r} "
                          f"(it has {len(rel_names)}: {shown})")
    return np.isin(rel, [rel_names.index(w) for w in wanted])


def _cap_subjects(s: np.ndarray, r: np.ndarray, max_facts: int, rng: np.random.Generator) -> np.ndarray:
    """bool mask keeping whole subjects, those with facts of the most relations first (random order
    among equals), while the total stays <= max_facts."""
    subjects, inv, n_facts = np.unique(s, return_inverse=True, return_counts=True)
    pairs = np.unique(np.stack([inv, r], 1), axis=0)
    n_rel = np.bincount(pairs[:, 0], minlength=len(subjects))
    order = np.lexsort((rng.permutation(len(subjects)), -n_rel))
    total = np.cumsum(n_facts[order])
    chosen = np.zeros(len(subjects), bool)
    chosen[order[total <= max_facts]] = True
    return chosen[inv]


def graph_from_triples(heads: Sequence[str], rels: Sequence[str], tails: Sequence[str], cfg: GraphConfig,
                       rng: np.random.Generator, source: str, generator: str) -> KnowledgeGraph:
    """A KnowledgeGraph of named triples (duplicates already removed), after ``graph.relations`` and
    ``graph.max_facts`` (see the module docstring)."""
    ents: dict[str, int] = {}                                  # ids in order of first appearance
    relations: dict[str, int] = {}
    ids = [(ents.setdefault(h, len(ents)), relations.setdefault(rel, len(relations)), ents.setdefault(t, len(ents)))
           for h, rel, t in zip(heads, rels, tails)]
    s, r, a = (np.array(col, np.int64) for col in zip(*ids)) if ids else (np.zeros(0, np.int64),) * 3
    ent_names, rel_names = list(ents), list(relations)
    keep = _keep_relations(r, rel_names, cfg.relations, source)
    if cfg.max_facts and keep.sum() > cfg.max_facts:
        sub = _cap_subjects(s[keep], r[keep], cfg.max_facts, rng)
        keep[np.flatnonzero(keep)[~sub]] = False
    if not keep.any():
        raise ConfigError(f"graph.max_facts = {cfg.max_facts}: keeps no fact of {source} (one subject alone has more)"
                          if cfg.max_facts else f"graph.relations = {list(cfg.relations)}: no facts in {source}")
    s, r, a = s[keep], r[keep], a[keep]
    used_e, used_r = np.unique(np.concatenate([s, a])), np.unique(r)       # renumber what is left, by name
    e_new = np.full(len(ent_names), -1, np.int64)
    e_new[used_e] = np.arange(len(used_e))
    r_new = np.full(len(rel_names), -1, np.int64)
    r_new[used_r] = np.arange(len(used_r))
    s, a, r = e_new[s], e_new[a], r_new[r]
    n_ent, n_rel = len(used_e), len(used_r)
    degree = np.bincount(s, minlength=n_ent) + np.bincount(a, minlength=n_ent)
    w = np.arange(1, n_ent + 1, dtype=np.float64) ** -cfg.zipf_exponent
    pop = np.empty(n_ent)
    pop[np.argsort(-degree, kind="stable")] = w / w.sum()
    exposure = draw_query_exposure(s, r, n_rel, pop, cfg, rng)
    zeros = np.zeros(n_rel, np.int64)
    return KnowledgeGraph(np.zeros(n_ent, np.int64), zeros, zeros.copy(), s, r, a, exposure, pop,
                          np.zeros((0, 2), np.int64), entity_names=[ent_names[i] for i in used_e],
                          relation_names=[rel_names[i] for i in used_r], generator=generator)


# --------------------------------------------------------------------------------------------
# TSV
# --------------------------------------------------------------------------------------------

def load_tsv(path: str | Path, cfg: GraphConfig | None = None,
             rng: np.random.Generator | None = None) -> KnowledgeGraph:
    """Load `head<TAB>relation<TAB>tail` lines (UTF-8; blank lines skipped; names stripped of
    surrounding spaces). Several tails for one (head, relation) are allowed (a multi-answer query:
    any of them counts as correct).

    Raises:
        GraphFileError: a missing, unreadable or non-UTF-8 file, no facts, a line without exactly
            three non-empty columns, a repeated line (each names the file and line).
    """
    cfg = cfg or GraphConfig(generator="tsv", tsv_path=str(path))
    path = Path(path)
    what = "a head<TAB>relation<TAB>tail file"
    text = _read(path, what)
    lines = text.split("\n")
    if not any(line.strip() for line in lines):
        raise GraphFileError(f"{path}: empty file (expected head<TAB>relation<TAB>tail lines)")
    seen: dict[tuple[str, str, str], int] = {}
    for no, line in enumerate(lines, 1):
        line = line[:-1] if line.endswith("\r") else line
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 3:
            raise GraphFileError(f"{path}:{no}: expected 3 tab-separated columns (head, relation, tail), "
                                 f"got {len(cols)}: {line[:80]!r}")
        names = tuple(c.strip() for c in cols)
        empty = [f"column {i + 1} ({_COLUMNS[i]})" for i, c in enumerate(names) if not c]
        if empty:
            raise GraphFileError(f"{path}:{no}: {' and '.join(empty)} empty: {line[:80]!r}")
        if names in seen:
            raise GraphFileError(f"{path}:{no}: duplicate of line {seen[names]}: {line[:80]!r}")
        seen[names] = no
    h, r, t = zip(*seen) if seen else ((), (), ())
    rng = rng if rng is not None else np.random.default_rng(0)
    return graph_from_triples(h, r, t, cfg, rng, str(path), "tsv")


# --------------------------------------------------------------------------------------------
# EntityQuestions
# --------------------------------------------------------------------------------------------

def _natural(name: str) -> tuple:
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t)


def _eq_files(root: Path) -> dict[str, list[Path]]:
    """{relation: [its files in train, dev, test]} of an EntityQuestions folder, in natural order."""
    if not root.is_dir():
        raise GraphFileError(f"{root}: no such folder (expected the EntityQuestions layout ROOT/train/P17.train.jsonl)"
                             if not root.exists() else f"{root}: is a file, not the EntityQuestions folder")
    files: dict[str, list[Path]] = {}
    for split in EQ_SPLITS:
        d = root / split
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            m = re.fullmatch(rf"(.+)\.{split}\.jsonl", p.name)
            if m and p.is_file():
                files.setdefault(m.group(1), []).append(p)
    if not files:
        raise GraphFileError(f"{root}: no RELATION.SPLIT.jsonl files under train/, dev/ or test/")
    return dict(sorted(files.items(), key=lambda kv: _natural(kv[0])))


def _eq_templates(root: Path) -> dict[str, re.Pattern]:
    path = root / "relation_query_templates.json"
    what = "relation_query_templates.json: an object mapping relations to question templates holding [X]"
    try:
        data = read_json(path, what)
    except InputFileError as e:
        raise GraphFileError(str(e)) from None
    out = {}
    for rel, t in data.items():
        if not isinstance(t, str) or "[X]" not in t:
            raise GraphFileError(f"{path}: the template of {rel!r} is not a string holding [X]")
        head, _, tail = t.partition("[X]")
        out[rel] = re.compile(rf"^{re.escape(head)}(.+?){re.escape(tail)}$")
    return out


def _eq_triples(path: Path, rel: str, template: re.Pattern, out: dict) -> int:
    """Add (subject, rel, answer) of every line of one relation file to `out`; returns how many
    questions did not fit the template (skipped)."""
    skipped = 0
    for no, line in enumerate(_read(path, "EntityQuestions JSON lines").split("\n"), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise GraphFileError(f"{path}:{no}: not valid JSON ({getattr(e, 'msg', 'nested too deeply')}): "
                                 f"{line[:60]!r}") from None
        if not isinstance(d, dict) or not isinstance(d.get("question"), str):
            raise GraphFileError(f"{path}:{no}: expected an object with a string 'question': {line[:60]!r}")
        answers = d.get("answers")
        if not isinstance(answers, list) or not answers or not all(isinstance(x, str) for x in answers):
            raise GraphFileError(f"{path}:{no}: 'answers' must be a non-empty list of strings: {line[:60]!r}")
        m = template.match(d["question"].strip())
        subject = m.group(1).strip() if m else ""
        if not subject:
            skipped += 1
            continue
        for ans in answers:
            if ans.strip():
                out.setdefault((subject, rel, ans.strip()), None)
    return skipped


def load_entityquestions(root: str | Path, cfg: GraphConfig | None = None,
                         rng: np.random.Generator | None = None) -> KnowledgeGraph:
    """EntityQuestions as a graph: each question of relation P with answers A1..An gives the facts
    (subject, P, Ai), the subject parsed back with P's template from ``relation_query_templates.json``
    (questions that do not fit it are skipped). Train, dev and test files are pooled; a fact found
    twice is kept once. Entities are named by their surface string, so "Paris" the answer and "Paris"
    the subject are one entity. ``graph.relations`` picks relations (P17, P19, ...; default all) and
    ``graph.max_facts`` caps the size (see the module docstring).

    Raises:
        GraphFileError: a missing folder or templates file, a malformed line (naming file and line).
        ConfigError: a relation of ``graph.relations`` with no files.
    """
    root = Path(root)
    cfg = cfg or GraphConfig(generator="entityquestions", data_path=str(root))
    files = _eq_files(root)
    templates = _eq_templates(root)
    wanted = list(cfg.relations) or list(files)
    missing = [w for w in wanted if w not in files]
    if missing:
        raise ConfigError(f"graph.relations = {list(cfg.relations)}: {root} has no files for relation {missing[0]!r} "
                          f"(it has {', '.join(files)})")
    triples: dict[tuple[str, str, str], None] = {}
    for rel in wanted:
        if rel not in templates:
            raise GraphFileError(f"{root / 'relation_query_templates.json'}: no template for relation {rel!r}")
        for path in files[rel]:
            _eq_triples(path, rel, templates[rel], triples)
    if not triples:
        raise GraphFileError(f"{root}: no question fits its relation's template; no facts")
    h, r, t = zip(*triples)
    rng = rng if rng is not None else np.random.default_rng(0)
    return graph_from_triples(h, r, t, cfg, rng, str(root), "entityquestions")
