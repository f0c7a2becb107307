"""Bounded memory: 2,000 requests under a small memory budget give the same deltas as one large chunk (to float
rounding: a chunk's padding widths decide the attention's key length over the frozen prefix), and the measured
peak stays below the budget (which the large chunk exceeds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jeepkit.errors import ConfigError
from jeepkit.memory import Dims, known_dims, plan
from jeepkit.runtime import Runtime

HERE = Path(__file__).parent
BUDGET_GB = 0.25


def _run(tmp_path, *args) -> tuple[dict, bytes]:
    out = tmp_path / f"deltas{len(list(tmp_path.iterdir()))}.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    p = subprocess.run([sys.executable, str(HERE / "memory_run.py"), "--n", "2000", "--out", str(out), *args],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1]), out.read_bytes()


@pytest.mark.slow
def test_two_thousand_requests_under_a_budget(tmp_path):
    big, d_big = _run(tmp_path, "--target-requests", "512")
    small, d_small = _run(tmp_path, "--budget-gb", str(BUDGET_GB))
    assert small["target_requests"] < 512 and small["target_requests"] >= 1
    # the same deltas whatever the chunking, to float rounding (measured: 1.4e-5 absolute on entries up to 1.2)
    from safetensors.torch import load
    import torch
    a, b = load(d_small), load(d_big)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4)
    assert small["peak_added"] < BUDGET_GB * 2 ** 30, small
    assert big["peak_added"] > BUDGET_GB * 2 ** 30, big  # the budget is what kept the peak down


def test_budget_too_small_for_one_row_is_one_clear_error():
    d = known_dims("llama7b", "float16")
    with pytest.raises(ConfigError, match=r"run.memory_budget_gb: 14 GB .* less than one row"):
        plan(d, 14 * 2 ** 30, Runtime())


def test_plan_caps_at_explicit_limits_and_shrinks_with_the_budget():
    d = known_dims("llama7b", "float16")
    big = plan(d, 80 * 2 ** 30, Runtime(key_rows=48))
    small = plan(d, 20 * 2 ** 30, Runtime(key_rows=48))
    assert big.key_rows == 48 and big.stats_tokens == 4096 and big.target_requests == 8  # limits are upper bounds
    assert 1 <= small.target_requests < big.target_requests
    assert small.stats_tokens < big.stats_tokens
    assert big.key_cache_mb == 256  # the key reads' layer-input cache: capped by run.key_cache_mb ...
    wide = plan(d, 20 * 2 ** 30, Runtime(key_rows=1 << 20))  # key passes as large as the budget allows ...
    assert wide.key_rows > 48 and wide.key_cache_mb < 256  # ... leave the cache only what is left beside one


def test_dims_of_known_models_match_their_parameter_counts():
    assert abs(known_dims("llama7b", "float16").n_params / 6.74e9 - 1) < 0.01
    assert abs(known_dims("gptj", "float16").n_params / 6.05e9 - 1) < 0.02
    assert abs(known_dims("smollm2", "float32").n_params / 134.5e6 - 1) < 0.01
    assert isinstance(known_dims("smollm2", "float32"), Dims)
