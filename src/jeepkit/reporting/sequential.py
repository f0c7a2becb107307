"""The sequential-editing report (beyond the paper): curves over the batches and the final table.

Reads `metrics/sequential/{method}-{regulariser}_{dataset}_s{seed}.json`. One row per (run, checkpoint,
variant): variant "—" is the model as edited, "PRUNE" the same checkpoint with ΣΔW restrained (scored
beside it, never carried on), "RECT" a trajectory whose every batch was sparsified.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io import read_json, save_figure
from .figures import _new_figure, _wrap, placeholder_figure
from .labels import DATASET_LABELS, method_label
from .tables import format_cell

METRICS = ("Score", "ES", "GS", "LS")
VARIANT_LABELS = {"none": "—", "rect": "RECT", "prune": "PRUNE"}
STYLES = {"—": "-", "PRUNE": "--", "RECT": ":"}
COLORS = {"memit": "tab:blue", "pmet": "tab:orange", "jeep": "tab:red", "alphaedit": "tab:green",
          "rome": "tab:purple", "ft_wd": "tab:brown", "kne": "tab:gray"}


def _mean(summary: dict[str, Any], metric: str, what: str = "mean") -> float:
    v = (summary.get(metric) or {}).get(what)
    return math.nan if v is None else float(v)


def _drift_change(drift: dict[str, Any] | None) -> dict[str, float]:
    """The log-perplexity change from before editing and its paired bootstrap interval (NaN where not recorded)."""
    ch = (drift or {}).get("change")
    if not isinstance(ch, dict):
        return {"log_ppl_change": math.nan, "log_ppl_change_lo": math.nan, "log_ppl_change_hi": math.nan}
    lo, hi = ch["ci95"]
    return {"log_ppl_change": float(ch["log_ppl_change"]), "log_ppl_change_lo": float(lo),
            "log_ppl_change_hi": float(hi)}


def _row(m: dict[str, Any], point: dict[str, Any], variant: str, block: dict[str, Any], file: str) -> dict[str, Any]:
    summ = block["summary"]
    spectra = block.get("spectra") or {}
    sig = [v["sigma_max_delta"] for v in spectra.values() if v.get("sigma_max_delta") is not None]
    sig_w = [v["sigma_max_w"] for v in spectra.values() if v.get("sigma_max_w") is not None]
    kap = [v["kappa_edited"] for v in spectra.values() if v.get("kappa_edited") is not None]
    row = {"method": m["method"], "label": method_label(m["method"]), "variant": variant, "seed": int(m["seed"]),
           "batch": int(point["batch"]), "edits": int(point["edits"]), "batch_size": int(m["protocol"]["batch"]),
           "total": int(m["protocol"]["total"]),
           "perplexity": float(block["drift"]["perplexity"]) if "drift" in block else math.nan,
           **_drift_change(block.get("drift")),
           "perplexity_before": float(m["drift_before"]["perplexity"]),
           "first_batch_Score": _mean(summ["first_batch"], "Score"),
           "first_batch_Score_ci95": _mean(summ["first_batch"], "Score", "ci95"),
           "sigma_max_delta": max(sig) if sig else math.nan, "sigma_max_w": max(sig_w) if sig_w else math.nan,
           "kappa_edited": max(kap) if kap else math.nan, "model": m["model"].get("key"),
           "data_source": m["data"].get("source"), "file": file}
    for met in METRICS:
        row[f"{met}_mean"] = _mean(summ["all_so_far"], met)
        row[f"{met}_ci95"] = _mean(summ["all_so_far"], met, "ci95")
    return row


def sequential_frame(metrics_root: str | os.PathLike, dataset: str) -> pd.DataFrame:
    """One row per (method, variant, seed, checkpoint), methods in file-name order."""
    rows = []
    for f in sorted((Path(metrics_root) / "sequential").glob(f"*_{dataset}_s*.json")):
        m = read_json(f)
        base = VARIANT_LABELS[m["protocol"]["regulariser"]]
        for point in m["checkpoints"]:
            rows.append(_row(m, point, base, point, str(f)))
            if "prune" in point and base == "—":
                rows.append(_row(m, point, "PRUNE", point["prune"], str(f)))
    out = pd.DataFrame(rows)
    if out.empty:
        out.attrs["note"] = f"no sequential runs on {dataset} in {metrics_root}/sequential"
        return out
    total, batch = int(out["total"].max()), int(out["batch_size"].max())
    seeds = sorted(set(out["seed"]))
    out.attrs["note"] = (f"Sequential editing (beyond the paper): {total} {DATASET_LABELS.get(dataset, dataset)} "
                         f"edits in batches of {batch}, each batch on the model carrying the earlier ones; "
                         f"metrics over every fact edited so far (teacher-forced probability comparison, "
                         f"per-record 95% t-interval); model {out['model'].iloc[0]}, data "
                         f"{out['data_source'].iloc[0]}, seed(s) {', '.join(map(str, seeds))}. PRUNE: ΣΔW "
                         "restrained and scored at the checkpoint, not carried on; RECT: every batch's ΔW "
                         "sparsified before the next.")
    return out


def sequential_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The last checkpoint of every run: Score / ES / GS / LS, the first batch's Score, drift and spectra."""
    if frame.empty:
        return pd.DataFrame(columns=["Method", "Variant", "Edits"])
    last = frame[frame["edits"] == frame.groupby(["method", "variant", "seed"])["edits"].transform("max")]
    rows = []
    for _, r in last.iterrows():
        first = frame[(frame["method"] == r["method"]) & (frame["variant"] == r["variant"])
                      & (frame["seed"] == r["seed"]) & (frame["batch"] == 1)]
        rows.append({"Method": r["label"], "Variant": r["variant"], "Seed": int(r["seed"]), "Edits": int(r["edits"]),
                     **{met: format_cell(r[f"{met}_mean"], r[f"{met}_ci95"]) for met in METRICS},
                     "First batch Score (after batch 1 → now)":
                         f"{float(first['first_batch_Score'].iloc[0]):.1f} → {r['first_batch_Score']:.1f}"
                         if not first.empty else "",
                     "Perplexity (before → now)": f"{r['perplexity_before']:.2f} → {r['perplexity']:.2f}",
                     "max σ_max(ΣΔW)": f"{r['sigma_max_delta']:.3g}", "max σ_max(W)": f"{r['sigma_max_w']:.3g}",
                     "max κ(W+ΣΔW)": f"{r['kappa_edited']:.4g}"})
    out = pd.DataFrame(rows)
    out.index = pd.Index(range(1, len(out) + 1), name="#")
    out.attrs["note"] = frame.attrs.get("note", "")
    return out


def free_generation_table(metrics_root: str | os.PathLike, dataset: str) -> pd.DataFrame:
    """Teacher-forced vs free-generation ES / GS / LS per method, after the first batch (the one-batch model)
    and after the last; each cell "mean ± ci95" in %, every column named with its protocol."""
    rows = []
    for f in sorted((Path(metrics_root) / "sequential").glob(f"*_{dataset}_s*.json")):
        m = read_json(f)
        for point in m["checkpoints"]:
            fg = point.get("free_generation")
            if not fg:
                continue
            tf, proto = point["summary"]["all_so_far"], point["summary"].get("protocol", "teacher_forced")
            row = {"Method": method_label(m["method"]), "Variant": VARIANT_LABELS[m["protocol"]["regulariser"]],
                   "Seed": int(m["seed"]), "Edits": int(point["edits"]), "Batches": int(point["batch"])}
            for met in ("ES", "GS", "LS"):
                row[f"{met} {proto}"] = format_cell(tf[met]["mean"], tf[met]["ci95"])
                for rule in ("exact", "contains"):
                    c = fg[met][rule]
                    row[f"{met} free_generation ({rule})"] = format_cell(c["mean"], c["ci95"])
            rows.append(row)
    out = pd.DataFrame(rows)
    if not out.empty:
        out.index = pd.Index(range(1, len(out) + 1), name="#")
    out.attrs["note"] = ("Teacher-forced scores compare the probabilities of given continuations; free-generation "
                         "scores ask the model to produce the answer (greedy, at most 8 new tokens): 'exact' = the "
                         "continuation begins with it, 'contains' = it occurs anywhere (case-insensitive). ES / GS "
                         "score the new target on the rewrite / paraphrase prompts, LS each neighbourhood prompt's own "
                         "answer. One-batch model: after batch 1.")
    return out


def sequential_figure(frame: pd.DataFrame, path_png: str | os.PathLike) -> tuple[Path, Path]:
    """Score / ES / GS / LS over every fact edited so far, the first batch's Score, held-out perplexity,
    σ_max(ΣΔW) and κ(W + ΣΔW) against the number of sequential edits; per method, with PRUNE dashed and
    RECT dotted. PNG + PDF; an empty frame gives a placeholder."""
    note = frame.attrs.get("note", "")
    if frame.empty:
        return placeholder_figure(path_png, "Sequential editing", note or "no runs")
    fig = _new_figure((13.0, 6.8))
    axes = fig.subplots(2, 4, sharex=True)
    panels = [(f"{m}_mean", f"{m}, all facts so far (%)") for m in METRICS] + [
        ("first_batch_Score", "Score on the first batch's facts (%)"), ("perplexity", "held-out perplexity"),
        ("sigma_max_delta", "max σ_max(ΣΔW) over edited layers"), ("kappa_edited", "max κ(W + ΣΔW)")]
    edits = sorted(set(frame["edits"].astype(int)))
    for ax, (col, title) in zip(axes.flat, panels):
        for (method, variant), g in frame.groupby(["method", "variant"], sort=False):
            g = g.groupby("edits", as_index=False)[col].mean().sort_values("edits").dropna()
            ax.plot(g["edits"], g[col], STYLES.get(variant, "-"), marker="o", ms=3,
                    color=COLORS.get(str(method)),
                    label=method_label(str(method)) + ("" if variant == "—" else f" + {variant}"))
        if col.endswith("_mean") or col == "first_batch_Score":
            ax.set_ylim(0, 105)
        vals = frame[col].to_numpy(dtype=float)
        if col in ("sigma_max_delta", "kappa_edited") and np.nanmin(vals) > 0 and np.nanmax(vals) > 20 * np.nanmin(vals):
            ax.set_yscale("log")  # σ_max grows by orders of magnitude in long runs (PRUNE Table 1: 7 → 935)
        if col == "sigma_max_delta":
            w = float(np.nanmax(frame["sigma_max_w"].to_numpy(dtype=float)))
            ax.axhline(w, color="k", lw=0.8, ls="-.", label="max σ_max(W) (PRUNE's threshold)")
        if col == "perplexity":
            before = float(frame["perplexity_before"].iloc[0])
            ax.axhline(before, color="k", lw=0.8, ls="-.", label="unedited")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(edits, [str(e) for e in edits], fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("sequential edits")
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncols=min(6, len(handles)),
               frameon=False, fontsize=8)
    fig.suptitle(_wrap(note, 170), fontsize=7.5)
    fig.tight_layout(rect=(0, 0.08, 1, 0.92))
    return save_figure(fig, path_png)
