"""Question-answering data from local files, as one record type: :class:`QAExample`.

Layouts read (all offline, from a path the caller gives):

- **EntityQuestions** (Sciavolino et al. 2021): ``ROOT/{train,dev,test}/P17.test.jsonl``, one JSON
  object ``{"question": ..., "answers": [...]}`` per line (``.json`` files holding a list work too),
  and ``ROOT/relation_query_templates.json`` mapping each relation to a question template with
  ``[X]`` for the subject, from which the subject is parsed back.
- **PopQA** (Mallen et al. 2023): one TSV file with a header; columns ``subj, prop, obj, s_pop,
  possible_answers`` are required (``possible_answers`` is a JSON list in a string); ``id`` and
  ``question`` are used when present (without ``question``, the question is built from PopQA's
  relation templates).
- **MMLU-style CSV**: rows ``question, A, B, C, D, answer`` (a header row with those names is
  allowed); a file, or a directory of ``SUBJECT_SPLIT.csv`` files (the subject becomes the relation).
- **synthetic**: a kgsim KnowledgeGraph verbalised by :mod:`llm_bridge.verbalize`, one example per
  fact (``fact_id`` = the fact's index) and one per 2-hop query (``fact_id`` = its row in
  ``kg.two_hop()``, ``path`` = the ids of its two facts).

Every malformed file raises :class:`DatasetFileError` whose message starts ``FILE:LINE:``.

>>> ex = QAExample("P17/test/0", "Which country is Erie located in?", ["United States"], "P17", subject="Erie")
>>> ex.answers, ex.answer
(('United States',), 'United States')
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from kgsim.core.kg import subject_mentions

EQ_SPLITS = ("train", "dev", "test")
_SPLIT_CODE = {"train": 1, "dev": 2, "test": 3}


class DatasetFileError(ValueError):
    """A data file is missing or malformed; the message names the file (and line)."""


@dataclass(frozen=True)
class QAExample:
    """One question with its gold answers (any of them counts as correct).

    ``fact_id`` is the integer id used as the EdgeSet test id (unique within a dataset);
    ``choices`` is set for multiple-choice items (then ``answers`` are option letters);
    ``bridge``/``path``/``rationale`` describe a 2-hop query (bridge entity name, the fact ids of
    its hops, the chain of thought that spells the path out).
    """

    id: str
    question: str
    answers: tuple[str, ...]
    relation: str
    subject: str = ""
    popularity: float | None = None
    fact_id: int = -1
    choices: tuple[str, ...] = ()
    exposure: int | None = None
    bridge: str = ""
    path: tuple[int, ...] = ()
    rationale: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.answers, str):
            raise TypeError("answers must be a list of strings, not one string")
        object.__setattr__(self, "answers", tuple(self.answers))
        object.__setattr__(self, "choices", tuple(self.choices))
        object.__setattr__(self, "path", tuple(int(p) for p in self.path))
        if not self.answers:
            raise ValueError(f"example {self.id!r}: no gold answer")

    @property
    def answer(self) -> str:
        """The canonical answer (the first gold answer): the fine-tuning target and demo answer."""
        return self.answers[0]


def _fail(path: Path, line: int | None, why: str) -> DatasetFileError:
    return DatasetFileError(f"{path}:{line}: {why}" if line else f"{path}: {why}")


def _answers(path: Path, line: int, value) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise _fail(path, line, f"'answers' must be a non-empty list of strings, got {str(value)[:80]!r}")
    if not any(a.strip() for a in value):
        raise _fail(path, line, "'answers' holds only empty strings")
    return tuple(value)


# --------------------------------------------------------------------------------------------
# EntityQuestions
# --------------------------------------------------------------------------------------------

def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def eq_relation_files(root: str | Path, split: str) -> dict[str, Path]:
    """``{relation: file}`` of one EntityQuestions split, in natural relation order (P17 < P106).

    Raises:
        DatasetFileError: unknown split, or no split directory / no relation files.
    """
    if split not in EQ_SPLITS:
        raise DatasetFileError(f"split = {split!r}: choose one of {list(EQ_SPLITS)}")
    d = Path(root) / split
    if not d.is_dir():
        raise DatasetFileError(f"{d}: no such directory (expected the EntityQuestions layout ROOT/{split}/P17.{split}.jsonl)")
    files = {}
    for p in d.iterdir():
        m = re.fullmatch(rf"(.+)\.{split}\.jsonl?", p.name)
        if m and p.is_file():
            files[m.group(1)] = p
    if not files:
        raise DatasetFileError(f"{d}: no RELATION.{split}.jsonl files")
    return dict(sorted(files.items(), key=lambda kv: _natural(kv[0])))


def load_relation_templates(root: str | Path) -> dict[str, str]:
    """``relation_query_templates.json``: relation -> question template with ``[X]``; {} if absent."""
    p = Path(root) / "relation_query_templates.json"
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise _fail(p, e.lineno, f"not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) and "[X]" in v for v in data.values()):
        raise _fail(p, None, "expected an object mapping relations to templates holding [X]")
    return data


def _template_regex(template: str) -> re.Pattern:
    head, _, tail = template.partition("[X]")
    return re.compile(rf"^{re.escape(head)}(.+?){re.escape(tail)}$")


def _read_records(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) pairs of a JSON-lines file, or of a .json file holding a list."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise _fail(path, e.lineno, f"not valid JSON ({e.msg})") from None
        return [(i + 1, d) for i, d in enumerate(data)]
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((no, json.loads(line)))
        except json.JSONDecodeError as e:
            raise _fail(path, no, f"not valid JSON ({e.msg}): {line[:80]!r}") from None
    return out


def load_entityquestions(root: str | Path, split: str, relations: Sequence[str] | None = None,
                         max_per_relation: int | None = None) -> list[QAExample]:
    """The examples of one split, relation by relation, in file order.

    ``id`` is ``"P17/test/12"`` (relation/split/position in its file); ``fact_id`` is
    ``code(split) * 10**9 + k * 10**6 + position`` with k the relation's rank in the directory,
    so ids never collide across splits. The subject is parsed back from the question with the
    relation's template ("" where the question does not fit it).

    Raises:
        DatasetFileError: missing directory, unknown relation, malformed line (names file:line).
    """
    files = eq_relation_files(root, split)
    rank = {rel: k for k, rel in enumerate(files)}
    if relations is not None:
        missing = [r for r in relations if r not in files]
        if missing:
            raise DatasetFileError(f"{Path(root) / split}: no files for relations {missing}; found {list(files)}")
        files = {r: files[r] for r in relations}
    templates = {r: _template_regex(t) for r, t in load_relation_templates(root).items()}
    out = []
    for rel, path in files.items():
        records = _read_records(path)
        for pos, (no, d) in enumerate(records[:max_per_relation] if max_per_relation else records):
            if not isinstance(d, dict) or not isinstance(d.get("question"), str) or not d["question"].strip():
                raise _fail(path, no, "expected an object with a non-empty string 'question'")
            if "answers" not in d:
                raise _fail(path, no, "missing 'answers'")
            m = templates[rel].match(d["question"].strip()) if rel in templates else None
            out.append(QAExample(f"{rel}/{split}/{pos}", d["question"].strip(), _answers(path, no, d["answers"]), rel,
                                 subject=m.group(1) if m else "",
                                 fact_id=_SPLIT_CODE[split] * 10**9 + rank[rel] * 10**6 + pos))
    return out


def entityquestions_counts(root: str | Path) -> dict[str, dict[str, int]]:
    """``{split: {relation: number of examples}}`` for every split present (non-empty lines)."""
    counts = {}
    for split in EQ_SPLITS:
        if (Path(root) / split).is_dir():
            counts[split] = {rel: sum(1 for line in p.read_text(encoding="utf-8").splitlines() if line.strip())
                             if p.suffix == ".jsonl" else len(_read_records(p))
                             for rel, p in eq_relation_files(root, split).items()}
    return counts


# --------------------------------------------------------------------------------------------
# PopQA
# --------------------------------------------------------------------------------------------

POPQA_REQUIRED = ("subj", "prop", "obj", "s_pop", "possible_answers")
# PopQA's question templates per relation ([subj] is the subject), used when a row has no question.
POPQA_TEMPLATES = {
    "occupation": "What is [subj]'s occupation?", "place of birth": "In what city was [subj] born?",
    "genre": "What genre is [subj]?", "father": "Who is the father of [subj]?",
    "country": "In what country is [subj]?", "producer": "Who was the producer of [subj]?",
    "director": "Who was the director of [subj]?", "capital of": "What is [subj] the capital of?",
    "screenwriter": "Who was the screenwriter for [subj]?", "composer": "Who was the composer of [subj]?",
    "color": "What color is [subj]?", "religion": "What is the religion of [subj]?",
    "sport": "What sport does [subj] play?", "author": "Who is the author of [subj]?",
    "mother": "Who is the mother of [subj]?", "capital": "What is the capital of [subj]?",
}


def load_popqa(path: str | Path) -> list[QAExample]:
    """PopQA rows as examples: relation = ``prop``, subject = ``subj``, popularity = ``s_pop``,
    answers = ``possible_answers`` (with ``obj`` first if it is missing there).

    Raises:
        DatasetFileError: missing file or columns, bad JSON list, non-numeric s_pop, unknown
        relation without a question (names file:line).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFileError(f"{path}: no such file")
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = [c for c in POPQA_REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise _fail(path, 1, f"missing columns {missing} (header: {reader.fieldnames})")
        out = []
        for row in reader:
            no = reader.line_num
            if None in row or any(row[c] is None for c in POPQA_REQUIRED):
                raise _fail(path, no, f"expected {len(reader.fieldnames)} tab-separated columns")
            try:
                answers = json.loads(row["possible_answers"])
            except json.JSONDecodeError:
                raise _fail(path, no, f"possible_answers is not a JSON list: {row['possible_answers'][:80]!r}") from None
            answers = list(_answers(path, no, answers))
            if row["obj"].strip() and row["obj"] not in answers:
                answers.insert(0, row["obj"])
            try:
                pop = float(row["s_pop"])
            except ValueError:
                raise _fail(path, no, f"s_pop = {row['s_pop']!r} is not a number") from None
            question = (row.get("question") or "").strip()
            if not question:
                if row["prop"] not in POPQA_TEMPLATES:
                    raise _fail(path, no, f"no question column and no template for prop {row['prop']!r}")
                question = POPQA_TEMPLATES[row["prop"]].replace("[subj]", row["subj"])
            raw_id = (row.get("id") or "").strip()
            if raw_id and not raw_id.lstrip("-").isdigit():
                raise _fail(path, no, f"id = {raw_id!r} is not an integer")
            fid = int(raw_id) if raw_id else len(out)
            out.append(QAExample(f"popqa/{fid}", question, tuple(answers), row["prop"], subject=row["subj"],
                                 popularity=pop, fact_id=fid))
    if not out:
        raise _fail(path, None, "no rows")
    if len({e.fact_id for e in out}) != len(out):
        raise _fail(path, None, "ids are not unique")
    return out


# --------------------------------------------------------------------------------------------
# MMLU-style multiple choice
# --------------------------------------------------------------------------------------------

MMLU_HEADER = ["question", "a", "b", "c", "d", "answer"]
LETTERS = "ABCD"


def format_choices(question: str, choices: Sequence[str]) -> str:
    """A multiple-choice question with its options on their own lines: '(A) ...', '(B) ...'."""
    return question.strip() + "".join(f"\n({LETTERS[i]}) {c}" for i, c in enumerate(choices))


def _mmlu_files(path: Path, split: str | None) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DatasetFileError(f"{path}: no such file or directory")
    pat = f"*_{split}.csv" if split else "*.csv"
    files = sorted(path.rglob(pat))
    if not files:
        raise DatasetFileError(f"{path}: no {pat} files")
    return files


def load_mmlu(path: str | Path, split: str | None = None) -> list[QAExample]:
    """Multiple-choice rows as examples: ``question`` shows the options (:func:`format_choices`),
    ``choices`` holds them, ``answers`` is the gold letter, ``relation`` is the subject taken from
    the file name (``astronomy_test.csv`` -> ``astronomy``). With `split`, a directory yields only
    its ``*_SPLIT.csv`` files; without, all ``*.csv`` files under it.

    Raises:
        DatasetFileError: missing files, a row without 6 columns, an answer not in A-D (file:line).
    """
    out = []
    for f in _mmlu_files(Path(path), split):
        subject = re.sub(rf"_({split})$" if split else r"_(dev|val|test|train)$", "", f.stem)
        with f.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            for k, row in enumerate(reader):
                no = reader.line_num
                if k == 0 and [c.strip().lower() for c in row] == MMLU_HEADER:
                    continue
                if not row or not any(c.strip() for c in row):
                    continue
                if len(row) != 6:
                    raise _fail(f, no, f"expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
                letter = row[5].strip().upper()
                if letter not in LETTERS:
                    raise _fail(f, no, f"answer {row[5]!r} is not one of A, B, C, D")
                choices = tuple(c.strip() for c in row[1:5])
                out.append(QAExample(f"{subject}/{len(out)}", format_choices(row[0], choices), (letter,), subject,
                                     fact_id=len(out), choices=choices))
    return out


# --------------------------------------------------------------------------------------------
# Synthetic: a verbalised kgsim graph
# --------------------------------------------------------------------------------------------

def fact_index(kg, s: np.ndarray, r: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Vectorised lookup of the fact ids of triples (s, r, a); -1 where the graph has no such fact."""
    return kg.fact_ids(s, r, a)


def synthetic_examples(kg, vb, form: int = 0) -> list[QAExample]:
    """One example per fact (question form `form`); all true answers of (s, r) are gold answers;
    ``popularity`` is the subject's realised pretraining mentions, ``exposure`` the fact's count."""

    mentions = subject_mentions(kg)
    out = []
    for i in range(kg.n_facts):
        s, r, a = int(kg.s[i]), int(kg.r[i]), int(kg.a[i])
        others = [vb.name(x) for x in kg.answers(s, r) if x != a]
        out.append(QAExample(f"fact/{i}", vb.question(s, r, form), (vb.name(a), *others), kg.relation_name(r),
                             subject=vb.name(s), popularity=float(mentions[s]), fact_id=i,
                             exposure=int(kg.exposure[i])))
    return out


def two_hop_examples(kg, vb, *, question=None, name=None, rationale=None) -> list[QAExample]:
    """One example per 2-hop query of ``kg.two_hop()`` (row order): question 'What is the <r2> of
    the <r1> of <s>?', gold answer the end entity, ``bridge`` the middle entity, ``path`` the two
    hops' fact ids, ``rationale`` the chain of thought that spells the path out. ``question(s, r1,
    r2)``, ``name(e)`` and ``rationale(s, r1, r2, m, a)`` replace the verbaliser's renderings (the
    kgsim-token format passes its own)."""
    question = question or vb.two_hop_question
    name = name or vb.name
    rationale = rationale or vb.cot_answer
    rows = kg.two_hop()
    if len(rows) == 0:
        return []
    f1 = fact_index(kg, rows[:, 0], rows[:, 1], rows[:, 3])
    f2 = fact_index(kg, rows[:, 3], rows[:, 2], rows[:, 4])
    out = []
    for j, (s, r1, r2, m, a) in enumerate(rows.tolist()):
        out.append(QAExample(f"2hop/{j}", question(s, r1, r2), (name(a),),
                             f"{kg.relation_name(r1)}.{kg.relation_name(r2)}", subject=name(s), fact_id=j,
                             bridge=name(m), path=(int(f1[j]), int(f2[j])),
                             rationale=rationale(s, r1, r2, m, a)))
    return out


def by_relation(examples: Sequence[QAExample]) -> dict[str, list[QAExample]]:
    """Group examples by relation, keeping their order."""
    out: dict[str, list[QAExample]] = {}
    for e in examples:
        out.setdefault(e.relation, []).append(e)
    return out


DATASETS = ("entityquestions", "popqa", "mmlu", "synthetic")
__all__ = ["DATASETS", "DatasetFileError", "EQ_SPLITS", "QAExample", "by_relation", "entityquestions_counts",
           "eq_relation_files", "fact_index", "format_choices", "load_entityquestions", "load_mmlu", "load_popqa",
           "load_relation_templates", "synthetic_examples", "two_hop_examples"]
