"""PMET (Li et al. 2024), spec §4.2: one region, two deltas optimised jointly, only the MLP one realised.

Differences from the engine defaults: δ_attn (attention output) and δ_mlp (MLP output) at the last
edited layer and the subject's last token; KL weight 1 with the φ schedule (NLL weight 0.1 once every
target token is the argmax, stop when KL ≤ 0.01); the update targets the MLP output and spreads the
residual by ÷√(N−i).
"""

from __future__ import annotations

from typing import Any

from .engine import DeltaSpec, Objective, Region


def objective(hp: dict[str, Any]) -> Objective:
    top = max(hp["layers"])
    return Objective(
        deltas=(DeltaSpec("attn", role="attn", layer=top, position="subject_last", clamp=hp["clamp"],
                          weight_decay=hp.get("weight_decay_attn", hp["weight_decay"])),
                DeltaSpec("mlp", role="mlp", layer=top, position="subject_last", clamp=hp["clamp"],
                          weight_decay=hp["weight_decay"])),
        lr=hp["lr"], steps=hp["steps"], kl_factor=hp["kl_factor"],
        stop_rule="loss", stop_value=hp.get("stop_loss", 0.05), nll_schedule="pmet",
    )


def regions(hp: dict[str, Any]) -> list[Region]:
    layers = tuple(hp["layers"])
    return [Region("main", layers, target="mlp", key_position="subject_last", cur_role="mlp",
                   cur_layer=max(layers), lam=hp["lambda"], spread="sqrt")]
