"""MEMIT (Meng et al. 2023), spec §4.1: one region, δ on the residual stream at the last edited layer.

Differences from the engine defaults: the δ anchor is the decoder layer output h_L at the subject's
last token, the early stop is total loss < 0.05, and the residual is spread linearly (÷ N−i).
"""

from __future__ import annotations

from typing import Any

from .engine import DeltaSpec, Objective, Region


def objective(hp: dict[str, Any]) -> Objective:
    top = max(hp["layers"])
    return Objective(
        deltas=(DeltaSpec("main", role="layer", layer=top, position="subject_last",
                          clamp=hp["clamp"], weight_decay=hp["weight_decay"]),),
        lr=hp["lr"], steps=hp["steps"], kl_factor=hp["kl_factor"],
        stop_rule="loss", stop_value=hp.get("stop_loss", 0.05),
    )


def regions(hp: dict[str, Any]) -> list[Region]:
    layers = tuple(hp["layers"])
    return [Region("main", layers, target="main", key_position="subject_last", cur_role="layer",
                   cur_layer=max(layers), lam=hp["lambda"], spread="linear")]
