"""DVC stage: covariance statistics E[kk^T] for every edited layer, in one pass over the corpus."""
import argparse

from jeepkit.cli import stage_main
from jeepkit.runners.inputs import stats

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    stage_main(stats)(ap.parse_args().params)
