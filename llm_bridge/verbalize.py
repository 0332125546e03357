"""A kgsim knowledge graph in natural language: triples <-> questions, answers and statements.

Each relation gets a :class:`RelationTemplate`: a noun phrase (used in 2-hop questions and chains of
thought), several question forms ``{s}`` and several statement forms ``{s} ... {a}``. The templates
are versioned (:data:`TEMPLATE_VERSION`): a model pretrained on one version must be probed with the
same one, and the version is recorded in every result.

Synthetic relations take the themes of :data:`THEMES` in order (a relation whose name is a theme name
gets that theme); any other name gets a generic template built from the name. Synthetic entities get
pronounceable unique names drawn from a seeded stream (:func:`entity_names`).

>>> vb = Verbalizer(["Kato", "Mirelu", "Sabi"], [THEMES[0], THEMES[2]])
>>> vb.question(0, 0), vb.statement(0, 0, 1)
('Where was Kato born?', 'Kato was born in Mirelu.')
>>> vb.parse_question("What is the birthplace of Kato?"), vb.parse_statement("Kato was born in Mirelu.")
((0, 0), (0, 0, 1))
>>> vb.two_hop_question(0, 0, 1)
'What is the capital of the birthplace of Kato?'
>>> vb.cot_answer(0, 0, 1, 1, 2)
'The birthplace of Kato is Mirelu. The capital of Mirelu is Sabi. So the answer is Sabi.'
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

TEMPLATE_VERSION = "bridge-templates-v1"


class VerbalizeError(ValueError):
    """A text does not parse under the templates, or names are unusable; the message shows it."""


@dataclass(frozen=True)
class RelationTemplate:
    """How one relation is said. `questions` hold ``{s}``; `statements` hold ``{s}`` and ``{a}``."""

    name: str
    noun: str
    questions: tuple[str, ...]
    statements: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.questions or not self.statements:
            raise VerbalizeError(f"relation {self.name!r}: needs at least one question and one statement form")
        for q in self.questions:
            if q.count("{s}") != 1 or "{a}" in q:
                raise VerbalizeError(f"relation {self.name!r}: question form {q!r} must hold {{s}} once and no {{a}}")
        for t in self.statements:
            if t.count("{s}") != 1 or t.count("{a}") != 1:
                raise VerbalizeError(f"relation {self.name!r}: statement form {t!r} must hold {{s}} and {{a}} once")


def _t(name: str, noun: str, questions: Sequence[str], statements: Sequence[str]) -> RelationTemplate:
    return RelationTemplate(name, noun, tuple(questions), tuple(statements))


THEMES: tuple[RelationTemplate, ...] = (
    _t("birthplace", "birthplace", ["Where was {s} born?", "What is the birthplace of {s}?", "In which place was {s} born?"],
       ["{s} was born in {a}.", "The birthplace of {s} is {a}."]),
    _t("employer", "employer", ["Who employs {s}?", "What is the employer of {s}?", "For whom does {s} work?"],
       ["{s} works for {a}.", "The employer of {s} is {a}."]),
    _t("capital", "capital", ["What is the capital of {s}?", "Which city is the capital of {s}?", "Where is the seat of government of {s}?"],
       ["The capital of {s} is {a}.", "{a} is the capital of {s}."]),
    _t("founder", "founder", ["Who founded {s}?", "Who is the founder of {s}?", "By whom was {s} founded?"],
       ["{s} was founded by {a}.", "The founder of {s} is {a}."]),
    _t("spouse", "spouse", ["Who is {s} married to?", "Who is the spouse of {s}?", "Whom did {s} marry?"],
       ["{s} is married to {a}.", "The spouse of {s} is {a}."]),
    _t("author", "author", ["Who is the author of {s}?", "Who wrote {s}?", "Which writer wrote {s}?"],
       ["{s} was written by {a}.", "The author of {s} is {a}."]),
    _t("country", "country", ["Which country is {s} located in?", "In which country is {s}?", "What is the country of {s}?"],
       ["{s} is located in {a}.", "The country of {s} is {a}."]),
    _t("language", "language", ["Which language does {s} speak?", "What is the language of {s}?", "In which language does {s} write?"],
       ["{s} speaks {a}.", "The language of {s} is {a}."]),
    _t("headquarters", "headquarters", ["Where is the headquarters of {s}?", "Where is {s} headquartered?", "In which city is {s} based?"],
       ["{s} is headquartered in {a}.", "The headquarters of {s} is in {a}."]),
    _t("mentor", "mentor", ["Who was the mentor of {s}?", "Who mentored {s}?", "Under whom did {s} train?"],
       ["{s} was mentored by {a}.", "The mentor of {s} was {a}."]),
    _t("owner", "owner", ["Who owns {s}?", "Who is the owner of {s}?", "To whom does {s} belong?"],
       ["{s} is owned by {a}.", "The owner of {s} is {a}."]),
    _t("creator", "creator", ["Who created {s}?", "Who is the creator of {s}?", "By whom was {s} made?"],
       ["{s} was created by {a}.", "The creator of {s} is {a}."]),
    _t("school", "alma mater", ["Where was {s} educated?", "Which school did {s} attend?", "What is the alma mater of {s}?"],
       ["{s} was educated at {a}.", "The alma mater of {s} is {a}."]),
    _t("label", "record label", ["Which label is {s} signed to?", "What is the record label of {s}?", "Who releases the records of {s}?"],
       ["{s} is signed to {a}.", "The record label of {s} is {a}."]),
    _t("father", "father", ["Who is the father of {s}?", "Who is {s}'s father?", "Who fathered {s}?"],
       ["The father of {s} is {a}.", "{a} is the father of {s}."]),
    _t("neighbour", "neighbour", ["Who is the neighbour of {s}?", "Who lives next to {s}?", "Who is {s}'s neighbour?"],
       ["{s} lives next to {a}.", "The neighbour of {s} is {a}."]),
)
_THEME_BY_NAME = {t.name: t for t in THEMES}


def generic_template(name: str) -> RelationTemplate:
    """A one-form template from a relation name: 'place_of_birth' -> 'What is the place of birth of {s}?'."""
    noun = " ".join(name.replace("_", " ").split()) or "relation"
    return _t(name, noun, [f"What is the {noun} of {{s}}?"], [f"The {noun} of {{s}} is {{a}}."])


def relation_templates(names: Sequence[str] | int) -> list[RelationTemplate]:
    """Templates for relations: an int n gives the first n themes (then generic ones 'property N');
    names that are theme names get the theme, other names a generic template.

    >>> [t.name for t in relation_templates(2)]
    ['birthplace', 'employer']
    >>> relation_templates(["capital", "place_of_birth"])[1].questions
    ('What is the place of birth of {s}?',)
    """
    if isinstance(names, int):
        return [THEMES[i] if i < len(THEMES) else generic_template(f"property {i}") for i in range(names)]
    if len(set(names)) != len(names):
        raise VerbalizeError(f"relation names must be unique, got {list(names)}")
    return [_THEME_BY_NAME.get(n) or generic_template(n) for n in names]


_ONSETS = np.array(list("bdfgklmnprstvz") + ["br", "kr", "st", "tr", "sh"])
_VOWELS = np.array(list("aeiou") + ["ai", "ou"])


def entity_names(n: int, rng: np.random.Generator, syllables: tuple[int, int] = (2, 3)) -> list[str]:
    """`n` unique pronounceable names ('Kalomi', 'Trevasu', ...) drawn from `rng`.

    >>> from kgsim.core.rng import stream
    >>> names = entity_names(500, stream(0, "names"))
    >>> len(set(names)) == 500 and all(x[0].isupper() and x.isalpha() for x in names)
    True
    """
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        m = 2 * (n - len(out)) + 8
        k = rng.integers(syllables[0], syllables[1] + 1, m)
        on = _ONSETS[rng.integers(0, len(_ONSETS), (m, syllables[1]))]
        vo = _VOWELS[rng.integers(0, len(_VOWELS), (m, syllables[1]))]
        for i in range(m):
            name = "".join(on[i, j] + vo[i, j] for j in range(k[i])).capitalize()
            if name not in seen:
                seen.add(name)
                out.append(name)
                if len(out) == n:
                    break
    return out


def name_graph(kg, rng: np.random.Generator):
    """A copy of a kgsim KnowledgeGraph with entity names (kept if present, else drawn from `rng`)
    and relation names (kept if present, else the theme names), ready to save and verbalise."""
    import copy

    out = copy.copy(kg)
    out.entity_names = list(kg.entity_names) if kg.entity_names else entity_names(kg.n_entities, rng)
    out.relation_names = (list(kg.relation_names) if kg.relation_names
                          else [t.name for t in relation_templates(kg.n_relations)])
    return out


def _pattern(form: str) -> re.Pattern:
    parts = re.split(r"(\{s\}|\{a\})", form)
    rx = "".join("(?P<s>.+?)" if p == "{s}" else "(?P<a>.+?)" if p == "{a}" else re.escape(p) for p in parts)
    return re.compile(rf"^\s*{rx}\s*$")


class Verbalizer:
    """Entity names + one template per relation: say facts, and parse the sayings back.

    Args:
        names: entity names, indexed by entity id (unique, non-empty, no newlines).
        relations: one :class:`RelationTemplate` per relation id.

    Raises:
        VerbalizeError: duplicate or unusable names.
    """

    version = TEMPLATE_VERSION

    def __init__(self, names: Sequence[str], relations: Sequence[RelationTemplate]):
        self.names = list(names)
        self.relations = list(relations)
        self._ids: dict[str, int] = {}
        for i, nm in enumerate(self.names):
            if not nm or not nm.strip() or "\n" in nm:
                raise VerbalizeError(f"entity {i}: unusable name {nm!r}")
            if nm in self._ids:
                raise VerbalizeError(f"entity name {nm!r} is used by entities {self._ids[nm]} and {i}")
            self._ids[nm] = i
        self._q = [(r, _pattern(f)) for r, t in enumerate(self.relations) for f in t.questions]
        self._st = [(r, _pattern(f)) for r, t in enumerate(self.relations) for f in t.statements]

    @classmethod
    def from_graph(cls, kg, rng: np.random.Generator | None = None) -> "Verbalizer":
        """The verbaliser of a (named) kgsim graph; unnamed entities need `rng` to draw names."""
        if not kg.entity_names and rng is None:
            raise VerbalizeError("the graph has no entity names: pass an rng to draw them (see name_graph)")
        named = kg if (kg.entity_names and kg.relation_names) else name_graph(kg, rng)
        return cls(named.entity_names, relation_templates(named.relation_names))

    # --- saying -----------------------------------------------------------------------------
    def name(self, e: int) -> str:
        return self.names[int(e)]

    def entity_id(self, name: str) -> int:
        try:
            return self._ids[name.strip()]
        except KeyError:
            raise VerbalizeError(f"unknown entity name {name!r}") from None

    def n_question_forms(self, r: int) -> int:
        return len(self.relations[int(r)].questions)

    def question(self, s: int, r: int, form: int = 0) -> str:
        t = self.relations[int(r)]
        return t.questions[form % len(t.questions)].format(s=self.name(s))

    def statement(self, s: int, r: int, a: int, form: int = 0) -> str:
        t = self.relations[int(r)]
        return t.statements[form % len(t.statements)].format(s=self.name(s), a=self.name(a))

    def two_hop_question(self, s: int, r1: int, r2: int) -> str:
        """The composed query (s, r1∘r2): 'What is the <r2 noun> of the <r1 noun> of <s>?'."""
        return f"What is the {self.relations[int(r2)].noun} of the {self.relations[int(r1)].noun} of {self.name(s)}?"

    def cot_answer(self, s: int, r1: int, r2: int, m: int, a: int) -> str:
        """A chain of thought that spells out the path (s, r1, m), (m, r2, a), then the answer."""
        n1, n2 = self.relations[int(r1)].noun, self.relations[int(r2)].noun
        return (f"The {n1} of {self.name(s)} is {self.name(m)}. The {n2} of {self.name(m)} is {self.name(a)}. "
                f"So the answer is {self.name(a)}.")

    # --- parsing back -----------------------------------------------------------------------
    def parse_question(self, text: str) -> tuple[int, int]:
        """(s, r) of a question in any form of any relation.

        Raises:
            VerbalizeError: no form matches with a known entity name.
        """
        for r, rx in self._q:
            m = rx.match(text)
            if m and m["s"] in self._ids:
                return self._ids[m["s"]], r
        raise VerbalizeError(f"not a question of any relation template: {text!r}")

    def parse_statement(self, text: str) -> tuple[int, int, int]:
        """(s, r, a) of a statement in any form of any relation.

        Raises:
            VerbalizeError: no form matches with known entity names.
        """
        for r, rx in self._st:
            m = rx.match(text)
            if m and m["s"] in self._ids and m["a"] in self._ids:
                return self._ids[m["s"]], r, self._ids[m["a"]]
        raise VerbalizeError(f"not a statement of any relation template: {text!r}")


_COT_FINAL = re.compile(r"answer is\s+(.+?)\s*\.?\s*$", re.IGNORECASE)


def cot_final_answer(text: str) -> str:
    """The answer a chain of thought ends with ('... So the answer is X.' -> 'X'); if the text has
    no such phrase, the text itself (so a direct answer still scores).

    >>> cot_final_answer("The capital of Kato is Sabi. So the answer is Sabi.")
    'Sabi'
    """
    line = text.strip().split("\n", 1)[0]
    m = _COT_FINAL.search(line)
    return m.group(1).strip() if m else line.strip()


def pretraining_documents(kg, vb: Verbalizer, rng: np.random.Generator, *, facts_per_doc: int = 4,
                          qa_subject_share: float = 0.5, relation_doc_share: float = 0.5,
                          qa_subjects: np.ndarray | None = None) -> list[str]:
    """Pretraining text for a verbalised graph (science.md §3.2), one document per string.

    Each fact appears ``kg.exposure[i]`` times. A `relation_doc_share` of the appearances go to
    documents of `facts_per_doc` facts of one relation (so in-context patterns exist to learn), the
    rest to documents of one subject's facts. Facts of a `qa_subject_share` of the subjects are said
    in question-answer form (``Q: ...\\nA: ...``) half of the time (mixed pretraining, which makes
    knowledge extractable); otherwise as statements in a random form. `qa_subjects` (bool
    [n_entities]) names those subjects instead of drawing them with `qa_subject_share`.
    """
    rep = np.repeat(np.arange(kg.n_facts), kg.exposure)                    # [n_occurrences] fact ids
    rng.shuffle(rep)
    qa_subject = rng.random(kg.n_entities) < qa_subject_share
    if qa_subjects is not None:
        if np.shape(qa_subjects) != (kg.n_entities,):
            raise VerbalizeError(f"qa_subjects: shape {np.shape(qa_subjects)}, expected ({kg.n_entities},)")
        qa_subject = np.asarray(qa_subjects, dtype=bool)
    as_qa = qa_subject[kg.s[rep]] & (rng.random(len(rep)) < 0.5)
    form = rng.integers(0, 1 << 30, len(rep))

    def say(j: int) -> str:
        f = rep[j]
        s, r, a = int(kg.s[f]), int(kg.r[f]), int(kg.a[f])
        if as_qa[j]:
            return f"Q: {vb.question(s, r, int(form[j]))}\nA: {vb.name(a)}"
        return vb.statement(s, r, a, int(form[j]))

    by_relation = rng.random(len(rep)) < relation_doc_share
    docs: list[str] = []
    for mask, key in ((by_relation, kg.r), (~by_relation, kg.s)):
        idx = np.flatnonzero(mask)
        idx = idx[np.argsort(key[rep[idx]], kind="stable")]                # grouped, shuffled inside
        groups = np.split(idx, np.flatnonzero(np.diff(key[rep[idx]])) + 1) if len(idx) else []
        for g in groups:
            for start in range(0, len(g), facts_per_doc):
                docs.append("\n".join(say(j) for j in g[start:start + facts_per_doc]))
    return [docs[i] for i in rng.permutation(len(docs))]


__all__ = ["TEMPLATE_VERSION", "THEMES", "RelationTemplate", "Verbalizer", "VerbalizeError", "cot_final_answer",
           "entity_names", "generic_template", "name_graph", "pretraining_documents", "relation_templates"]
