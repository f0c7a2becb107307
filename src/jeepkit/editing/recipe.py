"""What every editor is handed and returns, and the routine the locate-then-edit methods share.

`EditContext` carries what an edit needs besides the cases and hyperparameters: the model, tokenizer
and architecture, the covariance lookup, the context prefixes, the model's identity (for target cache
keys) and the cache, how (not what) to compute, and what a sequential run carries between its batches. `optimise_and_apply` is the two engine calls MEMIT,
PMET, AlphaEdit and JEEP are made of: targets (cached), then closed-form regions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..data.schema import EditCase
from ..errors import ConfigError
from ..runtime import DEFAULT, Runtime
from .engine import Objective, Region, Solver, apply_regions, memit_solve, optimise_targets_batch
from .targets import TargetCache, target_key


def no_statistics(module: str) -> torch.Tensor:
    raise ConfigError(f"this edit was given no covariance statistics, and it needs those of {module}")


@dataclass(frozen=True)
class EditContext:
    model: nn.Module
    tok: Any
    arch: Any
    cov: Callable[[str], torch.Tensor] = no_statistics  # module name -> E[kkᵀ] of its input
    prefixes: Sequence[str] = ()  # context prefixes of the run (its seed's)
    model_identity: dict[str, Any] | None = None  # None: targets are not cacheable (the model is already edited)
    cache: TargetCache | None = None
    runtime: Runtime = DEFAULT
    # What a method keeps between the batches of one sequential run (AlphaEdit: Σ KKᵀ of earlier batches).
    # None: every batch stands alone (the independent-batch protocol); a sequential run starts a new dict.
    carry: dict[str, Any] | None = None

    def uncached(self) -> "EditContext":
        """The same context for targets optimised on an already edited model, which no key could name."""
        return replace(self, model_identity=None, cache=None)


@dataclass
class EditResult:
    deltas: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)
    # What the method records into `EditContext.carry` from the model it leaves behind (AlphaEdit: the batch's
    # KKᵀ into C_p). `run.edit` calls it at once; a sequential runner that restrains ΔW first (RECT) calls it
    # after, so the record is read from the model the run carries forward.
    finish: Callable[[], None] | None = None


@torch.no_grad()
def target_prob(model: nn.Module, tok, cases: Sequence[EditCase], rows: int = 32) -> float:
    """Mean over cases of exp(mean log p(target token)) on the bare rewrite prompt: what the optimised δ's
    promised (`mean_target_prob`, with them added) against what the weight update delivers."""
    from ..device import CPU, input_device
    from ..forward import logits_at
    from ..tokens import locate_template, pad_id, right_pad

    out = []
    for b in range(0, len(cases), rows):
        locs = [locate_template(tok, c.prompt, c.subject, answer=c.target_new) for c in cases[b:b + rows]]
        ids, mask = right_pad([l.ids[:-1] for l in locs], pad_id(tok), device=input_device(model))
        # every tensor on an explicit device (a default-device trap must not catch these)
        r = torch.tensor([i for i, l in enumerate(locs) for _ in l.answer_ids], dtype=torch.long, device=CPU)
        c = torch.tensor([p for l in locs for p in l.answer_positions], dtype=torch.long, device=CPU)
        lab = torch.tensor([t for l in locs for t in l.answer_ids], dtype=torch.long, device=CPU)
        logp = torch.log_softmax(logits_at(model, ids, mask, r, c), -1)
        tok_logp = logp.gather(1, lab.to(logp.device)[:, None])[:, 0].double().to(CPU)
        per = torch.zeros(len(locs), dtype=torch.float64, device=CPU).index_add(0, r, tok_logp)
        n = torch.zeros(len(locs), dtype=torch.float64, device=CPU).index_add(0, r, torch.ones_like(tok_logp))
        out += (per / n).exp().tolist()
    return sum(out) / len(out)


def optimise_and_apply(ctx: EditContext, cases: Sequence[EditCase], objective: Objective,
                       regions: Sequence[Region], hp: Any, *, label: str, solver: Solver = memit_solve,
                       solver_kwargs: dict[str, Any] | None = None, targets_from: str | None = None) -> EditResult:
    """Targets for `objective` (from the cache when the context has one), then `regions` applied in order.

    `targets_from` names the method whose module builds the objective (default: `label`'s first word);
    its code is part of the target key, so methods that share an objective (AlphaEdit optimises MEMIT's)
    share the cached targets.
    """
    cache = ctx.cache if (ctx.cache is not None and ctx.model_identity is not None) else TargetCache(None)
    t0 = time.time()
    method = targets_from or label.split()[0]
    keys = [target_key(ctx.model_identity or {}, c, objective, ctx.prefixes, method=method) for c in cases]
    results = cache.get_or_compute(
        keys, lambda idx: optimise_targets_batch(ctx.model, ctx.tok, ctx.arch, [cases[i] for i in idx], objective,
                                                 ctx.prefixes),
        batch=ctx.runtime.target_batch(hp), desc=f"{label}: targets")
    t_targets = time.time() - t0
    targets = {name: torch.stack([r.z[name] for r in results]) for name in results[0].z}
    deltas, diag = apply_regions(ctx.model, ctx.tok, ctx.arch, cases, regions, targets, ctx.cov, ctx.prefixes,
                                 solver=solver, grouping=hp.key_averaging, solver_kwargs=solver_kwargs,
                                 solve_on=ctx.runtime.solve_on, key_batch_rows=ctx.runtime.key_rows,
                                 key_cache_bytes=ctx.runtime.key_cache_mb << 20)
    info = {"target_seconds": round(t_targets, 2), "edit_seconds": round(time.time() - t0, 2),
            "target_cache_hits": cache.hits, "target_cache_misses": cache.misses,
            "mean_target_prob": sum(r.info.get("target_prob", 0) for r in results) / len(results),
            "target_prob_after_edit": target_prob(ctx.model, ctx.tok, cases, ctx.runtime.eval_rows),
            "mean_opt_steps": sum(r.info.get("steps", 0) for r in results) / len(results), **diag}
    return EditResult(deltas=deltas, info=info)
