"""KNE (seed 004): attribution against a by-hand integrated gradient, the global selection, the masked
row update with its α/√n scale, and the edit flipping a fact while unselected rows stay untouched."""

from __future__ import annotations

import copy

import pytest
import torch

import tiny
from jeepkit.data.schema import EditCase
from jeepkit.editing import kne
from jeepkit.editing.recipe import EditContext
from jeepkit.errors import ConfigError
from jeepkit.models import get_module
from jeepkit.tokens import locate_template

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CASES = [
    EditCase(case_id="c0", kind="counterfact", prompt="The mother tongue of {} is", subject="Danielle Darrieux",
             target_new="English", target_true="French"),
    EditCase(case_id="c2", kind="counterfact", prompt="{} is a city in", subject="Paris",
             target_new="Japan", target_true="France"),
]


def hp(**kw):
    return kne.Hparams.coerce({"p": 0.05, "m": 3, "alpha": 1.0, "lr": 0.05, "steps": 25, **kw})


def by_hand(model, tok, cases, name, m):
    """Eq. 5 literally: W̄ ⊙ (1/m) Σ_i ∂P(i/m·W̄)/∂W, summed over each row (one neuron) and over cases."""
    mod = get_module(model, name)
    W = mod.weight.detach().clone()
    total = torch.zeros(W.shape[0], dtype=torch.float64)
    for c in cases:
        loc = locate_template(tok, c.prompt, c.subject, answer=c.target_new)
        ids = torch.tensor([loc.ids[:-1]])
        for i in range(1, m + 1):
            Wp = (W * (i / m)).requires_grad_(True)
            with _swap(mod, Wp):
                logits = model(input_ids=ids, use_cache=False).logits[0].float()
            P = sum(torch.softmax(logits[p], -1)[t] for p, t in zip(loc.answer_positions, loc.answer_ids))
            (g,) = torch.autograd.grad(P, Wp)
            total += (W * g).sum(1).double() / m
    return total


class _swap:
    """Use tensor `w` as `mod.weight` inside the block (keeps the graph to `w`)."""

    def __init__(self, mod, w):
        self.mod, self.w = mod, w

    def __enter__(self):
        self.orig = self.mod.weight
        del self.mod.weight
        self.mod.weight = self.w

    def __exit__(self, *exc):
        del self.mod.weight
        self.mod.weight = self.orig


def test_attribution_is_the_integrated_gradient(tiny_model):
    model, tok, arch = tiny_model
    h = hp(m=3)
    names = kne.target_names(h, arch, range(arch.n_layers))
    locs = [locate_template(tok, c.prompt, c.subject, answer=c.target_new) for c in CASES]
    got = kne.attribution(model, tok, locs, names, h, rows_per_pass=5, progress=False)  # layers share a pass
    for name, a in zip(names, got):
        ref = by_hand(model, tok, CASES, name, 3)
        torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())


def test_selection_is_global_and_refuses_zero_neurons():
    attr = [torch.tensor([0.1, 5.0, -1.0], dtype=torch.float64), torch.tensor([3.0, 4.0, 0.2], dtype=torch.float64)]
    sel = kne.select(attr, 0.5, ["a", "b"])  # floor(0.5·6) = 3: 5.0, 4.0, 3.0
    assert [s.tolist() for s in sel] == [[1], [0, 1]]
    with pytest.raises(ConfigError, match="selects no neuron"):
        kne.select(attr, 0.1, ["a", "b"])
    with pytest.raises(Exception, match="non-finite"):
        kne.select([torch.tensor([float("nan"), 1.0], dtype=torch.float64)], 1.0, ["a"])


def test_edit_flips_the_fact_and_touches_only_selected_rows(tiny_model):
    model, tok, arch = tiny_model
    edited = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in edited.named_parameters()}
    c = CASES[0]
    lp0 = tiny.answer_logprob(edited, tok, c.prompt, c.subject, c.target_new)
    res = kne.edit(EditContext(edited, tok, arch), CASES, hp())
    lp1 = tiny.answer_logprob(edited, tok, c.prompt, c.subject, c.target_new)
    assert lp1 > lp0 + 1.0, (lp0, lp1)
    n_total = arch.n_layers * get_module(model, arch.name("mlp_out", 0)).out_features
    assert res.info["n_neurons"] == int(0.05 * n_total)
    assert res.info["final_loss"] < res.info["first_loss"]
    changed_rows = 0
    for name, p in edited.named_parameters():
        d = p.detach() - before[name]
        if name.removesuffix(".weight") in res.deltas:
            torch.testing.assert_close(d.float(), res.deltas[name.removesuffix(".weight")], rtol=0, atol=0)
            rows = (d != 0).any(dim=1)
            changed_rows += int(rows.sum())
        else:
            assert not bool((d != 0).any()), name  # nothing outside the declared matrices moves
    assert 0 < changed_rows <= res.info["n_neurons"]
    assert set(res.deltas) <= {n.removesuffix(".weight") for n in kne.SPEC.edited_parameters(hp(), arch, model)}


def test_alpha_scales_the_update(tiny_model):
    """Ŵ = W + (α/√n)ΔW: with Adam's first step (lr·g/(|g|+ε), g ∝ α) the applied update scales with α."""
    model, tok, arch = tiny_model
    a = kne.edit(EditContext(copy.deepcopy(model), tok, arch), CASES, hp(steps=1, alpha=1.0))
    b = kne.edit(EditContext(copy.deepcopy(model), tok, arch), CASES, hp(steps=1, alpha=2.0))
    assert set(a.deltas) == set(b.deltas)
    for k in a.deltas:  # up to ε: elements whose gradient is near 1e-8 differ
        top = float(a.deltas[k].abs().max())
        torch.testing.assert_close(b.deltas[k], 2 * a.deltas[k], rtol=1e-4, atol=1e-2 * top)


def test_module_choice_and_unknown_key(tiny_model):
    model, tok, arch = tiny_model
    up = kne.target_names(hp(module="up"), arch, [0])
    assert get_module(model, up[0]).out_features != get_module(model, arch.name("mlp_out", 0)).out_features
    if arch.family == "gptj":
        with pytest.raises(ConfigError, match="gate"):
            kne.target_names(hp(module="gate"), arch, [0])
    with pytest.raises(ConfigError, match="did you mean 'alpha'"):
        kne.Hparams.coerce({"alpah": 1.0})


def test_rows_per_pass_does_not_change_the_edit(tiny_model):
    """run.grad_rows only splits the passes: attribution and the accumulated loss are the same sums."""
    from jeepkit.runtime import Runtime

    model, tok, arch = tiny_model
    one = kne.edit(EditContext(copy.deepcopy(model), tok, arch, runtime=Runtime(grad_rows=1)), CASES, hp(steps=5))
    all_ = kne.edit(EditContext(copy.deepcopy(model), tok, arch, runtime=Runtime(grad_rows=64)), CASES, hp(steps=5))
    assert one.info["neurons_per_layer"] == all_.info["neurons_per_layer"]
    for k in one.deltas:
        torch.testing.assert_close(one.deltas[k], all_.deltas[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("module", ["down", "up"])
def test_attribution_scales_the_weight_not_the_bias(module):
    """GPT-J's fc_out / fc_in carry biases (zero only at HF's init): Eq. 5 scales W and leaves b alone, so the
    attribution must equal the weight-scaling integral on a model with non-zero biases, and a central finite
    difference of P along each row's own direction (d/dε P(row k of i/m·W̄ scaled by 1+ε)) agrees."""
    model, tok, arch = tiny.build("gptj", seed=3)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for l in range(arch.n_layers):
            for leaf in ("fc_in", "fc_out"):
                b = get_module(model, f"{arch.name('mlp', l)}.{leaf}").bias
                b.copy_(torch.randn(b.shape, generator=g) * 0.5)
    h = hp(m=2, module=module)
    names = kne.target_names(h, arch, [1, 2])
    locs = [locate_template(tok, c.prompt, c.subject, answer=c.target_new) for c in CASES]
    got = kne.attribution(model, tok, locs, names, h, rows_per_pass=3, progress=False)
    for name, a in zip(names, got):
        ref = by_hand(model, tok, CASES, name, 2)
        torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-7)
    mod = get_module(model, names[0])
    W = mod.weight.detach().clone().double()
    model.double()
    try:
        def P(weight):
            total = 0.0
            with torch.no_grad(), _swap(mod, weight):
                for loc in locs:
                    logits = model(input_ids=torch.tensor([loc.ids[:-1]]), use_cache=False).logits[0]
                    total += float(sum(torch.softmax(logits[p], -1)[t]
                                       for p, t in zip(loc.answer_positions, loc.answer_ids)))
            return total

        eps = 1e-4
        for k in torch.topk(got[0].abs(), 3).indices.tolist():
            fd = 0.0
            for i in (1, 2):
                up, down = W * (i / 2), W * (i / 2)
                up[k] *= 1 + eps
                down[k] *= 1 - eps
                # d/dε P at ε = 0 is (i/m)·w̄_k · ∂P/∂w_k; Eq. 5 wants w̄_k · ∂P/∂w_k, so divide by i/m
                fd += (P(up) - P(down)) / (2 * eps) / (i / 2) / 2
            assert fd == pytest.approx(float(got[0][k]), rel=1e-3, abs=1e-9), (k, fd, float(got[0][k]))
    finally:
        model.float()
