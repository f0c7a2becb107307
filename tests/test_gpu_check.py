"""The prepared GPU check runs here with --dry: the same code paths, tiny configs, on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    tok = tmp_path / "tokenizer"
    w = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--write-tokenizer", str(tok)], cwd=ROOT,
                       capture_output=True, text=True, env=env, timeout=300)
    assert w.returncode == 0, w.stderr[-2000:]
    assert sum(f.stat().st_size for f in tok.iterdir()) < 20e6  # "a folder of a few MB"
    out = tmp_path / "gpu_check.json"
    p = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry", "--tokenizer", str(tok), "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry"] and report["gpu_vs_cpu"]["ok"] and report["seconds"] < 180
    assert [m["model"] for m in report["models"]] == ["llama7b", "gptj"]
    for m in report["models"]:
        assert m["stats"]["tokens"] > 0 and m["memit_targets"]["seconds_per_request"] > 0
        assert m["jeep_update"]["layers"] == 2 and m["memit_update"]["layers"] == 2
        assert set(m["projected_hours_10k"]) == {"memit", "jeep", "stats_once"}


def test_gpu_check_refuses_a_machine_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    (tmp_path / "tokenizer.json").write_text("{}")
    p = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--tokenizer", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "no CUDA device" in p.stderr
