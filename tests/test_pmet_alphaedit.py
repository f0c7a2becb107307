"""PMET (spec §4.2), AlphaEdit (spec §5) and re-applying saved weight deltas, on a tiny GPT-J and a tiny LLaMA.

Manual references use plain `register_forward_hook` on single, unpadded prompts, so they share neither
the padding nor the hook helpers with the code under test.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

import tiny
from tiny import CASE, CASE_B, PREFIXES
from jeepkit.editing.recipe import EditContext
from jeepkit.errors import ConfigError
from jeepkit.data.schema import EditCase
from jeepkit.editing import alphaedit, engine, pmet
from jeepkit.editing import recipe as recipe_mod
from jeepkit.editing.engine import KL_TEMPLATE, DeltaSpec, Region, apply_regions, optimise_targets_batch
from jeepkit.editing.run import edit
from jeepkit.editing.targets import TargetCache
from jeepkit.stats import accumulate_second_moments
from jeepkit.tokens import locate_template

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# The subject ends the prompt, so δ at subject_last acts on the prediction directly: on these tiny models the
# target becomes the argmax within a few steps (needed to exercise PMET's NLL schedule).
CASE_END = EditCase(case_id="c3", kind="counterfact", prompt="The official language of {}", subject="Italy",
                    target_new="English", target_true="Italian")
CASES = [CASE, CASE_B]
LAYERS = (1, 2)


def php(**kw):
    base = {"layers": list(LAYERS), "clamp": 4.0, "weight_decay": 0.01, "weight_decay_attn": 0.03, "lr": 0.5,
            "steps": 10, "kl_factor": 0.5, "lambda": 1.0}
    base.update(kw)
    return base


def ahp(**kw):
    base = {"layers": list(LAYERS), "clamp": 4.0, "weight_decay": 0.01, "lr": 0.5, "steps": 10,
            "kl_factor": 0.0625, "lambda": 1.0, "nullspace_threshold": 1e-3, "l2": 10.0}
    base.update(kw)
    return base


# ---------------------------------------------------------------- manual references


from manual import _adder, _out, logits_with, module_out, raw_hooks, read_in_out  # noqa: F401


def memit_formula(C, K, R, lam):
    return R @ K.T @ torch.linalg.inv(lam * C + K @ K.T)


def projector_by_svd(C, thr):
    """Spec §5: singular vectors of C with singular value < thr."""
    U, S, _ = torch.linalg.svd(C.double())
    U0 = U[:, S < thr]
    return U0 @ U0.T


def alphaedit_formula(thr, alpha):
    """Spec §5 with C_p = 0: Δ = R Kᵀ P (KKᵀP + αI)⁻¹."""
    def f(C, K, R, _lam):
        P = projector_by_svd(C, thr)
        return R @ K.T @ P @ torch.linalg.inv(K @ K.T @ P + alpha * torch.eye(K.shape[0], dtype=K.dtype))
    return f


@torch.no_grad()
def manual_region(model, tok, arch, cases, prefixes, *, layers, cur_role, lam, divs, Z, cov, formula):
    """Keys at subject_last (½ bare + ½ mean of prefixed), cur = `cur_role` output at the top layer (bare),
    R = (z − cur)/div, ΔW = formula(C, K, R, λ); layers ascending, `model` edited in place."""
    out = {}
    top = max(layers)
    for i, layer in enumerate(layers):
        key_mod, cur_mod = arch.name("mlp_out", layer), arch.name(cur_role, top)
        ks_all, curs = [], []
        for c in cases:
            ks = []
            for j, p in enumerate([""] + list(prefixes)):
                loc = locate_template(tok, c.prompt, c.subject, prefix=p)
                k, cur = read_in_out(model, loc.ids, loc.subject_last, key_mod, cur_mod)
                ks.append(k)
                if j == 0:
                    curs.append(cur)
            ks = torch.stack(ks)
            ks_all.append(0.5 * ks[0] + 0.5 * ks[1:].mean(0))
        K = torch.stack(ks_all, 1).double()
        R = (Z.T.double() - torch.stack(curs, 1).double()) / divs[i]
        dW = formula(cov(key_mod).double(), K, R, lam)
        out[key_mod] = dW
        model.get_submodule(key_mod).weight.add_(dW.float())
    return out


def assert_delta_close(got, want, what=""):
    scale = float(want.abs().max())
    assert scale > 0, what
    torch.testing.assert_close(got.double(), want, atol=2e-4 * scale, rtol=2e-3, msg=lambda m: f"{what}: {m}")


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_only_deltas_applied(before, after, deltas):
    for key in before:
        mod = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and mod in deltas:
            assert deltas[mod].shape == before[key].shape and deltas[mod].dtype == torch.float32
            assert deltas[mod].abs().max() > 0
            torch.testing.assert_close(after[key] - before[key], deltas[mod], atol=1e-6, rtol=1e-5)
        else:
            assert torch.equal(after[key], before[key]), key


def identity(arch):
    return {"id": f"tiny-{arch.family}", "revision": "test"}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def covariances(tiny_gptj, tiny_llama):
    """Second moments of the mlp_out / attn_out inputs on the tiny corpus, plus a small ridge."""
    out = {}
    for model, tok, arch in (tiny_gptj, tiny_llama):
        names = [arch.name(r, l) for r in ("mlp_out", "attn_out") for l in range(arch.n_layers)]
        moments, _ = accumulate_second_moments(model, tok, arch, names, tiny.CORPUS, max_length=64, dtype="float64")
        for n, c in moments.items():
            out[n] = c + 1e-2 * c.diagonal().mean() * torch.eye(c.shape[0], dtype=c.dtype)
    return out


def preserved_basis(d_k, layer, rank=None):
    """An orthonormal basis of a random subspace S (half of the key space), different per layer."""
    g = torch.Generator().manual_seed(100 + layer)
    Q, _ = torch.linalg.qr(torch.randn(d_k, d_k, generator=g, dtype=torch.float64))
    return Q[:, : (rank or d_k // 2)]


def covariance_spanning(V, seed=0, noise=1e-8):
    """C whose dominant subspace is span(V) (eigenvalues in [1, 3]) plus tiny isotropic noise."""
    g = torch.Generator().manual_seed(seed)
    w = 1 + 2 * torch.rand(V.shape[1], generator=g, dtype=torch.float64)
    return (V * w) @ V.T + noise * torch.eye(V.shape[0], dtype=torch.float64)


@pytest.fixture(scope="module")
def synthetic_cov(tiny_gptj, tiny_llama):
    """For AlphaEdit: per edited layer a C that preserves a known subspace S_l (basis returned too)."""
    out, bases = {}, {}
    for model, _, arch in (tiny_gptj, tiny_llama):
        for l in range(arch.n_layers):
            name = arch.name("mlp_out", l)
            V = preserved_basis(model.get_submodule(name).in_features, l)
            out[name], bases[name] = covariance_spanning(V, seed=l), V
    return out, bases


@pytest.fixture
def target_spy(monkeypatch):
    calls = []
    real = recipe_mod.optimise_targets_batch

    def spy(model, tok, arch, cases, objective, prefixes):
        res = real(model, tok, arch, cases, objective, prefixes)
        calls.append({"objective": objective, "results": res})
        return res

    monkeypatch.setattr(recipe_mod, "optimise_targets_batch", spy)
    return calls


# ================================================================ PMET


def test_pmet_objective_and_region():
    h = php()
    obj = pmet.objective(h)
    top = max(LAYERS)
    assert obj.deltas == (
        DeltaSpec("attn", role="attn", layer=top, position="subject_last", clamp=h["clamp"],
                  weight_decay=h["weight_decay_attn"]),
        DeltaSpec("mlp", role="mlp", layer=top, position="subject_last", clamp=h["clamp"],
                  weight_decay=h["weight_decay"]),
    )
    assert (obj.lr, obj.steps, obj.kl_factor) == (h["lr"], h["steps"], 0.5)
    assert (obj.nll_schedule, obj.stop_rule, obj.stop_value) == ("pmet", "loss", 0.05)
    # the attention weight decay defaults to the MLP one
    no_attn = {k: v for k, v in h.items() if k != "weight_decay_attn"}
    assert pmet.objective(no_attn).deltas[0].weight_decay == h["weight_decay"]
    (region,) = pmet.regions(h)
    # only the MLP output matrices are edited, toward the MLP target, with a √ spread
    assert (region.layers, region.target, region.key_position, region.cur_role, region.cur_layer, region.lam,
            region.spread, region.edit_role) == (LAYERS, "mlp", "subject_last", "mlp", top, 1.0, "sqrt", "mlp_out")
    (r6,) = pmet.regions(php(layers=[3, 4, 5, 6, 7, 8]))
    assert [r6.divisor(i) for i in range(6)] == pytest.approx([math.sqrt(6 - i) for i in range(6)])


def test_pmet_step0_inits(tiny_model):
    """init_attn = attention output [0], init_mlp = MLP output, both at (L, subject_last) of the bare prompt."""
    model, tok, arch = tiny_model
    res = optimise_targets_batch(model, tok, arch, CASES, pmet.objective(php(steps=1)), PREFIXES)
    top = max(LAYERS)
    for case, r in zip(CASES, res):
        assert r.info["steps"] == 0 and r.info["kl"] == 0.0
        bare = locate_template(tok, case.prompt, case.subject)
        for name, role in (("attn", "attn"), ("mlp", "mlp")):
            want = module_out(model, arch.name(role, top), bare.ids, bare.subject_last)
            torch.testing.assert_close(r.init[name], want, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(r.z[name], r.init[name], atol=0, rtol=0)
        assert (r.init["attn"] - r.init["mlp"]).abs().max() > 1e-3


def test_pmet_deltas_act_at_subject(tiny_model):
    """Both deltas are optimised jointly and added at subject_last of every row: adding them by hand reproduces
    the reported NLL and KL; the reported loss is φ·NLL + μ·KL + wd_m‖δ_m‖/‖m‖² + wd_a‖δ_a‖/‖a‖²."""
    model, tok, arch = tiny_model
    h = php(steps=6, stop_loss=0.0)
    res = optimise_targets_batch(model, tok, arch, CASES, pmet.objective(h), PREFIXES)
    top = max(LAYERS)
    mods = {"attn": arch.name("attn", top), "mlp": arch.name("mlp", top)}
    for case, r in zip(CASES, res):
        d = {k: r.z[k] - r.init[k] for k in mods}
        assert d["attn"].norm() > 0 and d["mlp"].norm() > 0
        per_prompt = []
        for p in [""] + PREFIXES:
            loc = locate_template(tok, case.prompt, case.subject, prefix=p, answer=case.target_new)
            logp = torch.log_softmax(logits_with(model, loc.ids[:-1],
                                                 [(mods[k], loc.subject_last, d[k]) for k in mods]), -1)
            per_prompt.append(torch.stack([logp[c, t] for c, t in zip(loc.answer_positions, loc.answer_ids)]).mean())
        nll = float(-torch.stack(per_prompt).mean())
        assert r.info["nll"] == pytest.approx(nll, rel=1e-3)
        kl_loc = locate_template(tok, KL_TEMPLATE, case.subject)
        p0 = torch.log_softmax(logits_with(model, kl_loc.ids)[kl_loc.subject_last], -1)
        p1 = torch.log_softmax(logits_with(model, kl_loc.ids, [(mods[k], kl_loc.subject_last, d[k]) for k in mods])
                               [kl_loc.subject_last], -1)
        kl = float((p1.exp() * (p1 - p0)).sum())
        assert r.info["kl"] == pytest.approx(kl, rel=1e-3, abs=1e-6) and kl > 0
        wd = (h["weight_decay"] * float(d["mlp"].norm()) / float(r.init["mlp"].norm()) ** 2
              + h["weight_decay_attn"] * float(d["attn"].norm()) / float(r.init["attn"].norm()) ** 2)
        # these targets never become the argmax on the tiny model, so φ stays 1
        assert r.info["loss"] == pytest.approx(r.info["nll"] + h["kl_factor"] * r.info["kl"] + wd, rel=1e-5)


ARGMAX_CANDIDATES = [("The official language of {}", "Italy"), ("{} is a city in", "Tokyo"),
                     ("{} was born in", "Danielle Darrieux"), ("The author of {} is", "1984"), ("{} is", "Apple")]


@torch.no_grad()
def argmax_case(model, tok):
    """A request whose new target is already the model's greedy (single-token) continuation of the bare prompt."""
    for template, subject in ARGMAX_CANDIDATES:
        loc = locate_template(tok, template, subject)
        top = int(model(input_ids=torch.tensor([loc.ids]), use_cache=False).logits[0, -1].argmax())
        word = tok.decode([top]).strip()
        if not word:
            continue
        try:
            ans = locate_template(tok, template, subject, answer=word)
        except Exception:
            continue
        if ans.answer_ids == [top]:
            return EditCase("argmax", "counterfact", template, subject, word, None)
    pytest.fail("no candidate prompt whose greedy token round-trips as an answer")


def test_pmet_stops_when_target_is_already_argmax(tiny_model):
    """Target already the argmax and KL = 0 ≤ 0.01 at the first pass: PMET stops before any update, although
    its loss (the NLL) is far above the 0.05 loss threshold; without the schedule it keeps optimising."""
    model, tok, arch = tiny_model
    case = argmax_case(model, tok)
    obj = pmet.objective(php(steps=6))
    (r,) = optimise_targets_batch(model, tok, arch, [case], obj, [])
    assert r.info["steps"] == 0 and r.info["loss"] > 0.05
    for k in ("attn", "mlp"):
        torch.testing.assert_close(r.z[k], r.init[k], atol=0, rtol=0)
    (c,) = optimise_targets_batch(model, tok, arch, [case], dataclasses.replace(obj, nll_schedule="constant"), [])
    assert c.info["steps"] == 5
    # a target that is not the argmax does not trigger the stop
    (n,) = optimise_targets_batch(model, tok, arch, [CASE], obj, [])
    assert n.info["steps"] == 5


def _trace(monkeypatch):
    """Record the final hidden states of every optimisation pass (whole rows: run with reuse_prefix=False)."""
    states = []
    real = engine.suffix_hidden

    def spy(model, frozen):
        assert frozen.past is None and frozen.h_in is None, "trace whole rows only"
        h = real(model, frozen)
        states.append(h.detach().clone())
        return h

    monkeypatch.setattr(engine, "suffix_hidden", spy)
    return states


@torch.no_grad()
def _per_pass(model, tok, case, prefixes, states):
    """(all target tokens argmax in all prompts, NLL, KL) for each recorded pass (rows as the engine orders them)."""
    rows = [locate_template(tok, case.prompt, case.subject, prefix=p, answer=case.target_new) for p in [""] + prefixes]
    kl_loc = locate_template(tok, KL_TEMPLATE, case.subject)
    lm = model.get_output_embeddings()
    out, kl0 = [], None
    for h in states:
        ok, nlls = True, []
        for i, loc in enumerate(rows):
            logp = torch.log_softmax(lm(h[i, loc.answer_positions]).float(), -1)
            ids = torch.tensor(loc.answer_ids)
            ok &= bool((logp.argmax(-1) == ids).all())
            nlls.append(-logp.gather(1, ids[:, None]).mean())
        klp = torch.log_softmax(lm(h[len(rows), kl_loc.subject_last]).float(), -1)
        kl0 = klp if kl0 is None else kl0
        out.append((ok, float(torch.stack(nlls).mean()), float((klp.exp() * (klp - kl0)).sum())))
    return out


def test_pmet_nll_weight_schedule(tiny_model, monkeypatch):
    """φ = 0.1 for the pass after one in which every target token is the argmax (1 otherwise); a pass with all
    argmax and KL ≤ 0.01 stops. Checked on runs of 2..8 passes against the traced states (weight decay 0 and
    no loss stop, so the loss is φ·NLL + μ·KL)."""
    model, tok, arch = tiny_model
    h = php(weight_decay=0.0, weight_decay_attn=0.0, stop_loss=0.0, kl_factor=1.0)
    states = _trace(monkeypatch)
    optimise_targets_batch(model, tok, arch, [CASE_END], pmet.objective({**h, "steps": 8}), PREFIXES,
                           reuse_prefix=False)
    passes = _per_pass(model, tok, CASE_END, PREFIXES, states)
    assert len(passes) == 8
    phi = [1.0] + [0.1 if ok else 1.0 for ok, _, _ in passes[:-1]]
    assert not passes[0][0] and any(p == 0.1 for p in phi), "the test needs the target to become the argmax"
    assert all(kl > 0.01 for ok, _, kl in passes[1:] if ok), "argmax with KL > 0.01 must not stop"
    for n in range(2, 9):
        states.clear()
        (r,) = optimise_targets_batch(model, tok, arch, [CASE_END], pmet.objective({**h, "steps": n}), PREFIXES,
                                      reuse_prefix=False)
        last = n - 1
        assert r.info["steps"] == last
        _, nll, kl = passes[last]
        assert r.info["nll"] == pytest.approx(nll, rel=1e-4)
        assert r.info["kl"] == pytest.approx(kl, rel=1e-3, abs=1e-7)
        assert r.info["loss"] == pytest.approx(phi[last] * nll + kl, rel=1e-4), (n, phi)


def test_pmet_edit_end_to_end(editable_model, covariances, target_spy, tmp_path):
    model, tok, arch = editable_model
    model0 = copy.deepcopy(model)
    h = php()
    before = snapshot(model)
    lp_before = [tiny.answer_logprob(model, tok, c.prompt, c.subject, c.target_new) for c in CASES]
    res = edit(EditContext(model, tok, arch, cov=covariances.__getitem__, prefixes=PREFIXES, model_identity=identity(arch), cache=TargetCache(tmp_path)), "pmet", CASES, h)
    modules = {arch.name("mlp_out", l) for l in LAYERS}
    assert set(res.deltas) == modules  # the attention delta is only used during optimisation
    assert_only_deltas_applied(before, model.state_dict(), res.deltas)
    (call,) = target_spy
    assert [d.name for d in call["objective"].deltas] == ["attn", "mlp"]
    Z = torch.stack([r.z["mlp"] for r in call["results"]])
    expected = manual_region(copy.deepcopy(model0), tok, arch, CASES, PREFIXES, layers=LAYERS, cur_role="mlp",
                             lam=h["lambda"], divs=[math.sqrt(len(LAYERS) - i) for i in range(len(LAYERS))], Z=Z,
                             cov=covariances.__getitem__, formula=memit_formula)
    for m in modules:
        assert_delta_close(res.deltas[m], expected[m], m)
    lp_after = [tiny.answer_logprob(model, tok, c.prompt, c.subject, c.target_new) for c in CASES]
    assert all(a > b + 0.05 for a, b in zip(lp_after, lp_before)), (lp_before, lp_after)


# ================================================================ AlphaEdit


@pytest.mark.parametrize("d,r", [(32, 10), (64, 40)])
def test_null_space_projector(d, r):
    V = preserved_basis(d, 0, rank=r)
    C = covariance_spanning(V, noise=1e-7)
    P = alphaedit.null_space_projector(C, 1e-4)
    assert P.shape == (d, d) and P.dtype == torch.float64
    torch.testing.assert_close(P, P.T, atol=1e-12, rtol=0)  # symmetric
    torch.testing.assert_close(P @ P, P, atol=1e-10, rtol=0)  # idempotent
    assert torch.linalg.matrix_rank(P) == d - r
    assert (P @ V).abs().max() < 1e-10  # annihilates the preserved subspace
    g = torch.Generator().manual_seed(1)
    x = torch.randn(d, 3, generator=g, dtype=torch.float64)
    x_perp = x - V @ (V.T @ x)
    torch.testing.assert_close(P @ x_perp, x_perp, atol=1e-10, rtol=0)  # keeps its complement
    torch.testing.assert_close(P, projector_by_svd(C, 1e-4), atol=1e-10, rtol=0)
    # a float32 C (as stored by the stats stage) gives the same projector
    torch.testing.assert_close(alphaedit.null_space_projector(C.float(), 1e-4), P, atol=1e-6, rtol=0)
    # thresholds above / below the whole spectrum: identity / zero
    torch.testing.assert_close(alphaedit.null_space_projector(C, 1e9), torch.eye(d, dtype=torch.float64),
                               atol=1e-12, rtol=0)
    assert alphaedit.null_space_projector(C, -1.0).abs().max() == 0


def test_alphaedit_solve():
    d_k, d, n = 48, 16, 3
    V = preserved_basis(d_k, 0, rank=20)
    C = covariance_spanning(V, noise=1e-7)
    g = torch.Generator().manual_seed(2)
    K = torch.randn(d_k, n, generator=g, dtype=torch.float64)
    R = torch.randn(d, n, generator=g, dtype=torch.float64)
    K, R = K.float().double(), R.float().double()  # exactly representable in float32 too
    dW = alphaedit.solve(C, K.float(), R.float(), 123.0, nullspace_threshold=1e-4, l2=10.0)
    assert dW.shape == (d, d_k)
    # preserved keys are mapped to (almost) nothing, the new keys are not
    assert (dW @ V).abs().max() < 1e-8 * dW.abs().max()
    assert (dW @ K).abs().max() > 1e-2
    # equals the spec's form Δ = R Kᵀ P (KKᵀP + αI)⁻¹, with no λC term (λ is ignored)
    torch.testing.assert_close(dW, alphaedit_formula(1e-4, 10.0)(C, K, R, None), atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(alphaedit.solve(C, K, R, 1.0, nullspace_threshold=1e-4, l2=10.0), dW,
                               atol=1e-12, rtol=0)
    # P = I (threshold above the spectrum): ridge regression R Kᵀ (KKᵀ + αI)⁻¹
    for alpha in (10.0, 0.5):
        eye = torch.eye(d_k, dtype=torch.float64)
        torch.testing.assert_close(alphaedit.solve(C, K, R, 5.0, nullspace_threshold=1e9, l2=alpha),
                                   R @ K.T @ torch.linalg.inv(K @ K.T + alpha * eye), atol=1e-9, rtol=1e-7)
    # defaults: threshold 2e-2, α = 10 (spec §5); a fresh projector cache per edit, keyed by module
    base = {"layers": [1], "clamp": 1.0, "lambda": 1.0, "lr": 0.5, "steps": 1, "weight_decay": 0.5, "kl_factor": 0.0}
    kw = alphaedit.solver_kwargs(base)
    assert (kw["nullspace_threshold"], kw["l2"], kw["projector_cache"]) == (2e-2, 10.0, {})
    assert alphaedit.solver_kwargs(base)["projector_cache"] is not kw["projector_cache"]
    assert alphaedit.solver_kwargs({**base, "nullspace_threshold": 1e-3, "l2": 3.0})["l2"] == 3.0
    cache = {}
    C2 = covariance_spanning(preserved_basis(d_k, 1, rank=20), noise=1e-7)
    a = alphaedit.solve(C, K, R, 1.0, nullspace_threshold=1e-4, projector_cache=cache, module="m.a")
    b = alphaedit.solve(C2, K, R, 1.0, nullspace_threshold=1e-4, projector_cache=cache, module="m.b")
    assert len(cache) == 2 and (a - b).abs().max() > 1e-3
    torch.testing.assert_close(alphaedit.solve(C, K, R, 1.0, nullspace_threshold=1e-4, projector_cache=cache,
                                               module="m.a"), a, atol=0, rtol=0)


def test_alphaedit_edit_end_to_end(editable_model, synthetic_cov, target_spy):
    """MEMIT's targets (residual stream, linear spread) with the projected solve: mlp_out of the listed layers
    only, each update blind to its own layer's preserved subspace and equal to the spec's formula."""
    model, tok, arch = editable_model
    covs, bases = synthetic_cov
    model0 = copy.deepcopy(model)
    h = ahp()
    before = snapshot(model)
    res = edit(EditContext(model, tok, arch, cov=covs.__getitem__, prefixes=PREFIXES, model_identity=identity(arch)), "alphaedit", CASES, h)
    modules = [arch.name("mlp_out", l) for l in LAYERS]
    assert set(res.deltas) == set(modules)
    assert_only_deltas_applied(before, model.state_dict(), res.deltas)
    (call,) = target_spy
    assert [(d.name, d.role, d.layer, d.position) for d in call["objective"].deltas] == \
        [("main", "layer", max(LAYERS), "subject_last")]
    for m, other in zip(modules, modules[::-1]):
        dW = res.deltas[m].double()
        assert (dW @ bases[m]).abs().max() < 1e-5 * dW.abs().max(), m  # preserved keys: outputs unchanged
        assert (dW @ bases[other]).abs().max() > 1e-2 * dW.abs().max()  # (a different subspace is not)
    Z = torch.stack([r.z["main"] for r in call["results"]])
    expected = manual_region(copy.deepcopy(model0), tok, arch, CASES, PREFIXES, layers=LAYERS, cur_role="layer",
                             lam=h["lambda"], divs=[float(len(LAYERS) - i) for i in range(len(LAYERS))], Z=Z,
                             cov=covs.__getitem__, formula=alphaedit_formula(h["nullspace_threshold"], h["l2"]))
    for m in modules:
        assert_delta_close(res.deltas[m], expected[m], m)


# ================================================================ saved deltas


ARTIFACT_RUNS = {
    "jeep": {"layers_low": [0, 1], "layers_high": [2, 3], "clamp_low": 4.0, "clamp_high": 4.0,
             "weight_decay_low": 0.01, "weight_decay_high": 0.01, "lr": 0.5, "steps": 6, "kl_factor_low": 0.0625,
             "min_prob": 0.9, "lambda_low": 1.0, "lambda_high": 1.0},
    "pmet": php(steps=6),
    "alphaedit": ahp(steps=6),
}


@pytest.mark.parametrize("method,variant", [("jeep", "full"), ("jeep", "mhsa_step3"), ("jeep", "separate"),
                                            ("pmet", None), ("alphaedit", None)])
def test_saved_deltas_reproduce_edited_weights(tiny_model, covariances, synthetic_cov, tmp_path, method, variant):
    """Edit a copy, write exactly the returned deltas as the pipeline does (delta_chunk{i}.safetensors), load
    them and add them to a fresh copy of the original weights in the model dtype: bit-identical weights."""
    model, tok, arch = tiny_model
    edited = copy.deepcopy(model)
    hp = dict(ARTIFACT_RUNS[method], **({"variant": variant} if variant else {}))
    cov = synthetic_cov[0] if method == "alphaedit" else covariances
    res = edit(EditContext(edited, tok, arch, cov=cov.__getitem__, prefixes=PREFIXES, model_identity=identity(arch)), method, CASES, hp)
    assert res.deltas
    path = tmp_path / "delta_chunk0.safetensors"
    save_file({k: v.contiguous() for k, v in res.deltas.items()}, str(path))
    loaded = load_file(str(path))
    assert set(loaded) == set(res.deltas)
    fresh = copy.deepcopy(model)
    with torch.no_grad():
        for name, dW in loaded.items():
            assert dW.dtype == torch.float32 and torch.equal(dW, res.deltas[name])
            W = fresh.get_submodule(name).weight
            W.add_(dW.to(W.dtype))
    want = edited.state_dict()
    changed = 0
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, want[key]), key
        changed += not torch.equal(value, model.state_dict()[key])
    assert changed == len(res.deltas)


# A weight and a float64 update whose sum is a tie in bfloat16: W0 + D = 0.0313720703125 rounds (to even) to
# W1 = 0.03125, so the change really applied is W1 − W0 = 0.0494384765625, itself a bfloat16 tie.
_W0, _D = -0.0181884765625, 0.049560546875


def _constant_edit(model, tok, arch, dtype):
    """(original, edited, deltas): mlp_out of layer 1 set to _W0 everywhere, then one region whose solver returns
    the constant update _D (through the real apply_regions)."""
    original = copy.deepcopy(model).to(dtype)
    name = arch.name("mlp_out", 1)
    with torch.no_grad():
        original.get_submodule(name).weight.fill_(_W0)
    edited = copy.deepcopy(original)

    def solver(C, K, R, lam, **_):
        return torch.full((R.shape[0], K.shape[0]), _D, dtype=torch.float64)

    region = Region("r", (1,), target="main", key_position="subject_last", cur_role="layer", cur_layer=1, lam=1.0)
    deltas, _ = apply_regions(edited, tok, arch, [CASE], [region], {"main": torch.zeros(1, arch.hidden_size)},
                              lambda _n: None, [], solver=solver, progress=False)
    return original, edited, deltas


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_returned_delta_is_the_applied_change(tiny_gptj, dtype):
    """The returned float32 ΔW is exactly W_after − W_before, also when the weights are bfloat16."""
    model, tok, arch = tiny_gptj
    original, edited, deltas = _constant_edit(model, tok, arch, dtype)
    name = arch.name("mlp_out", 1)
    (key,) = deltas
    assert key == name and deltas[name].dtype == torch.float32
    W0, W1 = original.get_submodule(name).weight, edited.get_submodule(name).weight
    assert W1.dtype == dtype and (W1 != W0).all()
    assert torch.equal(W0.float() + deltas[name], W1.float())


def _reapply(original, deltas):
    from jeepkit.editing.deltas import apply_deltas  # the pipeline's re-application: W.add_(dW.to(W.dtype))

    fresh = copy.deepcopy(original)
    apply_deltas(fresh, deltas)
    return fresh


def test_reapplied_delta_reproduces_float32_weights(tiny_gptj):
    model, tok, arch = tiny_gptj
    original, edited, deltas = _constant_edit(model, tok, arch, torch.float32)
    name = arch.name("mlp_out", 1)
    assert torch.equal(_reapply(original, deltas).get_submodule(name).weight, edited.get_submodule(name).weight)


def test_reapplied_delta_reproduces_bfloat16_weights(tiny_gptj):
    model, tok, arch = tiny_gptj
    original, edited, deltas = _constant_edit(model, tok, arch, torch.bfloat16)
    name = arch.name("mlp_out", 1)
    assert torch.equal(_reapply(original, deltas).get_submodule(name).weight, edited.get_submodule(name).weight)


def test_overlapping_jeep_regions_rejected(tiny_model, covariances):
    """A matrix edited by both regions could not be saved as one exactly re-appliable delta."""
    model, tok, arch = tiny_model
    edited = copy.deepcopy(model)
    hp = dict(ARTIFACT_RUNS["jeep"], layers_low=[0, 1], layers_high=[1, 2])
    with pytest.raises(ConfigError, match="overlap"):
        edit(EditContext(edited, tok, arch, cov=covariances.__getitem__, prefixes=PREFIXES, model_identity=identity(arch)), "jeep", [CASE], hp)


def test_relative_null_space_threshold_and_logged_rank(editable_model, synthetic_cov):
    """`nullspace_relative`: the cut is threshold × λ_max(C), so a scaled C gives the same projector (the
    absolute cut does not); every AlphaEdit edit logs rank(P) and d_k per edited module (spec §5)."""
    d = 24
    C = covariance_spanning(preserved_basis(d, 0, rank=10), noise=1e-7)
    lam_max = float(torch.linalg.eigvalsh(C)[-1])
    rel = alphaedit.null_space_projector(C, 1e-3, relative=True)
    torch.testing.assert_close(rel, alphaedit.null_space_projector(C, 1e-3 * lam_max), atol=0, rtol=0)
    torch.testing.assert_close(alphaedit.null_space_projector(1e4 * C, 1e-3, relative=True), rel, atol=1e-9, rtol=0)
    assert int(round(float(alphaedit.null_space_projector(1e4 * C, 1e-3).trace()))) < d - 10  # absolute: moves
    model, tok, arch = editable_model
    covs, _ = synthetic_cov
    cases = [EditCase(case_id="c0", kind="counterfact", prompt="The mother tongue of {} is",
                      subject="Danielle Darrieux", target_new="English", target_true="French")]
    for relative in (False, True):
        m = copy.deepcopy(model)
        res = edit(EditContext(m, tok, arch, cov=covs.__getitem__, prefixes=PREFIXES), "alphaedit", cases,
                   ahp(steps=3, nullspace_relative=relative))
        ranks = res.info["nullspace"]
        assert sorted(ranks) == sorted(res.deltas)
        for module, r in ranks.items():
            C_m = covs[module].double()
            cut = 1e-3 * float(torch.linalg.eigvalsh(C_m)[-1]) if relative else 1e-3
            assert r == {"rank": int((torch.linalg.eigvalsh(C_m) < cut).sum()), "dim": C_m.shape[0]}, (module, r)
