"""Delta artifacts: the exact weight changes an edit applied, re-appliable to the original model.

Keys are module names (ΔW of that module's weight) or full parameter names (FT-WD trains biases and
norms too). The request list and model identity travel in the safetensors metadata, so an edit can
be audited or re-applied without re-running it.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import InputError
from ..io import atomic_path


META_KEY = "jeepkit"


def parameter(model: nn.Module, name: str) -> torch.Tensor:
    """The tensor a delta key refers to: a parameter by full name, else the module's weight."""
    try:
        return model.get_parameter(name)
    except AttributeError:
        return model.get_submodule(name).weight


class Pristine:
    """The original values (on the CPU) of the parameters an edit may change, to put back exactly after it.

    W + ΔW − ΔW is not W in floating point, so the originals are copied. Only the named parameters are
    kept: a 7B model's full copy would be 13 GB of host memory; the nine matrices MEMIT edits are 0.8 GB.
    """

    def __init__(self, model: nn.Module, names: Iterable[str], owner: str = "the method"):
        self.model, self.owner = model, owner
        self.kept = {n: model.get_parameter(n).detach().to("cpu", copy=True) for n in names}

    @torch.no_grad()
    def restore(self, changed: Iterable[str] | None = None) -> None:
        """Put back the originals of `changed` (delta keys: parameter or module names; default: all kept)."""
        for name in (self.kept if changed is None else changed):
            key = name if name in self.kept else f"{name}.weight"
            if key not in self.kept:
                raise RuntimeError(f"{self.owner} changed {name}, which is not among the parameters it declares "
                                   "(its MethodSpec's parameters); its original was not kept")
            parameter(self.model, key).copy_(self.kept[key])


@contextlib.contextmanager
def restored(model: nn.Module, names: Iterable[str], owner: str = "the method") -> Iterator[Pristine]:
    """Keep the originals of `names`; on leaving the block (also on an error) every one is put back."""
    pristine = Pristine(model, names, owner)
    try:
        yield pristine
    finally:
        pristine.restore()


def save_deltas(path: str | Path, deltas: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        # One metadata entry: safetensors writes several in hash-map order, which differs between runs.
        save_file({k: v.detach().to(torch.float32).contiguous() for k, v in deltas.items()}, str(tmp),
                  metadata={META_KEY: json.dumps(meta, sort_keys=True)})


def load_deltas(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise InputError("delta file does not exist", file=str(path))
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
        meta = json.loads(raw[META_KEY]) if META_KEY in raw else {k: json.loads(v) for k, v in raw.items()}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta


@torch.no_grad()
def apply_deltas(model: nn.Module, deltas: dict[str, torch.Tensor]) -> None:
    """W ← W + ΔW with the float32 delta (one rounding), which reproduces the edited weights exactly."""
    for name, d in deltas.items():
        p = parameter(model, name)
        if p.shape != d.shape:
            raise InputError(f"delta shape {tuple(d.shape)} does not match parameter {tuple(p.shape)}", field=name)
        p.add_(d.to(p.device))
