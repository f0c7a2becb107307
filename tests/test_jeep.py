"""JEEP (spec §3, Table 4 ablations of §10) on a tiny GPT-J and a tiny LLaMA.

What is checked:
  * where δ′ and δ* live (role, layer, token position) for every `high_anchor` and for "w/ MHSA in Step 3",
    both as configuration (DeltaSpec) and behaviourally (recorded init values, the loss they produce);
  * the regions of every Table 4 variant (which exist, spread, λ, the role the residual is read from,
    the edited matrix), and that ablations sharing the joint objective share cached targets;
  * end to end, through `run.edit`, that the weight updates equal an independent re-implementation of
    Steps 2-3 (keys and current values read with raw hooks on single unpadded prompts, the closed form
    written as an explicit inverse), that nothing else moves, and that the edit raises the target.

Manual references use plain `register_forward_hook` on single, unpadded prompts, so they share neither
the padding nor the hook helpers with the code under test.
"""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch

import tiny
from tiny import CASE, CASE_B, PREFIXES
from jeepkit.editing.recipe import EditContext
from jeepkit.editing import jeep
from jeepkit.editing import recipe as recipe_mod
from jeepkit.editing.engine import KL_TEMPLATE, DeltaSpec, optimise_targets_batch
from jeepkit.editing.run import edit
from jeepkit.editing.targets import TargetCache
from jeepkit.errors import ConfigError
from jeepkit.stats import accumulate_second_moments
from jeepkit.tokens import locate_template

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CASES = [CASE, CASE_B]
LOW, HIGH = (0, 1), (2, 3)  # tiny models have 4 layers


def jhp(**kw):
    """Small-model JEEP hyperparameters. Low and high values differ so that a swap is visible."""
    base = dict(layers_low=list(LOW), layers_high=list(HIGH), clamp_low=4.0, clamp_high=3.0,
                weight_decay_low=0.01, weight_decay_high=0.02, lr=0.5, steps=10, kl_factor_low=0.0625,
                min_prob=0.9, lambda_low=1.0, lambda_high=2.0)
    base.update(kw)
    return base


# Spec §3.3: label -> (hp overrides, role δ* is added to, role Step 3 reads `cur` from, edited Linear role).
ANCHORS = {
    "attn_as_released": ({"high_anchor": "attn_as_released"}, "attn", "mlp", "mlp_out"),
    "mlp_consistent": ({"high_anchor": "mlp_consistent"}, "mlp", "mlp", "mlp_out"),
    "resid_paper": ({"high_anchor": "resid_paper"}, "layer", "layer", "mlp_out"),
    "mhsa_step3": ({"variant": "mhsa_step3"}, "attn", "attn", "attn_out"),
}

# Spec §10 Table 4: variant -> (deltas optimised, {region: spread of its divisor}).
EXPECTED = {
    "full": ({"low", "high"}, {"low": "sqrt", "high": "linear"}),
    "wo_low": ({"high"}, {"high": "linear"}),  # w/o δ′ & Step 2
    "wo_high": ({"low"}, {"low": "sqrt"}),  # w/o δ* & Step 3
    "wo_step2": ({"low", "high"}, {"high": "linear"}),
    "wo_step3": ({"low", "high"}, {"low": "sqrt"}),
    "separate": ({"low", "high"}, {"low": "sqrt", "high": "linear"}),
    "even_spread": ({"low", "high"}, {"low": "linear", "high": "linear"}),
    "mhsa_step3": ({"low", "high"}, {"low": "sqrt", "high": "linear"}),
}


def divisors(spread, n):
    return [float(n - i) if spread == "linear" else math.sqrt(n - i) for i in range(n)]


def high_roles(hp):
    """(δ* role, cur role, edited role) the spec prescribes for hp."""
    if hp.get("variant") == "mhsa_step3":
        return ANCHORS["mhsa_step3"][1:]
    return ANCHORS[hp.get("high_anchor", "attn_as_released")][1:]


# ---------------------------------------------------------------- manual references


from manual import _adder, _out, logits_with, module_out, raw_hooks, read_in_out  # noqa: F401


def _position(loc, position):
    return loc.subject_last if position == "subject_last" else loc.prompt_last


@torch.no_grad()
def manual_region(model, tok, arch, cases, prefixes, *, layers, key_position, cur_role, edit_role, lam, divs, Z, cov):
    """Steps 2/3 of spec §3.3 written out: for each layer ascending, K = template-grouped keys (½ bare,
    ½ mean of prefixed), cur = `cur_role` output at the top layer on the bare prompt, R = (z − cur)/div,
    ΔW = R Kᵀ (λC + KKᵀ)⁻¹. `model` is edited in place as we go; returns the expected ΔW per module."""
    out = {}
    top = max(layers)
    for i, layer in enumerate(layers):
        key_mod, cur_mod = arch.name(edit_role, layer), arch.name(cur_role, top)
        ks_all, curs = [], []
        for c in cases:
            ks = []
            for j, p in enumerate([""] + list(prefixes)):
                loc = locate_template(tok, c.prompt, c.subject, prefix=p)
                k, cur = read_in_out(model, loc.ids, _position(loc, key_position), key_mod, cur_mod)
                ks.append(k)
                if j == 0:
                    curs.append(cur)
            ks = torch.stack(ks)
            ks_all.append(0.5 * ks[0] + 0.5 * ks[1:].mean(0))
        K = torch.stack(ks_all, 1).double()
        R = (Z.T.double() - torch.stack(curs, 1).double()) / divs[i]
        dW = R @ K.T @ torch.linalg.inv(lam * cov(key_mod).double() + K @ K.T)
        out[key_mod] = dW
        model.get_submodule(key_mod).weight.add_(dW.float())
    return out


def assert_delta_close(got, want, what=""):
    scale = float(want.abs().max())
    assert scale > 0, what
    torch.testing.assert_close(got.double(), want, atol=2e-4 * scale, rtol=2e-3, msg=lambda m: f"{what}: {m}")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def covariances(tiny_gptj, tiny_llama):
    """Second moments of every mlp_out and attn_out input on the tiny corpus, plus a small ridge (the corpus
    has fewer tokens than d_k)."""
    out = {}
    for model, tok, arch in (tiny_gptj, tiny_llama):
        names = [arch.name(r, l) for r in ("mlp_out", "attn_out") for l in range(arch.n_layers)]
        moments, _ = accumulate_second_moments(model, tok, arch, names, tiny.CORPUS, max_length=64, dtype="float64")
        for n, c in moments.items():
            out[n] = c + 1e-2 * c.diagonal().mean() * torch.eye(c.shape[0], dtype=c.dtype)
    return out


@pytest.fixture
def target_spy(monkeypatch):
    """Records every target optimisation `run` performs: the objective and the TargetResults."""
    calls = []
    real = recipe_mod.optimise_targets_batch

    def spy(model, tok, arch, cases, objective, prefixes):
        res = real(model, tok, arch, cases, objective, prefixes)
        calls.append({"objective": objective, "results": res, "cases": list(cases)})
        return res

    monkeypatch.setattr(recipe_mod, "optimise_targets_batch", spy)
    return calls


def identity(arch):
    return {"id": f"tiny-{arch.family}", "revision": "test"}


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("label", sorted(ANCHORS))
def test_objective_delta_specs(label):
    over, role, _, _ = ANCHORS[label]
    h = jhp(**over)
    obj = jeep.objective(h)
    assert obj.deltas == (
        DeltaSpec("low", role="mlp", layer=max(LOW), position="subject_last", clamp=h["clamp_low"],
                  weight_decay=h["weight_decay_low"]),
        DeltaSpec("high", role=role, layer=max(HIGH), position="prompt_last", clamp=h["clamp_high"],
                  weight_decay=h["weight_decay_high"]),
    )
    # one Adam, the KL on δ′ only (the reference code's kl_factor_high is unused, and refused here), JEEP's probability early stop
    assert (obj.lr, obj.steps, obj.kl_factor) == (h["lr"], h["steps"], h["kl_factor_low"])
    assert (obj.stop_rule, obj.stop_value, obj.nll_schedule) == ("prob", h["min_prob"], "constant")
    # layers given unsorted: the anchor is still the deepest layer of each region
    obj2 = jeep.objective(jhp(**over, layers_low=[5, 7, 6], layers_high=[12, 10]))
    assert [(d.name, d.layer) for d in obj2.deltas] == [("low", 7), ("high", 12)]


@pytest.mark.parametrize("variant", sorted(EXPECTED))
@pytest.mark.parametrize("anchor", ["attn_as_released", "mlp_consistent", "resid_paper"])
def test_regions_per_variant(variant, anchor):
    assert set(jeep.VARIANTS) == set(EXPECTED), "a Table 4 variant was added or removed: update EXPECTED"
    low, high = (3, 4, 5), (9, 10)
    h = jhp(variant=variant, high_anchor=anchor, layers_low=list(low), layers_high=list(high))
    want_deltas, want_regions = EXPECTED[variant]
    if variant != "separate":  # `separate` optimises δ′ and δ* in two objectives (checked end to end)
        assert {d.name for d in jeep.objective(h).deltas} == want_deltas
    regs = jeep.regions(h)
    assert [r.name for r in regs] == [n for n in ("low", "high") if n in want_regions]  # low first
    _, cur_role, edit_role = high_roles(h)
    for r in regs:
        assert r.spread == want_regions[r.name]
        assert r.target == r.name
        if r.name == "low":
            assert (r.layers, r.key_position, r.cur_role, r.cur_layer, r.lam, r.edit_role) == \
                (low, "subject_last", "mlp", max(low), h["lambda_low"], "mlp_out")
            want_div = [math.sqrt(3), math.sqrt(2), 1.0] if r.spread == "sqrt" else [3.0, 2.0, 1.0]
            assert [r.divisor(i) for i in range(3)] == pytest.approx(want_div)
        else:
            assert (r.layers, r.key_position, r.cur_role, r.cur_layer, r.lam, r.edit_role) == \
                (high, "prompt_last", cur_role, max(high), h["lambda_high"], edit_role)
            assert [r.divisor(i) for i in range(2)] == [2.0, 1.0]


@pytest.mark.parametrize("anchor", ["attn_as_released", "mlp_consistent", "resid_paper"])
def test_ablations_share_the_joint_objective(anchor):
    """w/o Step 2, w/o Step 3 and even spread change only Steps 2-3, so their targets (and cache keys) are
    those of the full method; w/ MHSA shares them exactly when δ* is already on the attention output."""
    desc = {v: jeep.objective(jhp(variant=v, high_anchor=anchor)).describe() for v in EXPECTED if v != "separate"}
    for v in ("wo_step2", "wo_step3", "even_spread"):
        assert desc[v] == desc["full"], v
    for v in ("wo_low", "wo_high"):
        assert desc[v] != desc["full"], v
    assert (desc["mhsa_step3"] == desc["full"]) == (anchor == "attn_as_released")


def test_switches_and_config_errors():
    with pytest.raises(ConfigError, match="variant"):
        jeep.switches(jhp(variant="w/o everything"))
    with pytest.raises(ConfigError, match="high_anchor"):
        jeep.switches(jhp(high_anchor="embedding"))
    with pytest.raises(ConfigError, match="optimi"):
        jeep.objective(jhp(optimize_low=False, optimize_high=False))
    with pytest.raises(ConfigError, match="region"):
        jeep.regions(jhp(update_low=False, update_high=False))
    with pytest.raises(ConfigError, match="high_target_module"):
        jeep.switches(jhp(high_target_module="embed"))
    # single switches can be set without a named variant
    assert [r.spread for r in jeep.regions(jhp(spread_low="linear"))] == ["linear", "linear"]
    assert [r.name for r in jeep.regions(jhp(update_high=False))] == ["low"]


# ---------------------------------------------------------------- δ placement, behaviourally


@pytest.mark.parametrize("label", sorted(ANCHORS))
def test_step0_init_is_the_anchor_output(tiny_model, label):
    """One pass, no update: init′ = MLP output at (L′, subject_last), init* = the anchor module's output at
    (L*, prompt_last), both of the bare prompt of each request; z = init; KL = 0."""
    model, tok, arch = tiny_model
    over, role, _, _ = ANCHORS[label]
    res = optimise_targets_batch(model, tok, arch, CASES, jeep.objective(jhp(**over, steps=1)), PREFIXES)
    inits_high = []
    for case, r in zip(CASES, res):
        assert r.info["steps"] == 0 and r.info["kl"] == 0.0
        assert r.info["delta_norm_low"] == 0.0 and r.info["delta_norm_high"] == 0.0
        bare = locate_template(tok, case.prompt, case.subject)
        assert bare.subject_last < bare.prompt_last  # the two positions are distinguishable
        want_low = module_out(model, arch.name("mlp", max(LOW)), bare.ids, bare.subject_last)
        want_high = module_out(model, arch.name(role, max(HIGH)), bare.ids, bare.prompt_last)
        torch.testing.assert_close(r.init["low"], want_low, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(r.init["high"], want_high, atol=1e-5, rtol=1e-5)
        for name in ("low", "high"):
            torch.testing.assert_close(r.z[name], r.init[name], atol=0, rtol=0)
        inits_high.append(r.init["high"])
    assert (inits_high[0] - inits_high[1]).abs().max() > 1e-3  # each request has its own anchor value


def _manual_nll_kl(model, tok, arch, case, role, d_low, d_high):
    """NLL (mean over the P prompts) and KL(P_cur ‖ P_init) at the KL prompt's subject_last, with δ′ added to
    the MLP output at (L′, subject_last) and δ* to `role` at (L*, prompt_last) of every row."""
    low_mod, high_mod = arch.name("mlp", max(LOW)), arch.name(role, max(HIGH))
    per_prompt = []
    for p in [""] + PREFIXES:
        loc = locate_template(tok, case.prompt, case.subject, prefix=p, answer=case.target_new)
        adds = [(low_mod, loc.subject_last, d_low), (high_mod, loc.prompt_last, d_high)]
        logp = torch.log_softmax(logits_with(model, loc.ids[:-1], adds), -1)
        per_prompt.append(torch.stack([logp[c, t] for c, t in zip(loc.answer_positions, loc.answer_ids)]).mean())
    nll = float(-torch.stack(per_prompt).mean())
    kl_loc = locate_template(tok, KL_TEMPLATE, case.subject)
    p_init = torch.log_softmax(logits_with(model, kl_loc.ids)[kl_loc.subject_last], -1)
    adds = [(low_mod, kl_loc.subject_last, d_low), (high_mod, kl_loc.prompt_last, d_high)]
    p_cur = torch.log_softmax(logits_with(model, kl_loc.ids, adds)[kl_loc.subject_last], -1)
    return nll, float((p_cur.exp() * (p_cur - p_init)).sum())


@pytest.mark.parametrize("label", sorted(ANCHORS))
def test_joint_deltas_act_at_their_anchors(tiny_model, label):
    """After some steps, adding δ′ = z′ − init′ and δ* = z* − init* by hand at the spec's modules and positions
    reproduces the reported NLL and KL; putting δ* at the subject instead does not."""
    model, tok, arch = tiny_model
    over, role, _, _ = ANCHORS[label]
    h = jhp(**over, steps=6)
    res = optimise_targets_batch(model, tok, arch, CASES, jeep.objective(h), PREFIXES)
    for case, r in zip(CASES, res):
        assert r.info["steps"] == 5
        d_low, d_high = r.z["low"] - r.init["low"], r.z["high"] - r.init["high"]
        assert d_low.norm() > 0 and d_high.norm() > 0
        nll, kl = _manual_nll_kl(model, tok, arch, case, role, d_low, d_high)
        assert r.info["nll"] == pytest.approx(nll, rel=1e-3)
        assert r.info["kl"] == pytest.approx(kl, rel=1e-3, abs=1e-6)
        assert r.info["kl"] > 0  # δ′ sits at the subject: it moves the KL distribution
        # reported loss = NLL + α′·KL + β′‖δ′‖/‖init′‖² + β*‖δ*‖/‖init*‖² (spec §3.2)
        wd = (h["weight_decay_low"] * float(d_low.norm()) / float(r.init["low"].norm()) ** 2
              + h["weight_decay_high"] * float(d_high.norm()) / float(r.init["high"].norm()) ** 2)
        assert r.info["loss"] == pytest.approx(r.info["nll"] + h["kl_factor_low"] * r.info["kl"] + wd, rel=1e-5)
        # a δ* at the wrong position gives a different loss
        wrong = []
        for p in [""] + PREFIXES:
            loc = locate_template(tok, case.prompt, case.subject, prefix=p, answer=case.target_new)
            adds = [(arch.name("mlp", max(LOW)), loc.subject_last, d_low),
                    (arch.name(role, max(HIGH)), loc.subject_last, d_high)]
            logp = torch.log_softmax(logits_with(model, loc.ids[:-1], adds), -1)
            wrong.append(torch.stack([logp[c, t] for c, t in zip(loc.answer_positions, loc.answer_ids)]).mean())
        assert abs(float(-torch.stack(wrong).mean()) - nll) > 1e-3


@pytest.mark.parametrize("label", sorted(ANCHORS))
def test_high_only_keeps_kl_at_zero(tiny_model, label):
    """w/o δ′: δ* sits at the prediction position, after the KL prompt's subject, so the KL stays exactly 0
    while the target probability rises (spec §10: "KL becomes inactive")."""
    model, tok, arch = tiny_model
    over = dict(ANCHORS[label][0])
    if label == "mhsa_step3":
        over = {"high_target_module": "attn"}
    r1 = optimise_targets_batch(model, tok, arch, CASES, jeep.objective(jhp(**over, variant="wo_low", steps=1)),
                                PREFIXES)
    r8 = optimise_targets_batch(model, tok, arch, CASES, jeep.objective(jhp(**over, variant="wo_low", steps=8)),
                                PREFIXES)
    for a, b in zip(r1, r8):
        assert set(b.z) == {"high"}
        assert b.info["steps"] == 7 and b.info["delta_norm_high"] > 0
        assert b.info["kl"] == pytest.approx(0.0, abs=1e-7)
        assert b.info["target_prob"] > 2 * a.info["target_prob"]


# ---------------------------------------------------------------- end to end


E2E = [(v, "attn_as_released") for v in EXPECTED] + [("full", "mlp_consistent"), ("full", "resid_paper"),
                                                     ("mhsa_step3", "resid_paper")]


@pytest.mark.parametrize("variant,anchor", E2E)
def test_edit_equals_manual_steps(editable_model, covariances, target_spy, tmp_path, variant, anchor):
    model, tok, arch = editable_model
    model0 = copy.deepcopy(model)
    h = jhp(variant=variant, high_anchor=anchor)
    before = snapshot(model)
    lp_before = [tiny.answer_logprob(model, tok, c.prompt, c.subject, c.target_new) for c in CASES]
    res = edit(EditContext(model, tok, arch, cov=covariances.__getitem__, prefixes=PREFIXES, model_identity=identity(arch), cache=TargetCache(tmp_path)), "jeep", CASES, h)

    want_deltas, want_regions = EXPECTED[variant]
    role, cur_role, edit_role = high_roles(h)
    # which target optimisations ran
    if variant == "separate":
        assert [[d.name for d in c["objective"].deltas] for c in target_spy] == [["low"], ["high"]]
    else:
        assert len(target_spy) == 1
        assert {d.name for d in target_spy[0]["objective"].deltas} == want_deltas
    z = {name: torch.stack([r.z[name] for r in c["results"]]) for c in target_spy for name in c["results"][0].z}

    # which modules were edited
    modules = set()
    if "low" in want_regions:
        modules |= {arch.name("mlp_out", l) for l in LOW}
    if "high" in want_regions:
        modules |= {arch.name(edit_role, l) for l in HIGH}
    assert set(res.deltas) == modules

    # W_after − W_before == ΔW for the edited weights; nothing else moved
    after = model.state_dict()
    for key in before:
        mod = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and mod in modules:
            assert res.deltas[mod].shape == before[key].shape and res.deltas[mod].dtype == torch.float32
            torch.testing.assert_close(after[key] - before[key], res.deltas[mod], atol=1e-6, rtol=1e-5)
        else:
            assert torch.equal(after[key], before[key]), key

    # the updates equal Steps 2-3 written out by hand (low region first, high region on the low-edited model)
    ref = copy.deepcopy(model0)
    expected = {}
    if "low" in want_regions:
        expected |= manual_region(ref, tok, arch, CASES, PREFIXES, layers=LOW, key_position="subject_last",
                                  cur_role="mlp", edit_role="mlp_out", lam=h["lambda_low"],
                                  divs=divisors(want_regions["low"], len(LOW)), Z=z["low"], cov=covariances.__getitem__)
    if variant == "separate":
        # δ* was optimised on the model edited in Step 2: its init is the anchor output of that model
        for case, r in zip(CASES, target_spy[1]["results"]):
            bare = locate_template(tok, case.prompt, case.subject)
            on_edited = module_out(ref, arch.name(role, max(HIGH)), bare.ids, bare.prompt_last)
            on_unedited = module_out(model0, arch.name(role, max(HIGH)), bare.ids, bare.prompt_last)
            torch.testing.assert_close(r.init["high"], on_edited, atol=1e-4, rtol=1e-4)
            assert (r.init["high"] - on_unedited).abs().max() > 1e-3
    if "high" in want_regions:
        expected |= manual_region(ref, tok, arch, CASES, PREFIXES, layers=HIGH, key_position="prompt_last",
                                  cur_role=cur_role, edit_role=edit_role, lam=h["lambda_high"],
                                  divs=divisors(want_regions["high"], len(HIGH)), Z=z["high"],
                                  cov=covariances.__getitem__)
    assert set(expected) == modules
    for m in modules:
        assert_delta_close(res.deltas[m], expected[m], m)

    # the edit raises the new target (strongly once the high region is edited)
    lp_after = [tiny.answer_logprob(model, tok, c.prompt, c.subject, c.target_new) for c in CASES]
    for b, a in zip(lp_before, lp_after):
        assert a > b + (1.0 if "high" in want_regions else 0.05), (lp_before, lp_after)

    # no silent no-op: the info states ‖ΔW‖_F of exactly the regions the switches update, and the target
    # probability the edited weights give (the per-token mean log-probability, exponentiated, averaged)
    norms = {k.rsplit("/", 2)[-2]: v for k, v in res.info.items() if k.endswith("delta_frobenius")}
    assert set(norms) == set(want_regions)
    for region, v in norms.items():
        mods = [m for m in modules if (m.startswith(tuple(arch.name("mlp_out", l) for l in LOW)) and region == "low")
                or (region == "high" and m in {arch.name(edit_role, l) for l in HIGH})]
        assert v > 0 and v == pytest.approx(math.sqrt(sum(float(res.deltas[m].double().pow(2).sum()) for m in mods)),
                                            rel=1e-3), region
    per_case = []
    for c in CASES:
        loc = locate_template(tok, c.prompt, c.subject, answer=c.target_new)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([loc.ids[:-1]])).logits[0].double(), -1)
        per_case.append(math.exp(sum(float(logp[p, t]) for p, t in zip(loc.answer_positions, loc.answer_ids))
                                 / len(loc.answer_ids)))
    assert res.info["target_prob_after_edit"] == pytest.approx(sum(per_case) / len(per_case), rel=1e-4)


def test_cache_shared_by_ablations(tiny_model, covariances, target_spy, tmp_path):
    """Three low layers, one high layer. full → w/o Step 2, w/o Step 3, even spread, w/ MHSA reuse its targets;
    w/o δ′ does not. Same targets + same Step 2 ⇒ w/o Step 3 equals full's low update; even spread scales the
    first low layer's update by √3/3 (÷3 instead of ÷√3, same keys and residual)."""
    model, tok, arch = tiny_model
    low, high = (0, 1, 2), (3,)
    kw = dict(cov=covariances.__getitem__, prefixes=PREFIXES, model_identity=identity(arch))
    res = {}
    for v in ("full", "wo_step2", "wo_step3", "even_spread", "mhsa_step3", "wo_low"):
        h = jhp(variant=v, layers_low=list(low), layers_high=list(high))
        res[v] = edit(EditContext(copy.deepcopy(model), tok, arch, cache=TargetCache(tmp_path), **kw), "jeep", CASES, h)
    hits = {v: (r.info["target_cache_hits"], r.info["target_cache_misses"]) for v, r in res.items()}
    assert hits == {"full": (0, 2), "wo_step2": (2, 0), "wo_step3": (2, 0), "even_spread": (2, 0),
                    "mhsa_step3": (2, 0), "wo_low": (0, 2)}
    assert len(target_spy) == 2  # optimised for full and for w/o δ′ only
    lows = [arch.name("mlp_out", l) for l in low]
    hi = arch.name("mlp_out", 3)
    assert set(res["wo_step3"].deltas) == set(lows)
    for m in lows:
        torch.testing.assert_close(res["wo_step3"].deltas[m], res["full"].deltas[m], atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(res["even_spread"].deltas[lows[0]], res["full"].deltas[lows[0]] * (math.sqrt(3) / 3),
                               atol=1e-7, rtol=1e-5)
    assert (res["even_spread"].deltas[lows[1]] - res["full"].deltas[lows[1]]).abs().max() > 1e-4
    # w/o Step 2 realises the same z* on the unedited model: a different high update than full's
    assert set(res["wo_step2"].deltas) == {hi}
    assert (res["wo_step2"].deltas[hi] - res["full"].deltas[hi]).abs().max() > 1e-4
    assert set(res["mhsa_step3"].deltas) == set(lows) | {arch.name("attn_out", 3)}


def test_separate_optimisation(tiny_model, covariances, target_spy, tmp_path):
    """Separate: δ′ alone (the w/o δ* objective, hence its cached targets and its exact low update), then δ*
    alone on the low-edited model (not cached), giving a different high update than the joint method."""
    model, tok, arch = tiny_model
    kw = dict(cov=covariances.__getitem__, prefixes=PREFIXES, model_identity=identity(arch))
    r_woh = edit(EditContext(copy.deepcopy(model), tok, arch, cache=TargetCache(tmp_path), **kw), "jeep", CASES, jhp(variant="wo_high"))
    r_sep = edit(EditContext(copy.deepcopy(model), tok, arch, cache=TargetCache(tmp_path), **kw), "jeep", CASES, jhp(variant="separate"))
    r_full = edit(EditContext(copy.deepcopy(model), tok, arch, **kw), "jeep", CASES, jhp(variant="full"))
    assert (r_sep.info["low/target_cache_hits"], r_sep.info["low/target_cache_misses"]) == (2, 0)
    assert r_sep.info["high/target_cache_hits"] == 0
    for l in LOW:
        m = arch.name("mlp_out", l)
        torch.testing.assert_close(r_sep.deltas[m], r_woh.deltas[m], atol=1e-7, rtol=1e-6)
    # the δ* optimisation ran on the low-edited model: init* differs from the joint (unedited) one
    joint_init = torch.stack([r.init["high"] for r in target_spy[-1]["results"]])
    sep_init = torch.stack([r.init["high"] for r in target_spy[1]["results"]])
    assert [d.name for d in target_spy[1]["objective"].deltas] == ["high"]
    assert (sep_init - joint_init).abs().max() > 1e-3
    for l in HIGH:
        m = arch.name("mlp_out", l)
        assert (r_sep.deltas[m] - r_full.deltas[m]).abs().max() > 1e-4
    assert r_sep.info["target_seconds"] >= 0 and r_sep.info["edit_seconds"] >= r_sep.info["target_seconds"]
