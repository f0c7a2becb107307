"""AlphaEdit (Fang et al. 2025), spec §5: MEMIT's targets and keys, a null-space-projected solve.

The update is confined to the null space of the preserved keys: P = Û Ûᵀ with Û the eigenvectors of
C = E[kkᵀ] whose eigenvalues are below `nullspace_threshold`, and
ΔW = R Kᵀ P (K Kᵀ P + C_p P + α I)⁻¹ (no λC term). C_p = Σ KKᵀ of the earlier batches of a sequential
run (the reference code's `cache_c`): it lives in `EditContext.carry`, so it starts at zero with every
run and is never shared between runs; in the independent-batch protocol (carry None) C_p = 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from . import memit
from .engine import Objective, Region, read_keys_and_cur
from .hparams import NONNEG, POS, knob
from .recipe import EditContext, EditResult, optimise_and_apply
from .spec import MethodSpec


@dataclass(frozen=True, kw_only=True)
class Hparams(memit.Hparams):
    method: ClassVar[str] = "alphaedit"
    nullspace_threshold: float = knob("num", 2e-2, **POS)
    # false: an absolute eigenvalue cut (the official code's 2e-2, tuned on GPT-J / Llama3 with 100k Wikipedia
    # samples); true: the cut is nullspace_threshold × the largest eigenvalue of C, which carries across models
    nullspace_relative: bool = knob("bool", False)
    l2: float = knob("num", 10.0, **NONNEG)


def objective(hp: Any) -> Objective:
    return memit.objective(Hparams.coerce(hp))


def regions(hp: Any) -> list[Region]:
    return memit.regions(Hparams.coerce(hp))


def null_space_projector(C: torch.Tensor, threshold: float, relative: bool = False) -> torch.Tensor:
    """P = Û Ûᵀ over the eigenvectors of the (symmetric PSD) C with eigenvalue < threshold (× the largest
    eigenvalue when `relative`)."""
    evals, evecs = torch.linalg.eigh(C.to(torch.float64))
    cut = threshold * float(evals[-1]) if relative else threshold
    U = evecs[:, evals < cut]
    return U @ U.T


def solve(C: torch.Tensor, K: torch.Tensor, R: torch.Tensor, lam: float, *, nullspace_threshold: float = 2e-2,
          nullspace_relative: bool = False, l2: float = 10.0, projector_cache: dict | None = None,
          module: str = "", earlier_keys: dict[str, torch.Tensor] | None = None, **_: Any) -> torch.Tensor:
    """ΔW = (solve(P (KKᵀ + C_p) + αI, P K Rᵀ))ᵀ with C_p = earlier_keys[module] (absent: 0); λ is unused
    (the projection replaces the covariance term)."""
    key = (module, nullspace_threshold, nullspace_relative, C.shape[0], str(K.device))
    if projector_cache is not None and key in projector_cache:
        P = projector_cache[key]
    else:
        P = null_space_projector(C.to(K.device), nullspace_threshold, nullspace_relative)
        if projector_cache is not None:
            projector_cache[key] = P
    K = K.to(torch.float64)
    R = R.to(device=K.device, dtype=torch.float64)
    M = K @ K.T
    if earlier_keys is not None and module in earlier_keys:
        M = M + earlier_keys[module].to(device=K.device, dtype=torch.float64)
    A = P @ M + l2 * torch.eye(K.shape[0], dtype=torch.float64, device=K.device)
    return torch.linalg.solve(A, P @ K @ R.T).T


def solver_kwargs(hp: Any) -> dict[str, Any]:
    """The solve's settings, with a fresh projector cache (one eigendecomposition per module and edit)."""
    hp = Hparams.coerce(hp)
    return {"nullspace_threshold": hp.nullspace_threshold, "nullspace_relative": hp.nullspace_relative,
            "l2": hp.l2, "projector_cache": {}}


def projector_ranks(projector_cache: dict) -> dict[str, dict[str, int]]:
    """rank(P) and d_k per edited module (P is an orthogonal projector: its rank is its trace)."""
    return {key[0]: {"rank": int(round(float(P.trace()))), "dim": int(P.shape[0])}
            for key, P in sorted(projector_cache.items(), key=lambda kv: kv[0][0])}


CARRY_KEY = "alphaedit.earlier_keys"


@torch.no_grad()
def remember_keys(ctx: EditContext, cases: Sequence, hp: Hparams, earlier: dict[str, torch.Tensor]) -> None:
    """C_p += KKᵀ per edited module, the keys read on the model after this batch's update (as the reference)."""
    for region in regions(hp):
        cur_module = ctx.arch.name(region.cur_role, region.cur_layer)
        for layer in region.layers:
            module = ctx.arch.name(region.edit_role, layer)
            K, _ = read_keys_and_cur(ctx.model, ctx.tok, ctx.arch, cases, ctx.prefixes, module, region.key_position,
                                     cur_module, hp.key_averaging, batch_rows=ctx.runtime.key_rows)
            KK = (K.to(torch.float64) @ K.to(torch.float64).T).cpu()  # host memory: d_k² per layer
            earlier[module] = earlier[module] + KK if module in earlier else KK


def edit(ctx: EditContext, cases: Sequence, hp: Hparams) -> EditResult:
    kwargs = solver_kwargs(hp)
    if ctx.carry is not None:
        kwargs["earlier_keys"] = ctx.carry.setdefault(CARRY_KEY, {})
    res = optimise_and_apply(ctx, cases, objective(hp), regions(hp), hp, label="alphaedit", solver=solve,
                             solver_kwargs=kwargs, targets_from="memit")
    # spec §5: check rank(P); a projector of rank d_k (nothing preserved) leaves only the l2 term
    res.info["nullspace"] = projector_ranks(kwargs["projector_cache"])
    if ctx.carry is not None:
        earlier = kwargs["earlier_keys"]
        res.finish = lambda: remember_keys(ctx, cases, hp, earlier)
    return res


SPEC = MethodSpec("alphaedit", "AlphaEdit", "closed_form", Hparams, edit, statistics=memit.statistics,
                  objectives=lambda hp: [(objective(hp), True)])
