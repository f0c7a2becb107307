"""The probe stage: the logit-lens probe of the unedited model on the first `probe.n_records` records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.schema import load_cases
from ..errors import ConfigError, InputError
from ..io import atomic_dir
from ..models import get_module, model_identity
from ..params import ParamsLike, paths, resolve_params
from ..probe import (LAYER_AXIS, POSITIONS, configured_layers, format_recommendation, probe_prompt, probe_records,
                     probe_settings, recommend_layers, save_probe)
from ..runtime import load_run_model, runtime_for
from ..wordsets import build_wordsets


def run_probe_stage(dataset: str | None = None, params: ParamsLike = "params.yaml",
                    out_dir: str | Path | None = None, apply_final_norm: bool | None = None) -> dict[str, Any]:
    """DVC stage: probe the first ``probe.n_records`` records of ``dataset`` and write
    ``data/probe/<model key>/<dataset>/arrays.npz`` + ``arrays.json``; print the layer recommendation.
    ``apply_final_norm`` overrides ``probe.apply_final_norm`` (the pipeline runs both lenses)."""
    params = resolve_params(params)
    s = probe_settings(params)
    if apply_final_norm is not None:
        s["apply_final_norm"] = bool(apply_final_norm)
    dataset = dataset or s["dataset"]
    p = paths(params)
    all_cases = load_cases(p["datasets"] / f"{dataset}.jsonl")
    if all_cases and all_cases[0].kind != "counterfact":
        raise ConfigError(f"the probe needs CounterFact-style records (true answers); {dataset} is {all_cases[0].kind}")
    model, tok, arch, card = load_run_model(params)
    cases, skipped = [], []
    for c in all_cases:
        if len(cases) >= int(s["n_records"]):
            break
        try:
            probe_prompt(tok, c)
            cases.append(c)
        except InputError as e:
            skipped.append({"case_id": c.case_id, "reason": str(e)})
    if not cases:
        raise ConfigError(f"no probe-able records in {dataset}")
    ws = build_wordsets(tok, cases, reference=all_cases, max_related=int(s["max_related"])) if s["wordsets"] else None
    arrays = probe_records(model, tok, arch, cases, apply_final_norm=bool(s["apply_final_norm"]), wordsets=ws,
                           batch_size=runtime_for(params, model).probe_rows)
    rec = recommend_layers(arrays, n_low=int(s["n_low"]), n_high=int(s["n_high"]))
    conf = configured_layers(params)
    sidecar = {
        "dataset": dataset, "case_ids": [c.case_id for c in cases], "skipped": skipped,
        "positions": list(POSITIONS), "layer_axis": LAYER_AXIS, "n_layers": arch.n_layers,
        "vocab_size": int(get_module(model, arch.lm_head).weight.shape[0]),
        "family": arch.family, "model": {"key": params["model"]["key"], **model_identity(card)},
        "settings": s, "apply_final_norm": bool(s["apply_final_norm"]),
        "lens": "softmax(lm_head(final_norm(h)))" if s["apply_final_norm"] else "softmax(lm_head(h)), no final norm",
        "wordsets": ws.summary() if ws is not None else None,
        "recommendation": rec, "configured_layers": conf,
    }
    out = Path(out_dir) if out_dir is not None else Path("data") / "probe" / str(params["model"]["key"]) / dataset
    with atomic_dir(out) as tmp:
        save_probe(tmp, arrays, sidecar)
    print(f"probe: {len(cases)} records of {dataset} ({len(skipped)} skipped), {arch.n_layers} layers, "
          f"{sidecar['lens']} -> {out}")
    print(format_recommendation(rec, conf))
    return sidecar
