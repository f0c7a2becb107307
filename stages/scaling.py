"""DVC stage: Fig. 4 scaling curve for one method (batch sizes m_i up to scaling.max_edits)."""
import argparse

from jeepkit.cli import stage_main
from jeepkit.runners.edit import scaling

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--method", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args()
    stage_main(scaling)(a.method, a.dataset, a.params, seed=a.seed)
