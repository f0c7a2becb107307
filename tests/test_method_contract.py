"""Every registered method keeps the contract it declares (editing/spec.py).

Run on a tiny model, a method may read only the covariance statistics its spec lists and change only
the parameters its spec lists; its hyperparameter class is a frozen dataclass with the spec's name,
whose defaults build (with params.yaml's required keys) and which refuses a misspelt key by name.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import tiny
from jeepkit.editing.hparams import HParams
from jeepkit.editing.recipe import EditContext
from jeepkit.editing.run import METHODS, check_params, edit, method_spec
from jeepkit.editing.spec import KINDS, STAT_ROLES
from jeepkit.errors import ConfigError
from jeepkit.params import load_params, method_hparams
from jeepkit.stats import accumulate_second_moments

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = {  # a 4-layer model's settings for every registered method; a new method must add its own here
    "none": {},
    "ft_wd": {"layer": 2, "lr": 1e-2, "epochs": 2, "batch_size": 2, "loss_threshold": 0.0, "progress": False},
    "ft_l": {"layer": 2, "lr": 1e-2, "steps": 2},
    "ft_m": {"layer": 2, "lr": 1e-2, "steps": 2},
    "rome": {"layer": 1, "steps": 3, "n_prefix_short": 1, "n_prefix_long": 1, "progress": False},
    "memit": {"layers": [1, 2], "clamp": 4.0, "lambda": 10.0, "lr": 0.5, "steps": 3, "weight_decay": 0.5,
              "kl_factor": 0.0625},
    "pmet": {"layers": [1, 2], "clamp": 4.0, "lambda": 10.0, "lr": 0.5, "steps": 3, "weight_decay": 0.5,
             "kl_factor": 1.0},
    "alphaedit": {"layers": [1, 2], "clamp": 4.0, "lambda": 10.0, "lr": 0.5, "steps": 3, "weight_decay": 0.5,
                  "kl_factor": 0.0625},
    "jeep": {"layers_low": [0, 1], "layers_high": [3], "clamp_low": 4.0, "clamp_high": 2.0, "lambda_low": 10.0,
             "lambda_high": 10.0, "weight_decay_low": 0.5, "weight_decay_high": 0.5, "kl_factor_low": 0.0625,
             "lr": 0.5, "steps": 3},
    "kne": {"p": 0.05, "m": 2, "steps": 3},
}


@pytest.fixture(scope="module")
def covariances(tiny_gptj, tiny_llama):
    """Second moments of every layer's MLP and attention output inputs (with a ridge: the corpus is small)."""
    out = {}
    for model, tok, arch in (tiny_gptj, tiny_llama):
        names = [arch.name(role, l) for role in STAT_ROLES for l in range(arch.n_layers)]
        moments, _ = accumulate_second_moments(model, tok, arch, names, tiny.CORPUS, max_length=64, dtype="float64")
        for n, c in moments.items():
            out[n] = c + 1e-2 * c.diagonal().mean() * torch.eye(c.shape[0], dtype=c.dtype)
    return out


def test_every_method_has_tiny_settings_and_a_well_formed_spec():
    assert set(TINY) == set(METHODS), "add the new method's tiny-model settings to TINY"
    for name, spec in METHODS.items():
        assert spec.name == name and spec.label and spec.kind in KINDS
        assert issubclass(spec.hparams, HParams) and spec.hparams.__dataclass_params__.frozen
        assert spec.hparams.method == name
        hp = spec.hparams.coerce(TINY[name])
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(hp, dataclasses.fields(hp)[0].name, None)
        for role, _ in spec.statistics(hp):
            assert role in STAT_ROLES
        if spec.kind == "closed_form":
            assert spec.objectives(hp)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_unknown_key_names_method_key_and_nearest(name):
    spec = method_spec(name)
    key = max(spec.keys(), key=len)
    typo = key[:-1] + ("x" if key[-1] != "x" else "y")
    with pytest.raises(ConfigError, match=rf"{typo}: unknown key of method '{name}'; did you mean '{key}'"):
        spec.hparams.coerce({**TINY[name], typo: 1})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_reads_and_changes_only_what_it_declares(name, tiny_model, covariances):
    model, tok, arch = tiny_model
    spec = method_spec(name)
    hp = spec.hparams.coerce(TINY[name])
    declared_stats = {arch.name(role, layer) for role, layer in spec.statistics(hp)}
    read: list[str] = []

    def cov(module: str) -> torch.Tensor:
        read.append(module)
        return covariances[module]

    edited = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in edited.named_parameters()}
    res = edit(EditContext(edited, tok, arch, cov, tiny.PREFIXES, {"id": "tiny"}), name, [tiny.CASE, tiny.CASE_B], hp)
    assert set(read) <= declared_stats, f"{name} read statistics it does not declare: {set(read) - declared_stats}"
    declared = set(spec.edited_parameters(hp, arch, edited))
    moved = {n for n, p in edited.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert moved <= declared, f"{name} changed parameters it does not declare: {moved - declared}"
    keys = {k if k in before else f"{k}.weight" for k in res.deltas}
    assert keys <= declared and moved <= keys
    if spec.kind != "unedited":
        assert moved, f"{name} changed nothing"
    for layer in spec.touched_layers(hp, arch.n_layers):
        assert 0 <= layer < arch.n_layers


def test_params_yaml_blocks_build_for_every_method_and_model():
    params = load_params("params.yaml")
    check_params(params)
    for model_key, block in params["hparams"].items():
        for name in params["edit"]["methods"]:
            assert name in block, f"hparams.{model_key} lacks {name}"
            for ds in params["data"]["datasets"]:
                method_spec(name).hparams.from_dict(method_hparams({**params, "model": {"key": model_key}}, name, ds))


def test_stage_groups_are_read_from_the_params_schema():
    """Every group whose schema has `methods` is checked the same way (no list of group names to keep in step):
    a misspelt method in any group is refused like one in `edit`, and one without hparams is named."""
    from jeepkit.config import DATASET_SECTIONS, METHOD_SECTIONS, validate_params

    params = load_params("params.yaml")
    assert {"edit", "scaling", "sequential"} <= set(METHOD_SECTIONS) and "ablation" in DATASET_SECTIONS
    assert {s for s in params if isinstance(params[s], dict) and "methods" in params[s]} <= set(METHOD_SECTIONS)
    for section in METHOD_SECTIONS:
        if section not in params:
            continue
        bad = copy.deepcopy(params)
        bad[section]["methods"] = ["memitt"]
        with pytest.raises(ConfigError, match=rf"{section}\.methods: unknown method 'memitt'.*memit"):
            check_params(bad)
    bad = copy.deepcopy(params)
    for section in METHOD_SECTIONS:
        if section in bad:
            bad[section]["methods"] = [m for m in bad[section]["methods"] if m != "kne"]
    del bad["hparams"][bad["model"]["key"]]["kne"]
    validate_params(copy.deepcopy(bad))  # nobody runs KNE: no block needed
    bad["sequential"]["methods"] = ["kne"]
    with pytest.raises(ConfigError, match=r"hparams\.smollm2\.kne: missing"):
        validate_params(bad)


def test_report_labels_follow_the_registry():
    """The reports' copy of the method labels (kept so report notebooks need not import the editors) is the
    registry's, in its order: a method registered without its label here fails."""
    import sys

    from jeepkit.reporting.labels import METHOD_LABELS

    assert list(METHOD_LABELS.items()) == [(name, spec.label) for name, spec in METHODS.items()]
    code = "import sys, jeepkit.reporting, jeepkit.ledger; print('torch' in sys.modules)"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"  # the report stages stay light
