"""params.yaml access: the one place that knows the file's layout and resolves per-dataset overrides."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping, Union

import yaml

from .errors import ConfigError, InputError


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise InputError("params file not found", file=str(path))
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start}: {e.reason})", file=str(path)) from None
    except yaml.YAMLError as e:
        raise InputError("malformed YAML: " + " ".join(str(e).split()), file=str(path)) from None
    if not isinstance(params, dict):
        raise InputError("top level must be a mapping", file=str(path))
    from .config import validate_params

    try:
        return validate_params(params)
    except ConfigError as e:
        raise ConfigError(f"{path}: {str(e).removeprefix('params: ')}") from None


ParamsLike = Union[str, Path, Mapping[str, Any]]


def resolve_params(params: ParamsLike) -> dict[str, Any]:
    """A params.yaml path, loaded and checked; or a mapping (a profile with overrides), copied and checked."""
    if isinstance(params, Mapping):
        from .config import validate_params

        return validate_params(copy.deepcopy(dict(params)))
    return load_params(params)


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


DATA_DIR = Path("data")


def paths(params: dict[str, Any]) -> dict[str, Path]:
    """Where stages read and write. JEEPKIT_TARGET_CACHE moves the scratch target cache (e.g. to share it
    between clones or experiments); it never changes a result, only what has to be recomputed."""
    key = need(params, "model.key")
    cache = Path(os.environ.get("JEEPKIT_TARGET_CACHE") or DATA_DIR / "cache" / "targets")
    return {"datasets": DATA_DIR / "datasets", "model": DATA_DIR / "models" / key,
            "stats": DATA_DIR / "stats" / key, "runs": DATA_DIR / "runs", "targets": cache / key,
            "metrics": Path("metrics"), "timings": DATA_DIR / "timings"}
