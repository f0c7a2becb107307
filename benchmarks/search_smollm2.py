"""Hyperparameter search for SmolLM2 on a train split (never on the records we report).

Splits: counterfact-train.json (--dataset counterfact, default) or zsre_mend_train-1k.json (--dataset zsre).

Runs the edit stage's own recipe (`jeepkit.runners`) under profiles/real-small.yaml with the train split
as the dataset file (data.files) and edit.n_edits = N, once per candidate setting of a method, and prints
ES / GS / LS / Score and the stage time per setting, so the values in params.yaml (hparams.smollm2) can be
chosen and the choice documented. (Searches recorded in params.yaml before this used covariance from
1,000 WikiText lines of up to 2,048 tokens; the profile's are 512.)
Usage: python benchmarks/search_smollm2.py --method jeep [--dataset zsre] [--n 12] [--work /tmp/search]
       [--grid 'layers_low=[[18,19,20,21,22,23]]' --grid 'layers_high=[[27,28,29]]']  (replaces the built-in grid)
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from jeepkit.editing.run import method_spec
from jeepkit.params import load_params, method_hparams
from jeepkit.runners.edit import edit_and_evaluate
from jeepkit.runners.workspace import ensure_inputs, working_directory, workspace_params

ROOT = Path(__file__).resolve().parents[1]

GRIDS = {
    "jeep": {"layers_high": [[20, 21, 22], [15, 16, 17], [25, 26, 27]], "clamp_high": [0.25, 0.75]},
    "pmet": {"clamp": [0.9, 2.0], "kl_factor": [1.0, 0.0625]},
    "memit": {"clamp": [0.9, 2.0], "lambda": [4000, 15000]},
    "ft_wd": {"lr": [5e-5, 5e-4, 5e-3]},
    "rome": {"layer": [4, 6, 8]},
    "kne": {"p": [0.01, 0.03], "lr": [0.01, 0.05]},
    "ft_l": {"lr": [5e-4, 2e-3, 1e-2]},
    "ft_m": {"lr": [5e-4, 2e-3, 1e-2]},
}

TRAIN_SPLITS = {"counterfact": "counterfact/counterfact-train.json", "zsre": "zsre/zsre_mend_train-1k.json"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--method", required=True, choices=sorted(GRIDS))
    ap.add_argument("--dataset", default="counterfact", choices=sorted(TRAIN_SPLITS))
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--mirror", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--work", default="/tmp/search", help="working directory of the stages (re-used)")
    ap.add_argument("--profile", default=str(ROOT / "profiles" / "real-small.yaml"))
    ap.add_argument("--out", default=None, help="write results as JSON here")
    ap.add_argument("--grid", action="append", default=[], metavar="KEY=JSON_LIST",
                    help="custom grid axis (repeatable); replaces the built-in grid of --method")
    a = ap.parse_args()
    grid = {k: json.loads(v) for k, v in (g.split("=", 1) for g in a.grid)} if a.grid else GRIDS[a.method]
    base_params = load_params(ROOT / "params.yaml")
    base = method_hparams(base_params, a.method, a.dataset)
    # every layer a grid point edits gets covariance statistics
    layers = set(base_params["stats"]["layers"])
    for hp in [base] + [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())]:
        for k in ("layers", "layers_low", "layers_high", "layer"):
            v = hp.get(k)
            layers |= set(v if isinstance(v, list) else [v] if v is not None else [])
    mirror = Path(a.mirror).resolve()
    params = workspace_params(base_params, a.profile, {
        "data.mirror": str(mirror), "data.files": {a.dataset: TRAIN_SPLITS[a.dataset]},
        "stats.layers": sorted(layers), "edit.n_edits": a.n, "edit.batch_size": a.n})
    rows = []
    with working_directory(a.work):
        ensure_inputs(params, [a.dataset], statistics=method_spec(a.method).kind not in ("gradient", "unedited"))
        for values in itertools.product(*grid.values()):
            point = dict(zip(grid, values))
            t0 = time.time()  # settings sharing an objective share targets (the workspace's target cache)
            s = edit_and_evaluate(a.method, a.dataset, params, group="search", overrides=point, n_edits=a.n)["summary"]
            row = {**point, **{k: round(s[k]["mean"], 1) for k in ("ES", "GS", "LS", "Score")},
                   "stage_seconds": round(time.time() - t0, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"method": a.method, "n": a.n, "split": TRAIN_SPLITS[a.dataset],
                                           "profile": Path(a.profile).name, "base": base, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
