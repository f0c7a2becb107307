"""Forward passes that compute LM-head logits only where they are scored.

The LM head is the largest matrix of a small model (49k x 576 for SmolLM2); applying it at every
position of a padded batch wastes most of an evaluation's time. These helpers run the decoder
once and project only the requested (row, position) pairs. Target optimisation also runs only the
tokens from each row's earliest δ position on (`FrozenPrefix`): the tokens before it never change.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn
from transformers import Cache, DynamicCache

from .hooks import StopForward


def final_hidden(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last hidden state after the final norm (what the LM head reads)."""
    out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.last_hidden_state


def last_logits(model: nn.Module, **inputs) -> tuple[torch.Tensor, Cache]:
    """(logits at each row's last position, key/value cache) of one cached decoder pass.

    The LM head reads one position per row: a prefill of 13 prompt tokens projects 13 times fewer rows
    than `model(...)`, which projects every position (bit-equal last-position logits are not promised:
    the head's matrix product has another shape). A model without a separate decoder and head (a scripted
    test model, a wrapper) is called whole."""
    base = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if base is None or base is model or head is None:
        out = model(use_cache=True, **inputs)
        return out.logits[:, -1], out.past_key_values
    out = base(use_cache=True, **inputs)
    return head(out.last_hidden_state[:, -1]), out.past_key_values


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
    token_wise: list[nn.Module] | None = None  # modules that act on each token alone (`packed_linears`)


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
                  *, layers: list[nn.Module] | None = None, norm: nn.Module | None = None,
                  token_wise: Sequence[nn.Module] = ()) -> FrozenPrefix:
    """Split each row at starts[r]; compute the prefix's keys and values once (no δ hook may be active).

    With `layers` (the decoder layers from the lowest δ layer up, in order) and `norm` (the final norm),
    the suffix's input to layers[0] is computed too, and each pass starts there. Every pass packs its
    Linears and the `token_wise` modules (the MLPs) to the real tokens (`packed_linears`).
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
        real = torch.tensor(pmask, dtype=torch.bool, device=device)
        with _packed([model.base_model], real, token_wise):
            out = model.base_model(input_ids=pids, attention_mask=real.long(), use_cache=True)
        past = [(k.detach(), v.detach()) for k, v, *_ in out.past_key_values]
        smask = [p + m for p, m in zip(pmask, smask)]
    frozen = FrozenPrefix(past, ids, torch.tensor(smask, dtype=torch.long, device=device), positions, list(starts),
                          token_wise=list(token_wise))
    return _resume(model, frozen, layers, norm)


def _packed(roots: Sequence[nn.Module], real: torch.Tensor, token_wise: Sequence[nn.Module]):
    """`packed_linears` over `roots`, or nothing when the batch has no padding to skip."""
    return packed_linears(roots, real, token_wise) if not bool(real.all()) else contextlib.nullcontext()


def _suffix_real(frozen: FrozenPrefix) -> torch.Tensor:
    return frozen.mask[:, frozen.mask.shape[1] - frozen.ids.shape[1]:].bool()


def _resume(model: nn.Module, frozen: FrozenPrefix, layers: list[nn.Module] | None,
            norm: nn.Module | None) -> FrozenPrefix:
    if layers:
        with _packed([model.base_model], _suffix_real(frozen), frozen.token_wise or ()):
            got = layer_input(layers[0], lambda: _suffix_pass(model, frozen))
        frozen.layers, frozen.norm = list(layers), norm
        frozen.h_in, frozen.layer_args, frozen.layer_kwargs = got.h, got.args, got.kwargs
    return frozen


@torch.no_grad()
def select_rows(model: nn.Module, frozen: FrozenPrefix, rows: list[int]) -> FrozenPrefix:
    """The `FrozenPrefix` that `freeze_prefix` would build for these rows alone, without the prefix pass.

    A row's prefix keys and values do not depend on the other rows of its batch, so they are taken from
    `frozen` (trimmed to the rows' own longest prefix and suffix, the widths `freeze_prefix` would pad to);
    only the suffix's input to the resume layer is recomputed (the embedding and the layers below it, on
    the suffix tokens). Target optimisation drops requests as they stop; this keeps the prefix pass, the
    most expensive forward of a batch, to one per batch.
    """
    if rows == list(range(len(frozen.starts))):
        return frozen
    dev = frozen.ids.device
    idx = torch.tensor(rows, dtype=torch.long, device=dev)
    n_full = frozen.mask.shape[1] - frozen.ids.shape[1]  # prefix columns of the mask
    starts = [frozen.starts[r] for r in rows]
    n_p = max(starts)
    n_s = int(frozen.mask[idx, n_full:].sum(1).max())
    ids, positions = frozen.ids[idx, :n_s], frozen.positions[idx, :n_s]
    mask = torch.cat([frozen.mask[idx, :n_p], frozen.mask[idx, n_full:n_full + n_s]], 1)
    past = None
    if n_p and frozen.past is not None:
        past = [(k.index_select(0, idx.to(k.device))[:, :, :n_p], v.index_select(0, idx.to(v.device))[:, :, :n_p])
                for k, v in frozen.past]
    out = FrozenPrefix(past, ids, mask, positions, starts, token_wise=frozen.token_wise)
    return _resume(model, out, frozen.layers, frozen.norm)


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


@contextlib.contextmanager
def grouped_kv_attention(model: nn.Module) -> Iterator[None]:
    """On the CPU, SDPA attends to grouped-query keys and values as they are.

    With an attention mask, transformers first copies each key/value head once per query head
    (`repeat_kv`), because CUDA's fused kernels would fall back to the math kernel for grouped heads with
    a mask. The CPU kernel takes them directly (`enable_gqa`) and gives bit-equal outputs and gradients
    without the copies: SmolLM2's attention (9 query, 3 key/value heads) runs forward + backward in about
    half the time. transformers reads its switch for this, TRANSFORMERS_SDPA_FORCE_GQA, at every call; it
    is set for the duration only, and only when every parameter is on the CPU.
    """
    key = "TRANSFORMERS_SDPA_FORCE_GQA"
    if not all(p.device.type == "cpu" for p in model.parameters()) or os.environ.get(key) == "1":
        yield
        return
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


@contextlib.contextmanager
def packed_linears(roots: list[nn.Module], real: torch.Tensor, token_wise: Sequence[nn.Module] = ()) -> Iterator[None]:
    """Every `nn.Linear` inside `roots`, and every module of `token_wise`, computes only the real (unpadded)
    tokens of a (rows, S) batch.

    Right-padded rows of unequal length leave a third of a target-optimisation batch as padding, and
    the Linears are most of a decoder layer's work. Each packed module gets the real tokens' rows (its
    input flattened and indexed by `real`) and its output is scattered back into the padded layout, with
    zeros at the padding. Nothing at a real token changes: these modules act on each token alone, padded
    keys are masked out of attention, and a padded token's output is never read. `token_wise` names whole
    modules that act on each token alone (the MLPs): packed once, their inner Linears see the packed input
    and pass it through, and the activation between them runs on real tokens only. Linears fed the same
    tensor (q, k and v) share one packed copy. A module's other callers (any input not shaped (rows, S, ·))
    pass through untouched. The unpacking hook runs before any hook registered earlier, so a δ added to
    a module's output (`hooks.add_at`) sees the padded layout.
    """
    shape = tuple(real.shape)
    flat = real.reshape(-1)
    index: dict[torch.device, torch.Tensor] = {}
    packed: set[int] = set()
    last: list = [None, None]  # the last input packed and its packed copy

    def rows_on(dev: torch.device) -> torch.Tensor:
        if dev not in index:
            index[dev] = flat.to(dev).nonzero().flatten()
        return index[dev]

    def pack(mod, args):
        x = args[0]
        if tuple(x.shape[:-1]) != shape:
            return None
        packed.add(id(mod))
        if last[0] is not x:
            last[0], last[1] = x, x.reshape(-1, x.shape[-1]).index_select(0, rows_on(x.device))
        return (last[1],) + tuple(args[1:])

    def unpack(mod, _args, out):
        if id(mod) not in packed:
            return None
        packed.discard(id(mod))
        h = out[0] if isinstance(out, tuple) else out
        full = h.new_zeros(flat.numel(), h.shape[-1]).index_copy(0, rows_on(h.device), h).view(*shape, h.shape[-1])
        return (full,) + tuple(out[1:]) if isinstance(out, tuple) else full

    mods = list(token_wise) + [m for root in roots for m in root.modules() if isinstance(m, nn.Linear)]
    handles = []
    try:
        for mod in dict.fromkeys(mods):
            handles.append(mod.register_forward_pre_hook(pack))
            handles.append(mod.register_forward_hook(unpack, prepend=True))
        yield
    finally:
        last.clear()
        for h in handles:
            h.remove()


def suffix_hidden(model: nn.Module, frozen: FrozenPrefix, pack: bool = True) -> torch.Tensor:
    """Last hidden state (after the final norm) at the suffix tokens, (rows, S, d).

    Resumed at a layer, the Linears compute only the real tokens (`packed_linears`) unless `pack` is
    off or the batch has no padding; the states at real tokens equal the padded pass's to float rounding.
    """
    if frozen.h_in is None:
        return _suffix_pass(model, frozen).last_hidden_state
    cache = _cache(frozen, model)
    start = LayerInput(frozen.h_in, frozen.layer_args, frozen.layer_kwargs or {})
    layers = frozen.layers or []
    with _packed(layers, _suffix_real(frozen), frozen.token_wise or ()) if pack else contextlib.nullcontext():
        h = run_layers(layers, start, lambda v: cache if isinstance(v, Cache) else v)
    return frozen.norm(h)


class _ScoredLogProbs(torch.autograd.Function):
    """Log-probabilities of chosen tokens in the first rows of `logits`, whole log-distributions in the rest.

    What `log_softmax` + `gather` compute, with one vocabulary-wide buffer instead of five: the
    backward pass writes the logits' gradient (one-hot minus softmax for a chosen token, the usual
    log-softmax gradient for a whole row) into the saved log-probabilities in place, where autograd
    would allocate the one-hot scatter, its log-softmax backward and the slices' gradients apart.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, tok: torch.Tensor):
        n = tok.shape[0]
        logp = torch.log_softmax(logits, -1)
        chosen = logp[:n].gather(1, tok[:, None])[:, 0]
        hit = logp[:n].argmax(-1) == tok
        rest = logp[n:].clone()
        ctx.save_for_backward(logp, tok)
        ctx.mark_non_differentiable(hit)
        return chosen, hit, rest

    @staticmethod
    def backward(ctx, g_chosen, _g_hit, g_rest):
        logp, tok = ctx.saved_tensors
        n = tok.shape[0]
        g_chosen = torch.zeros(n, dtype=logp.dtype, device=logp.device) if g_chosen is None else g_chosen
        g_rest = torch.zeros_like(logp[n:]) if g_rest is None else g_rest
        grad = logp.exp_()  # softmax, in the saved buffer (this graph is never run backward twice)
        grad.mul_(-torch.cat([g_chosen, g_rest.sum(-1)])[:, None])
        grad[:n].scatter_add_(1, tok[:, None], g_chosen[:, None])
        grad[n:] += g_rest
        return grad, None


def scored_log_probs(logits: torch.Tensor, tok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log p(tok[i]) for each of the first len(tok) rows, whether tok[i] is that row's argmax, and the
    log-softmax of the remaining rows): `log_softmax` then `gather`, to float rounding, in less memory."""
    return _ScoredLogProbs.apply(logits, tok)

