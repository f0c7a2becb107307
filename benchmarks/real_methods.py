"""Every method (and JEEP's high_anchor options) on the first N real CounterFact records, SmolLM2.

Runs the stages' own recipe (`jeepkit.runners`): params.yaml under profiles/real-small.yaml (mirror data,
covariance from WikiText-2 as that profile sets it), with edit.n_edits = edit.batch_size = N, so each
line is what the real-small profile's edit stage prints at N edits. Inputs, runs and metrics land in
--work (re-used across invocations; targets are cached there). Prints one line per run: ES / GS / LS /
Score with 95% intervals and the wall time of the edit stage. Usage:
  python benchmarks/real_methods.py --n 25 --work /tmp/real [--methods none memit jeep ...] [--anchors]
      [--jeep-grid clamp_high='[1.0, 0.75]']   # JEEP once per value (e.g. Fig. 6 on real records)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from jeepkit.editing.run import method_spec
from jeepkit.params import load_params
from jeepkit.runners.edit import edit_and_evaluate
from jeepkit.runners.workspace import ensure_inputs, working_directory, workspace_params

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=25)
    ap.add_argument("--mirror", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--work", default="/tmp/real")
    ap.add_argument("--profile", default=str(ROOT / "profiles" / "real-small.yaml"))
    ap.add_argument("--methods", nargs="*", default=["none", "ft_wd", "rome", "memit", "pmet", "alphaedit", "jeep", "kne"])
    ap.add_argument("--anchors", action="store_true", help="also run JEEP with each high_anchor")
    ap.add_argument("--jeep-grid", default=None, metavar="KEY=JSON_LIST",
                    help="also run JEEP once per value of one hyperparameter, in the order given")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    mirror = Path(a.mirror).resolve()
    params = workspace_params(load_params(ROOT / "params.yaml"), a.profile, {
        "data.mirror": str(mirror), "stats.corpus": f"file:{mirror / 'wikitext' / 'wiki.test.raw'}",
        "edit.n_edits": a.n, "edit.batch_size": a.n})
    runs = [(m, {}) for m in a.methods]
    if a.anchors:
        runs += [("jeep", {"high_anchor": x}) for x in ("mlp_consistent", "resid_paper")]
    if a.jeep_grid:
        key, _, values = a.jeep_grid.partition("=")
        runs += [("jeep", {key: v}) for v in json.loads(values)]
    needs_stats = any(method_spec(m).kind not in ("gradient", "unedited") for m, _ in runs)
    rows = []
    with working_directory(a.work):
        ensure_inputs(params, ["counterfact"], statistics=needs_stats)
        for method, over in runs:
            t0 = time.time()
            m = edit_and_evaluate(method, "counterfact", params, group="bench", overrides=over, n_edits=a.n)
            s = m["summary"]
            row = {"method": method, **over, **{k: [round(s[k]["mean"], 1), s[k]["ci95"] and round(s[k]["ci95"], 1)]
                                                for k in ("ES", "GS", "LS", "Score")},
                   "stage_seconds": round(time.time() - t0, 1), "n": m["n_edits"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"n": a.n, "profile": Path(a.profile).name, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
