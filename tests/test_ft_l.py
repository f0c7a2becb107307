"""FT-L and FT-M (KnowEdit survey §3.4) on the tiny GPT-J and LLaMA: the two losses against hand
computations, the edit lowering the target loss, the norm constraint, and half precision."""

from __future__ import annotations

import copy

import pytest
import torch

from jeepkit.data.schema import EditCase
from jeepkit.editing import ft_l
from jeepkit.editing.recipe import EditContext
from jeepkit.editing.run import edit, method_spec
from jeepkit.tokens import locate_template

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CASES = [
    EditCase(case_id="c0", kind="counterfact", prompt="The mother tongue of {} is", subject="Danielle Darrieux",
             target_new="English", target_true="French"),
    EditCase(case_id="c1", kind="counterfact", prompt="The author of {} is", subject="1984",
             target_new="Danielle Darrieux", target_true="George Orwell"),
]
HP = {"layer": 2, "lr": 5e-2, "steps": 6, "batch_size": 1, "stop_loss": 0.0}


def _locs(tok):
    return [locate_template(tok, c.prompt, c.subject, answer=c.target_new) for c in CASES]


@torch.no_grad()
def by_hand(model, tok, objective):
    """Per-request loss from one plain full forward per request, averaged over the requests."""
    out = []
    for loc in _locs(tok):
        if objective == "prompt_last":
            logits = model(input_ids=torch.tensor([loc.ids[:loc.prompt_last + 1]]), use_cache=False).logits[0, -1]
            logp = torch.log_softmax(logits.float(), -1)
            out.append(-torch.stack([logp[t] for t in loc.answer_ids]).mean())
        else:
            logp = torch.log_softmax(model(input_ids=torch.tensor([loc.ids]), use_cache=False).logits[0].float(), -1)
            out.append(-torch.stack([logp[p, t] for p, t in zip(loc.answer_positions, loc.answer_ids)]).mean())
    return float(torch.stack(out).mean())


@pytest.mark.parametrize("objective,loss_fn", [("prompt_last", ft_l.prompt_last_loss),
                                                ("target_new", ft_l.target_new_loss)])
def test_batched_losses_equal_the_hand_computation(tiny_model, objective, loss_fn):
    model, tok, _ = tiny_model
    with torch.no_grad():
        got = float(loss_fn(model, tok, _locs(tok)))  # both requests in one padded batch
    assert got == pytest.approx(by_hand(model, tok, objective), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("method,objective", [("ft_l", "prompt_last"), ("ft_m", "target_new")])
def test_edit_lowers_its_loss_and_changes_one_matrix(editable_model, method, objective):
    model, tok, arch = editable_model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss0 = by_hand(model, tok, objective)
    res = edit(EditContext(model, tok, arch), method, CASES, HP)
    name = arch.name("mlp_out", 2)
    assert list(res.deltas) == [name] and res.info["steps_run"] == 6
    assert by_hand(model, tok, objective) < 0.8 * loss0
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed == [name + ".weight"]
    assert torch.equal(res.deltas[name], model.get_parameter(name + ".weight") - before[name + ".weight"])
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())


def test_norm_constraint_bounds_every_weight_change(editable_model):
    model, tok, arch = editable_model
    res = edit(EditContext(model, tok, arch), "ft_m", CASES, {**HP, "norm_constraint": 1e-3})
    d = res.deltas[arch.name("mlp_out", 2)]
    assert 0 < float(d.abs().max()) <= 1e-3 + 1e-7
    free = copy.deepcopy(editable_model[0])
    # (the unconstrained edit from the same start moves further)
    res_free = edit(EditContext(free, tok, arch), "ft_m", CASES, HP)
    assert float(res_free.deltas[arch.name("mlp_out", 2)].abs().max()) > 1e-3


def test_stop_loss_skips_steps_and_bf16_edits_stay_finite(tiny_model):
    model, tok, arch = tiny_model
    m = copy.deepcopy(model)
    res = edit(EditContext(m, tok, arch), "ft_m", CASES, {**HP, "stop_loss": 1e9})
    assert res.info["steps_run"] == 1 and not res.deltas[arch.name("mlp_out", 2)].any()
    half = copy.deepcopy(model).to(torch.bfloat16)
    res = edit(EditContext(half, tok, arch), "ft_l", CASES, HP)
    d = res.deltas[arch.name("mlp_out", 2)]
    assert torch.isfinite(d).all() and d.abs().max() > 0


def test_specs_share_hyperparameters_but_not_names():
    a, b = method_spec("ft_l"), method_spec("ft_m")
    assert a.keys() == b.keys() and a.label == "FT-L" and b.label == "FT-M"
    assert a.hparams.from_dict({"layer": 3}).lr == 5e-4  # EasyEdit's default


def test_the_two_losses_coincide_for_one_token_targets_only(tiny_model):
    """With a one-token target, 'last-token distribution asked for every target token' and 'teacher-forced
    target tokens' are the same loss (so FT-L and FT-M make the same edit); with several tokens they differ."""
    model, tok, _ = tiny_model
    locs = _locs(tok)
    one = [l for l in locs if len(l.answer_ids) == 1]
    many = [l for l in locs if len(l.answer_ids) > 1]
    assert one and many, [len(l.answer_ids) for l in locs]
    with torch.no_grad():
        assert float(ft_l.prompt_last_loss(model, tok, one)) == pytest.approx(float(ft_l.target_new_loss(model, tok, one)),
                                                                              rel=1e-6)
        assert abs(float(ft_l.prompt_last_loss(model, tok, many)) - float(ft_l.target_new_loss(model, tok, many))) > 1e-3


@pytest.mark.parametrize("method", ["ft_l", "ft_m"])
def test_train_bias_trains_the_matrix_bias_where_it_exists(editable_model, method):
    """EasyEdit's GPT-J pattern `transformer.h.{}.mlp.fc_out` trains fc_out's weight and bias; a bias-free
    LLaMA down_proj trains its weight only. The declared parameters say the same, and the delta of each
    trained tensor is exactly its change."""
    from jeepkit.editing.deltas import Pristine

    model, tok, arch = editable_model
    name = arch.name("mlp_out", 2)
    has_bias = get_bias(model, name) is not None
    spec = method_spec(method)
    declared = spec.edited_parameters({**HP, "train_bias": True}, arch, model)
    assert declared == [name + ".weight"] + ([name + ".bias"] if has_bias else [])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pristine = Pristine(model, declared)
    res = edit(EditContext(model, tok, arch), method, CASES, {**HP, "train_bias": True})
    changed = sorted(n for n, p in model.named_parameters() if not torch.equal(p, before[n]))
    assert changed == sorted(declared)
    assert sorted(res.deltas) == sorted([name] + ([name + ".bias"] if has_bias else []))
    if has_bias:
        b = name + ".bias"
        assert torch.equal(res.deltas[b], model.get_parameter(b) - before[b]) and res.deltas[b].abs().max() > 0
        assert res.info["n_trained_elements"] == model.get_parameter(name + ".weight").numel() + before[b].numel()
    pristine.restore(res.deltas)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def get_bias(model, name):
    return getattr(model.get_submodule(name), "bias", None)


def test_gptj_ft_settings_are_easyedits():
    """EasyEdit's hparams/FT/gpt-j-6B.yaml (every version since 2023-07) and KNE App. A.1: layer 21, and the
    module pattern trains fc_out's bias too."""
    import yaml
    from pathlib import Path

    hp = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["hparams"]["gptj"]
    for method in ("ft_l", "ft_m"):
        assert hp[method]["layer"] == 21 and hp[method]["train_bias"] is True, hp[method]
