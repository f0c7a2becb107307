"""Batched target optimisation must equal optimising each request alone."""

from __future__ import annotations

import pytest
import torch

from jeepkit.data.schema import EditCase
from jeepkit.editing import memit
from jeepkit.editing.engine import optimise_targets, optimise_targets_batch

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CASES = [
    EditCase("a", "counterfact", "The mother tongue of {} is", "Danielle Darrieux", "English", "French"),
    EditCase("b", "counterfact", "{} is a city in", "Paris", "Japan", "France"),
    EditCase("c", "counterfact", "The author of {} is", "1984", "Danielle Darrieux", "George Orwell"),
]
PREFIXES = ["Therefore you know. ", "Because I said so, you know. "]


# "mixed": a threshold at which, on these tiny models, requests stop at different steps
MIXED = {"gptj": 7.0, "llama": 6.0}


@pytest.mark.parametrize("stop", ["never", "mixed"])
def test_batch_equals_single(tiny_model, stop):
    model, tok, arch = tiny_model
    stop_loss = 0.0 if stop == "never" else MIXED[arch.family]
    hp = {"layers": [1, 2], "clamp": 4.0, "weight_decay": 0.01, "lr": 0.5, "steps": 12, "kl_factor": 0.0625,
          "lambda": 1.0, "stop_loss": stop_loss}
    obj = memit.objective(hp)
    batched = optimise_targets_batch(model, tok, arch, CASES, obj, PREFIXES)
    steps = set()
    for case, b in zip(CASES, batched):
        single = optimise_targets(model, tok, arch, case, obj, PREFIXES)
        assert b.info["steps"] == single.info["steps"]
        steps.add(single.info["steps"])
        torch.testing.assert_close(b.init["main"], single.init["main"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.z["main"], single.z["main"], atol=1e-4, rtol=1e-4)
        assert b.info["kl"] == pytest.approx(single.info["kl"], rel=1e-3, abs=1e-6)  # its own KL row
    if stop == "mixed":
        assert len(steps) > 1, "the test needs requests that stop at different steps"


@pytest.mark.parametrize("method", ["memit", "jeep", "jeep_wo_low"])
@pytest.mark.parametrize("stop", ["never", "mixed"])
def test_frozen_prefix_equals_whole_rows(tiny_model, method, stop):
    """Running each step from the earliest δ position (cached keys/values before it) changes nothing
    but float rounding: same steps, same anchors, same targets."""
    from jeepkit.editing import jeep
    model, tok, arch = tiny_model
    stop_loss = 0.0 if stop == "never" else MIXED[arch.family]
    if method == "memit":
        obj = memit.objective({"layers": [1, 2], "clamp": 4.0, "weight_decay": 0.01, "lr": 0.5, "steps": 12,
                               "kl_factor": 0.0625, "lambda": 1.0, "stop_loss": stop_loss})
    else:
        obj = jeep.objective(dict(layers_low=[1], layers_high=[3], clamp_low=4.0, clamp_high=3.0,
                                  weight_decay_low=0.01, weight_decay_high=0.02, lr=0.5, steps=12,
                                  kl_factor_low=0.0625, min_prob=1.0 if stop == "never" else 0.3,
                                  lambda_low=1.0, lambda_high=2.0,
                                  variant="wo_low" if method == "jeep_wo_low" else "full"))
    assert {d.position for d in obj.deltas} <= {"subject_last", "prompt_last"}
    fast = optimise_targets_batch(model, tok, arch, CASES, obj, PREFIXES)
    full = optimise_targets_batch(model, tok, arch, CASES, obj, PREFIXES, reuse_prefix=False)
    for f, w in zip(fast, full):
        assert f.info["steps"] == w.info["steps"]
        for name in w.z:
            torch.testing.assert_close(f.init[name], w.init[name], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(f.z[name], w.z[name], atol=1e-4, rtol=1e-4)
        assert abs(f.info["target_prob"] - w.info["target_prob"]) < 1e-4
        assert f.info["kl"] == pytest.approx(w.info["kl"], rel=1e-3, abs=1e-6)  # each request's own KL row
