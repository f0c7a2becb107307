"""Forward passes that compute LM-head logits only where they are scored.

The LM head is the largest matrix of a small model (49k x 576 for SmolLM2); applying it at every
position of a padded batch wastes most of an evaluation's time. These helpers run the decoder
once and project only the requested (row, position) pairs. Target optimisation also runs only the
tokens from each row's earliest δ position on (`FrozenPrefix`): the tokens before it never change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import Cache, DynamicCache

from .hooks import StopForward


def final_hidden(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last hidden state after the final norm (what the LM head reads)."""
    out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.last_hidden_state


def logits_at(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Logits (len(rows) x vocab) at positions (rows[i], cols[i]) only."""
    h = final_hidden(model, input_ids, attention_mask)
    return model.get_output_embeddings()(h[rows.to(h.device), cols.to(h.device)]).float()


@dataclass
class FrozenPrefix:
    """Rows split where an optimised δ is first added; everything before it in depth and position is fixed.

    Under causal attention the states of the tokens before a row's earliest δ position do not depend on
    δ, at any layer; and no state below the lowest layer a δ is added in depends on it either. Target
    optimisation runs dozens of forward + backward passes over the same rows, so `freeze_prefix`
    computes once the keys and values of those tokens (a cache the suffix attends to) and the suffix's
    input to the lowest δ layer; every step (`suffix_hidden`) then runs only the suffix through the
    layers from there up. Indices into the suffix are `col - starts[r]`.
    """

    past: list[tuple[torch.Tensor, torch.Tensor]] | None  # per layer (keys, values), detached; None: no prefix
    ids: torch.Tensor  # (rows, S) suffix tokens, right-padded
    mask: torch.Tensor  # (rows, P + S): prefix mask, then suffix mask
    positions: torch.Tensor  # (rows, S) absolute positions of the suffix tokens
    starts: list[int]
    # resuming at a layer: the layers from there up, the final norm, the suffix's input to the first of them
    # and the other arguments the model passed it (the cache among them is replaced by a fresh one per pass)
    layers: list[nn.Module] | None = None
    norm: nn.Module | None = None
    h_in: torch.Tensor | None = None
    layer_args: tuple = ()
    layer_kwargs: dict | None = None


def _cache(frozen: FrozenPrefix, model: nn.Module) -> DynamicCache | None:
    # A fresh cache per pass: DynamicCache.update concatenates (never writes into) the stored tensors.
    return None if frozen.past is None else DynamicCache(ddp_cache_data=frozen.past, config=model.config)


def _suffix_pass(model: nn.Module, frozen: FrozenPrefix):
    cache = _cache(frozen, model)
    if cache is None:
        return model.base_model(input_ids=frozen.ids, attention_mask=frozen.mask, position_ids=frozen.positions,
                                use_cache=False)
    return model.base_model(input_ids=frozen.ids, attention_mask=frozen.mask, position_ids=frozen.positions,
                            past_key_values=cache, use_cache=True)


@torch.no_grad()
def freeze_prefix(model: nn.Module, seqs: list[list[int]], starts: list[int], pad: int, device: torch.device | str,
                  *, layers: list[nn.Module] | None = None, norm: nn.Module | None = None) -> FrozenPrefix:
    """Split each row at starts[r]; compute the prefix's keys and values once (no δ hook may be active).

    With `layers` (the decoder layers from the lowest δ layer up, in order) and `norm` (the final norm),
    the suffix's input to layers[0] is computed too, and each pass starts there.
    """
    if any(not 0 <= s < len(q) for s, q in zip(starts, seqs)):
        raise ValueError("each row's split point must leave at least one suffix token")
    n_s = max(len(q) - s for s, q in zip(starts, seqs))
    n_p = max(starts)
    ids = torch.tensor([q[s:] + [pad] * (n_s - len(q) + s) for s, q in zip(starts, seqs)], dtype=torch.long,
                       device=device)
    smask = [[1] * (len(q) - s) + [0] * (n_s - len(q) + s) for s, q in zip(starts, seqs)]
    positions = torch.tensor([[s + j for j in range(n_s)] for s in starts], dtype=torch.long, device=device)
    past = None
    if n_p:
        pmask = [[1] * s + [0] * (n_p - s) for s in starts]
        pids = torch.tensor([q[:s] + [pad] * (n_p - s) for s, q in zip(starts, seqs)], dtype=torch.long,
                            device=device)
        out = model.base_model(input_ids=pids, attention_mask=torch.tensor(pmask, dtype=torch.long, device=device),
                               use_cache=True)
        past = [(k.detach(), v.detach()) for k, v, *_ in out.past_key_values]
        smask = [p + m for p, m in zip(pmask, smask)]
    frozen = FrozenPrefix(past, ids, torch.tensor(smask, dtype=torch.long, device=device), positions, list(starts))
    if layers:
        got = layer_input(layers[0], lambda: _suffix_pass(model, frozen))
        frozen.layers, frozen.norm = list(layers), norm
        frozen.h_in, frozen.layer_args, frozen.layer_kwargs = got.h, got.args, got.kwargs
    return frozen


@dataclass
class LayerInput:
    """What a decoder layer was called with: its hidden-state input and the model's other arguments."""

    h: torch.Tensor
    args: tuple
    kwargs: dict


def layer_input(layer: nn.Module, run) -> LayerInput:
    """The input `run()` (a forward pass of the model) gives `layer`; the pass stops there."""
    got: dict = {}

    def grab(_mod, args, kwargs):
        got.update(h=args[0].detach(), args=args[1:], kwargs=dict(kwargs))
        raise StopForward

    handle = layer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        run()
    except StopForward:
        pass
    finally:
        handle.remove()
    if "h" not in got:
        raise RuntimeError("the forward pass never reached the layer whose input was asked for")
    return LayerInput(got["h"], got["args"], got["kwargs"])


def run_layers(layers: list[nn.Module], start: LayerInput, fresh=lambda v: v) -> torch.Tensor:
    """`layers` applied in order from `start`, with the arguments the model gave the first of them.

    The same calls the model's own loop makes, so the result is bit-equal to the full pass. `fresh`
    maps each argument before use (a cache that a pass writes into must be new for every pass).
    """
    args = tuple(fresh(v) for v in start.args)
    kwargs = {k: fresh(v) for k, v in start.kwargs.items()}
    h = start.h
    for layer in layers:
        out = layer(h, *args, **kwargs)
        h = out[0] if isinstance(out, tuple) else out
    return h


def suffix_hidden(model: nn.Module, frozen: FrozenPrefix) -> torch.Tensor:
    """Last hidden state (after the final norm) at the suffix tokens, (rows, S, d)."""
    if frozen.h_in is None:
        return _suffix_pass(model, frozen).last_hidden_state
    cache = _cache(frozen, model)
    start = LayerInput(frozen.h_in, frozen.layer_args, frozen.layer_kwargs or {})
    h = run_layers(frozen.layers or [], start, lambda v: cache if isinstance(v, Cache) else v)
    return frozen.norm(h)
