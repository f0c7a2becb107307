"""Calibration against the official implementation (issue 2): MEMIT on SmolLM2, first 25 records.

Setup (as measured for the official code): records 0-24 of counterfact-edit.json, one batch, MEMIT at
layers 4-9 with LLaMA-7B's settings (λ 4000, clamp 0.9, lr 0.5, 30 steps, KL 0.0625, wd 0.5, five
10-token prefixes), covariance from the first 1,000 non-empty lines of wiki.test.raw. Prints metrics
and timings. Usage: python benchmarks/calibrate_memit.py [--mirror ../shared/data] [--n 25] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from jeepkit.editing.recipe import EditContext
from jeepkit.data.sources import resolve_dataset
from jeepkit.editing.engine import sample_prefixes
from jeepkit.editing.run import edit
from jeepkit.evaluation import evaluate_cases
from jeepkit.metrics import summarise
from jeepkit.models import load_model, model_identity, prepare_model
from jeepkit.stats import CorpusSpec, CovarianceStore, compute_stats

HP = {"layers": [4, 5, 6, 7, 8, 9], "clamp": 0.9, "lambda": 4000, "lr": 0.5, "steps": 30, "weight_decay": 0.5,
      "kl_factor": 0.0625, "stop_loss": 0.05}


def fmt(s: dict) -> str:
    return " ".join(f"{k} {s[k]['mean']:.1f}" for k in ("ES", "GS", "LS", "Score"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mirror", default="../shared/data")
    ap.add_argument("--n", type=int, default=25)
    ap.add_argument("--lines", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="directory for the prepared model and statistics (reused)")
    ap.add_argument("--target-batch", type=int, default=8)
    ap.add_argument("--corpus", default=None, help="covariance corpus instead of WikiText lines, e.g. self")
    ap.add_argument("--samples", type=int, default=400, help="documents for --corpus self")
    ap.add_argument("--max-length", type=int, default=2048)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work = Path(a.work or tempfile.mkdtemp(prefix="calib."))
    if not (work / "model" / "model_card.json").exists():
        prepare_model({"source": "embedded"}, work / "model")
    model, tok, arch, card = load_model(work / "model")
    ident = model_identity(card)
    if a.corpus:
        spec = CorpusSpec(corpus=a.corpus, n_samples=a.samples, max_length=a.max_length)
    else:
        spec = CorpusSpec(corpus=f"file:{Path(a.mirror) / 'wikitext' / 'wiki.test.raw'}", n_samples=a.lines,
                          max_length=a.max_length)
    modules = [arch.name("mlp_out", l) for l in HP["layers"]]
    if not (work / "stats" / spec.key(ident)).exists():
        side, secs = compute_stats(model, tok, arch, modules, spec, ident, work / "stats")
        print(f"covariance: {side['n_documents']} lines, {side['n_tokens']} tokens, {len(modules)} layers, "
              f"{secs['seconds']} s")
    cov = CovarianceStore(work / "stats", spec, ident)
    cases, prov = resolve_dataset("counterfact", "mirror", mirror=a.mirror, n=a.n)
    t0 = time.time()
    base = summarise(evaluate_cases(model, tok, cases), "counterfact")
    print(f"unedited ({len(cases)} records): {fmt(base)}  [{time.time() - t0:.0f} s eval]")
    edited = copy.deepcopy(model)
    prefixes = sample_prefixes(edited, tok, seed=0)
    res = edit(EditContext(edited, tok, arch, cov.get, prefixes, ident), "memit", cases, {**HP, "target_batch": a.target_batch})
    after = summarise(evaluate_cases(edited, tok, cases), "counterfact")
    print(f"MEMIT: {fmt(after)}")
    print(f"time: {res.info['target_seconds'] / len(cases):.1f} s/fact target optimisation, "
          f"{res.info['edit_seconds']:.0f} s whole batch (targets + update); mean target prob "
          f"{res.info['mean_target_prob']:.3f}, mean steps {res.info['mean_opt_steps']:.1f}")


if __name__ == "__main__":
    main()
