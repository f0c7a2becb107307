"""How an edit computes, as opposed to what: chunk sizes and where the closed-form solve runs.

None of these settings changes a result beyond float rounding (requests are optimised independently,
keys are read row by row, evaluation pairs are scored one by one), so none of them is part of a target
or statistics cache key. They come from `run:` in params.yaml, or are sized from one memory budget by
`jeepkit.memory.plan` (`run.memory_budget_gb`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    solve_on: str = "weight"  # the float64 solve on the edited weight's device, or "cpu"
    target_requests: int | None = None  # requests per target-optimisation pass (None: hp target_batch, else 8)
    key_rows: int = 48  # prompts per forward pass when reading keys and current values
    eval_rows: int = 32  # teacher-forced sequences per evaluation pass
    decode_rows: int = 128  # prompts per pass of greedy / sampled decoding (free generation, MEMIT's GE / RS)
    stats_tokens: int = 4096  # padded tokens per statistics pass
    probe_rows: int = 16  # prompts per probe pass
    grad_rows: int = 32  # sequences per forward + backward pass of a gradient method (KNE's attribution, training)
    key_cache_mb: int = 256  # a region's key reads keep its first layer's input up to this size; 0: never

    def __post_init__(self):
        if self.solve_on not in ("weight", "cpu"):
            raise ConfigError(f"params: run.solve_on: expected weight or cpu, got {self.solve_on!r}")
        for f in fields(self):
            v = getattr(self, f.name)
            least = 0 if f.name == "key_cache_mb" else 1
            if f.name != "solve_on" and v is not None and (not isinstance(v, int) or v < least):
                raise ConfigError(f"params: run.{f.name}: must be an integer >= {least}, got {v!r}")

    def target_batch(self, hp: Any) -> int:
        """Requests per target pass: run.target_requests, else the method's `target_batch`, else 8."""
        return int(self.target_requests or getattr(hp, "target_batch", None) or 8)

    def with_(self, **kw: Any) -> "Runtime":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


DEFAULT = Runtime()


def load_run_model(params: dict[str, Any]):
    """The prepared model of this params file on `model.device` / `model.device_map`."""
    from .models import load_model
    from .params import paths

    m = params.get("model") or {}
    return load_model(paths(params)["model"], device=m.get("device", "auto"), device_map=m.get("device_map"))


def runtime_for(params: dict[str, Any], model=None) -> Runtime:
    """`run:` settings; with `run.memory_budget_gb` and a model, chunk sizes are sized to fit the budget.

    Explicit `run.*` limits and `edit.eval_batch_size` / `probe.batch_size` are upper bounds the budget
    can only lower.
    """
    run = dict(params.get("run") or {})
    budget = run.pop("memory_budget_gb", None)
    rt = Runtime(eval_rows=int((params.get("edit") or {}).get("eval_batch_size", 32)),
                 probe_rows=int((params.get("probe") or {}).get("batch_size", 16)),
                 **{k: v for k, v in run.items() if v is not None})
    if budget is not None and model is not None:
        from .memory import Dims, plan

        rt = plan(Dims.from_model(model), float(budget) * 2 ** 30, rt, params)
    return rt
