"""params.yaml access: the one place that knows the file's layout and resolves per-dataset overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, InputError


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise InputError("params file not found", file=str(path))
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"malformed YAML: {e}", file=str(path)) from None
    if not isinstance(params, dict):
        raise InputError("top level must be a mapping", file=str(path))
    return params


def need(params: dict[str, Any], dotted: str) -> Any:
    """params["a"]["b"] for "a.b", with an error naming the missing key."""
    cur: Any = params
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise ConfigError(f"params.yaml: missing key '{dotted}'")
        cur = cur[part]
    return cur


def method_hparams(params: dict[str, Any], method: str, dataset: str) -> dict[str, Any]:
    """hparams.<model key>.<method>, with its `by_dataset.<dataset>` block merged over the defaults."""
    model_key = need(params, "model.key")
    table = need(params, "hparams")
    if model_key not in table:
        raise ConfigError(f"params.yaml: no hparams for model '{model_key}'; known: {sorted(table)}")
    if method not in table[model_key]:
        raise ConfigError(f"params.yaml: no hparams for method '{method}' on model '{model_key}'; "
                          f"known: {sorted(table[model_key])}")
    hp = copy.deepcopy(table[model_key][method]) or {}
    overrides = hp.pop("by_dataset", {}) or {}
    hp.update(overrides.get(dataset, {}) or {})
    return hp
