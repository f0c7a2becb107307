"""The KnowEdit table: Edit Succ / Portability / Locality / Fluency per method, our runs beside the
survey's (seed 003, Table 4) and KNE's (seed 004, Tables 1-2) printed numbers, which are data
(`paper/knowedit.json`), not code."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from .data.registry import DATASETS
from .errors import InputError
from .io import read_json

PACKAGE_DATA = ("paper/knowedit.json",)  # read below; jeepkit.lineage makes it a dep of every stage importing this
COLUMNS = {"ES": "Edit Succ", "PS": "Portability", "LS": "Locality", "FL": "Fluency"}
RAN_HERE = "run here"


def paper_rows(dataset_label: str | None = None) -> pd.DataFrame:
    doc = json.loads(resources.files("jeepkit").joinpath(PACKAGE_DATA[0]).read_text(encoding="utf-8"))
    rows = pd.DataFrame(doc["rows"])
    return rows if dataset_label is None else rows[rows["dataset"] == dataset_label]


def paper_value(method_label: str, metric: str, dataset_label: str = "WikiData_counterfact",
                model: str = "Llama-2-7b-chat") -> float:
    """One printed number (the first source that has it: the survey's Table 4, then KNE's tables)."""
    rows = paper_rows(dataset_label)
    hit = rows[(rows["method"] == method_label) & (rows["model"] == model)]
    if hit.empty:
        raise KeyError(f"no printed {metric} for {method_label} on {dataset_label} ({model})")
    return float(hit.iloc[0][metric])


def _cell(summary: dict[str, Any], metric: str, file: str) -> str:
    m = summary.get(metric)
    if not isinstance(m, dict):
        raise InputError("missing metric", file=file, field=f"summary.{metric}")
    if m.get("mean") is None:
        return "–"
    ci = m.get("ci95")
    return f"{m['mean']:.1f}" + ("" if ci is None else f" ± {ci:.1f}")


def our_rows(metrics_root: str | os.PathLike, dataset: str) -> pd.DataFrame:
    """One row per run in metrics/knowedit on `dataset`, in file-name order."""
    root = Path(metrics_root) / "knowedit"
    rows = []
    for f in sorted(root.glob(f"*_{dataset}_s*.json")):
        obj = read_json(f)
        if obj.get("dataset") != dataset:
            continue
        if obj.get("kind") != "knowedit":
            raise InputError(f"a {obj.get('kind')!r} run among KnowEdit runs", file=str(f), field="kind")
        s = obj["summary"]
        rows.append({"method": obj.get("method_label", obj["method"]), "source": RAN_HERE,
                     "model": obj["model"].get("id") or obj["model"]["key"], "n_edits": obj["n_edits"],
                     "protocol": protocol(obj.get("batch_size"), obj["n_edits"]),
                     "seed": obj["seed"], **{label: _cell(s, k, str(f)) for k, label in COLUMNS.items()}})
    return pd.DataFrame(rows, columns=["method", "source", "model", "n_edits", "protocol", "seed",
                                       *COLUMNS.values()])


def protocol(batch_size: Any, n_edits: int) -> str:
    """How a run applied its edits: one at a time with rollback (the survey's), or in batches."""
    b = int(batch_size or n_edits)
    return "single edits" if b == 1 else f"batches of {b}"



def knowedit_table(metrics_root: str | os.PathLike, dataset: str) -> pd.DataFrame:
    """Our rows, then the printed reference rows of the KnowEdit dataset `dataset` stands for."""
    label = DATASETS[dataset].label if dataset in DATASETS else dataset
    ours = our_rows(metrics_root, dataset)
    ref = paper_rows(label.replace(" (KnowEdit)", ""))
    ref_rows = pd.DataFrame({"method": ref["method"], "source": ref["source"], "model": ref["model"],
                             "n_edits": "", "protocol": "single edits", "seed": "",
                             **{lab: ref[k].map(lambda v: f"{v:.2f}") for k, lab in COLUMNS.items()}})
    table = pd.concat([ours, ref_rows], ignore_index=True)
    scale = (f"{len(ours)} runs here, {', '.join(sorted(set(map(str, ours['n_edits']))))} edits each, "
             f"{' / '.join(sorted(set(ours['protocol'])))}" if len(ours) else "no runs here yet")
    table.attrs["note"] = (
        f"KnowEdit metrics on {label} ({scale}; ± = 95% t-interval over records). Edit Succ and Portability are "
        "teacher-forced token accuracies of the new target and of the portability answers; Locality is the share "
        "of locality-answer tokens whose argmax equals the unedited model's; Portability and Locality average "
        "their sub-types' means per record (EasyEdit's KnowEdit script); Fluency is the weighted bi-/tri-gram "
        "entropy (×100) of the rewrite prompt's text sampled as ROME does (top-k 5, 100 tokens with the prompt). "
        "Single edits: each fact edited on the unedited model, weights rolled back before the next, as the survey "
        "and KNE. Reference rows are printed numbers (Llama-2-7b-chat / GPT-J, single edits with EasyEdit), "
        "quoted, not reproduced; they are on another model and data scale, so compare orderings, not values.")
    return table
