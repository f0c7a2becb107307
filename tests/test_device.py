"""Device and dtype: every method, the statistics, the evaluation and the probe run with the default device
set to `meta`, and in bfloat16 / float16 on the CPU.

With `torch.set_default_device("meta")` in force while model and data sit on the CPU, any tensor jeepkit
makes without an explicit device lands on `meta`, and the first operation that mixes it with a CPU tensor
fails: exactly the tensors that would break on a GPU. Half precision: results must be finite and the metrics
close to the float32 run on the same cases.
"""

from __future__ import annotations

import copy

import pytest
import torch

import tiny
from jeepkit.editing.recipe import EditContext
from jeepkit.data.schema import EditCase, LocalityPrompt
from jeepkit.editing.engine import sample_prefixes
from jeepkit.editing.run import edit
from jeepkit.evaluation import evaluate_cases
from jeepkit.probe import probe_records
from jeepkit.stats import accumulate_second_moments

pytestmark = pytest.mark.usefixtures("torch_one_thread")

METHOD_HP = {
    "memit": {"layers": [1, 2], "clamp": 4.0, "lambda": 10.0, "lr": 0.5, "steps": 5, "weight_decay": 0.5,
              "kl_factor": 0.0625, "stop_loss": 0.05},
    "pmet": {"layers": [1, 2], "clamp": 4.0, "lambda": 10.0, "lr": 0.5, "steps": 5, "weight_decay": 0.5,
             "weight_decay_attn": 0.5, "kl_factor": 1.0, "stop_loss": 0.05},
    "alphaedit": {"layers": [1, 2], "clamp": 4.0, "lambda": 10.0, "lr": 0.5, "steps": 5, "weight_decay": 0.5,
                  "kl_factor": 0.0625, "stop_loss": 0.05, "nullspace_threshold": 0.5, "l2": 1.0},
    "jeep": {"layers_low": [1], "layers_high": [3], "clamp_low": 4.0, "clamp_high": 2.0, "lambda_low": 10.0,
             "lambda_high": 10.0, "weight_decay_low": 0.5, "weight_decay_high": 0.5, "kl_factor_low": 0.0625,
             "lr": 0.5, "steps": 5, "min_prob": 0.9},
    "rome": {"layer": 2, "steps": 4, "n_prefix_short": 1, "n_prefix_long": 1, "prefix_len_short": 3,
             "prefix_len_long": 4, "seed": 0, "progress": False, "template_start": "The"},
    "ft_wd": {"layer": 2, "lr": 1e-2, "epochs": 2, "batch_size": 2, "loss_threshold": 0.0, "progress": False},
}
METHODS = tuple(METHOD_HP)

CASES = [
    EditCase(case_id="c0", kind="counterfact", prompt="The mother tongue of {} is", subject="Danielle Darrieux",
             target_new="English", target_true="French", paraphrases=("Danielle Darrieux speaks",),
             locality=(LocalityPrompt("The mother tongue of Barack Obama is", "English"),)),
    EditCase(case_id="c1", kind="counterfact", prompt="{} is a city in", subject="Paris", target_new="Japan",
             target_true="France", paraphrases=("Paris is the capital of",),
             locality=(LocalityPrompt("Tokyo is a city in", "Japan"),)),
    EditCase(case_id="c2", kind="zsre", prompt="What is the language of {}?", subject="Italy",
             target_new="Spanish", target_true=None, paraphrases=("The language of Italy is",),
             locality=(LocalityPrompt("The capital of France is", "Paris"),)),
]
CF = CASES[:2]


def _modules(arch) -> list[str]:
    return [arch.name("mlp_out", l) for l in range(arch.n_layers)] + [arch.name("attn_out", 3)]


def run_everything(model, tok, arch, methods=METHODS) -> dict:
    """Statistics, prefixes, each method's edit on a private copy + evaluation, and the probe."""
    copies = {m: copy.deepcopy(model) for m in methods}  # made before any default-device switch
    return _run(model, copies, tok, arch)


def _run(model, copies, tok, arch) -> dict:
    cov, n_tok = accumulate_second_moments(model, tok, arch, _modules(arch), tiny.CORPUS, 24, token_budget=64)
    prefixes = sample_prefixes(model, tok, seed=0, length=4)
    out = {"cov": cov, "n_tok": n_tok, "prefixes": prefixes}
    for m, edited in copies.items():
        res = edit(EditContext(edited, tok, arch, cov.__getitem__, prefixes, {"id": "tiny"}), m, CF if m == "rome" else CASES, METHOD_HP[m])
        per_case = evaluate_cases(edited, tok, CASES, batch_size=4, progress=False)
        out[m] = {"deltas": res.deltas, "per_case": per_case, "info": res.info}
    out["probe"] = probe_records(model, tok, arch, CF, batch_size=2, progress=False)
    return out


def _same_device_as_weights(module, args, kwargs):
    """What CUDA enforces: a module's tensor inputs sit on the device of its own parameters."""
    own = next(module.parameters(recurse=False), None)
    if own is None:
        return
    for a in list(args) + list(kwargs.values()):
        if torch.is_tensor(a) and a.device != own.device:
            raise RuntimeError(f"{type(module).__name__} got an input on {a.device}, its weights are on {own.device}")


@pytest.fixture
def meta_default():
    """Default device `meta`, and every module checks its inputs' device (meta indices pass silently otherwise)."""
    from torch.nn.modules.module import register_module_forward_pre_hook

    handle = register_module_forward_pre_hook(lambda m, a: _same_device_as_weights(m, a, {}))
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)
        handle.remove()


@pytest.mark.parametrize("family", ["llama", "gptj"])
def test_every_stage_runs_with_meta_as_the_default_device(family, meta_default, tiny_llama, tiny_gptj):
    model, tok, arch = {"llama": tiny_llama, "gptj": tiny_gptj}[family]
    torch.set_default_device(None)
    copies = {m: copy.deepcopy(model) for m in METHODS}
    torch.set_default_device("meta")
    assert torch.empty(1).device.type == "meta"  # the trap is set
    out = _run(model, copies, tok, arch)
    for m in METHODS:
        assert out[m]["deltas"], m
        for name, d in out[m]["deltas"].items():
            assert d.device.type == "cpu" and torch.isfinite(d).all(), (m, name)
        assert len(out[m]["per_case"]) == len(CASES)
    assert all(c.device.type == "cpu" for c in out["cov"].values())
    assert out["probe"]["rank_target"].shape == (len(CF), arch.n_layers + 1, 2)


def test_the_trap_catches_an_implicit_device(tiny_llama, meta_default, monkeypatch):
    """The trap is real: padded inputs made without a device (as before the fix) fail the first forward."""
    import jeepkit.editing.engine as engine
    from jeepkit import forward

    model, tok, arch = tiny_llama
    with pytest.raises(RuntimeError, match="meta"):
        torch.ones(3, device="cpu") + torch.zeros(3)  # arithmetic mixing: fails by itself
    monkeypatch.setattr(engine, "freeze_prefix", lambda model, seqs, starts, pad, device, **kw:
                        forward.freeze_prefix(model, seqs, starts, pad, "meta", **kw))
    with pytest.raises(RuntimeError, match="meta"):
        engine.optimise_targets_batch(model, tok, arch, CF, engine.Objective(
            deltas=(engine.DeltaSpec("main", "layer", 2, "subject_last", 4.0, 0.5),), lr=0.5, steps=2,
            kl_factor=0.0), [])


# Largest deviation measured (tiny LLaMA / GPT-J, 6 methods): fp16 0.006, bf16 0.077 (ROME on GPT-J: bf16's
# 8-bit mantissa moves the optimised target, and a rank-one edit passes that on whole).
TOLERANCE = {torch.float16: 0.02, torch.bfloat16: 0.15}


@pytest.fixture(scope="module")
def fp32_runs(tiny_llama, tiny_gptj):
    return {fam: run_everything(*m) for fam, m in (("llama", tiny_llama), ("gptj", tiny_gptj))}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("family", ["llama", "gptj"])
def test_half_precision_runs_finite_and_close_to_float32(family, dtype, fp32_runs, tiny_llama, tiny_gptj):
    """Every method in bf16/fp16 on the CPU: finite deltas and NLLs, every per-prompt NLL of the edited model
    within TOLERANCE of the float32 run (|Δ| / (1 + |NLL|)), statistics within 2% (relative Frobenius norm).
    """
    model, tok, arch = {"llama": tiny_llama, "gptj": tiny_gptj}[family]
    half = copy.deepcopy(model).to(dtype)
    out = run_everything(half, tok, arch)
    ref = fp32_runs[family]
    for name, c in out["cov"].items():
        assert c.dtype == torch.float32, name  # statistics accumulate in float32 whatever the weights
        rel = float((c - ref["cov"][name]).norm() / ref["cov"][name].norm())
        assert rel < 0.02, (name, rel)
    for m in METHODS:
        got, want = out[m], ref[m]
        assert set(got["deltas"]) == set(want["deltas"]), m
        for name, d in got["deltas"].items():
            assert d.dtype == torch.float32 and torch.isfinite(d).all(), (m, name)
        for a, b in zip(got["per_case"], want["per_case"]):
            for role in ("rewrite", "paraphrases", "locality"):
                ga = a[role] if isinstance(a[role], list) else [a[role]]
                gb = b[role] if isinstance(b[role], list) else [b[role]]
                for x, y in zip(ga, gb):
                    if "nll_new" in x:
                        for k in ("nll_new", "nll_true"):
                            dev = abs(x[k] - y[k]) / (1 + abs(y[k]))
                            assert dev < TOLERANCE[dtype], (m, a["case_id"], role, k, x[k], y[k])
    probe = out["probe"]
    assert (probe["prob_target"] >= 0).all() and (probe["prob_target"] <= 1).all()
