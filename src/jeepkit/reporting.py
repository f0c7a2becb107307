"""Turn the pipeline's metrics JSONs into the paper's tables and bar figures, and hold the paper's numbers.

All logic lives here so the results notebook only calls and displays, and tests can check it without a
kernel. Nothing here loads a model.

Shapes:

* `load_metrics` -> one row per run (one metrics file), numbers as floats (NaN when undefined).
* `aggregate_runs` -> one row per method for one dataset, numbers as floats; several seeds of one method
  are combined with a t-interval over the per-seed means (spec §7.4 choice (b)); a single run keeps its
  per-record interval (choice (a)). The column `interval` says which.
* `results_table` -> the same rows as "mean ± ci95" strings in the paper's order; `attrs["note"]` says
  the scale (model, data, edits, seeds, interval type), since a small run is not the paper's 10k edits.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from .errors import InputError
from .io import atomic_path, read_json, write_text
from .metrics import t_interval

METRIC_COLUMNS = ("Score", "ES", "GS", "LS")  # the paper's column order
TIMING_FIELDS = ("target_seconds", "edit_seconds", "eval_seconds")

# Method key in params/metrics -> the paper's row label, in the paper's row order.
METHOD_LABELS: Mapping[str, str] = MappingProxyType({
    "none": "Unedited", "ft_wd": "FT-WD", "rome": "ROME", "memit": "MEMIT", "pmet": "PMET",
    "alphaedit": "AlphaEdit", "jeep": "JEEP",
})
DATASET_LABELS: Mapping[str, str] = MappingProxyType({"counterfact": "CounterFact", "zsre": "zsRE"})
# Which paper table a dataset is compared against (Table 2 is zsRE, Table 3 is Multi-CounterFact).
PAPER_TABLE_FOR: Mapping[str, str] = MappingProxyType({"zsre": "table2", "counterfact": "table3"})

QUOTED = "quoted, not reproduced"
REPRODUCED = "reproduced here"
_NOT_REPRODUCED = frozenset({"MEND", "MALMEN"})

# Paper Tables 2 and 3 (spec §10; CIs are the parenthesised 95% half-widths printed in the paper, which
# gives none for Score). Row order as printed. Values: (Score, ES, ES ci, GS, GS ci, LS, LS ci).
_PAPER: Mapping[tuple[str, str], tuple[tuple[str, tuple[float, ...]], ...]] = MappingProxyType({
    ("table2", "GPT-J"): (
        ("Unedited", (26.4, 26.4, 0.6, 25.8, 0.5, 27.0, 0.5)),
        ("FT-WD", (42.1, 69.6, 0.6, 64.8, 0.6, 24.1, 0.5)),
        ("MEND", (20.0, 19.4, 0.5, 18.6, 0.5, 22.4, 0.5)),
        ("ROME", (2.6, 21.0, 0.7, 19.6, 0.7, 0.9, 0.1)),
        ("MALMEN", (47.1, 98.3, 0.3, 90.1, 0.2, 23.6, 0.4)),
        ("MEMIT", (50.7, 96.7, 0.3, 89.7, 0.5, 26.6, 0.5)),
        ("PMET", (51.0, 96.9, 0.3, 90.6, 0.2, 26.7, 0.2)),
        ("JEEP", (51.5, 98.4, 0.2, 91.5, 0.3, 26.9, 0.2)),
    ),
    ("table2", "LLaMA"): (
        ("Unedited", (44.4, 43.6, 0.3, 42.6, 0.5, 49.2, 0.6)),
        ("MALMEN", (66.7, 90.1, 0.4, 84.6, 0.3, 45.3, 0.5)),
        ("MEMIT", (70.4, 95.1, 0.2, 89.5, 0.4, 47.8, 0.5)),
        ("PMET", (69.2, 91.3, 0.3, 86.4, 0.5, 48.0, 0.3)),
        ("JEEP", (72.3, 96.0, 0.2, 93.2, 0.4, 49.1, 0.2)),
    ),
    ("table3", "GPT-J"): (
        ("Unedited", (22.4, 15.2, 0.7, 17.7, 0.6, 83.5, 0.5)),
        ("FT-WD", (67.6, 99.4, 0.1, 77.0, 0.7, 46.9, 0.6)),
        ("MEND", (23.1, 15.7, 0.7, 18.5, 0.7, 83.0, 0.5)),
        ("ROME", (50.3, 50.2, 1.0, 50.4, 0.8, 50.2, 0.6)),
        ("MALMEN", (63.4, 98.2, 0.8, 46.0, 0.8, 65.1, 0.6)),
        ("MEMIT", (85.8, 98.9, 0.2, 88.6, 0.5, 73.7, 0.5)),
        ("PMET", (86.2, 99.5, 0.1, 92.8, 0.4, 71.4, 0.5)),
        ("JEEP", (86.5, 99.8, 0.1, 90.9, 0.5, 73.1, 0.5)),
    ),
    ("table3", "LLaMA"): (
        ("Unedited", (19.7, 12.9, 0.6, 16.0, 0.7, 83.8, 0.4)),
        ("MALMEN", (66.1, 96.0, 0.3, 55.3, 0.8, 59.3, 0.8)),
        ("MEMIT", (84.1, 98.4, 0.2, 80.6, 0.6, 76.3, 0.5)),
        ("PMET", (84.8, 98.9, 0.2, 86.2, 0.5, 73.2, 0.6)),
        ("JEEP", (85.9, 99.8, 0.1, 85.4, 0.5, 75.7, 0.5)),
    ),
})
_PAPER_SCALE = "10,000 edits in one batch, averaged over 3 seeds (paper §5.2-5.3)"

RUN_COLUMNS = (
    "method", "name", "dataset", "kind", "model", "model_id", "data_source", "n_cases", "n_edits", "batch_size", "seed",
    *(f"{m}_{s}" for m in METRIC_COLUMNS for s in ("mean", "ci95", "n")),
    "interval", *TIMING_FIELDS, "file",
)


# ------------------------------------------------------------------ loading


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
    row["interval"] = _interval_text(summary.get("interval"))
    timing = obj.get("timing", {})  # optional: older runs may not have it
    if not isinstance(timing, dict):
        raise InputError(f"expected an object, got {timing!r}", file=file, field="timing")
    for t in TIMING_FIELDS:
        row[t] = _num(timing[t], f"timing.{t}", file, lo=0.0) if t in timing else math.nan
    row["file"] = file
    return row


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


# ------------------------------------------------------------------ tables


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _method_order(methods: Iterable[str]) -> list[str]:
    """The paper's order for known methods, then the rest by name."""
    known = list(METHOD_LABELS)
    ms = set(methods)
    return [m for m in known if m in ms] + sorted(ms - set(known))


def _select(df: pd.DataFrame, dataset: str, model: str | None, n_edits: int | None) -> pd.DataFrame:
    """The runs of one table; refuses to silently mix models or scales in one comparison."""
    sub = df[df["dataset"] == dataset]
    if sub.empty:
        have = sorted(df["dataset"].unique()) if not df.empty else []
        raise InputError(f"no runs for dataset {dataset!r} (have: {', '.join(have) or 'none'})", field="dataset")
    if model is not None:
        sub = sub[sub["model"] == model]
        if sub.empty:
            raise InputError(f"no {dataset!r} runs for model {model!r}", field="model")
    if sub["model"].nunique() > 1:
        raise InputError(f"{dataset!r} runs mix models {sorted(sub['model'].unique())}; pass model=",
                         field="model")
    if n_edits is not None:
        sub = sub[sub["n_edits"] == n_edits]
        if sub.empty:
            raise InputError(f"no {dataset!r} runs with n_edits={n_edits}", field="n_edits")
    for name, g in sub.groupby("name"):
        if g["n_edits"].nunique() > 1:
            raise InputError(f"{name} on {dataset!r} has runs at several scales "
                             f"{sorted(int(x) for x in g['n_edits'].unique())}; pass n_edits=", field="n_edits")
    return sub


def _combine_seeds(g: pd.DataFrame) -> dict[str, Any]:
    """One method's row: a single run as is, several seeds as mean ± t-interval over seed means."""
    out: dict[str, Any] = {"n_seeds": len(g), "seeds": ", ".join(str(s) for s in sorted(g["seed"]))}
    if len(g) == 1:
        r = g.iloc[0]
        for m in METRIC_COLUMNS:
            out[f"{m}_mean"], out[f"{m}_ci95"] = float(r[f"{m}_mean"]), float(r[f"{m}_ci95"])
        out["interval"] = r["interval"] or "as recorded in the run's summary"
    else:
        for m in METRIC_COLUMNS:
            vals = [float(v) for v in g[f"{m}_mean"] if not math.isnan(v)]
            out[f"{m}_mean"], out[f"{m}_ci95"] = t_interval(vals)
        out["interval"] = f"t-interval over {len(g)} per-seed means (Score: over per-seed Scores)"
    for t in TIMING_FIELDS:
        out[t] = float(g[t].mean())
    return out


def aggregate_runs(df: pd.DataFrame, dataset: str, *, model: str | None = None,
                   n_edits: int | None = None) -> pd.DataFrame:
    """Numeric per-method rows for one dataset (index: run name, i.e. the method key for plain runs, in the
    paper's order); see the module docstring."""
    sub = _select(df, dataset, model, n_edits)
    rows = []
    for name in _method_order(sub["name"]):
        g = sub[sub["name"] == name]
        first = g.iloc[0]
        rows.append({"name": name, "method": first["method"], "label": method_label(name), "model": first["model"],
                     "model_id": first["model_id"], "data_source": ", ".join(sorted(g["data_source"].unique())),
                     "n_edits": int(first["n_edits"]), **_combine_seeds(g)})
    return pd.DataFrame(rows).set_index("name")


def format_cell(mean: float | None, ci95: float | None) -> str:
    """'mean ± ci95' at 1 decimal, like the paper; an undefined interval shows as 'n/a'."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if ci95 is None or (isinstance(ci95, float) and math.isnan(ci95)):
        return f"{mean:.1f} ± n/a"
    return f"{mean:.1f} ± {ci95:.1f}"


def _describe(values: pd.Series, labels: pd.Series) -> str:
    """One value if all methods agree, else 'LABEL value' per method, so the note stays short."""
    uniq = list(dict.fromkeys(str(v) for v in values))
    if len(uniq) == 1:
        return uniq[0]
    return "; ".join(f"{lab} {v}" for lab, v in zip(labels, values))


def scale_note(agg: pd.DataFrame, dataset: str) -> str:
    """What scale the numbers come from, so nobody reads a 40-edit run as the paper's 10k-edit result."""
    first = agg.iloc[0]
    model = first["model"] + (f" ({first['model_id']})" if first["model_id"] else "")
    return (f"{DATASET_LABELS.get(dataset, dataset)}. Model: {model}. "
            f"Data source: {_describe(agg['data_source'], agg['label'])}. "
            f"Edits per run: {_describe(agg['n_edits'], agg['label'])}. "
            f"Seeds: {_describe(agg['seeds'], agg['label'])}. "
            f"95% intervals: {_describe(agg['interval'], agg['label'])}. "
            f"The paper used GPT-J / LLaMA with {_PAPER_SCALE}.")


def results_table(df: pd.DataFrame, dataset: str, *, model: str | None = None,
                  n_edits: int | None = None) -> pd.DataFrame:
    """The paper-style table for one dataset: rows in the paper's method order, 'mean ± ci95' strings.

    `attrs["note"]` carries the scale note (model, data source, edits, seeds, interval type).
    """
    agg = aggregate_runs(df, dataset, model=model, n_edits=n_edits)
    table = pd.DataFrame({m: [format_cell(r[f"{m}_mean"], r[f"{m}_ci95"]) for _, r in agg.iterrows()]
                          for m in METRIC_COLUMNS}, index=pd.Index(list(agg["label"]), name="Method"))
    table.attrs["note"] = scale_note(agg, dataset)
    return table


def paper_rows(table: str, model: str) -> pd.DataFrame:
    """The paper's published numbers (Table 2: zsRE, Table 3: MCF) for GPT-J or LLaMA, to compare against.

    Numeric columns Score, ES, GS, LS and the paper's ES/GS/LS 95% half-widths (the paper prints none for
    Score); `status` marks MEND and MALMEN as quoted, since this package does not implement them.
    """
    key = (table, model)
    if key not in _PAPER:
        tables = sorted({t for t, _ in _PAPER})
        models = sorted({m for _, m in _PAPER})
        raise InputError(f"unknown paper table/model {key}; tables {tables}, models {models}",
                         field="table" if table not in tables else "model")
    rows = []
    for label, (sc, es, es_ci, gs, gs_ci, ls, ls_ci) in _PAPER[key]:
        rows.append({"Method": label, "Score": sc, "ES": es, "GS": gs, "LS": ls, "ES_ci95": es_ci,
                     "GS_ci95": gs_ci, "LS_ci95": ls_ci,
                     "status": QUOTED if label in _NOT_REPRODUCED else REPRODUCED})
    out = pd.DataFrame(rows).set_index("Method")
    name = {"table2": "Table 2 (zsRE)", "table3": "Table 3 (Multi-CounterFact)"}[table]
    out.attrs["note"] = f"Paper {name}, {model}, {_PAPER_SCALE}. Score has no interval in the paper."
    return out


def format_paper_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """paper_rows in the same 'mean ± ci95' layout as results_table, for side-by-side display."""
    out = pd.DataFrame({"Score": [f"{v:.1f}" for v in rows["Score"]],
                        **{m: [format_cell(v, c) for v, c in zip(rows[m], rows[f"{m}_ci95"])]
                           for m in ("ES", "GS", "LS")},
                        "status": list(rows["status"])}, index=rows.index)
    out.attrs["note"] = rows.attrs.get("note", "")
    return out


def write_table(df: pd.DataFrame, stem: str | os.PathLike) -> tuple[Path, Path]:
    """Write `{stem}.csv` and `{stem}.md` atomically; the markdown carries `attrs["note"]` under the table."""
    stem = Path(stem)
    csv_path, md_path = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".md")
    buf = io.StringIO()
    df.to_csv(buf)
    write_text(csv_path, buf.getvalue())
    md = df.to_markdown() + "\n"
    note = df.attrs.get("note")
    if note:
        md += f"\n{note}\n"
    write_text(md_path, md)
    return csv_path, md_path


# ------------------------------------------------------------------ figures


def bar_figure(df: pd.DataFrame, dataset: str, path_png: str | os.PathLike, *, model: str | None = None,
               n_edits: int | None = None) -> tuple[Path, Path]:
    """Grouped bars of ES/GS/LS/Score per method with 95% error bars; writes the PNG and a PDF beside it.

    Uses a bare Figure with the Agg canvas (no pyplot), so it works headless and leaves no global state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    agg = aggregate_runs(df, dataset, model=model, n_edits=n_edits)
    metrics = ("ES", "GS", "LS", "Score")
    x = np.arange(len(agg))
    width = 0.8 / len(metrics)
    fig = Figure(figsize=(max(5.0, 1.3 * len(agg) + 2.0), 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, m in enumerate(metrics):
        means = np.nan_to_num(agg[f"{m}_mean"].to_numpy(dtype=float), nan=0.0)
        err = np.nan_to_num(agg[f"{m}_ci95"].to_numpy(dtype=float), nan=0.0)
        ax.bar(x + (i - (len(metrics) - 1) / 2) * width, means, width, yerr=err, capsize=2, label=m)
    ax.set_xticks(x, list(agg["label"]))
    ax.set_ylim(0, 105)
    ax.set_ylabel("% (95% CI)")
    first = agg.iloc[0]
    seeds = sorted(set(int(s) for s in agg["n_seeds"]))
    seed_text = f", {seeds[0]} seed{'s' if seeds[0] > 1 else ''}" if len(seeds) == 1 else ", seeds vary"
    n_text = ", ".join(dict.fromkeys(str(n) for n in agg["n_edits"]))
    ax.set_title(f"{DATASET_LABELS.get(dataset, dataset)}: {first['model']}, "
                 f"{', '.join(dict.fromkeys(agg['data_source']))} data, n = {n_text} edits{seed_text}", fontsize=10)
    ax.legend(ncols=len(metrics), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    fig.tight_layout()
    png = Path(path_png)
    pdf = png.with_suffix(".pdf")
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=150)
    with atomic_path(pdf) as tmp:
        fig.savefig(tmp, format="pdf")
    return png, pdf
