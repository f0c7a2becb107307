"""Regularisers of sequential editing: PRUNE and RECT, and the spectra they act on.

PRUNE (seed 003, second paper, Eqs. 4-6): every singular value σ̂ of the accumulated update ΣΔW above
the largest singular value of the original W is replaced by log_α(σ̂) − log_α(max σ) + max σ, once,
after the last edit; the singular vectors are kept. α is not given in the seed (its App. B.3 is
missing): it is a parameter, chosen on the train split (params.yaml says how).
RECT (Gu et al. 2024): of each batch's ΔW only the entries with the largest relative change
|ΔW_ij| / |W_ij| are kept, the top `top_percent` of them; the others are set to zero.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError


@torch.no_grad()
def prune(W: torch.Tensor, dW: torch.Tensor, alpha: float) -> torch.Tensor:
    """ΣΔW with its singular values above max σ(W) restrained (float64 arithmetic, returned as float32).

    When no singular value exceeds max σ(W) the update is returned unchanged (not re-assembled from its SVD).
    """
    if not alpha > 1:
        raise ConfigError(f"PRUNE's alpha must be > 1 (a logarithm base), got {alpha!r}")
    if W.shape != dW.shape or W.dim() != 2:
        raise ValueError(f"prune: W {tuple(W.shape)} and ΔW {tuple(dW.shape)} must be matrices of one shape")
    s_max = float(torch.linalg.svdvals(W.double()).max())
    U, S, Vh = torch.linalg.svd(dW.double(), full_matrices=False)
    big = S > s_max
    if not bool(big.any()):
        return dW.float().clone()
    log_a = math.log(alpha)
    S = torch.where(big, torch.log(S.clamp_min(s_max)) / log_a - math.log(s_max) / log_a + s_max, S)
    return ((U * S) @ Vh).float()


@torch.no_grad()
def rect(W: torch.Tensor, dW: torch.Tensor, top_percent: float) -> torch.Tensor:
    """ΔW with all but its top `top_percent` % entries by relative change |ΔW| / |W| set to zero.

    round(numel · top_percent / 100) entries are kept (at least one); an entry with W_ij = 0 and ΔW_ij ≠ 0
    has an infinite relative change and is kept first. Ties are broken by position (torch.topk on the CPU).
    """
    if not 0 < top_percent <= 100:
        raise ConfigError(f"RECT's top_percent must be in (0, 100], got {top_percent!r}")
    if W.shape != dW.shape:
        raise ValueError(f"rect: W {tuple(W.shape)} and ΔW {tuple(dW.shape)} differ in shape")
    d = dW.float().cpu()
    rel = d.abs() / W.float().cpu().abs()
    rel = torch.nan_to_num(rel, nan=0.0, posinf=math.inf)  # 0/0: no change
    n_keep = max(1, int(round(d.numel() * top_percent / 100)))
    keep = torch.zeros(d.numel(), dtype=torch.bool)
    keep[torch.topk(rel.flatten(), n_keep, sorted=False).indices] = True
    return torch.where(keep.view_as(d), d, torch.zeros_like(d)).to(dW.device)


@torch.no_grad()
def spectrum(W0: torch.Tensor, dW: torch.Tensor, *, original: torch.Tensor | None = None) -> dict[str, float]:
    """PRUNE Table 1's quantities for one edited matrix: σ_max of ΣΔW, σ_max of the original W, and the
    condition number κ = σ_max / σ_min of the edited W (and of the original, for reference).
    `original`: the singular values of W0 when already known (a run computes them once per matrix)."""
    s0 = torch.linalg.svdvals(W0.double()) if original is None else original
    s1 = torch.linalg.svdvals((W0.double() + dW.double()))
    sd = torch.linalg.svdvals(dW.double())
    def kappa(s: torch.Tensor) -> float:
        return float(s.max() / s.min()) if float(s.min()) > 0 else math.inf
    return {"sigma_max_delta": float(sd.max()), "sigma_max_w": float(s0.max()),
            "kappa_edited": kappa(s1), "kappa_original": kappa(s0)}
