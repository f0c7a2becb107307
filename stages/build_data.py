"""DVC stage: build or read one dataset into the canonical schema (data/datasets/<name>.jsonl)."""
import argparse

from jeepkit.cli import stage_main
from jeepkit.data.registry import DATASETS
from jeepkit.runners.inputs import build_data

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", required=True, choices=list(DATASETS))
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--source", default=None, choices=["bundled", "mirror", "official"],
                    help="override data.source for this dataset")
    a = ap.parse_args()
    stage_main(build_data)(a.dataset, a.params, a.source)
