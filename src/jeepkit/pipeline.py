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
import yaml

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
    """Where stages read and write. JEEPKIT_TARGET_CACHE moves the scratch target cache (e.g. to share it
    between clones or experiments); it never changes a result, only what has to be recomputed."""
    key = need(params, "model.key")
    cache = Path(os.environ.get("JEEPKIT_TARGET_CACHE") or DATA_DIR / "cache" / "targets")
    return {"datasets": DATA_DIR / "datasets", "model": DATA_DIR / "models" / key,
            "stats": DATA_DIR / "stats" / key, "runs": DATA_DIR / "runs", "targets": cache / key,
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


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`key=value` pairs (value parsed as YAML) that override a method's hyperparameters."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def run_name(method: str, overrides: dict[str, Any]) -> str:
    return method + "".join(f"-{k}={v}" for k, v in sorted(overrides.items()))


class _Session:
    """What every edit stage loads once: params, cases, model, statistics, target cache, prefixes."""

    def __init__(self, params_path: str, method: str, dataset: str, seed: int | None, overrides: dict[str, Any]):
        from .editing.engine import sample_prefixes
        from .editing.run import method_module
        from .editing.targets import TargetCache

        self.params = params = load_params(params_path)
        method_module(method)  # fail fast on an unknown method
        self.p = p = paths(params)
        self.e = need(params, "edit")
        self.method, self.dataset = method, dataset
        self.seed = int(params.get("seed", 0) if seed is None else seed)
        self.hp = {**method_hparams(params, method, dataset), **overrides}
        self.overrides = overrides
        self.cases = load_cases(p["datasets"] / f"{dataset}.jsonl")
        self.prov = json.loads((p["datasets"] / f"{dataset}.provenance.json").read_text())
        self.model, self.tok, self.arch, card = load_model(p["model"])
        self.ident = model_identity(card)
        self.cov = CovarianceStore(p["stats"], corpus_spec(params), self.ident)
        self.cache = TargetCache(p["targets"])
        self.prefixes = sample_prefixes(self.model, self.tok, self.seed) if method != "none" else []

    def run_chunks(self, cases: list, chunk: int, *, keep_deltas: bool = True, case_study: bool = False,
                   progress: bool = True) -> dict[str, Any]:
        """Edit each chunk on the original model, evaluate it, restore; chunks are independent."""
        from .editing.run import edit
        from .evaluation import evaluate_cases, greedy_continuations

        out: dict[str, Any] = {"per_case": [], "infos": [], "deltas": {}, "case_study": None,
                               "timing": {"target_seconds": 0.0, "edit_seconds": 0.0, "eval_seconds": 0.0}}
        for c0 in range(0, len(cases), chunk):
            part = cases[c0:c0 + chunk]
            res = edit(self.model, self.tok, self.arch, part, self.method, self.hp, self.cov.get, self.prefixes,
                       self.ident, cache=self.cache)
            t0 = time.time()
            out["per_case"] += evaluate_cases(self.model, self.tok, part, progress=progress,
                                              batch_size=int(self.e.get("eval_batch_size", 32)))
            if case_study and out["case_study"] is None:
                c = part[0]
                prompts = [c.rewrite_prompt] + list(c.paraphrases[:1]) + [lp.prompt for lp in c.locality[:1]]
                out["case_study"] = {"case_id": c.case_id, "subject": c.subject, "target_new": c.target_new,
                                     "target_true": c.target_true, "prompts": prompts,
                                     "greedy": greedy_continuations(self.model, self.tok, prompts, max_new_tokens=8)}
            out["timing"]["eval_seconds"] += time.time() - t0
            out["timing"]["target_seconds"] += res.info.get("target_seconds", 0.0)
            out["timing"]["edit_seconds"] += res.info.get("edit_seconds", 0.0)
            out["infos"].append(res.info)
            if keep_deltas and res.deltas:
                out["deltas"][f"delta_chunk{c0 // chunk}.safetensors"] = (
                    {k: v.contiguous() for k, v in res.deltas.items()}, [c.case_id for c in part])
            with torch.no_grad():  # restore: deltas are the exact applied differences
                for name, d in res.deltas.items():
                    w = parameter(self.model, name)
                    w.copy_((w.float() - d).to(w.dtype))
        return out

    def header(self, n_edits: int, batch: int) -> dict[str, Any]:
        return {"method": self.method, "dataset": self.dataset, "kind": self.cases[0].kind,
                "overrides": self.overrides, "model": {"key": self.params["model"]["key"], **self.ident},
                "data": {"source": self.prov.get("source"), "n_cases": n_edits, "provenance": self.prov},
                "profile": self.params.get("profile"), "seed": self.seed, "n_edits": n_edits, "batch_size": batch}


def edit_and_evaluate(method: str, dataset: str, params_path: str = "params.yaml", *, group: str = "main",
                      seed: int | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Edit n_edits records in independent chunks of batch_size; evaluate each chunk on its edited model."""
    overrides = overrides or {}
    s = _Session(params_path, method, dataset, seed, overrides)
    n_edits = min(int(s.e["n_edits"]), len(s.cases))
    cases = s.cases[:n_edits]
    batch = int(s.e.get("batch_size") or n_edits)
    out = s.run_chunks(cases, batch, case_study=True)
    summary = summarise(out["per_case"], cases[0].kind)
    name = run_name(method, overrides)
    run_dir = s.p["runs"] / group / name / dataset / f"s{s.seed}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{dataset}.", dir=_ensure(run_dir.parent)))
    try:
        write_jsonl(tmp / "cases.jsonl", out["per_case"])
        save_cases(tmp / "requests.jsonl", cases)
        for fname, (tensors, ids) in out["deltas"].items():
            save_deltas(tmp / fname, tensors, {"case_ids": ids, "method": method, "hparams": s.hp, "model": s.ident})
        n_targets = s.cache.export(tmp / "targets")
        write_json(tmp / "info.json", {"hparams": s.hp, "prefixes": s.prefixes, "chunks": out["infos"],
                                       "targets": {"n": n_targets, "keys": list(s.cache.used),
                                                   "hits": s.cache.hits, "misses": s.cache.misses}})
        if run_dir.exists():
            shutil.rmtree(run_dir)
        os.replace(tmp, run_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    metrics = {**s.header(n_edits, batch), "group": group, "name": name, "hparams": s.hp, "summary": summary,
               "case_study": out["case_study"], "timing": {k: round(v, 2) for k, v in out["timing"].items()}}
    write_json(s.p["metrics"] / group / f"{name}_{dataset}_s{s.seed}.json", metrics)
    m = summary
    print(f"{name} on {dataset} ({n_edits} edits, seed {s.seed}): ES {m['ES']['mean']:.1f} GS {m['GS']['mean']:.1f} "
          f"LS {m['LS']['mean']:.1f} Score {m['Score']['mean']:.1f}  [{out['timing']['edit_seconds']:.0f} s edit]")
    return metrics


def scaling_sizes(max_m: int, n_points: int = 16) -> list[int]:
    """m_i = round(exp(ln(M)·i/16)), i = 0..16 (Fig. 4), deduplicated."""
    import math

    return sorted({max(1, round(math.exp(math.log(max_m) * i / n_points))) for i in range(n_points + 1)})


def scaling(method: str, dataset: str, params_path: str = "params.yaml", *, seed: int | None = None) -> dict:
    """Fig. 4: for each batch size m ≤ M, edit up to max_chunks independent chunks of m and evaluate.

    Targets are cached per request, so every m after the first costs only the closed-form updates.
    """
    s = _Session(params_path, method, dataset, seed, {})
    sc = need(s.params, "scaling")
    max_m = min(int(sc["max_edits"]), len(s.cases))
    points = []
    for m in scaling_sizes(max_m):
        n_chunks = min(int(sc.get("max_chunks", 4)), max_m // m)
        cases = s.cases[: m * n_chunks]
        out = s.run_chunks(cases, m, keep_deltas=False, progress=False)
        summ = summarise(out["per_case"], cases[0].kind)
        points.append({"m": m, "n_chunks": n_chunks, "n_records": len(cases), "summary": summ,
                       "timing": {k: round(v, 2) for k, v in out["timing"].items()}})
        print(f"{method} m={m} ({n_chunks} chunks): Score {summ['Score']['mean']:.1f}")
    metrics = {**s.header(max_m, max_m), "group": "scaling", "name": method, "hparams": s.hp, "points": points}
    write_json(s.p["metrics"] / "scaling" / f"{method}_{dataset}_s{s.seed}.json", metrics)
    return metrics


def _ensure(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    return d
