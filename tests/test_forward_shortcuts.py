"""The target-optimisation shortcuts of `jeepkit.forward` change nothing but float rounding.

Each is checked against the computation it replaces on the tiny models: Linears on real tokens only
(`packed_linears`), a subset of a batch taken from its frozen prefix (`select_rows`) and the fused
log-probabilities of scored tokens (`scored_log_probs`).
"""

from __future__ import annotations

import pytest
import torch

from jeepkit.forward import freeze_prefix, packed_linears, scored_log_probs, select_rows, suffix_hidden
from jeepkit.models import get_module

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# rows of unequal length and split points, so the suffix batch is padded and prefixes differ in width
SEQS = [[5, 9, 13, 2, 7, 11, 3], [4, 8], [6, 1, 12, 10], [14, 3, 5, 9, 2], [7, 7, 2]]
STARTS = [3, 0, 2, 4, 1]
LOW = 1


def _frozen(model, arch, seqs=SEQS, starts=STARTS, mlps=False):
    layers = [get_module(model, arch.name("layer", i)) for i in range(LOW, arch.n_layers)]
    token_wise = [get_module(model, arch.name("mlp", i)) for i in range(arch.n_layers)] if mlps else ()
    return freeze_prefix(model, seqs, starts, 0, "cpu", layers=layers, norm=get_module(model, arch.final_norm),
                         token_wise=token_wise)


def _real(frozen):
    return frozen.mask[:, frozen.mask.shape[1] - frozen.ids.shape[1]:].bool()


@torch.no_grad()
def test_packed_linears_see_only_real_tokens_and_change_nothing(tiny_model):
    model, _tok, arch = tiny_model
    frozen = _frozen(model, arch)
    real = _real(frozen)
    assert not bool(real.all()), "the test needs padding"
    padded = suffix_hidden(model, frozen, pack=False)
    packed = suffix_hidden(model, frozen)
    torch.testing.assert_close(packed[real], padded[real], atol=1e-6, rtol=1e-6)

    seen = []
    lin = next(m for m in frozen.layers[0].modules() if isinstance(m, torch.nn.Linear))
    with packed_linears(frozen.layers, real):
        handle = lin.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
        try:
            suffix_hidden(model, frozen, pack=False)
        finally:
            handle.remove()
    assert seen and seen[0][0] == int(real.sum())  # the Linear got the real tokens only
    # hooks are gone afterwards: a Linear called outside sees its input whole
    x = torch.zeros(2, 3, lin.in_features)
    assert lin(x).shape == (2, 3, lin.out_features)


def test_packed_linears_keep_gradients(tiny_model):
    """A δ added to a Linear's output still reaches the loss through the packed layers, with the same gradient."""
    from jeepkit.hooks import add_at
    model, _tok, arch = tiny_model
    frozen = _frozen(model, arch)
    real = _real(frozen)
    mod = get_module(model, arch.name("mlp_out", LOW))
    rows = torch.arange(len(SEQS))
    cols = torch.zeros(len(SEQS), dtype=torch.long)
    grads = []
    for pack in (False, True):
        delta = torch.zeros(len(SEQS), arch.hidden_size, requires_grad=True)
        with add_at(mod, rows, cols, lambda: delta):
            h = suffix_hidden(model, frozen, pack=pack)
        h[real].pow(2).sum().backward()
        grads.append(delta.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("rows", [[0, 2, 4], [1, 3], [3]])
def test_select_rows_equals_freezing_the_subset(tiny_model, rows):
    model, _tok, arch = tiny_model
    whole = _frozen(model, arch)
    got = select_rows(model, whole, rows)
    want = _frozen(model, arch, [SEQS[r] for r in rows], [STARTS[r] for r in rows])
    assert got.starts == want.starts
    for field in ("ids", "mask", "positions"):
        assert torch.equal(getattr(got, field), getattr(want, field)), field
    assert (got.past is None) == (want.past is None)
    real = _real(want)
    torch.testing.assert_close(got.h_in[real], want.h_in[real], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(suffix_hidden(model, got)[real], suffix_hidden(model, want)[real],
                               atol=1e-5, rtol=1e-5)


def test_scored_log_probs_equal_log_softmax_and_gather():
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(7, 50, generator=gen)).requires_grad_(True)
    tok = torch.tensor([3, 49, 0, 17, 17])
    w_rest = torch.randn(2, 50, generator=gen)
    w_tok = torch.randn(5, generator=gen)

    chosen, hit, rest = scored_log_probs(logits, tok)
    ((chosen * w_tok).sum() + (rest.exp() * (rest - w_rest)).sum()).backward()
    fused = logits.grad.clone()

    logits.grad = None
    logp = torch.log_softmax(logits, -1)
    ref_chosen = logp[:5].gather(1, tok[:, None])[:, 0]
    ref_rest = logp[5:]
    ((ref_chosen * w_tok).sum() + (ref_rest.exp() * (ref_rest - w_rest)).sum()).backward()

    assert torch.equal(chosen, ref_chosen.detach()) and torch.equal(rest, ref_rest.detach())
    assert torch.equal(hit, logp[:5].argmax(-1) == tok)
    assert not hit.requires_grad
    torch.testing.assert_close(fused, logits.grad, atol=1e-6, rtol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("mlps", [False, True])
def test_every_row_equals_the_row_run_alone(tiny_model, mlps):
    """Packed prefix pass, packed resume pass and packed steps (Linears, and whole MLPs with `mlps`):
    each row's final states equal that row's own unpadded pass through the whole model."""
    model, _tok, arch = tiny_model
    frozen = _frozen(model, arch, mlps=mlps)
    assert bool(frozen.mask.eq(0).any()), "the test needs padding in the prefix and the suffix"
    got = suffix_hidden(model, frozen)
    for r, (seq, start) in enumerate(zip(SEQS, STARTS)):
        alone = model.base_model(input_ids=torch.tensor([seq]), use_cache=False).last_hidden_state[0]
        torch.testing.assert_close(got[r, :len(seq) - start], alone[start:], atol=1e-5, rtol=1e-5)


def test_packed_mlps_keep_the_delta_and_its_gradient(tiny_model):
    """A δ added to a packed MLP's output (the hook `add_at` registers before packing) lands in the padded
    layout at its (row, position) and gets the gradient of the unpacked pass."""
    from jeepkit.hooks import add_at
    model, _tok, arch = tiny_model
    real = _real(_frozen(model, arch))
    mod = get_module(model, arch.name("mlp", LOW))
    rows = torch.arange(len(SEQS))
    cols = torch.tensor([min(1, int(real[r].sum()) - 1) for r in range(len(SEQS))])
    out = []
    for mlps in (False, True):
        frozen = _frozen(model, arch, mlps=mlps)
        delta = torch.zeros(len(SEQS), arch.hidden_size, requires_grad=True)
        with add_at(mod, rows, cols, lambda: delta + 0.3):
            h = suffix_hidden(model, frozen, pack=mlps)
        h[real].pow(2).sum().backward()
        out.append((h.detach()[real], delta.grad))
    assert out[0][1].abs().sum() > 0
    torch.testing.assert_close(out[1][0], out[0][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1][1], out[0][1], atol=1e-5, rtol=1e-5)


def test_grouped_kv_attention_is_bit_equal_and_skips_the_copies(llama_tok, monkeypatch):
    """Target optimisation on a grouped-query LLaMA (4 query, 2 key/value heads): the same targets, bit for
    bit, with `grouped_kv_attention` (the engine's default on the CPU) as with transformers' repeated heads,
    and no `repeat_kv` copy while it is on; the switch is restored afterwards."""
    import os

    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.integrations import sdpa_attention

    from jeepkit.data.schema import EditCase
    from jeepkit.editing import engine, memit
    from jeepkit.models import finish_loading

    torch.manual_seed(0)
    tok = llama_tok
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=128,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      initializer_range=0.3)
    model, tok, arch = finish_loading(LlamaForCausalLM(cfg).float(), tok)
    cases = [EditCase("a", "counterfact", "The mother tongue of {} is", "Danielle Darrieux", "English", "French"),
             EditCase("b", "counterfact", "{} is a city in", "Paris", "Japan", "France")]
    obj = memit.objective({"layers": [1, 2], "clamp": 4.0, "weight_decay": 0.01, "lr": 0.5, "steps": 6,
                           "kl_factor": 0.0625, "lambda": 1.0, "stop_loss": 0.0})
    calls = []
    real_repeat = sdpa_attention.repeat_kv
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda h, n: calls.append(n) or real_repeat(h, n))
    monkeypatch.delenv("TRANSFORMERS_SDPA_FORCE_GQA", raising=False)
    prefixes = ["Therefore you know. ", "Because I said so, you know. "]
    repeated = engine._optimise_targets_batch(model, tok, arch, cases, obj, prefixes, True)
    assert calls, "transformers repeats the heads when a mask is given"
    calls.clear()
    grouped = engine.optimise_targets_batch(model, tok, arch, cases, obj, prefixes)
    assert not calls
    assert "TRANSFORMERS_SDPA_FORCE_GQA" not in os.environ
    for a, b in zip(grouped, repeated):
        assert a.info["steps"] == b.info["steps"] == 5
        assert torch.equal(a.z["main"], b.z["main"]) and torch.equal(a.init["main"], b.init["main"])
