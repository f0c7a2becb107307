"""Sequential ROME (spec §4.3) on a tiny GPT-J and a tiny LLaMA.

Manual references read activations with plain `register_forward_hook` on single, unpadded prompts.
"""

from __future__ import annotations

import copy

import pytest
import torch

import tiny
from jeepkit.editing.recipe import EditContext
from jeepkit.data.schema import EditCase
from jeepkit.editing import rome
from jeepkit.errors import ConfigError, OptimisationError
from jeepkit.stats import accumulate_second_moments
from jeepkit.tokens import locate_template

pytestmark = pytest.mark.usefixtures("torch_one_thread")

LAYER = 1
CASE = EditCase(case_id="c0", kind="counterfact", prompt="The mother tongue of {} is", subject="Danielle Darrieux",
                target_new="English", target_true="French")
CASE_B = EditCase(case_id="c2", kind="counterfact", prompt="{} is a city in", subject="Paris",
                  target_new="Japan", target_true="France")
# A short run: fewer templates and steps than the paper keeps the tests fast; the defaults are checked apart.
HP = {"layer": LAYER, "steps": 8, "n_prefix_short": 3, "n_prefix_long": 3, "seed": 0, "progress": False}


@pytest.fixture(scope="module")
def covariances(tiny_gptj, tiny_llama):
    """C of the edited layer's input on the tiny corpus, with a ridge (fewer tokens than d_k)."""
    out = {}
    for model, tok, arch in (tiny_gptj, tiny_llama):
        name = arch.name("mlp_out", LAYER)
        moments, _ = accumulate_second_moments(model, tok, arch, [name], tiny.CORPUS, max_length=64, dtype="float64")
        c = moments[name]
        out[name] = c + 1e-2 * c.diagonal().mean() * torch.eye(c.shape[0], dtype=c.dtype)
    return out


@pytest.fixture(scope="module")
def templates(tiny_gptj, tiny_llama):
    """ROME prefixes per family, sampled once from the unedited model. The LLaMA-style tokenizer has no
    <|endoftext|> token (the literal string is already longer than 5 tokens), so sample from "The"."""
    return {"gptj": rome.rome_prefixes(tiny_gptj[0], tiny_gptj[1], rome.resolve_hp(HP), seed=0),
            "llama": rome.rome_prefixes(tiny_llama[0], tiny_llama[1],
                                        rome.resolve_hp({**HP, "template_start": "The"}), seed=0)}


def _out(o):
    return o[0] if isinstance(o, tuple) else o


@torch.no_grad()
def read_linear(model, name, ids, pos):
    """(input, output) of Linear `name` at `pos` of one unpadded prompt."""
    got = {}
    h = model.get_submodule(name).register_forward_hook(
        lambda _m, i, o: got.update(k=i[0][0, pos].clone(), m=_out(o)[0, pos].clone()))
    try:
        model(input_ids=torch.tensor([ids]), use_cache=False)
    finally:
        h.remove()
    return got["k"], got["m"]


def weight(model, arch):
    return model.get_submodule(arch.name("mlp_out", LAYER)).weight


def c_inv(covariances, arch):
    return torch.linalg.inv(covariances[arch.name("mlp_out", LAYER)])


# ---------------------------------------------------------------- hyperparameters and templates


def test_defaults_match_spec():
    hp = rome.resolve_hp({"layer": 7})
    assert (hp["steps"], hp["lr"], hp["weight_decay"], hp["kl_factor"], hp["clamp"], hp["stop_loss"]) == \
        (20, 0.5, 0.5, 0.0625, 4.0, 0.05)
    assert (hp["n_prefix_short"], hp["prefix_len_short"], hp["n_prefix_long"], hp["prefix_len_long"]) == (10, 5, 10, 10)
    obj = rome.objective(hp)
    (d,) = obj.deltas
    assert (d.role, d.layer, d.position, d.clamp, d.weight_decay) == ("mlp", 7, "subject_last", 4.0, 0.5)
    assert (obj.lr, obj.steps, obj.kl_factor, obj.stop_rule, obj.stop_value) == (0.5, 20, 0.0625, "loss", 0.05)
    with pytest.raises(ConfigError, match="layer"):
        rome.resolve_hp({"steps": 3})


def test_rome_prefixes_seeded(tiny_gptj, monkeypatch):
    model, tok, _ = tiny_gptj
    hp = rome.resolve_hp({**HP, "n_prefix_short": 4, "n_prefix_long": 2})
    a = rome.rome_prefixes(model, tok, hp, seed=0)
    assert len(a) == 6 and all(p.endswith(". ") and "{" not in p and "}" not in p for p in a)
    assert a == rome.rome_prefixes(model, tok, hp, seed=0)
    assert a != rome.rome_prefixes(model, tok, hp, seed=1)
    assert len(set(a[:4])) > 1  # distinct samples within a group
    # two groups sampled from the start string: 4 of 5 tokens, 2 of 10, with distinct generator seeds
    calls = []
    real = rome.sample_prefixes

    def spy(m, t, seed, length, seeds):
        calls.append((seed, length, list(seeds)))
        return real(m, t, seed, length=length, seeds=seeds)

    monkeypatch.setattr(rome, "sample_prefixes", spy)
    assert rome.rome_prefixes(model, tok, hp, seed=0) == a
    assert [(c[1], c[2]) for c in calls] == [(5, ["<|endoftext|>"] * 4), (10, ["<|endoftext|>"] * 2)]
    assert calls[0][0] != calls[1][0]
    # without hp["seed"] the seed comes from the run's prefixes: deterministic, and run-dependent
    s1 = rome.template_seed({"seed": None}, ["A. "])
    assert s1 == rome.template_seed({"seed": None}, ["A. "]) != rome.template_seed({"seed": None}, ["B. "])
    assert rome.template_seed({"seed": 5}, ["A. "]) == 5


# ---------------------------------------------------------------- one request


def test_u_is_normalised_inverse_covariance_times_uniform_key(tiny_model, covariances, templates):
    model, tok, arch = tiny_model
    pre = templates[arch.family]
    inv = c_inv(covariances, arch)
    u, k = rome.compute_u(model, tok, arch, CASE, LAYER, pre, inv)
    keys = []
    for p in [""] + pre:
        loc = locate_template(tok, CASE.prompt, CASE.subject, prefix=p)
        keys.append(read_linear(model, arch.name("mlp_out", LAYER), loc.ids, loc.subject_last)[0])
    k_ref = torch.stack(keys).mean(0)  # uniform over the 1 + len(pre) templates (not grouped)
    torch.testing.assert_close(k, k_ref, atol=1e-5, rtol=1e-4)
    u_ref = inv @ k_ref.double()
    u_ref = (u_ref / u_ref.norm()).float()
    torch.testing.assert_close(u, u_ref, atol=1e-5, rtol=1e-4)
    assert float(u.norm()) == pytest.approx(1.0, abs=1e-5)
    # C⁻¹ matters: u is not just the normalised key
    assert (u - k_ref / k_ref.norm()).norm() > 0.05


def test_request_update_realises_target(tiny_model, covariances, templates, monkeypatch):
    """z is optimised on the 21-style templates with the ROME objective; after ΔW = right ⊗ u the edited
    Linear outputs exactly z at the subject's last token of the bare prompt."""
    model, tok, arch = tiny_model
    model = copy.deepcopy(model)
    pre = templates[arch.family]
    seen = {}
    real = rome.optimise_targets

    def spy(m, t, a, case, objective, prefixes):
        seen.update(objective=objective, prefixes=list(prefixes))
        return real(m, t, a, case, objective, prefixes)

    monkeypatch.setattr(rome, "optimise_targets", spy)
    upd = rome.request_update(model, tok, arch, CASE, HP, pre, c_inv(covariances, arch))
    assert seen["prefixes"] == pre  # the ROME templates, not MEMIT's prefixes
    (d,) = seen["objective"].deltas
    assert (d.role, d.layer, d.position) == ("mlp", LAYER, "subject_last")
    name = arch.name("mlp_out", LAYER)
    loc = locate_template(tok, CASE.prompt, CASE.subject)
    k_cur, m_cur = read_linear(model, name, loc.ids, loc.subject_last)
    torch.testing.assert_close(upd.k_cur, k_cur, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(upd.m_cur, m_cur, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(upd.right, (upd.z - m_cur) / torch.dot(k_cur, upd.u), atol=1e-4, rtol=1e-4)
    assert upd.delta.shape == weight(model, arch).shape
    assert torch.linalg.matrix_rank(upd.delta.double(), rtol=1e-5) == 1
    assert (upd.z - m_cur).norm() > 1e-3  # the optimisation moved the target
    with torch.no_grad():
        weight(model, arch).add_(upd.delta)
    _, m_new = read_linear(model, name, loc.ids, loc.subject_last)
    torch.testing.assert_close(m_new, upd.z, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- sequential batches


def test_sequential_second_request_sees_first(tiny_model, covariances, templates):
    model, tok, arch = tiny_model
    pre, inv = templates[arch.family], c_inv(covariances, arch)
    W0 = weight(model, arch).detach().clone()
    m_seq = copy.deepcopy(model)
    deltas, ups = rome.apply_sequential(m_seq, tok, arch, [CASE, CASE_B], HP, pre, inv)
    assert [u.case_id for u in ups] == ["c0", "c2"]
    # one request at a time on a model that keeps the earlier edit gives the same updates
    m_step = copy.deepcopy(model)
    _, (u1,) = rome.apply_sequential(m_step, tok, arch, [CASE], HP, pre, inv)
    _, (u2,) = rome.apply_sequential(m_step, tok, arch, [CASE_B], HP, pre, inv)
    torch.testing.assert_close(ups[0].delta, u1.delta, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ups[1].delta, u2.delta, atol=1e-5, rtol=1e-4)
    W = weight(m_seq, arch).detach()
    torch.testing.assert_close(W, W0 + ups[0].delta + ups[1].delta, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weight(m_step, arch).detach(), W, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(deltas[arch.name("mlp_out", LAYER)], W - W0, atol=0, rtol=0)
    # ... and request 2 computed on the unedited model would differ: its key/value were read after Δ1
    _, (u2_fresh,) = rome.apply_sequential(copy.deepcopy(model), tok, arch, [CASE_B], HP, pre, inv)
    assert (u2_fresh.m_cur - ups[1].m_cur).norm() > 1e-4 * ups[1].m_cur.norm()
    assert (u2_fresh.delta - ups[1].delta).norm() > 1e-3 * ups[1].delta.norm()
    assert torch.linalg.matrix_rank(deltas[arch.name("mlp_out", LAYER)].double(), rtol=1e-5) == 2


def test_edit_in_place_and_returned_delta(editable_model, covariances, monkeypatch):
    model, tok, arch = editable_model
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    lp_before = tiny.answer_logprob(model, tok, CASE.prompt, CASE.subject, CASE.target_new)
    hp = dict(HP, template_start="<|endoftext|>" if arch.family == "gptj" else "The")
    seen = []
    real = rome.optimise_targets
    monkeypatch.setattr(rome, "optimise_targets", lambda *a: seen.append(list(a[-1])) or real(*a))
    res = rome.edit(EditContext(model, tok, arch, cov=covariances.__getitem__, prefixes=["x. "], model_identity={"id": "tiny"}), [CASE], hp)
    name = arch.name("mlp_out", LAYER)
    assert set(res.deltas) == {name}
    d = res.deltas[name]
    assert d.dtype == torch.float32 and d.shape == weight(model, arch).shape
    after = model.state_dict()
    for key in before:
        if key == f"{name}.weight":
            torch.testing.assert_close(after[key] - before[key], d, atol=0, rtol=0)
            assert d.abs().max() > 0
        else:
            assert torch.equal(after[key], before[key]), key  # nothing else moved (incl. the bias)
    assert torch.linalg.matrix_rank(d.double(), rtol=1e-5) == 1
    lp_after = tiny.answer_logprob(model, tok, CASE.prompt, CASE.subject, CASE.target_new)
    assert lp_after > lp_before + 0.2
    info = res.info
    assert info["n_templates"] == 1 + HP["n_prefix_short"] + HP["n_prefix_long"] == 1 + len(info["templates"])
    assert info["n_requests"] == 1 and info["template_seed"] == 0
    assert seen == [info["templates"]]  # z optimised over the ROME templates, not the MEMIT prefixes passed in
    import json
    json.dumps(info)  # the pipeline writes it to info.json


def test_inverse_cov_is_float64_inverse_and_rejects_singular():
    a = torch.eye(3, dtype=torch.float32) * 2
    inv = rome.inverse_cov(lambda _n: a, "m.test")
    assert inv.dtype == torch.float64
    torch.testing.assert_close(inv, torch.eye(3, dtype=torch.float64) / 2)
    with pytest.raises(OptimisationError, match="singular"):
        rome.inverse_cov(lambda _n: torch.zeros(3, 3), "m.test")
