"""The canonical edit/evaluation case every reader produces and every stage consumes.

One record = one requested rewrite (subject, prompt template, new target) plus the prompts it is
evaluated on. Its `kind` (data/kinds.py) says how: CounterFact-style cases compare the new target
with the true one (probability comparison); zsRE-style cases score teacher-forced token accuracy;
KnowEdit cases add portability probes and score locality against the unedited model.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import read_jsonl, write_jsonl
from .kinds import KINDS


@dataclass(frozen=True)
class Probe:
    """A fully written prompt and its answer: a locality prompt (the answer the model should keep giving)
    or a portability question (the answer the edit implies). `group` is the benchmark's sub-set
    (KnowEdit: Reasoning, Subject_Aliasing, Logical_Generalization; Relation_Specificity, Forgetfulness)."""

    prompt: str
    answer: str
    group: str | None = None

    def to_dict(self) -> dict[str, str]:
        d = {"prompt": self.prompt, "answer": self.answer}
        if self.group is not None:
            d["group"] = self.group
        return d


LocalityPrompt = Probe  # the name most readers use


@dataclass(frozen=True)
class EditCase:
    case_id: str
    kind: str  # a key of data.kinds.KINDS: decides which probe sets and metrics apply
    prompt: str  # template with exactly one "{}" where the subject goes
    subject: str
    target_new: str  # stored without a leading space
    target_true: str | None  # None for zsRE (no true object is compared)
    paraphrases: tuple[str, ...] = ()  # fully written prompts (subject filled in)
    locality: tuple[Probe, ...] = ()
    relation_id: str | None = None
    source: str = ""  # which reader/data source produced the record
    portability: tuple[Probe, ...] = ()
    # the official CounterFact's generation prompts and target_new id (MEMIT's Fluency / Consistency); absent from
    # the mirror's EasyEdit-style records and from every bundled case, and then not written
    generation_prompts: tuple[str, ...] = ()
    target_new_id: str | None = None

    def _texts(self):
        yield "prompt", self.prompt
        yield "subject", self.subject
        yield "target_new", self.target_new
        if self.target_true is not None:
            yield "target_true", self.target_true
        for i, p in enumerate(self.paraphrases):
            yield f"paraphrases[{i}]", p
        for name in ("locality", "portability"):
            for i, lp in enumerate(getattr(self, name)):
                yield f"{name}[{i}].prompt", lp.prompt
                yield f"{name}[{i}].answer", lp.answer
        for i, p in enumerate(self.generation_prompts):
            yield f"generation_prompts[{i}]", p

    @property
    def rewrite_prompt(self) -> str:
        return self.prompt.replace("{}", self.subject)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["paraphrases"] = list(self.paraphrases)
        d["locality"] = [x.to_dict() for x in self.locality]
        d.pop("portability")
        if self.portability:  # absent when empty, so CounterFact / zsRE files keep their bytes
            d["portability"] = [x.to_dict() for x in self.portability]
        for key in ("generation_prompts", "target_new_id"):  # the same: only the official files have them
            d.pop(key)
        if self.generation_prompts:
            d["generation_prompts"] = list(self.generation_prompts)
        if self.target_new_id is not None:
            d["target_new_id"] = self.target_new_id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, file: str | None = None, record: object = None) -> "EditCase":
        def need(key: str) -> Any:
            if key not in d:
                raise InputError("missing field", file=file, record=record, field=key)
            return text(key, d[key])

        def text(key: str, v: Any, optional: bool = False) -> Any:
            if v is None and optional:
                return None
            if key == "case_id" and isinstance(v, int) and not isinstance(v, bool):
                return str(v)
            if not isinstance(v, str):
                raise InputError(f"expected a string, got {type(v).__name__} {v!r}", file=file, record=record, field=key)
            return v

        if not isinstance(d, dict):
            raise InputError(f"expected a JSON object, got {type(d).__name__}", file=file, record=record)
        paraphrases = d.get("paraphrases", [])
        if not isinstance(paraphrases, list):
            raise InputError("expected a list of strings", file=file, record=record, field="paraphrases")

        def probes(name: str) -> tuple[Probe, ...]:
            entries = d.get(name, [])
            if not isinstance(entries, list) or not all(isinstance(x, dict) for x in entries):
                raise InputError("expected a list of {prompt, answer} objects", file=file, record=record, field=name)
            try:
                return tuple(Probe(text(f"{name}.prompt", x["prompt"]), text(f"{name}.answer", x["answer"]),
                                   text(f"{name}.group", x.get("group"), optional=True)) for x in entries)
            except KeyError:
                raise InputError("each entry needs 'prompt' and 'answer'", file=file, record=record,
                                 field=name) from None

        loc = probes("locality")
        gen = d.get("generation_prompts", [])
        if not isinstance(gen, list):
            raise InputError("expected a list of strings", file=file, record=record, field="generation_prompts")
        case = cls(
            case_id=need("case_id"),
            kind=need("kind"),
            prompt=need("prompt"),
            subject=need("subject"),
            target_new=need("target_new"),
            target_true=text("target_true", d.get("target_true"), optional=True),
            paraphrases=tuple(text("paraphrases", p) for p in paraphrases),
            locality=loc,
            relation_id=None if d.get("relation_id") is None else str(d["relation_id"]),
            source=str(d.get("source", "")),
            portability=probes("portability"),
            generation_prompts=tuple(text("generation_prompts", p) for p in gen),
            target_new_id=text("target_new_id", d.get("target_new_id"), optional=True),
        )
        case.validate(file=file, record=record)
        return case

    def validate(self, *, file: str | None = None, record: object = None) -> None:
        """Reject records no editor can use, naming the field."""
        rec = record if record is not None else self.case_id
        for name, value in self._texts():
            bad = _bad_text(value)
            if bad:
                raise InputError(bad, file=file, record=rec, field=name)
        if self.kind not in KINDS:
            raise InputError(f"unknown kind {self.kind!r}; expected one of {tuple(KINDS)}", file=file, record=rec,
                             field="kind")
        spec = KINDS[self.kind]
        if not self.subject.strip():
            raise InputError("empty subject", file=file, record=rec, field="subject")
        if self.prompt.count("{}") != 1:
            raise InputError(
                f"prompt must contain the subject placeholder '{{}}' exactly once: {self.prompt!r}",
                file=file, record=rec, field="prompt",
            )
        if not self.target_new.strip():
            raise InputError("empty target", file=file, record=rec, field="target_new")
        if spec.needs_true:
            if self.target_true is None or not self.target_true.strip():
                raise InputError("empty true target", file=file, record=rec, field="target_true")
            if self.target_true.strip() == self.target_new.strip():
                raise InputError("target_new equals target_true", file=file, record=rec, field="target_new")
        for name in ("locality", "portability"):
            for i, lp in enumerate(getattr(self, name)):
                if not lp.answer.strip():
                    raise InputError(f"{name}[{i}] has an empty answer", file=file, record=rec, field=name)
                if not lp.prompt.strip():
                    raise InputError(f"{name}[{i}] has an empty prompt", file=file, record=rec, field=name)
        if spec.needs_portability and not self.portability:
            raise InputError(f"a {self.kind} case needs at least one portability question", file=file, record=rec,
                             field="portability")
        if spec.needs_locality and not self.locality:
            raise InputError(f"a {self.kind} case needs at least one locality prompt", file=file, record=rec,
                             field="locality")


def _bad_text(value: str) -> str | None:
    """Why a text field cannot be tokenised faithfully, or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"invalid Unicode (a lone surrogate {value[e.start]!r} at character {e.start})"
    for i, ch in enumerate(value):
        if unicodedata.category(ch) == "Cc" and ch not in "\t\n":
            return f"control character {ch!r} at character {i}"
    return None


def save_cases(path: str | Path, cases: list[EditCase]) -> None:
    write_jsonl(path, [c.to_dict() for c in cases])


def load_cases(path: str | Path) -> list[EditCase]:
    rows = read_jsonl(path)
    cases, seen = [], {}
    for i, r in enumerate(rows):
        rec = r.get("case_id", f"line {i + 1}") if isinstance(r, dict) else f"line {i + 1}"
        c = EditCase.from_dict(r, file=str(path), record=rec)
        if (c.kind, c.case_id) in seen:
            raise InputError(f"duplicate case_id (also on line {seen[c.kind, c.case_id]})", file=str(path),
                             record=rec, field="case_id")
        seen[c.kind, c.case_id] = i + 1
        cases.append(c)
    return cases
