"""What every stage CLI shares: one clear line and a non-zero exit for known errors and interrupts.

Kept free of heavy imports so a stage's import closure (its DVC deps) is only what it really runs.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Callable

import yaml

from .errors import ConfigError, JeepkitError

DVC_HINT = ("dvc repro removed this stage's previous outputs before running it: `dvc checkout {stage}` brings "
            "back the cached ones, `git checkout -- metrics reports` the git-tracked metrics and reports")


def _dvc_hint() -> str:
    """Under `dvc repro` (DVC_STAGE is set) say how to restore what DVC deleted before the stage ran."""
    stage = os.environ.get("DVC_STAGE")
    return f" ({DVC_HINT.format(stage=stage)})" if stage else ""


def stage_main(fn: Callable[..., Any]) -> Callable[..., None]:
    """Run a stage: known errors print one line and exit 2; Ctrl-C prints one line and exits 130."""

    def run(*args: Any, **kwargs: Any) -> None:
        import torch

        torch.manual_seed(0)
        try:
            fn(*args, **kwargs)
            _record_peak_memory()
        except JeepkitError as e:
            print(f"error: {e}{_dvc_hint()}", file=sys.stderr)
            if os.environ.get("JEEPKIT_DEBUG"):
                traceback.print_exc()
            sys.exit(2)
        except KeyboardInterrupt:
            print(f"\ninterrupted: no output of this stage was written{_dvc_hint()}", file=sys.stderr)
            sys.exit(130)

    return run


PEAK_DIR = os.path.join("data", "timings", "peak_memory")


def _record_peak_memory() -> None:
    """Under `dvc repro`, the stage's peak resident memory (and the GPU's, if used) goes to data/timings/ —
    outside every DVC output — where benchmarks/preflight_check.py compares it with the preflight."""
    stage = os.environ.get("DVC_STAGE")
    if not stage:
        return
    import json
    import resource

    import torch

    rec = {"stage": stage, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rec["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    os.makedirs(PEAK_DIR, exist_ok=True)
    with open(os.path.join(PEAK_DIR, stage.replace("/", "_") + ".json"), "w") as f:
        json.dump(rec, f, sort_keys=True)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`key=value` pairs (value parsed as YAML) that override a method's hyperparameters."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: the value is not valid YAML") from None
    return out
