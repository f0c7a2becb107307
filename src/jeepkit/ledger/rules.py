"""The ledger's rules: verdict names, what makes a printed cell comparable, the tolerance, and the helpers
every claim is built with (`entry`, margins of differences, scale text). `RULES` is printed atop the ledger."""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping


from .. import reporting as rp


REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"  # an ordering or shape whose interval excludes 0 against the paper's direction
UNDECIDED = "undecided"  # an ordering or shape whose interval includes 0: this scale cannot tell
NOT_REPRODUCED = "not reproduced"  # a comparable printed cell outside the tolerance; a one-record case claim
NOT_COMPARABLE = "not comparable"
NOT_TESTABLE = "not testable"  # our data cannot tell the two sides apart by construction (the reason says why)
VERDICTS = (REPRODUCED, CONTRADICTED, UNDECIDED, NOT_REPRODUCED, NOT_COMPARABLE, NOT_TESTABLE)

PAPER_MODELS: Mapping[str, str] = {"gptj": "GPT-J", "llama7b": "LLaMA"}  # our model.key -> the paper's model
_PAPER_MODEL_IDS = {"GPT-J": "gpt-j-6b", "LLaMA": "llama-7b"}  # substring an HF id must contain
PAPER_N_EDITS = 10_000
PAPER_SEEDS = 3
ROUNDING = 0.05
MIN_TOL = 0.5
PAPER_EDITORS = ("ft_wd", "rome", "memit", "pmet", "jeep")  # the paper's editors that this package runs
SINGLE_REGION = ("wo_low", "wo_high", "wo_step2", "wo_step3")

RULES = (
    "Printed cells (kind 'value') are compared only when our run has the paper's model (GPT-J / LLaMA-7B), "
    "the paper's dataset (zsRE; Multi-CounterFact for Tables 3-4), official (or mirrored) data and 10,000 edits "
    "in one batch; otherwise they are 'not comparable' and the reason lists what differs. When comparable, a "
    f"cell is 'reproduced' if |ours - paper| <= ours_ci95 + paper_ci95 + {ROUNDING} (rounding), at least "
    f"{MIN_TOL} points.",
    "Ordering and shape claims are evaluated on our own numbers at our scale and decided by the 95% interval of "
    "the difference they turn on: 'reproduced' when it excludes 0 in the paper's direction, 'contradicted' when "
    "it excludes 0 the other way, 'undecided' when it includes 0 (a claim on several differences is reproduced "
    "only if every one is, contradicted if any one is). Case claims (one record) are 'reproduced' / 'not "
    "reproduced'; a degenerate continuation (one word repeated) does not count as producing its target. "
    "Missing runs make a claim 'not comparable'. A claim our data cannot decide by construction (two methods "
    "whose objectives coincide on it, e.g. FT-L and FT-M when every target is one token) is 'not testable', "
    "and the reason says why.",
    "Ordering margins carry the half-width sqrt(ci1^2 + ci2^2) of a difference of independent estimates. "
    "Probe shape claims use per-record differences between two layers, with a t-interval over records.",
)


def _f(x: Any) -> float | None:
    """JSON-safe float (NaN/None -> None)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) or math.isinf(v) else v


def _pm(value: float | None, ci: float | None, digits: int = 1) -> str:
    if _f(value) is None:
        return "n/a"
    return f"{value:.{digits}f} ± {ci:.{digits}f}" if _f(ci) is not None else f"{value:.{digits}f} ± n/a"


def _diff_ci(a: float | None, b: float | None) -> float | None:
    a, b = _f(a), _f(b)
    if a is None or b is None:
        return None
    return math.sqrt(a * a + b * b)


def _separated(d: float, ci: float | None) -> str:
    if ci is None:
        return "no interval for the difference"
    if abs(d) > ci:
        return "the 95% interval of the difference excludes 0"
    return "the 95% interval of the difference includes 0: undecided at this scale"


def entry(id: str, artifact: str, kind: str, claim: str, paper_value: Any, verdict: str, reason: str, *,
          paper_interval: float | None = None, value: float | None = None, interval: float | None = None,
          reproduced: str | None = None, scale: str = "", sources: Iterable[str] = ()) -> dict[str, Any]:
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, not {verdict!r}")
    value, interval = _f(value), _f(interval)
    if reproduced is None:
        reproduced = _pm(value, interval) if value is not None else "n/a"
    return {"id": id, "artifact": artifact, "kind": kind, "claim": claim,
            "paper_value": _f(paper_value) if isinstance(paper_value, (int, float)) else paper_value,
            "paper_interval": _f(paper_interval), "reproduced_value": value, "reproduced_interval": interval,
            "reproduced": reproduced, "verdict": verdict, "reason": reason, "scale": scale,
            "sources": sorted(set(sources))}


def decide(d: float | None, ci: float | None) -> str:
    """Three-valued verdict of one difference `d` oriented so that > 0 is the paper's direction."""
    d, ci = _f(d), _f(ci)
    if d is None:
        return NOT_COMPARABLE
    if ci is None:
        return UNDECIDED
    return REPRODUCED if d - ci > 0 else CONTRADICTED if d + ci < 0 else UNDECIDED


def decide_all(verdicts: Iterable[str]) -> str:
    """A claim on several differences: reproduced if every one is, contradicted if any one is, else undecided."""
    vs = list(verdicts)
    if not vs or NOT_COMPARABLE in vs:
        return NOT_COMPARABLE
    if CONTRADICTED in vs:
        return CONTRADICTED
    return REPRODUCED if all(v == REPRODUCED for v in vs) else UNDECIDED


def _verdict(holds: bool | None) -> str:
    return NOT_COMPARABLE if holds is None else REPRODUCED if holds else NOT_REPRODUCED


def _scale(row: Mapping[str, Any], dataset: str) -> str:
    if not row or not int(row.get("n_seeds", 0) or 0):
        return ""
    batch = row.get("batch_size")
    b = f" (batch {int(batch)})" if batch and int(batch) != int(row["n_edits"]) else " (one batch)"
    return (f"{rp._model_text(row)}, {row['data_source']} {rp.DATASET_LABELS.get(dataset, dataset)}, "
            f"{int(row['n_edits'])} edits{b}, seeds {row['seeds']}, {rp.interval_kind(int(row['n_seeds']))}")


def _files(row: Mapping[str, Any] | None) -> list[str]:
    if not row or not row.get("files"):
        return []
    return [f for f in str(row["files"]).split(", ") if f]


def comparability(row: Mapping[str, Any], paper_model: str, paper_dataset: str, dataset: str) -> list[str]:
    """What keeps our run from being compared with the paper's printed cell (empty list: comparable)."""
    diffs = []
    key, mid = str(row.get("model", "")), str(row.get("model_id", "") or "")
    want = _PAPER_MODEL_IDS[paper_model]
    if PAPER_MODELS.get(key) != paper_model or (mid and want not in mid.lower()):
        diffs.append(f"model {key}{f' ({mid})' if mid else ''}, the paper's is {paper_model}")
    if dataset != paper_dataset:
        if paper_dataset == "mcf" and dataset == "counterfact":
            diffs.append("CounterFact records, the paper's are Multi-CounterFact")
        else:
            diffs.append(f"dataset {dataset}, the paper's is {paper_dataset}")
    sources = {s.strip() for s in str(row.get("data_source", "")).split(",") if s.strip()}
    bad = sorted(sources - {"official", "mirror"})
    if bad:
        diffs.append(f"{'/'.join(bad)} data, not the official release")
    n = int(row.get("n_edits", 0) or 0)
    if n != PAPER_N_EDITS:
        diffs.append(f"{n} edits, the paper's are {PAPER_N_EDITS:,}")
    b = row.get("batch_size")
    if b and int(b) != n:
        diffs.append(f"edited in batches of {int(b)}, the paper in one batch")
    return diffs


def _value_entry(id: str, artifact: str, claim: str, paper: float, paper_ci: float | None, row: Mapping | None,
                 metric: str, paper_model: str, paper_dataset: str, dataset: str, missing: str) -> dict[str, Any]:
    if not row or not int(row.get("n_seeds", 0) or 0):
        return entry(id, artifact, "value", claim, paper, NOT_COMPARABLE, f"no run of ours ({missing})",
                     paper_interval=paper_ci)
    val, ci = _f(row[f"{metric}_mean"]), _f(row[f"{metric}_ci95"])
    common = dict(paper_interval=paper_ci, value=val, interval=ci, scale=_scale(row, dataset), sources=_files(row))
    diffs = comparability(row, paper_model, paper_dataset, dataset)
    if diffs:
        return entry(id, artifact, "value", claim, paper, NOT_COMPARABLE, "; ".join(diffs), **common)
    if val is None:
        return entry(id, artifact, "value", claim, paper, NOT_COMPARABLE, "our value is undefined", **common)
    tol = max(MIN_TOL, (ci or 0.0) + (paper_ci or 0.0) + ROUNDING)
    d = val - paper
    seeds = int(row["n_seeds"])
    extra = "" if seeds >= PAPER_SEEDS else f"; {seeds} seed(s), the paper averages {PAPER_SEEDS}"
    ok = abs(d) <= tol
    return entry(id, artifact, "value", claim, paper, REPRODUCED if ok else NOT_REPRODUCED,
                 f"same model, data and scale; ours - paper = {d:+.1f} ({'within' if ok else 'outside'} the "
                 f"tolerance {tol:.2f}){extra}", **common)


def counts(entries: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    out = {v: 0 for v in VERDICTS}
    for e in entries:
        out[e["verdict"]] += 1
    return out
