"""Names every table and figure uses: metric columns, method and dataset labels in the paper's order, the
status and interval wording. Labels only; the paper's numbers are in `paper.py` (read from paper/jeep.json)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Iterable, Mapping

from ..data.registry import DATASETS


METRIC_COLUMNS = ("Score", "ES", "GS", "LS")  # the paper's column order


TIMING_FIELDS = ("target_seconds", "edit_seconds", "eval_seconds")

# Method key in params/metrics -> its row label, in the paper's row order. The method registry
# (editing/run.METHODS, each SPEC.label) is the source; this copy exists because importing the editors
# (torch, transformers) costs every report notebook ~3 s, and test_method_contract fails unless the two agree.
METHOD_LABELS: Mapping[str, str] = MappingProxyType({
    "none": "Unedited", "ft_wd": "FT-WD", "ft_l": "FT-L", "ft_m": "FT-M", "rome": "ROME", "memit": "MEMIT",
    "pmet": "PMET", "alphaedit": "AlphaEdit", "jeep": "JEEP", "kne": "KNE",
})
# Dataset key -> its label, and the paper table each is compared against (Table 2 is zsRE, Table 3 is
# Multi-CounterFact): read from the dataset registry.
DATASET_LABELS: Mapping[str, str] = MappingProxyType({name: d.label for name, d in DATASETS.items()})
PAPER_TABLE_FOR: Mapping[str, str] = MappingProxyType({name: d.paper_table for name, d in DATASETS.items()
                                                       if d.paper_table})

QUOTED = "quoted, not reproduced"
# Our rows are runs of this package; whether they reproduce the paper is the ledger's verdict, not the table's.
RAN_HERE = "run here (verdict: ledger)"


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _method_order(methods: Iterable[str]) -> list[str]:
    """The paper's order for known methods, then the rest by name."""
    known = list(METHOD_LABELS)
    ms = set(methods)
    return [m for m in known if m in ms] + sorted(ms - set(known))


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


def interval_kind(n_seeds: int) -> str:
    """The interval wording every table and figure uses: one seed -> per-record, several -> over seed means."""
    if n_seeds <= 1:
        return f"{PER_RECORD} (Score: percentile bootstrap over records)"
    return f"{OVER_SEEDS} ({n_seeds} seeds)"


def _intervals_text(n_seeds: Iterable[int]) -> str:
    kinds = list(dict.fromkeys(interval_kind(int(n)) for n in n_seeds if int(n) > 0))
    return "; ".join(kinds) if kinds else "none (no runs)"
