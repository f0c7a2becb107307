"""FT-WD (spec §4.4) on a tiny GPT-J and a tiny LLaMA.

The tiny models cannot push a target's probability much above 0.5 (their hidden states are
normalised and the LM head is small), so loss thresholds below are chosen from measured losses
rather than the paper's 0.1.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

import tiny
from jeepkit.editing.recipe import EditContext
from jeepkit.data.schema import EditCase
from jeepkit.editing import ft_wd
from jeepkit.errors import ConfigError
from jeepkit.tokens import locate_template

pytestmark = pytest.mark.usefixtures("torch_one_thread")

LAYER = 2
CASES = [
    EditCase(case_id="c0", kind="counterfact", prompt="The mother tongue of {} is", subject="Danielle Darrieux",
             target_new="English", target_true="French"),
    EditCase(case_id="c1", kind="counterfact", prompt="The author of {} is", subject="1984",
             target_new="Danielle Darrieux", target_true="George Orwell"),
    EditCase(case_id="c2", kind="counterfact", prompt="{} is a city in", subject="Paris",
             target_new="Japan", target_true="France"),
]
HP = {"layer": LAYER, "lr": 1e-2, "epochs": 4, "batch_size": 2, "loss_threshold": 0.0, "progress": False}


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@torch.no_grad()
def case_loss(model, tok, case):
    """Mean NLL of the target tokens of `prompt + " " + target`, computed by hand."""
    loc = locate_template(tok, case.prompt, case.subject, answer=case.target_new)
    logp = torch.log_softmax(model(input_ids=torch.tensor([loc.ids]), use_cache=False).logits[0].float(), -1)
    return float(-torch.stack([logp[p, t] for p, t in zip(loc.answer_positions, loc.answer_ids)]).mean())


def test_defaults_and_power_law():
    hp = ft_wd.resolve_hp({"layer": 23})
    assert (hp["epochs"], hp["batch_size"], hp["loss_threshold"], hp["apply_wd_power_law"]) == (25, 32, 0.1, False)
    assert ft_wd.weight_decay(hp, 10_000) == 0.0  # code-faithful: the power law is never applied
    wd = ft_wd.weight_decay({**hp, "apply_wd_power_law": True}, 10_000)
    assert wd == pytest.approx(10_000 ** -0.87028798 * math.exp(0.15589562), rel=1e-12)
    assert wd == pytest.approx(3.9e-4, rel=0.05)  # spec §4.4
    assert ft_wd.power_law_weight_decay(1) == pytest.approx(math.exp(0.15589562))
    with pytest.raises(ConfigError, match="layer"):
        ft_wd.resolve_hp({"lr": 1.0})


def test_batch_loss_is_target_token_cross_entropy(tiny_model):
    model, tok, _ = tiny_model
    locs = ft_wd.encode(tok, CASES)
    assert len(locs[1].answer_ids) >= 2  # a multi-token target
    with torch.no_grad():
        got = float(ft_wd.batch_loss(model, tok, locs))
    per_case = [case_loss(model, tok, c) for c in CASES]
    n_tok = [len(l.answer_ids) for l in locs]
    want = sum(l * n for l, n in zip(per_case, n_tok)) / sum(n_tok)  # mean over all target tokens
    assert got == pytest.approx(want, rel=1e-4)


def test_only_the_chosen_layer_changes(editable_model):
    model, tok, arch = editable_model
    before = snapshot(model)
    lp_before = [tiny.answer_logprob(model, tok, c.prompt, c.subject, c.target_new) for c in CASES]
    res = ft_wd.edit(EditContext(model, tok, arch), CASES, HP)
    prefix = arch.name("layer", LAYER) + "."
    after = dict(model.named_parameters())
    layer_params = {n for n in before if n.startswith(prefix)}
    assert layer_params and set(res.deltas) <= layer_params
    assert any(".mlp." in n for n in res.deltas) and any("attn" in n for n in res.deltas)
    assert any("norm" in n or "ln_" in n for n in res.deltas)  # norms are trained too
    if arch.family == "gptj":
        assert any(n.endswith(".bias") for n in res.deltas)
    for n, w in before.items():
        if n in res.deltas:
            d = res.deltas[n]
            assert d.dtype == torch.float32 and d.shape == w.shape and d.abs().max() > 0
            torch.testing.assert_close(after[n].detach() - w, d, atol=0, rtol=0)
        else:
            assert torch.equal(after[n].detach(), w), n
    assert not any(p.requires_grad for p in model.parameters())  # restored
    assert all(p.grad is None for p in model.parameters())
    lp_after = [tiny.answer_logprob(model, tok, c.prompt, c.subject, c.target_new) for c in CASES]
    assert all(a > b + 0.5 for a, b in zip(lp_after, lp_before)), (lp_before, lp_after)
    assert res.info["epochs_run"] == HP["epochs"] and res.info["weight_decay"] == 0.0
    assert res.info["epoch_losses"][-1] < res.info["epoch_losses"][0]
    json.dumps(res.info)


class RecordingAdam(torch.optim.Adam):
    made: list[dict] = []

    def __init__(self, params, **kw):
        super().__init__(params, **kw)
        RecordingAdam.made.append(kw)


def test_power_law_flag_sets_adam_weight_decay(tiny_llama, monkeypatch):
    model, tok, arch = tiny_llama
    monkeypatch.setattr(ft_wd, "Adam", RecordingAdam)
    RecordingAdam.made.clear()
    hp = {**HP, "epochs": 2}
    m_off, m_on = copy.deepcopy(model), copy.deepcopy(model)
    off = ft_wd.edit(EditContext(m_off, tok, arch), CASES, hp)
    on = ft_wd.edit(EditContext(m_on, tok, arch), CASES, {**hp, "apply_wd_power_law": True})
    expect = len(CASES) ** -0.87028798 * math.exp(0.15589562)
    assert [m["weight_decay"] for m in RecordingAdam.made] == [0.0, pytest.approx(expect, rel=1e-9)]
    assert all(m["lr"] == hp["lr"] for m in RecordingAdam.made)
    assert on.info["weight_decay"] == pytest.approx(expect)
    # and it changes the training (coupled L2 in Adam's gradient)
    name = next(iter(off.deltas))
    assert (on.deltas[name] - off.deltas[name]).abs().max() > 1e-6


def test_loss_threshold_skips_batches(tiny_model):
    model, tok, arch = tiny_model
    losses = [case_loss(model, tok, c) for c in CASES]
    order = sorted(range(3), key=losses.__getitem__)
    lo, hi = losses[order[0]], losses[order[2]]
    thr = (lo + hi) / 2
    # the low-loss case first: it is skipped, so the high-loss one is also scored on the unchanged model
    two = [CASES[order[0]], CASES[order[2]]]
    m = copy.deepcopy(model)
    res = ft_wd.edit(EditContext(m, tok, arch), two, {**HP, "batch_size": 1, "epochs": 1, "loss_threshold": thr})
    assert res.info["batches_skipped"] == [1]
    assert res.info["epoch_losses"][0] == pytest.approx((lo + hi) / 2, rel=1e-4)
    assert res.deltas  # the second batch was trained
    # the same with the threshold below both: no skip, and a different result
    m2 = copy.deepcopy(model)
    res2 = ft_wd.edit(EditContext(m2, tok, arch), two, {**HP, "batch_size": 1, "epochs": 1, "loss_threshold": 0.0})
    assert res2.info["batches_skipped"] == [0]
    n = next(iter(res.deltas))
    assert (res2.deltas[n] - res.deltas[n]).abs().max() > 1e-6
    # above every loss: all batches skipped, nothing changes, training stops after one epoch
    m = copy.deepcopy(model)
    before = snapshot(m)
    res = ft_wd.edit(EditContext(m, tok, arch), CASES, {**HP, "batch_size": 1, "epochs": 5, "loss_threshold": 1e9})
    assert res.deltas == {} and res.info["epochs_run"] == 1 and res.info["batches_skipped"] == [3]
    assert all(torch.equal(p.detach(), before[n]) for n, p in m.named_parameters())


def test_stops_when_epoch_loss_below_threshold(tiny_model):
    model, tok, arch = tiny_model
    full = {**HP, "batch_size": len(CASES), "epochs": 6}  # one batch per epoch: batch loss = epoch loss
    ref = ft_wd.edit(EditContext(copy.deepcopy(model), tok, arch), CASES, full)
    L = ref.info["epoch_losses"]
    assert all(a > b for a, b in zip(L, L[1:]))
    thr = (L[2] + L[3]) / 2
    m = copy.deepcopy(model)
    res = ft_wd.edit(EditContext(m, tok, arch), CASES, {**full, "loss_threshold": thr})
    assert res.info["epochs_run"] == 4 and res.info["batches_skipped"] == [0, 0, 0, 1]
    # epochs 0-2 trained, epoch 3 was below the threshold: the result equals 3 epochs without a threshold
    three = ft_wd.edit(EditContext(copy.deepcopy(model), tok, arch), CASES, {**full, "epochs": 3})
    assert set(res.deltas) == set(three.deltas)
    for n in res.deltas:
        torch.testing.assert_close(res.deltas[n], three.deltas[n], atol=1e-6, rtol=1e-5)


def test_deterministic_given_seed(tiny_gptj):
    model, tok, arch = tiny_gptj
    hp = {**HP, "batch_size": 1, "epochs": 3, "shuffle": True}

    def run(**kw):
        return ft_wd.edit(EditContext(copy.deepcopy(model), tok, arch), CASES, {**hp, **kw}).deltas

    a, b, c = run(seed=0), run(seed=0), run(seed=1)
    assert set(a) == set(b) == set(c)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any((a[n] - c[n]).abs().max() > 1e-6 for n in a)  # another seed, another batch order
    # without shuffling (the reference's fixed order) the seed is irrelevant
    d, e = run(seed=0, shuffle=False), run(seed=1, shuffle=False)
    assert all(torch.equal(d[n], e[n]) for n in d)


def test_layer_prefix_is_exact():
    """Layer 2 must not also train layers 20-29 (the reference matches a substring)."""
    from torch import nn

    from jeepkit.models import Arch

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Module()
            self.model.layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(21)])

    arch = Arch(family="llama", layer="model.layers.{}", mlp="", mlp_out="", attn="", attn_out="", final_norm="",
                lm_head="", embed="", parallel_block=False, n_layers=21, hidden_size=2)
    names = set(ft_wd.trained_parameters(M(), arch, 2))
    assert names == {"model.layers.2.weight", "model.layers.2.bias"}
