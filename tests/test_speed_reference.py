"""benchmarks/speed.py's reference loop (one request at a time, full forward, full-vocabulary logits) optimises the
same objective as the engine: same steps and targets, so its seconds are a fair yardstick."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from jeepkit.editing import jeep, memit, pmet
from jeepkit.editing.engine import optimise_targets_batch

from test_engine_batch import CASES, PREFIXES

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _speed():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
    spec = importlib.util.spec_from_file_location("speed_benchmark", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


OBJECTIVES = {
    "memit": lambda: memit.objective({"layers": [1, 2], "clamp": 4.0, "weight_decay": 0.01, "lr": 0.5, "steps": 8,
                                      "kl_factor": 0.0625, "lambda": 1.0, "stop_loss": 0.0}),
    "jeep": lambda: jeep.objective(dict(layers_low=[1], layers_high=[3], clamp_low=4.0, clamp_high=3.0,
                                        weight_decay_low=0.01, weight_decay_high=0.02, lr=0.5, steps=8,
                                        kl_factor_low=0.0625, min_prob=0.3, lambda_low=1.0, lambda_high=2.0)),
    "pmet": lambda: pmet.objective(dict(layers=[1, 2], clamp=4.0, weight_decay=0.01, weight_decay_attn=0.01,
                                        lr=0.5, steps=8, kl_factor=1.0, stop_loss=0.0, **{"lambda": 1.0})),
}


@pytest.mark.parametrize("method", sorted(OBJECTIVES))
def test_reference_loop_optimises_the_engines_objective(tiny_model, method):
    model, tok, arch = tiny_model
    obj = OBJECTIVES[method]()
    ref = _speed().reference_targets(model, tok, arch, CASES, obj, PREFIXES)
    got = optimise_targets_batch(model, tok, arch, CASES, obj, PREFIXES)
    for r, g in zip(ref, got):
        assert r.info["steps"] == g.info["steps"]
        for k in g.z:
            torch.testing.assert_close(r.init[k], g.init[k], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(r.z[k], g.z[k], atol=1e-4, rtol=1e-4)
