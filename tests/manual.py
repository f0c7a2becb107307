"""Manual references for editor tests: plain register_forward_hook on single, unpadded prompts.

They share neither the padding nor the hook helpers of jeepkit, so they check the package independently.
"""

from __future__ import annotations

import contextlib

import torch


def _out(o):
    return o[0] if isinstance(o, tuple) else o


@contextlib.contextmanager
def raw_hooks(model, hooks):
    handles = [model.get_submodule(n).register_forward_hook(f) for n, f in hooks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _adder(pos, vec):
    def f(_m, _i, o):
        h = _out(o).clone()
        h[0, pos] += vec
        return (h,) + tuple(o[1:]) if isinstance(o, tuple) else h
    return f


@torch.no_grad()
def logits_with(model, ids, adds=()):
    """Logits of one unpadded prompt, with vec added to module `name`'s output at `pos` for each (name, pos, vec)."""
    with raw_hooks(model, [(n, _adder(p, v)) for n, p, v in adds]):
        x = torch.tensor([ids])
        return model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False).logits[0].float()


@torch.no_grad()
def module_out(model, name, ids, pos):
    """Output (element [0] for tuples) of module `name` at `pos` of one unpadded prompt."""
    got = {}
    with raw_hooks(model, [(name, lambda _m, _i, o: got.__setitem__("o", _out(o)[0, pos].clone()))]):
        model(input_ids=torch.tensor([ids]), use_cache=False)
    return got["o"]


@torch.no_grad()
def read_in_out(model, ids, pos, key_module, cur_module):
    got = {}
    hooks = [(key_module, lambda _m, i, _o: got.__setitem__("k", i[0][0, pos].clone())),
             (cur_module, lambda _m, _i, o: got.__setitem__("c", _out(o)[0, pos].clone()))]
    with raw_hooks(model, hooks):
        model(input_ids=torch.tensor([ids]), use_cache=False)
    return got["k"], got["c"]
