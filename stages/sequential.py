"""DVC stage: the sequential protocol for one method (sequential.total edits in batches of sequential.batch)."""
import argparse

from jeepkit.cli import stage_main
from jeepkit.runners.sequential import REGULARISERS, sequential

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--method", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--regulariser", default="none", choices=REGULARISERS)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args()
    stage_main(sequential)(a.method, a.dataset, a.params, regulariser=a.regulariser, seed=a.seed)
