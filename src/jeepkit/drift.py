"""Held-out perplexity drift: perplexity of a model on held-out human-written text, before and after editing.

It measures how far the edited language model moved on text it neither generated nor was edited on — a proxy
for general-capability loss, not a test of knowledge or reasoning. The change in log-perplexity comes with a
paired percentile-bootstrap interval over documents (the same documents before and after).

`drift.corpus` picks the text. `python_docs` (the default): paragraphs of the Python reference documentation
that every CPython ships (`pydoc_data.topics`), human-written English available offline; its sha256 is part
of the cache key. `stats`: the documents of the statistics corpus that follow the `stats.n_samples` it read (a
file or WikiText; for `stats.corpus: self`, text sampled from the unedited model with `drift.seed` — on that
text the unedited model is near-optimal, so the change estimates a divergence that rises for any edit).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .device import input_device
from .errors import ConfigError
from .io import stable_hash
from .lineage import fingerprint
from .params import need
from .stats import corpus_documents, corpus_spec


CORPORA = ("python_docs", "stats")
N_BOOT = 2000


def drift_settings(params: dict[str, Any]) -> dict[str, Any]:
    d = need(params, "drift")
    corpus = str(d.get("corpus", "stats"))
    if corpus not in CORPORA:
        raise ConfigError(f"params: drift.corpus: expected one of {', '.join(CORPORA)}, got {corpus!r}")
    return {"n_docs": int(d["n_docs"]), "max_length": int(d["max_length"]), "seed": int(d.get("seed", 2)),
            "batch": int(d.get("batch_size", 16)), "corpus": corpus}


def python_docs(n: int, seed: int) -> list[str]:
    """`n` prose paragraphs (200+ characters, no code blocks or lists) of the Python documentation this
    interpreter ships, in a seeded order."""
    import random
    import re

    from pydoc_data.topics import topics

    paras = []
    for key in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[key]):
            lines = block.split("\n")
            text = " ".join(l.strip() for l in lines).strip()
            if (not any(l.startswith(" ") for l in lines) and len(text) >= 200 and ">>>" not in text
                    and not text.startswith(("*", "-", "="))):
                paras.append(text)
    if len(paras) < n:
        raise ConfigError(f"drift.n_docs: the Python documentation has {len(paras)} prose paragraphs, not {n}")
    random.Random(seed).shuffle(paras)
    return paras[:n]


def heldout_key(params: dict[str, Any], model_identity: dict[str, Any]) -> str:
    """Everything the held-out text depends on: its corpus (the Python documentation's text hash; or the statistics
    corpus's own key: corpus, file hash, sizes, seed, model, code), the drift settings that pick the documents,
    and this module's code."""
    d = drift_settings(params)
    source = (stable_hash(python_docs(d["n_docs"], d["seed"])) if d["corpus"] == "python_docs"
              else corpus_spec(params).key(model_identity))
    return stable_hash({"corpus": source, "kind": d["corpus"], "n_docs": d["n_docs"], "max_length": d["max_length"],
                        "seed": d["seed"], "code": fingerprint(["jeepkit.drift"])}, n=24)


def cached_heldout(params: dict[str, Any], model: nn.Module, tok, root: str | Path | None,
                   model_identity: dict[str, Any]) -> tuple[list[str], Path | None]:
    """(documents, where to store them once the stage has written its outputs, or None when read from there).

    Sampling the model-sampled held-out text costs a stage ~10 s on two CPU cores; every sequential stage
    of a model needs the same documents."""
    if root is None:
        return heldout_documents(params, model, tok), None
    path = Path(root) / "heldout" / f"{heldout_key(params, model_identity)}.json"
    if path.exists():
        try:
            docs = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            docs = None
        if isinstance(docs, list) and docs and all(isinstance(x, str) for x in docs):
            return docs, None
    return heldout_documents(params, model, tok), path


def perplexity_key(params: dict[str, Any], model_identity: dict[str, Any]) -> str:
    """Everything the unedited model's held-out perplexity depends on: the held-out text, the model (with the
    device kind the caller puts in its identity), the settings that cut and batch the text, torch and
    transformers (their kernels and model code) and this module's code."""
    import transformers

    d = drift_settings(params)
    return stable_hash({"heldout": heldout_key(params, model_identity), "model": model_identity,
                        "max_length": d["max_length"], "batch": d["batch"], "torch": torch.__version__,
                        "transformers": transformers.__version__, "code": fingerprint(["jeepkit.drift"])}, n=24)


def cached_unedited_perplexity(params: dict[str, Any], model: nn.Module, tok, docs: Sequence[str],
                               root: str | Path | None, model_identity: dict[str, Any]
                               ) -> tuple[dict[str, Any], Path | None]:
    """(the unedited model's perplexity on `docs`, where to store it once the stage has written its outputs, or
    None when read from there).

    Every edit stage of a model scores the same unedited model on the same text (~4 s on two CPU cores, ~37
    stages in the embedded pipeline). The caller must pass the model before any edit."""
    d = drift_settings(params)
    path = None if root is None else Path(root) / "heldout" / f"ppl-{perplexity_key(params, model_identity)}.json"
    if path is not None and path.exists():
        try:
            got = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            got = None
        if isinstance(got, dict) and set(got) == {"perplexity", "nll", "tokens", "docs", "per_doc"}:
            return got, None
    return perplexity(model, tok, docs, max_length=d["max_length"], batch=d["batch"]), path


def heldout_documents(params: dict[str, Any], model: nn.Module, tok) -> list[str]:
    """`drift.n_docs` documents of `drift.corpus` (of the statistics corpus: ones the statistics did not use)."""
    d = drift_settings(params)
    if d["corpus"] == "python_docs":
        return python_docs(d["n_docs"], d["seed"])
    spec = corpus_spec(params)
    if spec.corpus == "self":
        if d["seed"] == spec.seed:
            raise ConfigError(f"params: drift.seed: must differ from stats.seed ({spec.seed}), or the held-out "
                              "text would be the statistics' own corpus")
        return corpus_documents(replace(spec, n_samples=d["n_docs"], max_length=d["max_length"], seed=d["seed"]),
                                model, tok)
    docs = corpus_documents(replace(spec, n_samples=spec.n_samples + d["n_docs"]), model, tok)[spec.n_samples:]
    if len(docs) < d["n_docs"]:
        raise ConfigError(f"the statistics corpus {spec.corpus} has {len(docs)} documents after the "
                          f"{spec.n_samples} the statistics use; drift.n_docs asks for {d['n_docs']}")
    return docs


@torch.no_grad()
def perplexity(model: nn.Module, tok, docs: Sequence[str], *, max_length: int, batch: int = 16) -> dict[str, Any]:
    """exp of the mean next-token negative log-likelihood over every predicted token of `docs`, and per document
    its NLL sum and token count (`per_doc`, for the paired interval of `change`).

    Each document is cut to `max_length` tokens; batches are right-padded (positions of real tokens are
    unaffected) and padded positions are not scored. Log-probabilities in float32, their sums in float64.
    """
    dev = input_device(model)
    seqs = [tok(doc, add_special_tokens=True)["input_ids"][:max_length] for doc in docs]
    seqs = [s for s in seqs if len(s) >= 2]
    if not seqs:
        raise ConfigError("drift: no held-out document has two or more tokens")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    total, count = 0.0, 0
    doc_nll: list[float] = []
    doc_tokens: list[int] = []
    for b in range(0, len(seqs), batch):
        part = seqs[b:b + batch]
        width = max(len(s) for s in part)
        ids = torch.full((len(part), width), pad, dtype=torch.long)
        mask = torch.zeros((len(part), width), dtype=torch.long)
        for i, s in enumerate(part):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        nll = -logp.gather(-1, ids[:, 1:].to(logp.device).unsqueeze(-1)).squeeze(-1).double()
        scored = mask[:, 1:].to(nll.device).bool()
        doc_nll += (nll * scored).sum(1).cpu().tolist()
        doc_tokens += scored.sum(1).cpu().tolist()
    total, count = math.fsum(doc_nll), sum(doc_tokens)
    return {"perplexity": math.exp(total / count), "nll": total / count, "tokens": count, "docs": len(seqs),
            "per_doc": {"nll": doc_nll, "tokens": doc_tokens}}


def change(before: dict[str, Any], after: Sequence[dict[str, Any]], *, seed: int = 0, n_boot: int = N_BOOT,
           confidence: float = 0.95) -> dict[str, Any]:
    """Held-out perplexity drift: the change in log-perplexity (mean NLL per token) from `before` to the mean of
    `after` (one perplexity per independently edited chunk, per document their mean NLL sum), with its paired
    percentile-bootstrap interval over documents (the same documents resampled on both sides)."""
    import numpy as np

    b = np.asarray(before["per_doc"]["nll"], dtype=np.float64)
    tok = np.asarray(before["per_doc"]["tokens"], dtype=np.float64)
    a = np.mean([np.asarray(x["per_doc"]["nll"], dtype=np.float64) for x in after], axis=0)
    if a.shape != b.shape or any(x["per_doc"]["tokens"] != before["per_doc"]["tokens"] for x in after):
        raise ConfigError("drift: the perplexities before and after were taken on different documents")
    delta = float((a.sum() - b.sum()) / tok.sum())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(b), size=(n_boot, len(b)))
    boot = (a[idx].sum(1) - b[idx].sum(1)) / tok[idx].sum(1)
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"log_ppl_change": delta, "ci95": [float(lo), float(hi)], "perplexity_ratio": math.exp(delta),
            "n_docs": int(len(b)), "interval": f"paired percentile bootstrap over documents ({n_boot} resamples, "
                                               f"seed {seed}), confidence {confidence}"}
