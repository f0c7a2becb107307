"""MEMIT's generation metrics (Fluency, Consistency) on CounterFact generation prompts: the official record
layout read from the real schema excerpt, the TF-IDF vectoriser against a hand computation, the seeded top-k
sampler, and bad snippet files."""

from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from jeepkit.data.readers import parse_records
from jeepkit.data.schema import EditCase
from jeepkit.errors import InputError
from jeepkit.evaluation import ngram_entropy
from jeepkit.free_generation import decode, greedy, sampled_texts
from jeepkit.generation_metrics import (GenerationScorer, GenerationSettings, TfIdf, read_attribute_snippets,
                                        summarise)

EXCERPT = Path(__file__).resolve().parents[2] / "shared" / "data" / "counterfact" / "counterfact-rome-schema-excerpt.json"


@pytest.mark.skipif(not EXCERPT.exists(), reason="../shared/data is not beside the project")
def test_official_records_carry_generation_prompts_and_round_trip():
    cases = parse_records(json.loads(EXCERPT.read_text()), "rome_counterfact", str(EXCERPT), source="official")
    assert [len(c.generation_prompts) for c in cases] == [10, 10]
    assert all(c.target_new_id and c.target_new_id.startswith("Q") for c in cases)
    d = cases[0].to_dict()
    assert d["generation_prompts"] == list(cases[0].generation_prompts)
    assert EditCase.from_dict(d) == cases[0]
    bare = EditCase("1", "counterfact", "{} is in", "Paris", "Rome", "France")
    assert "generation_prompts" not in bare.to_dict() and "target_new_id" not in bare.to_dict()


def test_tfidf_fit_and_similarity_by_hand():
    docs = ["the cat sat", "the dog sat", "a cat ran"]  # "a" is one character: not a token
    v = TfIdf.fit(docs)
    assert sorted(v.vocab) == ["cat", "dog", "ran", "sat", "the"]
    idf = {w: math.log(4 / (1 + df)) + 1 for w, df in {"cat": 2, "dog": 1, "ran": 1, "sat": 2, "the": 2}.items()}
    assert np.allclose(v.idf, [idf[w] for w in sorted(idf)])
    a = np.array([idf["cat"], 0, 0, idf["sat"], 2 * idf["the"]])  # "The cat sat, the end"
    b = np.array([0, idf["dog"], 0, idf["sat"], idf["the"]])
    want = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    assert v.similarity("The cat sat, the end", "the dog sat") == pytest.approx(want)
    assert v.similarity("zebra", "the cat") is None


def test_tfidf_from_memit_files(tmp_path):
    np.save(tmp_path / "idf.npy", np.array([1.0, 2.0]))
    (tmp_path / "vocab.json").write_text(json.dumps({"paris": 0, "france": 1}))
    v = TfIdf.from_files(str(tmp_path / "idf.npy"), str(tmp_path / "vocab.json"))
    assert v.similarity("Paris", "paris France") == pytest.approx(1 / math.sqrt(5))
    (tmp_path / "bad.json").write_text(json.dumps({"paris": 7}))
    with pytest.raises(InputError, match="indices below 2"):
        TfIdf.from_files(str(tmp_path / "idf.npy"), str(tmp_path / "bad.json"))


def test_bad_snippet_files_name_record_and_field(tmp_path):
    f = tmp_path / "snips.json"
    f.write_text(json.dumps([{"relation_id": "P1", "target_id": "Q1", "samples": [{"text": "x"}]},
                             {"relation_id": "P1", "samples": []}]))
    with pytest.raises(InputError) as e:
        read_attribute_snippets(str(f))
    assert "record 1" in str(e.value) and "target_id" in str(e.value)
    f.write_text(json.dumps([{"relation_id": "P1", "target_id": "Q1", "samples": [{"txt": "x"}]}]))
    with pytest.raises(InputError, match=r"samples\[0\]\.text"):
        read_attribute_snippets(str(f))


def test_top_k_sampling_is_seeded_per_prompt_and_capped(tiny_llama):
    model, tok, _ = tiny_llama
    prompts = ["The capital of France is", "Paris is in", "A B C", "Rome"]
    one = decode(model, tok, prompts, 12, batch_size=1, top_k=5, seed=3)
    assert decode(model, tok, prompts, 12, batch_size=4, top_k=5, seed=3) == one  # batch does not matter
    assert decode(model, tok, prompts, 12, batch_size=4, top_k=5, seed=4) != one
    assert decode(model, tok, prompts, 6, top_k=1) == greedy(model, tok, prompts, 6)  # k = 1 is the argmax
    full = decode(model, tok, prompts, 100, top_k=5, seed=3, max_length=9, keep_prompt=True)
    for p, t in zip(prompts, full):
        n_prompt = len(tok(p)["input_ids"])
        assert t.startswith(p) and len(tok(t)["input_ids"]) <= max(9, n_prompt) + 1  # re-tokenising may merge


def test_scorer_on_a_tiny_model(tiny_llama, tmp_path):
    model, tok, _ = tiny_llama
    snips = tmp_path / "snips.json"
    snips.write_text(json.dumps([{"relation_id": "P17", "target_id": "Q142", "samples": [
        {"text": "France is a country in Europe whose capital is Paris."}, {"text": "The French republic."}]}]))
    cases = [EditCase("1", "counterfact", "{} is located in", "Eiffel Tower", "France", "Italy", relation_id="P17",
                      generation_prompts=("The Eiffel Tower is", "Where is the Eiffel Tower?"), target_new_id="Q142"),
             EditCase("2", "counterfact", "{} is located in", "Colosseum", "France", "Italy", relation_id="P17")]
    s = GenerationSettings(max_length=14, top_k=5, seed=0, attribute_snippets=str(snips))
    scorer = GenerationScorer(s)
    assert scorer.applies(cases) and not scorer.applies(cases[1:])
    got = scorer.score(model, tok, cases)
    assert [g["case_id"] for g in got] == ["1"]  # the case without generation prompts is not scored
    texts = got[0]["texts"]
    assert texts == sampled_texts(model, tok, list(cases[0].generation_prompts), max_length=14, top_k=5, seed=0)
    assert texts == [unicodedata.normalize("NFKD", t).replace("\n\n", " ") for t in decode(
        model, tok, list(cases[0].generation_prompts), 14, top_k=5, seed=0, max_length=14, keep_prompt=True,
        stop_at_eos=False)]
    assert got[0]["fluency"] == pytest.approx(100 * np.mean([ngram_entropy(t) for t in texts]))
    refs = read_attribute_snippets(str(snips))[("P17", "Q142")]
    sim = TfIdf.fit(refs).similarity(" ".join(texts), " ".join(refs))
    assert sim is not None and got[0]["consistency"] == pytest.approx(100 * sim)  # "the" / "is" are shared
    summ = summarise(got, s)
    assert summ["protocol"] == "free_generation" and summ["GE"]["n"] == 1
    assert summ["GE"]["mean"] == pytest.approx(got[0]["fluency"])
