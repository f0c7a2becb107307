"""The logit-lens probe (Fig. 2 / Fig. 5) on N real CounterFact records, both lenses, SmolLM2.

Reads the mirror (default ../shared/data, counterfact-edit.json), probes the first N records that
tokenise cleanly with the paper's lens (no final norm) and with the final norm applied, writes the
figures and the arrays' summaries under --out, and prints the layer recommendation of each lens beside
the layers params.yaml uses. Usage:
  python benchmarks/probe_real.py --n 500 --out reports/real/probe [--work /tmp/calib]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from jeepkit.data.sources import resolve_dataset
from jeepkit.errors import InputError
from jeepkit.models import load_model, prepare_model
from jeepkit.params import load_params
from jeepkit.probe import (_prompt, aggregate, configured_layers, format_recommendation, plot_fig2, plot_fig5,
                           probe_records, recommend_layers)
from jeepkit.wordsets import build_wordsets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--mirror", default="../shared/data")
    ap.add_argument("--work", default="/tmp/calib", help="where the prepared model lives (created if absent)")
    ap.add_argument("--out", default="reports/real/probe")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work, out = Path(a.work), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (work / "model" / "model_card.json").exists():
        prepare_model({"source": "embedded"}, work / "model")
    model, tok, arch, _ = load_model(work / "model")
    all_cases, prov = resolve_dataset("counterfact", "mirror", mirror=a.mirror)
    cases = []
    for c in all_cases:
        if len(cases) == a.n:
            break
        try:
            _prompt(tok, c)
            cases.append(c)
        except InputError:
            pass
    conf = configured_layers(load_params("params.yaml"))
    ws = build_wordsets(tok, cases, reference=all_cases, max_related=50)
    summary = {"n_records": len(cases), "source": prov, "lenses": {}}
    for final_norm in (False, True):
        t0 = time.time()
        arrays = probe_records(model, tok, arch, cases, apply_final_norm=final_norm, wordsets=ws, batch_size=16)
        dt = time.time() - t0
        rec = recommend_layers(arrays, n_low=6, n_high=3)
        lens = "final_norm" if final_norm else "no_final_norm"
        label = "final norm applied" if final_norm else "paper's lens, no final norm"
        plot_fig2(arrays, out / f"fig2_{lens}.png", rec=rec, configured=conf,
                  title=f"SmolLM2, {len(cases)} real CounterFact records ({label})")
        plot_fig5(arrays, out / f"fig5_{lens}.png", title=f"SmolLM2, {len(cases)} real CounterFact records ({label}):"
                  " probability mass per word set at the prediction position\n(factual / non-factual = offline "
                  "substitutes, not the paper's BM25 + GPT-4 sets)")
        df = aggregate({k: arrays[k] for k in ("rank_orig", "rank_target", "prob_orig", "prob_target",
                                               "mass_stop", "mass_unrelated", "mass_factual", "mass_nonfactual")})
        df.to_csv(out / f"curves_{lens}.csv", index=False)
        summary["lenses"][lens] = {"seconds": round(dt, 1), "layers_low": rec["layers_low"],
                                   "layers_high": rec["layers_high"], "placement": rec["high_placement"],
                                   "final_top1_orig": float(np.mean(arrays["rank_orig"][:, -1, 1] == 0)),
                                   "final_top1_target": float(np.mean(arrays["rank_target"][:, -1, 1] == 0))}
        print(f"[{lens}] {len(cases)} records in {dt:.1f} s")
        print(format_recommendation(rec, conf))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["lenses"], indent=2))


if __name__ == "__main__":
    main()
