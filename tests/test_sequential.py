"""Sequential editing (issue 14): the protocol, AlphaEdit's accumulated keys, PRUNE, RECT and drift.

The stage runs on a tiny LLaMA saved to disk, in a scratch project; the by-hand references below use
only the public editing calls (`editing.run.edit` on a fresh model, batch after batch).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import tiny
from jeepkit.drift import heldout_documents, perplexity
from jeepkit.editing import alphaedit
from jeepkit.editing.deltas import load_deltas
from jeepkit.editing.engine import read_keys_and_cur
from jeepkit.editing.restraint import prune, rect, spectrum
from jeepkit.errors import ConfigError
from jeepkit.runners import inputs
from jeepkit.runners.edit import Session
from jeepkit.runners.sequential import sequential

HP = {
    "memit": {"layers": [1, 2], "clamp": 4.0, "lambda": 10.0, "lr": 0.5, "steps": 4, "weight_decay": 0.5,
              "kl_factor": 0.0625, "stop_loss": 0.05},
    "alphaedit": {"layers": [1, 2], "clamp": 4.0, "lambda": 10.0, "lr": 0.5, "steps": 4, "weight_decay": 0.5,
                  "kl_factor": 0.0625, "nullspace_threshold": 0.5},
    "kne": {"p": 0.05, "m": 2, "steps": 2},
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, llama_tok):
    root = tmp_path_factory.mktemp("seq")
    params = {
        "profile": "test", "seed": 0, "seeds": [0],
        "data": {"source": "bundled", "datasets": ["counterfact"], "n_records": 8},
        "model": {"key": "tiny", "source": "path", "id": str(root / "tiny_model"), "dtype": "float32"},
        "stats": {"corpus": f"file:{root / 'corpus.txt'}", "n_samples": 12, "max_length": 32, "seed": 1,
                  "layers": [1, 2], "modules": ["mlp_out"]},
        "edit": {"methods": ["memit"], "n_edits": 2, "batch_size": 2, "eval_batch_size": 8},
        "sequential": {"dataset": "counterfact", "methods": ["memit", "alphaedit"], "regularisers": ["none"],
                       "total": 4, "batch": 2, "rect_top_percent": 25, "prune": {"alpha": 1.5, "every": True}},
        "drift": {"n_docs": 4, "max_length": 16, "seed": 2, "batch_size": 3},
        "hparams": {"tiny": HP},
    }
    tiny.write_tiny_project(root, llama_tok, params)
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    torch.set_num_threads(1)
    inputs.build_data("counterfact")
    inputs.prepare()
    inputs.stats()
    yield root
    mp.undo()


def _by_hand(method: str, hp_over: dict | None = None):
    """The batches applied in order with the editing API on a freshly loaded model; returns (session, carry)."""
    from jeepkit.editing.recipe import EditContext
    from jeepkit.editing.run import edit

    s = Session("params.yaml", method, "counterfact", 0, {})
    s._snapshot()  # the originals, before any edit
    ctx = EditContext(s.model, s.tok, s.arch, s.cov.get, s.prefixes, None, None, s.runtime, carry={})
    for b in range(2):
        edit(ctx, method, s.cases[2 * b:2 * b + 2], s.hparams)
    return s, ctx.carry


def test_stage_equals_its_batches_applied_by_hand(workdir):
    m = sequential("memit", "counterfact")
    assert [p["edits"] for p in m["checkpoints"]] == [2, 4]
    run = workdir / "data/runs/sequential/memit-none/counterfact/s0"
    total, meta = load_deltas(run / "delta_total.safetensors")
    assert meta["case_ids"] == [json.loads(l)["case_id"] for l in (run / "requests.jsonl").read_text().splitlines()]
    s, _ = _by_hand("memit")
    for name, d in total.items():
        w0 = s._snapshot().kept[name]
        assert torch.equal(s.model.get_parameter(name).detach().float() - w0, d), name
    # the metrics after the last batch are those of the hand-edited model
    from jeepkit.evaluation import evaluate_cases
    from jeepkit.metrics import summarise

    ref = summarise(evaluate_cases(s.model, s.tok, s.cases[:4], progress=False, batch_size=8), "counterfact")
    assert m["summary"] == ref == m["checkpoints"][-1]["summary"]["all_so_far"]
    # free generation after the first and the last batch, scored like the hand-edited model's
    from jeepkit.free_generation import score_cases, summarise as free_summary

    assert "free_generation" in m["checkpoints"][0] and m["checkpoints"][0]["summary"]["protocol"] == "teacher_forced_prob"
    assert m["checkpoints"][-1]["free_generation"] == free_summary(score_cases(s.model, s.tok, s.cases[:4],
                                                                              max_new_tokens=8, batch_size=8))
    first = m["checkpoints"][0]["summary"]
    assert first["all_so_far"] == first["first_batch"] == first["latest_batch"]
    # PRUNE after every batch (every: true), drift before and after, spectra of both edited matrices
    assert all("prune" in p for p in m["checkpoints"])
    assert m["drift_before"]["docs"] == 4 and m["checkpoints"][-1]["drift"]["perplexity"] > 0
    assert set(m["checkpoints"][-1]["spectra"]) == {"model.layers.1.mlp.down_proj.weight",
                                                     "model.layers.2.mlp.down_proj.weight"}
    assert all("acted" in p["prune"] for p in m["checkpoints"])
    stored = [f for f in (workdir / "data/cache/targets/tiny/heldout").glob("*.json")  # the held-out text, cached
              if not f.name.startswith("ppl-")]
    assert len(stored) == 1 and json.loads(stored[0].read_text()) == heldout_documents(
        s.params, s.model, s.tok)
    # a second run writes the same bytes (the first batch's targets and the held-out text now come from the cache)
    before = (workdir / "metrics/sequential/memit-none_counterfact_s0.json").read_bytes()
    sequential("memit", "counterfact")
    assert (workdir / "metrics/sequential/memit-none_counterfact_s0.json").read_bytes() == before


def test_alphaedit_accumulates_the_keys_of_earlier_batches(workdir):
    s, carry = _by_hand("alphaedit")
    earlier = carry[alphaedit.CARRY_KEY]
    assert sorted(earlier) == ["model.layers.1.mlp.down_proj", "model.layers.2.mlp.down_proj"]
    # rebuild both batches' keys on a fresh model: batch 1's after batch 1, batch 2's after batch 2
    from jeepkit.editing.recipe import EditContext, optimise_and_apply

    t = Session("params.yaml", "alphaedit", "counterfact", 0, {})
    ctx = EditContext(t.model, t.tok, t.arch, t.cov.get, t.prefixes, None, None, t.runtime, carry=None)
    want = {m: torch.zeros_like(v) for m, v in earlier.items()}
    for b in range(2):
        part = t.cases[2 * b:2 * b + 2]
        kw = alphaedit.solver_kwargs(t.hparams)
        kw["earlier_keys"] = {m: v.clone() for m, v in want.items()} if b else {}
        optimise_and_apply(ctx, part, alphaedit.objective(t.hparams), alphaedit.regions(t.hparams), t.hparams,
                           label="alphaedit", solver=alphaedit.solve, solver_kwargs=kw, targets_from="memit")
        for module in want:
            K, _ = read_keys_and_cur(t.model, t.tok, t.arch, part, t.prefixes, module, "subject_last",
                                     "model.layers.2", "grouped")
            want[module] = want[module] + K.double() @ K.double().T
    for module in want:
        torch.testing.assert_close(earlier[module], want[module], rtol=1e-6, atol=1e-8)
        assert float(want[module].abs().max()) > 0


def test_prune_reproduces_eqs_4_to_6_on_a_hand_made_matrix():
    torch.manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    W = (U[:, :4] * torch.tensor([3.0, 2.0, 1.0, 0.5], dtype=torch.float64)) @ V.T  # max σ(W) = 3
    dW = (U[:, :4] * torch.tensor([10.0, 5.0, 2.5, 0.1], dtype=torch.float64)) @ V.T
    out = prune(W.float(), dW.float(), alpha=2.0).double()
    want_s = torch.tensor([math.log2(10) - math.log2(3) + 3, math.log2(5) - math.log2(3) + 3, 2.5, 0.1],
                          dtype=torch.float64)
    torch.testing.assert_close(out, (U[:, :4] * want_s) @ V.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.linalg.svdvals(out), want_s, rtol=1e-5, atol=1e-5)
    # nothing above max σ(W): returned unchanged, bit for bit
    small = dW.float() / 10
    assert torch.equal(prune(W.float(), small, alpha=2.0), small)
    with pytest.raises(ConfigError, match="alpha must be > 1"):
        prune(W.float(), dW.float(), alpha=1.0)
    sp = spectrum(W.float(), dW.float())
    assert abs(sp["sigma_max_delta"] - 10) < 1e-4 and abs(sp["sigma_max_w"] - 3) < 1e-5
    assert abs(sp["kappa_original"] - 6) < 1e-4


def test_rect_keeps_exactly_the_top_percent_by_relative_change():
    torch.manual_seed(1)
    W = torch.randn(20, 30)
    dW = torch.randn(20, 30) * 0.1
    out = rect(W, dW, 10)
    kept = out != 0
    assert int(kept.sum()) == 60  # 10 % of 600
    assert torch.equal(out[kept], dW[kept])
    rel = dW.abs() / W.abs()
    assert float(rel[kept].min()) >= float(rel[~kept].max())
    W[0, 0] = 0.0  # an infinite relative change is kept first
    assert rect(W, dW, 0.2)[0, 0] == dW[0, 0]
    with pytest.raises(ConfigError, match="top_percent"):
        rect(W, dW, 0)


def test_rect_trajectory_applies_sparse_batches(workdir):
    m = sequential("memit", "counterfact", regulariser="rect")
    total, _ = load_deltas(workdir / "data/runs/sequential/memit-rect/counterfact/s0/delta_total.safetensors")
    for name, d in total.items():
        # two batches of 25 % each: at most half of the entries changed
        assert 0 < int((d != 0).sum()) <= d.numel() // 2 + 1, name
    assert m["protocol"]["regulariser"] == "rect" and m["protocol"]["rect_top_percent"] == 25


def test_perplexity_equals_a_hand_computation(workdir, llama_tok):
    s = Session("params.yaml", "memit", "counterfact", 0, {})
    docs = heldout_documents(s.params, s.model, s.tok)
    corpus = (workdir / "corpus.txt").read_text().splitlines()
    assert docs == [l.strip() for l in corpus if l.strip()][12:16]  # the lines after the statistics' 12
    got = perplexity(s.model, s.tok, docs, max_length=16, batch=3)
    total, count = 0.0, 0
    with torch.no_grad():
        for doc in docs:
            ids = torch.tensor([s.tok(doc)["input_ids"][:16]])
            logp = torch.log_softmax(s.model(input_ids=ids).logits[0, :-1].double(), -1)
            total -= float(logp.gather(-1, ids[0, 1:, None]).sum())
            count += ids.shape[1] - 1
    assert got["tokens"] == count
    assert abs(got["perplexity"] - math.exp(total / count)) < 1e-4 * math.exp(total / count)


def test_bad_protocols_are_refused_before_anything_is_written(workdir):
    import yaml

    base = yaml.safe_load((workdir / "params.yaml").read_text())
    for over, msg in (({"total": 2, "batch": 4}, "larger than sequential.total"),
                      ({"total": 3, "batch": 2}, "not a multiple of sequential.batch"),
                      ({"total": 40, "batch": 4}, "more than the 8 records")):
        p = json.loads(json.dumps(base))
        p["sequential"].update(over)
        with pytest.raises(ConfigError, match=msg):
            sequential("memit", "counterfact", p, regulariser="none", seed=1)
    with pytest.raises(ConfigError, match="PRUNE restrains the update of a locate-then-edit method"):
        sequential("kne", "counterfact", base, seed=1)
    assert not (workdir / "metrics/sequential/memit-none_counterfact_s1.json").exists()
    assert not (workdir / "data/runs/sequential/kne-none").exists()


def test_prefix_cache_serves_the_sampled_prefixes_and_is_keyed_by_model_and_seed(tiny_llama, tmp_path, monkeypatch):
    from jeepkit.editing import prefixes as pf

    model, tok, _ = tiny_llama
    calls = []
    real = pf.sample_prefixes
    monkeypatch.setattr(pf, "sample_prefixes", lambda *a, **k: calls.append(a[2]) or real(*a, **k))

    def get(ident, seed):
        cache = pf.PrefixCache(tmp_path)
        got = cache.get(model, tok, ident, seed)
        cache.flush()
        return got

    cache = pf.PrefixCache(tmp_path)
    a = cache.get(model, tok, {"id": "tiny"}, 3)
    assert a == real(model, tok, 3) and calls == [3]
    assert not (tmp_path / "prefixes").exists()  # nothing on disk before the stage's outputs are written
    cache.flush()
    assert get({"id": "tiny"}, 3) == a and calls == [3]  # served from disk
    get({"id": "tiny"}, 4)
    get({"id": "other"}, 3)
    assert calls == [3, 4, 3]  # another seed, another model: sampled
    assert len(list((tmp_path / "prefixes").glob("*.json"))) == 3
    key = pf.prefix_key({"id": "tiny"}, 3)
    (tmp_path / "prefixes" / f"{key}.json").write_text("[1, 2")  # a damaged file is sampled again and replaced
    assert get({"id": "tiny"}, 3) == a and calls == [3, 4, 3, 3]
    assert json.loads((tmp_path / "prefixes" / f"{key}.json").read_text()) == a


def test_report_and_ledger_rows_from_the_stage_outputs(workdir, tmp_path):
    from jeepkit import reporting as rp
    from jeepkit.ledger.claims import _sequential

    sequential("memit", "counterfact")
    sequential("alphaedit", "counterfact")
    fr = rp.sequential_frame(workdir / "metrics", "counterfact")
    assert set(fr["method"]) >= {"memit", "alphaedit"} and set(fr["variant"]) >= {"—", "PRUNE"}
    assert sorted(set(fr["edits"])) == [2, 4]
    table = rp.sequential_table(fr)
    assert {"MEMIT", "AlphaEdit"} <= set(table["Method"]) and (table["Edits"] == 4).all()
    free = rp.free_generation_table(workdir / "metrics", "counterfact")
    assert {"ES teacher_forced_prob", "ES free_generation (exact)", "LS free_generation (contains)"} <= set(free.columns)
    assert sorted(set(free["Batches"])) == [1, 2]
    png, pdf = rp.sequential_figure(fr, tmp_path / "seq.png")
    assert png.stat().st_size > 10_000 and pdf.exists()
    entries = {e["id"]: e for e in _sequential(workdir / "metrics", "counterfact")}
    assert entries["seq-alphaedit-above-memit"]["verdict"] in ("reproduced", "contradicted", "undecided")
    assert entries["seq-sigma-grows"]["verdict"] in ("reproduced", "contradicted")
    assert all(e["artifact"].startswith("Sequential editing (beyond the paper") for e in entries.values())
    empty = _sequential(tmp_path, None)
    assert {e["verdict"] for e in empty} == {"not comparable"}


def test_alphaedit_under_rect_reads_its_keys_from_the_sparsified_model(workdir):
    """C_p (Σ KKᵀ of earlier batches) is read from the model the run carries forward: after RECT has sparsified
    the batch's ΔW. The stage equals that order applied by hand, and differs from reading C_p before RECT."""
    from jeepkit.editing.deltas import parameter
    from jeepkit.editing.recipe import EditContext
    from jeepkit.editing.run import edit, finishing

    sequential("alphaedit", "counterfact", regulariser="rect")
    total, _ = load_deltas(workdir / "data/runs/sequential/alphaedit-rect/counterfact/s0/delta_total.safetensors")

    def by_hand(keys_after_rect: bool) -> dict[str, torch.Tensor]:
        s = Session("params.yaml", "alphaedit", "counterfact", 0, {})
        kept = s._snapshot().kept
        ctx = EditContext(s.model, s.tok, s.arch, s.cov.get, s.prefixes, None, None, s.runtime, carry={})
        for b in range(2):
            before = {n: parameter(s.model, n).detach().float().clone() for n in kept}
            res = edit(ctx, "alphaedit", s.cases[2 * b:2 * b + 2], s.hparams, finish=not keys_after_rect)
            with torch.no_grad():
                for name, d in res.deltas.items():
                    key = f"{name}.weight"
                    parameter(s.model, key).copy_(before[key] + rect(before[key], d.float(), 25))
            finishing(ctx, res)
        return {n: parameter(s.model, n).detach().float() - kept[n] for n in kept}

    right, wrong = by_hand(True), by_hand(False)
    for name, d in total.items():
        torch.testing.assert_close(d, right[name], rtol=0, atol=1e-6)
    assert max(float((right[n] - wrong[n]).abs().max()) for n in right) > 1e-5


def test_drift_is_a_paired_interval_that_decides_the_claim(workdir):
    """Each drift checkpoint carries the change in log-perplexity from before editing, equal to the per-document
    sums by hand, with a paired bootstrap interval around it; the ledger's seq-drift claim follows the interval."""
    from jeepkit.drift import change
    from jeepkit.ledger.claims import _sequential
    from jeepkit.ledger.rules import CONTRADICTED, REPRODUCED, UNDECIDED, decide_all

    m = sequential("memit", "counterfact")
    before, last = m["drift_before"], m["checkpoints"][-1]["drift"]
    ch = last["change"]
    want = (sum(last["per_doc"]["nll"]) - sum(before["per_doc"]["nll"])) / sum(before["per_doc"]["tokens"])
    assert ch["log_ppl_change"] == pytest.approx(want, rel=1e-9)
    assert ch["log_ppl_change"] == pytest.approx(math.log(last["perplexity"] / before["perplexity"]), rel=1e-9)
    lo, hi = ch["ci95"]
    assert lo <= ch["log_ppl_change"] <= hi and ch["n_docs"] == 4
    assert change(before, [last], seed=2) == ch  # seeded: the same interval again
    entry = {e["id"]: e for e in _sequential(workdir / "metrics", "counterfact")}["seq-drift"]
    verdicts = []
    for f in sorted((workdir / "metrics" / "sequential").glob("*-none_counterfact_s0.json")):
        lo, hi = json.loads(f.read_text())["checkpoints"][-1]["drift"]["change"]["ci95"]
        verdicts.append(REPRODUCED if lo > 0 else CONTRADICTED if hi < 0 else UNDECIDED)
    assert verdicts and entry["verdict"] == decide_all(verdicts) and "paired bootstrap" in entry["reason"]


def test_paired_interval_sees_a_consistent_shift_that_document_spread_hides():
    """Documents differ a lot in difficulty; an edit that adds 0.05 nats to every token of every document is
    detected by the paired interval (it excludes 0) although the documents' own spread is far larger."""
    from jeepkit.drift import change

    g = torch.Generator().manual_seed(0)
    tokens = [30 + int(x) for x in torch.randint(0, 30, (20,), generator=g)]
    nll = [t * float(2.0 + 3.0 * torch.rand(1, generator=g)) for t in tokens]
    before = {"per_doc": {"nll": nll, "tokens": tokens}}
    after = {"per_doc": {"nll": [x + 0.05 * t for x, t in zip(nll, tokens)], "tokens": tokens}}
    ch = change(before, [after], seed=0)
    assert ch["log_ppl_change"] == pytest.approx(0.05) and ch["ci95"][0] == pytest.approx(0.05)
    assert ch["ci95"][1] == pytest.approx(0.05)
    with pytest.raises(ConfigError, match="different documents"):
        change(before, [{"per_doc": {"nll": nll[:-1], "tokens": tokens[:-1]}}])


def test_python_docs_are_human_prose_in_a_seeded_order():
    from jeepkit.drift import python_docs

    a, b = python_docs(32, 2), python_docs(32, 2)
    assert a == b and len(set(a)) == 32 and python_docs(32, 3) != a
    assert all(len(t) >= 200 and ">>>" not in t and "\n" not in t for t in a)
