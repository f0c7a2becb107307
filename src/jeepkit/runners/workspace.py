"""Run the stages' own recipe outside `dvc repro`: in a working directory, under a profile with overrides.

Benchmarks and searches use this instead of re-assembling model, statistics, data and editor themselves,
so what they print is what the stages would produce with the same params.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..params import need, paths, resolve_params
from ..profiles import apply_overrides, profile_overrides


def workspace_params(base: Mapping[str, Any], profile: str | Path | None = None,
                     overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`base` params under a profile (its file's overrides, as `make repro-profile` applies them), then
    `overrides` (dotted keys); relative data paths made absolute, so they hold inside any working directory."""
    params = apply_overrides(dict(base), {**profile_overrides(profile), **dict(overrides or {})})
    d = params.get("data") or {}
    if d.get("mirror"):
        params["data"]["mirror"] = str(Path(d["mirror"]).resolve())
    corpus = str((params.get("stats") or {}).get("corpus") or "")
    if corpus.startswith("file:"):
        params["stats"]["corpus"] = "file:" + str(Path(corpus[5:]).resolve())
    return resolve_params(params)


@contextlib.contextmanager
def working_directory(root: str | Path) -> Iterator[Path]:
    """chdir into `root` (made if missing) for the block; the stages' data/ and metrics/ land there."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = Path.cwd()
    os.chdir(root)
    try:
        yield root
    finally:
        os.chdir(before)


def ensure_inputs(params: Mapping[str, Any], datasets: Sequence[str], *, statistics: bool = True) -> None:
    """The input stages for `datasets` in the current directory: the data stage always (cheap, deterministic),
    the model and statistics stages only when their output for these params is not there yet."""
    from ..models import load_model, model_identity
    from ..stats import corpus_spec
    from .inputs import build_data, prepare, stats

    for ds in datasets:
        build_data(ds, params)
    p = paths(params)
    if not (p["model"] / "model_card.json").exists():
        prepare(params)
    if not statistics:
        return
    _, _, arch, card = load_model(p["model"])
    spec_dir = p["stats"] / corpus_spec(params).key(model_identity(card))
    s = need(params, "stats")
    wanted = [arch.name(role, layer) for role in s.get("modules", ["mlp_out"]) for layer in s["layers"]]
    if not all((spec_dir / f"{m}.safetensors").exists() for m in wanted):
        stats(params)
