"""The preflight: per-stage memory, disk and hours for the paper profile, without weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jeepkit.memory import GB, known_dims
from jeepkit.params import load_params
from jeepkit.preflight import estimate
from jeepkit.profiles import profile_params

ROOT = Path(__file__).resolve().parents[1]


def _paper(model_key=None):
    return profile_params(load_params(ROOT / "params.yaml"), ROOT / "profiles" / "paper.yaml", model_key)


def test_paper_profile_costs_every_stage_with_the_covariance_on_disk():
    params = _paper()
    d = known_dims("llama7b", "float16")
    costs = {c.stage: c for c in estimate(params, d)}
    assert {"prepare_model", "stats", "probe", "edit@jeep-mcf-0", "edit@rome-zsre-2", "scaling@jeep-0"} <= set(costs)
    # LLaMA-7B down_proj: d_k = 11,008, 0.45 GiB (0.48 GB) per layer in fp32; attention o_proj: 4,096
    want = 9 * 11008 ** 2 * 4 + 9 * 4096 ** 2 * 4
    assert costs["stats"].disk == want and costs["stats"].tokens == 100_000 * 128
    assert abs(costs["stats"].weights - d.n_params * 2) < 1
    for c in costs.values():
        assert c.peak == 0 or c.peak >= c.weights  # the weights are always resident
        assert c.hours >= 0 and c.eval_hours >= 0
    # cached-target stages cost less than the stage that optimised the targets
    assert costs["ablation@wo_step3-0"].hours < costs["edit@jeep-mcf-0"].hours / 10


def _cli(*args):
    return subprocess.run([sys.executable, "stages/preflight.py", "--profile", "profiles/paper.yaml", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_small_gpu_names_the_stages_that_do_not_fit_and_the_budget_fixes_them():
    r = _cli("--gpu-mem", "24")
    assert r.returncode == 0, r.stderr
    assert "edit@jeep-mcf-0" in r.stdout and "DOES NOT FIT" in r.stdout and "run.memory_budget_gb: 21.6" in r.stdout
    fixed = _cli("--gpu-mem", "24", "--budget", "21.6")
    assert fixed.returncode == 0 and "DOES NOT FIT" not in fixed.stdout
    gptj = _cli("--model-key", "gptj")
    assert "model gptj" in gptj.stdout and "paper (App. D" in gptj.stdout and "total:" in gptj.stdout


def test_budget_lowers_the_predicted_peak():
    params = _paper()
    d = known_dims("llama7b", "float16")
    base = {c.stage: c.peak for c in estimate(params, d)}
    params["run"]["memory_budget_gb"] = 21.6
    small = {c.stage: c.peak for c in estimate(params, d)}
    assert small["edit@jeep-mcf-0"] < base["edit@jeep-mcf-0"] <= 80 * GB
    assert small["edit@jeep-mcf-0"] <= 21.6 * GB


def test_evaluation_beyond_teacher_forcing_is_costed(tmp_path, monkeypatch):
    """Free generation, MEMIT's sampled generation prompts and drift are in a run's evaluation hours: each adds
    what the decoding model says (a prompt pass, then per new token the larger of reading every weight and the
    step's FLOPs), and each is absent when off."""
    import json

    from jeepkit import preflight as pf
    from jeepkit.memory import Workload
    from jeepkit.runtime import Runtime

    monkeypatch.chdir(tmp_path)
    d, g, rt = known_dims("gptj", "float16"), pf.GPUS["a100"], Runtime(eval_rows=32, decode_rows=64)
    w = Workload(seq_len=40, eval_rows_per_case=26)
    run = {"stage": "edit@memit-counterfact-0", "method": "memit", "dataset": "counterfact", "overrides": {}}
    params = {"model": {"key": "gptj"}, "edit": {"free_generation_tokens": 8}}

    def decode(rows, new, prompt):
        prompt_s = rows * prompt * 2 * d.n_params / (g["half"] * pf.EFFICIENCY)
        step = max(d.n_params * d.bytes / g["bandwidth"], min(rows, 64) * 2 * d.n_params / (g["half"] * pf.EFFICIENCY))
        return prompt_s + -(-rows // 64) * new * step  # run.decode_rows prompts per decoding pass

    free, _ = pf._evaluation_extras(run, params, d, g, "half", rt, w, 100, 100)
    assert free == pytest.approx(decode(100 * 13, 8, 40))  # 13 probes a case, 8 tokens each
    assert pf._evaluation_extras(run, {**params, "edit": {"free_generation_tokens": 0}}, d, g, "half", rt, w,
                                 100, 100)[0] == 0.0
    # official CounterFact's generation prompts: 2 per record here, sampled up to max_length 30
    (tmp_path / "data/datasets").mkdir(parents=True)
    (tmp_path / "data/datasets/counterfact.jsonl").write_text(
        "\n".join(json.dumps({"generation_prompts": ["a", "b"]}) for _ in range(3)) + "\n")
    gen = {**params, "generation": {"max_length": 30}}
    with_gen, notes = pf._evaluation_extras(run, gen, d, g, "half", rt, w, 100, 100)
    assert with_gen - free == pytest.approx(decode(200, 10, 20)) and any("2 generation prompts" in n for n in notes)
    assert pf._evaluation_extras(run, {**gen, "generation": {"max_length": 0}}, d, g, "half", rt, w, 100, 100)[0] == free
    # drift: after each of the 2 chunks (the unedited model's pass is cached once per model and text)
    drift = {**params, "edit": {"free_generation_tokens": 8, "drift": True}, "drift": {"n_docs": 10, "max_length": 50}}
    with_drift = pf._evaluation_extras(run, drift, d, g, "half", rt, w, 100, 50)[0]
    assert with_drift - free == pytest.approx(2 * 10 * 50 * 2 * d.n_params / (g["half"] * pf.EFFICIENCY))
    assert pf._evaluation_extras({**run, "stage": "scaling@memit-0"}, drift, d, g, "half", rt, w, 100, 50)[0] == 0.0
    # an unedited run reports the cached unedited perplexity: no pass of its own
    assert pf._evaluation_extras({**run, "method": "none"}, drift, d, g, "half", rt, w, 100, 50)[0] == free
    # Table 4's ablation and Fig. 6's sweep score teacher-forced only (their stage commands say so)
    assert pf._evaluation_extras({**run, "scores": "teacher_forced"}, drift, d, g, "half", rt, w, 100, 50)[0] == 0.0
    # the caller's per-dataset count of generation prompts stands in for reading the file
    assert pf._evaluation_extras(run, gen, d, g, "half", rt, w, 100, 100, prompts_per_case=2.0)[0] == with_gen
    assert pf._evaluation_extras(run, gen, d, g, "half", rt, w, 100, 100, prompts_per_case=0.0)[0] == free
