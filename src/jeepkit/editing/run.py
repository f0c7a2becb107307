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
from ..runtime import DEFAULT, Runtime
from . import alphaedit, ft_wd, jeep, memit, pmet, rome
from .engine import Objective, Region, Solver, apply_regions, memit_solve, optimise_targets_batch
from .targets import TargetCache, target_key

# ROME and FT-WD are not objective + regions: they bring their own `edit`.
METHODS: dict[str, ModuleType | None] = {"none": None, "memit": memit, "pmet": pmet, "alphaedit": alphaedit,
                                         "jeep": jeep, "rome": rome, "ft_wd": ft_wd}


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
         cache: TargetCache | None = None, runtime: Runtime = DEFAULT) -> EditResult:
    """Edit `model` in place with `method`; returns the applied ΔW per module and timing info."""
    mod = method_module(method)
    if mod is None:
        return EditResult(deltas={}, info={"edit_seconds": 0.0, "target_seconds": 0.0})
    if hasattr(mod, "edit"):  # methods that are not objective + regions (ROME, FT-WD, ...)
        return mod.edit(model, tok, arch, cases, hp, cov=cov, prefixes=prefixes,
                        model_identity=model_identity, cache=cache, runtime=runtime)
    return optimise_and_apply(model, tok, arch, cases, mod.objective(hp), mod.regions(hp), cov, prefixes,
                              model_identity, cache, solver=getattr(mod, "solve", memit_solve), hp=hp, label=method,
                              solver_kwargs=mod.solver_kwargs(hp) if hasattr(mod, "solver_kwargs") else None,
                              runtime=runtime)


def optimise_and_apply(model: nn.Module, tok, arch, cases: Sequence[EditCase], objective: Objective,
                       regions: Sequence[Region], cov: Callable[[str], torch.Tensor], prefixes: Sequence[str],
                       model_identity: dict[str, Any] | None, cache: TargetCache | None, *,
                       solver: Solver = memit_solve, hp: dict[str, Any], label: str,
                       solver_kwargs: dict[str, Any] | None = None, runtime: Runtime = DEFAULT) -> EditResult:
    """The two engine calls every locate-then-edit method is made of: targets (cached), then regions.

    `model_identity=None` disables the cache: for targets optimised on an already edited model.
    """
    cache = cache if (cache is not None and model_identity is not None) else TargetCache(None)
    t0 = time.time()
    keys = [target_key(model_identity or {}, c, objective, prefixes, method=label.split()[0]) for c in cases]
    results = cache.get_or_compute(
        keys, lambda idx: optimise_targets_batch(model, tok, arch, [cases[i] for i in idx], objective, prefixes),
        batch=runtime.target_batch(hp), desc=f"{label}: targets")
    t_targets = time.time() - t0
    targets = {name: torch.stack([r.z[name] for r in results]) for name in results[0].z}
    deltas, diag = apply_regions(model, tok, arch, cases, regions, targets, cov, prefixes, solver=solver,
                                 grouping=hp.get("key_averaging", "grouped"), solver_kwargs=solver_kwargs,
                                 solve_on=runtime.solve_on, key_batch_rows=runtime.key_rows)
    info = {"target_seconds": round(t_targets, 2), "edit_seconds": round(time.time() - t0, 2),
            "target_cache_hits": cache.hits, "target_cache_misses": cache.misses,
            "mean_target_prob": sum(r.info.get("target_prob", 0) for r in results) / len(results),
            "mean_opt_steps": sum(r.info.get("steps", 0) for r in results) / len(results), **diag}
    return EditResult(deltas=deltas, info=info)
