"""The bundled benchmark: CounterFact- and zsRE-style cases generated from `facts.py`.

It lets the default pipeline run with nothing outside the repository. Every random choice is drawn
from a generator seeded by (seed, relation, subject), so a case does not depend on which other cases
are requested, and the same seed always gives identical output.
"""

from __future__ import annotations

import random

from ..errors import ConfigError
from .facts import RELATIONS, Relation
from .schema import EditCase, LocalityPrompt


def _rng(seed: int, *parts: str) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, so this is stable across processes.
    return random.Random("|".join([str(seed), *parts]))


def _counterfactual(rng: random.Random, relation: Relation, true: str) -> str:
    """A wrong object of the right type: drawn from the same relation's object pool."""
    return rng.choice([o for o in relation.objects if o != true])


def _select(cases: list[EditCase], n: int | None, seed: int) -> list[EditCase]:
    """Shuffle relations together (seeded) and keep the first n, so small n still mixes relations."""
    if n is not None and n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    random.Random(seed).shuffle(cases)
    return cases if n is None else cases[:n]


def _neighborhood(
    rng: random.Random, relation: Relation, subject: str, true: str, new: str, k: int
) -> tuple[LocalityPrompt, ...]:
    """CounterFact's neighborhood: other subjects sharing the true object, topped up with other facts."""
    same = [(s, o) for s, o in relation.facts if o == true and s != subject]
    other = [(s, o) for s, o in relation.facts if o not in (true, new)]
    picked = rng.sample(same, min(k, len(same)))
    picked += rng.sample(other, min(k - len(picked), len(other)))
    templates = (relation.prompt, *relation.paraphrases)
    return tuple(LocalityPrompt(rng.choice(templates).format(s), o) for s, o in picked)


def build_counterfact(
    n: int | None = None, seed: int = 0, *, n_paraphrases: int = 2, n_neighbors: int = 5
) -> list[EditCase]:
    """One CounterFact-style rewrite per fact: a counterfactual object of the same type as the true one."""
    cases = []
    i = 0
    for rel in RELATIONS:
        for subject, true in rel.facts:
            rng = _rng(seed, "counterfact", rel.relation_id, subject)
            new = _counterfactual(rng, rel, true)
            paraphrases = rng.sample(rel.paraphrases, min(n_paraphrases, len(rel.paraphrases)))
            cases.append(EditCase(
                case_id=str(i),
                kind="counterfact",
                prompt=rel.prompt,
                subject=subject,
                target_new=new,
                target_true=true,
                paraphrases=tuple(p.format(subject) for p in paraphrases),
                locality=_neighborhood(rng, rel, subject, true, new, n_neighbors),
                relation_id=rel.relation_id,
                source="bundled:counterfact",
            ))
            i += 1
    return _select(cases, n, seed)


def build_zsre(n: int | None = None, seed: int = 0, *, counterfactual: bool = True) -> list[EditCase]:
    """One zsRE-style question per fact, with a rephrased question and an unrelated locality question.

    With `counterfactual` (the default) the new target is a wrong object of the same type, like MEND's
    `alt`: the facts are well known, so editing towards the true answer would change nothing measurable.
    """
    all_facts = [(rel, s, o) for rel in RELATIONS for s, o in rel.facts]
    cases = []
    for i, (rel, subject, true) in enumerate(all_facts):
        rng = _rng(seed, "zsre", rel.relation_id, subject)
        unrelated = [(r, s, o) for r, s, o in all_facts if r.relation_id != rel.relation_id and s != subject]
        loc_rel, loc_subject, loc_answer = rng.choice(unrelated)
        alt = _counterfactual(rng, rel, true)  # always drawn, so `counterfactual` changes nothing else
        cases.append(EditCase(
            case_id=str(i),
            kind="zsre",
            prompt=rel.question,
            subject=subject,
            target_new=alt if counterfactual else true,
            target_true=None,
            paraphrases=(rng.choice(rel.rephrased_questions).format(subject),),
            locality=(LocalityPrompt(loc_rel.question.format(loc_subject), loc_answer),),
            relation_id=rel.relation_id,
            source="bundled:zsre",
        ))
    return _select(cases, n, seed)
