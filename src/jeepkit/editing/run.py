"""Run one editing method on a batch of cases: targets (cached) → closed-form regions → weight deltas."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..data.schema import EditCase
from ..errors import ConfigError
from . import memit
from .engine import apply_regions, memit_solve, optimise_targets
from .targets import TargetCache, target_key

METHODS: dict[str, ModuleType | None] = {"none": None, "memit": memit}


def method_module(name: str) -> ModuleType | None:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
    return METHODS[name]


@dataclass
class EditResult:
    deltas: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)


def edit(model: nn.Module, tok, arch, cases: Sequence[EditCase], method: str, hp: dict[str, Any],
         cov: Callable[[str], torch.Tensor], prefixes: Sequence[str], model_identity: dict[str, Any],
         cache: TargetCache | None = None) -> EditResult:
    """Edit `model` in place with `method`; returns the applied ΔW per module and timing info."""
    mod = method_module(method)
    if mod is None:
        return EditResult(deltas={}, info={"edit_seconds": 0.0, "target_seconds": 0.0})
    if hasattr(mod, "edit"):  # methods that are not objective + regions (ROME, FT-WD, ...)
        return mod.edit(model, tok, arch, cases, hp, cov=cov, prefixes=prefixes,
                        model_identity=model_identity, cache=cache)
    cache = cache or TargetCache(None)
    obj = mod.objective(hp)
    t0 = time.time()
    keys = [target_key(model_identity, c, obj, prefixes) for c in cases]
    results = cache.get_or_compute(keys, lambda i: optimise_targets(model, tok, arch, cases[i], obj, prefixes),
                                   desc=f"{method}: targets")
    t_targets = time.time() - t0
    targets = {name: torch.stack([r.z[name] for r in results]) for name in results[0].z}
    solver = getattr(mod, "solve", memit_solve)
    deltas, diag = apply_regions(model, tok, arch, cases, mod.regions(hp), targets, cov, prefixes, solver=solver,
                                 grouping=hp.get("key_averaging", "grouped"))
    info = {"target_seconds": round(t_targets, 2), "edit_seconds": round(time.time() - t0, 2),
            "target_cache_hits": cache.hits, "target_cache_misses": cache.misses,
            "mean_target_prob": sum(r.info.get("target_prob", 0) for r in results) / len(results),
            "mean_opt_steps": sum(r.info.get("steps", 0) for r in results) / len(results), **diag}
    return EditResult(deltas=deltas, info=info)
