"""The claims ledger on hand-made metrics trees and probe arrays: ordering verdicts where JEEP is and is not
best, printed cells that are (not) comparable, the written ledger and index, and the ledger notebook."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from jeepkit import ledger
from jeepkit.ledger import NOT_COMPARABLE, NOT_REPRODUCED, REPRODUCED, build_ledger, write_index, write_ledger
from jeepkit.probe import save_probe

from test_reporting import ABLATION_SCORES, ROOT, MetricsTree, _kernel_or_skip, case_study

LEDGER_NB = ROOT / "notebooks" / "ledger.ipynb"

SCALING = {  # (m, ES, GS, LS): JEEP ahead, more so at larger m
    "memit": [(1, 100, 90, 80), (3, 98, 84, 78), (12, 94, 78, 75)],
    "pmet": [(1, 100, 91, 79), (3, 99, 86, 77), (12, 95, 80, 74)],
    "jeep": [(1, 100, 92, 80), (3, 100, 88, 78), (12, 97, 85, 76)],
}
SWEEP = {0.05: (80, 50, 78), 0.1: (95, 70, 77), 0.25: (99, 85, 76), 0.5: (97, 80, 74), 1.0: (90, 60, 70)}


def build(root: Path, *, jeep_best: bool = True, **tree_kw) -> MetricsTree:
    """A complete tree: main (both datasets, with case studies), ablation, sweep and scaling."""
    t = MetricsTree(root, **tree_kw)
    jeep = (99.8, 85.4, 75.7) if jeep_best else (97.0, 70.0, 70.0)
    for ds in ("counterfact", "zsre"):
        t.main("none", ds, 13.0, 16.0, 84.0, case_study=case_study(["France", "France", "the liver"]))
        t.main("ft_wd", ds, 99.0, 70.0, 47.0, case_study=case_study(["Canada", "Canada", "Canada"]))
        t.main("rome", ds, 50.0, 50.0, 50.0)
        t.main("memit", ds, 98.0, 80.0, 76.0, case_study=case_study(["Canada", "of course", "the liver"]))
        t.main("pmet", ds, 98.5, 86.0, 73.0, case_study=case_study(["Canada", "Canada", "Where is creatine"]))
        t.main("jeep", ds, *jeep, case_study=case_study(["Canada", "Canada", "the liver"]))
    for v, scores in ABLATION_SCORES.items():
        t.ablation(v, "counterfact", *scores)
    for g, scores in SWEEP.items():
        t.sweep(g, "counterfact", *scores)
    for m, pts in SCALING.items():
        t.scaling(m, "counterfact", pts if jeep_best or m != "jeep" else [(p[0], 90, 60, 60) for p in pts])
    return t


def by_id(entries: list[dict]) -> dict[str, dict]:
    return {e["id"]: e for e in entries}


def write_probe(d: Path, *, shapes_hold: bool = True, n: int = 16, n_layers: int = 12) -> Path:
    """Probe arrays whose curves show (or, flipped, contradict) the paper's Fig. 2 shapes."""
    rng = np.random.default_rng(0)
    e = np.arange(n_layers + 1)
    sign = 1 if shapes_hold else -1
    rank_o = np.zeros((n, n_layers + 1, 2))
    rank_t = np.full((n, n_layers + 1, 2), 5000.0)
    rank_o[:, :, 0] = 5000 - sign * 1000 * np.minimum(e, 4)[None] + rng.normal(0, 30, (n, n_layers + 1))
    prob_o = np.zeros((n, n_layers + 1, 2))
    curve = np.array([0, 0, 0, 0, 0, .01, .02, .03, .05, .1, .2, .25, .15])
    prob_o[:, :, 1] = (curve if shapes_hold else 0.3 - curve)[None] + rng.normal(0, 0.005, (n, n_layers + 1))
    prob_t = np.full((n, n_layers + 1, 2), 0.01)
    arrays = {"rank_orig": np.clip(rank_o, 0, None).astype(np.int64), "rank_target": rank_t.astype(np.int64),
              "prob_orig": np.clip(prob_o, 0, 1), "prob_target": prob_t}
    side = {"dataset": "counterfact", "case_ids": list(range(n)), "n_layers": n_layers,
            "model": {"key": "smollm2", "id": "HuggingFaceTB/SmolLM2-135M-Instruct"},
            "lens": "softmax(lm_head(h)), no final norm",
            "configured_layers": {"model_key": "smollm2", "jeep.layers_low": [1, 2, 3], "jeep.layers_high": [8, 9]}}
    save_probe(d, arrays, side)
    return d


# ------------------------------------------------------------------ orderings


ORDERINGS = ("T2-best-score", "T3-best-score", "T3-best-ES", "T2-ES-JEEP-ge-MEMIT", "T3-ES-JEEP-ge-MEMIT",
             "T2-ROME-below-FT", "T3-no-dominant", "T4-all-below-JEEP", "T4-wo-step2-worst",
             "T4-low-only-beats-high-only", "T4-separate-below-low-only", "T4-even-spread-tradeoff",
             "F4-JEEP-best-every-m", "F4-margin-grows", "F6-best-below-low-clamp", "F6-Score-rises-then-falls")


def test_decide_on_hand_made_intervals():
    assert ledger.decide(5.0, 2.0) == REPRODUCED  # [3, 7]: excludes 0 in the paper's direction
    assert ledger.decide(-5.0, 2.0) == ledger.CONTRADICTED  # [-7, -3]
    assert ledger.decide(1.0, 2.0) == ledger.UNDECIDED  # [-1, 3] includes 0
    assert ledger.decide(-1.0, 2.0) == ledger.UNDECIDED
    assert ledger.decide(2.0, 2.0) == ledger.UNDECIDED  # touching 0 is not excluding it
    assert ledger.decide(1.0, None) == ledger.UNDECIDED and ledger.decide(None, 1.0) == NOT_COMPARABLE
    R, C, U = REPRODUCED, ledger.CONTRADICTED, ledger.UNDECIDED
    assert ledger.decide_all([R, R]) == R and ledger.decide_all([R, U]) == U and ledger.decide_all([U, C, R]) == C
    assert ledger.decide_all([]) == NOT_COMPARABLE


def test_orderings_reproduced_when_jeep_is_clearly_best(tmp_path: Path):
    t = build(tmp_path / "metrics", ci=0.1)
    e = by_id(build_ledger(t.root, write_probe(tmp_path / "probe")))
    for cid in ORDERINGS + ("T1-edited-all", "T1-only-JEEP-both", "F2-low-rank-orig", "F2-low-rank-orig-vs-target",
                            "F2-high-prob-orig", "F2-high-prob-orig-vs-target", "F2-final-decline"):
        assert e[cid]["verdict"] == REPRODUCED, (cid, e[cid]["reason"])
    best = e["T3-best-score"]
    assert "JEEP 85.9 ± 0.1 vs best other PMET 84.6 ± 0.1" in best["reason"]
    assert best["reproduced_value"] == pytest.approx(85.87 - 84.56, abs=0.05)
    assert best["reproduced_interval"] == pytest.approx(math.sqrt(0.02))
    assert "excludes 0" in best["reason"]
    assert "smollm2" in best["scale"] and "12 edits" in best["scale"] and "per-record t-interval" in best["scale"]
    # what does not hold on these numbers is said, not hidden
    assert e["F4-ES-100"]["verdict"] == REPRODUCED  # 100% at m = 1 and 3, below only at the largest m
    assert e["F6-LS-rises-then-falls"]["verdict"] == ledger.CONTRADICTED  # LS falls monotonically in SWEEP
    assert e["T2-significant"]["verdict"] == ledger.CONTRADICTED  # JEEP's LS interval lies below MEMIT's
    assert e["AppD-time-JEEP-le-MEMIT"]["verdict"] == ledger.UNDECIDED  # one run per method decides nothing


def test_orderings_contradicted_when_jeep_is_clearly_not_best(tmp_path: Path):
    t = build(tmp_path / "metrics", jeep_best=False, ci=0.1)
    t.ablation("mhsa_step3", "counterfact", 99.9, 95.0, 80.0)  # a variant above JEEP
    e = by_id(build_ledger(t.root, write_probe(tmp_path / "probe", shapes_hold=False)))
    for cid in ("T2-best-score", "T3-best-score", "T3-best-ES", "T2-ES-JEEP-ge-MEMIT", "T4-all-below-JEEP",
                "F4-JEEP-best-every-m", "F4-ES-100", "F2-low-rank-orig", "F2-high-prob-orig"):
        assert e[cid]["verdict"] == ledger.CONTRADICTED, (cid, e[cid]["reason"])
    assert "w/ MHSA in Step 3" in e["T4-all-below-JEEP"]["reason"]
    assert e["T3-best-score"]["reproduced_value"] < 0
    assert "below at m = 1, 3, 12" in e["F4-JEEP-best-every-m"]["reason"].lower()


@pytest.mark.parametrize("jeep_best", [True, False])
def test_orderings_undecided_at_wide_intervals(tmp_path: Path, jeep_best: bool):
    """At ±30 points neither a lead nor a deficit of a few points decides anything."""
    t = build(tmp_path / "metrics", jeep_best=jeep_best, ci=30.0)
    e = by_id(build_ledger(t.root))
    for cid in ("T2-best-score", "T3-best-score", "T4-all-below-JEEP", "T4-even-spread-tradeoff",
                "F4-JEEP-best-every-m", "F6-best-below-low-clamp", "F6-Score-rises-then-falls", "T3-no-dominant"):
        assert e[cid]["verdict"] == ledger.UNDECIDED, (cid, e[cid]["reason"])
    assert "undecided at this scale" in e["T3-best-score"]["reason"]
    assert ledger.counts(e.values())[ledger.UNDECIDED] >= 8


def test_degenerate_continuation_does_not_produce_its_target():
    from jeepkit.ledger.claims import _contains, degenerate
    assert degenerate("yen? yen? yen") and degenerate(" the yen yen yen yen")
    assert not degenerate("Canada, a country in North America") and not degenerate("yen")
    assert _contains(" Canada, of course", "Canada") and not _contains(" Canada Canada Canada", "Canada")


def test_missing_runs_are_not_comparable(tmp_path: Path):
    t = MetricsTree(tmp_path / "metrics")
    t.main("jeep", "counterfact", 99.0, 85.0, 75.0)
    entries = build_ledger(t.root)
    e = by_id(entries)
    assert e["T3-best-score"]["verdict"] == NOT_COMPARABLE and "at least one other editor" in e["T3-best-score"]["reason"]
    assert e["T2-best-score"]["verdict"] == NOT_COMPARABLE
    assert e["F4-JEEP-best-every-m"]["verdict"] == NOT_COMPARABLE and "metrics/scaling" in e["F4-JEEP-best-every-m"]["reason"]
    assert e["F6-best-below-low-clamp"]["verdict"] == NOT_COMPARABLE
    assert e["F2-low-rank-orig"]["verdict"] == NOT_COMPARABLE and "no probe arrays" in e["F2-low-rank-orig"]["reason"]
    assert {x["verdict"] for x in build_ledger(tmp_path / "nothing")} == {NOT_COMPARABLE}
    assert all(x["verdict"] in ledger.VERDICTS and x["reason"] for x in entries)


# ------------------------------------------------------------------ printed cells


def test_numeric_cells_on_another_model_are_not_comparable(tmp_path: Path):
    t = build(tmp_path / "metrics")
    e = by_id(build_ledger(t.root))
    cell = e["Table3-LLaMA-JEEP-Score"]
    assert cell["verdict"] == NOT_COMPARABLE and cell["paper_value"] == 85.9
    assert cell["reproduced_value"] == pytest.approx(85.87, abs=0.01) and cell["reproduced_interval"] == 2.0
    for part in ("model smollm2", "the paper's is LLaMA", "CounterFact records", "bundled data", "12 edits"):
        assert part in cell["reason"]
    t4 = e["Table4-wo_step2-Score"]
    assert t4["verdict"] == NOT_COMPARABLE and t4["paper_value"] == 40.0 and "LLaMA" in t4["reason"]
    assert e["Table2-GPT-J-ROME-LS"]["paper_value"] == 0.9 and e["Table2-GPT-J-ROME-LS"]["paper_interval"] == 0.1
    assert not any("MEND" in i or "MALMEN" in i for i in e)  # quoted rows are not claims we check


def test_numeric_cells_at_the_papers_scale_are_compared(tmp_path: Path):
    t = MetricsTree(tmp_path / "metrics", model="llama7b", model_id="huggyllama/llama-7b", source="official",
                    n_edits=10_000, ci=0.2)
    t.main("jeep", "mcf", 99.8, 85.4, 75.7)
    t.main("memit", "mcf", 90.0, 80.6, 76.3)  # ES far from the paper's 98.4
    t.main("jeep", "zsre", 96.0, 93.2, 49.1)
    e = by_id(build_ledger(t.root))
    ok = e["Table3-LLaMA-JEEP-ES"]
    assert ok["verdict"] == REPRODUCED and "same model, data and scale" in ok["reason"]
    assert "1 seed(s), the paper averages 3" in ok["reason"]
    bad = e["Table3-LLaMA-MEMIT-ES"]
    assert bad["verdict"] == NOT_REPRODUCED and "-8.4" in bad["reason"]
    assert e["Table3-LLaMA-MEMIT-GS"]["verdict"] == REPRODUCED
    assert e["Table2-LLaMA-JEEP-GS"]["verdict"] == REPRODUCED
    other = e["Table3-GPT-J-JEEP-ES"]
    assert other["verdict"] == NOT_COMPARABLE and "the paper's is GPT-J" in other["reason"]
    assert e["Table3-LLaMA-PMET-ES"]["verdict"] == NOT_COMPARABLE and "no run of ours" in e["Table3-LLaMA-PMET-ES"]["reason"]
    assert e["Table4-full-Score"]["verdict"] == REPRODUCED  # full JEEP of Table 4 is the main run


# ------------------------------------------------------------------ writing


def test_write_ledger_and_index(tmp_path: Path):
    t = build(tmp_path / "metrics")
    entries = build_ledger(t.root)
    reports = tmp_path / "reports"
    md, js = write_ledger(entries, reports)
    data = json.loads(js.read_text())
    assert data["counts"] == ledger.counts(entries) and len(data["entries"]) == len(entries)
    assert sum(data["counts"].values()) == len(entries)
    text = md.read_text()
    assert text.startswith("# Claims ledger") and "## Table 4" in text and "## Fig. 2" in text
    assert "T4-wo-step2-worst" in text and "**reproduced**" in text and "**not comparable**" in text
    files = ["tables/table2_zsre.md", "tables/table2_zsre.csv", "tables/table4_ablation.md",
             "figures/fig4_scaling.png", "figures/fig4_scaling.pdf", "figures/fig6_clamp.pdf",
             "notebooks/tables.ipynb"]
    for f in files:
        (reports / f).parent.mkdir(parents=True, exist_ok=True)
        (reports / f).write_text("x")
    (reports / "figures" / "notes.txt").write_text("not a figure")
    index = write_index(reports, expect=["notebooks/ledger.ipynb"])
    page = index.read_text()
    for f in files + ["ledger.md", "ledger.json", "notebooks/ledger.ipynb"]:
        assert f'href="{f}"' in page, f
    assert '<img src="figures/fig4_scaling.png"' in page and "fig6_clamp.png" not in page
    assert "notes.txt" not in page and "table1_case_study" not in page
    assert "/tmp" not in page and str(tmp_path) not in page  # relative links only
    assert not list(reports.rglob("*.tmp"))


def test_index_leads_with_the_answer(tmp_path: Path):
    """The page opens with the scale line, the verdict counts and ours beside the paper per dataset."""
    from jeepkit.ledger import headline

    t = build(tmp_path / "metrics")
    reports = tmp_path / "reports"
    _, js = write_ledger(build_ledger(t.root), reports)
    params = tmp_path / "params.yaml"
    params.write_text("seed: 0\n")
    lead = headline(t.root, js, params)
    page = write_index(reports, lead=lead).read_text()
    assert page.index("Scale of this run") < page.index("<h2>Claims ledger")
    sha = __import__("hashlib").sha256(b"seed: 0\n").hexdigest()[:12]
    assert f"params.yaml sha256 {sha}" in page and "seed(s) 0" in page
    counts = json.loads(js.read_text())["counts"]
    assert ", ".join(f"{n} {v}" for v, n in counts.items()) in page
    for ds in ("zsRE", "CounterFact"):
        assert f"<h3>{ds}: ours beside the paper" in page
    # JEEP's row: ours (with its interval) and the paper's printed LLaMA Score of Table 3
    from jeepkit import reporting as rp

    jeep3 = rp.paper_rows("table3", "LLaMA").loc["JEEP", "Score"]
    row = page[page.index("<tr><td>JEEP</td>", page.index("<h3>CounterFact")):]
    row = row[:row.index("</tr>")]
    assert " ± " in row and f"{jeep3:.1f}" in row
    assert headline(tmp_path / "empty") .startswith("<p><b>No runs yet</b>")


# ------------------------------------------------------------------ notebook


def test_ledger_notebook_runs_with_papermill(tmp_path: Path, monkeypatch):
    _kernel_or_skip()
    import papermill as pm

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    t = build(tmp_path / "metrics", ci=0.1)
    (t.root / "sweep").rename(tmp_path / "sweep.away")  # a partial run: the sweep group is missing
    probe = write_probe(tmp_path / "probe")
    reports = tmp_path / "reports"
    (reports / "figures").mkdir(parents=True)
    (reports / "figures" / "fig4_scaling.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out_nb = reports / "notebooks" / "ledger.ipynb"
    out_nb.parent.mkdir(parents=True)
    pm.execute_notebook(str(LEDGER_NB), str(out_nb), kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
                        parameters={"metrics_root": str(t.root), "probe_dir": str(probe), "reports_dir": str(reports)})
    data = json.loads((reports / "ledger.json").read_text())
    e = by_id(data["entries"])
    assert e["T3-best-score"]["verdict"] == REPRODUCED and e["F2-high-prob-orig"]["verdict"] == REPRODUCED
    assert e["F6-best-below-low-clamp"]["verdict"] == NOT_COMPARABLE
    page = (reports / "index.html").read_text()
    for f in ("ledger.md", "ledger.json", "figures/fig4_scaling.png", "notebooks/ledger.ipynb"):
        assert f'href="{f}"' in page
    text = out_nb.read_text()
    assert "/sweep (its claims are 'not comparable')" in text and "claims:" in text


def _knowedit_run(root: Path, method: str, es: float, ps: float, ls: float, longest: int | None = None) -> None:
    d = root / "knowedit"
    d.mkdir(parents=True, exist_ok=True)
    summary = {m: {"mean": v, "ci95": 2.0, "n": 8} for m, v in (("ES", es), ("PS", ps), ("LS", ls))}
    data = {} if longest is None else {"data": {"target_tokens": {"max": longest}}}
    (d / f"{method}_wiki_counterfact_s0.json").write_text(json.dumps(
        {"method": method, "dataset": "wiki_counterfact", "kind": "knowedit", "n_edits": 8, "seed": 0,
         "summary": summary, **data}))


def test_knowedit_claims_follow_our_runs(tmp_path: Path):
    from jeepkit import ledger

    assert all(e["verdict"] == ledger.NOT_COMPARABLE for e in ledger._knowedit(tmp_path, None))
    _knowedit_run(tmp_path, "kne", 90.0, 50.0, 40.0)
    _knowedit_run(tmp_path, "memit", 80.0, 60.0, 30.0)
    got = {e["id"]: e for e in ledger._knowedit(tmp_path, "wiki_counterfact")}
    assert got["knowedit-kne-es"]["verdict"] == ledger.REPRODUCED  # 90 > 80
    assert got["knowedit-kne-ps"]["verdict"] == ledger.CONTRADICTED  # 50 < 60
    assert got["knowedit-kne-ls"]["verdict"] == ledger.REPRODUCED
    assert got["knowedit-memit-port"]["verdict"] == ledger.REPRODUCED  # ES 80 > PS 60
    assert "excludes 0" in got["knowedit-kne-es"]["reason"]
    assert got["knowedit-kne-es"]["paper_value"].startswith("99.02 vs 83.41")  # read from paper/knowedit.json
    assert got["knowedit-ftm-es"]["verdict"] == ledger.NOT_COMPARABLE  # no FT-L / FT-M runs yet
    _knowedit_run(tmp_path, "ft_l", 40.0, 20.0, 30.0)
    _knowedit_run(tmp_path, "ft_m", 100.0, 10.0, 30.0)
    got = {e["id"]: e for e in ledger._knowedit(tmp_path, "wiki_counterfact")}
    assert got["knowedit-ftm-es"]["verdict"] == ledger.REPRODUCED
    assert got["knowedit-ftm-ps"]["verdict"] == ledger.CONTRADICTED
    assert got["knowedit-ftm-es"]["paper_value"].startswith("100.00 vs 51.12")


def test_ft_l_and_ft_m_on_one_token_targets_are_not_testable(tmp_path: Path):
    """With every target one token, FT-L's and FT-M's objectives coincide: their claims are 'not testable' (not
    'undecided at this scale'); one multi-token target makes them testable again."""
    from jeepkit import ledger

    _knowedit_run(tmp_path, "ft_l", 50.0, 20.0, 30.0, longest=1)
    _knowedit_run(tmp_path, "ft_m", 50.0, 20.0, 30.0, longest=1)
    got = {e["id"]: e for e in ledger._knowedit(tmp_path, "wiki_counterfact")}
    for cid in ("knowedit-ftm-es", "knowedit-ftm-ps"):
        assert got[cid]["verdict"] == ledger.NOT_TESTABLE and "one token" in got[cid]["reason"], got[cid]
    assert ledger.counts(got.values())[ledger.NOT_TESTABLE] == 2
    _knowedit_run(tmp_path, "ft_m", 50.0, 20.0, 30.0, longest=3)
    got = {e["id"]: e for e in ledger._knowedit(tmp_path, "wiki_counterfact")}
    assert got["knowedit-ftm-es"]["verdict"] == ledger.UNDECIDED


def test_every_row_names_its_protocol_and_free_generation_is_judged(tmp_path: Path):
    """Issue 14: each ledger row carries how its number was measured; the free-generation claim is decided by
    the interval of teacher-forced minus free-generation ES of every editor, and needs runs that have it."""
    t = build(tmp_path / "metrics")
    before = by_id(build_ledger(t.root))
    assert before["honest-free-below-forced"]["verdict"] == NOT_COMPARABLE
    free = {"memit": 50.0, "pmet": 60.0, "jeep": 97.0}  # JEEP's teacher-forced ES is 99.8: inside the intervals
    for m, es in free.items():
        f = t.root / "main" / f"{m}_counterfact_s0.json"
        obj = json.loads(f.read_text())
        cell = {"exact": {"mean": es, "ci95": 4.0, "n": 12}, "contains": {"mean": es, "ci95": 4.0, "n": 12}}
        obj["summary"]["free_generation"] = {"protocol": "free_generation", "ES": cell, "GS": cell, "LS": cell}
        f.write_text(json.dumps(obj))
    entries = build_ledger(t.root)
    e = by_id(entries)["honest-free-below-forced"]
    assert e["verdict"] == "undecided" and e["protocol"] == "teacher_forced_prob+free_generation"
    assert e["reproduced_value"] == pytest.approx(99.8 - 97.0)  # the smallest margin: JEEP's
    assert "MEMIT 98.0 ± 2.0 vs 50.0 ± 4.0" in e["reason"]
    free["jeep"] = 80.0
    f = t.root / "main" / "jeep_counterfact_s0.json"
    obj = json.loads(f.read_text())
    obj["summary"]["free_generation"]["ES"]["exact"]["mean"] = 80.0
    f.write_text(json.dumps(obj))
    assert by_id(build_ledger(t.root))["honest-free-below-forced"]["verdict"] == REPRODUCED
    protocols = {x["id"]: x["protocol"] for x in entries}
    assert all(protocols.values())
    assert protocols["Table2-GPT-J-MEMIT-ES"] == "teacher_forced_token_acc"
    assert {p for i, p in protocols.items() if i.startswith("Table3")} == {"teacher_forced_prob"}
    md = (write_ledger(entries, tmp_path / "reports")[0]).read_text()
    assert "| protocol |" in md and "teacher_forced_token_acc" in md
