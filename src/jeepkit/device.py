"""Where tensors live: the device a run asks for, and the device of the module each tensor meets.

Every tensor jeepkit creates is made on the device of the module it is fed to (inputs on the embedding's
device, δ rows and losses on the LM head's, keys and updates on the edited Linear's), so the same code
runs on a CPU, one GPU, or a model split over several GPUs by `device_map: auto`. Nothing relies on the
default device: the tests run the engine with `torch.set_default_device("meta")` in force to prove it.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .errors import ConfigError

DEVICE_FORMS = "auto | cpu | cuda | cuda:N"
CPU = torch.device("cpu")


def resolve_device(spec: str | None) -> torch.device:
    """`auto` (CUDA when present, else CPU) | `cpu` | `cuda` | `cuda:N`, checked against this machine."""
    spec = "auto" if spec is None else str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else CPU
    if spec == "cpu":
        return CPU
    m = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if m is None:
        raise ConfigError(f"model.device: unknown device {spec!r}; expected {DEVICE_FORMS}")
    if not torch.cuda.is_available():
        raise ConfigError(f"model.device: {spec!r} asked for, but this machine has no CUDA device "
                          "(torch.cuda.is_available() is false); use model.device: cpu or auto")
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"model.device: {spec!r} asked for, but this machine has "
                          f"{torch.cuda.device_count()} CUDA device(s) (0..{torch.cuda.device_count() - 1})")
    return torch.device("cuda", index)


def module_device(module: nn.Module) -> torch.device:
    """Device of a module's first parameter (or buffer); CPU for a module with neither."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return CPU


def input_device(model: nn.Module) -> torch.device:
    """Where input ids go: the input embedding's device (the first device of a split model)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return module_device(emb if emb is not None else model)


def output_device(model: nn.Module) -> torch.device:
    """Where logits (and hence losses) are computed: the LM head's device."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return module_device(head if head is not None else model)


def device_kind(device: torch.device | str) -> str:
    """"cpu" / "cuda": part of a cache key (targets computed on a GPU are not bit-equal to CPU ones)."""
    return torch.device(device).type
