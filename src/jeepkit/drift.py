"""General-capability drift: perplexity of a model on held-out text, before and after editing.

The held-out text is never the text the covariance statistics were computed from: for a model-sampled
corpus (`stats.corpus: self`) it is sampled with its own seed (`drift.seed`, which must differ from
`stats.seed`); for a file or WikiText it is the documents that follow the `stats.n_samples` the
statistics read.
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


def drift_settings(params: dict[str, Any]) -> dict[str, int]:
    d = need(params, "drift")
    return {"n_docs": int(d["n_docs"]), "max_length": int(d["max_length"]), "seed": int(d.get("seed", 2)),
            "batch": int(d.get("batch_size", 16))}


def heldout_key(params: dict[str, Any], model_identity: dict[str, Any]) -> str:
    """Everything the held-out text depends on: the statistics corpus (its own key: corpus, file hash, sizes,
    seed, model, code), the drift settings that pick the documents, and this module's code."""
    d = drift_settings(params)
    return stable_hash({"corpus": corpus_spec(params).key(model_identity), "n_docs": d["n_docs"],
                        "max_length": d["max_length"], "seed": d["seed"], "code": fingerprint(["jeepkit.drift"])}, n=24)


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
        if isinstance(got, dict) and set(got) == {"perplexity", "nll", "tokens", "docs"}:
            return got, None
    return perplexity(model, tok, docs, max_length=d["max_length"], batch=d["batch"]), path


def heldout_documents(params: dict[str, Any], model: nn.Module, tok) -> list[str]:
    """`drift.n_docs` documents of the statistics corpus that the statistics did not use."""
    d = drift_settings(params)
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
    """exp of the mean next-token negative log-likelihood over every predicted token of `docs`.

    Each document is cut to `max_length` tokens; batches are right-padded (positions of real tokens are
    unaffected) and padded positions are not scored. Log-probabilities in float32, their sum in float64.
    """
    dev = input_device(model)
    seqs = [tok(doc, add_special_tokens=True)["input_ids"][:max_length] for doc in docs]
    seqs = [s for s in seqs if len(s) >= 2]
    if not seqs:
        raise ConfigError("drift: no held-out document has two or more tokens")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    total, count = 0.0, 0
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
        total += float(nll[scored].sum())
        count += int(scored.sum())
    return {"perplexity": math.exp(total / count), "nll": total / count, "tokens": count, "docs": len(seqs)}
