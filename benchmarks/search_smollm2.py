"""Hyperparameter search for SmolLM2 on a train split (never on the records we report).

Splits: counterfact-train.json (--dataset counterfact, default) or zsre_mend_train-1k.json (--dataset zsre).

Evaluates each candidate setting of a method on the first N records of the *train* split with
covariance from WikiText-2, and prints ES / GS / LS / Score and time per setting, so the values in
params.yaml (hparams.smollm2) can be chosen and the choice documented.
Usage: python benchmarks/search_smollm2.py --method jeep [--dataset zsre] [--n 12] [--work /tmp/calib]
       [--grid 'layers_low=[[18,19,20,21,22,23]]' --grid 'layers_high=[[27,28,29]]']  (replaces the built-in grid)
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import tempfile
import time
from pathlib import Path

import torch

from jeepkit.editing.recipe import EditContext
from jeepkit.data.sources import resolve_dataset
from jeepkit.editing.engine import sample_prefixes
from jeepkit.editing.run import edit, method_spec
from jeepkit.editing.targets import TargetCache
from jeepkit.evaluation import evaluate_cases
from jeepkit.metrics import summarise
from jeepkit.models import load_model, model_identity, prepare_model
from jeepkit.params import load_params, method_hparams
from jeepkit.stats import CorpusSpec, CovarianceStore, compute_stats

GRIDS = {
    "jeep": {"layers_high": [[20, 21, 22], [15, 16, 17], [25, 26, 27]], "clamp_high": [0.25, 0.75]},
    "pmet": {"clamp": [0.9, 2.0], "kl_factor": [1.0, 0.0625]},
    "memit": {"clamp": [0.9, 2.0], "lambda": [4000, 15000]},
    "ft_wd": {"lr": [5e-5, 5e-4, 5e-3]},
    "rome": {"layer": [4, 6, 8]},
    "kne": {"p": [0.01, 0.03], "lr": [0.01, 0.05]},
    "ft_l": {"lr": [5e-4, 2e-3, 1e-2]},
    "ft_m": {"lr": [5e-4, 2e-3, 1e-2]},
}

TRAIN_SPLITS = {"counterfact": "counterfact/counterfact-train.json", "zsre": "zsre/zsre_mend_train-1k.json"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--method", required=True, choices=sorted(GRIDS))
    ap.add_argument("--dataset", default="counterfact", choices=sorted(TRAIN_SPLITS))
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--mirror", default="../shared/data")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=None, help="write results as JSON here")
    ap.add_argument("--grid", action="append", default=[], metavar="KEY=JSON_LIST",
                    help="custom grid axis (repeatable); replaces the built-in grid of --method")
    a = ap.parse_args()
    grid = {k: json.loads(v) for k, v in (g.split("=", 1) for g in a.grid)} if a.grid else GRIDS[a.method]
    work = Path(a.work or tempfile.mkdtemp(prefix="search."))
    if not (work / "model" / "model_card.json").exists():
        prepare_model({"source": "embedded"}, work / "model")
    model, tok, arch, card = load_model(work / "model")
    ident = model_identity(card)
    params = load_params("params.yaml")
    base = method_hparams(params, a.method, a.dataset)
    layers = set(range(4, 10)) | {l for v in GRIDS["jeep"]["layers_high"] for l in v}
    for hp in [base] + [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())]:
        for k in ("layers", "layers_low", "layers_high", "layer"):
            v = hp.get(k)
            layers |= set(v if isinstance(v, list) else [v] if v is not None else [])
    spec = CorpusSpec(corpus=f"file:{Path(a.mirror) / 'wikitext' / 'wiki.test.raw'}", n_samples=1000,
                      max_length=2048)
    missing = [arch.name("mlp_out", l) for l in sorted(layers)
               if not (work / "stats" / spec.key(ident) / f"{arch.name('mlp_out', l)}.safetensors").exists()]
    if method_spec(a.method).kind == "gradient":  # FT-WD, KNE: no statistics
        missing = []
    if missing:
        compute_stats(model, tok, arch, missing, spec, ident, work / "stats")
    cov = CovarianceStore(work / "stats", spec, ident)
    cases, _ = resolve_dataset(a.dataset, "mirror", mirror=a.mirror, mirror_file=TRAIN_SPLITS[a.dataset], n=a.n)
    rows = []
    for values in itertools.product(*grid.values()):
        hp = {**base, **dict(zip(grid, values))}
        edited = copy.deepcopy(model)
        t0 = time.time()
        res = edit(EditContext(edited, tok, arch, cov.get, sample_prefixes(edited, tok, 0), ident, cache=TargetCache(work / "targets")), a.method, cases, hp)  # settings sharing an objective share targets
        s = summarise(evaluate_cases(edited, tok, cases, progress=False), a.dataset)
        row = {**dict(zip(grid, values)), **{k: round(s[k]["mean"], 1) for k in ("ES", "GS", "LS", "Score")},
               "seconds": round(time.time() - t0, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"method": a.method, "n": a.n, "split": TRAIN_SPLITS[a.dataset],
                                           "base": base, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
