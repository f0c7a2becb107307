"""The JEEP paper's printed numbers, read from `paper/jeep.json` (data, not code): Tables 2 and 3 (GPT-J and
LLaMA, with the printed 95% half-widths), Table 4 (ablations), and the scale notes of Tables 1, 4 and Fig. 4, 6."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import pandas as pd

from ..errors import InputError
from .labels import ABLATION_LABELS, METRIC_COLUMNS, QUOTED, RAN_HERE

PACKAGE_DATA = ("paper/jeep.json",)  # read below; jeepkit.lineage makes it a dep of every stage importing this


@functools.lru_cache(maxsize=1)
def _doc() -> dict[str, Any]:
    return json.loads(resources.files("jeepkit").joinpath(PACKAGE_DATA[0]).read_text(encoding="utf-8"))


PAPER_SCALE: str = _doc()["scale"]
NOT_IMPLEMENTED = frozenset(_doc()["not_implemented"])  # rows quoted from the paper, not run here
PAPER_TABLE4_NOTE: str = _doc()["notes"]["table4"]
PAPER_FIG4_NOTE: str = _doc()["notes"]["fig4"]
PAPER_FIG6_NOTE: str = _doc()["notes"]["fig6"]
PAPER_TABLE1_NOTE: str = _doc()["notes"]["table1"]
_TABLE_NAMES = {"table2": "Table 2 (zsRE)", "table3": "Table 3 (Multi-CounterFact)"}


def paper_methods(table: str) -> set[str]:
    """Every method label the paper prints in Table 2 or 3 (any model)."""
    return {r["method"] for rows in _doc()[table].values() for r in rows}


def paper_rows(table: str, model: str) -> pd.DataFrame:
    """The paper's published numbers (Table 2: zsRE, Table 3: MCF) for GPT-J or LLaMA, to compare against.

    Numeric columns Score, ES, GS, LS and the paper's ES/GS/LS 95% half-widths (the paper prints none for
    Score); `status` marks MEND and MALMEN as quoted, since this package does not implement them.
    """
    doc = _doc()
    tables = sorted(_TABLE_NAMES)
    if table not in tables or model not in doc[table]:
        models = sorted({m for t in tables for m in doc[t]})
        raise InputError(f"unknown paper table/model {(table, model)}; tables {tables}, models {models}",
                         field="table" if table not in tables else "model")
    rows = [{"Method": r["method"], **{k: r[k] for k in ("Score", "ES", "GS", "LS", "ES_ci95", "GS_ci95", "LS_ci95")},
             "status": QUOTED if r["method"] in NOT_IMPLEMENTED else RAN_HERE} for r in doc[table][model]]
    out = pd.DataFrame(rows).set_index("Method")
    out.attrs["note"] = f"Paper {_TABLE_NAMES[table]}, {model}, {PAPER_SCALE}. Score has no interval in the paper."
    return out


def paper_table4_values(variant: str) -> tuple[float, ...]:
    """(Score, ES, GS, LS) the paper prints for one Table 4 variant (`full` = JEEP)."""
    row = next((r for r in _doc()["table4"] if r["variant"] == variant), None)
    if row is None:
        raise KeyError(f"no Table 4 row for variant {variant!r}")
    return tuple(float(row[m]) for m in METRIC_COLUMNS)


def paper_table4() -> pd.DataFrame:
    """The paper's Table 4 as numbers (index: variant key, column `label` = the paper's row label)."""
    out = pd.DataFrame([{"variant": r["variant"], "label": ABLATION_LABELS[r["variant"]],
                         **{m: float(r[m]) for m in METRIC_COLUMNS}} for r in _doc()["table4"]]).set_index("variant")
    out.attrs["note"] = PAPER_TABLE4_NOTE
    return out
