"""What each DVC stage does. Stages in stages/ only parse arguments and call these functions."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from .data.schema import load_cases, save_cases
from .editing.deltas import parameter, save_deltas
from .data.sources import resolve_dataset
from .errors import ConfigError, JeepkitError
from .io import write_json, write_jsonl
from .metrics import summarise
from .models import arch_for, load_model, model_identity, prepare_model
from .params import load_params, method_hparams, need
from .stats import CorpusSpec, CovarianceStore, compute_stats

DATA_DIR = Path("data")


def paths(params: dict[str, Any]) -> dict[str, Path]:
    key = need(params, "model.key")
    return {"datasets": DATA_DIR / "datasets", "model": DATA_DIR / "models" / key,
            "stats": DATA_DIR / "stats" / key, "runs": DATA_DIR / "runs", "targets": DATA_DIR / "cache" / "targets" / key,
            "metrics": Path("metrics")}


def corpus_spec(params: dict[str, Any]) -> CorpusSpec:
    s = need(params, "stats")
    return CorpusSpec(corpus=str(s["corpus"]), n_samples=int(s["n_samples"]), max_length=int(s["max_length"]),
                      dtype=str(s.get("dtype", "float32")), seed=int(s.get("seed", 1)))


def stage_main(fn: Callable[..., Any]) -> Callable[..., None]:
    """Run a stage: known errors print one clear line and exit non-zero; no traceback noise."""

    def run(*args: Any, **kwargs: Any) -> None:
        torch.manual_seed(0)
        try:
            fn(*args, **kwargs)
        except JeepkitError as e:
            print(f"error: {e}", file=sys.stderr)
            if os.environ.get("JEEPKIT_DEBUG"):
                traceback.print_exc()
            sys.exit(2)

    return run


# ------------------------------------------------------------------ stages

def build_data(dataset: str, params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    d = need(params, "data")
    cases, prov = resolve_dataset(dataset, d["source"], mirror=d.get("mirror"), n=d.get("n_records"),
                                  seed=int(params.get("seed", 0)), mirror_file=(d.get("files") or {}).get(dataset),
                                  url=(d.get("urls") or {}).get(dataset), sha256=(d.get("sha256") or {}).get(dataset))
    if not cases:
        raise ConfigError(f"dataset {dataset} from {d['source']} produced no cases")
    out = paths(params)["datasets"]
    save_cases(out / f"{dataset}.jsonl", cases)
    write_json(out / f"{dataset}.provenance.json", prov)
    print(f"{dataset}: {len(cases)} cases from {prov['source']} ({prov.get('path')})")


def prepare(params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    card = prepare_model(need(params, "model"), paths(params)["model"])
    print(f"model ready: {card.get('id')} ({card.get('source')})")


def stats(params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    p = paths(params)
    model, tok, arch, card = load_model(p["model"])
    s = need(params, "stats")
    modules = [arch.name(role, l) for role in s.get("modules", ["mlp_out"]) for l in s["layers"]]
    out = p["stats"]
    tmp = Path(tempfile.mkdtemp(prefix=".stats.", dir=_ensure(out.parent)))
    try:
        side = compute_stats(model, tok, arch, modules, corpus_spec(params), model_identity(card), tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"covariance: {len(modules)} modules, {side['n_tokens']} tokens, {side['seconds']} s")


def edit_and_evaluate(method: str, dataset: str, params_path: str = "params.yaml") -> dict[str, Any]:
    """Edit n_edits records in independent chunks of batch_size; evaluate each chunk on its edited model."""
    from .editing.engine import sample_prefixes
    from .editing.run import edit, method_module
    from .editing.targets import TargetCache
    from .evaluation import evaluate_cases

    params = load_params(params_path)
    method_module(method)  # fail fast on an unknown method
    p = paths(params)
    e = need(params, "edit")
    seed = int(params.get("seed", 0))
    hp = method_hparams(params, method, dataset)
    cases = load_cases(p["datasets"] / f"{dataset}.jsonl")
    prov = json.loads((p["datasets"] / f"{dataset}.provenance.json").read_text())
    n_edits = min(int(e["n_edits"]), len(cases))
    cases = cases[:n_edits]
    batch = int(e.get("batch_size") or n_edits)
    model, tok, arch, card = load_model(p["model"])
    ident = model_identity(card)
    cov = CovarianceStore(p["stats"], corpus_spec(params), ident)
    cache = TargetCache(p["targets"])
    prefixes = sample_prefixes(model, tok, seed) if method != "none" else []
    per_case: list[dict[str, Any]] = []
    timing = {"target_seconds": 0.0, "edit_seconds": 0.0, "eval_seconds": 0.0}
    infos, delta_files = [], {}
    for c0 in range(0, n_edits, batch):
        chunk = cases[c0:c0 + batch]
        res = edit(model, tok, arch, chunk, method, hp, cov.get, prefixes, ident, cache=cache)
        t0 = time.time()
        per_case += evaluate_cases(model, tok, chunk, batch_size=int(e.get("eval_batch_size", 32)))
        timing["eval_seconds"] += time.time() - t0
        timing["target_seconds"] += res.info.get("target_seconds", 0.0)
        timing["edit_seconds"] += res.info.get("edit_seconds", 0.0)
        infos.append(res.info)
        if res.deltas:
            delta_files[f"delta_chunk{c0 // batch}.safetensors"] = ({k: v.contiguous() for k, v in res.deltas.items()},
                                                                     [c.case_id for c in chunk])
        with torch.no_grad():  # chunks are independent: restore (deltas are the exact applied differences)
            for name, d in res.deltas.items():
                w = parameter(model, name)
                w.copy_((w.float() - d).to(w.dtype))
    kind = cases[0].kind
    summary = summarise(per_case, kind)
    run_dir = p["runs"] / method / dataset
    tmp = Path(tempfile.mkdtemp(prefix=f".{dataset}.", dir=_ensure(run_dir.parent)))
    try:
        write_jsonl(tmp / "cases.jsonl", per_case)
        save_cases(tmp / "requests.jsonl", cases)
        for fname, (tensors, ids) in delta_files.items():
            save_deltas(tmp / fname, tensors, {"case_ids": ids, "method": method, "hparams": hp, "model": ident})
        write_json(tmp / "info.json", {"hparams": hp, "prefixes": prefixes, "chunks": infos})
        if run_dir.exists():
            shutil.rmtree(run_dir)
        os.replace(tmp, run_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    metrics = {"method": method, "dataset": dataset, "kind": kind,
               "model": {"key": params["model"]["key"], **ident},
               "data": {"source": prov.get("source"), "n_cases": len(cases), "provenance": prov},
               "seed": seed, "n_edits": n_edits, "batch_size": batch, "summary": summary,
               "timing": {k: round(v, 2) for k, v in timing.items()}}
    write_json(p["metrics"] / f"{method}_{dataset}.json", metrics)
    s = summary
    print(f"{method} on {dataset} ({n_edits} edits): ES {s['ES']['mean']:.1f} GS {s['GS']['mean']:.1f} "
          f"LS {s['LS']['mean']:.1f} Score {s['Score']['mean']:.1f}  [{timing['edit_seconds']:.0f} s edit]")
    return metrics


def _ensure(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    return d
