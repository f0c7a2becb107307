"""The input stages: canonical datasets, the prepared model, covariance statistics.

Each writes its output through a temporary path and a rename; wall times go to data/timings/, never
into a DVC-tracked output, so the same inputs give byte-identical outputs on every machine.
"""

from __future__ import annotations

from ..data.schema import save_cases
from ..data.sources import DOWNLOAD_LOCK, resolve_dataset
from ..errors import ConfigError
from ..io import atomic_dir, write_json
from ..params import ParamsLike, need, paths, resolve_params


def build_data(dataset: str, params: ParamsLike = "params.yaml", source: str | None = None) -> None:
    """`source` overrides data.source (the KnowEdit stage builds its dataset from knowedit.source)."""
    params = resolve_params(params)
    d = need(params, "data")
    cases, prov = resolve_dataset(dataset, source or d["source"], mirror=d.get("mirror"), n=d.get("n_records"),
                                  seed=int(params.get("seed", 0)), mirror_file=(d.get("files") or {}).get(dataset),
                                  url=(d.get("urls") or {}).get(dataset), sha256=(d.get("sha256") or {}).get(dataset),
                                  lock_path=DOWNLOAD_LOCK)
    if not cases:
        raise ConfigError(f"dataset {dataset} from {d['source']} produced no cases")
    out = paths(params)["datasets"]
    save_cases(out / f"{dataset}.jsonl", cases)
    write_json(out / f"{dataset}.provenance.json", prov)
    print(f"{dataset}: {len(cases)} cases from {prov['source']} ({prov.get('path')})")


def prepare(params: ParamsLike = "params.yaml") -> None:
    from ..models import prepare_model

    params = resolve_params(params)
    p = paths(params)
    card, seconds = prepare_model(need(params, "model"), p["model"])
    write_json(p["timings"] / "prepare_model.json", {"model": need(params, "model.key"), **seconds})
    print(f"model ready: {card.get('id')} ({card.get('source')})")


def stats(params: ParamsLike = "params.yaml") -> None:
    from ..models import model_identity
    from ..runtime import load_run_model, runtime_for
    from ..stats import compute_stats, corpus_spec

    params = resolve_params(params)
    p = paths(params)
    model, tok, arch, card = load_run_model(params)
    rt = runtime_for(params, model)
    s = need(params, "stats")
    modules = [arch.name(role, l) for role in s.get("modules", ["mlp_out"]) for l in s["layers"]]
    with atomic_dir(p["stats"]) as tmp:
        side, seconds = compute_stats(model, tok, arch, modules, corpus_spec(params), model_identity(card), tmp,
                                      token_budget=rt.stats_tokens)
    write_json(p["timings"] / "stats.json", {"model": need(params, "model.key"), "key": side["key"], **seconds})
    print(f"covariance: {len(modules)} modules, {side['n_tokens']} tokens, {seconds['seconds']} s")
