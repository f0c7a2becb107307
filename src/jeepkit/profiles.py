"""Profiles (embedded / real-small / paper) and a dry run that checks a profile without loading weights.

A profile is a set of `dvc exp run -S key=value` overrides over params.yaml (profiles/*.yaml). The dry
run expands every stage the DAG would run (method × dataset × seed, ablations, sweep, scaling) and
builds each method's objective and regions from the resolved hyperparameters, checking layer indices
against the model's depth and the covariance layers the stats stage will compute.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .params import method_hparams, need

# Depth of the models the paper used; other models give `model.n_layers` in params.
KNOWN_DEPTH = {"smollm2": 30, "gptj": 28, "llama7b": 32}


def apply_overrides(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(params)
    for dotted, value in overrides.items():
        cur = out
        *head, last = dotted.split(".")
        for h in head:
            cur = cur.setdefault(h, {})
        cur[last] = value
    return out


def load_profile(path: str | Path) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data.get("overrides"), dict):
        raise ConfigError(f"{path}: a profile needs an 'overrides' mapping of dotted params keys")
    return data


def profile_overrides(profile: str | Path | None, model_key: str | None = None) -> dict[str, Any]:
    """The dotted overrides a profile sets: its `overrides`, then its block for `model_key` (or just
    model.key = model_key). `make repro-profile` passes these to `dvc exp run -S` in this order, and the dry
    run, the preflight and the benchmarks apply the same ones, so all of them see the same params."""
    prof = load_profile(profile) if profile else {"overrides": {}}
    out = dict(prof["overrides"])
    if model_key:
        out.update(prof.get(model_key) or {"model.key": model_key})
    return out


def override_strings(overrides: dict[str, Any]) -> list[str]:
    """The overrides as `key=value` in the form `dvc exp run -S` takes (flow-style YAML values)."""
    out = []
    for k, v in overrides.items():
        text = yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()
        out.append(f"{k}={text}")
    return out


def profile_params(params: dict[str, Any], profile: str | Path | None, model_key: str | None = None) -> dict[str, Any]:
    """params under `profile_overrides(profile, model_key)`."""
    return apply_overrides(params, profile_overrides(profile, model_key))


def expand_runs(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every edit run the DAG contains, with its resolved hyperparameters. `scores` "teacher_forced" marks the
    stages whose command says `--scores teacher_forced` in dvc.yaml (Table 4's ablation, Fig. 6's sweep)."""
    seeds = params.get("seeds", [params.get("seed", 0)])
    runs = []
    for ds in need(params, "data.datasets"):
        for m in need(params, "edit.methods"):
            for s in seeds:
                runs.append({"stage": f"edit@{m}-{ds}-{s}", "method": m, "dataset": ds, "overrides": {}})
    ke = params.get("knowedit") or {}
    for m in ke.get("methods", []):
        for s in seeds:
            runs.append({"stage": f"knowedit@{m}-{s}", "method": m, "dataset": ke["dataset"], "overrides": {},
                         "n_edits": int(ke["n_edits"]), "batch": int(ke.get("batch_size") or ke["n_edits"])})
    ab = params.get("ablation") or {}
    for v in ab.get("variants", []):
        for s in seeds:
            runs.append({"stage": f"ablation@{v}-{s}", "method": "jeep", "dataset": ab["dataset"],
                         "overrides": {"variant": v}, "scores": "teacher_forced"})
    sw = params.get("sweep") or {}
    for c in sw.get("clamp_high", []):
        for s in seeds:
            runs.append({"stage": f"sweep@{c}-{s}", "method": "jeep", "dataset": sw["dataset"],
                         "overrides": {"clamp_high": c, "clamp_low": 1.0}, "scores": "teacher_forced"})
    sc = params.get("scaling") or {}
    for m in sc.get("methods", []):
        for s in seeds:
            runs.append({"stage": f"scaling@{m}-{s}", "method": m, "dataset": sc["dataset"], "overrides": {}})
    sq = params.get("sequential") or {}
    if sq:
        total, batch = int(sq["total"]), int(sq["batch"])
        n_batches = max(1, total // batch)
        pruned = (sq.get("prune") or {}).get("alpha") is not None
        prune_every = pruned and bool((sq.get("prune") or {}).get("every"))
        # facts scored: all so far after every batch, again under PRUNE where it is applied
        scored = batch * n_batches * (n_batches + 1) // 2
        scored += scored if prune_every else (total if pruned else 0)
        for m in sq.get("methods", []):
            for reg in sq.get("regularisers", ["none"]):
                for s in seeds:
                    runs.append({"stage": f"sequential@{m}-{reg}-{s}", "method": m, "dataset": sq["dataset"],
                                 "overrides": {}, "regulariser": reg, "n_edits": total, "batch": batch,
                                 "evaluated": scored})
    return runs


def dry_run(params: dict[str, Any]) -> dict[str, Any]:
    """Validate every run of a profile; raise ConfigError listing all problems, else return a summary."""
    from .config import validate_params
    from .editing.run import check_params, method_spec

    validate_params(params)
    check_params(params)
    key = need(params, "model.key")
    depth = params["model"].get("n_layers") or KNOWN_DEPTH.get(key)
    if depth is None:
        raise ConfigError(f"model '{key}': set model.n_layers so the dry run can check layer indices")
    stats_layers = set(need(params, "stats.layers"))
    stats_roles = set(params["stats"].get("modules", ["mlp_out"]))
    problems, runs = [], expand_runs(params)
    for r in runs:
        try:
            spec = method_spec(r["method"])
            hp = spec.hparams.from_dict({**method_hparams(params, r["method"], r["dataset"]), **r["overrides"]},
                                        f"hparams.{key}.{r['method']}")
            for obj, _ in (spec.objectives(hp) if spec.objectives else []):
                for d in obj.deltas:
                    if not 0 <= d.layer < depth:
                        problems.append(f"{r['stage']}: delta {d.name} at layer {d.layer} outside 0..{depth - 1}")
            for layer in spec.touched_layers(hp, depth):
                if not 0 <= layer < depth:
                    problems.append(f"{r['stage']}: layer {layer} outside 0..{depth - 1}")
            for role, layer in spec.statistics(hp):
                if 0 <= layer < depth and (layer not in stats_layers or role not in stats_roles):
                    problems.append(f"{r['stage']}: needs covariance of {role}@{layer}; add it to stats.layers/modules")
            if r["stage"].startswith("sequential@"):
                from .runners.sequential import check_run, protocol

                check_run(params, r["method"], r["regulariser"])
                protocol(params, int(r["n_edits"]), r["dataset"])
        except (ConfigError, KeyError) as e:
            problems.append(f"{r['stage']}: {type(e).__name__}: {e}")
    if problems:
        raise ConfigError("profile check failed:\n  " + "\n  ".join(sorted(set(problems))))
    return {"model": key, "depth": depth, "runs": len(runs), "stages": [r["stage"] for r in runs]}
