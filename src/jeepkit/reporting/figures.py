"""The figures: bars per method, Fig. 4 (scaling) and Fig. 6 (γ* sweep) curves with 95% bands, placeholders
for declared outputs without runs. Bare matplotlib Figures on the Agg canvas (no pyplot, no global state)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import save_figure
from .labels import DATASET_LABELS, method_label
from .tables import aggregate_runs


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
        err = _clipped_err(means, agg[f"{m}_ci95"].to_numpy(dtype=float))
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


def _clipped_err(y: np.ndarray, ci: np.ndarray) -> np.ndarray:
    """Error bars of half-width `ci` cut at 0 and 100 (a percentage's interval cannot leave [0, 100])."""
    y, ci = np.nan_to_num(y, nan=0.0), np.nan_to_num(ci, nan=0.0)
    return np.vstack([np.minimum(ci, np.clip(y, 0, 100)), np.minimum(ci, np.clip(100 - y, 0, 100))])


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
    fig = _new_figure((10.0, 7.2))
    sizes = sorted(set(frame["m"].astype(int)))
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
        ax.set_xticks(sizes, [str(v) for v in sizes], fontsize=7)  # the sizes run, not "2×10⁰" minor labels
        ax.minorticks_off()
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
        ci = frame[f"{met}_ci95"].to_numpy(dtype=float)
        ax.errorbar(x, y, yerr=_clipped_err(y, ci), fmt="-o", ms=4, capsize=3, color="tab:red")
        ax.set_ylim(0, 105)
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
