"""Covariance statistics (spec §6): C = Σ x xᵀ / count over non-padded tokens, stored with a sidecar."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from jeepkit.errors import ConfigError, InputError
from jeepkit.stats import CorpusSpec, CovarianceStore, accumulate_second_moments, compute_stats, corpus_documents

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# very different lengths, so every batch has padding; one longer than MAX_LEN to exercise truncation
DOCS = [
    "Paris.",
    "The mother tongue of Danielle Darrieux is French.",
    "Tokyo is a city in Japan.",
    "I think you are right. You speak French, I speak English. Danielle Darrieux was born in Paris and spoke "
    "French and English. The capital of France is Paris.",
    "He is a singer.",
    "According to the news, it rained during the war in 1950.",
    "She plays the piano.",
]
MAX_LEN = 24
LAYERS = (1, 2)


@torch.no_grad()
def manual_moments(model, tok, names, docs, max_length):
    """One unpadded forward per document, Σ x xᵀ over all its tokens, divided by the token count."""
    sums = {n: 0 for n in names}
    count = 0
    for d in docs:
        ids = tok(d, truncation=True, max_length=max_length)["input_ids"]
        got = {}
        handles = [model.get_submodule(n).register_forward_hook(
            lambda _m, i, _o, n=n: got.__setitem__(n, i[0][0].double())) for n in names]
        try:
            model(input_ids=torch.tensor([ids]), use_cache=False)
        finally:
            for h in handles:
                h.remove()
        for n in names:
            sums[n] = sums[n] + got[n].T @ got[n]
        count += len(ids)
    return {n: s / count for n, s in sums.items()}, count


def _names(arch):
    return [arch.name("mlp_out", l) for l in LAYERS]


@pytest.mark.parametrize("budget", [4096, 60])
def test_second_moments_match_manual(tiny_model, budget):
    model, tok, arch = tiny_model
    names = _names(arch)
    lengths = [len(tok(d)["input_ids"]) for d in DOCS]
    assert len(set(lengths)) > 3 and max(lengths) > MAX_LEN  # padding and truncation both happen
    got, count = accumulate_second_moments(model, tok, arch, names, DOCS, MAX_LEN, dtype="float64",
                                           token_budget=budget)
    want, n_tok = manual_moments(model, tok, names, DOCS, MAX_LEN)
    assert count == n_tok == sum(min(l, MAX_LEN) for l in lengths)
    assert set(got) == set(names)
    for n in names:
        d_k = model.get_submodule(n).in_features
        assert got[n].shape == (d_k, d_k) and got[n].dtype == torch.float64
        torch.testing.assert_close(got[n], want[n], atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(got[n], got[n].T)
    # the two layers really differ (each hook reads its own module)
    assert not torch.allclose(got[names[0]], got[names[1]])


def test_second_moments_float32_and_bad_dtype(tiny_model):
    model, tok, arch = tiny_model
    names = _names(arch)[:1]
    got, _ = accumulate_second_moments(model, tok, arch, names, DOCS, MAX_LEN)
    assert got[names[0]].dtype == torch.float32
    want, _ = manual_moments(model, tok, names, DOCS, MAX_LEN)
    torch.testing.assert_close(got[names[0]].double(), want[names[0]], atol=1e-5, rtol=1e-3)
    with pytest.raises(ConfigError, match="dtype"):
        accumulate_second_moments(model, tok, arch, names, DOCS, MAX_LEN, dtype="float16")


def _write_corpus(path, docs):
    path.write_text("\n".join(docs[:3]) + "\n\n   \n" + "\n".join(docs[3:]) + "\n")  # blank lines are skipped
    return path


def test_compute_stats_and_store(tiny_model, tmp_path):
    model, tok, arch = tiny_model
    names = _names(arch)
    corpus = _write_corpus(tmp_path / "corpus.txt", DOCS)
    spec = CorpusSpec(corpus=f"file:{corpus}", n_samples=5, max_length=MAX_LEN, dtype="float32", seed=1)
    ident = {"id": f"tiny-{arch.family}", "revision": "abc123", "dtype": "float32"}
    side, _ = compute_stats(model, tok, arch, names, spec, ident, tmp_path / "stats")
    out = tmp_path / "stats" / spec.key(ident)
    sidecar = json.loads((out / "sidecar.json").read_text())
    for s in (side, sidecar):
        assert s["corpus"] == spec.corpus and s["n_samples"] == 5 and s["max_length"] == MAX_LEN
        assert s["dtype"] == "float32" and s["model"] == ident and s["key"] == spec.key(ident)
        assert s["n_documents"] == 5  # n_samples caps the documents read from the file
    assert sidecar["modules"] == sorted(names)
    want, n_tok = manual_moments(model, tok, names, DOCS[:5], MAX_LEN)
    assert sidecar["n_tokens"] == n_tok
    store = CovarianceStore(tmp_path / "stats", spec, ident)
    for n in names:
        path = out / f"{n}.safetensors"
        assert path.exists()
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        assert json.loads(meta["sidecar"])["model"] == ident and json.loads(meta["sidecar"])["count"] == n_tok
        c = store.get(n)
        assert c.dtype == torch.float32 and c.device.type == "cpu"  # as stored; solvers convert on their device
        torch.testing.assert_close(c.double(), want[n], atol=1e-5, rtol=1e-3)
        assert store.get(n) is c  # cached
    # a layer the stats stage did not compute: a ConfigError naming the module
    missing = arch.name("mlp_out", 3)
    with pytest.raises(ConfigError, match=missing.replace(".", r"\.")):
        store.get(missing)
    # statistics of another spec or another model are not silently reused
    for other_spec, other_ident in ((CorpusSpec(spec.corpus, 6, MAX_LEN), ident),
                                    (spec, {**ident, "revision": "def456"})):
        with pytest.raises(ConfigError, match="missing covariance"):
            CovarianceStore(tmp_path / "stats", other_spec, other_ident).get(names[0])


def test_store_rejects_non_finite(tiny_model, tmp_path):
    from safetensors.torch import save_file

    _, _, arch = tiny_model
    spec, ident = CorpusSpec("self", 2, 8), {"id": "x"}
    name = arch.name("mlp_out", 1)
    d = tmp_path / spec.key(ident)
    d.mkdir()
    save_file({"mom2": torch.full((4, 4), float("nan"))}, str(d / f"{name}.safetensors"))
    with pytest.raises(InputError, match="non-finite"):
        CovarianceStore(tmp_path, spec, ident).get(name)


def test_missing_corpus_file(tiny_model, tmp_path):
    model, tok, arch = tiny_model
    spec = CorpusSpec(corpus=f"file:{tmp_path / 'nope.txt'}", n_samples=3, max_length=MAX_LEN)
    with pytest.raises(InputError, match="nope.txt"):
        compute_stats(model, tok, arch, _names(arch), spec, {"id": "x"}, tmp_path / "stats")
    assert not (tmp_path / "stats").exists() or not any((tmp_path / "stats").rglob("*.safetensors"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(InputError, match="no non-empty"):
        corpus_documents(CorpusSpec(f"file:{empty}", 3, MAX_LEN), model, tok)
    with pytest.raises(ConfigError, match="unknown stats corpus"):
        corpus_documents(CorpusSpec("wikipedia", 3, MAX_LEN), model, tok)


def test_self_corpus_deterministic(tiny_model):
    model, tok, _ = tiny_model
    spec = CorpusSpec("self", n_samples=3, max_length=12, seed=5)
    a = corpus_documents(spec, model, tok)
    b = corpus_documents(spec, model, tok)
    assert a == b
    assert len(a) == 3 and all(isinstance(d, str) and d.strip() for d in a)
    assert all(len(tok(d, add_special_tokens=False)["input_ids"]) > 4 for d in a)
    c = corpus_documents(CorpusSpec("self", n_samples=3, max_length=12, seed=6), model, tok)
    assert c != a
    # the key changes with everything that changes the statistics
    ident = {"id": "x"}
    keys = {spec.key(ident), CorpusSpec("self", 3, 12, seed=6).key(ident), CorpusSpec("self", 4, 12, seed=5).key(ident),
            CorpusSpec("self", 3, 13, seed=5).key(ident), CorpusSpec("self", 3, 12, "float64", 5).key(ident),
            spec.key({"id": "y"})}
    assert len(keys) == 6


def test_docs_are_tokenised_with_truncation_only(tiny_model):
    """Every token of every (truncated) document counts once, whatever the batching."""
    model, tok, arch = tiny_model
    names = _names(arch)[:1]
    _, c1 = accumulate_second_moments(model, tok, arch, names, DOCS, MAX_LEN, token_budget=10_000)
    _, c2 = accumulate_second_moments(model, tok, arch, names, DOCS, MAX_LEN, token_budget=30)
    assert c1 == c2 == sum(min(len(tok(d)["input_ids"]), MAX_LEN) for d in DOCS)
