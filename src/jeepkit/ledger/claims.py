"""The claims: one builder per paper artifact (Tables 1-4, Fig. 2/4/6, App. D, KnowEdit), each reading our
metrics and the paper's numbers and returning ledger entries judged by `rules`; `build_ledger` runs them all."""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import knowedit_report as ke
from .. import reporting as rp
from ..data.kinds import KINDS
from ..data.registry import DATASETS
from ..errors import InputError
from ..io import read_json
from ..metrics import t_interval
from .rules import (CONTRADICTED, NOT_COMPARABLE, NOT_TESTABLE, REPRODUCED, PAPER_EDITORS, SINGLE_REGION, UNDECIDED, _diff_ci, _f,
                    _files, _pm, _scale, _separated, _value_entry, _verdict, decide, decide_all, entry)


def _main_rows(main: pd.DataFrame, dataset: str) -> dict[str, dict[str, Any]]:
    """Plain method runs (name == method) on one dataset, seeds combined; several scales -> the largest."""
    sub = main[(main["dataset"] == dataset) & (main["name"] == main["method"])] if not main.empty else main
    out: dict[str, dict[str, Any]] = {}
    for name, g in sub.groupby("name"):
        note = ""
        if g["n_edits"].nunique() > 1:
            top = int(g["n_edits"].max())
            note = f"runs at several scales; the largest ({top} edits) is used"
            g = g[g["n_edits"] == top]
        row = rp._combined(g)
        row["batch_size"] = int(g["batch_size"].max())
        row["scale_note"] = note
        out[str(name)] = row
    return out


def _frame_rows(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    return {str(k): dict(r) for k, r in frame.iterrows() if int(r.get("n_seeds", 0) or 0)}


def _pick(datasets: Sequence[str], prefer: Sequence[str]) -> str | None:
    for d in prefer:
        if d in datasets:
            return d
    return datasets[0] if datasets else None


def _paper_method_key(label: str) -> str | None:
    for k, v in rp.METHOD_LABELS.items():
        if v == label:
            return k
    return None


def _table_values(table: str, rows: dict[str, dict], dataset: str | None) -> list[dict[str, Any]]:
    artifact = {"table2": "Table 2", "table3": "Table 3"}[table]
    paper_dataset = {"table2": "zsre", "table3": "mcf"}[table]
    out = []
    for pm in ("GPT-J", "LLaMA"):
        prs = rp.paper_rows(table, pm)
        for label, pr in prs.iterrows():
            if pr["status"] == rp.QUOTED:
                continue  # MEND, MALMEN: quoted in the tables, not claims we can check
            key = _paper_method_key(str(label))
            for m in rp.METRIC_COLUMNS:
                paper_ci = None if m == "Score" else _f(pr[f"{m}_ci95"])
                claim = f"{artifact}, {pm}, {label}: {m} = {pr[m]:.1f}" + (f" ± {paper_ci:.1f}" if paper_ci else "")
                missing = (f"metrics/main/{key}_{dataset}_s*.json" if dataset else
                           f"no {rp.DATASET_LABELS.get(paper_dataset)} runs in metrics/main")
                out.append(_value_entry(f"{artifact.replace(' ', '')}-{pm}-{label}-{m}", artifact, claim,
                                        float(pr[m]), paper_ci, rows.get(key) if key else None, m, pm, paper_dataset,
                                        dataset or paper_dataset, missing))
    return out


def _paper_order_text(table: str, metric: str = "Score") -> str:
    parts = []
    for pm in ("GPT-J", "LLaMA"):
        pr = rp.paper_rows(table, pm)
        pr = pr[pr.index != "Unedited"].sort_values(metric, ascending=False)
        parts.append(f"{pm}: " + " > ".join(f"{i} {v:.1f}" for i, v in pr[metric].items()))
    return "; ".join(parts)


def _best_claim(id: str, artifact: str, claim: str, paper: str, rows: dict[str, dict], dataset: str | None,
                metrics: Sequence[str], *, pool: Sequence[str] = PAPER_EDITORS) -> dict[str, Any]:
    """JEEP strictly above every other method of `pool` that we ran, on each of `metrics`."""
    others = [k for k in pool if k != "jeep" and k in rows]
    if dataset is None or "jeep" not in rows or not others:
        need = "JEEP and at least one other editor"
        return entry(id, artifact, "ordering", claim, paper, NOT_COMPARABLE,
                     f"needs {need} on {dataset or 'this dataset'}; have {sorted(rows) or 'no runs'}")
    j = rows["jeep"]
    texts, margins = [], []
    for m in metrics:
        best = max(others, key=lambda k: -1.0 if _f(rows[k][f"{m}_mean"]) is None else _f(rows[k][f"{m}_mean"]))
        jm, bm = _f(j[f"{m}_mean"]), _f(rows[best][f"{m}_mean"])
        if jm is None or bm is None:
            return entry(id, artifact, "ordering", claim, paper, NOT_COMPARABLE, f"{m} undefined for some run")
        d, ci = jm - bm, _diff_ci(j[f"{m}_ci95"], rows[best][f"{m}_ci95"])
        margins.append((d, ci))
        texts.append(f"{m}: JEEP {_pm(jm, j[f'{m}_ci95'])} vs best other {rp.method_label(best)} "
                     f"{_pm(bm, rows[best][f'{m}_ci95'])} (margin {_pm(d, ci)}; {_separated(d, ci)})")
    extra = ""
    if "alphaedit" in rows and "alphaedit" not in pool:
        a = rows["alphaedit"]
        extra = " AlphaEdit (not in the paper) for reference: " + ", ".join(
            f"{m} {_pm(a[f'{m}_mean'], a[f'{m}_ci95'])}" for m in metrics) + "."
    d0, c0 = min(margins, key=lambda t: t[0])
    return entry(id, artifact, "ordering", claim, paper, decide_all(decide(d, ci) for d, ci in margins),
                 f"Evaluated on our numbers among {', '.join(rp.method_label(k) for k in ['jeep', *others])}. "
                 + "; ".join(texts) + "." + extra,
                 value=d0, interval=c0, reproduced="; ".join(texts), scale=_scale(j, dataset),
                 sources=[f for k in ["jeep", *others] for f in _files(rows[k])])


def _pair_claim(id: str, artifact: str, claim: str, paper: str, a: Mapping | None, b: Mapping | None,
                la: str, lb: str, metric: str, *, dataset: str | None, higher: bool = True,
                what: str = "") -> dict[str, Any]:
    """`a` above `b` on `metric`, decided by the interval of the difference; `higher=False` asks for a below b."""
    if not a or not b:
        missing = [lab for lab, r in ((la, a), (lb, b)) if not r]
        return entry(id, artifact, "ordering", claim, paper, NOT_COMPARABLE,
                     f"no run of ours for {', '.join(missing)}{what}")
    va, vb = _f(a[f"{metric}_mean"]), _f(b[f"{metric}_mean"])
    if va is None or vb is None:
        return entry(id, artifact, "ordering", claim, paper, NOT_COMPARABLE, f"{metric} undefined")
    d = va - vb if higher else vb - va
    ci = _diff_ci(a[f"{metric}_ci95"], b[f"{metric}_ci95"])
    text = f"{metric}: {la} {_pm(va, a[f'{metric}_ci95'])} vs {lb} {_pm(vb, b[f'{metric}_ci95'])}"
    return entry(id, artifact, "ordering", claim, paper, decide(d, ci),
                 f"Evaluated on our numbers: {text} (margin {_pm(d, ci)}; {_separated(d, ci)}).",
                 value=d, interval=ci, reproduced=text, scale=_scale(a, dataset or ""),
                 sources=_files(a) + _files(b))


def _tables_2_3(main: pd.DataFrame, ds2: str | None, ds3: str | None) -> list[dict[str, Any]]:
    r2 = _main_rows(main, ds2) if ds2 else {}
    r3 = _main_rows(main, ds3) if ds3 else {}
    out = _table_values("table2", r2, ds2) + _table_values("table3", r3, ds3)
    # Table 2 (zsRE) orderings, Sec. 5.2
    out.append(_best_claim("T2-best-score", "Table 2", "JEEP has the best Score among the editors on zsRE",
                           _paper_order_text("table2"), r2, ds2, ["Score"]))
    out.append(_best_claim(
        "T2-best-ES-GS-LS", "Table 2",
        "JEEP is best on each of ES, GS and LS among the editors on zsRE ('superior performance across all three "
        "metrics on both models')",
        "GPT-J: JEEP 98.4 / 91.5 / 26.9 vs best other 98.3 (MALMEN) / 90.6 (PMET) / 26.7 (PMET); LLaMA: 96.0 / "
        "93.2 / 49.1 vs 95.1 (MEMIT) / 89.5 (MEMIT) / 48.0 (PMET)", r2, ds2, ["ES", "GS", "LS"]))
    out.append(_pair_claim("T2-ES-JEEP-ge-MEMIT", "Table 2", "JEEP ES ≥ MEMIT ES on zsRE",
                           "GPT-J 98.4 ≥ 96.7; LLaMA 96.0 ≥ 95.1", r2.get("jeep"), r2.get("memit"), "JEEP", "MEMIT",
                           "ES", dataset=ds2))
    out.append(_pair_claim("T2-ROME-below-FT", "Table 2",
                           "ROME scores below FT-WD on zsRE ('MEND and ROME perform even worse than simple "
                           "fine-tuning'; MEND is not implemented here)",
                           "GPT-J: ROME 2.6 < FT-WD 42.1 (MEND 20.0)", r2.get("rome"), r2.get("ft_wd"), "ROME",
                           "FT-WD", "Score", dataset=ds2, higher=False))
    out.append(_significance_claim(r2, ds2))
    # Table 3 (Multi-CounterFact) orderings, Sec. 5.3
    out.append(_best_claim("T3-best-score", "Table 3",
                           "JEEP has the best Score among the editors on (Multi-)CounterFact",
                           _paper_order_text("table3"), r3, ds3, ["Score"]))
    out.append(_best_claim("T3-best-ES", "Table 3", "JEEP has the best ES among the editors on (Multi-)CounterFact "
                           "('achieves the best efficacy')", _paper_order_text("table3", "ES"), r3, ds3, ["ES"]))
    out.append(_pair_claim("T3-ES-JEEP-ge-MEMIT", "Table 3", "JEEP ES ≥ MEMIT ES on (Multi-)CounterFact",
                           "GPT-J 99.8 ≥ 98.9; LLaMA 99.8 ≥ 98.4", r3.get("jeep"), r3.get("memit"), "JEEP", "MEMIT",
                           "ES", dataset=ds3))
    out.append(_no_dominant_claim(r3, ds3))
    return out


def _significance_claim(rows: dict[str, dict], dataset: str | None) -> dict[str, Any]:
    id, art = "T2-significant", "Table 2"
    claim = ("JEEP's improvements over the baselines on zsRE are statistically significant (its 95% interval lies "
             "above every other editor's on ES, GS and LS)")
    paper = "e.g. LLaMA GS: JEEP 93.2 ± 0.4 vs MEMIT 89.5 ± 0.4 (the paper's intervals)"
    others = [k for k in PAPER_EDITORS if k != "jeep" and k in rows]
    if dataset is None or "jeep" not in rows or not others:
        return entry(id, art, "ordering", claim, paper, NOT_COMPARABLE,
                     f"needs JEEP and another editor on zsRE; have {sorted(rows) or 'no runs'}")
    j = rows["jeep"]
    holds, against, bad, worst = True, False, [], None
    for m in ("ES", "GS", "LS"):
        jm, jc = _f(j[f"{m}_mean"]), _f(j[f"{m}_ci95"])
        for k in others:
            om, oc = _f(rows[k][f"{m}_mean"]), _f(rows[k][f"{m}_ci95"])
            if None in (jm, jc, om, oc):
                return entry(id, art, "ordering", claim, paper, NOT_COMPARABLE,
                             f"an interval is undefined ({m}, {rp.method_label(k)}); needs ≥ 2 records or seeds")
            gap = (jm - jc) - (om + oc)
            against |= (om - oc) - (jm + jc) > 0  # the baseline's interval lies above JEEP's
            worst = gap if worst is None else min(worst, gap)
            if gap <= 0:
                holds = False
                bad.append(f"{m} vs {rp.method_label(k)}: JEEP {_pm(jm, jc)}, {rp.method_label(k)} {_pm(om, oc)}")
    reason = ("Evaluated on our numbers: every interval separated." if holds else
              "Evaluated on our numbers; not separated: " + "; ".join(bad) + ".")
    verdict = REPRODUCED if holds else CONTRADICTED if against else UNDECIDED
    return entry(id, art, "ordering", claim, paper, verdict, reason, value=worst,
                 reproduced=f"smallest gap between JEEP's lower and a baseline's upper bound: {worst:.1f}",
                 scale=_scale(j, dataset), sources=[f for k in ["jeep", *others] for f in _files(rows[k])])


def _no_dominant_claim(rows: dict[str, dict], dataset: str | None) -> dict[str, Any]:
    id, art = "T3-no-dominant", "Table 3"
    claim = ("No method is best on all three of ES, GS and LS on (Multi-)CounterFact ('no method consistently "
             "exceeds the others across all metrics')")
    paper = "LLaMA: ES best JEEP 99.8, GS best PMET 86.2, LS best Unedited 83.8"
    if dataset is None or len(rows) < 2:
        return entry(id, art, "ordering", claim, paper, NOT_COMPARABLE,
                     f"needs at least two methods; have {sorted(rows) or 'no runs'}")
    best = {}
    for m in ("ES", "GS", "LS"):
        vals = {k: _f(r[f"{m}_mean"]) for k, r in rows.items()}
        if all(v is None for v in vals.values()):
            return entry(id, art, "ordering", claim, paper, NOT_COMPARABLE, f"{m} undefined for every run")
        top = max(v for v in vals.values() if v is not None)
        best[m] = sorted(k for k, v in vals.items() if v == top)
    dominant = set(best["ES"]) & set(best["GS"]) & set(best["LS"])
    text = "; ".join(f"{m} best: {', '.join(rp.method_label(k) for k in ks)}" for m, ks in best.items())
    any_row = next(iter(rows.values()))

    def behind(k: str, m: str) -> str:
        """Is k below the best other method on m? (decided by the interval of the difference)"""
        others = [o for o in rows if o != k and _f(rows[o][f"{m}_mean"]) is not None]
        if not others or _f(rows[k][f"{m}_mean"]) is None:
            return UNDECIDED
        o = max(others, key=lambda x: _f(rows[x][f"{m}_mean"]))
        return decide(_f(rows[o][f"{m}_mean"]) - _f(rows[k][f"{m}_mean"]),
                      _diff_ci(rows[o][f"{m}_ci95"], rows[k][f"{m}_ci95"]))

    # reproduced: every method is significantly behind on some metric; contradicted: one is significantly
    # ahead of every other method on all three
    per = {k: [behind(k, m) for m in ("ES", "GS", "LS")] for k in rows}
    if all(REPRODUCED in v for v in per.values()):
        verdict = REPRODUCED
    elif any(all(x == CONTRADICTED for x in v) for v in per.values()):
        verdict = CONTRADICTED
    else:
        verdict = UNDECIDED
    return entry(id, art, "ordering", claim, paper, verdict,
                 f"Evaluated on our numbers among {len(rows)} methods (Unedited included). {text}."
                 + (f" {', '.join(rp.method_label(k) for k in sorted(dominant))} is best on all three." if dominant else ""),
                 reproduced=text, scale=_scale(any_row, dataset),
                 sources=[f for r in rows.values() for f in _files(r)])


def _table4(metrics_root: Path, main: pd.DataFrame, ds: str | None, model: str | None) -> list[dict[str, Any]]:
    if ds is not None:
        fr = rp.ablation_frame(metrics_root, ds, model=model)
        rows = _frame_rows(fr)
    else:
        fr, rows = rp.paper_table4(), {}
    out = []
    p4 = rp.paper_table4()
    for key, pr in p4.iterrows():
        for m in rp.METRIC_COLUMNS:
            claim = f"Table 4, {pr['label']}: {m} = {pr[m]:.1f}"
            where = ("metrics/main/jeep_" if key == "full" else f"metrics/ablation/jeep-variant={key}_") + \
                    f"{ds or '<dataset>'}_s*.json"
            out.append(_value_entry(f"Table4-{key}-{m}", "Table 4", claim, float(pr[m]), None, rows.get(key), m,
                                    "LLaMA", "mcf", ds or "mcf", where))
    L = rp.ABLATION_LABELS
    P = {k: float(p4.loc[k, "Score"]) for k in p4.index}
    # every ablation below JEEP
    claim = "Every ablation variant scores below full JEEP (Score)"
    paper = f"JEEP {P['full']:.1f} > " + ", ".join(f"{L[k]} {P[k]:.1f}" for k in rp.ABLATION_ORDER if k != "full")
    variants = [k for k in rp.ABLATION_ORDER if k != "full" and k in rows]
    if "full" not in rows or not variants:
        out.append(entry("T4-all-below-JEEP", "Table 4", "ordering", claim, paper, NOT_COMPARABLE,
                         f"needs full JEEP and at least one variant on {ds or 'the ablation dataset'}; have "
                         f"{sorted(rows) or 'no runs'}"))
    else:
        f = rows["full"]
        diffs = {k: (_f(f["Score_mean"]) or 0.0) - (_f(rows[k]["Score_mean"]) or 0.0) for k in variants}
        worst = min(diffs, key=diffs.get)
        fails = [k for k in variants if diffs[k] <= 0]
        missing = [L[k] for k in rp.ABLATION_ORDER if k != "full" and k not in rows]
        ci = _diff_ci(f["Score_ci95"], rows[worst]["Score_ci95"])
        text = "; ".join(f"{L[k]} {_pm(rows[k]['Score_mean'], rows[k]['Score_ci95'])}" for k in variants)
        out.append(entry(
            "T4-all-below-JEEP", "Table 4", "ordering", claim, paper,
            decide_all(decide(diffs[k], _diff_ci(f["Score_ci95"], rows[k]["Score_ci95"])) for k in variants),
            f"Evaluated on our numbers: JEEP {_pm(f['Score_mean'], f['Score_ci95'])}; {text}. Smallest margin "
            f"{L[worst]}: {_pm(diffs[worst], ci)} ({_separated(diffs[worst], ci)})."
            + (f" At or above JEEP: {', '.join(L[k] for k in fails)}." if fails else "")
            + (f" Not run: {', '.join(missing)}." if missing else ""),
            value=diffs[worst], interval=ci, reproduced=text, scale=_scale(f, ds or ""),
            sources=[x for k in ["full", *variants] for x in _files(rows[k])]))
    # w/o Step 2 is the worst row
    claim = "w/o Step 2 is the worst Table 4 row (lowest Score)"
    paper = f"w/o Step 2 {P['wo_step2']:.1f}; next lowest w/o δ′ & Step 2 {P['wo_low']:.1f}"
    present = [k for k in rp.ABLATION_ORDER if k in rows]
    if "wo_step2" not in rows or len(present) < 2:
        out.append(entry("T4-wo-step2-worst", "Table 4", "ordering", claim, paper, NOT_COMPARABLE,
                         f"needs w/o Step 2 and another row; have {[L[k] for k in present] or 'no runs'}"))
    else:
        others = [k for k in present if k != "wo_step2"]
        low = min(others, key=lambda k: _f(rows[k]["Score_mean"]) or 0.0)
        out.append(_pair_claim("T4-wo-step2-worst", "Table 4", claim, paper, rows["wo_step2"], rows[low],
                               L["wo_step2"], f"the next lowest, {L[low]}", "Score", dataset=ds,
                               higher=False))
    # single-region: low beats high
    out.append(_pair_claim("T4-low-only-beats-high-only", "Table 4",
                           "Editing only the low layers beats editing only the high layers: w/o δ* & Step 3 above "
                           "w/o δ′ & Step 2 (Score)", f"{P['wo_high']:.1f} > {P['wo_low']:.1f}",
                           rows.get("wo_high"), rows.get("wo_low"), L["wo_high"], L["wo_low"], "Score", dataset=ds))
    out.append(_pair_claim("T4-wo-step3-beats-wo-step2", "Table 4",
                           "With joint δ, updating only the low layers beats only the high layers: w/o Step 3 above "
                           "w/o Step 2 (Score)", f"{P['wo_step3']:.1f} > {P['wo_step2']:.1f}",
                           rows.get("wo_step3"), rows.get("wo_step2"), L["wo_step3"], L["wo_step2"], "Score",
                           dataset=ds))
    out.append(_pair_claim("T4-dual-delta-high-worse", "Table 4",
                           "Computing both δ but updating only the high layers is worse than computing δ* alone: "
                           "w/o Step 2 below w/o δ′ & Step 2 (Score)", f"{P['wo_step2']:.1f} < {P['wo_low']:.1f}",
                           rows.get("wo_step2"), rows.get("wo_low"), L["wo_step2"], L["wo_low"], "Score",
                           dataset=ds, higher=False))
    out.append(_pair_claim("T4-dual-delta-low-worse", "Table 4",
                           "Computing both δ but updating only the low layers is worse than computing δ′ alone: "
                           "w/o Step 3 below w/o δ* & Step 3 (Score)", f"{P['wo_step3']:.1f} < {P['wo_high']:.1f}",
                           rows.get("wo_step3"), rows.get("wo_high"), L["wo_step3"], L["wo_high"], "Score",
                           dataset=ds, higher=False))
    out.append(_pair_claim("T4-separate-below-low-only", "Table 4",
                           "Separate Optimization scores below the single-region low-layer edit w/o δ* & Step 3 "
                           "('worse than single-region editing')", f"{P['separate']:.1f} < {P['wo_high']:.1f}",
                           rows.get("separate"), rows.get("wo_high"), L["separate"], L["wo_high"], "Score",
                           dataset=ds, higher=False))
    # even spread: LS up, ES and GS down vs JEEP
    e, f = rows.get("even_spread"), rows.get("full")
    claim = "Even Spread in Step 2 has better LS than JEEP at the cost of ES and GS"
    paper = "LS 76.3 > 75.7; ES 98.8 < 99.8; GS 84.0 < 85.4"
    if not e or not f:
        out.append(entry("T4-even-spread-tradeoff", "Table 4", "ordering", claim, paper, NOT_COMPARABLE,
                         "needs Even Spread in Step 2 and JEEP runs"))
    else:
        parts, verdicts = [], []
        for m, want_higher in (("LS", True), ("ES", False), ("GS", False)):
            d = (_f(e[f"{m}_mean"]) or 0.0) - (_f(f[f"{m}_mean"]) or 0.0)
            verdicts.append(decide(d if want_higher else -d, _diff_ci(e[f"{m}_ci95"], f[f"{m}_ci95"])))
            parts.append(f"{m}: Even Spread {_pm(e[f'{m}_mean'], e[f'{m}_ci95'])} vs JEEP "
                         f"{_pm(f[f'{m}_mean'], f[f'{m}_ci95'])}")
        out.append(entry("T4-even-spread-tradeoff", "Table 4", "ordering", claim, paper, decide_all(verdicts),
                         "Evaluated on our numbers: " + "; ".join(parts) + ".", reproduced="; ".join(parts),
                         scale=_scale(f, ds or ""), sources=_files(e) + _files(f)))
    for key, cid in (("even_spread", "T4-even-spread-beats-single-region"), ("mhsa_step3", "T4-mhsa-beats-single-region")):
        claim = f"{L[key]} outperforms every single-region variant (Score)"
        paper = f"{P[key]:.1f} > max single-region {max(P[k] for k in SINGLE_REGION):.1f} ({L['wo_high']})"
        singles = [k for k in SINGLE_REGION if k in rows]
        if key not in rows or not singles:
            out.append(entry(cid, "Table 4", "ordering", claim, paper, NOT_COMPARABLE,
                             f"needs {L[key]} and single-region variants; have {[L[k] for k in rows] or 'no runs'}"))
            continue
        best = max(singles, key=lambda k: _f(rows[k]["Score_mean"]) or 0.0)
        ent = _pair_claim(cid, "Table 4", claim, paper, rows[key], rows[best], L[key], f"the best single-region "
                          f"variant, {L[best]}", "Score", dataset=ds)
        miss = [L[k] for k in SINGLE_REGION if k not in rows]
        if miss and ent["verdict"] != NOT_COMPARABLE:
            ent["reason"] += f" Not run: {', '.join(miss)}."
        out.append(ent)
    # w/o δ* & Step 3 == MEMIT (paper: identical rows)
    memit = _main_rows(main, ds).get("memit") if ds else None
    w = rows.get("wo_high")
    claim = "w/o δ* & Step 3 gives the same numbers as MEMIT (the paper's rows are identical)"
    paper = "84.1 / 98.4 / 80.6 / 76.3 in both Table 4 and Table 3 (LLaMA), although the paper's MEMIT and JEEP-low " \
            "settings differ (γ 0.9 vs 1, λ 4000 vs 2500)"
    if not w or not memit:
        out.append(entry("T4-wo-high-equals-MEMIT", "Table 4", "ordering", claim, paper, NOT_COMPARABLE,
                         "needs w/o δ* & Step 3 and MEMIT runs on the same dataset"))
    else:
        parts, apart, undefined = [], False, False
        for m in rp.METRIC_COLUMNS:
            a, b = _f(w[f"{m}_mean"]), _f(memit[f"{m}_mean"])
            ci = _diff_ci(w[f"{m}_ci95"], memit[f"{m}_ci95"])
            undefined |= a is None or b is None
            apart |= a is not None and b is not None and decide(abs(a - b), ci) == REPRODUCED
            parts.append(f"{m} {_pm(a, w[f'{m}_ci95'])} vs {_pm(b, memit[f'{m}_ci95'])}")
        # an equality can only be contradicted (a difference whose interval excludes 0) or stay consistent
        verdict = CONTRADICTED if apart else NOT_COMPARABLE if undefined else REPRODUCED
        out.append(entry("T4-wo-high-equals-MEMIT", "Table 4", "ordering", claim, paper, verdict,
                         "Evaluated on our numbers (reproduced = no metric's difference excludes 0; contradicted = "
                         "one does): " + "; ".join(parts)
                         + ". Our variant uses JEEP's low-layer settings (clamp_low, lambda_low), not MEMIT's.",
                         reproduced="; ".join(parts), scale=_scale(w, ds or ""), sources=_files(w) + _files(memit)))
    return out


def _fig4(metrics_root: Path, ds: str | None, model: str | None) -> list[dict[str, Any]]:
    art = "Fig. 4"
    fr = rp.scaling_frame(metrics_root, ds, model=model) if ds else pd.DataFrame()
    claims = [
        ("F4-JEEP-best-every-m", "JEEP has the best Score among MEMIT, PMET and JEEP at every number of edits m "
                                 "(ties allowed)", "'JEEP consistently delivers better overall results' (LLaMA, MCF, "
                                                   "m = 1 ... 10,000)"),
        ("F4-margin-grows", "JEEP's Score margin over the best of MEMIT and PMET grows with m (largest m vs smallest m)",
         "'the improvements becoming more pronounced as the number of edits grows'"),
        ("F4-ES-100", "JEEP's ES is 100% at every m except the largest",
         "'JEEP achieves 100% accuracy in all cases except for 10,000 edits'"),
    ]
    have = sorted(set(fr["method"])) if not fr.empty else []
    if "jeep" not in have or len(have) < 2:
        why = f"needs scaling runs of JEEP and MEMIT or PMET in metrics/scaling (have {have or 'none'})"
        out = [entry(i, art, "ordering", c, p, NOT_COMPARABLE, why) for i, c, p in claims[:2]]
        out.append(_es100(fr, claims[2], art) if "jeep" in have else
                   entry(*claims[2][:1], art, "ordering", *claims[2][1:], NOT_COMPARABLE, why))
        return out
    piv = fr.pivot(index="m", columns="method", values="Score_mean")
    cis = fr.pivot(index="m", columns="method", values="Score_ci95")
    others = [m for m in piv.columns if m != "jeep"]
    ms = [m for m in piv.index if not math.isnan(piv.loc[m, "jeep"]) and piv.loc[m, others].notna().any()]
    first = fr[fr["method"] == "jeep"].iloc[0]
    scale = (f"{rp._model_text(first)}, {first['data_source']} {rp.DATASET_LABELS.get(ds, ds)}, m = "
             f"{min(ms)} ... {max(ms)}, up to {int(fr['n_chunks'].max())} chunk(s) per m, seeds {first['seeds']}, "
             f"{rp.interval_kind(int(first['n_seeds']))}")
    sources = sorted(set(str(f) for f in rp.load_scaling(metrics_root, dataset=ds)["file"]))
    margins, wins, ties = {}, 0, 0
    for m in ms:
        best_other = max(others, key=lambda k: piv.loc[m, k] if not math.isnan(piv.loc[m, k]) else -1)
        d = float(piv.loc[m, "jeep"] - piv.loc[m, best_other])
        margins[m] = (d, _diff_ci(cis.loc[m, "jeep"], cis.loc[m, best_other]), best_other)
        wins += d > 0
        ties += d == 0
    losses = [m for m in ms if margins[m][0] < 0]
    worst = min(ms, key=lambda m: margins[m][0])
    text = (f"JEEP ≥ the others at {len(ms) - len(losses)} of {len(ms)} sizes (strictly above at {wins}, tied at "
            f"{ties}); smallest margin {_pm(margins[worst][0], margins[worst][1])} at m = {worst} vs "
            f"{rp.method_label(margins[worst][2])}")
    out = [entry(claims[0][0], art, "ordering", claims[0][1], claims[0][2],
                 decide_all(decide(margins[m][0], margins[m][1]) for m in ms),
                 f"Evaluated on our numbers: {text}." + (f" Below at m = {', '.join(map(str, losses))}." if losses else ""),
                 value=margins[worst][0], interval=margins[worst][1], reproduced=text, scale=scale, sources=sources)]
    lo, hi = min(ms), max(ms)
    if lo == hi:
        out.append(entry(claims[1][0], art, "ordering", claims[1][1], claims[1][2], NOT_COMPARABLE,
                         "only one batch size", scale=scale, sources=sources))
    else:
        g = margins[hi][0] - margins[lo][0]
        gci = _diff_ci(margins[hi][1], margins[lo][1])
        t = f"margin {_pm(margins[lo][0], margins[lo][1])} at m = {lo}, {_pm(margins[hi][0], margins[hi][1])} at m = {hi}"
        out.append(entry(claims[1][0], art, "ordering", claims[1][1], claims[1][2], decide(g, gci),
                         f"Evaluated on our numbers: {t} (growth {_pm(g, gci)}; {_separated(g, gci)}).",
                         value=g, interval=gci, reproduced=t, scale=scale, sources=sources))
    out.append(_es100(fr, claims[2], art, scale=scale, sources=sources))
    return out


def _es100(fr: pd.DataFrame, spec: tuple[str, str, str], art: str, *, scale: str = "",
           sources: Sequence[str] = ()) -> dict[str, Any]:
    id, claim, paper = spec
    j = fr[fr["method"] == "jeep"].sort_values("m")
    if j.empty or len(j) < 2:
        return entry(id, art, "ordering", claim, paper, NOT_COMPARABLE, "needs JEEP scaling runs at ≥ 2 sizes")
    below = j[j["m"] < j["m"].max()]
    short = below[below["ES_mean"] < 100.0 - 1e-9]
    text = "ES " + ", ".join(f"{v:.1f} (m={int(m)})" for m, v in zip(j["m"], j["ES_mean"]))
    # an exact value (every record edited), not a difference: contradicted by any record that is not
    return entry(id, art, "ordering", claim, paper, REPRODUCED if short.empty else CONTRADICTED,
                 f"Evaluated on our numbers: {text}." + (f" Below 100% at m = {', '.join(str(int(m)) for m in short['m'])}."
                                                         if not short.empty else ""),
                 value=float(below["ES_mean"].min()), reproduced=text, scale=scale, sources=sources)


def _fig6(metrics_root: Path, ds: str | None, model: str | None) -> list[dict[str, Any]]:
    art = "Fig. 6"
    fr = rp.sweep_frame(metrics_root, ds, model=model) if ds else pd.DataFrame()
    out = []
    paper_best = "the best values lie well below γ′ = 1 (the paper uses γ* = 0.25)"
    if fr.empty:
        out.append(entry("F6-best-below-low-clamp", art, "ordering", "The best γ* (by Score) is smaller than γ′",
                         paper_best, NOT_COMPARABLE, "no sweep runs in metrics/sweep"))
        for m in rp.METRIC_COLUMNS:
            out.append(entry(f"F6-{m}-rises-then-falls", art, "shape",
                             f"{m} first increases, then decreases as γ* grows", "'each metric initially increases "
                             "and then decreases as γ* grows'", NOT_COMPARABLE, "no sweep runs in metrics/sweep"))
        return out
    first = fr.iloc[0]
    scale = (f"{rp._model_text(first)}, {first['data_source']} {rp.DATASET_LABELS.get(ds, ds)}, {int(first['n_edits'])} "
             f"edits, γ* ∈ {{{', '.join(f'{g:g}' for g in fr['gamma'])}}}, seeds {first['seeds']}, "
             f"{rp.interval_kind(int(first['n_seeds']))}")
    sources = [f for fs in fr["files"] for f in str(fs).split(", ")]
    low = _f(first["clamp_low"]) or 1.0
    i = int(np.nanargmax(fr["Score_mean"].to_numpy(dtype=float)))
    g = float(fr["gamma"].iloc[i])
    text = "Score " + ", ".join(f"{v:.1f} (γ*={gg:g})" for gg, v in zip(fr["gamma"], fr["Score_mean"]))
    score = fr["Score_mean"].to_numpy(dtype=float)
    sci = fr["Score_ci95"].to_numpy(dtype=float)
    below = [j for j in range(len(fr)) if fr["gamma"].iloc[j] < low]
    above = [j for j in range(len(fr)) if fr["gamma"].iloc[j] >= low]
    if below and above:  # the best γ* below γ′ against the best at or above it
        b_, a_ = max(below, key=lambda j: score[j]), max(above, key=lambda j: score[j])
        verdict = decide(score[b_] - score[a_], _diff_ci(sci[b_], sci[a_]))
        text += (f"; best below γ′ {_pm(score[b_], sci[b_])} (γ*={fr['gamma'].iloc[b_]:g}) vs best at or above "
                 f"{_pm(score[a_], sci[a_])} (γ*={fr['gamma'].iloc[a_]:g})")
    else:
        verdict = NOT_COMPARABLE
        text += f"; the grid needs values on both sides of γ′ = {low:g}"
    out.append(entry("F6-best-below-low-clamp", art, "ordering", f"The best γ* (by Score) is smaller than γ′ = {low:g}",
                     paper_best, verdict, f"Evaluated on our numbers: best γ* = {g:g} ({text}).",
                     value=g, reproduced=f"best γ* = {g:g}", scale=scale, sources=sources))
    for m in rp.METRIC_COLUMNS:
        y = fr[f"{m}_mean"].to_numpy(dtype=float)
        cid, claim = f"F6-{m}-rises-then-falls", f"{m} first increases, then decreases as γ* grows"
        paper = "'each metric initially increases and then decreases as γ* grows'"
        if len(y) < 3 or np.isnan(y).any():
            out.append(entry(cid, art, "shape", claim, paper, NOT_COMPARABLE,
                             "needs ≥ 3 γ* values with defined means", scale=scale, sources=sources))
            continue
        k = int(np.argmax(y))
        ci = fr[f"{m}_ci95"].to_numpy(dtype=float)
        if 0 < k < len(y) - 1:  # an interior maximum: above both ends, each decided by its interval
            verdict = decide_all([decide(y[k] - y[0], _diff_ci(ci[k], ci[0])),
                                  decide(y[k] - y[-1], _diff_ci(ci[k], ci[-1]))])
        else:  # the maximum at an end: contradicted only if that end is clearly above every interior value
            inner = range(1, len(y) - 1)
            verdict = CONTRADICTED if all(decide(y[k] - y[j], _diff_ci(ci[k], ci[j])) == REPRODUCED
                                          for j in inner) else UNDECIDED
        t = f"{m} " + ", ".join(f"{v:.1f}" for v in y) + f" at γ* = {', '.join(f'{gg:g}' for gg in fr['gamma'])}"
        out.append(entry(cid, art, "shape", claim, paper, verdict,
                         f"Evaluated on our numbers: maximum {y[k]:.1f} at γ* = {fr['gamma'].iloc[k]:g} "
                         f"({'interior' if 0 < k < len(y) - 1 else 'an end of the grid'}); {t}.",
                         value=float(fr["gamma"].iloc[k]), reproduced=t, scale=scale, sources=sources))
    return out


def degenerate(text: str) -> bool:
    """One word repeated through the continuation ('yen? yen? yen'): a loop, not an answer."""
    words = re.findall(r"\w+", text.lower())
    top = max(Counter(words).values(), default=0)
    return len(words) >= 3 and top >= 3 and 2 * top >= len(words)


def _contains(text: str, target: str) -> bool:
    """The continuation produces the target: contains it, and is not a degenerate loop."""
    return bool(target.strip()) and target.strip().lower() in text.lower() and not degenerate(text)


def _table1(metrics_root: Path, ds: str | None) -> list[dict[str, Any]]:
    art = "Table 1"
    c1 = "MEMIT, PMET and JEEP all produce the new target on the edited prompt"
    p1 = "LLaMA, zsRE, 'Henry S. LeBlanc': all three answer 'Canada'"
    c2 = ("Only JEEP is right on both the equivalent prompt (new target) and the unrelated prompt (same continuation "
          "as the unedited model)")
    p2 = "equivalent: MEMIT 'of course', PMET/JEEP 'Canada'; unrelated: MEMIT 'liver', PMET repeats the question, JEEP 'liver'"
    try:
        fr = rp.case_study_frame(metrics_root, ds, unedited=True) if ds else pd.DataFrame()
    except InputError as e:
        return [entry("T1-edited-all", art, "case", c1, p1, NOT_COMPARABLE, str(e)),
                entry("T1-only-JEEP-both", art, "case", c2, p2, NOT_COMPARABLE, str(e))]
    cols = [rp.method_label(m) for m in rp.EDITORS]
    if fr.empty or any(c not in fr.columns or (fr[c] == "no run").all() for c in cols):
        reason = "needs case studies of MEMIT, PMET and JEEP in metrics/main"
        return [entry("T1-edited-all", art, "case", c1, p1, NOT_COMPARABLE, reason),
                entry("T1-only-JEEP-both", art, "case", c2, p2, NOT_COMPARABLE, reason)]
    case = fr.attrs.get("case", {})
    target = str(case.get("target_new") or "")
    scale = fr.attrs.get("note", "").split(". Greedy")[0]
    src = sorted(str(p) for m in ("none", *rp.EDITORS)
                 for p in (Path(metrics_root) / "main").glob(f"{m}_{ds}_s*.json"))
    edited = {c: _contains(str(fr.loc["Edited", c]), target) for c in cols}
    t1 = "; ".join(f"{c}: {fr.loc['Edited', c]!r}" for c in cols)
    out = [entry("T1-edited-all", art, "case", c1, p1, _verdict(all(edited.values())),
                 f"One record (case {case.get('case_id')}), greedy continuation produces {target!r} (contains it "
                 "and is not one word repeated): "
                 + ", ".join(f"{c} {'yes' if v else 'no (a loop)' if degenerate(str(fr.loc['Edited', c])) else 'no'}"
                             for c, v in edited.items()) + ".",
                 reproduced=t1, scale=scale, sources=src)]
    if "Equivalent" not in fr.index or "Unrelated" not in fr.index or "Unedited" not in fr.columns:
        out.append(entry("T1-only-JEEP-both", art, "case", c2, p2, NOT_COMPARABLE,
                         "needs equivalent and unrelated prompts and the unedited model's continuation (run 'none')",
                         reproduced=t1, scale=scale, sources=src))
        return out
    proper = {c: _contains(str(fr.loc["Equivalent", c]), target)
              and str(fr.loc["Unrelated", c]).strip() == str(fr.loc["Unrelated", "Unedited"]).strip() for c in cols}
    holds = proper["JEEP"] and not any(v for c, v in proper.items() if c != "JEEP")
    t2 = "; ".join(f"{c}: equivalent {fr.loc['Equivalent', c]!r}, unrelated {fr.loc['Unrelated', c]!r}" for c in cols)
    out.append(entry("T1-only-JEEP-both", art, "case", c2, p2, _verdict(holds),
                     f"One record (case {case.get('case_id')}); unedited continuation of the unrelated prompt "
                     f"{fr.loc['Unrelated', 'Unedited']!r}. Right on both: "
                     + ", ".join(f"{c} {'yes' if v else 'no'}" for c, v in proper.items()) + ".",
                     reproduced=t2, scale=scale, sources=src))
    return out


def _timing(main: pd.DataFrame, ds: str | None) -> list[dict[str, Any]]:
    claim = "JEEP edits no slower than MEMIT (target optimisation + weight update)"
    paper = "10k MCF edits on an A100: JEEP 3.3 h vs MEMIT 9 h (GPT-J); 3.6 h vs 3.6 h (LLaMA)"
    rows = _main_rows(main, ds) if ds else {}
    j, m = rows.get("jeep"), rows.get("memit")
    if not j or not m:
        return [entry("AppD-time-JEEP-le-MEMIT", "App. D", "ordering", claim, paper, NOT_COMPARABLE,
                      "needs JEEP and MEMIT runs with timings")]
    if _f(j["target_seconds"]) is None and _f(m["target_seconds"]) is None:
        return [entry("AppD-time-JEEP-le-MEMIT", "App. D", "ordering", claim, paper, NOT_COMPARABLE,
                      "wall times are machine-dependent, so they are kept out of the pipeline's outputs "
                      "(data/timings/, written by every edit stage) to keep every report byte-identical; "
                      "compare them there, or with benchmarks/real_methods.py", scale=_scale(j, ds),
                      sources=_files(j) + _files(m))]
    tj = (_f(j["target_seconds"]) or 0.0) + (_f(j["edit_seconds"]) or 0.0)
    tm = (_f(m["target_seconds"]) or 0.0) + (_f(m["edit_seconds"]) or 0.0)
    text = f"JEEP {tj:.1f} s vs MEMIT {tm:.1f} s (mean over seeds)"
    if not (_f(j["target_seconds"]) and _f(m["target_seconds"])):
        return [entry("AppD-time-JEEP-le-MEMIT", "App. D", "ordering", claim, paper, NOT_COMPARABLE,
                      f"{text}; a run's targets came from the target cache (target_seconds 0), so the times measure "
                      "different work", reproduced=text, scale=_scale(j, ds), sources=_files(j) + _files(m))]
    return [entry("AppD-time-JEEP-le-MEMIT", "App. D", "ordering", claim, paper, UNDECIDED,
                  f"{text}: one wall-clock run per method decides nothing (load, caching and warm-up differ "
                  "between runs); compare repeated, alone-on-the-machine timings (benchmarks/speed.py).",
                  value=tj - tm, reproduced=text, scale=_scale(j, ds), sources=_files(j) + _files(m))]


def _window_change(a: np.ndarray, start: int, end: int, pos: int) -> tuple[float, float, int]:
    """Per-record a[:, end, pos] - a[:, start, pos]: (mean, t half-width, n)."""
    d = np.asarray(a, float)[:, end, pos] - np.asarray(a, float)[:, start, pos]
    d = d[~np.isnan(d)]
    mean, hw = t_interval(d.tolist())
    return mean, hw, int(d.size)


def _fig2(probe_dir: str | os.PathLike | None) -> list[dict[str, Any]]:
    from ..probe import POSITIONS, load_probe

    art = "Fig. 2"
    specs = [
        ("F2-low-rank-orig", "At the subject's last token the original answer's mean rank improves (falls towards 0) "
                             "across the low layers", "LLaMA-7B, 10k MCF: the original answer's rank rises sharply over "
                                                      "layers 0-10 ('Information Enrichment')"),
        ("F2-low-rank-orig-vs-target", "... and improves more than the target answer's rank over the same layers",
         "'Target answers ... do not experience similar enrichment, as their rank only increases marginally'"),
        ("F2-high-prob-orig", "At the prediction position the original answer's probability is promoted in the early "
                              "high layers", "'in the early high layers at the prediction position, original answers "
                                             "undergo Probability Promotion'"),
        ("F2-high-prob-orig-vs-target", "... and promoted more than the target answer's probability there",
         "'the rank of target answers, lacking probability promotion, decreases'"),
        ("F2-final-decline", "The original answer's probability at the prediction position declines in the final layers",
         "'a decline in the probability of original answers at the prediction position in the final layers'"),
    ]
    if probe_dir is None or not (Path(probe_dir) / "arrays.npz").exists():
        why = "no probe arrays" + (f" in {probe_dir}" if probe_dir else " (probe_dir not given)")
        return [entry(i, art, "shape", c, p, NOT_COMPARABLE, why) for i, c, p in specs]
    arrays, meta = load_probe(probe_dir)
    n_entries = arrays["rank_orig"].shape[1]
    L = n_entries - 1
    subj, pred = POSITIONS.index("subject_last"), POSITIONS.index("prediction")
    low_end = max(1, round(10 / 32 * L))
    conf = (meta.get("configured_layers") or {}).get("jeep.layers_high")
    if conf:
        h0, h1, hsrc = min(conf), max(conf) + 1, f"the configured JEEP high layers {min(conf)}-{max(conf)}"
    else:
        h0, h1 = round(22 / 32 * L), round(25 / 32 * L)
        hsrc = "layers scaled from the paper's 22-24 of 32"
    h0, h1 = max(0, min(h0, L - 1)), max(1, min(h1, L))
    high_start = round(19 / 32 * L)
    model = meta.get("model") or {}
    mtxt = f"{model.get('key', '?')}" + (f" ({model.get('id')})" if model.get("id") else "")
    scale = (f"{mtxt}, {len(meta.get('case_ids', [])) or arrays['rank_orig'].shape[0]} {meta.get('dataset', '?')} "
             f"records, {L} layers, lens {meta.get('lens', '?')}; per-record differences, t-interval over records")
    src = [str(Path(probe_dir) / "arrays.npz"), str(Path(probe_dir) / "arrays.json")]
    note = f"Layer axis: entry k = output of decoder layer k-1. Our model is {mtxt}, the paper's LLaMA-7B."
    out = []

    def add(i: int, mean: float, hw: float, n: int, sign: int, what: str) -> None:
        """sign: the paper's direction of `mean` (+1: a rise, -1: a fall)."""
        cid, claim, paper = specs[i]
        out.append(entry(cid, art, "shape", claim, paper, decide(sign * mean, hw),
                         f"Evaluated on our probe: {what}: {_pm(mean, hw, 3)} over {n} records "
                         f"({_separated(mean, hw)}). {note}", value=mean, interval=hw,
                         reproduced=f"{_pm(mean, hw, 3)} ({what})", scale=scale, sources=src))

    ro, rt = arrays["rank_orig"], arrays["rank_target"]
    po, pt = arrays["prob_orig"], arrays["prob_target"]
    m, hw, n = _window_change(ro, 0, low_end, subj)
    add(0, m, hw, n, -1, f"change of the original answer's rank from entry 0 to {low_end} (layers 0-{low_end - 1})")
    d = (np.asarray(ro, float)[:, low_end, subj] - ro[:, 0, subj]) - (np.asarray(rt, float)[:, low_end, subj] - rt[:, 0, subj])
    m, hw = t_interval(d[~np.isnan(d)].tolist())
    add(1, m, hw, int((~np.isnan(d)).sum()), -1, f"rank change original minus target, entries 0 to {low_end}")
    m, hw, n = _window_change(po, h0, h1, pred)
    add(2, m, hw, n, +1, f"change of the original answer's probability over {hsrc} (entries {h0} to {h1})")
    d = (np.asarray(po, float)[:, h1, pred] - po[:, h0, pred]) - (np.asarray(pt, float)[:, h1, pred] - pt[:, h0, pred])
    m, hw = t_interval(d[~np.isnan(d)].tolist())
    add(3, m, hw, int((~np.isnan(d)).sum()), +1, f"probability change original minus target, entries {h0} to {h1}")
    curve = np.nanmean(np.asarray(po, float)[:, :, pred], axis=0)
    peak = high_start + int(np.nanargmax(curve[high_start:]))
    if peak == L:
        cid, claim, paper = specs[4]
        out.append(entry(cid, art, "shape", claim, paper, CONTRADICTED,
                         f"Evaluated on our probe: the mean probability peaks at the last entry ({L}); no final decline. "
                         f"{note}", value=0.0, reproduced=f"peak at entry {L}", scale=scale, sources=src))
    else:
        m, hw, n = _window_change(po, peak, L, pred)
        add(4, m, hw, n, -1, f"probability change from the high-layer peak (entry {peak}) to the last entry ({L})")
    return out


# KNE Table 1 (Llama-2-7b-chat, KnowEdit) and the survey's Table 4 as orderings on our KnowEdit runs:
# (id, claim, (method, metric) that the paper puts above (method, metric)); the printed values are read from
# paper/knowedit.json (WikiData_counterfact, Llama-2-7b-chat). SAME_ON_ONE_TOKEN: pairs whose objectives
# coincide when every target is one token, so that on such data their claims are not testable.
KNOWEDIT_CLAIMS = (
    ("knowedit-kne-es", "KNE's Edit Succ is above MEMIT's", ("kne", "ES"), ("memit", "ES")),
    ("knowedit-kne-ps", "KNE's Portability is above MEMIT's", ("kne", "PS"), ("memit", "PS")),
    ("knowedit-kne-ls", "KNE's Locality is above MEMIT's", ("kne", "LS"), ("memit", "LS")),
    ("knowedit-memit-port", "MEMIT's Portability is below its Edit Succ (edits do not carry to implications)",
     ("memit", "ES"), ("memit", "PS")),
    ("knowedit-ftm-es", "FT-M's Edit Succ is above FT-L's (the masked target loss edits, the last-token one "
     "often does not)", ("ft_m", "ES"), ("ft_l", "ES")),
    ("knowedit-ftm-ps", "FT-M's Portability is above FT-L's", ("ft_m", "PS"), ("ft_l", "PS")),
)
SAME_ON_ONE_TOKEN = ({"ft_l", "ft_m"},)


def _knowedit(metrics_root: Path, dataset: str | None) -> list[dict[str, Any]]:
    """The KnowEdit claims on metrics/knowedit (WikiData_counterfact rows of the seeds)."""
    art = "KNE Table 1 / KnowEdit Table 4 (WikiData_counterfact)"
    runs: dict[str, dict[str, Any]] = {}
    files: dict[str, str] = {}
    longest: dict[str, int | None] = {}  # the most tokens an edited target takes (None: not recorded)
    for f in sorted((metrics_root / "knowedit").glob("*.json")) if dataset else []:
        obj = read_json(f)
        if obj.get("n_edits") and obj.get("dataset") == dataset:  # one seed per method here; the first wins
            runs.setdefault(obj["method"], obj["summary"])
            files.setdefault(obj["method"], str(f))
            longest.setdefault(obj["method"], ((obj.get("data") or {}).get("target_tokens") or {}).get("max"))
    out = []
    for id_, claim, (ma, ka), (mb, kb) in KNOWEDIT_CLAIMS:
        pa, pb = (ke.paper_value(rp.method_label(m), k) for m, k in ((ma, ka), (mb, kb)))
        paper = f"{pa:.2f} vs {pb:.2f} (Llama-2-7b-chat, single edits)"
        a, b = runs.get(ma, {}).get(ka) or {}, runs.get(mb, {}).get(kb) or {}
        if _f(a.get("mean")) is None or _f(b.get("mean")) is None:
            out.append(entry(id_, art, "ordering", claim, paper, NOT_COMPARABLE,
                             f"no KnowEdit run of ours for {ma} / {mb} on {dataset or 'any dataset'}"))
            continue
        d, ci = a["mean"] - b["mean"], _diff_ci(a.get("ci95"), b.get("ci95"))
        text = f"{ka} {ma} {_pm(a['mean'], a.get('ci95'))} vs {kb} {mb} {_pm(b['mean'], b.get('ci95'))}"
        if {ma, mb} in SAME_ON_ONE_TOKEN and longest.get(ma) == longest.get(mb) == 1:
            out.append(entry(id_, art, "ordering", claim, paper, NOT_TESTABLE,
                             f"Every edited target of our KnowEdit runs ({dataset}) is one token: {ma}'s and {mb}'s "
                             f"losses are then the same objective, so the runs are equal by construction ({text}).",
                             value=d, interval=ci, reproduced=text, sources=[files[ma], files[mb]]))
            continue
        out.append(entry(id_, art, "ordering", claim, paper, decide(d, ci),
                         f"Evaluated on our KnowEdit runs ({dataset}): {text} (margin {_pm(d, ci)}; {_separated(d, ci)}).",
                         value=d, interval=ci, reproduced=text, sources=[files[ma], files[mb]]))
    return out


SEQUENTIAL_ART = "Sequential editing (beyond the paper: AlphaEdit's and PRUNE's protocol)"


def _sequential(metrics_root: Path, dataset: str | None) -> list[dict[str, Any]]:
    """Claims of the papers after JEEP on the sequential protocol, judged on metrics/sequential."""
    fr = rp.sequential_frame(metrics_root, dataset) if dataset else pd.DataFrame()
    ids = ("seq-alphaedit-above-memit", "seq-prune-keeps-score", "seq-forgetting-memit", "seq-sigma-grows",
           "seq-drift")
    if fr.empty:
        return [entry(i, SEQUENTIAL_ART, "ordering", c, p, NOT_COMPARABLE, "no sequential runs of ours")
                for i, c, p in zip(ids, SEQUENTIAL_CLAIMS, SEQUENTIAL_PAPER)]
    last = fr[fr["edits"] == fr["edits"].max()]
    scale = fr.attrs.get("note", "")

    def at(method: str, variant: str, frame: pd.DataFrame = last) -> dict[str, Any] | None:
        g = frame[(frame["method"] == method) & (frame["variant"] == variant)]
        return None if g.empty else dict(g.iloc[0])

    out = []
    claim, paper = SEQUENTIAL_CLAIMS[0], SEQUENTIAL_PAPER[0]
    a, b = at("alphaedit", "—"), at("memit", "—")
    if a is None or b is None:
        out.append(entry(ids[0], SEQUENTIAL_ART, "ordering", claim, paper, NOT_COMPARABLE,
                         "needs sequential runs of AlphaEdit and MEMIT"))
    else:
        d, ci = a["Score_mean"] - b["Score_mean"], _diff_ci(a["Score_ci95"], b["Score_ci95"])
        out.append(entry(ids[0], SEQUENTIAL_ART, "ordering", claim, paper, decide(d, ci),
                         f"After {int(a['edits'])} sequential edits: AlphaEdit {_pm(a['Score_mean'], a['Score_ci95'])}"
                         f" vs MEMIT {_pm(b['Score_mean'], b['Score_ci95'])} (margin {_pm(d, ci)}; "
                         f"{_separated(d, ci)}).", value=d, interval=ci, scale=scale, sources=[a["file"], b["file"]]))
    # PRUNE beside the unrestrained model, every method that has both at the last checkpoint
    pairs = [(m, at(m, "PRUNE"), at(m, "—")) for m in dict.fromkeys(last["method"])]
    pairs = [(m, p, n) for m, p, n in pairs if p is not None and n is not None]
    claim, paper = SEQUENTIAL_CLAIMS[1], SEQUENTIAL_PAPER[1]
    if not pairs:
        out.append(entry(ids[1], SEQUENTIAL_ART, "ordering", claim, paper, NOT_COMPARABLE, "no PRUNE checkpoint"))
    else:
        margins = [(p["Score_mean"] - n["Score_mean"], _diff_ci(p["Score_ci95"], n["Score_ci95"])) for _, p, n in pairs]
        text = "; ".join(f"{rp.method_label(m)} {_pm(p['Score_mean'], p['Score_ci95'])} with PRUNE vs "
                         f"{_pm(n['Score_mean'], n['Score_ci95'])} without" for m, p, n in pairs)
        out.append(entry(ids[1], SEQUENTIAL_ART, "ordering", claim, paper, decide_all(decide(d, ci) for d, ci in margins),
                         f"After the last batch: {text}.", scale=scale,
                         sources=[p["file"] for _, p, _ in pairs]))
    claim, paper = SEQUENTIAL_CLAIMS[2], SEQUENTIAL_PAPER[2]
    first, now = at("memit", "—", fr[fr["batch"] == 1]), b
    if first is None or now is None or int(now["batch"]) < 2:
        out.append(entry(ids[2], SEQUENTIAL_ART, "ordering", claim, paper, NOT_COMPARABLE,
                         "needs a sequential MEMIT run of two or more batches"))
    else:
        d = first["first_batch_Score"] - now["first_batch_Score"]
        ci = _diff_ci(first["first_batch_Score_ci95"], now["first_batch_Score_ci95"])
        out.append(entry(ids[2], SEQUENTIAL_ART, "ordering", claim, paper, decide(d, ci),
                         f"MEMIT on the first batch's facts: {_pm(first['first_batch_Score'], first['first_batch_Score_ci95'])}"
                         f" after batch 1, {_pm(now['first_batch_Score'], now['first_batch_Score_ci95'])} after batch "
                         f"{int(now['batch'])} (fall {_pm(d, ci)}; {_separated(d, ci)}).", value=d, interval=ci,
                         scale=scale, sources=[now["file"]]))
    # σ_max(ΣΔW) is a property of the update itself (no sampling over records): its sign decides. Perplexity is
    # measured on a sample of documents: the paired bootstrap interval of the log-perplexity change decides.
    unres = fr[fr["variant"] == "—"]
    grow, drift = [], []
    for m, g in unres.groupby("method", sort=False):
        g = g.sort_values("edits")
        if len(g) >= 2:
            grow.append((m, float(g["sigma_max_delta"].iloc[0]), float(g["sigma_max_delta"].iloc[-1])))
            last_row = g.iloc[-1]
            drift.append((m, float(g["perplexity_before"].iloc[0]), float(last_row["perplexity"]),
                          float(last_row.get("log_ppl_change", math.nan)), float(last_row.get("log_ppl_change_lo", math.nan)),
                          float(last_row.get("log_ppl_change_hi", math.nan))))
    claim, paper = SEQUENTIAL_CLAIMS[3], SEQUENTIAL_PAPER[3]
    if not grow:
        out.append(entry(ids[3], SEQUENTIAL_ART, "shape", claim, paper, NOT_COMPARABLE,
                         "needs sequential runs of two or more batches"))
    else:
        holds = all(y > x for _, x, y in grow)
        text = "; ".join(f"{rp.method_label(m)} {x:.4g} → {y:.4g}" for m, x, y in grow)
        out.append(entry(ids[3], SEQUENTIAL_ART, "shape", claim, paper, REPRODUCED if holds else CONTRADICTED,
                         f"max σ_max(ΣΔW) after the first batch → after the last batch: {text} (a property of the "
                         "update, measured exactly; the sign decides).", scale=scale, sources=sorted(set(unres["file"]))))
    claim, paper = SEQUENTIAL_CLAIMS[4], SEQUENTIAL_PAPER[4]
    if not drift:
        out.append(entry(ids[4], SEQUENTIAL_ART, "shape", claim, paper, NOT_COMPARABLE,
                         "needs sequential runs of two or more batches"))
    else:
        def one(d: float, lo: float, hi: float) -> str:
            if math.isnan(lo) or math.isnan(hi):
                return UNDECIDED
            return REPRODUCED if lo > 0 else CONTRADICTED if hi < 0 else UNDECIDED

        verdicts = [one(d, lo, hi) for _, _, _, d, lo, hi in drift]
        text = "; ".join(f"{rp.method_label(m)} {x:.4g} → {y:.4g} (Δ log-ppl {d:+.4f}, 95% [{lo:+.4f}, {hi:+.4f}])"
                         for m, x, y, d, lo, hi in drift)
        out.append(entry(ids[4], SEQUENTIAL_ART, "shape", claim, paper, decide_all(verdicts),
                         f"Held-out perplexity drift before editing → after the last batch: {text}. Decided by the "
                         "paired bootstrap interval over documents of each method's change (an interval that "
                         "includes 0 leaves the claim undecided; none recorded: undecided).",
                         scale=scale, sources=sorted(set(unres["file"]))))
    return out


SEQUENTIAL_CLAIMS = (
    "After the last sequential batch, AlphaEdit's Score is above MEMIT's",
    "PRUNE's Score after the last batch is above the unrestrained model's (restraint does not cost the edits)",
    "Edits of later batches erode the first batch's facts (MEMIT's Score on them falls)",
    "σ_max of the accumulated update ΣΔW grows with the number of sequential edits",
    "Sequential editing raises the perplexity of held-out human-written text (held-out perplexity drift)",
)
SEQUENTIAL_PAPER = (
    "AlphaEdit (ICLR 2025) Table 1, LLaMA3-8B CounterFact, 2,000 edits in batches of 100: efficacy 98.90 vs 65.65",
    "PRUNE (seed 003) §4: editing performance kept while general abilities are preserved",
    "AlphaEdit / PRUNE: MEMIT's earlier edits are overwritten as edits accumulate",
    "PRUNE Table 1 (LLaMA-2 7B, MEMIT): σ_max 7.46 / 15.63 / 23.39 / 935 at 10 / 50 / 100 / 200 edits",
    "PRUNE §1, AlphaEdit §1: general ability falls as sequential edits accumulate",
)


HONEST_ART = "Honest evaluation (beyond the paper: The Mirage of Model Editing, ACL 2025)"
HONEST_CLAIM = ("Free generation scores the edits lower than teacher forcing: each editor's ES with the model "
                "producing the answer itself (continuation begins with it) is below its teacher-forced ES")
HONEST_PAPER = "The Mirage of Model Editing (ACL 2025): single-edit success 96.8% teacher-forced vs 38.5% generated"


def _honest(main: pd.DataFrame, dataset: str | None) -> list[dict[str, Any]]:
    """Teacher-forced ES minus free-generation (exact) ES per editor of Fig. 4 / Table 1, on metrics/main."""
    id = "honest-free-below-forced"
    sub = main[(main["dataset"] == dataset) & (main["name"] == main["method"])] if dataset and not main.empty else main
    sub = sub[sub["method"].isin(rp.EDITORS) & sub["free_ES_exact_mean"].notna()] if not sub.empty else sub
    if sub.empty:
        return [entry(id, HONEST_ART, "ordering", HONEST_CLAIM, HONEST_PAPER, NOT_COMPARABLE,
                      "no run of ours with free-generation scores")]
    margins, texts, files = [], [], []
    for method in [m for m in rp.EDITORS if m in set(sub["method"])]:
        g = sub[sub["method"] == method]
        if len(g) == 1:
            (tf, tci), (fg, fci) = ((float(g.iloc[0][f"{c}_mean"]), g.iloc[0][f"{c}_ci95"])
                                    for c in ("ES", "free_ES_exact"))
        else:
            (tf, tci), (fg, fci) = (t_interval(list(g[f"{c}_mean"])) for c in ("ES", "free_ES_exact"))
        d, ci = tf - fg, _diff_ci(tci, fci)
        margins.append((d, ci))
        texts.append(f"{rp.method_label(method)} {_pm(tf, tci)} vs {_pm(fg, fci)} (margin {_pm(d, ci)})")
        files += list(g["file"])
    worst = min(range(len(margins)), key=lambda i: margins[i][0])
    first = dict(sub.iloc[0])
    scale = (f"{rp._model_text(first)}, {first['data_source']} {rp.DATASET_LABELS.get(dataset, dataset)}, "
             f"{int(first['n_edits'])} edits, one batch per run")
    return [entry(id, HONEST_ART, "ordering", HONEST_CLAIM, HONEST_PAPER,
                  decide_all(decide(d, ci) for d, ci in margins),
                  "Evaluated on our numbers, ES teacher-forced vs free generation (exact): " + "; ".join(texts) + ".",
                  value=margins[worst][0], interval=margins[worst][1], reproduced="; ".join(texts), scale=scale,
                  sources=files)]


# How the number a claim turns on was measured, where it is not a dataset's teacher-forced score.
_ARTIFACT_PROTOCOL = {"Table 1": "free_generation", "Fig. 2": "logit_lens", "App. D": "wall_time"}
_ID_PROTOCOL = {"seq-sigma-grows": "spectrum", "seq-drift": "perplexity",
                "honest-free-below-forced": "teacher_forced_prob+free_generation"}


def _tag_protocols(entries: list[dict[str, Any]], dataset_of: Mapping[str, str | None]) -> None:
    """Every row names its protocol (issue 14): teacher-forced rows the tag of their dataset's scorers
    (data/kinds.py), KnowEdit rows that of the metrics they compare, the rest as in the maps above."""
    knowedit = {cid: (a[1], b[1]) for cid, _, a, b in KNOWEDIT_CLAIMS}
    for e in entries:
        if e["id"] in _ID_PROTOCOL or e["artifact"] in _ARTIFACT_PROTOCOL:
            e["protocol"] = _ID_PROTOCOL.get(e["id"]) or _ARTIFACT_PROTOCOL[e["artifact"]]
        elif e["id"] in knowedit:
            e["protocol"] = "+".join(dict.fromkeys(KINDS["knowedit"].protocol(m) for m in knowedit[e["id"]]))
        else:
            ds = dataset_of.get(e["artifact"])
            e["protocol"] = KINDS[DATASETS[ds].kind].protocol("Score") if ds in DATASETS else "n/a"


def build_ledger(metrics_root: str | os.PathLike, probe_dir: str | os.PathLike | None = None, *,
                 model: str | None = None) -> list[dict[str, Any]]:
    """Every claim (module docstring) evaluated against the metrics tree and, if given, the probe directory.

    Tables 2/3 use ``metrics/main`` on zsRE and on MCF (else CounterFact); Table 4, Fig. 4 and Fig. 6 the
    dataset their group has (MCF preferred, then CounterFact); Table 1 zsRE (else Table 3's dataset).
    `model` picks one model key when the tree mixes several (else that raises InputError).
    """
    root = Path(metrics_root)
    main = rp.load_group(root, "main")
    if model is not None and not main.empty:
        main = main[main["model"] == model]
    if not main.empty and main["model"].nunique() > 1:
        raise InputError(f"metrics/main mixes models {sorted(main['model'].unique())}; pass model=", field="model")
    main_ds = sorted(set(main["dataset"])) if not main.empty else []
    ds2 = "zsre" if "zsre" in main_ds else None
    ds3 = _pick(main_ds, ("mcf", "counterfact"))
    ds3 = ds3 if ds3 in ("mcf", "counterfact") else None
    prefer = ("mcf", "counterfact")
    ds4 = _pick(rp.datasets_in(root, "ablation") or ([ds3] if ds3 else []), prefer)
    ds_sweep = _pick(rp.datasets_in(root, "sweep"), prefer)
    ds_scale = _pick(rp.datasets_in(root, "scaling"), prefer)
    ds_case = ds2 or ds3
    entries = []
    entries += _tables_2_3(main, ds2, ds3)
    entries += _table4(root, main, ds4, model)
    entries += _fig4(root, ds_scale, model)
    entries += _fig6(root, ds_sweep, model)
    entries += _table1(root, ds_case)
    entries += _timing(main, ds3)
    entries += _fig2(probe_dir)
    ke = sorted({read_json(f).get("dataset") for f in (root / "knowedit").glob("*.json")} - {None})
    entries += _knowedit(root, _pick(ke, ("wiki_counterfact",)))
    seq = sorted({read_json(f).get("dataset") for f in (root / "sequential").glob("*.json")} - {None})
    entries += _sequential(root, _pick(seq, prefer))
    entries += _honest(main, ds3)
    _tag_protocols(entries, {"Table 2": ds2, "Table 3": ds3, "Table 4": ds4, "Fig. 4": ds_scale, "Fig. 6": ds_sweep,
                             SEQUENTIAL_ART: _pick(seq, prefer)})
    ids = [e["id"] for e in entries]
    if len(ids) != len(set(ids)):  # pragma: no cover - a programming error
        raise AssertionError(f"duplicate ledger ids: {sorted(i for i in ids if ids.count(i) > 1)}")
    return entries
