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

from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..data.schema import EditCase
from ..errors import ConfigError
from .engine import DeltaSpec, Objective, Region

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

SWITCH_DEFAULTS = {"optimize_low": True, "optimize_high": True, "update_low": True, "update_high": True,
                   "separate_opt": False, "spread_low": "sqrt", "spread_high": "linear", "high_target_module": "mlp"}


def switches(hp: dict[str, Any]) -> dict[str, Any]:
    variant = hp.get("variant", "full")
    if variant not in VARIANTS:
        raise ConfigError(f"jeep: unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    sw = {**SWITCH_DEFAULTS, **VARIANTS[variant]}
    sw.update({k: hp[k] for k in SWITCH_DEFAULTS if k in hp and k not in VARIANTS[variant]})
    if hp.get("high_anchor", "attn_as_released") not in HIGH_ANCHORS:
        raise ConfigError(f"jeep: unknown high_anchor {hp.get('high_anchor')!r}; expected {sorted(HIGH_ANCHORS)}")
    if sw["high_target_module"] not in ("mlp", "attn"):
        raise ConfigError(f"jeep: high_target_module must be mlp or attn, not {sw['high_target_module']!r}")
    if not (sw["optimize_low"] or sw["optimize_high"]):
        raise ConfigError("jeep: nothing to optimise (optimize_low and optimize_high are both false)")
    return sw


def _delta_low(hp: dict[str, Any]) -> DeltaSpec:
    return DeltaSpec("low", role="mlp", layer=max(hp["layers_low"]), position="subject_last",
                     clamp=hp["clamp_low"], weight_decay=hp["weight_decay_low"])


def _delta_high(hp: dict[str, Any], sw: dict[str, Any]) -> DeltaSpec:
    role = "attn" if sw["high_target_module"] == "attn" else HIGH_ANCHORS[hp.get("high_anchor", "attn_as_released")][0]
    return DeltaSpec("high", role=role, layer=max(hp["layers_high"]), position="prompt_last",
                     clamp=hp["clamp_high"], weight_decay=hp["weight_decay_high"])


def _objective(hp: dict[str, Any], deltas: tuple[DeltaSpec, ...]) -> Objective:
    return Objective(deltas=deltas, lr=hp["lr"], steps=hp["steps"], kl_factor=hp["kl_factor_low"],
                     stop_rule="prob", stop_value=hp.get("min_prob", 0.9))


def objective(hp: dict[str, Any]) -> Objective:
    """The joint Step-1 objective (shared, hence cached, by full, w/o Step 2, w/o Step 3, even spread)."""
    sw = switches(hp)
    deltas = ((_delta_low(hp),) if sw["optimize_low"] else ()) + ((_delta_high(hp, sw),) if sw["optimize_high"] else ())
    return _objective(hp, deltas)


def region_low(hp: dict[str, Any], sw: dict[str, Any]) -> Region:
    layers = tuple(hp["layers_low"])
    return Region("low", layers, target="low", key_position="subject_last", cur_role="mlp",
                  cur_layer=max(layers), lam=hp["lambda_low"], spread=sw["spread_low"])


def region_high(hp: dict[str, Any], sw: dict[str, Any]) -> Region:
    layers = tuple(hp["layers_high"])
    if sw["high_target_module"] == "attn":  # w/ MHSA: edit o_proj/out_proj; cur is the attention output
        return Region("high", layers, target="high", key_position="prompt_last", cur_role="attn",
                      cur_layer=max(layers), lam=hp["lambda_high"], spread=sw["spread_high"], edit_role="attn_out")
    cur_role = HIGH_ANCHORS[hp.get("high_anchor", "attn_as_released")][1]
    return Region("high", layers, target="high", key_position="prompt_last", cur_role=cur_role,
                  cur_layer=max(layers), lam=hp["lambda_high"], spread=sw["spread_high"])


def regions(hp: dict[str, Any]) -> list[Region]:
    sw = switches(hp)
    shared = set(hp["layers_low"]) & set(hp["layers_high"])
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


def edit(model: nn.Module, tok, arch, cases: Sequence[EditCase], hp: dict[str, Any], *,
         cov: Callable[[str], torch.Tensor], prefixes: Sequence[str], model_identity: dict[str, Any], cache=None,
         runtime=None):
    """Joint variants: Step 1 then Steps 2-3. `separate`: δ′ → Step 2, then δ* on the low-edited model → Step 3."""
    from ..runtime import DEFAULT
    from .run import EditResult, optimise_and_apply  # run imports this module

    rt = runtime or DEFAULT
    sw = switches(hp)
    if not sw["separate_opt"]:
        return optimise_and_apply(model, tok, arch, cases, objective(hp), regions(hp), cov, prefixes,
                                  model_identity, cache, hp=hp, label="jeep", runtime=rt)
    low = optimise_and_apply(model, tok, arch, cases, _objective(hp, (_delta_low(hp),)), [region_low(hp, sw)],
                             cov, prefixes, model_identity, cache, hp=hp, label="jeep δ′", runtime=rt)
    # δ* is optimised on the model edited in Step 2: its targets are not reusable, hence no cache.
    high = optimise_and_apply(model, tok, arch, cases, _objective(hp, (_delta_high(hp, sw),)),
                              [region_high(hp, sw)], cov, prefixes, None, None, hp=hp, label="jeep δ*", runtime=rt)
    deltas = dict(low.deltas)
    for k, v in high.deltas.items():
        deltas[k] = deltas.get(k, 0) + v
    info = {f"low/{k}": v for k, v in low.info.items()} | {f"high/{k}": v for k, v in high.info.items()}
    info["target_seconds"] = low.info["target_seconds"] + high.info["target_seconds"]
    info["edit_seconds"] = low.info["edit_seconds"] + high.info["edit_seconds"]
    return EditResult(deltas=deltas, info=info)
