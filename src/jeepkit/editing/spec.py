"""The method contract: what a registered editor declares about itself.

The pipeline, the dry run, the preflight and the chunked runner read only these declarations (never
a method's module), so a new method is one module with a `SPEC` and one line in `editing/run.py`.
`tests/test_method_contract.py` runs every registered method on a tiny model and fails if it asks for a
statistic or changes a parameter it did not declare.
"""

from __future__ import annotations

from dataclasses import dataclass, is_dataclass
from typing import Any, Callable, Sequence

from ..data.schema import EditCase
from .hparams import HParams
from .recipe import EditContext, EditResult

KINDS = {
    "unedited": "no edit (the baseline row)",
    "closed_form": "optimised targets, then closed-form least-squares updates of regions of layers",
    "sequential": "one request at a time on the model carrying the earlier ones",
    "gradient": "weights trained by gradient descent on the edit loss",
}
STAT_ROLES = ("mlp_out", "attn_out")


def _no_statistics(hp: HParams) -> list[tuple[str, int]]:
    return []


@dataclass(frozen=True)
class MethodSpec:
    name: str  # the key in params.yaml (edit.methods, hparams.<model>.<name>)
    label: str  # the row label in tables
    kind: str  # one of KINDS
    hparams: type[HParams]
    edit: Callable[[EditContext, Sequence[EditCase], Any], EditResult]
    # (role, layer) pairs of the covariance statistics the method reads (the stats stage must list them)
    statistics: Callable[[Any], list[tuple[str, int]]] = _no_statistics
    # full parameter names the method may change, given (hp, arch, model); default: the weights of `statistics`
    parameters: Callable[[Any, Any, Any], list[str]] | None = None
    # (objective, cacheable) per target optimisation: closed-form methods only (dry run, preflight)
    objectives: Callable[[Any], list[tuple[Any, bool]]] | None = None
    # decoder layers the method touches, given (hp, depth): checked against the model's depth by the dry run
    layers: Callable[[Any, int], list[int]] | None = None
    # gradient methods: full forward + backward sequence passes for (hp, n_edits, depth), run.grad_rows at a
    # time; the preflight's cost model of a method it has no formula of its own for
    passes: Callable[[Any, int, int], float] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise TypeError(f"method {self.name!r}: kind {self.kind!r} is not one of {sorted(KINDS)}")
        if not (is_dataclass(self.hparams) and issubclass(self.hparams, HParams)):
            raise TypeError(f"method {self.name!r}: hparams must be an HParams dataclass")
        if self.hparams.method != self.name:
            raise TypeError(f"method {self.name!r}: its hparams class says method {self.hparams.method!r}")
        if not self.hparams.__dataclass_params__.frozen:
            raise TypeError(f"method {self.name!r}: hparams must be a frozen dataclass")
        if self.kind == "closed_form" and self.objectives is None:
            raise TypeError(f"method {self.name!r}: a closed-form method declares its objectives")

    def edited_parameters(self, hp: Any, arch, model) -> list[str]:
        hp = self.hparams.coerce(hp)
        if self.parameters is not None:
            return self.parameters(hp, arch, model)
        return [arch.name(role, layer) + ".weight" for role, layer in self.statistics(hp)]

    def touched_layers(self, hp: Any, depth: int) -> list[int]:
        hp = self.hparams.coerce(hp)
        if self.layers is not None:
            return list(self.layers(hp, depth))
        return sorted({layer for _, layer in self.statistics(hp)})

    def keys(self) -> list[str]:
        """The params.yaml keys of this method."""
        return list(self.hparams.rules())
