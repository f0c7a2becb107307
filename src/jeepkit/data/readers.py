"""Readers that turn the public benchmark files into canonical `EditCase`s.

Every problem is reported as an `InputError` naming the file, the record (its case_id when it has
one, else its index) and the field, so a user can fix a data file without reading a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import InputError
from ..io import read_json
from .registry import DATASETS
from .schema import EditCase, LocalityPrompt, Probe

READERS = ("rome_counterfact", "easyedit_counterfact", "mend_zsre", "knowedit")


class _Record:
    """One raw JSON record plus where it came from, so every lookup can name file, record and field."""

    def __init__(self, raw: Any, file: str, index: int, skipped: dict[str, int] | None = None):
        self.file = file
        self.id: object = index
        self.skipped = skipped if skipped is not None else {}  # what a lenient reader left out, by reason
        if not isinstance(raw, dict):
            raise InputError(f"expected a JSON object, got {type(raw).__name__}", file=file, record=index)
        self.raw = raw
        if "case_id" in raw:
            self.id = raw["case_id"]

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def error(self, message: str, field: str) -> InputError:
        return InputError(message, file=self.file, record=self.id, field=field)

    def get(self, path: str, typ: type = str) -> Any:
        """Look up a dotted path ("requested_rewrite.target_new.str") and check its type."""
        node: Any = self.raw
        for key in path.split("."):
            if not isinstance(node, dict) or key not in node:
                raise self.error("missing field", path)
            node = node[key]
        if typ is str and path.split(".")[-1].endswith("id") and isinstance(node, int) and not isinstance(node, bool):
            node = str(node)  # numeric ids are common in these files; a numeric text field is an error
        if not isinstance(node, typ):
            raise self.error(f"expected {typ.__name__}, got {type(node).__name__}", path)
        return node

    def target(self, path: str) -> str:
        value = self.get(path).strip()
        if not value:
            raise self.error("empty target", path)
        return value

    def strings(self, path: str) -> tuple[str, ...]:
        items = self.get(path, list)
        for i, x in enumerate(items):
            if not isinstance(x, str):
                raise self.error(f"item {i} is {type(x).__name__}, expected str", path)
        return tuple(items)


def _template(rec: _Record, text_field: str, subject: str) -> str:
    """Turn a filled-in prompt into a template by replacing the first occurrence of the subject."""
    text = rec.get(text_field)
    if subject not in text:
        raise rec.error(f"subject {subject!r} does not occur in {text!r}", text_field)
    return text.replace(subject, "{}", 1)


def _subject(rec: _Record, path: str) -> str:
    subject = rec.get(path)
    if not subject.strip():
        raise rec.error("empty subject", path)
    return subject


def _rome_counterfact(rec: _Record, source: str) -> EditCase:
    rw = "requested_rewrite"
    subject = _subject(rec, f"{rw}.subject")
    prompt = rec.get(f"{rw}.prompt")
    if "{}" not in prompt:
        raise rec.error(f"subject placeholder '{{}}' does not occur in the prompt template {prompt!r}", f"{rw}.prompt")
    target_true = rec.target(f"{rw}.target_true.str")
    relation = rec.raw[rw].get("relation_id")
    new_id = rec.raw[rw]["target_new"].get("id")  # keys the attribute snippets of Consistency
    return EditCase(
        case_id=str(rec.get("case_id")),
        kind="counterfact",
        prompt=prompt,
        subject=subject,
        target_new=rec.target(f"{rw}.target_new.str"),
        target_true=target_true,
        paraphrases=rec.strings("paraphrase_prompts"),
        # CounterFact's neighborhood prompts share the edited fact's true object.
        locality=tuple(LocalityPrompt(p, target_true) for p in rec.strings("neighborhood_prompts")),
        relation_id=None if relation is None else str(relation),
        source=source,
        generation_prompts=rec.strings("generation_prompts") if "generation_prompts" in rec.raw else (),
        target_new_id=None if new_id is None else str(new_id),
    )


def _easyedit_counterfact(rec: _Record, source: str) -> EditCase:
    subject = _subject(rec, "subject")
    return EditCase(
        case_id=str(rec.get("case_id")),
        kind="counterfact",
        prompt=_template(rec, "prompt", subject),
        subject=subject,
        target_new=rec.target("target_new"),
        target_true=rec.target("ground_truth"),
        paraphrases=(rec.get("rephrase_prompt"),),
        locality=(LocalityPrompt(rec.get("locality_prompt"), rec.target("locality_ground_truth")),),
        source=source,
    )


def _mend_zsre(rec: _Record, source: str) -> EditCase:
    subject = _subject(rec, "subject")
    answers = rec.get("answers", list)
    if not answers:
        raise rec.error("empty list: no target", "answers")
    if not isinstance(answers[0], str) or not answers[0].strip():
        raise rec.error("empty target", "answers")
    return EditCase(
        case_id=str(rec.id),
        kind="zsre",
        prompt=_template(rec, "src", subject),
        subject=subject,
        target_new=answers[0].strip(),
        target_true=None,
        paraphrases=(rec.get("rephrase"),),
        # ROME/MEMIT score the locality question as f"{loc}? {loc_ans}".
        locality=(LocalityPrompt(rec.get("loc") + "?", rec.target("loc_ans")),),
        source=source,
    )


def _first_answer(rec: _Record, value: Any, path: str) -> str:
    """KnowEdit's ground_truth is a string, a list of answers or a list of alias lists: the first string."""
    node = value
    while isinstance(node, list):
        if not node:
            raise rec.error("empty answer list", path)
        node = node[0]
    if not isinstance(node, str) or not node.strip():
        raise rec.error(f"expected an answer string (or a list of them), got {value!r}", path)
    return node.strip()


def _answer_or_none(value: Any) -> str | None:
    """The first answer string of a KnowEdit ground_truth, or None where it is empty (EasyEdit skips those)."""
    node = value
    while isinstance(node, list):
        if not node:
            return None
        node = node[0]
    return node.strip() if isinstance(node, str) and node.strip() else None


def _knowedit_probes(rec: _Record, field: str, required: bool) -> tuple[Probe, ...]:
    """{group: [{prompt, ground_truth}, ...]} -> probes tagged with their group, in file order.

    As EasyEdit's KnowEdit loader: an entry whose answer is empty is skipped, a list of prompts gives one probe
    per prompt; `rec.skipped` counts what was left out. A missing optional field gives no probes."""
    if field not in rec.raw or (not required and rec.raw[field] in (None, {}, [])):
        if required:
            raise rec.error("missing field (a KnowEdit record needs it)", field)
        rec.skip(f"records_without_{field}")
        return ()
    groups = rec.raw[field]
    if not isinstance(groups, dict):
        raise rec.error(f"expected a mapping of sub-sets to lists, got {type(groups).__name__}", field)
    out = []
    for group, entries in groups.items():
        where = f"{field}.{group}"
        if not isinstance(entries, list):
            raise rec.error(f"expected a list of {{prompt, ground_truth}} objects, got {type(entries).__name__}", where)
        for i, e in enumerate(entries):
            at = f"{where}[{i}]"
            if not isinstance(e, dict) or "prompt" not in e or "ground_truth" not in e:
                raise rec.error("each entry needs 'prompt' and 'ground_truth'", at)
            prompts = e["prompt"] if isinstance(e["prompt"], list) else [e["prompt"]]
            if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
                raise rec.error("empty or non-text prompt", f"{at}.prompt")
            answer = _answer_or_none(e["ground_truth"])
            if answer is None:
                if not isinstance(e["ground_truth"], (str, list)):
                    raise rec.error(f"expected an answer string (or a list of them), got {e['ground_truth']!r}",
                                    f"{at}.ground_truth")
                rec.skip(f"{field}_probes_with_empty_answer")
                continue
            out += [Probe(p, answer, str(group)) for p in prompts]
    if not out:
        if required:
            raise rec.error("no entries (a KnowEdit record needs at least one)", field)
        rec.skip(f"records_without_{field}")
    return tuple(out)


def _knowedit(rec: _Record, source: str) -> EditCase:
    """KnowEdit's WikiData_counterfact / WikiData_recent / ZsRE JSON (zjunlp/KnowEdit, survey §3.2)."""
    subject = _subject(rec, "subject")
    truth = rec.raw.get("ground_truth")
    return EditCase(
        case_id=str(rec.raw.get("case_id", rec.id)),
        kind="knowedit",
        prompt=_template(rec, "prompt", subject),
        subject=subject,
        target_new=_first_answer(rec, rec.raw.get("target_new"), "target_new"),
        target_true=None if truth in (None, "", []) else _first_answer(rec, truth, "ground_truth"),
        paraphrases=(rec.get("rephrase_prompt"),) if "rephrase_prompt" in rec.raw else (),
        locality=_knowedit_probes(rec, "locality", required=True),
        portability=_knowedit_probes(rec, "portability", required=False),
        source=source,
    )


_PARSERS: dict[str, tuple[str, Callable[[_Record, str], EditCase]]] = {
    "rome_counterfact": ("counterfact", _rome_counterfact),
    "easyedit_counterfact": ("counterfact", _easyedit_counterfact),
    "mend_zsre": ("zsre", _mend_zsre),
    "knowedit": ("knowedit", _knowedit),
}


def _top_level(data: Any, file: str) -> list:
    if not isinstance(data, list):
        raise InputError(f"top level must be a JSON list of records, got {type(data).__name__}", file=file)
    return data


def parse_records(
    data: Any, reader: str, path: str | Path, *, source: str | None = None, n: int | None = None,
    skipped: dict[str, int] | None = None,
) -> list[EditCase]:
    """Convert already-loaded JSON with the named reader (one of READERS); `path` is for messages. `skipped`,
    when given, receives the counts of what a lenient reader (KnowEdit's) left out, by reason."""
    if reader not in _PARSERS:
        raise ValueError(f"unknown reader {reader!r}; expected one of {READERS}")
    file = str(path)
    records = _top_level(data, file)
    if n is not None:
        if n < 0:
            raise InputError(f"n must be >= 0, got {n}", file=file)
        records = records[:n]
    parse = _PARSERS[reader][1]
    source = source if source is not None else f"file:{Path(path).name}"
    cases: list[EditCase] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(records):
        rec = _Record(raw, file, i, skipped)
        case = parse(rec, source)
        case.validate(file=file, record=rec.id)
        if case.case_id in seen:
            raise rec.error(f"duplicate case_id (also record index {seen[case.case_id]})", "case_id")
        seen[case.case_id] = i
        cases.append(case)
    return cases


def read_rome_counterfact(path: str | Path, *, source: str | None = None, n: int | None = None) -> list[EditCase]:
    """Official ROME/MEMIT CounterFact or Multi-CounterFact (`counterfact.json`, `multi_counterfact.json`)."""
    return parse_records(read_json(path), "rome_counterfact", path, source=source, n=n)


def read_easyedit_counterfact(path: str | Path, *, source: str | None = None, n: int | None = None) -> list[EditCase]:
    """CounterFact in the EasyEdit/MEND schema (one paraphrase and one neighborhood prompt per record)."""
    return parse_records(read_json(path), "easyedit_counterfact", path, source=source, n=n)


def read_mend_zsre(path: str | Path, *, source: str | None = None, n: int | None = None) -> list[EditCase]:
    """zsRE in MEND's schema (`zsre_mem_eval.json`); case_id is the record's index in the file."""
    return parse_records(read_json(path), "mend_zsre", path, source=source, n=n)


def sniff_format(data: Any, file: str) -> str:
    """Name the reader whose schema the first record follows."""
    records = _top_level(data, file)
    if not records:
        raise InputError("file holds no records, so its format cannot be detected", file=file)
    first = records[0]
    if isinstance(first, dict):
        if "requested_rewrite" in first:
            return "rome_counterfact"
        if "portability" in first or isinstance(first.get("locality"), dict):
            return "knowedit"
        if "src" in first and "answers" in first:
            return "mend_zsre"
        if "ground_truth" in first or "locality_ground_truth" in first:
            return "easyedit_counterfact"
    keys = sorted(first) if isinstance(first, dict) else type(first).__name__
    raise InputError(
        f"unrecognised record format (keys {keys}); expected ROME CounterFact, EasyEdit CounterFact, MEND zsRE "
        "or KnowEdit",
        file=file, record=0,
    )


def check_kind(reader: str, kind: str | None, file: str) -> None:
    """Fail when a file's format holds a different kind of record than the caller asked for."""
    if kind is None:
        return
    want = DATASETS[kind].kind if kind in DATASETS else kind
    if want not in {p[0] for p in _PARSERS.values()}:
        raise InputError(f"unknown dataset kind {kind!r}; expected one of {list(DATASETS)}", file=file)
    have = _PARSERS[reader][0]
    if have != want:
        raise InputError(f"file is in {reader} format, which holds {have} records, not {kind}", file=file)


def detect_and_read(
    path: str | Path, kind: str | None = None, *, source: str | None = None, n: int | None = None
) -> list[EditCase]:
    """Read a file in any supported format, found by looking at its first record.

    `kind` ("counterfact", "mcf" or "zsre"), when given, must match what the file holds, so a zsRE
    file passed where CounterFact is expected fails loudly instead of producing the wrong metrics.
    """
    data = read_json(path)
    reader = sniff_format(data, str(path))
    check_kind(reader, kind, str(path))
    return parse_records(data, reader, path, source=source, n=n)
