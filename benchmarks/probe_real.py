"""The logit-lens probe (Fig. 2 / Fig. 5) on N real CounterFact records, both lenses, SmolLM2.

Runs the probe stage's own runner (`jeepkit.runners.probe`) under profiles/real-small.yaml with
probe.n_records = N, once per lens (the paper's, without the final norm, and the usual one with it), in
--work; writes the figures and the curves under --out and prints the layer recommendation of each lens
beside the layers params.yaml uses. Usage:
  python benchmarks/probe_real.py --n 500 --out reports/real/probe [--work /tmp/real]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from jeepkit.params import load_params
from jeepkit.probe import aggregate, format_recommendation, load_probe, plot_fig2, plot_fig5
from jeepkit.runners.probe import run_probe_stage
from jeepkit.runners.workspace import ensure_inputs, working_directory, workspace_params

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--mirror", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--work", default="/tmp/real", help="working directory of the stages (re-used)")
    ap.add_argument("--profile", default=str(ROOT / "profiles" / "real-small.yaml"))
    ap.add_argument("--out", default="reports/real/probe")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    params = workspace_params(load_params(ROOT / "params.yaml"), a.profile,
                              {"data.mirror": str(Path(a.mirror).resolve()), "probe.n_records": a.n})
    summary: dict = {"lenses": {}}
    with working_directory(a.work) as work:
        ensure_inputs(params, ["counterfact"], statistics=False)
        for final_norm in (False, True):
            lens = "final_norm" if final_norm else "no_final_norm"
            t0 = time.time()
            run_probe_stage("counterfact", params, work / "probe" / lens, apply_final_norm=final_norm)
            dt = time.time() - t0
            arrays, side = load_probe(work / "probe" / lens)
            rec, conf, n = side["recommendation"], side["configured_layers"], len(side["case_ids"])
            label = "final norm applied" if final_norm else "paper's lens, no final norm"
            plot_fig2(arrays, out / f"fig2_{lens}.png", rec=rec, configured=conf,
                      title=f"SmolLM2, {n} real CounterFact records ({label})")
            plot_fig5(arrays, out / f"fig5_{lens}.png", title=f"SmolLM2, {n} real CounterFact records ({label}):"
                      " probability mass per word set at the prediction position\n(factual / non-factual = offline "
                      "substitutes, not the paper's BM25 + GPT-4 sets)")
            df = aggregate({k: arrays[k] for k in ("rank_orig", "rank_target", "prob_orig", "prob_target",
                                                   "mass_stop", "mass_unrelated", "mass_factual", "mass_nonfactual")})
            df.to_csv(out / f"curves_{lens}.csv", index=False)
            summary["n_records"] = n
            summary["lenses"][lens] = {"stage_seconds": round(dt, 1), "layers_low": rec["layers_low"],
                                       "layers_high": rec["layers_high"], "placement": rec["high_placement"],
                                       "final_top1_orig": float(np.mean(arrays["rank_orig"][:, -1, 1] == 0)),
                                       "final_top1_target": float(np.mean(arrays["rank_target"][:, -1, 1] == 0))}
            print(f"[{lens}] {n} records in {dt:.1f} s")
            print(format_recommendation(rec, conf))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["lenses"], indent=2))


if __name__ == "__main__":
    main()
