"""DVC stage: build or read one dataset into the canonical schema (data/datasets/<name>.jsonl)."""
import argparse

from jeepkit.cli import stage_main
from jeepkit.inputs import build_data

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", required=True, choices=["counterfact", "mcf", "zsre"])
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args()
    stage_main(build_data)(a.dataset, a.params)
