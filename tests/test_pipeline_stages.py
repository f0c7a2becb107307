"""The DVC stage functions end to end on a tiny LLaMA saved to disk (model source `path`).

build_data → prepare → stats → edit_and_evaluate, in a scratch working directory laid out like the
repository. Checks what a user relies on: the run directory holds requests, per-case results, deltas
that re-apply exactly and the exact target vectors it used; a second run and a variant sharing JEEP's
objective optimise nothing; bad input exits non-zero with a clear message and leaves no output.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import tiny
from jeepkit import cli
from jeepkit.errors import ConfigError
from jeepkit.runners import edit as pipeline, inputs
from jeepkit.params import paths
from jeepkit.editing.deltas import load_deltas
from jeepkit.models import load_model

TINY_HP = {
    "none": {"unedited": True},
    "memit": {"layers": [1, 2], "clamp": 4.0, "lambda": 10.0, "lr": 0.5, "steps": 6, "weight_decay": 0.5,
              "kl_factor": 0.0625, "stop_loss": 0.05, "key_averaging": "grouped"},
    "jeep": {"layers_low": [1], "layers_high": [3], "clamp_low": 4.0, "clamp_high": 2.0, "lambda_low": 10.0,
             "lambda_high": 10.0, "weight_decay_low": 0.5, "weight_decay_high": 0.5, "kl_factor_low": 0.0625,
             "lr": 0.5, "steps": 6, "min_prob": 0.9, "high_anchor": "attn_as_released", "variant": "full"},
    "rome": {"layer": 2, "steps": 4, "n_prefix_short": 2, "n_prefix_long": 2, "prefix_len_short": 3,
             "prefix_len_long": 5},
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, llama_tok):
    """A scratch repository: tiny model on disk, a text corpus, params.yaml, data built, stats computed."""
    root = tmp_path_factory.mktemp("repo")
    params = {
        "profile": "test", "seed": 0, "seeds": [0],
        "data": {"source": "bundled", "datasets": ["counterfact"], "n_records": 12},
        "model": {"key": "tiny", "source": "path", "id": str(root / "tiny_model"), "dtype": "float32"},
        "stats": {"corpus": f"file:{root / 'corpus.txt'}", "n_samples": 20, "max_length": 32, "seed": 1,
                  "layers": [1, 2, 3], "modules": ["mlp_out"]},
        "edit": {"methods": ["none", "memit", "jeep", "rome"], "n_edits": 4, "batch_size": 2, "eval_batch_size": 8,
                 "drift": True, "free_generation_tokens": 4},
        "drift": {"n_docs": 4, "max_length": 16, "batch_size": 3},  # the corpus lines after the statistics' 20
        "knowedit": {"dataset": "wiki_counterfact", "methods": ["none", "memit"], "n_edits": 3, "source": "bundled"},
        "hparams": {"tiny": TINY_HP},
    }
    tiny.write_tiny_project(root, llama_tok, params)
    with (root / "corpus.txt").open("a") as f:  # held-out text for drift: never read by the statistics
        f.write("\n".join(tiny.CORPUS[:4]) + "\n")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    torch.set_num_threads(1)
    inputs.build_data("counterfact")
    inputs.prepare()
    inputs.stats()
    yield root
    mp.undo()


def test_knowedit_stage_scores_portability_and_locality_against_the_unedited_model(workdir):
    """The KnowEdit group end to end: its dataset, the unedited row (locality 100 by definition), an edited row,
    and the table with the printed reference rows."""
    from jeepkit import knowedit_report

    inputs.build_data("wiki_counterfact", source="bundled")
    none = pipeline.edit_and_evaluate("none", "wiki_counterfact", group="knowedit", n_edits=3)
    memit = pipeline.edit_and_evaluate("memit", "wiki_counterfact", group="knowedit", n_edits=3)
    assert none["kind"] == memit["kind"] == "knowedit" and none["n_edits"] == 3
    assert none["summary"]["LS"]["mean"] == 100.0 and none["summary"]["PS"]["n"] == 3
    # a 4-layer random model rarely reaches the argmax: the edit shows as moved locality tokens or as accuracy
    moved = memit["summary"]["LS"]["mean"] < 100.0 or memit["summary"]["ES"]["mean"] > none["summary"]["ES"]["mean"]
    assert moved, memit["summary"]
    assert memit["summary"]["FL"]["mean"] > 0 and memit["summary"]["Score"]["mean"] is not None
    cases = (workdir / "data/runs/knowedit/memit/wiki_counterfact/s0/cases.jsonl").read_text().splitlines()
    assert len(cases) == 3 and all('"agree"' in c and '"fluency"' in c for c in cases)
    table = knowedit_report.knowedit_table(workdir / "metrics", "wiki_counterfact")
    ours = table[table["source"] == knowedit_report.RAN_HERE]
    assert list(ours["method"]) == ["MEMIT", "Unedited"] and (table["source"] == "survey Table 4").sum() == 8
    assert "KNE" in set(table["method"])  # KNE's printed row
    assert set(ours["protocol"]) == {"batches of 2"} and "batches of 2" in table.attrs["note"]  # edit.batch_size


def test_knowedit_single_edits_roll_back_between_facts(workdir):
    """The survey's protocol (batch size 1): each fact edited on the unedited model, so each record's result is
    that of editing it alone, and one delta file per fact; a batch of all three differs. A batch size below 1
    from the command line is refused before anything is written."""
    inputs.build_data("wiki_counterfact", source="bundled")
    single = pipeline.edit_and_evaluate("memit", "wiki_counterfact", group="knowedit", n_edits=3, batch_size=1)
    assert single["batch_size"] == 1
    run = workdir / "data/runs/knowedit/memit/wiki_counterfact/s0"
    assert sorted(f.name for f in run.glob("delta_chunk*.safetensors")) == [f"delta_chunk{i}.safetensors"
                                                                           for i in range(3)]
    per = [json.loads(l) for l in (run / "cases.jsonl").read_text().splitlines()]
    for i in (0, 2):
        alone = pipeline.Session("params.yaml", "memit", "wiki_counterfact", 0, {})
        cases = alone.cases[i:i + 1]
        out = alone.run_chunks(cases, 1, keep_deltas=False, progress=False)
        assert out["per_case"][0] == per[i], i
    batch = pipeline.edit_and_evaluate("memit", "wiki_counterfact", group="knowedit", n_edits=3, batch_size=3)
    assert batch["batch_size"] == 3 and batch["summary"] != single["summary"]
    with pytest.raises(ConfigError, match="batch_size: expected an integer >= 1"):
        pipeline.edit_and_evaluate("memit", "wiki_counterfact", group="knowedit", n_edits=3, batch_size=0)


def test_stages_lay_out_data(workdir):
    assert (workdir / "data/datasets/counterfact.jsonl").exists()
    prov = json.loads((workdir / "data/datasets/counterfact.provenance.json").read_text())
    assert prov["source"] == "bundled"
    card = json.loads((workdir / "data/models/tiny/model_card.json").read_text())
    assert card["source"] == "path" and card["id"].endswith("tiny_model")
    assert list((workdir / "data/stats/tiny").rglob("*.safetensors"))


def test_edit_run_carries_requests_deltas_and_targets(workdir):
    m = pipeline.edit_and_evaluate("memit", "counterfact")
    run = workdir / "data/runs/main/memit/counterfact/s0"
    info = json.loads((run / "info.json").read_text())
    timing = json.loads((workdir / "data/timings/main/memit_counterfact_s0.json").read_text())
    assert info["targets"]["n"] == 4 and timing["target_cache"] == {"hits": 0, "misses": 4}
    assert "edit_seconds" in timing and "seconds" not in json.dumps(info) + json.dumps(m)
    assert len(list((run / "targets").rglob("*.safetensors"))) == 4
    assert len((run / "requests.jsonl").read_text().splitlines()) == 4
    assert len((run / "cases.jsonl").read_text().splitlines()) == 4
    metrics = json.loads((workdir / "metrics/main/memit_counterfact_s0.json").read_text())
    assert metrics["summary"]["ES"]["n"] == 4 and metrics["data"]["source"] == "bundled"
    assert m["summary"] == metrics["summary"]

    # one delta file per chunk, keyed by the edited modules, shaped like their weights
    model, _, _, _ = load_model(workdir / "data/models/tiny")
    modules = dict(model.named_modules())
    chunks = sorted(run.glob("delta_chunk*.safetensors"))
    assert len(chunks) == 2
    for path in chunks:
        deltas, meta = load_deltas(path)
        assert meta["method"] == "memit" and len(meta["case_ids"]) == 2
        assert set(deltas) == {"model.layers.1.mlp.down_proj", "model.layers.2.mlp.down_proj"}
        assert all(d.shape == modules[k].weight.shape and d.abs().max() > 0 for k, d in deltas.items())

    # exported targets are the vectors in the scratch cache, bit for bit
    for f in (run / "targets").rglob("*.safetensors"):
        scratch = workdir / "data/cache/targets/tiny" / f.parent.name / f.name
        a, b = load_file(str(f)), load_file(str(scratch))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_rerun_and_shared_objective_optimise_nothing(workdir):
    first = pipeline.edit_and_evaluate("jeep", "counterfact")
    run = workdir / "data/runs/main/jeep/counterfact/s0"
    metrics = workdir / "metrics/main/jeep_counterfact_s0.json"
    cold_run, cold_metrics = _tree(run), metrics.read_bytes()
    again = pipeline.edit_and_evaluate("jeep", "counterfact")
    assert again["summary"] == first["summary"]  # deterministic
    timing = json.loads((workdir / "data/timings/main/jeep_counterfact_s0.json").read_text())
    assert timing["target_cache"] == {"hits": 4, "misses": 0}
    # a warm-cache re-run writes the same bytes as the cold run: run directory and metrics
    assert _tree(run) == cold_run and metrics.read_bytes() == cold_metrics
    pipeline.edit_and_evaluate("jeep", "counterfact", group="ablation", overrides={"variant": "wo_step2"})
    timing = json.loads((workdir / "data/timings/ablation/jeep-variant=wo_step2_counterfact_s0.json").read_text())
    assert timing["target_cache"] == {"hits": 4, "misses": 0}


def test_teacher_forced_only_runs_score_the_papers_numbers_and_nothing_else(workdir):
    """Table 4's and Fig. 6's stages (`--scores teacher_forced`): the same ES / GS / LS as a full run of the same
    edit, and no free generation, drift, case study or generation file, which only the main tables read."""
    full = pipeline.edit_and_evaluate("memit", "counterfact", group="main")
    lean = pipeline.edit_and_evaluate("memit", "counterfact", group="sweep", scores="teacher_forced")
    assert {k: full["summary"][k] for k in ("ES", "GS", "LS", "Score")} == \
        {k: lean["summary"][k] for k in ("ES", "GS", "LS", "Score")}
    assert full["scores"] == "all" and lean["scores"] == "teacher_forced"
    assert "free_generation" in full["summary"] and "drift" in full and full["case_study"] is not None
    assert "free_generation" not in lean["summary"] and "drift" not in lean and lean["case_study"] is None
    assert not (workdir / "data/runs/sweep/memit/counterfact/s0/free_generation.jsonl").exists()
    assert (workdir / "data/runs/main/memit/counterfact/s0/free_generation.jsonl").exists()
    with pytest.raises(ConfigError, match="scores"):
        pipeline.edit_and_evaluate("memit", "counterfact", group="sweep", scores="free_only")


def test_rome_case_study_and_chunks_are_byte_identical_across_runs(workdir):
    """ROME has no target cache: everything (case-study generations included) is recomputed each run,
    over two chunks whose weights are restored exactly in between."""
    runs = []
    for _ in range(2):
        pipeline.edit_and_evaluate("rome", "counterfact")
        runs.append((_tree(workdir / "data/runs/main/rome/counterfact/s0"),
                     (workdir / "metrics/main/rome_counterfact_s0.json").read_bytes()))
    assert runs[0] == runs[1]
    assert json.loads(runs[0][1])["case_study"]["greedy"]


def test_chunks_start_from_the_exact_original_weights(workdir):
    """After an edit of several chunks the model is bit-for-bit the loaded one (no W + ΔW − ΔW drift)."""
    s = pipeline.Session("params.yaml", "memit", "counterfact", None, {})
    before = {k: v.clone() for k, v in s.model.state_dict().items()}
    s.run_chunks(s.cases[:4], 2, keep_deltas=False, progress=False)
    after = s.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bad_dataset_file_exits_nonzero_without_output(workdir, capsys):
    bad = workdir / "data/datasets/counterfact.jsonl"
    good = bad.read_text()
    try:
        bad.write_text(good.replace('"subject"', '"subjekt"', 1))
        with pytest.raises(SystemExit) as e:
            cli.stage_main(pipeline.edit_and_evaluate)("memit", "counterfact", group="bad")
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "counterfact.jsonl" in err and "subject" in err
        assert not (workdir / "data/runs/bad").exists() and not (workdir / "metrics/bad").exists()
    finally:
        bad.write_text(good)


def test_unknown_method_exits_nonzero(workdir, capsys):
    with pytest.raises(SystemExit) as e:
        cli.stage_main(pipeline.edit_and_evaluate)("nope", "counterfact")
    assert e.value.code == 2 and "unknown method 'nope'" in capsys.readouterr().err


def test_target_cache_location_from_environment(monkeypatch, tmp_path):
    params = {"model": {"key": "tiny"}}
    assert paths(params)["targets"] == Path("data/cache/targets/tiny")
    monkeypatch.setenv("JEEPKIT_TARGET_CACHE", str(tmp_path / "shared"))
    assert paths(params)["targets"] == tmp_path / "shared" / "tiny"


def test_batch_runs_carry_free_generation_drift_and_protocol_tags(workdir):
    """Issue 14 in the batch stages: the unedited run's held-out perplexity is the same before and after and
    its free-generation scores are those of greedy decoding by hand; an edit moves the perplexity; every
    metric names its protocol; the per-prompt continuations are in the run directory."""
    from jeepkit.data.schema import load_cases
    from jeepkit.drift import perplexity
    from jeepkit.free_generation import score_cases, summarise as summarise_free

    none = pipeline.edit_and_evaluate("none", "counterfact")
    memit = pipeline.edit_and_evaluate("memit", "counterfact")
    for m in (none, memit):
        assert {m["summary"][k]["protocol"] for k in ("ES", "GS", "LS", "Score")} == {"teacher_forced_prob"}
        assert m["summary"]["free_generation"]["protocol"] == "free_generation"
        assert m["summary"]["free_generation"]["max_new_tokens"] == 4
        d = m["drift"]
        assert d["protocol"] == "perplexity" and len(d["after"]) == 2  # one per chunk of 2
        assert d["settings"]["n_docs"] == 4 and d["before"]["docs"] == 4
    assert none["drift"]["after"] == [none["drift"]["before"]] * 2 and none["drift"]["change"] == 0.0
    assert memit["drift"]["before"] == none["drift"]["before"]
    assert all(a["perplexity"] != memit["drift"]["before"]["perplexity"] for a in memit["drift"]["after"])

    # the unedited model's free generation, by hand
    model, tok, _, _ = load_model(workdir / "data/models/tiny")
    cases = load_cases(workdir / "data/datasets/counterfact.jsonl")[:4]
    by_hand = score_cases(model, tok, cases, max_new_tokens=4)
    run = workdir / "data/runs/main/none/counterfact/s0"
    written = [json.loads(x) for x in (run / "free_generation.jsonl").read_text().splitlines()]
    assert written == by_hand
    assert {k: v for k, v in summarise_free(by_hand).items()} == {
        k: v for k, v in none["summary"]["free_generation"].items() if k != "max_new_tokens"}
    docs = (workdir / "corpus.txt").read_text().splitlines()[20:24]
    assert perplexity(model, tok, docs, max_length=16, batch=3) == none["drift"]["before"]


def test_unedited_perplexity_is_computed_once_per_model_text_and_settings(workdir):
    """Every stage of a model scores the same unedited model on the same held-out text: the first stores that
    perplexity, later stages read it (a planted value shows through), and other drift settings get their own."""
    from jeepkit.drift import perplexity

    params = yaml.safe_load((workdir / "params.yaml").read_text())
    pipeline.edit_and_evaluate("none", "counterfact", params, group="ppl_cache", n_edits=2)
    stored = list((paths(params)["targets"] / "heldout").glob("ppl-*.json"))
    assert len(stored) == 1
    cached = json.loads(stored[0].read_text())
    model, tok, _, _ = load_model(workdir / "data/models/tiny")
    docs = (workdir / "corpus.txt").read_text().splitlines()[20:24]
    assert cached == perplexity(model, tok, docs, max_length=16, batch=3)
    original = stored[0].read_bytes()
    try:
        stored[0].write_text(json.dumps({**cached, "perplexity": 1234.5}))
        assert pipeline.Session(params, "memit", "counterfact", None, {}).unedited_perplexity()["perplexity"] == 1234.5
    finally:
        stored[0].write_bytes(original)
    params["drift"]["max_length"] = 12
    other = pipeline.Session(params, "memit", "counterfact", None, {}).unedited_perplexity()
    assert other == perplexity(model, tok, docs, max_length=12, batch=3) != cached


def test_batch_run_scores_generation_prompts_when_the_cases_have_them(workdir, tmp_path):
    """Issue 14, MEMIT's generation metrics: cases with generation prompts (the official CounterFact layout) get
    Fluency and Consistency in the summary and their texts in generation.jsonl; the bundled cases, which have
    none, get neither (the committed runs do not change); a missing snippet file is one clear error."""
    from dataclasses import replace

    from jeepkit.data.schema import load_cases, save_cases
    from jeepkit.errors import InputError
    from jeepkit.generation_metrics import GenerationScorer, GenerationSettings

    params = yaml.safe_load((workdir / "params.yaml").read_text())
    plain = pipeline.edit_and_evaluate("none", "counterfact", params, group="gen_plain", n_edits=2)
    assert "generation" not in plain["summary"]
    assert not (workdir / "data/runs/gen_plain/none/counterfact/s0/generation.jsonl").exists()

    data = workdir / "data/datasets/counterfact.jsonl"
    original = data.read_bytes()
    cases = load_cases(data)
    snips = tmp_path / "attribute_snippets.json"
    snips.write_text(json.dumps([{"relation_id": c.relation_id, "target_id": f"Q{i}", "samples": [
        {"text": f"{c.target_new} is where {c.subject} and others are."}]} for i, c in enumerate(cases[:2])]))
    rich = [replace(c, generation_prompts=(c.rewrite_prompt, f"{c.subject} is"), target_new_id=f"Q{i}")
            for i, c in enumerate(cases)]
    params["generation"] = {"max_length": 10, "top_k": 5, "seed": 0, "attribute_snippets": str(snips)}
    try:
        save_cases(data, rich)
        got = pipeline.edit_and_evaluate("memit", "counterfact", params, group="gen_rich", n_edits=2)
        run = workdir / "data/runs/gen_rich/memit/counterfact/s0"
        rows = [json.loads(x) for x in (run / "generation.jsonl").read_text().splitlines()]
        g = got["summary"]["generation"]
        assert g["protocol"] == "free_generation" and g["settings"] == {"max_length": 10, "top_k": 5, "seed": 0}
        assert g["GE"]["n"] == 2 and g["RS"]["n"] == 2 and [r["case_id"] for r in rows] == [c.case_id for c in rich[:2]]
        assert g["GE"]["mean"] == pytest.approx(sum(r["fluency"] for r in rows) / 2, abs=1e-5)
        # the last chunk's edit is left in place: its texts are those of the scorer on the edited model
        model_texts = rows[1]["texts"]
        assert all(t.startswith(p) for t, p in zip(model_texts, rich[1].generation_prompts))
        params["generation"]["attribute_snippets"] = str(tmp_path / "missing.json")
        with pytest.raises(InputError, match="missing.json"):
            pipeline.edit_and_evaluate("none", "counterfact", params, group="gen_bad", n_edits=2)
        assert not (workdir / "data/runs/gen_bad").exists()
    finally:
        data.write_bytes(original)
    assert not GenerationScorer(GenerationSettings(max_length=0)).applies(rich)  # 0: off
