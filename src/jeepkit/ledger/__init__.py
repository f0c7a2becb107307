"""The claims ledger: every quantitative claim of the JEEP paper next to what this package measured.

Split by concern: `rules` (verdicts, comparability, tolerance), `claims` (one builder per artifact, and
`build_ledger`), `render` (Markdown / JSON, the report index). The names below are re-exported.

`build_ledger(metrics_root, probe_dir)` returns one dict per claim:

* ``id``, ``artifact`` (Table 1-4, Fig. 2/4/6, App. D), ``kind``:
  ``value`` (a printed cell), ``ordering`` (one method/variant/setting above another), ``shape`` (how a
  probe curve moves across layers) or ``case`` (the qualitative Table 1 example);
* ``claim`` (text), ``paper_value`` (number or text), ``paper_interval`` (95% half-width the paper prints,
  else None);
* ``reproduced_value`` / ``reproduced_interval`` (our number and its 95% half-width; for orderings the margin
  and the half-width sqrt(ci1² + ci2²) of a difference of independent estimates), ``reproduced`` (text);
* ``verdict`` ∈ {reproduced, contradicted, undecided, not reproduced, not comparable, not testable} and
  ``reason``;
  ``scale`` (our model, data, edits, seeds, interval type) and ``sources`` (files read).

Rules (also in ``RULES``, printed at the top of the ledger):

* A printed cell (``value``) is compared only when our run has the paper's model (GPT-J / LLaMA-7B), the
  paper's dataset (zsRE; Multi-CounterFact for Table 3/4), data from the official release (or a mirror of it)
  and 10,000 edits in one batch; otherwise it is **not comparable** and the reason lists what differs. When
  comparable it is **reproduced** if |ours - paper| <= ours_ci95 + paper_ci95 + 0.05 (the two 95% intervals
  overlap, allowing for the paper's 1-decimal rounding), with at least 0.5 points of tolerance.
* An ``ordering``, ``shape`` or ``case`` claim is evaluated on our own numbers whatever the scale
  (**reproduced** / **not reproduced** on the point estimates; ties count as "not above" for "best" claims
  and as holding for "≥" claims); the reason says whether the 95% interval of the difference excludes 0
  and at what scale the claim was checked. Missing runs make it **not comparable**.
"""

from __future__ import annotations

from .claims import KNOWEDIT_CLAIMS, _knowedit, build_ledger
from .render import headline, ledger_markdown, write_index, write_ledger
from .rules import (CONTRADICTED, MIN_TOL, NOT_COMPARABLE, NOT_REPRODUCED, NOT_TESTABLE, PAPER_EDITORS, PAPER_MODELS, PAPER_N_EDITS,
                    PAPER_SEEDS, REPRODUCED, ROUNDING, RULES, SINGLE_REGION, UNDECIDED, VERDICTS, comparability, counts,
                    decide, decide_all, entry)

__all__ = ["KNOWEDIT_CLAIMS", "_knowedit", "build_ledger", "headline", "ledger_markdown", "write_index", "write_ledger",
           "CONTRADICTED", "MIN_TOL", "NOT_COMPARABLE", "NOT_REPRODUCED", "NOT_TESTABLE", "PAPER_EDITORS", "PAPER_MODELS",
           "PAPER_N_EDITS", "PAPER_SEEDS", "REPRODUCED", "ROUNDING", "RULES", "SINGLE_REGION", "UNDECIDED", "VERDICTS",
           "comparability", "counts", "decide", "decide_all", "entry"]
