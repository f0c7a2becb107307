"""The registry of editing methods, and the one call that runs any of them.

Each method module states what differs (its `SPEC`: typed hyperparameters, the statistics it reads,
how it edits); this table is the only place that lists them. The table order is the paper's row
order, which tables and the ledger follow.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..data.schema import EditCase
from ..config import METHOD_SECTIONS, check_value
from ..errors import ConfigError, did_you_mean
from ..forward import grouped_kv_attention
from . import alphaedit, ft_l, ft_wd, jeep, kne, memit, pmet, rome
from .hparams import NoHParams
from .recipe import EditContext, EditResult
from .spec import MethodSpec


def _unedited(ctx: EditContext, cases: Sequence[EditCase], hp: Any) -> EditResult:
    return EditResult(deltas={}, info={"edit_seconds": 0.0, "target_seconds": 0.0})


NONE = MethodSpec("none", "Unedited", "unedited", NoHParams, _unedited)

METHODS: Mapping[str, MethodSpec] = {s.name: s for s in (
    NONE, ft_wd.SPEC, ft_l.SPEC, ft_l.FTM_SPEC, rome.SPEC, memit.SPEC, pmet.SPEC, alphaedit.SPEC, jeep.SPEC, kne.SPEC,
)}


def method_spec(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; expected one of {sorted(METHODS)}{did_you_mean(name, METHODS)}")
    return METHODS[name]


def check_params(params: Mapping[str, Any]) -> None:
    """Every `hparams.<model>.<method>` block (and its `by_dataset` overrides) against its method's fields,
    the methods every stage group's `methods` list names (config.METHOD_SECTIONS), and the JEEP variants
    `ablation.variants` names."""
    for section in METHOD_SECTIONS:
        for m in (params.get(section) or {}).get("methods", []):
            if m not in METHODS:
                raise ConfigError(f"params: {section}.methods: unknown method {m!r}"
                                  f"{did_you_mean(m, METHODS, list_known=True)}")
    for v in (params.get("ablation") or {}).get("variants", []):
        check_value(jeep.Hparams.rules()["variant"], v, "ablation.variants[]")
    for model_key, methods in (params.get("hparams") or {}).items():
        for method, block in (methods or {}).items():
            where = f"hparams.{model_key}.{method}"
            if method not in METHODS:
                raise ConfigError(f"params: {where}: unknown method{did_you_mean(method, METHODS, list_known=True)}")
            block = dict(block or {})
            by = block.pop("by_dataset", None) or {}
            cls = METHODS[method].hparams
            cls.check(block, where, partial=True)  # required keys: when it runs
            for ds, over in by.items():
                cls.check(over or {}, f"{where}.by_dataset.{ds}", partial=True)


def edit(ctx: EditContext, method: str, cases: Sequence[EditCase], hp: Any, *, finish: bool = True) -> EditResult:
    """Edit `ctx.model` in place with `method`; returns the applied ΔW per parameter or module, and info.
    On the CPU, grouped-query attention runs without copied key/value heads (bit-equal, faster).
    `finish=False` leaves the result's `finish` to the caller (a sequential run restraining ΔW first); it is
    then the caller's to call, inside `finishing(ctx)`."""
    spec = method_spec(method)
    hparams = spec.hparams.coerce(hp)
    with grouped_kv_attention(ctx.model):
        res = spec.edit(ctx, cases, hparams)
        if finish and res.finish is not None:
            res.finish()
            res.finish = None
    return res


def finishing(ctx: EditContext, res: EditResult) -> None:
    """Run a result's deferred `finish` (see `edit`) with the attention set-up the edit ran under."""
    if res.finish is not None:
        with grouped_kv_attention(ctx.model):
            res.finish()
        res.finish = None
