"""KnowEdit through the dataset contract: the reader, the bundled KnowEdit-style part, and the survey's
metrics (token-level Edit Succ and Portability, Locality as agreement with the unedited model, Fluency as
weighted bi-/tri-gram entropy)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from jeepkit.data.bundled import build_knowedit
from jeepkit.data.facts import RELATIONS
from jeepkit.data.kinds import KINDS
from jeepkit.data.readers import detect_and_read
from jeepkit.data.registry import DATASETS
from jeepkit.data.schema import EditCase, load_cases, save_cases
from jeepkit.data.sources import resolve_dataset
from jeepkit.errors import InputError
from jeepkit.evaluation import evaluate_cases, ngram_entropy, reference_predictions
from jeepkit.metrics import summarise

pytestmark = pytest.mark.usefixtures("torch_one_thread")
SAMPLE = Path(__file__).parent / "fixtures" / "knowedit" / "knowedit_sample.json"


def test_reader_maps_the_three_knowedit_layouts():
    cf, recent, zsre = detect_and_read(SAMPLE, "wiki_counterfact")
    assert (cf.kind, cf.prompt, cf.subject) == ("knowedit", "The name of the position held by {} is", "Frederic Piesch")
    assert (cf.target_new, cf.target_true) == ("Archbishop of León, Mexico", "mayor of Vienna")
    assert [(p.group, p.answer) for p in cf.portability] == [("Subject_Aliasing", "Archbishop of León, Mexico")]
    assert [p.group for p in cf.locality] == ["Relation_Specificity", "Forgetfulness"]
    # WikiData_recent: no ground truth, answers as lists of alias lists (the first alias is scored)
    assert recent.target_true is None
    assert [(p.group, p.answer) for p in recent.portability] == [("Logical_Generalization", "no"),
                                                                 ("Reasoning", "Europe")]
    assert recent.locality[0].answer == "Albert Arons"
    # ZsRE: a rephrased question becomes the paraphrase
    assert zsre.paraphrases == ("What family are Epaspidoceras?",) and zsre.target_true == "Aspidoceratidae"


def test_canonical_round_trip_keeps_groups_and_old_kinds_unchanged(tmp_path):
    cases = detect_and_read(SAMPLE, "wiki_counterfact")
    save_cases(tmp_path / "k.jsonl", cases)
    assert load_cases(tmp_path / "k.jsonl") == cases
    cf = EditCase("1", "counterfact", "{} is in", "Paris", "Japan", "France")
    assert "portability" not in cf.to_dict()  # CounterFact / zsRE files keep their bytes
    # a KnowEdit record may lack portability (EasyEdit leaves it out of the Portability mean), not locality
    from jeepkit.data.schema import Probe

    EditCase("1", "knowedit", "{} is in", "Paris", "Japan", None,
             locality=(Probe("Rome is in", "Italy", "Relation_Specificity"),)).validate()
    with pytest.raises(InputError, match="locality"):
        EditCase("1", "knowedit", "{} is in", "Paris", "Japan", None).validate()


def test_bundled_knowedit_is_deterministic_and_its_portability_follows_the_fact_table():
    a, b = build_knowedit(None, 0), build_knowedit(None, 0)
    assert a == b and len(a) > 100
    facts = {r.relation_id: dict(r.facts) for r in RELATIONS}
    owner = {cap: country for country, cap in facts["P36"].items()}
    for c in a:
        c.validate()
        assert c.portability and c.locality and c.target_new != c.target_true
        for p in c.portability:
            if c.relation_id == "P36":  # a capital edit: the new capital's country, and its language
                assert p.answer in {owner[c.target_new], facts["P37"][owner[c.target_new]]}
            else:  # a second hop from the *new* country
                assert p.answer in {facts[r].get(c.target_new) for r in ("P36", "P37", "P38", "P30")}
    cases, prov = resolve_dataset("wiki_counterfact", "bundled", n=5, seed=0)
    assert len(cases) == 5 and prov["reader"] == "bundled.build_knowedit"
    assert DATASETS["wiki_counterfact"].kind == "knowedit"


def test_ngram_entropy_by_hand():
    # "a b a b": bigrams ab, ba, ab -> H = -(2/3 log2 2/3 + 1/3 log2 1/3); trigrams aba, bab -> H = 1
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ngram_entropy("a b a b") == pytest.approx((h2 * 2 / 3 + 1.0 * 4 / 3) / 2)
    assert ngram_entropy("") == 0.0 and ngram_entropy("one") == 0.0


def test_metrics_on_a_tiny_model(tiny_model):
    """Locality is agreement with the unedited model: the unedited model agrees with itself exactly, and a
    model with scrambled weights does not; Edit Succ and Portability are token accuracies; Score = hmean."""
    model, tok, arch = tiny_model
    cases = build_knowedit(4, 0)
    ref = reference_predictions(model, tok, cases, progress=False)
    same = evaluate_cases(model, tok, cases, progress=False, reference=ref)
    for r in same:
        assert all(p["acc"] == 1.0 for p in r["locality"])
        assert 0.0 <= r["rewrite"]["acc"] <= 1.0 and r["portability"] and "entropy" in r["fluency"]
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.copy_(p[torch.randperm(p.shape[0])] if p.dim() > 1 else p)
    moved = evaluate_cases(other, tok, cases, progress=False, reference=ref)
    assert any(p["acc"] < 1.0 for r in moved for p in r["locality"])
    s = summarise(same, "knowedit")
    assert set(KINDS["knowedit"].metrics) <= set(s) and s["LS"]["mean"] == 100.0 and s["GS"]["n"] == 0
    es, ps, ls = (s[m]["mean"] for m in ("ES", "PS", "LS"))
    expect = 0.0 if min(es, ps, ls) == 0 else 3 / (1 / es + 1 / ps + 1 / ls)
    assert s["Score"]["mean"] == pytest.approx(expect)
    with pytest.raises(ValueError, match="reference"):
        evaluate_cases(model, tok, cases, progress=False)


def test_portability_and_locality_average_sub_types_first():
    """EasyEdit's run_knowedit_llama2.eval: per record, the mean over sub-types of each sub-type's mean. Three
    Relation_Specificity probes right and one Forgetfulness probe wrong give LS 1/2, not the flat 3/4."""
    from jeepkit.metrics import record_scores

    result = {"case_id": "1", "kind": "knowedit", "rewrite": {"acc": 1.0},
              "portability": [{"acc": 1.0, "group": "Reasoning"}, {"acc": 0.0, "group": "Subject_Aliasing"},
                              {"acc": 0.0, "group": "Subject_Aliasing"}],
              "locality": [{"acc": 1.0, "group": "Relation_Specificity"}] * 3
              + [{"acc": 0.0, "group": "Forgetfulness"}],
              "paraphrases": [], "fluency": {"text": "", "entropy": 500.0}}
    got = record_scores(result)
    assert got["LS"] == pytest.approx(0.5) and got["PS"] == pytest.approx(0.5) and got["ES"] == 1.0


def test_evaluation_tags_probes_with_their_sub_type_and_samples_fluency_as_rome(tiny_llama):
    """Each portability / locality result carries its probe's group; Fluency is the entropy of the rewrite
    prompt's text from ROME's sampler (100 tokens with the prompt, top-k 5, past end-of-text)."""
    from jeepkit.free_generation import sampled_texts

    model, tok, _ = tiny_llama
    cases = build_knowedit(3, 0)
    ref = reference_predictions(model, tok, cases, progress=False)
    got = evaluate_cases(model, tok, cases, progress=False, reference=ref)
    for c, r in zip(cases, got):
        assert [p["group"] for p in r["portability"]] == [p.group for p in c.portability]
        assert [p["group"] for p in r["locality"]] == [p.group for p in c.locality]
    texts = sampled_texts(model, tok, [c.rewrite_prompt for c in cases])
    assert [r["fluency"]["text"] for r in got] == texts  # the text keeps its prompt (as decoded)
    assert all(t.split()[:2] == c.rewrite_prompt.split()[:2] for t, c in zip(texts, cases))
    assert [r["fluency"]["entropy"] for r in got] == [100.0 * ngram_entropy(t) for t in texts]
    short = evaluate_cases(model, tok, cases, progress=False, reference=ref, sampling={"max_length": 12})
    twelve = sampled_texts(model, tok, [c.rewrite_prompt for c in cases], max_length=12)
    assert [r["fluency"]["text"] for r in short] == twelve and all(len(a) < len(b) for a, b in zip(twelve, texts))


def test_bundled_knowedit_holds_multi_token_targets_and_other_names_are_refused(llama_tok):
    """Capital edits interleave with country edits, so even 4 cases hold a target of several tokens (where
    FT-L's last-token loss and FT-M's teacher-forced one differ); ZsRE / WikiData_recent have no bundled
    cases, so their names are refused rather than given WikiData_counterfact's cases."""
    from jeepkit.errors import ConfigError
    from jeepkit.tokens import locate_template

    four = build_knowedit(4, 0)
    assert [c.relation_id == "P36" for c in four] == [False, True, False, True]
    lengths = [len(locate_template(llama_tok, c.prompt, c.subject, answer=c.target_new).answer_ids)
               for c in build_knowedit(None, 0)]
    assert max(lengths) > 1 and min(lengths) == 1
    for name in ("wiki_recent", "knowedit_zsre"):
        with pytest.raises(ConfigError, match=f"{name}' has no bundled cases"):
            resolve_dataset(name, "bundled", n=4, seed=0)


def test_reader_skips_what_easyedit_skips_and_counts_it(tmp_path):
    """Empty answers are skipped (EasyEdit: `if an.strip() == "": continue`), a list of prompts gives one probe
    each, a record without portability stays (left out of the Portability mean), and the provenance counts
    what was left out."""
    import json

    recs = [{"subject": "Paris", "prompt": "Paris is in", "target_new": "Japan", "ground_truth": "France",
             "portability": {"Reasoning": [{"prompt": ["Paris's continent is", "The continent of Paris is"],
                                            "ground_truth": [["Asia"]]},
                                           {"prompt": "Paris's currency is", "ground_truth": [[""]]}]},
             "locality": {"Relation_Specificity": [{"prompt": "Rome is in", "ground_truth": ""},
                                                   {"prompt": "Berlin is in", "ground_truth": "Germany"}]}},
            {"subject": "Oslo", "prompt": "Oslo is in", "target_new": "Chile", "ground_truth": "Norway",
             "locality": {"Relation_Specificity": [{"prompt": "Bern is in", "ground_truth": ["Switzerland"]}]}},
            {"subject": "Rome", "prompt": "Rome is in", "target_new": "Peru", "ground_truth": "Italy",
             "portability": {"Subject_Aliasing": []},
             "locality": {"Relation_Specificity": [{"prompt": "Bern is in", "ground_truth": ["Switzerland"]}]}}]
    f = tmp_path / "knowedit.json"
    f.write_text(json.dumps(recs))
    cases, prov = resolve_dataset("wiki_counterfact", "mirror", mirror_file=f)
    a, b, c = cases
    assert c.portability == ()
    assert [(p.prompt, p.answer) for p in a.portability] == [("Paris's continent is", "Asia"),
                                                             ("The continent of Paris is", "Asia")]
    assert [p.answer for p in a.locality] == ["Germany"] and b.portability == ()
    assert prov["skipped"] == {"locality_probes_with_empty_answer": 1, "portability_probes_with_empty_answer": 1,
                               "records_without_portability": 2}
    from jeepkit.metrics import summarise
    per = [{"case_id": "0", "kind": "knowedit", "rewrite": {"acc": 1.0}, "paraphrases": [],
            "portability": [{"acc": 1.0, "group": "Reasoning"}] * 2, "locality": [{"acc": 1.0, "group": "R"}],
            "fluency": {"text": "", "entropy": 1.0}},
           {"case_id": "1", "kind": "knowedit", "rewrite": {"acc": 0.0}, "paraphrases": [], "portability": [],
            "locality": [{"acc": 0.0, "group": "R"}], "fluency": {"text": "", "entropy": 1.0}}]
    s = summarise(per, "knowedit")
    assert s["PS"]["n"] == 1 and s["PS"]["mean"] == 100.0 and s["ES"]["n"] == 2
