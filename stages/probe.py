"""DVC stage: logit-lens probe of the unedited model (data/probe/<model key>/<dataset>/arrays.npz + arrays.json)."""
import argparse

from jeepkit.cli import stage_main
from jeepkit.runners.probe import run_probe_stage

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default=None, help="dataset name (default: params probe.dataset)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=None, help="output directory (default: data/probe/<model key>/<dataset>)")
    ap.add_argument("--final-norm", choices=["true", "false"], default=None,
                    help="override probe.apply_final_norm (true = the usual logit lens, false = the paper's)")
    a = ap.parse_args()
    final_norm = None if a.final_norm is None else a.final_norm == "true"
    stage_main(run_probe_stage)(a.dataset, a.params, a.out, final_norm)
