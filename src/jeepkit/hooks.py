"""Forward hooks: add a vector at chosen (row, position) pairs, or read a module's input/output.

Decoder layers and attention modules may return tuples (element 0 is the hidden state) or bare
tensors depending on the transformers version; both are handled here and nowhere else.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch
from torch import nn


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output, new: torch.Tensor):
    if isinstance(output, tuple):
        return (new,) + tuple(output[1:])
    return new


@contextlib.contextmanager
def add_at(module: nn.Module, rows: torch.Tensor, cols: torch.Tensor, delta: Callable[[], torch.Tensor],
           record_init: dict | None = None, init_row: int | Sequence[int] = 0) -> Iterator[None]:
    """Add `delta()` (a d-vector, or one vector per (row, col) pair) to the module output at (rows[i], cols[i]).

    If `record_init` is given and still empty, the unmodified output at (rows[init_row], cols[init_row])
    is stored in it under "init" (the anchor value that clamp and weight decay are relative to); a
    list of indices records one vector per index.
    """

    def hook(_mod, _inp, output):
        h = _hidden(output)
        r, c = rows.to(h.device), cols.to(h.device)  # no-ops unless the model is split over devices
        if record_init is not None and "init" not in record_init:
            record_init["init"] = h[r[init_row], c[init_row]].detach().clone()
        d = delta()
        h = h.clone()
        h[r, c] = h[r, c] + d.to(device=h.device, dtype=h.dtype)
        return _replace_hidden(output, h)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def capture(modules: dict[str, nn.Module], *, inputs: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Collect each module's output (or first positional input) during the forward passes inside."""
    store: dict[str, torch.Tensor] = {}
    handles = []
    for name, mod in modules.items():
        def hook(_mod, inp, output, name=name):
            store[name] = (inp[0] if inputs else _hidden(output)).detach()
        handles.append(mod.register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


class StopForward(Exception):
    """Raised by a hook to end a forward pass once the deepest needed layer has run."""


@contextlib.contextmanager
def stop_after(module: nn.Module) -> Iterator[None]:
    def hook(_mod, _inp, _out):
        raise StopForward

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
