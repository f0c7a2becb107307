"""The logit-lens probe (spec §8): positions, the lens and its variants against hand computations on
tiny GPT-J / LLaMA models, word-set masses, the layer recommendation, the stage, and the notebooks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from jeepkit.data.schema import EditCase, LocalityPrompt, save_cases
from jeepkit.probe import (BASE_QUANTITIES, POSITIONS, aggregate, configured_layers, format_recommendation,
                           load_probe, probe_records, recommend_layers, save_probe)
from jeepkit.runners.probe import run_probe_stage
from jeepkit.wordsets import EXPLICIT_SETS, SET_NAMES, STOPWORDS, build_wordsets, stopword_tokens

pytestmark = pytest.mark.usefixtures("torch_one_thread")

ROOT = Path(__file__).resolve().parents[1]


def _case(i, prompt, subject, true, new, rel, loc=()):
    return EditCase(case_id=str(i), kind="counterfact", prompt=prompt, subject=subject, target_new=new,
                    target_true=true, relation_id=rel, paraphrases=(),
                    locality=tuple(LocalityPrompt(p, a) for p, a in loc))


# Subjects at the start, middle and end of prompts, of different lengths (so right padding matters),
# multi-token subjects and answers, and a subject shared by two relations (for the factual set).
CASES = [
    _case(0, "The mother tongue of {} is", "Danielle Darrieux", "French", "English", "P103"),
    _case(1, "{} is a city in", "Tokyo", "Japan", "Italy", "P17"),
    _case(2, "The capital of {} is", "Italy", "Rome", "Paris", "P36",
          loc=[("The capital of France is", "Paris"), ("The capital of Japan is", "Tokyo")]),
    _case(3, "The official language of {} is", "Italy", "Italian", "Spanish", "P37"),
    _case(4, "{}'s author is", "1984", "George Orwell", "Paris", "P50"),
    _case(5, "The capital of {} is", "France", "Paris", "Tokyo", "P36"),
]


def _hand_positions(tok, family, case):
    """Positions and answer tokens by a different route than jeepkit.tokens (per-family rules)."""
    head, tail = case.prompt.split("{}")
    prompt = head + case.subject + tail
    subject_last = len(tok(head + case.subject)["input_ids"]) - 1
    prompt_ids = tok(prompt)["input_ids"]
    if family == "gptj":  # byte-level BPE: the answer's first token is that of " answer"
        first = lambda a: tok(" " + a, add_special_tokens=False)["input_ids"][0]  # noqa: E731
    else:  # SentencePiece-like: "answer" alone gets the "▁" word start
        first = lambda a: tok(a, add_special_tokens=False)["input_ids"][0]  # noqa: E731
    return prompt_ids, subject_last, len(prompt_ids) - 1, first(case.target_true), first(case.target_new)


@torch.no_grad()
def _hand_states(model, arch, ids):
    """Residual states (n_layers + 1, T, d) from hooks registered here: embedding, then each layer's output."""
    got = {}
    mods = [model.get_submodule(arch.embed)] + [model.get_submodule(arch.name("layer", i)) for i in range(arch.n_layers)]
    handles = [m.register_forward_hook(lambda _m, _i, o, k=k: got.__setitem__(k, (o[0] if isinstance(o, tuple) else o)[0]))
               for k, m in enumerate(mods)]
    try:
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
    finally:
        for h in handles:
            h.remove()
    return torch.stack([got[k] for k in range(len(mods))]), logits


def _hand_lens(model, arch, h, token, norm=False):
    """Rank (strictly larger logits) and probability of `token` under h @ W^T (+ b), optionally normed first."""
    head = model.get_submodule(arch.lm_head)
    if norm:
        h = model.get_submodule(arch.final_norm)(h)
    logits = (h @ head.weight.T).double()
    if head.bias is not None:
        logits = logits + head.bias.double()
    return int((logits > logits[token]).sum()), float(torch.softmax(logits, -1)[token]), logits


@pytest.fixture(scope="module", params=["gptj", "llama"])
def fam(request, tiny_gptj, tiny_llama):
    model, tok, arch = {"gptj": tiny_gptj, "llama": tiny_llama}[request.param]
    return request.param, model, tok, arch


@pytest.fixture(scope="module")
def probed(fam):
    family, model, tok, arch = fam
    ws = build_wordsets(tok, CASES)
    arrays = probe_records(model, tok, arch, CASES, wordsets=ws, batch_size=4, progress=False)
    return family, model, tok, arch, ws, arrays


def test_shapes_and_layer_axis(probed):
    _, _, _, arch, _, a = probed
    for q in BASE_QUANTITIES:
        assert a[q].shape == (len(CASES), arch.n_layers + 1, 2)
    assert (a["rank_orig"] >= 0).all() and (a["prob_orig"] > 0).all() and (a["prob_orig"] <= 1).all()


def test_positions_and_no_norm_lens_match_hand_computation(probed):
    family, model, tok, arch, _, a = probed
    if family == "gptj":
        assert model.get_submodule(arch.lm_head).bias is not None  # the bias path is exercised
    for r, case in enumerate(CASES):
        ids, subj, last, t_orig, t_new = _hand_positions(tok, family, case)
        assert (a["subject_last"][r], a["prompt_last"][r]) == (subj, last), case.case_id
        assert (a["token_orig"][r], a["token_target"][r]) == (t_orig, t_new), case.case_id
        assert subj < last
        states, _ = _hand_states(model, arch, ids)
        for layer in range(arch.n_layers + 1):
            for p, pos in enumerate((subj, last)):
                for tok_id, rk, pr in ((t_orig, "rank_orig", "prob_orig"), (t_new, "rank_target", "prob_target")):
                    rank, prob, _ = _hand_lens(model, arch, states[layer, pos], tok_id)
                    assert a[rk][r, layer, p] == rank, (case.case_id, layer, POSITIONS[p], rk)
                    assert a[pr][r, layer, p] == pytest.approx(prob, rel=1e-4, abs=1e-9)


def test_embedding_entry_is_the_embedding_output(probed):
    family, model, tok, arch, _, a = probed
    emb = model.get_submodule(arch.embed).weight
    for r, case in enumerate(CASES):
        ids, subj, last, t_orig, _ = _hand_positions(tok, family, case)
        for p, pos in enumerate((subj, last)):
            rank, prob, _ = _hand_lens(model, arch, emb[ids[pos]], t_orig)
            assert a["rank_orig"][r, 0, p] == rank
            assert a["prob_orig"][r, 0, p] == pytest.approx(prob, rel=1e-4, abs=1e-9)


def test_apply_final_norm_variant(fam):
    family, model, tok, arch = fam
    normed = probe_records(model, tok, arch, CASES, apply_final_norm=True, batch_size=3, progress=False)
    plain = probe_records(model, tok, arch, CASES, apply_final_norm=False, batch_size=3, progress=False)
    assert not np.allclose(normed["prob_orig"], plain["prob_orig"])  # the switch matters
    for r, case in enumerate(CASES):
        ids, subj, last, t_orig, _ = _hand_positions(tok, family, case)
        states, model_logits = _hand_states(model, arch, ids)
        for layer in (0, 1, arch.n_layers):
            rank, prob, _ = _hand_lens(model, arch, states[layer, subj], t_orig, norm=True)
            assert normed["rank_orig"][r, layer, 0] == rank
            assert normed["prob_orig"][r, layer, 0] == pytest.approx(prob, rel=1e-4, abs=1e-9)
        # at the last layer the normed lens is the model's own prediction
        full = torch.softmax(model_logits[last].double(), -1)[t_orig]
        assert normed["prob_orig"][r, arch.n_layers, 1] == pytest.approx(float(full), rel=1e-4)


def test_padding_does_not_change_results(fam):
    _, model, tok, arch = fam
    one = probe_records(model, tok, arch, CASES, batch_size=1, progress=False)
    many = probe_records(model, tok, arch, CASES, batch_size=len(CASES), progress=False)
    np.testing.assert_array_equal(one["rank_orig"], many["rank_orig"])
    np.testing.assert_allclose(one["prob_target"], many["prob_target"], rtol=1e-4, atol=1e-9)


def test_wordsets_partition_and_masses(probed):
    family, model, tok, arch, ws, a = probed
    vocab = model.get_submodule(arch.lm_head).weight.shape[0]
    specials = set(tok.all_special_ids)
    for r, case in enumerate(CASES):
        sets = [set(ws.sets[s][r]) for s in EXPLICIT_SETS]
        for i in range(len(sets)):
            assert ws.orig[r] not in sets[i] and not (sets[i] & specials)
            for j in range(i + 1, len(sets)):
                assert not sets[i] & sets[j]
        assert ws.target[r] not in sets[1] | sets[2]
    total = a["prob_orig"] + sum(a[f"mass_{s}"] for s in EXPLICIT_SETS)
    assert (total <= 1 + 1e-9).all()
    np.testing.assert_allclose(a["mass_unrelated"], 1 - total, atol=1e-12)
    for s in SET_NAMES:
        assert (a[f"mass_{s}"] >= 0).all()
    # by hand for one record, one layer, one position: masses and the complement's mean rank
    ids, subj, last, t_orig, _ = _hand_positions(tok, family, CASES[2])
    states, _ = _hand_states(model, arch, ids)
    _, _, logits = _hand_lens(model, arch, states[2, last], t_orig)
    probs = torch.softmax(logits, -1)
    ranks = torch.tensor([int((logits > logits[t]).sum()) for t in range(vocab)], dtype=torch.float64)
    taken = {t_orig}
    for s in EXPLICIT_SETS:
        members = ws.sets[s][2]
        taken |= set(members)
        if members:
            assert a[f"mass_{s}"][2, 2, 1] == pytest.approx(float(probs[members].sum()), rel=1e-6)
            assert a[f"meanrank_{s}"][2, 2, 1] == pytest.approx(float(ranks[members].mean()))
    rest = [t for t in range(vocab) if t not in taken]
    assert a["size_unrelated"][2] == len(rest)
    assert a["mass_unrelated"][2, 2, 1] == pytest.approx(float(probs[rest].sum()), rel=1e-6)
    assert a["meanrank_unrelated"][2, 2, 1] == pytest.approx(float(ranks[rest].mean()))


def test_substitute_related_sets(fam):
    family, model, tok, arch = fam
    ws = build_wordsets(tok, CASES)
    first = lambda w: tiny_first(tok, family, w)  # noqa: E731
    # Italy/capital: another true fact about Italy is "Italian" -> factual; Italy's own name -> non-factual
    assert first("Italian") in ws.sets["factual"][2]
    assert first("Italy") in ws.sets["nonfactual"][2]
    # the capital of France: Rome (another capital) is non-factual; Tokyo is the target -> excluded
    assert first("Rome") in ws.sets["nonfactual"][5]
    assert first("Tokyo") not in ws.sets["nonfactual"][5]
    # stopwords are the project's list: "the", "The" and "," present, the answer token never
    assert {first("the"), first("The")} <= set(ws.sets["stop"][0])
    assert len(stopword_tokens(tok)) > 20 and "the" in STOPWORDS and "," in STOPWORDS
    assert not ws.sets["factual"][0]  # Danielle Darrieux has a single fact here: empty set, NaN mean rank
    a = probe_records(model, tok, arch, CASES[:1], wordsets=build_wordsets(tok, CASES[:1]), progress=False)
    assert np.isnan(a["meanrank_factual"]).all() and (a["mass_factual"] == 0).all()


def tiny_first(tok, family, word):
    return tok((" " + word) if family == "gptj" else word, add_special_tokens=False)["input_ids"][0]


# ------------------------------------------------------------------ recommendation and aggregation

def synthetic_arrays(n=40, n_layers=12, seed=0, wordsets=True):
    """Planted regions: the original answer's rank at subject_last falls over decoder layers 3-5; at the
    prediction position its probability rises at layers 9-10 while the target's stays flat; at layers 6-7
    both rise together (promotes the target too: must not be chosen)."""
    rng = np.random.default_rng(seed)
    e = n_layers + 1
    rank = np.full((n, e, 2), 1000.0)
    rank[:, 4:, 0] = 700
    rank[:, 5:, 0] = 400
    rank[:, 6:, 0] = 100
    rank[:, :, 1] = np.linspace(900, 50, e)
    rank += rng.normal(0, 10, rank.shape)
    po = np.full((n, e, 2), 0.01)
    pt = np.full((n, e, 2), 0.01)
    po[:, 7:, 1] += 0.05
    po[:, 8:, 1] += 0.05
    pt[:, 7:, 1] += 0.05
    pt[:, 8:, 1] += 0.05
    po[:, 10:, 1] += 0.08
    po[:, 11:, 1] += 0.08
    po = np.clip(po + rng.normal(0, 0.002, po.shape), 1e-6, 1)
    pt = np.clip(pt + rng.normal(0, 0.002, pt.shape), 1e-6, 1)
    a = {"rank_orig": np.maximum(rank, 0).astype(np.int64), "rank_target": np.full((n, e, 2), 2000, np.int64),
         "prob_orig": po, "prob_target": pt, "token_orig": np.arange(n), "token_target": np.arange(n) + 1,
         "subject_last": np.full(n, 3), "prompt_last": np.full(n, 6), "n_tokens": np.full(n, 7)}
    if wordsets:
        stop = np.clip(np.linspace(0.4, 0.2, e)[None, :, None] + rng.normal(0, 0.02, (n, e, 2)), 0, None)
        fact = np.clip(np.linspace(0.0, 0.1, e)[None, :, None] + rng.normal(0, 0.01, (n, e, 2)), 0, None)
        non = np.clip(np.linspace(0.05, 0.08, e)[None, :, None] + rng.normal(0, 0.01, (n, e, 2)), 0, None)
        a.update(mass_stop=stop, mass_factual=fact, mass_nonfactual=non,
                 mass_unrelated=np.clip(1 - po - stop - fact - non, 0, None))
        for s in SET_NAMES:
            a[f"meanrank_{s}"] = rng.uniform(100, 1000, (n, e, 2))
            a[f"size_{s}"] = np.full(n, 10)
    return a


def test_recommend_layers_finds_planted_regions():
    rec = recommend_layers(synthetic_arrays(), n_low=3, n_high=2)
    assert rec["layers_low"] == [3, 4, 5]
    assert rec["layers_high"] == [9, 10]
    assert rec["high_placement"] == "after_low"
    assert len(rec["per_layer"]["rank_drop_subject_last"]) == 12
    assert "subject's last token" in rec["rule"]


def test_recommend_layers_falls_back_and_validates():
    a = synthetic_arrays(n_layers=12)
    rec = recommend_layers(a, n_low=9, n_high=3)  # low covers 0..8 or later: high must still not overlap
    assert not set(rec["layers_low"]) & set(rec["layers_high"])
    with pytest.raises(Exception):
        recommend_layers(a, n_low=10, n_high=3)


def test_configured_layers_absent_and_present():
    params = {"model": {"key": "m"}, "hparams": {"m": {"memit": {"layers": [1, 2]}}}}
    conf = configured_layers(params)
    assert conf["jeep.layers_low"] is None and conf["memit.layers"] == [1, 2]
    text = format_recommendation(recommend_layers(synthetic_arrays(), 3, 2), conf)
    assert "hparams.m.jeep.layers_low: not set" in text
    params["hparams"]["m"]["jeep"] = {"layers_low": [3, 4], "layers_high": [9]}
    assert "jeep.layers_high: [9]" in format_recommendation(recommend_layers(synthetic_arrays(), 3, 2),
                                                            configured_layers(params))
    assert configured_layers({})["jeep.layers_low"] is None


def test_aggregate_means_and_bands():
    a = synthetic_arrays(n=50)
    df = aggregate(a)
    row = df[(df.quantity == "prob_orig") & (df.position == "prediction") & (df.layer == 12)].iloc[0]
    x = a["prob_orig"][:, 12, 1]
    assert row["mean"] == pytest.approx(x.mean())
    sem = x.std(ddof=1) / math.sqrt(len(x))
    assert row["hi"] - row["mean"] == pytest.approx(1.96 * sem)
    assert row["mean"] - row["lo"] == pytest.approx(1.96 * sem)
    assert set(df.position) == set(POSITIONS) and row["n"] == 50
    b = {"meanrank_factual": np.array([[[np.nan, 1.0]], [[2.0, 3.0]]])}  # NaN (empty set) left out
    d = aggregate(b)
    assert d[d.position == "subject_last"].iloc[0]["mean"] == 2.0
    assert d[d.position == "subject_last"].iloc[0]["n"] == 1


def test_save_and_load_roundtrip(tmp_path):
    a = synthetic_arrays(n=5)
    save_probe(tmp_path, a, {"case_ids": list("abcde")})
    b, meta = load_probe(tmp_path)
    assert set(a) == set(b) and meta["case_ids"] == list("abcde")
    np.testing.assert_array_equal(a["rank_orig"], b["rank_orig"])
    with np.load(tmp_path / "arrays.npz", allow_pickle=False) as z:  # no object arrays
        assert all(z[k].dtype != object for k in z.files)


# ------------------------------------------------------------------ the stage, end to end on a saved tiny model

def test_stage_writes_arrays_and_prints_recommendation(tmp_path, monkeypatch, capsys, tiny_llama):
    model, tok, arch = tiny_llama
    mdir = tmp_path / "data" / "models" / "tiny"
    model.save_pretrained(mdir)
    tok.save_pretrained(mdir)
    (mdir / "model_card.json").write_text(json.dumps({"source": "embedded", "dtype": "float32", "id": "tiny"}))
    save_cases(tmp_path / "data" / "datasets" / "counterfact.jsonl", CASES)
    (tmp_path / "params.yaml").write_text(
        "model: {key: tiny}\nhparams: {tiny: {memit: {layers: [0, 1]}}}\n"
        "probe: {n_records: 5, batch_size: 2, n_low: 2, n_high: 1}\n")
    monkeypatch.chdir(tmp_path)
    side = run_probe_stage("counterfact", "params.yaml")
    out = tmp_path / "data" / "probe" / "tiny" / "counterfact"
    arrays, meta = load_probe(out)
    assert arrays["prob_orig"].shape == (5, arch.n_layers + 1, 2)
    assert meta["case_ids"] == [c.case_id for c in CASES[:5]] and meta["apply_final_norm"] is False
    assert meta["recommendation"] == side["recommendation"] and len(meta["recommendation"]["layers_low"]) == 2
    assert meta["wordsets"]["factual_n_empty"] >= 1
    printed = capsys.readouterr().out
    assert "recommended low layers" in printed and "jeep.layers_low: not set" in printed
    assert "memit.layers: [0, 1]" in printed

    # the pipeline's second lens: the override wins over probe.apply_final_norm, into its own directory
    other = tmp_path / "data" / "probe" / "tiny" / "counterfact-final_norm"
    run_probe_stage("counterfact", "params.yaml", other, apply_final_norm=True)
    normed, meta2 = load_probe(other)
    assert meta2["apply_final_norm"] is True and "final_norm" in meta2["lens"]
    assert not np.allclose(normed["prob_orig"], arrays["prob_orig"])
    np.testing.assert_array_equal(normed["token_orig"], arrays["token_orig"])
    # same numbers as calling the library directly
    ref = probe_records(model, tok, arch, CASES[:5], wordsets=build_wordsets(tok, CASES[:5], reference=CASES),
                        progress=False)
    np.testing.assert_array_equal(ref["rank_orig"], arrays["rank_orig"])


# ------------------------------------------------------------------ notebooks

def _kernel_or_skip():
    pytest.importorskip("papermill")
    from jupyter_client.kernelspec import find_kernel_specs

    if "python3" not in find_kernel_specs():
        pytest.skip("no 'python3' Jupyter kernel installed")


@pytest.mark.parametrize("name, figure", [("fig2_probe", "fig2_probe"), ("fig5_wordsets", "fig5_wordsets")])
def test_notebook_runs_on_synthetic_arrays(tmp_path, name, figure):
    _kernel_or_skip()
    import papermill as pm

    probe_dir = tmp_path / "probe"
    save_probe(probe_dir, synthetic_arrays(n=20), {
        "dataset": "synthetic", "model": {"key": "synthetic"}, "family": "llama", "apply_final_norm": False,
        "settings": {"n_low": 3, "n_high": 2},
        "configured_layers": {"model_key": "synthetic", "jeep.layers_low": [3, 4, 5], "jeep.layers_high": None,
                              "memit.layers": None},
        "wordsets": {"definitions": {"factual": "substitute"}, "factual_mean_size": 1.0, "factual_n_empty": 3}})
    figures = tmp_path / "figures"
    pm.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(tmp_path / f"{name}.out.ipynb"),
                        parameters={"probe_dir": str(probe_dir), "figures_dir": str(figures)},
                        kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    for ext in ("png", "pdf"):
        f = figures / f"{figure}.{ext}"
        assert f.exists() and f.stat().st_size > 1000


def test_probe_figures_carry_no_creation_date(tmp_path):
    """The probe's figures go through the shared writer: a re-run of the stage gives the same PDF bytes."""
    from jeepkit.probe import plot_fig2, plot_fig5

    arrays = synthetic_arrays(n=10)
    for plot, name in ((plot_fig2, "fig2"), (plot_fig5, "fig5")):
        png, pdf = plot(arrays, tmp_path / f"{name}.png")
        assert png.suffix == ".png" and png.stat().st_size > 1000
        assert b"CreationDate" not in pdf.read_bytes()


def test_strict_ranks_and_rank_sum_with_ties():
    from jeepkit.probe import _rank_sum, _strict_ranks

    logits = torch.tensor([[3.0, 1.0, 3.0, 2.0, 1.0, 1.0]], dtype=torch.float64)
    hand = [int((logits[0] > logits[0, t]).sum()) for t in range(6)]  # [0, 3, 0, 2, 3, 3]
    srt = torch.sort(logits, -1).values
    assert _strict_ranks(logits, srt, list(range(6)))[0].tolist() == hand
    assert _strict_ranks(logits, None, list(range(6)))[0].tolist() == hand
    assert float(_rank_sum(srt)[0]) == sum(hand)



def test_layers_note_names_the_regions_where_configured_and_recommended_differ():
    from jeepkit.probe import layers_note

    rec = {"layers_low": [4, 5, 6], "layers_high": [20, 21]}
    same = {"jeep.layers_low": [6, 5, 4], "jeep.layers_high": [20, 21]}
    assert layers_note(rec, same) == "" and layers_note(rec, None) == "" and layers_note(None, same) == ""
    note = layers_note(rec, {**same, "jeep.layers_high": [27, 28]})
    assert note.startswith("The high layers the edits use") and "low" not in note.split("differ")[0]
    assert layers_note(rec, {"jeep.layers_low": [1], "jeep.layers_high": [2]}).startswith("The low and high layers")
