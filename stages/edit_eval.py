"""DVC stage: edit one dataset with one method (optionally overridden hparams) and evaluate it.

Writes data/runs/<group>/<run>/<dataset>/s<seed>/ (per-case results, requests, weight deltas) and
metrics/<group>/<run>_<dataset>_s<seed>.json.
"""
import argparse

from jeepkit.cli import parse_overrides, stage_main
from jeepkit.runners.edit import edit_and_evaluate


def main(a: argparse.Namespace) -> None:
    edit_and_evaluate(a.method, a.dataset, a.params, group=a.group, seed=a.seed, overrides=parse_overrides(a.set),
                      n_edits=a.n_edits, batch_size=a.batch_size, scores=a.scores)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--method", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--group", default="main", help="main | ablation | sweep | knowedit: where metrics are filed")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a method hyperparameter")
    ap.add_argument("--n-edits", type=int, default=None, help="records edited (default: edit.n_edits)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="edits applied together, weights restored between batches (default: edit.batch_size)")
    ap.add_argument("--scores", choices=("all", "teacher_forced"), default="all",
                    help="all: teacher-forced scores, free generation, drift, case study; teacher_forced: the first only")
    ap.add_argument("--params", default="params.yaml")
    stage_main(main)(ap.parse_args())
