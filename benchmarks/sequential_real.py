"""The sequential protocol on the first N real CounterFact records (SmolLM2), through the stage's own runner.

params.yaml under profiles/real-small.yaml (mirror data, WikiText-2 statistics, 200 edits in batches of 20,
PRUNE after every batch) with optional overrides; inputs, runs and metrics land in --work (re-used: the
statistics and the first batch's targets are cached there). Prints the Score after every batch, with and
without PRUNE, the first batch's Score, perplexity and σ_max, and teacher-forced vs free-generation ES.
Usage:
  python benchmarks/sequential_real.py --methods memit jeep [--total 200 --batch 20] [--work /tmp/seqreal]
      [--set drift.n_docs=32 sequential.prune.every=false]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from jeepkit.params import load_params
from jeepkit.runners.sequential import sequential
from jeepkit.runners.workspace import ensure_inputs, working_directory, workspace_params

ROOT = Path(__file__).resolve().parents[1]


def _pm(c: dict) -> str:
    return "n/a" if c.get("mean") is None else f"{c['mean']:.1f}" + ("" if c.get("ci95") is None else f" ± {c['ci95']:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="*", default=["memit", "pmet", "jeep", "alphaedit"])
    ap.add_argument("--regulariser", default="none", choices=("none", "rect"))
    ap.add_argument("--total", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--mirror", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--work", default="/tmp/seqreal")
    ap.add_argument("--profile", default=str(ROOT / "profiles" / "real-small.yaml"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write every run's checkpoints here (JSON)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=YAML", help="more dotted params overrides")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    mirror = Path(a.mirror).resolve()
    over = {"data.mirror": str(mirror), "stats.corpus": f"file:{mirror / 'wikitext' / 'wiki.test.raw'}"}
    if a.total:
        over["sequential.total"] = a.total
    if a.batch:
        over["sequential.batch"] = a.batch
    for kv in a.set:
        key, _, value = kv.partition("=")
        over[key] = yaml.safe_load(value)
    params = workspace_params(load_params(ROOT / "params.yaml"), a.profile, over)
    report = {}
    with working_directory(a.work):
        ensure_inputs(params, ["counterfact"])
        for method in a.methods:
            t0 = time.time()
            m = sequential(method, "counterfact", params, regulariser=a.regulariser)
            wall = time.time() - t0
            print(f"\n{method} ({a.regulariser}), {m['protocol']['total']} edits in batches of {m['protocol']['batch']}, "
                  f"{wall:.0f} s:")
            for p in m["checkpoints"]:
                s = p["summary"]
                line = (f"  {p['edits']:5d} edits: Score {_pm(s['all_so_far']['Score'])}"
                        f" (ES {_pm(s['all_so_far']['ES'])}, GS {_pm(s['all_so_far']['GS'])}, LS {_pm(s['all_so_far']['LS'])})"
                        f"; first batch {_pm(s['first_batch']['Score'])}"
                        + (f"; ppl {p['drift']['perplexity']:.2f}" if "drift" in p else ""))
                sig = max((v["sigma_max_delta"] or 0) for v in p["spectra"].values()) if p["spectra"] else 0
                line += f"; max σ_max(ΣΔW) {sig:.3g}"
                if "prune" in p:
                    line += f"; with PRUNE {_pm(p['prune']['summary']['all_so_far']['Score'])}"
                print(line)
                if "free_generation" in p:
                    fg = p["free_generation"]
                    print(f"         ES teacher-forced {_pm(s['all_so_far']['ES'])} vs free generation exact "
                          f"{_pm(fg['ES']['exact'])} / contains {_pm(fg['ES']['contains'])}; GS free exact "
                          f"{_pm(fg['GS']['exact'])}; LS free exact {_pm(fg['LS']['exact'])}")
            report[method] = {"wall_seconds": round(wall, 1), "checkpoints": m["checkpoints"],
                              "drift_before": m["drift_before"], "protocol": m["protocol"]}
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
