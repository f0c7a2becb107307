"""Aggregate per-case evaluation numbers into the paper's ES / GS / LS / Score with 95% intervals.

Pure functions on numbers: nothing here touches a model. The per-case dicts are the ones
`jeepkit.evaluation.evaluate_cases` returns.

Aggregation (spec §7.2-7.4):

* CounterFact / MCF: per record, ES is the rewrite prompt's success (0/1), GS the mean success over
  its paraphrase prompts, LS the mean success over its locality prompts; the table value is the mean
  over records, x100. The official `parse_results` pools successes over all prompts instead; with the
  fixed 1 / 2 / 10 prompts per MCF record the two are identical. With a varying number of prompts per
  record this macro mean (MEMIT's convention) weights records, not prompts, equally.
* zsRE: per record, the teacher-forced token accuracy of each prompt; with several paraphrase or
  locality prompts the record's value is the mean of the per-prompt accuracies. Then the mean over
  records, x100.
* A record without paraphrases (or locality prompts) contributes nothing to GS (LS); each metric's
  `n` says how many records it averaged.
* Score is the harmonic mean of the three metric means (not the mean of per-record harmonic means).

Intervals:

* ES/GS/LS "ci95": the half-width of a t-interval over the per-record values (spec §7.4 choice (a)).
  For 0/1 successes this is the usual normal-theory interval for a proportion.
* Score "ci95": half the width of a percentile bootstrap interval (records resampled with
  replacement, fixed seed, so the number is reproducible). Score is a non-linear function of three
  correlated means, so no closed-form t-interval applies.
* `summarise_seeds`: a t-interval over the per-seed means (spec §7.4 choice (b)).
* An interval that is undefined (fewer than 2 values) is reported as None, so summaries stay valid
  JSON (jeepkit writes JSON with allow_nan=False).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .data.kinds import KINDS
from .errors import InputError

METRICS = ("ES", "GS", "LS")


def harmonic_mean(values: Iterable[float]) -> float:
    """Harmonic mean; 0 if any value is 0 (the limit), so a failed metric zeroes the Score."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("harmonic mean of no values")
    if any(math.isnan(v) for v in vals):
        return math.nan
    if any(v < 0 for v in vals):
        raise ValueError(f"harmonic mean needs non-negative values, got {vals}")
    if any(v == 0 for v in vals):
        return 0.0
    return len(vals) / sum(1.0 / v for v in vals)


def score(es: float, gs: float, ls: float) -> float:
    """The paper's Score: harmonic mean of efficacy, generalisation and locality (all in %)."""
    return harmonic_mean((es, gs, ls))


def _clean(values: Iterable[float]) -> np.ndarray:
    return np.asarray([float(v) for v in values], dtype=np.float64)


def t_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the Student-t interval t_{(1+c)/2, n-1} * s / sqrt(n).

    n = 0 gives (nan, nan); n = 1 gives (value, nan) because the spread is unknown (this mirrors the
    official code's NaN for a single chunk). Identical values give half-width 0.
    """
    from scipy import stats  # here, not at import: scipy.stats costs every stage half a second of start-up

    return _interval(values, lambda n: float(stats.t.ppf((1.0 + confidence) / 2.0, df=n - 1)))


def normal_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) with the normal quantile z_{(1+c)/2} * s / sqrt(n); used for Fig. 4 bands.

    Same conventions as `t_interval` for n < 2 and constant values.
    """
    from scipy import stats

    return _interval(values, lambda n: float(stats.norm.ppf((1.0 + confidence) / 2.0)))


def _interval(values: Iterable[float], quantile: Callable[[int], float]) -> tuple[float, float]:
    """Shared conventions of both intervals: half-width = quantile(n) * s / sqrt(n)."""
    x = _clean(values)
    n = x.size
    if n == 0:
        return math.nan, math.nan
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan
    sd = float(x.std(ddof=1))
    if sd == 0.0:
        return mean, 0.0
    return mean, quantile(n) * sd / math.sqrt(n)


def _mean_or_none(xs: Sequence[float]) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


def _kind(kind: Any, record: Any = None):
    if kind not in KINDS:
        raise InputError(f"unknown kind {kind!r}", record=record, field="kind")
    return KINDS[kind]


def record_scores(case: dict[str, Any]) -> dict[str, float | None]:
    """One record's value of each metric of its kind, as a fraction in [0, 1] (None without such prompts).

    CounterFact / zsRE: ES, GS, LS, each the mean over the set's prompts; KnowEdit adds PS (portability) and FL
    (fluency: n-gram entropy ×100 of the sampled text, not a fraction), and its PS and LS are the mean over
    sub-types (Reasoning, Subject_Aliasing, …) of each sub-type's mean, as EasyEdit's KnowEdit script."""
    spec = _kind(case.get("kind"), case.get("case_id"))
    out: dict[str, float | None] = {}
    for ps in spec.probe_sets:
        sc = ps.scoring
        if sc.generated:
            fl = case.get("fluency")
            out[ps.metric] = None if fl is None else float(fl[sc.value]) / sc.scale
            continue
        got = case.get(ps.field, [])
        if ps.field == "rewrite":
            out[ps.metric] = float(got[sc.value]) / sc.scale
        elif spec.subtype_mean:
            groups: dict[Any, list[float]] = {}
            for p in got:
                groups.setdefault(p.get("group"), []).append(float(p[sc.value]) / sc.scale)
            out[ps.metric] = _mean_or_none([float(np.mean(v)) for v in groups.values()])
        else:
            out[ps.metric] = _mean_or_none([float(p[sc.value]) / sc.scale for p in got])
    return out


def _none_if_nan(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _bootstrap_score(table: np.ndarray, confidence: float, n_boot: int, seed: int) -> float | None:
    """Half-width of the percentile bootstrap interval of hmean(column means) over resampled rows."""
    n = table.shape[0]
    if n < 2 or n_boot < 2:
        return None
    rng = np.random.default_rng(seed)
    scores = []
    chunk = max(1, min(n_boot, 2_000_000 // max(1, n * table.shape[1])))
    done = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column in a tiny resample
        while done < n_boot:
            b = min(chunk, n_boot - done)
            idx = rng.integers(0, n, size=(b, n))
            means = np.nanmean(table[idx], axis=1)  # (b, 3)
            for row in means:
                if not np.isnan(row).any():
                    scores.append(harmonic_mean(row))
            done += b
    if len(scores) < 2:
        return None
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(np.asarray(scores), [alpha, 1.0 - alpha])
    return float(hi - lo) / 2.0


def summarise(per_case: list[dict[str, Any]], kind: str, *, confidence: float = 0.95,
              n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """ES/GS/LS/Score in % with per-record 95% intervals for one run (see the module docstring).

    Returns {"ES": {"mean", "ci95", "n", "protocol"}, "GS": ..., "LS": ..., "Score": ..., "kind", "n_records",
    "interval"}; "mean"/"ci95" are None when undefined; "protocol" is the scorer's tag (data/kinds.py).
    """
    spec = _kind(kind)
    metrics = spec.metrics
    per_record = []
    for c in per_case:
        if c.get("kind") != kind:
            raise InputError(f"record of kind {c.get('kind')!r} in a {kind!r} summary",
                             record=c.get("case_id"), field="kind")
        per_record.append(record_scores(c))
    out: dict[str, Any] = {"kind": kind, "n_records": len(per_record)}
    table = np.full((len(per_record), len(spec.score_of)), np.nan)
    for m in metrics:
        vals = [100.0 * r[m] for r in per_record if r[m] is not None]
        if m in spec.score_of:
            j = spec.score_of.index(m)
            for i, r in enumerate(per_record):
                if r[m] is not None:
                    table[i, j] = 100.0 * r[m]
        mean, hw = t_interval(vals, confidence)
        out[m] = {"mean": _none_if_nan(mean), "ci95": _none_if_nan(hw), "n": len(vals), "protocol": spec.protocol(m)}
    means = [out[m]["mean"] for m in spec.score_of]
    if any(v is None for v in means):
        out["Score"] = {"mean": None, "ci95": None, "n": len(per_record)}
    else:
        out["Score"] = {"mean": score(*means), "ci95": _bootstrap_score(table, confidence, n_boot, seed),
                        "n": len(per_record)}
    out["Score"]["protocol"] = spec.protocol("Score")
    out["interval"] = {
        "/".join(metrics): f"t-interval over per-record values, confidence {confidence}",
        "Score": f"percentile bootstrap over records ({n_boot} resamples, seed {seed}), half-width",
    }
    return out


def summarise_seeds(summaries: list[dict[str, Any]], *, confidence: float = 0.95) -> dict[str, Any]:
    """Combine one summary per seed: mean of the seed means and a t-interval over them.

    Each metric (and Score, taken as each seed's own Score) gives {"mean", "ci95", "n", "per_seed"};
    seeds whose value is None are left out and `n` counts the rest.
    """
    if not summaries:
        raise ValueError("no summaries to combine")
    kinds = {s.get("kind") for s in summaries}
    if len(kinds) != 1:
        raise InputError(f"summaries mix kinds {sorted(map(str, kinds))}", field="kind")
    kind = kinds.pop()
    out: dict[str, Any] = {"kind": kind, "n_seeds": len(summaries)}
    for m in (*_kind(kind).metrics, "Score"):
        per_seed = [s[m]["mean"] for s in summaries]
        vals = [v for v in per_seed if v is not None]
        mean, hw = t_interval(vals, confidence)
        out[m] = {"mean": _none_if_nan(mean), "ci95": _none_if_nan(hw), "n": len(vals), "per_seed": per_seed,
                  "protocol": _kind(kind).protocol(m)}
    out["interval"] = f"t-interval over per-seed means, confidence {confidence}"
    return out
