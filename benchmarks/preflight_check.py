"""Check the preflight's memory model against measured peaks: after a `dvc repro` (or stages run with
DVC_STAGE set), every stage left its peak resident memory in data/timings/peak_memory/. Measured minus
the process baseline (Python + torch + transformers imported, no model: measured here in a subprocess)
is compared with the preflight's predicted peak for the same stage of the same params.yaml.

  python benchmarks/preflight_check.py [--params params.yaml] [--dir data/timings/peak_memory]

Prints one row per stage (predicted GB, measured GB, ratio) and exits non-zero when a stage is off by
more than --tolerance (default 30%). On a CPU the prediction adds the host-side load overhead of
`jeepkit.preflight.host_overhead` (pages of the weights file, allocator slack).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from jeepkit.memory import GB, known_dims  # noqa: E402
from jeepkit.params import load_params  # noqa: E402
from jeepkit.preflight import estimate, host_overhead  # noqa: E402

BASELINE = ("import resource, torch, transformers, jeepkit.runners.edit, jeepkit.probe, jeepkit.stats;"
            "from transformers import AutoModelForCausalLM, AutoTokenizer;"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dir", type=Path, default=Path("data/timings/peak_memory"))
    ap.add_argument("--tolerance", type=float, default=0.30)
    a = ap.parse_args()
    params = load_params(a.params)
    d = known_dims(params["model"]["key"], params["model"].get("dtype", "float32"))
    baseline = int(subprocess.run([sys.executable, "-c", BASELINE], capture_output=True, text=True,
                                  check=True).stdout.strip())
    predicted = {c.stage: c.peak for c in estimate(params, d)}
    rows, bad = [], []
    for f in sorted(a.dir.glob("*.json")):
        rec = json.loads(f.read_text())
        stage = rec["stage"]
        if stage not in predicted or predicted[stage] == 0:
            continue
        measured = rec["peak_rss_bytes"] - baseline
        pred = predicted[stage] + host_overhead(d)
        ratio = measured / pred
        rows.append((stage, pred, measured, ratio))
        if abs(ratio - 1) > a.tolerance:
            bad.append(stage)
    print(f"baseline process (imports only): {baseline / GB:.2f} GB; model {params['model']['key']} {d.dtype}")
    print(f"{'stage':32s} {'predicted GB':>12s} {'measured GB':>12s} {'measured/predicted':>18s}")
    for stage, pred, meas, ratio in rows:
        print(f"{stage:32s} {pred / GB:12.3f} {meas / GB:12.3f} {ratio:18.2f}{'  OFF' if stage in bad else ''}")
    if not rows:
        sys.exit(f"no measured stage in {a.dir} matches the preflight of {a.params}; run `dvc repro` first")
    print(f"{len(rows) - len(bad)} of {len(rows)} stages within ±{a.tolerance:.0%}")
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
