"""JEEP (AAAI 2025), spec §3: joint editing of low and high layers.

Paper §4.2 in engine terms:
  Step 1  optimise δ′ (information enrichment: MLP output of the last low layer L′, subject's last
          token) and δ* (probability promotion: at layer L*, the prediction position) jointly, with
          one Adam, KL on δ′'s position, and an early stop once the mean target probability ≥ 0.9;
  Step 2  spread z_low − cur over the low layers with ÷√(N−i), λ′;
  Step 3  on the low-edited model, spread z_high − cur over the high layers with ÷(N−i), λ*.

`high_anchor` chooses where δ* lives (spec §3.3): `attn_as_released` adds it to the attention output
and measures the residual against the MLP output, as the released code does; `mlp_consistent` uses
the MLP output for both; `resid_paper` uses the layer output h, as the paper's equations say.
`variant` selects a Table 4 ablation; each is a set of switches that can also be set one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from ..data.schema import EditCase
from ..errors import ConfigError
from .engine import DeltaSpec, Objective, Region
from .hparams import NONNEG, POS, HParams, knob
from .recipe import EditContext, EditResult, optimise_and_apply
from .spec import MethodSpec

HIGH_ANCHORS = {  # δ* anchor role, role `cur` is read from in Step 3
    "attn_as_released": ("attn", "mlp"),
    "mlp_consistent": ("mlp", "mlp"),
    "resid_paper": ("layer", "layer"),
}

# Table 4: each ablation as switches over the full method.
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "wo_low": {"optimize_low": False, "update_low": False},          # w/o δ′ & Step 2
    "wo_high": {"optimize_high": False, "update_high": False},       # w/o δ* & Step 3
    "wo_step2": {"update_low": False},                              # joint targets, high update only
    "wo_step3": {"update_high": False},                             # joint targets, low update only
    "separate": {"separate_opt": True},                             # δ′ → Step 2 → δ* on edited model → Step 3
    "even_spread": {"spread_low": "linear"},                        # ÷(N−i) instead of ÷√(N−i) in Step 2
    "mhsa_step3": {"high_target_module": "attn"},                   # Step 3 edits the attention output matrix
}

SWITCHES = ("optimize_low", "optimize_high", "update_low", "update_high", "separate_opt", "spread_low",
            "spread_high", "high_target_module")
SPREADS = ("sqrt", "linear")


@dataclass(frozen=True, kw_only=True)
class Hparams(HParams):
    method: ClassVar[str] = "jeep"
    layers_low: tuple[int, ...] = knob("ints", lo=0, nonempty=True)
    layers_high: tuple[int, ...] = knob("ints", lo=0, nonempty=True)
    clamp_low: float = knob("num", **POS)
    clamp_high: float = knob("num", **POS)
    lambda_low: float = knob("num", **POS)
    lambda_high: float = knob("num", **POS)
    weight_decay_low: float = knob("num", **NONNEG)
    weight_decay_high: float = knob("num", **NONNEG)
    kl_factor_low: float = knob("num", **NONNEG)
    lr: float = knob("num", **POS)
    steps: int = knob("int", lo=1)
    min_prob: float = knob("num", 0.9, gt=0.0, hi=1.0)
    target_batch: int | None = knob("int", None, lo=1, nullable=True)
    key_averaging: str = knob("str", "grouped", choices=("grouped", "uniform"))
    high_anchor: str = knob("str", "attn_as_released", choices=tuple(HIGH_ANCHORS))
    variant: str = knob("str", "full", choices=tuple(VARIANTS))
    # the switches a variant sets (a variant's own settings win over these)
    optimize_low: bool = knob("bool", True)
    optimize_high: bool = knob("bool", True)
    update_low: bool = knob("bool", True)
    update_high: bool = knob("bool", True)
    separate_opt: bool = knob("bool", False)
    spread_low: str = knob("str", "sqrt", choices=SPREADS)
    spread_high: str = knob("str", "linear", choices=SPREADS)
    high_target_module: str = knob("str", "mlp", choices=("mlp", "attn"))


def switches(hp: Any) -> dict[str, Any]:
    hp = Hparams.coerce(hp)
    sw = {k: getattr(hp, k) for k in SWITCHES}
    sw.update(VARIANTS[hp.variant])
    if sw["high_target_module"] not in ("mlp", "attn"):
        raise ConfigError(f"jeep: high_target_module must be mlp or attn, not {sw['high_target_module']!r}")
    if not (sw["optimize_low"] or sw["optimize_high"]):
        raise ConfigError("jeep: nothing to optimise (optimize_low and optimize_high are both false)")
    return sw


def _delta_low(hp: Hparams) -> DeltaSpec:
    return DeltaSpec("low", role="mlp", layer=max(hp.layers_low), position="subject_last",
                     clamp=hp.clamp_low, weight_decay=hp.weight_decay_low)


def _delta_high(hp: Hparams, sw: dict[str, Any]) -> DeltaSpec:
    role = "attn" if sw["high_target_module"] == "attn" else HIGH_ANCHORS[hp.high_anchor][0]
    return DeltaSpec("high", role=role, layer=max(hp.layers_high), position="prompt_last",
                     clamp=hp.clamp_high, weight_decay=hp.weight_decay_high)


def _objective(hp: Hparams, deltas: tuple[DeltaSpec, ...]) -> Objective:
    return Objective(deltas=deltas, lr=hp.lr, steps=hp.steps, kl_factor=hp.kl_factor_low,
                     stop_rule="prob", stop_value=hp.min_prob)


def objective(hp: Any) -> Objective:
    """The joint Step-1 objective (shared, hence cached, by full, w/o Step 2, w/o Step 3, even spread)."""
    hp = Hparams.coerce(hp)
    sw = switches(hp)
    deltas = ((_delta_low(hp),) if sw["optimize_low"] else ()) + ((_delta_high(hp, sw),) if sw["optimize_high"] else ())
    return _objective(hp, deltas)


def region_low(hp: Hparams, sw: dict[str, Any]) -> Region:
    layers = tuple(hp.layers_low)
    return Region("low", layers, target="low", key_position="subject_last", cur_role="mlp",
                  cur_layer=max(layers), lam=hp.lambda_low, spread=sw["spread_low"])


def region_high(hp: Hparams, sw: dict[str, Any]) -> Region:
    layers = tuple(hp.layers_high)
    if sw["high_target_module"] == "attn":  # w/ MHSA: edit o_proj/out_proj; cur is the attention output
        return Region("high", layers, target="high", key_position="prompt_last", cur_role="attn",
                      cur_layer=max(layers), lam=hp.lambda_high, spread=sw["spread_high"], edit_role="attn_out")
    cur_role = HIGH_ANCHORS[hp.high_anchor][1]
    return Region("high", layers, target="high", key_position="prompt_last", cur_role=cur_role,
                  cur_layer=max(layers), lam=hp.lambda_high, spread=sw["spread_high"])


def regions(hp: Any) -> list[Region]:
    hp = Hparams.coerce(hp)
    sw = switches(hp)
    shared = set(hp.layers_low) & set(hp.layers_high)
    if shared and sw["update_low"] and sw["update_high"] and sw["high_target_module"] == "mlp":
        # Two rounded additions to one matrix could not be stored as one exactly re-appliable delta.
        raise ConfigError(f"jeep: layers_low and layers_high overlap at {sorted(shared)}; use disjoint regions")
    out = []
    if sw["update_low"]:
        out.append(region_low(hp, sw))
    if sw["update_high"]:
        out.append(region_high(hp, sw))
    if not out:
        raise ConfigError("jeep: no region to update (update_low and update_high are both false)")
    return out


def edit(ctx: EditContext, cases: Sequence[EditCase], hp: Hparams) -> EditResult:
    """Joint variants: Step 1 then Steps 2-3. `separate`: δ′ → Step 2, then δ* on the low-edited model → Step 3."""
    sw = switches(hp)
    if not sw["separate_opt"]:
        return optimise_and_apply(ctx, cases, objective(hp), regions(hp), hp, label="jeep")
    low = optimise_and_apply(ctx, cases, _objective(hp, (_delta_low(hp),)), [region_low(hp, sw)], hp,
                             label="jeep δ′")
    # δ* is optimised on the model edited in Step 2: its targets are not reusable, hence no cache.
    high = optimise_and_apply(ctx.uncached(), cases, _objective(hp, (_delta_high(hp, sw),)), [region_high(hp, sw)],
                              hp, label="jeep δ*")
    deltas = dict(low.deltas)
    for k, v in high.deltas.items():
        deltas[k] = deltas.get(k, 0) + v
    info = {f"low/{k}": v for k, v in low.info.items()} | {f"high/{k}": v for k, v in high.info.items()}
    info["target_seconds"] = low.info["target_seconds"] + high.info["target_seconds"]
    info["edit_seconds"] = low.info["edit_seconds"] + high.info["edit_seconds"]
    info["mean_target_prob"] = high.info["mean_target_prob"]  # δ* reached on the low-edited model
    info["target_prob_after_edit"] = high.info["target_prob_after_edit"]  # the model after both steps
    return EditResult(deltas=deltas, info=info)


def statistics(hp: Any) -> list[tuple[str, int]]:
    return [(r.edit_role, l) for r in regions(hp) for l in r.layers]


def objectives(hp: Any) -> list[tuple[Objective, bool]]:
    """(objective, cacheable): `separate` optimises δ* on the low-edited model, so those targets are never reused."""
    hp = Hparams.coerce(hp)
    sw = switches(hp)
    if sw["separate_opt"]:
        return [(_objective(hp, (_delta_low(hp),)), True), (_objective(hp, (_delta_high(hp, sw),)), False)]
    return [(objective(hp), True)]


SPEC = MethodSpec("jeep", "JEEP", "closed_form", Hparams, edit, statistics=statistics, objectives=objectives)
