"""Real model, real data: SmolLM2-135M-Instruct edited on CounterFact records from ../shared/data.

These are the slow tests (marked `slow`): the model is prepared once per session, the covariance
statistics come from the first 200 lines of WikiText-2 (test split).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from jeepkit.editing.recipe import EditContext
from jeepkit.data.sources import resolve_dataset
from jeepkit.editing.engine import sample_prefixes
from jeepkit.editing.run import edit
from jeepkit.evaluation import evaluate_cases
from jeepkit.metrics import summarise
from jeepkit.models import load_model, model_identity, prepare_model
from jeepkit.stats import CorpusSpec, CovarianceStore, compute_stats

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not SHARED.exists(), reason=f"real data folder {SHARED} not found")]

MEMIT_HP = {"layers": [4, 5, 6, 7, 8, 9], "clamp": 0.9, "lambda": 4000, "lr": 0.5, "steps": 30,
            "weight_decay": 0.5, "kl_factor": 0.0625, "stop_loss": 0.05}
STATS_LAYERS = [4, 5, 6, 7, 8, 9, 18, 19, 20, 21, 22]


@pytest.fixture(scope="session")
def smol(tmp_path_factory):
    """(model, tok, arch, identity, cov) for SmolLM2 with covariance for every layer the tests edit."""
    root = tmp_path_factory.mktemp("smol")
    prepare_model({"source": "embedded"}, root / "model")
    model, tok, arch, card = load_model(root / "model")
    ident = model_identity(card)
    spec = CorpusSpec(corpus=f"file:{SHARED / 'wikitext' / 'wiki.test.raw'}", n_samples=200, max_length=256)
    modules = [arch.name("mlp_out", l) for l in STATS_LAYERS] + [arch.name("attn_out", l) for l in STATS_LAYERS]
    compute_stats(model, tok, arch, modules, spec, ident, root / "stats")
    return model, tok, arch, ident, CovarianceStore(root / "stats", spec, ident)


@pytest.fixture(scope="session")
def real_cases():
    cases, _ = resolve_dataset("counterfact", "mirror", mirror=SHARED, n=20)
    return cases


@pytest.fixture(scope="session")
def unedited_summary(smol, real_cases):
    model, tok, *_ = smol
    return summarise(evaluate_cases(model, tok, real_cases, progress=False), "counterfact")


def run_method(smol, cases, method, hp):
    model, tok, arch, ident, cov = smol
    edited = copy.deepcopy(model)
    prefixes = sample_prefixes(edited, tok, seed=0)
    res = edit(EditContext(edited, tok, arch, cov.get, prefixes, ident), method, cases, hp)
    summary = summarise(evaluate_cases(edited, tok, cases, progress=False), "counterfact")
    return summary, res


def test_memit_flips_real_counterfact_records(smol, real_cases, unedited_summary):
    summary, res = run_method(smol, real_cases, "memit", MEMIT_HP)
    es0, es1 = unedited_summary["ES"]["mean"], summary["ES"]["mean"]
    print(f"unedited ES {es0:.1f} GS {unedited_summary['GS']['mean']:.1f} LS {unedited_summary['LS']['mean']:.1f}; "
          f"MEMIT ES {es1:.1f} GS {summary['GS']['mean']:.1f} LS {summary['LS']['mean']:.1f}; "
          f"{res.info['target_seconds']:.0f} s targets")
    assert es1 >= 80.0
    assert es1 >= es0 + 40.0
    assert summary["LS"]["mean"] >= unedited_summary["LS"]["mean"] - 25.0  # unrelated facts mostly stay
    assert set(res.deltas) == {f"model.layers.{l}.mlp.down_proj" for l in MEMIT_HP["layers"]}


# ---------------------------------------------------------------- every method, every Table 4 variant

def smol_hparams(method: str) -> dict:
    """The hyperparameters the pipeline uses for SmolLM2 on CounterFact (params.yaml)."""
    from jeepkit.params import load_params, method_hparams

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    params["model"]["key"] = "smollm2"
    return method_hparams(params, method, "counterfact")


@pytest.fixture(scope="session")
def few_cases(real_cases):
    return real_cases[:8]


@pytest.fixture(scope="session")
def few_unedited(smol, few_cases):
    model, tok, *_ = smol
    return summarise(evaluate_cases(model, tok, few_cases, progress=False), "counterfact")


@pytest.mark.parametrize("method", ["ft_wd", "rome", "pmet", "alphaedit", "jeep"])
def test_method_raises_efficacy(smol, few_cases, few_unedited, method):
    summary, res = run_method(smol, few_cases, method, smol_hparams(method))
    es0, es1 = few_unedited["ES"]["mean"], summary["ES"]["mean"]
    print(f"{method}: ES {es0:.1f} -> {es1:.1f}, GS {summary['GS']['mean']:.1f}, LS {summary['LS']['mean']:.1f}")
    assert es1 >= es0 + 35.0
    assert res.deltas


@pytest.mark.parametrize("variant", ["wo_low", "wo_high", "wo_step2", "wo_step3", "separate", "even_spread",
                                     "mhsa_step3"])
def test_every_table4_variant_runs(smol, few_cases, variant):
    model, tok, arch, *_ = smol
    summary, res = run_method(smol, few_cases[:4], "jeep", {**smol_hparams("jeep"), "variant": variant})
    low = {arch.name("mlp_out", l) for l in smol_hparams("jeep")["layers_low"]}
    high_role = "attn_out" if variant == "mhsa_step3" else "mlp_out"
    high = {arch.name(high_role, l) for l in smol_hparams("jeep")["layers_high"]}
    expected = {"wo_low": high, "wo_step2": high, "wo_high": low, "wo_step3": low}.get(variant, low | high)
    assert set(res.deltas) == expected
    for s in ("ES", "GS", "LS"):
        assert summary[s]["mean"] is not None
