"""The paper's tables from the metrics tree: our rows ("mean ± ci95", in the paper's order) beside the paper's
(Tables 2-3), Table 4 (ablations), the frames behind Fig. 4 and Fig. 6, Table 1 (case study). Every table
carries `attrs["note"]` stating the scale (model, data source, edits, seeds, interval type)."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from ..errors import InputError
from ..io import read_json, write_text
from ..metrics import t_interval
from .labels import (ABLATION_LABELS, ABLATION_ORDER, DATASET_LABELS, EDITORS, METRIC_COLUMNS, NOT_IN_PAPER, NOT_RUN,
                     OURS, PAPER_REFERENCE, PAPER_TABLE_FOR, QUOTED, RAN_HERE, TIMING_FIELDS, _intervals_text,
                     _method_order, interval_kind, method_label)
from .loading import REACH_COLUMNS, RUN_COLUMNS, _get, _num, _overrides, load_group, load_scaling
from .paper import (PAPER_FIG4_NOTE, PAPER_FIG6_NOTE, PAPER_SCALE, PAPER_TABLE1_NOTE, PAPER_TABLE4_NOTE,
                    paper_methods, paper_rows, paper_table4_values)


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
            f"The paper used GPT-J / LLaMA with {PAPER_SCALE}.")


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
    # keep "40.0" as printed, not "40"; a cell's newline or pipe would break the row (a continuation can hold both)
    cells = df.map(lambda x: x.replace("\n", " ⏎ ").replace("|", "\\|") if isinstance(x, str) else x)
    md = cells.to_markdown(disable_numparse=True) + "\n"
    note = df.attrs.get("note")
    if note:
        md += f"\n{note}\n"
    write_text(md_path, md)
    return csv_path, md_path


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
        in_paper = paper_methods(paper_table)
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
    out.attrs["note"] = (f"{note} Paper rows: {name}, {PAPER_SCALE}; the paper prints no interval for Score. "
                         f"MEND and MALMEN are {QUOTED}.")
    return out


GENERATION_LABELS = (("GE", "Fluency (GE)"), ("RS", "Consistency (RS)"))


def _seeds_cell(g: pd.DataFrame, column: str) -> str:
    """`column`'s cell over one method's runs: one seed, its per-record interval; several, a t-interval over
    the seed means; "n/a" when no run has it."""
    vals = [float(v) for v in g[f"{column}_mean"] if not math.isnan(v)]
    if len(g) == 1:
        return format_cell(vals[0] if vals else None, float(g.iloc[0][f"{column}_ci95"]))
    return format_cell(*t_interval(vals)) if vals else "n/a"


def protocols_table(runs: pd.DataFrame, dataset: str, *, model: str | None = None) -> pd.DataFrame:
    """Beyond the paper (issue 14): each method's teacher-forced ES/GS/LS beside free generation of the same
    prompts (the model must produce the answer: `exact` = the continuation begins with it, `contains` = it
    occurs in it), and the held-out perplexity before → after the edit; runs on official CounterFact add MEMIT's
    Fluency and Consistency of sampled text. The unedited row is the baseline a free-generation LS is read
    against. Several seeds: mean of the seed means."""
    sub = runs[runs["dataset"] == dataset] if not runs.empty else runs
    cols = ["Method", "protocol", *(f"{m} {w}" for m in ("ES", "GS", "LS")
                                    for w in ("teacher-forced", "free exact", "free contains")),
            "perplexity before → after"]
    if sub.empty:
        out = pd.DataFrame(columns=cols)
        out.attrs["note"] = f"{DATASET_LABELS.get(dataset, dataset)}: no runs of ours."
        return out
    agg = aggregate_runs(runs, dataset, model=model)
    rows = []
    for name, r in agg.iterrows():
        g = sub[sub["name"] == name]
        row = {"Method": r["label"], "protocol": ", ".join(dict.fromkeys(g["protocol"])) + " / free_generation"}
        for m in ("ES", "GS", "LS"):
            row[f"{m} teacher-forced"] = format_cell(r[f"{m}_mean"], r[f"{m}_ci95"])
            for rule, w in (("exact", "free exact"), ("contains", "free contains")):
                row[f"{m} {w}"] = _seeds_cell(g, f"free_{m}_{rule}")
        before, after = g["ppl_before"].mean(), g["ppl_after"].mean()
        row["perplexity before → after"] = ("not run" if math.isnan(before) else f"{before:.3f} → {after:.3f}")
        for m, label in GENERATION_LABELS:
            row[label] = _seeds_cell(g, m)
        rows.append(row)
    if sub[["GE_mean", "RS_mean"]].notna().any().any():  # only runs on official CounterFact have them
        cols += [label for _, label in GENERATION_LABELS]
    out = pd.DataFrame(rows, columns=cols).set_index("Method")
    out.attrs["note"] = (scale_note(agg, dataset) + " Beyond the paper: teacher-forced scores (the paper's "
                         "protocol) beside free generation of the same prompts (greedy, the model must produce the "
                         "answer; a neighbourhood prompt scores its own true answer, so read free LS against the "
                         "unedited row), and the perplexity of held-out text the statistics never read.")
    return out


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
        reach = {c: float(g[c].mean()) if len(g) else math.nan for c in REACH_COLUMNS}
        rows.append({"variant": key, "label": ABLATION_LABELS[key], **base, **reach,
                     **{f"paper_{m}": v for m, v in zip(METRIC_COLUMNS, paper_table4_values(key))},
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
    # what each variant changed: a region it leaves alone shows 0; "–" where no run recorded it
    for col, label, fmt in (("dW_low", "‖ΔW‖ low", "{:.3g}"), ("dW_high", "‖ΔW‖ high", "{:.3g}"),
                            ("p_target_after", "P(target) after edit", "{:.3f}")):
        data[label] = ["–" if not r["n_seeds"] or math.isnan(r[col]) else fmt.format(r[col])
                       for _, r in fr.iterrows()]
    data["status"] = list(fr["status"])
    out = pd.DataFrame(data, index=pd.Index(list(fr["label"]), name="Variant"))
    out.attrs["note"] = fr.attrs["note"]
    return out


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


def placeholder_table(message: str, title: str = "") -> pd.DataFrame:
    """A one-row table saying why there is nothing to show (keeps a declared DVC output present)."""
    out = pd.DataFrame({"status": [message]}, index=pd.Index([title or "no runs"], name="Table"))
    out.attrs["note"] = message
    return out
