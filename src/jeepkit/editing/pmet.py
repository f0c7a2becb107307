"""PMET (Li et al. 2024), spec §4.2: one region, two deltas optimised jointly, only the MLP one realised.

Differences from the engine defaults: δ_attn (attention output) and δ_mlp (MLP output) at the last
edited layer and the subject's last token; KL weight 1 with the φ schedule (NLL weight 0.1 once every
target token is the argmax, stop when KL ≤ 0.01); the update targets the MLP output and spreads the
residual by ÷√(N−i).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from . import memit
from .engine import DeltaSpec, Objective, Region
from .hparams import NONNEG, knob
from .recipe import EditContext, EditResult, optimise_and_apply
from .spec import MethodSpec


@dataclass(frozen=True, kw_only=True)
class Hparams(memit.Hparams):
    method: ClassVar[str] = "pmet"
    weight_decay_attn: float | None = knob("num", None, nullable=True, **NONNEG)  # None: weight_decay


def objective(hp: Any) -> Objective:
    hp = Hparams.coerce(hp)
    top = max(hp.layers)
    wd_attn = hp.weight_decay if hp.weight_decay_attn is None else hp.weight_decay_attn
    return Objective(
        deltas=(DeltaSpec("attn", role="attn", layer=top, position="subject_last", clamp=hp.clamp,
                          weight_decay=wd_attn),
                DeltaSpec("mlp", role="mlp", layer=top, position="subject_last", clamp=hp.clamp,
                          weight_decay=hp.weight_decay)),
        lr=hp.lr, steps=hp.steps, kl_factor=hp.kl_factor,
        stop_rule="loss", stop_value=hp.stop_loss, nll_schedule="pmet",
    )


def regions(hp: Any) -> list[Region]:
    hp = Hparams.coerce(hp)
    layers = tuple(hp.layers)
    return [Region("main", layers, target="mlp", key_position="subject_last", cur_role="mlp",
                   cur_layer=max(layers), lam=hp.lam, spread="sqrt")]


def edit(ctx: EditContext, cases: Sequence, hp: Hparams) -> EditResult:
    return optimise_and_apply(ctx, cases, objective(hp), regions(hp), hp, label="pmet")


SPEC = MethodSpec("pmet", "PMET", "closed_form", Hparams, edit, statistics=memit.statistics,
                  objectives=lambda hp: [(objective(hp), True)])
