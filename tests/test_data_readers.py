"""Readers on the real benchmark subsets, and on bad files that must fail naming file, record and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jeepkit.data import load_cases, save_cases
from jeepkit.data.readers import (
    detect_and_read,
    read_easyedit_counterfact,
    read_mend_zsre,
    read_rome_counterfact,
)
from jeepkit.errors import InputError

SHARED = Path(__file__).parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"real benchmark subsets not found at {SHARED} (shared/data beside the project)"
)
ROME = SHARED / "counterfact" / "counterfact-rome-schema-excerpt.json"
EASY = SHARED / "counterfact" / "counterfact-edit.json"
ZSRE = SHARED / "zsre" / "zsre_mend_eval-first34.json"


# ---------------------------------------------------------------- real files

@needs_shared
def test_rome_schema_excerpt():
    cases = read_rome_counterfact(ROME)
    assert [c.case_id for c in cases] == ["0", "3"]
    c = cases[0]
    assert c.kind == "counterfact"
    assert c.prompt == "The mother tongue of {} is"
    assert c.subject == "Danielle Darrieux"
    assert (c.target_new, c.target_true) == ("English", "French")
    assert c.relation_id == "P103"
    assert len(c.paraphrases) == 2 and all("Danielle Darrieux" in p for p in c.paraphrases)
    assert len(c.locality) == 10
    assert c.locality[0].prompt == "The mother tongue of Léon Blum is"
    assert {lp.answer for lp in c.locality} == {"French"}  # neighborhood answers are the true object
    assert c.source == "file:counterfact-rome-schema-excerpt.json"


@needs_shared
def test_easyedit_counterfact_full_file():
    raw = json.loads(EASY.read_text())
    cases = read_easyedit_counterfact(EASY, source="mirror:counterfact-edit.json")
    assert len(cases) == len(raw) == 10_000
    c = cases[0]
    assert c.prompt == "The mother tongue of {} is"
    assert (c.subject, c.target_new, c.target_true) == ("Danielle Darrieux", "English", "French")
    assert c.paraphrases == ("Where Danielle Darrieux is from, people speak the language of",)
    assert [(lp.prompt, lp.answer) for lp in c.locality] == [("Michel Rocard is a native speaker of", "French")]
    for r, c in zip(raw, cases):
        assert c.case_id == str(r["case_id"])
        assert c.rewrite_prompt == r["prompt"]  # the template round-trips to the original prompt
        assert c.prompt.count("{}") == 1
        assert c.target_new == r["target_new"].strip() and c.target_true == r["ground_truth"].strip()
        assert c.source == "mirror:counterfact-edit.json"


@needs_shared
def test_easyedit_and_rome_agree_on_case_0():
    easy = read_easyedit_counterfact(EASY, n=1)[0]
    rome = read_rome_counterfact(ROME)[0]
    assert (easy.case_id, easy.prompt, easy.subject, easy.target_new, easy.target_true) == (
        rome.case_id, rome.prompt, rome.subject, rome.target_new, rome.target_true)
    assert easy.locality[0] in rome.locality


@needs_shared
def test_mend_zsre_eval():
    raw = json.loads(ZSRE.read_text())
    cases = read_mend_zsre(ZSRE)
    assert [c.case_id for c in cases] == [str(i) for i in range(34)]
    c = cases[0]
    assert c.kind == "zsre" and c.target_true is None
    assert c.prompt == "What university did {} attend?"
    assert c.target_new == "Illinois Institute of Technology"
    assert c.paraphrases == ("What university did Watts Humphrey take part in?",)
    assert c.locality[0].prompt == "nq question: who played desmond doss father in hacksaw ridge?"
    assert c.locality[0].answer == "Hugo Weaving"
    for r, c in zip(raw, cases):
        assert c.rewrite_prompt == r["src"]
        assert c.target_new == r["answers"][0].strip()
        assert c.locality[0].prompt == r["loc"] + "?"


@needs_shared
def test_detect_and_read_sniffs_each_format():
    assert detect_and_read(ROME, "counterfact") == read_rome_counterfact(ROME)
    assert detect_and_read(EASY, "mcf", n=5) == read_easyedit_counterfact(EASY, n=5)
    assert detect_and_read(ZSRE) == read_mend_zsre(ZSRE)
    with pytest.raises(InputError, match="zsre"):
        detect_and_read(ZSRE, "counterfact")
    with pytest.raises(InputError, match="counterfact"):
        detect_and_read(EASY, "zsre")


@needs_shared
def test_saved_cases_round_trip(tmp_path):
    cases = read_rome_counterfact(ROME) + read_mend_zsre(ZSRE, n=3)
    save_cases(tmp_path / "cases.jsonl", cases)
    assert load_cases(tmp_path / "cases.jsonl") == cases


# ---------------------------------------------------------------- bad input

def _easy(**kw):
    r = {"case_id": 7, "prompt": "The capital of France is", "subject": "France", "target_new": "Rome",
         "ground_truth": "Paris", "rephrase_prompt": "France's capital is",
         "locality_prompt": "The capital of Italy is", "locality_ground_truth": "Rome"}
    r.update(kw)
    return r


def _rome(**rw):
    rewrite = {"prompt": "The capital of {} is", "subject": "France", "relation_id": "P36",
               "target_new": {"str": "Rome", "id": "Q220"}, "target_true": {"str": "Paris", "id": "Q90"}}
    rewrite.update(rw)
    return {"case_id": 5, "requested_rewrite": rewrite, "paraphrase_prompts": ["France's capital is"],
            "neighborhood_prompts": ["The capital of Italy is"]}


def _zsre(**kw):
    r = {"subject": "France", "src": "What is the capital of France?", "answers": ["Paris"],
         "rephrase": "Which city is the capital of France?", "loc": "nq question: who wrote hamlet",
         "loc_ans": "Shakespeare"}
    r.update(kw)
    return r


def _drop(record, key):
    record = dict(record)
    del record[key]
    return record


def _write(tmp_path, content) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


BAD = [
    # (id, reader, file content, expected record, expected field, message fragment)
    ("malformed-json", read_easyedit_counterfact, '[{"case_id": 1,', None, None, "malformed JSON"),
    ("top-level-object", read_easyedit_counterfact, {"data": [_easy()]}, None, None, "list"),
    ("top-level-object-zsre", read_mend_zsre, {"data": [_zsre()]}, None, None, "list"),
    ("record-not-object", read_mend_zsre, [_zsre(), "oops"], 1, None, "object"),
    ("easy-missing-target", read_easyedit_counterfact, [_easy(), _drop(_easy(case_id=8), "target_new")], 8, "target_new", "missing"),
    ("easy-missing-case-id", read_easyedit_counterfact, [_drop(_easy(), "case_id")], 0, "case_id", "missing"),
    ("rome-missing-true", read_rome_counterfact, [_rome(target_true={"id": "Q90"})], 5, "requested_rewrite.target_true.str", "missing"),
    ("rome-missing-neighbors", read_rome_counterfact, [_drop(_rome(), "neighborhood_prompts")], 5, "neighborhood_prompts", "missing"),
    ("zsre-missing-loc-ans", read_mend_zsre, [_zsre(), _zsre(), _drop(_zsre(), "loc_ans")], 2, "loc_ans", "missing"),
    ("easy-subject-absent", read_easyedit_counterfact, [_easy(subject="Germany")], 7, "prompt", "does not occur"),
    ("zsre-subject-absent", read_mend_zsre, [_zsre(subject="Spain")], 0, "src", "does not occur"),
    ("rome-no-placeholder", read_rome_counterfact, [_rome(prompt="The capital of France is")], 5, "requested_rewrite.prompt", "does not occur"),
    ("easy-empty-target", read_easyedit_counterfact, [_easy(target_new="  ")], 7, "target_new", "empty target"),
    ("easy-empty-truth", read_easyedit_counterfact, [_easy(ground_truth="")], 7, "ground_truth", "empty target"),
    ("rome-empty-target", read_rome_counterfact, [_rome(target_new={"str": "", "id": "Q1"})], 5, "requested_rewrite.target_new.str", "empty target"),
    ("zsre-empty-answer", read_mend_zsre, [_zsre(answers=[" "])], 0, "answers", "empty target"),
    ("zsre-no-answers", read_mend_zsre, [_zsre(answers=[])], 0, "answers", "empty"),
    ("zsre-empty-loc-answer", read_mend_zsre, [_zsre(loc_ans="")], 0, "loc_ans", "empty target"),
    ("wrong-type", read_easyedit_counterfact, [_easy(rephrase_prompt=["a", "b"])], 7, "rephrase_prompt", "expected str"),
    ("duplicate-case-id", read_easyedit_counterfact, [_easy(), _easy()], 7, "case_id", "duplicate"),
    ("new-equals-true", read_easyedit_counterfact, [_easy(target_new=" Paris")], 7, "target_new", "equals"),
]


@pytest.mark.parametrize("reader, content, record, field, fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_names_file_record_and_field(tmp_path, reader, content, record, field, fragment):
    path = _write(tmp_path, content)
    with pytest.raises(InputError) as info:
        reader(path)
    err = info.value
    msg = str(err)
    assert err.file == str(path) and str(path) in msg
    assert fragment in msg
    if record is not None:
        assert err.record == record and f"record {record}" in msg
    if field is not None:
        assert err.field == field and f"field '{field}'" in msg


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_mend_zsre(tmp_path / "nope.json")


def test_unknown_format_is_rejected(tmp_path):
    path = _write(tmp_path, [{"question": "x"}])
    with pytest.raises(InputError, match="unrecognised record format") as info:
        detect_and_read(path)
    assert info.value.file == str(path)


def test_targets_are_stripped_and_template_replaces_first_occurrence(tmp_path):
    path = _write(tmp_path, [_easy(prompt="France, France is", target_new=" Rome ", ground_truth="Paris\n",
                                   locality_ground_truth=" Rome")])
    c = read_easyedit_counterfact(path)[0]
    assert c.prompt == "{}, France is"
    assert (c.target_new, c.target_true, c.locality[0].answer) == ("Rome", "Paris", "Rome")
    assert c.source == "file:bad.json"
    z = read_mend_zsre(_write(tmp_path, [_zsre(answers=[" Paris ", "Lyon"])]))[0]
    assert z.target_new == "Paris" and z.prompt == "What is the capital of {}?"
    assert z.locality[0].prompt == "nq question: who wrote hamlet?"


def test_n_takes_the_first_records_and_skips_later_bad_ones(tmp_path):
    path = _write(tmp_path, [_zsre(), _zsre(subject="Germany", src="What is the capital of Germany?"), "bad"])
    cases = read_mend_zsre(path, n=2)
    assert [c.subject for c in cases] == ["France", "Germany"]
    with pytest.raises(InputError):
        read_mend_zsre(path)
