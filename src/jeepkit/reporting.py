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

On a metrics tree (``metrics/{main,ablation,sweep,scaling}``, see `load_group`):

* `comparison_table` -> Table 2 / 3: our rows, then the paper's GPT-J and LLaMA rows (MEND and MALMEN
  marked "quoted, not reproduced").
* `ablation_frame` / `table4` -> Table 4: the seven JEEP variants and full JEEP in the paper's order.
* `sweep_frame` / `sweep_figure` -> Fig. 6: Score/ES/GS/LS against the high clamp γ*.
* `scaling_frame` / `scaling_figure` -> Fig. 4: Score/ES/GS/LS against the batch size m (log x, bands).
* `case_study_frame` -> Table 1: greedy continuations of MEMIT/PMET/JEEP-edited models.

Every table carries `attrs["note"]` and every figure a title stating the scale: model, data source, edits,
seeds and the interval type ("per-record t-interval" for one seed, "t-interval over seed means" for several).
A missing group gives an empty frame; `placeholder_table` / `placeholder_figure` then keep declared outputs.
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
from .io import read_json, save_figure, write_text
from .metrics import t_interval

METRIC_COLUMNS = ("Score", "ES", "GS", "LS")  # the paper's column order
TIMING_FIELDS = ("target_seconds", "edit_seconds", "eval_seconds")

# Method key in params/metrics -> the paper's row label, in the paper's row order.
METHOD_LABELS: Mapping[str, str] = MappingProxyType({
    "none": "Unedited", "ft_wd": "FT-WD", "rome": "ROME", "memit": "MEMIT", "pmet": "PMET",
    "alphaedit": "AlphaEdit", "jeep": "JEEP", "kne": "KNE",
})
DATASET_LABELS: Mapping[str, str] = MappingProxyType({"counterfact": "CounterFact", "mcf": "Multi-CounterFact",
                                                       "zsre": "zsRE"})
# Which paper table a dataset is compared against (Table 2 is zsRE, Table 3 is Multi-CounterFact).
PAPER_TABLE_FOR: Mapping[str, str] = MappingProxyType({"zsre": "table2", "counterfact": "table3", "mcf": "table3"})

QUOTED = "quoted, not reproduced"
# Our rows are runs of this package; whether they reproduce the paper is the ledger's verdict, not the table's.
RAN_HERE = "run here (verdict: ledger)"
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
                     "status": QUOTED if label in _NOT_REPRODUCED else RAN_HERE})
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
    md = df.to_markdown(disable_numparse=True) + "\n"  # keep "40.0" as printed, not "40"
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
    return save_figure(fig, path_png)


# ================================================================== the metrics tree (Tables 1-4, Fig. 4, Fig. 6)

GROUPS = ("main", "ablation", "sweep", "scaling")
EDITORS = ("memit", "pmet", "jeep")  # Table 1 and Fig. 4 compare these three
PER_RECORD = "per-record t-interval"
OVER_SEEDS = "t-interval over seed means"
PAPER_REFERENCE = "paper value (for reference)"
OURS = "ours (this package)"
NOT_RUN = "not run"
NOT_IN_PAPER = "run here; not in the paper"

# Table 4: variant key (jeep.VARIANTS, the `variant` override) -> the paper's row label, in the paper's order.
ABLATION_LABELS: Mapping[str, str] = MappingProxyType({
    "wo_low": "w/o δ′ & Step 2", "wo_high": "w/o δ* & Step 3", "wo_step2": "w/o Step 2", "wo_step3": "w/o Step 3",
    "separate": "Separate Optimization", "even_spread": "Even Spread in Step 2", "mhsa_step3": "w/ MHSA in Step 3",
    "full": "JEEP",
})
ABLATION_ORDER = tuple(ABLATION_LABELS)
# Paper Table 4 (LLaMA-7B, Multi-CounterFact, 10,000 edits; no intervals printed): Score, ES, GS, LS.
_PAPER_TABLE4: Mapping[str, tuple[float, float, float, float]] = MappingProxyType({
    "wo_low": (66.3, 89.8, 56.6, 60.7), "wo_high": (84.1, 98.4, 80.6, 76.3), "wo_step2": (40.0, 36.5, 24.1, 81.5),
    "wo_step3": (81.9, 95.4, 77.5, 75.4), "separate": (83.3, 98.2, 83.3, 72.5),
    "even_spread": (85.4, 98.8, 84.0, 76.3), "mhsa_step3": (85.2, 99.0, 86.6, 73.8), "full": (85.9, 99.8, 85.4, 75.7),
})
PAPER_TABLE4_NOTE = "Paper Table 4: LLaMA-7B, Multi-CounterFact, one batch of 10,000 edits, 3 seeds; no intervals printed."
PAPER_FIG4_NOTE = "Paper Fig. 4: LLaMA-7B, Multi-CounterFact, m = 1 ... 10,000 (17 log-spaced sizes), 95% bands."
PAPER_FIG6_NOTE = "Paper Fig. 6: LLaMA-7B, Multi-CounterFact, 10,000 edits, γ′ = 1, γ* from 0.05 to 1."
PAPER_TABLE1_NOTE = ("Paper Table 1: LLaMA-7B after 10,000 zsRE edits, subject 'Henry S. LeBlanc' (edited: MEMIT/PMET/"
                     "JEEP 'Canada'; equivalent: MEMIT 'of course', PMET and JEEP 'Canada'; unrelated creatine prompt: "
                     "MEMIT 'liver', PMET 'Where is creatine from?', JEEP 'liver').")


def paper_table4() -> pd.DataFrame:
    """The paper's Table 4 as numbers (index: variant key, column `label` = the paper's row label)."""
    out = pd.DataFrame([{"variant": k, "label": ABLATION_LABELS[k], **dict(zip(METRIC_COLUMNS, v))}
                        for k, v in _PAPER_TABLE4.items()]).set_index("variant")
    out.attrs["note"] = PAPER_TABLE4_NOTE
    return out


def interval_kind(n_seeds: int) -> str:
    """The interval wording every table and figure uses: one seed -> per-record, several -> over seed means."""
    if n_seeds <= 1:
        return f"{PER_RECORD} (Score: percentile bootstrap over records)"
    return f"{OVER_SEEDS} ({n_seeds} seeds)"


def _intervals_text(n_seeds: Iterable[int]) -> str:
    kinds = list(dict.fromkeys(interval_kind(int(n)) for n in n_seeds if int(n) > 0))
    return "; ".join(kinds) if kinds else "none (no runs)"


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


def _one_model(df: pd.DataFrame, model: str | None, what: str) -> pd.DataFrame:
    if model is not None:
        df = df[df["model"] == model]
    if df["model"].nunique() > 1:
        raise InputError(f"{what} mixes models {sorted(df['model'].unique())}; pass model=", field="model")
    return df


def _model_text(row: Mapping[str, Any]) -> str:
    return str(row["model"]) + (f" ({row['model_id']})" if row.get("model_id") else "")


def _frame_note(what: str, dataset: str, rows: pd.DataFrame, *, edits: str | None = None, paper: str = "") -> str:
    """Scale sentence for a frame whose rows carry model, model_id, data_source, n_edits, seeds, n_seeds."""
    rows = rows[rows["n_seeds"] > 0] if "n_seeds" in rows else rows
    ds = DATASET_LABELS.get(dataset, dataset)
    if rows.empty:
        return f"{what}, {ds}: no runs. {paper}".strip()
    first = rows.iloc[0]
    edits = edits or ", ".join(dict.fromkeys(str(int(n)) for n in rows["n_edits"]))
    seeds = ", ".join(dict.fromkeys(str(s) for s in rows["seeds"]))
    return (f"{what}, {ds}. Model: {_model_text(first)}. Data source: {', '.join(dict.fromkeys(rows['data_source']))}. "
            f"Edits per run: {edits}. Seeds: {seeds}. 95% intervals: {_intervals_text(rows['n_seeds'])}. {paper}").strip()


def _empty_metrics() -> dict[str, Any]:
    out: dict[str, Any] = {"n_seeds": 0, "seeds": ""}
    for m in METRIC_COLUMNS:
        out[f"{m}_mean"], out[f"{m}_ci95"] = math.nan, math.nan
    out["interval"] = ""
    for t in TIMING_FIELDS:
        out[t] = math.nan
    return out


def _combined(g: pd.DataFrame) -> dict[str, Any]:
    """Seeds of one row combined (`_combine_seeds`), with the interval in this module's wording."""
    out = _combine_seeds(g)
    out["interval"] = interval_kind(len(g))
    first = g.iloc[0]
    out.update(model=first["model"], model_id=first["model_id"], n_edits=int(first["n_edits"]),
               data_source=", ".join(sorted(set(g["data_source"]))), files=", ".join(g["file"]))
    return out


# ------------------------------------------------------------------ Tables 2 and 3 next to the paper


def comparison_table(runs: pd.DataFrame, dataset: str, *, model: str | None = None,
                     n_edits: int | None = None) -> pd.DataFrame:
    """Table 2 (zsRE) or 3 (CounterFact / MCF): our rows ("mean ± ci95"), then the paper's GPT-J and LLaMA rows.

    Columns Source, Method, Score, ES, GS, LS, status. MEND and MALMEN (not implemented here) are marked
    "quoted, not reproduced"; the paper's other rows are "paper value (for reference)". Without runs for
    `dataset` the table holds only the paper's rows and the note says so.
    """
    paper_table = PAPER_TABLE_FOR.get(dataset)
    if paper_table is None:
        raise InputError(f"no paper table for dataset {dataset!r}; known {sorted(PAPER_TABLE_FOR)}", field="dataset")
    rows, index = [], []
    sub = runs[runs["dataset"] == dataset] if not runs.empty else runs
    if not sub.empty:
        ours = results_table(runs, dataset, model=model, n_edits=n_edits)
        in_paper = {label for (t, _), rs in _PAPER.items() if t == paper_table for label, _ in rs}
        for label, r in ours.iterrows():
            index.append(f"ours: {label}")
            rows.append({"Source": OURS, "Method": label, **{m: r[m] for m in METRIC_COLUMNS},
                         "status": RAN_HERE if label in in_paper else NOT_IN_PAPER})
        note = ours.attrs["note"]
    else:
        note = f"{DATASET_LABELS.get(dataset, dataset)}: no runs of ours (the table shows the paper's rows only)."
    for paper_model in ("GPT-J", "LLaMA"):
        pr = format_paper_rows(paper_rows(paper_table, paper_model))
        for label, r in pr.iterrows():
            index.append(f"paper {paper_model}: {label}")
            rows.append({"Source": f"paper, {paper_model}", "Method": label, **{m: r[m] for m in METRIC_COLUMNS},
                         "status": QUOTED if r["status"] == QUOTED else PAPER_REFERENCE})
    out = pd.DataFrame(rows, index=pd.Index(index, name="Row"),
                       columns=["Source", "Method", *METRIC_COLUMNS, "status"])
    name = {"table2": "Table 2 (zsRE)", "table3": "Table 3 (Multi-CounterFact)"}[paper_table]
    out.attrs["note"] = (f"{note} Paper rows: {name}, {_PAPER_SCALE}; the paper prints no interval for Score. "
                         f"MEND and MALMEN are {QUOTED}.")
    return out


# ------------------------------------------------------------------ Table 4 (ablations)


def ablation_frame(metrics_root: str | os.PathLike, dataset: str, *, model: str | None = None) -> pd.DataFrame:
    """Numeric Table 4: one row per variant in the paper's order (index: variant key, `full` = JEEP).

    Variants come from ``metrics_root/ablation`` (runs named ``jeep-variant=<key>``), full JEEP from
    ``metrics_root/main`` (run ``jeep``), both on `dataset`. Seeds are combined as everywhere (one seed:
    per-record interval; several: t-interval over seed means). Rows without runs have n_seeds 0 and NaNs.
    Paper values are in ``paper_<metric>`` columns.
    """
    abl = load_group(metrics_root, "ablation", dataset=dataset)
    main = load_group(metrics_root, "main", dataset=dataset)
    parts = []
    if not abl.empty:
        abl = abl.assign(variant=abl["name"].str.removeprefix("jeep-variant="))
        parts.append(abl[(abl["method"] == "jeep") & abl["name"].str.startswith("jeep-variant=")
                         & abl["variant"].isin(ABLATION_ORDER)])
    if not main.empty:
        parts.append(main[main["name"] == "jeep"].assign(variant="full"))
    both = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*RUN_COLUMNS, "variant"])
    # full JEEP from main wins over an ablation run with variant=full
    if not both.empty and (both["name"] == "jeep").any():
        both = both[~((both["variant"] == "full") & (both["name"] != "jeep"))]
    both = _one_model(both, model, f"Table 4 runs on {dataset!r}") if not both.empty else both
    rows = []
    for key in ABLATION_ORDER:
        g = both[both["variant"] == key] if not both.empty else both
        if len(g) and g["n_edits"].nunique() > 1:
            raise InputError(f"{ABLATION_LABELS[key]} on {dataset!r} has runs at several scales "
                             f"{sorted(int(x) for x in g['n_edits'].unique())}", field="n_edits")
        base = _combined(g) if len(g) else {**_empty_metrics(), "model": "", "model_id": "", "n_edits": 0,
                                            "data_source": "", "files": ""}
        rows.append({"variant": key, "label": ABLATION_LABELS[key], **base,
                     **{f"paper_{m}": v for m, v in zip(METRIC_COLUMNS, _PAPER_TABLE4[key])},
                     "status": RAN_HERE if len(g) else NOT_RUN})
    out = pd.DataFrame(rows).set_index("variant")
    out.attrs["note"] = _frame_note("Table 4 (ablations; JEEP = the main run)", dataset, out, paper=PAPER_TABLE4_NOTE)
    return out


def table4(metrics_root: str | os.PathLike, dataset: str, *, model: str | None = None) -> pd.DataFrame:
    """Table 4 as printed: index = the paper's variant labels in its order; our Score/ES/GS/LS as "mean ± ci95"
    ("not run" where missing), the paper's values beside them, and a status column."""
    fr = ablation_frame(metrics_root, dataset, model=model)
    data = {}
    for m in METRIC_COLUMNS:
        data[m] = [format_cell(r[f"{m}_mean"], r[f"{m}_ci95"]) if r["n_seeds"] else NOT_RUN for _, r in fr.iterrows()]
    for m in METRIC_COLUMNS:
        data[f"{m} (paper)"] = [f"{v:.1f}" for v in fr[f"paper_{m}"]]
    data["status"] = list(fr["status"])
    out = pd.DataFrame(data, index=pd.Index(list(fr["label"]), name="Variant"))
    out.attrs["note"] = fr.attrs["note"]
    return out


# ------------------------------------------------------------------ Fig. 6 (γ* sweep)


def _float_override(file: str, ov: dict[str, Any], key: str, name: str) -> float:
    v = ov.get(key)
    if v is None:  # fall back on the run name, e.g. jeep-clamp_high=0.25-clamp_low=1.0
        import re

        m = re.search(rf"(?:^|-){re.escape(key)}=([0-9.eE+-]+?)(?=-[A-Za-z_]+=|$)", name)
        v = float(m.group(1)) if m else None
    return _num(v, f"overrides.{key}", file, lo=0.0)


def sweep_frame(metrics_root: str | os.PathLike, dataset: str, *, model: str | None = None) -> pd.DataFrame:
    """Numeric Fig. 6: one row per high clamp γ* (``overrides.clamp_high`` of ``metrics_root/sweep`` runs),
    sorted, with γ′ (``clamp_low``), Score/ES/GS/LS mean and 95% half-width, seeds and scale columns."""
    df = load_group(metrics_root, "sweep", dataset=dataset)
    cols = ["gamma", "clamp_low", "n_seeds", "seeds", *(f"{m}_{s}" for m in METRIC_COLUMNS for s in ("mean", "ci95")),
            "interval", "model", "model_id", "data_source", "n_edits"]
    if df.empty:
        out = pd.DataFrame(columns=cols)
        out.attrs["note"] = _frame_note("Fig. 6 (γ* sweep)", dataset, out.assign(n_seeds=[]), paper=PAPER_FIG6_NOTE)
        return out
    df = _one_model(df, model, f"sweep runs on {dataset!r}")
    gam, low = [], []
    for _, r in df.iterrows():
        ov = _overrides(r["file"])
        gam.append(_float_override(r["file"], ov, "clamp_high", r["name"]))
        low.append(float(ov["clamp_low"]) if isinstance(ov.get("clamp_low"), (int, float)) else math.nan)
    df = df.assign(gamma=gam, clamp_low=low)
    rows = []
    for (g_val, c_low), g in df.groupby(["gamma", "clamp_low"], dropna=False, sort=True):
        if g["n_edits"].nunique() > 1:
            raise InputError(f"γ*={g_val} on {dataset!r} has runs at several scales", field="n_edits")
        rows.append({"gamma": float(g_val), "clamp_low": float(c_low), **_combined(g)})
    out = pd.DataFrame(rows)
    if out["gamma"].duplicated().any():
        raise InputError("sweep runs at one γ* differ in γ′ (clamp_low)", field="overrides.clamp_low")
    out = out.sort_values("gamma").reset_index(drop=True)[cols + ["files"]]
    lows = ", ".join(dict.fromkeys(f"{v:g}" for v in out["clamp_low"] if not math.isnan(v))) or "as configured"
    out.attrs["note"] = _frame_note(f"Fig. 6 (γ* sweep, γ′ = {lows})", dataset, out, paper=PAPER_FIG6_NOTE)
    return out


# ------------------------------------------------------------------ Fig. 4 (scaling)

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


def scaling_frame(metrics_root: str | os.PathLike, dataset: str, methods: Iterable[str] = EDITORS, *,
                  model: str | None = None) -> pd.DataFrame:
    """Numeric Fig. 4: one row per (method, m), methods in `methods` order then m ascending; seeds combined
    per m (one seed: the run's per-record interval; several: t-interval over seed means)."""
    methods = list(methods)
    df = load_scaling(metrics_root, dataset=dataset)
    df = df[df["method"].isin(methods)] if not df.empty else df
    cols = ["method", "label", "m", "n_chunks", "n_records", "n_seeds", "seeds",
            *(f"{m}_{s}" for m in METRIC_COLUMNS for s in ("mean", "ci95")), "interval", "model", "model_id",
            "data_source", "n_edits", *TIMING_FIELDS]
    if df.empty:
        out = pd.DataFrame(columns=cols)
        out.attrs["note"] = _frame_note("Fig. 4 (scaling)", dataset, out.assign(n_seeds=[]), paper=PAPER_FIG4_NOTE)
        return out
    df = _one_model(df, model, f"scaling runs on {dataset!r}")
    rows = []
    for method in [m for m in methods if m in set(df["method"])]:
        dm = df[df["method"] == method]
        for m_val, g in dm.groupby("m", sort=True):
            c = _combined(g)
            rows.append({"method": method, "label": method_label(method), "m": int(m_val),
                         "n_chunks": int(g["n_chunks"].max()), "n_records": int(g["n_records"].max()), **c,
                         "n_edits": int(g["n_edits"].max())})
    out = pd.DataFrame(rows)[cols]
    ms = sorted(set(int(x) for x in out["m"]))
    chunks = ", ".join(dict.fromkeys(str(int(x)) for x in out["n_chunks"]))
    edits = f"m = {ms[0]} ... {ms[-1]} ({len(ms)} sizes), up to {max(int(x) for x in out['n_chunks'])} independent " \
            f"chunk(s) per m (chunks per m: {chunks})"
    out.attrs["note"] = _frame_note("Fig. 4 (scaling)", dataset, out, edits=edits, paper=PAPER_FIG4_NOTE)
    return out


# ------------------------------------------------------------------ Table 1 (case study)

CASE_PROMPT_TYPES = ("Edited", "Equivalent", "Unrelated")


def case_study_frame(metrics_root: str | os.PathLike, dataset: str, methods: Iterable[str] = EDITORS, *,
                     seed: int | None = None, unedited: bool = True) -> pd.DataFrame:
    """Table 1: the first edited record's prompts (edited, equivalent, unrelated) and each method's greedy
    continuation after the edit (``case_study`` of ``metrics_root/main/{method}_{dataset}_s{seed}.json``).

    Columns: Input prompt, Expected, then one column per method (plus "Unedited" first when
    `unedited` and a ``none`` run exists, to judge the unrelated prompt). `seed`: default the smallest seed
    every present method has. Methods without a run show "no run"; no run at all gives an empty frame.
    All runs must describe the same record (else InputError).
    """
    methods = list(methods)
    root = Path(metrics_root) / "main"
    keys = (["none"] if unedited and "none" not in methods else []) + methods
    found: dict[str, dict[int, Path]] = {}
    for mth in keys:
        for f in sorted(root.glob(f"{mth}_{dataset}_s*.json")) if root.is_dir() else []:
            s = f.name[len(f"{mth}_{dataset}_s"):-len(".json")]
            if s.isdigit():
                found.setdefault(mth, {})[int(s)] = f
    cols = ["Input prompt", "Expected"]
    if not any(m in found for m in methods):
        out = pd.DataFrame(columns=cols + [method_label(m) for m in methods])
        out.index.name = "Prompt"
        out.attrs["note"] = f"Table 1, {DATASET_LABELS.get(dataset, dataset)}: no runs. {PAPER_TABLE1_NOTE}"
        return out
    if seed is None:
        common = set.intersection(*(set(found[m]) for m in methods if m in found))
        seed = min(common) if common else min(min(found[m]) for m in methods if m in found)
    cases: dict[str, dict[str, Any]] = {}
    runs: dict[str, dict[str, Any]] = {}
    for mth in keys:
        f = found.get(mth, {}).get(seed)
        if f is None:
            continue
        obj = read_json(f)
        cs = _get(obj, "case_study", str(f))
        if not isinstance(cs, dict):
            raise InputError("expected an object", file=str(f), field="case_study")
        for fld in ("prompts", "greedy"):
            if not isinstance(cs.get(fld), list) or not all(isinstance(x, str) for x in cs[fld]):
                raise InputError("expected a list of strings", file=str(f), field=f"case_study.{fld}")
        if len(cs["prompts"]) != len(cs["greedy"]):
            raise InputError("prompts and greedy continuations differ in length", file=str(f), field="case_study")
        cases[mth], runs[mth] = cs, obj
    ref_key = next(m for m in methods if m in cases) if any(m in cases for m in methods) else next(iter(cases))
    ref = cases[ref_key]
    for mth, cs in cases.items():
        if cs.get("case_id") != ref.get("case_id") or cs["prompts"] != ref["prompts"]:
            raise InputError(f"the case study of {mth} is record {cs.get('case_id')!r}, not {ref.get('case_id')!r} "
                             f"like {ref_key}", file=str(found[mth][seed]), field="case_study.case_id")
    n = len(ref["prompts"])
    types = list(CASE_PROMPT_TYPES) if n == 3 else [f"Prompt {i + 1}" for i in range(n)]
    if n >= 1:
        types[0] = "Edited"
    expected = {"Edited": ref.get("target_new", ""), "Equivalent": ref.get("target_new", ""),
                "Unrelated": "unchanged (as the unedited model)"}
    data: dict[str, list[str]] = {"Input prompt": list(ref["prompts"]), "Expected": [expected.get(t, "") for t in types]}
    if unedited and "none" in cases and "none" not in methods:
        data["Unedited"] = list(cases["none"]["greedy"])
    for mth in methods:
        data[method_label(mth)] = list(cases[mth]["greedy"]) if mth in cases else ["no run"] * n
    out = pd.DataFrame(data, index=pd.Index(types, name="Prompt"))
    r0 = runs[ref_key]
    out.attrs["note"] = (
        f"Table 1, {DATASET_LABELS.get(dataset, dataset)}: record {ref.get('case_id')} (subject {ref.get('subject')!r}; "
        f"new target {ref.get('target_new')!r}, true target {ref.get('target_true')!r}); the first record of the "
        f"first edited batch. Model: {r0['model'].get('key')}"
        + (f" ({r0['model'].get('id')})" if r0['model'].get('id') else "")
        + f". Data source: {r0.get('data', {}).get('source')}. Edits per run: {r0.get('n_edits')} "
        f"(batch {r0.get('batch_size', r0.get('n_edits'))}). Seed: {seed}. Greedy decoding of up to 8 new tokens; "
        f"qualitative, no interval. {PAPER_TABLE1_NOTE}")
    out.attrs["case"] = {k: ref.get(k) for k in ("case_id", "subject", "target_new", "target_true")}
    return out


# ------------------------------------------------------------------ placeholders and figures


def placeholder_table(message: str, title: str = "") -> pd.DataFrame:
    """A one-row table saying why there is nothing to show (keeps a declared DVC output present)."""
    out = pd.DataFrame({"status": [message]}, index=pd.Index([title or "no runs"], name="Table"))
    out.attrs["note"] = message
    return out


def _new_figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def placeholder_figure(path_png: str | os.PathLike, title: str, message: str) -> tuple[Path, Path]:
    """A figure carrying only `title` and `message` (e.g. "no runs"), written as PNG + PDF."""
    fig = _new_figure((6.0, 2.5))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.6, title, ha="center", va="center", fontsize=11, weight="bold", transform=ax.transAxes)
    ax.text(0.5, 0.35, message, ha="center", va="center", fontsize=9, wrap=True, transform=ax.transAxes)
    return save_figure(fig, path_png)


def _wrap(text: str, width: int = 120) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


FIGURE_METRICS = ("Score", "ES", "GS", "LS")


def scaling_figure(frame: pd.DataFrame, path_png: str | os.PathLike) -> tuple[Path, Path]:
    """Fig. 4: Score, ES, GS and LS against m (log x) per method, 95% bands; PNG + PDF. The title states the
    scale (the frame's note). An empty frame gives a "no runs" placeholder."""
    note = frame.attrs.get("note", "")
    if frame.empty:
        return placeholder_figure(path_png, "Fig. 4: scaling", note or "no runs")
    from matplotlib.ticker import FuncFormatter

    fig = _new_figure((10.0, 7.2))
    axes = fig.subplots(2, 2, sharex=True)
    colors = {"memit": "tab:blue", "pmet": "tab:orange", "jeep": "tab:red"}
    for ax, met in zip(axes.flat, FIGURE_METRICS):
        for method, g in frame.groupby("method", sort=False):
            g = g.sort_values("m")
            x = g["m"].to_numpy(dtype=float)
            y = g[f"{met}_mean"].to_numpy(dtype=float)
            ci = g[f"{met}_ci95"].to_numpy(dtype=float)
            color = colors.get(str(method))
            ax.plot(x, y, "-o", ms=3, color=color, label=method_label(str(method)))
            ok = ~np.isnan(ci) & ~np.isnan(y)
            if ok.any():
                ax.fill_between(x[ok], np.clip(y[ok] - ci[ok], 0, 100), np.clip(y[ok] + ci[ok], 0, 100),
                                color=color, alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_title(met, fontsize=10)
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("number of edits m (log scale)")
    for ax in axes[:, 0]:
        ax.set_ylabel("% (95% band)")
    h, lab = axes[0, 0].get_legend_handles_labels()
    fig.legend(h, lab, loc="lower center", ncols=max(1, len(lab)), frameon=False, fontsize=9)
    fig.suptitle(_wrap(note, 130), fontsize=7.5)
    fig.tight_layout(rect=(0, 0.05, 1, 0.93))
    return save_figure(fig, path_png)


def sweep_figure(frame: pd.DataFrame, path_png: str | os.PathLike) -> tuple[Path, Path]:
    """Fig. 6: four panels (Score, ES, GS, LS) against the high clamp γ*, 95% error bars; PNG + PDF."""
    note = frame.attrs.get("note", "")
    if frame.empty:
        return placeholder_figure(path_png, "Fig. 6: high-layer clamp γ*", note or "no runs")
    fig = _new_figure((12.0, 3.8))
    axes = fig.subplots(1, 4)
    x = frame["gamma"].to_numpy(dtype=float)
    for ax, met in zip(axes, FIGURE_METRICS):
        y = frame[f"{met}_mean"].to_numpy(dtype=float)
        ci = np.nan_to_num(frame[f"{met}_ci95"].to_numpy(dtype=float), nan=0.0)
        ax.errorbar(x, y, yerr=ci, fmt="-o", ms=4, capsize=3, color="tab:red")
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{v:g}" for v in x], fontsize=7)
        ax.minorticks_off()
        ax.set_title(met, fontsize=10)
        ax.set_xlabel("γ* (high-layer clamp)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("% (95% CI)")
    fig.suptitle(_wrap(note, 150), fontsize=7.5)
    fig.tight_layout(rect=(0, 0, 1, 0.85))
    return save_figure(fig, path_png)
