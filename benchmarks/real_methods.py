"""Every method (and JEEP's high_anchor options) on the first N real CounterFact records, SmolLM2.

Covariance from the first 1,000 non-empty lines of wiki.test.raw (max length 2048), hyperparameters
from params.yaml (hparams.smollm2, CounterFact). Prints one line per run: ES / GS / LS / Score with
95% intervals and the edit time. Usage:
  python benchmarks/real_methods.py --n 25 --work /tmp/calib [--methods none memit jeep ...] [--anchors]
      [--jeep-grid clamp_high='[1.0, 0.75]']   # JEEP once per value (e.g. Fig. 6 on real records)
"""

from __future__ import annotations

import argparse
import copy
import json
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=25)
    ap.add_argument("--mirror", default="../shared/data")
    ap.add_argument("--work", default="/tmp/calib")
    ap.add_argument("--methods", nargs="*", default=["none", "ft_wd", "rome", "memit", "pmet", "alphaedit", "jeep", "kne"])
    ap.add_argument("--anchors", action="store_true", help="also run JEEP with each high_anchor")
    ap.add_argument("--jeep-grid", default=None, metavar="KEY=JSON_LIST",
                    help="also run JEEP once per value of one hyperparameter, in the order given")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work = Path(a.work)
    if not (work / "model" / "model_card.json").exists():
        prepare_model({"source": "embedded"}, work / "model")
    model, tok, arch, card = load_model(work / "model")
    ident = model_identity(card)
    params = load_params("params.yaml")
    spec = CorpusSpec(corpus=f"file:{Path(a.mirror) / 'wikitext' / 'wiki.test.raw'}", n_samples=1000,
                      max_length=2048)
    layers, roles = params["stats"]["layers"], params["stats"]["modules"]
    needed = [arch.name(r, l) for r in roles for l in layers]
    no_stats = all(method_spec(m).kind in ("gradient", "unedited") for m in a.methods) and not (a.anchors or a.jeep_grid)
    if not no_stats and not all((work / "stats2" / spec.key(ident) / f"{m}.safetensors").exists() for m in needed):
        compute_stats(model, tok, arch, needed, spec, ident, work / "stats2")
    cov = CovarianceStore(work / "stats2", spec, ident)
    cases, _ = resolve_dataset("counterfact", "mirror", mirror=a.mirror, n=a.n)
    cache = TargetCache(work / "targets")
    runs = [(m, {}) for m in a.methods]
    if a.anchors:
        runs += [("jeep", {"high_anchor": x}) for x in ("mlp_consistent", "resid_paper")]
    if a.jeep_grid:
        key, _, values = a.jeep_grid.partition("=")
        runs += [("jeep", {key: v}) for v in json.loads(values)]
    rows = []
    for method, over in runs:
        hp = {**method_hparams(params, method, "counterfact"), **over}
        edited = copy.deepcopy(model)
        t0 = time.time()
        res = edit(EditContext(edited, tok, arch, cov.get, sample_prefixes(edited, tok, 0), ident, cache=cache), method, cases, hp)
        dt = time.time() - t0
        s = summarise(evaluate_cases(edited, tok, cases, progress=False), "counterfact")
        row = {"method": method, **over, **{k: [round(s[k]["mean"], 1), s[k]["ci95"] and round(s[k]["ci95"], 1)]
                                            for k in ("ES", "GS", "LS", "Score")}, "edit_seconds": round(dt, 1),
               "z_error_high": next((v for k, v in res.info.items() if k.startswith("high/") and "residual" in k), None)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"n": a.n, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
