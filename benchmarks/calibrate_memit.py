"""Calibration against the official implementation (issue 2): MEMIT on SmolLM2, first 25 records.

Setup (as measured for the official code): records 0-24 of counterfact-edit.json, one batch, MEMIT at
layers 4-9 with LLaMA-7B's settings (λ 4000, clamp 0.9, lr 0.5, 30 steps, KL 0.0625, wd 0.5, five
10-token prefixes), covariance from the first 1,000 non-empty lines of wiki.test.raw (up to 2,048 tokens
each). Runs the stages' own recipe (`jeepkit.runners`) with those settings as overrides of the real-small
profile, in --work. Prints metrics and timings. Usage: python benchmarks/calibrate_memit.py [--mirror ../shared/data] [--n 25] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from jeepkit.params import load_params
from jeepkit.runners.edit import edit_and_evaluate
from jeepkit.runners.workspace import ensure_inputs, working_directory, workspace_params

ROOT = Path(__file__).resolve().parents[1]
HP = {"layers": [4, 5, 6, 7, 8, 9], "clamp": 0.9, "lambda": 4000, "lr": 0.5, "steps": 30, "weight_decay": 0.5,
      "kl_factor": 0.0625, "stop_loss": 0.05}


def fmt(s: dict) -> str:
    return " ".join(f"{k} {s[k]['mean']:.1f}" for k in ("ES", "GS", "LS", "Score"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mirror", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--n", type=int, default=25)
    ap.add_argument("--lines", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/calib", help="working directory of the stages (re-used)")
    ap.add_argument("--target-batch", type=int, default=8)
    ap.add_argument("--corpus", default=None, help="covariance corpus instead of WikiText lines, e.g. self")
    ap.add_argument("--samples", type=int, default=400, help="documents for --corpus self")
    ap.add_argument("--max-length", type=int, default=2048)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    mirror = Path(a.mirror).resolve()
    corpus = a.corpus or f"file:{mirror / 'wikitext' / 'wiki.test.raw'}"
    params = workspace_params(load_params(ROOT / "params.yaml"), ROOT / "profiles" / "real-small.yaml", {
        "data.mirror": str(mirror), "stats.corpus": corpus, "stats.n_samples": a.samples if a.corpus else a.lines,
        "stats.max_length": a.max_length, "stats.layers": HP["layers"], "stats.modules": ["mlp_out"],
        "hparams.smollm2.memit": {**HP, "target_batch": a.target_batch}, "edit.n_edits": a.n, "edit.batch_size": a.n})
    with working_directory(a.work) as work:
        ensure_inputs(params, ["counterfact"])
        base = edit_and_evaluate("none", "counterfact", params, group="calibrate", n_edits=a.n)
        print(f"unedited ({base['n_edits']} records): {fmt(base['summary'])}")
        after = edit_and_evaluate("memit", "counterfact", params, group="calibrate", n_edits=a.n)
        timing = json.loads((work / "data" / "timings" / "calibrate" / "memit_counterfact_s0.json").read_text())
        info = json.loads((work / "data" / "runs" / "calibrate" / "memit" / "counterfact" / "s0" / "info.json")
                          .read_text())["chunks"][0]
    print(f"MEMIT: {fmt(after['summary'])}")
    print(f"time: {timing['target_seconds'] / a.n:.1f} s/fact target optimisation, {timing['edit_seconds']:.0f} s "
          f"whole batch (targets + update); mean target prob {info['mean_target_prob']:.3f}, mean steps "
          f"{info['mean_opt_steps']:.1f}")


if __name__ == "__main__":
    main()
