"""The canonical edit/evaluation case every reader produces and every stage consumes.

One record = one requested rewrite (subject, prompt template, new target) plus the prompts it is
evaluated on. CounterFact-style cases compare the new target with the true one (probability
comparison); zsRE-style cases score teacher-forced token accuracy of `target_new` on the rewrite and
paraphrase prompts and of each locality answer on its locality prompt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import read_jsonl, write_jsonl

KINDS = ("counterfact", "zsre")


@dataclass(frozen=True)
class LocalityPrompt:
    """An unrelated prompt and the answer the model should keep giving."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class EditCase:
    case_id: str
    kind: str  # "counterfact" or "zsre": decides which metrics apply
    prompt: str  # template with exactly one "{}" where the subject goes
    subject: str
    target_new: str  # stored without a leading space
    target_true: str | None  # None for zsRE (no true object is compared)
    paraphrases: tuple[str, ...] = ()  # fully written prompts (subject filled in)
    locality: tuple[LocalityPrompt, ...] = ()
    relation_id: str | None = None
    source: str = ""  # which reader/data source produced the record

    @property
    def rewrite_prompt(self) -> str:
        return self.prompt.replace("{}", self.subject)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["paraphrases"] = list(self.paraphrases)
        d["locality"] = [asdict(x) for x in self.locality]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, file: str | None = None, record: object = None) -> "EditCase":
        def need(key: str) -> Any:
            if key not in d:
                raise InputError("missing field", file=file, record=record, field=key)
            return d[key]

        try:
            loc = tuple(LocalityPrompt(str(x["prompt"]), str(x["answer"])) for x in d.get("locality", []))
        except (KeyError, TypeError):
            raise InputError("each entry needs 'prompt' and 'answer'", file=file, record=record, field="locality") from None
        case = cls(
            case_id=str(need("case_id")),
            kind=str(need("kind")),
            prompt=str(need("prompt")),
            subject=str(need("subject")),
            target_new=str(need("target_new")),
            target_true=None if d.get("target_true") is None else str(d["target_true"]),
            paraphrases=tuple(str(p) for p in d.get("paraphrases", [])),
            locality=loc,
            relation_id=None if d.get("relation_id") is None else str(d["relation_id"]),
            source=str(d.get("source", "")),
        )
        case.validate(file=file, record=record)
        return case

    def validate(self, *, file: str | None = None, record: object = None) -> None:
        """Reject records no editor can use, naming the field."""
        rec = record if record is not None else self.case_id
        if self.kind not in KINDS:
            raise InputError(f"unknown kind {self.kind!r}; expected one of {KINDS}", file=file, record=rec, field="kind")
        if not self.subject.strip():
            raise InputError("empty subject", file=file, record=rec, field="subject")
        if self.prompt.count("{}") != 1:
            raise InputError(
                f"prompt must contain the subject placeholder '{{}}' exactly once: {self.prompt!r}",
                file=file, record=rec, field="prompt",
            )
        if not self.target_new.strip():
            raise InputError("empty target", file=file, record=rec, field="target_new")
        if self.kind == "counterfact":
            if self.target_true is None or not self.target_true.strip():
                raise InputError("empty true target", file=file, record=rec, field="target_true")
            if self.target_true.strip() == self.target_new.strip():
                raise InputError("target_new equals target_true", file=file, record=rec, field="target_new")
        for i, lp in enumerate(self.locality):
            if not lp.answer.strip():
                raise InputError(f"locality[{i}] has an empty answer", file=file, record=rec, field="locality")


def save_cases(path: str | Path, cases: list[EditCase]) -> None:
    write_jsonl(path, [c.to_dict() for c in cases])


def load_cases(path: str | Path) -> list[EditCase]:
    rows = read_jsonl(path)
    return [EditCase.from_dict(r, file=str(path), record=r.get("case_id", i)) for i, r in enumerate(rows)]
