"""Reading the pipeline's metrics JSONs: one validated, flat row per run (every failure names the file and the
field), per group of the metrics tree (main, ablation, sweep, knowedit) and for the scaling curves."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..errors import InputError
from ..io import read_json
from .labels import DATASET_LABELS, METRIC_COLUMNS, TIMING_FIELDS


FREE_COLUMNS = tuple(f"free_{m}_{rule}_{s}" for m in ("ES", "GS", "LS") for rule in ("exact", "contains")
                     for s in ("mean", "ci95"))
GEN_COLUMNS = ("GE_mean", "GE_ci95", "RS_mean", "RS_ci95")  # MEMIT's Fluency / Consistency, official data only
# what an edit changed (metrics "work"): ‖ΔW‖_F of JEEP's low / high region (or the one region of other methods,
# named after it), and the rewrite's target probability on the edited model
REACH_COLUMNS = ("dW_low", "dW_high", "p_target_after")
RUN_COLUMNS = (
    "method", "name", "dataset", "kind", "model", "model_id", "data_source", "n_cases", "n_edits", "batch_size", "seed",
    *(f"{m}_{s}" for m in METRIC_COLUMNS for s in ("mean", "ci95", "n")), "protocol",
    "interval", *TIMING_FIELDS, *FREE_COLUMNS, "ppl_before", "ppl_after", *GEN_COLUMNS, *REACH_COLUMNS, "file",
)


def _get(obj: Any, dotted: str, file: str) -> Any:
    """Walk a dotted path; a missing step names the full field so the user knows what to add."""
    cur = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise InputError("missing field", file=file, field=dotted)
        cur = cur[part]
    return cur


def _str(obj: Any, dotted: str, file: str) -> str:
    v = _get(obj, dotted, file)
    if not isinstance(v, str) or not v:
        raise InputError(f"expected a non-empty string, got {v!r}", file=file, field=dotted)
    return v


def _int(obj: Any, dotted: str, file: str, *, minimum: int = 0) -> int:
    v = _get(obj, dotted, file)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise InputError(f"expected an integer >= {minimum}, got {v!r}", file=file, field=dotted)
    return v


def _num(v: Any, dotted: str, file: str, *, lo: float = -math.inf, hi: float = math.inf,
         allow_none: bool = False) -> float:
    """A float from JSON; None becomes NaN only where the producer documents None as 'undefined'."""
    if v is None and allow_none:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        bounds = f" in [{lo}, {hi}]" if math.isfinite(lo) or math.isfinite(hi) else ""
        none = " or null" if allow_none else ""
        raise InputError(f"expected a finite number{bounds}{none}, got {v!r}", file=file, field=dotted)
    return float(v)


def _interval_text(v: Any) -> str:
    if isinstance(v, dict):
        return "; ".join(f"{k}: {t}" for k, t in v.items())
    return "" if v is None else str(v)


def _run_row(obj: Any, file: str) -> dict[str, Any]:
    """Validate one metrics file and flatten it; every failure names the file and the field."""
    if not isinstance(obj, dict):
        raise InputError(f"expected a JSON object, got {type(obj).__name__}", file=file)
    row: dict[str, Any] = {
        "method": _str(obj, "method", file), "dataset": _str(obj, "dataset", file), "kind": _str(obj, "kind", file),
        "model": _str(obj, "model.key", file), "data_source": _str(obj, "data.source", file),
        "n_edits": _int(obj, "n_edits", file, minimum=1), "seed": _int(obj, "seed", file),
    }
    # `name` tells variants of one method apart (ablations, sweeps); plain runs are named by their method.
    row["name"] = _str(obj, "name", file) if "name" in obj else row["method"]
    model_id = _get(obj, "model", file).get("id")
    row["model_id"] = model_id if isinstance(model_id, str) else ""
    data = _get(obj, "data", file)
    row["n_cases"] = _int(obj, "data.n_cases", file) if "n_cases" in data else row["n_edits"]
    row["batch_size"] = _int(obj, "batch_size", file, minimum=1) if "batch_size" in obj else row["n_edits"]
    summary = _get(obj, "summary", file)
    skind = summary.get("kind") if isinstance(summary, dict) else None
    if skind is not None and skind != row["kind"]:
        raise InputError(f"summary kind {skind!r} disagrees with run kind {row['kind']!r}", file=file,
                         field="summary.kind")
    for m in METRIC_COLUMNS:
        base = f"summary.{m}"
        row[f"{m}_mean"] = _num(_get(obj, f"{base}.mean", file), f"{base}.mean", file, lo=0.0, hi=100.0,
                                allow_none=True)
        row[f"{m}_ci95"] = _num(_get(obj, f"{base}.ci95", file), f"{base}.ci95", file, lo=0.0, allow_none=True)
        row[f"{m}_n"] = _int(obj, f"{base}.n", file)
    row["protocol"] = str(summary["ES"].get("protocol", "")) if isinstance(summary.get("ES"), dict) else ""
    row["interval"] = _interval_text(summary.get("interval"))
    row.update(_free_and_drift(obj, summary, file))
    work = obj.get("work") or {}
    norms = work.get("delta_frobenius") if isinstance(work, dict) else None
    for col, region in (("dW_low", "low"), ("dW_high", "high")):
        # recorded without the region: the run left it alone (0); not recorded at all: unknown
        row[col] = (math.nan if not isinstance(norms, dict) or not norms
                    else _num(norms.get(region, 0.0), f"work.delta_frobenius.{region}", file, lo=0.0))
    p = work.get("target_prob_after_edit") if isinstance(work, dict) else None
    row["p_target_after"] = _num(p, "work.target_prob_after_edit", file, lo=0.0, hi=1.0) if p is not None else math.nan
    timing = obj.get("timing", {})  # optional: older runs may not have it
    if not isinstance(timing, dict):
        raise InputError(f"expected an object, got {timing!r}", file=file, field="timing")
    for t in TIMING_FIELDS:
        row[t] = _num(timing[t], f"timing.{t}", file, lo=0.0) if t in timing else math.nan
    row["file"] = file
    return row


def _free_and_drift(obj: dict[str, Any], summary: dict[str, Any], file: str) -> dict[str, float]:
    """Free-generation ES/GS/LS (both match rules), held-out perplexity before / after and the generation
    metrics (Fluency GE, Consistency RS); NaN when not run."""
    out = dict.fromkeys((*FREE_COLUMNS, "ppl_before", "ppl_after", *GEN_COLUMNS), math.nan)
    for m in ("GE", "RS") if summary.get("generation") is not None else ():
        base = f"summary.generation.{m}"
        cell = _get(obj, base, file)
        out[f"{m}_mean"] = _num(cell.get("mean"), f"{base}.mean", file, allow_none=True)
        out[f"{m}_ci95"] = _num(cell.get("ci95"), f"{base}.ci95", file, lo=0.0, allow_none=True)
    free = summary.get("free_generation")
    if free is not None:
        for m in ("ES", "GS", "LS"):
            for rule in ("exact", "contains"):
                base = f"summary.free_generation.{m}.{rule}"
                cell = _get(obj, base, file)
                out[f"free_{m}_{rule}_mean"] = _num(cell.get("mean"), f"{base}.mean", file, lo=0.0, hi=100.0,
                                                    allow_none=True)
                out[f"free_{m}_{rule}_ci95"] = _num(cell.get("ci95"), f"{base}.ci95", file, lo=0.0, allow_none=True)
    if obj.get("drift") is not None:
        out["ppl_before"] = _num(_get(obj, "drift.perplexity_before", file), "drift.perplexity_before", file, lo=1.0)
        out["ppl_after"] = _num(_get(obj, "drift.perplexity_after", file), "drift.perplexity_after", file, lo=1.0)
    return out


def load_metrics(paths_or_dir: str | os.PathLike | Iterable[str | os.PathLike], *,
                 pattern: str = "*.json") -> pd.DataFrame:
    """One row per run from a metrics directory (files matching `pattern`), one file, or a list of files.

    Malformed files raise InputError naming the file and the field. Two files describing the same run
    (name, dataset, model, n_edits, seed) also raise: one of them is stale and would be double counted.
    An existing but empty directory gives an empty frame with the usual columns.
    """
    if isinstance(paths_or_dir, (str, os.PathLike)):
        p = Path(paths_or_dir)
        if p.is_dir():
            files = sorted(p.glob(pattern))
        elif p.exists():
            files = [p]
        else:
            raise InputError("no such metrics file or directory", file=str(p))
    else:
        files = [Path(f) for f in paths_or_dir]
    rows = [_run_row(read_json(f), str(f)) for f in files]
    df = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    key = ["name", "dataset", "model", "n_edits", "seed"]
    dup = df[df.duplicated(key, keep=False)]
    if not dup.empty:
        first = dup.iloc[0]
        same = dup[(dup[key] == first[key]).all(axis=1)]["file"].tolist()
        raise InputError(f"the same run ({', '.join(f'{k}={first[k]}' for k in key)}) appears in several files: "
                         f"{', '.join(same)}", file=same[0])
    return df


def _overrides(file: str) -> dict[str, Any]:
    obj = read_json(file)
    ov = obj.get("overrides") if isinstance(obj, dict) else None
    return ov if isinstance(ov, dict) else {}


def load_group(metrics_root: str | os.PathLike, group: str, *, dataset: str | None = None) -> pd.DataFrame:
    """`load_metrics` on ``metrics_root/group`` (main, ablation or sweep); an absent directory gives an empty
    frame, so a partial pipeline still reports. `dataset` keeps one dataset's runs."""
    d = Path(metrics_root) / group
    if not d.is_dir():
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    df = load_metrics(d)
    if dataset is not None:
        df = df[df["dataset"] == dataset]
    return df.reset_index(drop=True)


def datasets_in(metrics_root: str | os.PathLike, group: str) -> list[str]:
    """The datasets a group has runs for (scaling included), in the order counterfact, mcf, zsre, others."""
    if group == "scaling":
        df = load_scaling(metrics_root)
    else:
        df = load_group(metrics_root, group)
    have = set(df["dataset"]) if not df.empty else set()
    return [d for d in DATASET_LABELS if d in have] + sorted(have - set(DATASET_LABELS))


SCALING_COLUMNS = ("method", "dataset", "model", "model_id", "data_source", "seed", "n_edits", "m", "n_chunks",
                   "n_records", *(f"{m}_{s}" for m in METRIC_COLUMNS for s in ("mean", "ci95", "n")), "interval",
                   *TIMING_FIELDS, "file")


def load_scaling(metrics_root: str | os.PathLike, *, dataset: str | None = None) -> pd.DataFrame:
    """One row per (scaling file, point) from ``metrics_root/scaling/*.json`` (`pipeline.scaling` output);
    malformed files raise InputError naming the file and field. Absent directory: empty frame."""
    d = Path(metrics_root) / "scaling"
    rows = []
    for f in sorted(d.glob("*.json")) if d.is_dir() else []:
        file = str(f)
        obj = read_json(f)
        if not isinstance(obj, dict):
            raise InputError("expected a JSON object", file=file)
        head = {"method": _str(obj, "method", file), "dataset": _str(obj, "dataset", file),
                "model": _str(obj, "model.key", file), "data_source": _str(obj, "data.source", file),
                "seed": _int(obj, "seed", file), "n_edits": _int(obj, "n_edits", file, minimum=1)}
        mid = _get(obj, "model", file).get("id")
        head["model_id"] = mid if isinstance(mid, str) else ""
        points = _get(obj, "points", file)
        if not isinstance(points, list) or not points:
            raise InputError("expected a non-empty list of points", file=file, field="points")
        for i, p in enumerate(points):
            base = f"points.{i}"
            wrapped = {"p": p}
            row = {**head, "m": _int(wrapped, "p.m", file, minimum=1),
                   "n_chunks": _int(wrapped, "p.n_chunks", file, minimum=1) if "n_chunks" in p else 1}
            row["n_records"] = _int(wrapped, "p.n_records", file) if "n_records" in p else row["m"] * row["n_chunks"]
            for m in METRIC_COLUMNS:
                fld = f"{base}.summary.{m}"
                row[f"{m}_mean"] = _num(_get(wrapped, f"p.summary.{m}.mean", file), f"{fld}.mean", file, lo=0.0,
                                        hi=100.0, allow_none=True)
                row[f"{m}_ci95"] = _num(_get(wrapped, f"p.summary.{m}.ci95", file), f"{fld}.ci95", file, lo=0.0,
                                        allow_none=True)
                row[f"{m}_n"] = _int(wrapped, f"p.summary.{m}.n", file)
            row["interval"] = _interval_text(p["summary"].get("interval"))
            timing = p.get("timing") or {}
            for t in TIMING_FIELDS:
                row[t] = _num(timing[t], f"{base}.timing.{t}", file, lo=0.0) if t in timing else math.nan
            row["file"] = file
            rows.append(row)
    df = pd.DataFrame(rows, columns=list(SCALING_COLUMNS))
    if dataset is not None:
        df = df[df["dataset"] == dataset].reset_index(drop=True)
    return df
