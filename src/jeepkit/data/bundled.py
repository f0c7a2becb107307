"""The bundled benchmark: CounterFact-, zsRE- and KnowEdit-style cases generated from `facts.py`.

It lets the default pipeline run with nothing outside the repository. Every random choice is drawn
from a generator seeded by (seed, relation, subject), so a case does not depend on which other cases
are requested, and the same seed always gives identical output.
"""

from __future__ import annotations

import random

from ..errors import ConfigError
from .facts import RELATIONS, Relation
from .schema import EditCase, LocalityPrompt, Probe


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


# KnowEdit portability (Reasoning, survey §3.2): a second hop from the edited country to a fact of it.
COUNTRY_RELATIONS = ("P17", "P27", "P159")  # relations whose object is a country
SECOND_HOPS = {"P36": "The capital of the country {} is",
               "P37": "The official language of the country {} is",
               "P38": "The official currency of the country {} is the",
               "P30": "The continent of the country {} is"}
HOP_WORDS = {"P17": "{} is located in", "P27": "of citizenship of {}", "P159": "in which {} is headquartered"}


def build_knowedit(n: int | None = None, seed: int = 0, *, n_hops: int = 2, n_other: int = 2) -> list[EditCase]:
    """KnowEdit-style cases (like WikiData_counterfact) from the fact table, so the pipeline runs offline.

    Two families, interleaved after a seeded shuffle of each so that a small n holds both:
    * country edits rewrite a subject's country (city, citizenship, headquarters) to another country the
      table knows facts of; Portability ("Reasoning"): questions one hop further, answered by the new
      country's facts (its capital, language, currency, continent);
    * capital edits rewrite a country's capital to another country's capital, often several tokens long
      ("Buenos Aires", "Kuala Lumpur": the targets where FT-L's last-token loss and FT-M's differ);
      Portability: the country and the language of the new capital.
    Locality: the subject's other facts ("Relation_Specificity"), "Forgetfulness" (the relation asked with
    "which is not <new>"), and facts of other subjects of the same relation ("Other_Subjects", which KnowEdit
    does not have); all scored against the unedited model. No subject aliases: the table has none, so there
    is no Subject_Aliasing.
    """
    by_id = {r.relation_id: r for r in RELATIONS}
    country_facts = {rid: dict(by_id[rid].facts) for rid in SECOND_HOPS}
    countries = sorted(set(country_facts["P36"]) & set(country_facts["P37"]) & set(country_facts["P30"]))
    subject_facts: dict[str, list[tuple[Relation, str]]] = {}
    for rel in RELATIONS:
        for s_, o in rel.facts:
            subject_facts.setdefault(s_, []).append((rel, o))
    cases, i = [], 0
    for rid in COUNTRY_RELATIONS:
        rel = by_id[rid]
        for subject, true in rel.facts:
            rng = _rng(seed, "knowedit", rid, subject)
            new = rng.choice([c for c in countries if c != true])
            hop_of = HOP_WORDS[rid].format(subject)
            hops = [h for h in SECOND_HOPS if new in country_facts[h]]
            port = tuple(Probe(SECOND_HOPS[h].format(hop_of), country_facts[h][new], "Reasoning")
                         for h in rng.sample(hops, min(n_hops, len(hops))))
            loc = [Probe(r.prompt.format(subject), o, "Relation_Specificity")
                   for r, o in subject_facts[subject] if r.relation_id != rid]
            if rel.prompt.endswith(" is"):
                loc.append(Probe(f"{rel.prompt[:-3].format(subject)}, which is not {new}, is", true, "Forgetfulness"))
            other = [(s_, o) for s_, o in rel.facts if s_ != subject and o not in (true, new)]
            loc += [Probe(rel.prompt.format(s_), o, "Other_Subjects") for s_, o in rng.sample(other, min(n_other, len(other)))]
            cases.append(EditCase(
                case_id=str(i), kind="knowedit", prompt=rel.prompt, subject=subject, target_new=new,
                target_true=true, paraphrases=(), locality=tuple(loc), relation_id=rid,
                source="bundled:knowedit", portability=port,
            ))
            i += 1
    capitals = _capital_edits(country_facts, subject_facts, by_id["P36"], seed, len(cases), n_other)
    return _interleave(_select(cases, None, seed), _select(capitals, None, seed), n)


# KnowEdit portability of a capital edit: where the new capital is, and what is spoken there.
CAPITAL_HOPS = (("The capital of {} is a city in the country of", None),
                ("The language spoken in the capital of {} is", "P37"))


def _capital_edits(country_facts: dict[str, dict[str, str]], subject_facts: dict[str, list], rel: Relation,
                   seed: int, first_id: int, n_other: int) -> list[EditCase]:
    """A country's capital rewritten to another country's capital (the capital's country has every hop fact)."""
    owner = {cap: c for c, cap in country_facts["P36"].items()}
    cases = []
    for i, (country, true) in enumerate(rel.facts):
        rng = _rng(seed, "knowedit-capital", country)
        new = rng.choice(sorted(cap for cap, c in owner.items() if c != country and c in country_facts["P37"]))
        port = tuple(Probe(p.format(country), owner[new] if r is None else country_facts[r][owner[new]], "Reasoning")
                     for p, r in CAPITAL_HOPS)
        loc = [Probe(r.prompt.format(country), o, "Relation_Specificity")
               for r, o in subject_facts[country] if r.relation_id != rel.relation_id]
        loc.append(Probe(f"{rel.prompt[:-3].format(country)}, which is not {new}, is", true, "Forgetfulness"))
        other = [(s_, o) for s_, o in rel.facts if s_ not in (country, owner[new])]
        loc += [Probe(rel.prompt.format(s_), o, "Other_Subjects") for s_, o in rng.sample(other, min(n_other, len(other)))]
        cases.append(EditCase(
            case_id=str(first_id + i), kind="knowedit", prompt=rel.prompt, subject=country, target_new=new,
            target_true=true, paraphrases=(), locality=tuple(loc), relation_id=rel.relation_id,
            source="bundled:knowedit", portability=port,
        ))
    return cases


def _interleave(a: list[EditCase], b: list[EditCase], n: int | None) -> list[EditCase]:
    """a[0], b[0], a[1], b[1], …, then the rest of the longer one; the first n."""
    if n is not None and n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    out = [c for pair in zip(a, b) for c in pair]
    k = min(len(a), len(b))
    out += a[k:] + b[k:]
    return out if n is None else out[:n]
