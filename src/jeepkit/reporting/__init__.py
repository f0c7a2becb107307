"""Turn the pipeline's metrics JSONs into the paper's tables and figures, beside the paper's numbers.

Split by concern: `labels` (names and wording), `paper` (the printed numbers, read from paper/jeep.json),
`loading` (metrics files -> validated rows), `tables`, `figures`. This module re-exports their public names,
so notebooks call `reporting.<name>` and tests check the logic without a kernel. Nothing here loads a model.

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
* `protocols_table` -> beyond the paper: teacher-forced ES/GS/LS beside free generation, and held-out
  perplexity before -> after, per method (the unedited row is the free-generation baseline).
* `case_study_frame` -> Table 1: greedy continuations of MEMIT/PMET/JEEP-edited models.
* `sequential_frame` / `sequential_table` / `sequential_figure` -> beyond the paper: the sequential protocol's
  curves (with PRUNE / RECT), drift and spectra, from ``metrics/sequential``.

Every table carries `attrs["note"]` and every figure a title stating the scale: model, data source, edits,
seeds and the interval type ("per-record t-interval" for one seed, "t-interval over seed means" for several).
A missing group gives an empty frame; `placeholder_table` / `placeholder_figure` then keep declared outputs.
"""

from __future__ import annotations

from .labels import (
    ABLATION_LABELS, ABLATION_ORDER, DATASET_LABELS, EDITORS, GROUPS, interval_kind, method_label, METHOD_LABELS,
    METRIC_COLUMNS, NOT_IN_PAPER, NOT_RUN, OURS, OVER_SEEDS, PAPER_REFERENCE, PAPER_TABLE_FOR, PER_RECORD, QUOTED,
    RAN_HERE, TIMING_FIELDS,
)
from .paper import (
    NOT_IMPLEMENTED, PAPER_FIG4_NOTE, PAPER_FIG6_NOTE, paper_methods, paper_rows, PAPER_SCALE, PAPER_TABLE1_NOTE,
    paper_table4, PAPER_TABLE4_NOTE, paper_table4_values,
)
from .loading import (
    datasets_in, load_group, load_metrics, load_scaling, RUN_COLUMNS, SCALING_COLUMNS,
)
from .tables import (
    _combined, _model_text, ablation_frame, aggregate_runs, CASE_PROMPT_TYPES, case_study_frame, comparison_table,
    format_cell, format_paper_rows, placeholder_table, protocols_table, results_table, scale_note, scaling_frame,
    sweep_frame, table4, write_table,
)
from .figures import (
    bar_figure, FIGURE_METRICS, placeholder_figure, scaling_figure, sweep_figure,
)
from .sequential import free_generation_table, sequential_figure, sequential_frame, sequential_table

__all__ = [
    "ABLATION_LABELS", "ABLATION_ORDER", "DATASET_LABELS", "EDITORS", "GROUPS", "interval_kind", "method_label",
    "METHOD_LABELS", "METRIC_COLUMNS", "NOT_IN_PAPER", "NOT_RUN", "OURS", "OVER_SEEDS", "PAPER_REFERENCE",
    "PAPER_TABLE_FOR", "PER_RECORD", "QUOTED", "RAN_HERE", "TIMING_FIELDS", "NOT_IMPLEMENTED", "PAPER_FIG4_NOTE",
    "PAPER_FIG6_NOTE", "paper_methods", "paper_rows", "PAPER_SCALE", "PAPER_TABLE1_NOTE", "paper_table4",
    "PAPER_TABLE4_NOTE", "paper_table4_values", "datasets_in", "load_group", "load_metrics", "load_scaling",
    "RUN_COLUMNS", "SCALING_COLUMNS", "_combined", "_model_text", "ablation_frame", "aggregate_runs",
    "CASE_PROMPT_TYPES", "case_study_frame", "comparison_table", "format_cell", "format_paper_rows",
    "placeholder_table", "protocols_table", "results_table", "scale_note", "scaling_frame", "sweep_frame", "table4",
    "write_table",
    "bar_figure", "FIGURE_METRICS", "placeholder_figure", "scaling_figure", "sweep_figure", "sequential_figure",
    "sequential_frame", "sequential_table", "free_generation_table",
]
