"""The schema of params.yaml: every section as data (a method's hyperparameters: its own `Hparams`).

`validate_params` runs when any stage (or the dry run) loads params.yaml, before any work: an unknown
key is refused with the nearest valid name (a misspelt `clamp_hgh` would otherwise be ignored and a
`dvc exp run -S` would re-run stages that report the old numbers), and a value of the wrong type or
out of range (NaN, negative, zero where it must be positive) is refused with its dotted path.
Method hyperparameters are each method's typed `Hparams`; `editing.run.check_params` checks them (and
the method names) in every stage that edits and in the dry run, so the light stages (data, model,
statistics, probe, reports) do not depend on the editors' code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .data.registry import DATASETS as _DATASET_SPECS
from .errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class F:
    """One field. kind: int | num | bool | str | ints | nums | strs | map | any."""

    kind: str
    required: bool = False
    lo: float | None = None  # inclusive lower bound
    gt: float | None = None  # exclusive lower bound
    hi: float | None = None  # inclusive upper bound
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    nonempty: bool = False


POS = dict(gt=0.0)
NONNEG = dict(lo=0.0)

DATASETS = tuple(_DATASET_SPECS)

SECTIONS: dict[str, dict[str, F]] = {
    "data": {"source": F("str", True, choices=("bundled", "mirror", "official")), "mirror": F("str", nullable=True),
             "datasets": F("strs", True, choices=DATASETS, nonempty=True), "n_records": F("int", lo=1, nullable=True),
             "files": F("map", nullable=True), "urls": F("map", nullable=True), "sha256": F("map", nullable=True)},
    "model": {"key": F("str", True), "source": F("str", choices=("embedded", "hf", "path")),
              "id": F("str", nullable=True), "path": F("str", nullable=True), "revision": F("str", nullable=True),
              "dtype": F("str", choices=("float32", "float16", "bfloat16")), "n_layers": F("int", lo=1),
              "device": F("str", nullable=True), "device_map": F("str", nullable=True, choices=("auto",))},
    "stats": {"corpus": F("str", True), "n_samples": F("int", True, lo=1), "max_length": F("int", True, lo=2),
              "dtype": F("str", choices=("float32", "float64")), "seed": F("int"),
              "layers": F("ints", True, lo=0, nonempty=True), "modules": F("strs", choices=("mlp_out", "attn_out"))},
    "edit": {"methods": F("strs", True, nonempty=True), "n_edits": F("int", True, lo=1),
             "batch_size": F("int", lo=1, nullable=True), "eval_batch_size": F("int", lo=1),
             "free_generation_tokens": F("int", lo=0), "drift": F("bool")},
    "ablation": {"dataset": F("str", True, choices=DATASETS), "variants": F("strs", True)},
    "sweep": {"dataset": F("str", True, choices=DATASETS), "clamp_high": F("nums", True, gt=0.0, nonempty=True)},
    "scaling": {"dataset": F("str", True, choices=DATASETS), "methods": F("strs", True),
                "max_edits": F("int", True, lo=1), "max_chunks": F("int", lo=1)},
    "knowedit": {"dataset": F("str", True, choices=DATASETS), "methods": F("strs", True),
                 "n_edits": F("int", True, lo=1), "batch_size": F("int", lo=1),
                 "source": F("str", choices=("bundled", "mirror", "official"))},
    "sequential": {"dataset": F("str", True, choices=DATASETS), "methods": F("strs", True),
                   "regularisers": F("strs", choices=("none", "rect")), "total": F("int", True, lo=1),
                   "batch": F("int", True, lo=1), "rect_top_percent": F("num", gt=0.0, hi=100.0),
                   "prune": F("map", nullable=True)},
    "generation": {"max_length": F("int", lo=0), "top_k": F("int", lo=1), "seed": F("int", lo=0),
                   "attribute_snippets": F("str", nullable=True), "idf": F("str", nullable=True),
                   "tfidf_vocab": F("str", nullable=True)},
    "drift": {"n_docs": F("int", True, lo=1), "max_length": F("int", True, lo=2), "seed": F("int", lo=0),
              "corpus": F("str", choices=("python_docs", "stats")),
              "batch_size": F("int", lo=1)},
    "run": {"memory_budget_gb": F("num", nullable=True, gt=0.0), "solve_on": F("str", choices=("weight", "cpu")),
            "target_requests": F("int", lo=1, nullable=True), "key_rows": F("int", lo=1),
            "stats_tokens": F("int", lo=1), "probe_rows": F("int", lo=1), "eval_rows": F("int", lo=1),
            "decode_rows": F("int", lo=1), "grad_rows": F("int", lo=1), "key_cache_mb": F("int", lo=0)},
    "probe": {"dataset": F("str", choices=DATASETS), "n_records": F("int", lo=1), "apply_final_norm": F("bool"),
              "batch_size": F("int", lo=1), "wordsets": F("bool"), "max_related": F("int", lo=0),
              "n_low": F("int", lo=1), "n_high": F("int", lo=1)},
}
TOP: dict[str, F] = {"profile": F("str", nullable=True), "seed": F("int", lo=0), "seeds": F("ints", lo=0, nonempty=True),
                     "hparams": F("map", True), **{k: F("map") for k in SECTIONS}}
PRUNE: dict[str, F] = {"alpha": F("num", nullable=True, gt=1.0), "every": F("bool")}
# The stage groups that run methods / name a dataset, read from their schemas: a new group is one SECTIONS entry.
METHOD_SECTIONS = tuple(k for k, v in SECTIONS.items() if "methods" in v)
DATASET_SECTIONS = tuple(k for k, v in SECTIONS.items() if "dataset" in v)
REQUIRED_SECTIONS = ("model",)  # the others are checked when present; a stage that needs one says so

def _unknown(key: str, known: Mapping[str, Any], where: str) -> ConfigError:
    return ConfigError(f"params: {_join(where, key)}: unknown key{did_you_mean(key, known, list_known=True)}")


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _scalar(f: F, v: Any, path: str) -> None:
    kind = {"ints": "int", "nums": "num", "strs": "str"}.get(f.kind, f.kind)
    ok = {"int": isinstance(v, int) and not isinstance(v, bool), "num": _is_num(v), "bool": isinstance(v, bool),
          "str": isinstance(v, str), "map": isinstance(v, dict), "any": True}[kind]
    if not ok:
        what = {"int": "an integer", "num": "a number", "bool": "true or false", "str": "a string", "map": "a mapping"}
        raise ConfigError(f"params: {path}: expected {what[kind]}, got {v!r}")
    if kind in ("int", "num"):
        if not math.isfinite(v):
            raise ConfigError(f"params: {path}: must be a finite number, got {v!r}")
        if f.lo is not None and v < f.lo:
            raise ConfigError(f"params: {path}: must be >= {f.lo:g}, got {v!r}")
        if f.gt is not None and v <= f.gt:
            raise ConfigError(f"params: {path}: must be > {f.gt:g}, got {v!r}")
        if f.hi is not None and v > f.hi:
            raise ConfigError(f"params: {path}: must be <= {f.hi:g}, got {v!r}")
    if kind == "str" and not v.strip():
        raise ConfigError(f"params: {path}: empty string")
    if f.choices is not None and v not in f.choices:
        raise ConfigError(f"params: {path}: unknown value {v!r}; expected one of {list(f.choices)}"
                          f"{did_you_mean(v, f.choices, cutoff=0.5)}")


def check_value(f: F, v: Any, path: str) -> None:
    if v is None:
        if f.nullable:
            return
        raise ConfigError(f"params: {path}: must not be empty (null)")
    if f.kind in ("ints", "nums", "strs"):
        if not isinstance(v, list):
            raise ConfigError(f"params: {path}: expected a list, got {v!r}")
        if f.nonempty and not v:
            raise ConfigError(f"params: {path}: must not be an empty list")
        for i, x in enumerate(v):
            _scalar(f, x, f"{path}[{i}]")
        return
    _scalar(f, v, path)


def check_block(spec: Mapping[str, F], block: Any, where: str, *, partial: bool = False,
                extra: tuple[str, ...] = ()) -> None:
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise ConfigError(f"params: {where}: expected a mapping, got {block!r}")
    for k, v in block.items():
        if k in extra:
            continue
        if k not in spec:
            raise _unknown(str(k), {**spec, **{e: None for e in extra}}, where)
        check_value(spec[k], v, _join(where, k))
    if not partial:
        for k, f in spec.items():
            if f.required and k not in block:
                raise ConfigError(f"params: {_join(where, k)}: missing (required)")


def validate_params(params: dict[str, Any]) -> dict[str, Any]:
    """Check a whole params mapping; return it unchanged or raise ConfigError naming the dotted key."""
    check_block(TOP, params, "", partial=True)
    for name in REQUIRED_SECTIONS:
        if name not in params:
            raise ConfigError(f"params: {name}: missing section")
    for name, spec in SECTIONS.items():
        if name in params:
            check_block(spec, params[name], name)
    if "sequential" in params:
        check_block(PRUNE, (params["sequential"] or {}).get("prune"), "sequential.prune")
    device = params["model"].get("device")
    if device is not None and not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(device).strip().lower()):
        raise ConfigError(f"params: model.device: unknown device {device!r}; expected auto, cpu, cuda or cuda:N")
    key = params["model"]["key"]
    table = params["hparams"]
    for model_key, methods in table.items():
        if not isinstance(methods, dict):
            raise ConfigError(f"params: hparams.{model_key}: expected a mapping of methods")
        for method, hp in methods.items():
            where = f"hparams.{model_key}.{method}"
            if hp is not None and not isinstance(hp, dict):
                raise ConfigError(f"params: {where}: expected a mapping of hyperparameters, got {hp!r}")
            by = (hp or {}).get("by_dataset") or {}
            if not isinstance(by, dict):
                raise ConfigError(f"params: {where}.by_dataset: expected a mapping of datasets")
            for ds, over in by.items():
                if ds not in DATASETS:
                    raise _unknown(str(ds), {d: None for d in DATASETS}, f"{where}.by_dataset")
                if over is not None and not isinstance(over, dict):
                    raise ConfigError(f"params: {where}.by_dataset.{ds}: expected a mapping, got {over!r}")
    if key not in table:
        raise ConfigError(f"params: model.key {key!r} has no hparams block; known: {sorted(table)}")
    used = [m for section in METHOD_SECTIONS for m in (params.get(section) or {}).get("methods", [])]
    for m in used:
        if m not in table[key]:
            raise ConfigError(f"params: hparams.{key}.{m}: missing (a .methods list of "
                              f"{', '.join(METHOD_SECTIONS)} runs it)")
    return params
