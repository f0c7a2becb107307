"""MEMIT (Meng et al. 2023), spec §4.1: one region, δ on the residual stream at the last edited layer.

Differences from the engine defaults: the δ anchor is the decoder layer output h_L at the subject's
last token, the early stop is total loss < 0.05, and the residual is spread linearly (÷ N−i).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from .engine import DeltaSpec, Objective, Region
from .hparams import NONNEG, POS, HParams, knob
from .recipe import EditContext, EditResult, optimise_and_apply
from .spec import MethodSpec


@dataclass(frozen=True, kw_only=True)
class ObjectiveHParams(HParams):
    """The target-optimisation settings MEMIT, PMET, AlphaEdit and ROME share (spec §2.7)."""

    lr: float = knob("num", **POS)
    steps: int = knob("int", lo=1)
    kl_factor: float = knob("num", **NONNEG)
    weight_decay: float = knob("num", **NONNEG)
    clamp: float = knob("num", **POS)
    stop_loss: float = knob("num", 0.05, **NONNEG)
    target_batch: int | None = knob("int", None, lo=1, nullable=True)  # requests per pass (None: runtime, else 8)


@dataclass(frozen=True, kw_only=True)
class Hparams(ObjectiveHParams):
    method: ClassVar[str] = "memit"
    layers: tuple[int, ...] = knob("ints", lo=0, nonempty=True)
    lam: float = knob("num", key="lambda", **POS)
    key_averaging: str = knob("str", "grouped", choices=("grouped", "uniform"))


def objective(hp: Any) -> Objective:
    hp = Hparams.coerce(hp)
    top = max(hp.layers)
    return Objective(
        deltas=(DeltaSpec("main", role="layer", layer=top, position="subject_last",
                          clamp=hp.clamp, weight_decay=hp.weight_decay),),
        lr=hp.lr, steps=hp.steps, kl_factor=hp.kl_factor, stop_rule="loss", stop_value=hp.stop_loss,
    )


def regions(hp: Any) -> list[Region]:
    hp = Hparams.coerce(hp)
    layers = tuple(hp.layers)
    return [Region("main", layers, target="main", key_position="subject_last", cur_role="layer",
                   cur_layer=max(layers), lam=hp.lam, spread="linear")]


def statistics(hp: Any) -> list[tuple[str, int]]:
    return [("mlp_out", l) for l in hp.layers]


def edit(ctx: EditContext, cases: Sequence, hp: Hparams) -> EditResult:
    return optimise_and_apply(ctx, cases, objective(hp), regions(hp), hp, label="memit")


SPEC = MethodSpec("memit", "MEMIT", "closed_form", Hparams, edit, statistics=statistics,
                  objectives=lambda hp: [(objective(hp), True)])
