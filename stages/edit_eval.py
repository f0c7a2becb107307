"""DVC stage: edit one dataset with one method and evaluate (data/runs/<method>/<dataset>, metrics/)."""
import argparse

from jeepkit.pipeline import edit_and_evaluate, stage_main

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--method", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args()
    stage_main(edit_and_evaluate)(a.method, a.dataset, a.params)
