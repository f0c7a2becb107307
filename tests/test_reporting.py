"""Reporting on hand-made metrics files: table order and format, clear errors, written artifacts, the
paper's numbers, and the results notebook end to end through papermill."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from jeepkit.errors import InputError
from jeepkit.reporting import (
    QUOTED, RAN_HERE, aggregate_runs, bar_figure, format_cell, load_metrics, paper_rows, results_table,
    write_table,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "results.ipynb"


def run_json(method: str, dataset: str, es: float, gs: float, ls: float, sc: float, *, seed: int = 0,
             n_edits: int = 40, model: str = "smollm2", ci: float | None = 3.21) -> dict[str, Any]:
    """A metrics file shaped like the pipeline's (`edit_and_evaluate`) output."""
    def m(v: float) -> dict[str, Any]:
        return {"mean": v, "ci95": ci, "n": n_edits}

    return {
        "method": method, "dataset": dataset, "kind": dataset,
        "model": {"key": model, "id": "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": "r0"},
        "data": {"source": "bundled", "n_cases": n_edits, "provenance": {"dataset": dataset}},
        "seed": seed, "n_edits": n_edits, "batch_size": n_edits,
        "summary": {"kind": dataset, "n_records": n_edits, "ES": m(es), "GS": m(gs), "LS": m(ls), "Score": m(sc),
                    "interval": {"ES/GS/LS": "t-interval over per-record values, confidence 0.95",
                                 "Score": "percentile bootstrap over records (2000 resamples, seed 0), half-width"}},
        "timing": {"target_seconds": 1.0, "edit_seconds": 2.0, "eval_seconds": 3.0},
    }


def write_runs(d: Path, runs: list[dict[str, Any]]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(runs):
        (d / f"run{i:02d}_{r.get('method')}_{r.get('dataset')}.json").write_text(json.dumps(r))
    return d


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    # Written in a scrambled order, with an unknown method, to test the paper's row order.
    return write_runs(tmp_path / "metrics", [
        run_json("jeep", "counterfact", 99.0, 85.04, 75.0, 85.9),
        run_json("zzz_custom", "counterfact", 50.0, 50.0, 50.0, 50.0),
        run_json("none", "counterfact", 13.0, 16.0, 84.0, 19.7),
        run_json("memit", "counterfact", 98.0, 80.0, 76.0, 84.0),
        run_json("abc_custom", "counterfact", 60.0, 60.0, 60.0, 60.0),
        run_json("memit", "zsre", 95.0, 89.0, 47.0, 70.0),
    ])


# ------------------------------------------------------------------ loading


def test_load_metrics_one_row_per_run(metrics_dir: Path):
    df = load_metrics(metrics_dir)
    assert len(df) == 6
    r = df[(df.method == "jeep")].iloc[0]
    assert (r["dataset"], r["kind"], r["model"], r["data_source"], r["n_edits"], r["seed"]) == \
        ("counterfact", "counterfact", "smollm2", "bundled", 40, 0)
    assert r["ES_mean"] == 99.0 and r["ES_ci95"] == pytest.approx(3.21) and r["Score_mean"] == 85.9
    assert (r["target_seconds"], r["edit_seconds"], r["eval_seconds"]) == (1.0, 2.0, 3.0)
    # a single file and a list of files load the same way
    assert len(load_metrics(r["file"])) == 1
    assert len(load_metrics(sorted(metrics_dir.glob("*.json"))[:2])) == 2


def test_undefined_interval_loads_as_nan(tmp_path: Path):
    d = write_runs(tmp_path / "m", [run_json("memit", "zsre", 90.0, 80.0, 40.0, 60.0, ci=None)])
    df = load_metrics(d)
    assert math.isnan(df.iloc[0]["ES_ci95"])
    assert results_table(df, "zsre").loc["MEMIT", "ES"] == "90.0 ± n/a"


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r["summary"].pop("GS"), "summary.GS.mean"),
    (lambda r: r["summary"]["LS"].update(mean="high"), "summary.LS.mean"),
    (lambda r: r["summary"]["ES"].update(mean=140.0), "summary.ES.mean"),
    (lambda r: r.pop("method"), "method"),
    (lambda r: r["model"].pop("key"), "model.key"),
    (lambda r: r.update(seed="0"), "seed"),
    (lambda r: r["timing"].update(edit_seconds=-1), "timing.edit_seconds"),
])
def test_malformed_file_names_file_and_field(tmp_path: Path, mutate, field: str):
    run = run_json("memit", "zsre", 95.0, 89.0, 47.0, 70.0)
    mutate(run)
    d = write_runs(tmp_path / "m", [run])
    bad = str(next(d.glob("*.json")))
    with pytest.raises(InputError) as e:
        load_metrics(d)
    assert e.value.file == bad and e.value.field == field
    assert bad in str(e.value) and field in str(e.value)


def test_broken_json_and_missing_dir_name_the_file(tmp_path: Path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "memit_zsre.json").write_text('{"method": ')
    with pytest.raises(InputError, match="memit_zsre.json"):
        load_metrics(d)
    with pytest.raises(InputError, match="nope"):
        load_metrics(tmp_path / "nope")


def test_duplicate_run_is_refused(tmp_path: Path):
    d = write_runs(tmp_path / "m", [run_json("memit", "zsre", 95.0, 89.0, 47.0, 70.0)])
    (d / "copy.json").write_text(json.dumps(run_json("memit", "zsre", 95.0, 89.0, 47.0, 70.0)))
    with pytest.raises(InputError, match="several files"):
        load_metrics(d)


# ------------------------------------------------------------------ tables


def test_results_table_order_and_format(metrics_dir: Path):
    df = load_metrics(metrics_dir)
    t = results_table(df, "counterfact")
    assert list(t.index) == ["Unedited", "MEMIT", "JEEP", "abc_custom", "zzz_custom"]
    assert list(t.columns) == ["Score", "ES", "GS", "LS"]
    assert t.loc["JEEP", "ES"] == "99.0 ± 3.2"
    assert t.loc["JEEP", "GS"] == "85.0 ± 3.2"
    assert t.loc["Unedited", "Score"] == "19.7 ± 3.2"
    note = t.attrs["note"]
    for part in ("smollm2", "bundled", "Edits per run: 40", "Seeds: 0", "t-interval over per-record values"):
        assert part in note
    assert list(results_table(df, "zsre").index) == ["MEMIT"]


def test_full_method_order(tmp_path: Path):
    methods = ["jeep", "alphaedit", "pmet", "memit", "rome", "ft_wd", "none"]
    d = write_runs(tmp_path / "m", [run_json(m, "zsre", 50, 50, 50, 50) for m in methods])
    assert list(results_table(load_metrics(d), "zsre").index) == \
        ["Unedited", "FT-WD", "ROME", "MEMIT", "PMET", "AlphaEdit", "JEEP"]


def test_several_seeds_use_interval_over_seed_means(tmp_path: Path):
    d = write_runs(tmp_path / "m", [run_json("jeep", "zsre", es, 80.0, 40.0, 60.0, seed=s)
                                    for s, es in enumerate((90.0, 92.0, 94.0))])
    agg = aggregate_runs(load_metrics(d), "zsre")
    assert agg.loc["jeep", "ES_mean"] == pytest.approx(92.0)
    # t_{0.975,2} * sd / sqrt(3) with sd = 2
    assert agg.loc["jeep", "ES_ci95"] == pytest.approx(4.302653 * 2 / math.sqrt(3), rel=1e-5)
    assert agg.loc["jeep", "GS_ci95"] == 0.0
    t = results_table(load_metrics(d), "zsre")
    assert t.loc["JEEP", "ES"] == "92.0 ± 5.0"
    assert "Seeds: 0, 1, 2" in t.attrs["note"] and "3 per-seed means" in t.attrs["note"]


def test_mixed_models_or_scales_must_be_chosen(tmp_path: Path):
    d = write_runs(tmp_path / "m", [run_json("memit", "zsre", 90, 80, 40, 60),
                                    run_json("jeep", "zsre", 90, 80, 40, 60, model="other")])
    df = load_metrics(d)
    with pytest.raises(InputError, match="mix models"):
        results_table(df, "zsre")
    assert list(results_table(df, "zsre", model="other").index) == ["JEEP"]
    with pytest.raises(InputError, match="no runs for dataset 'counterfact'"):
        results_table(df, "counterfact")


def test_variants_of_one_method_are_told_apart_by_name(tmp_path: Path):
    runs = [run_json("jeep", "counterfact", 90, 80, 70, 79) | {"name": "jeep"},
            run_json("jeep", "counterfact", 80, 60, 75, 70) | {"name": "jeep-variant=no_step2"}]
    df = load_metrics(write_runs(tmp_path / "m", runs))
    t = results_table(df, "counterfact")
    assert list(t.index) == ["JEEP", "jeep-variant=no_step2"]
    assert t.loc["jeep-variant=no_step2", "ES"] == "80.0 ± 3.2"


def test_format_cell():
    assert format_cell(85.04, 0.449) == "85.0 ± 0.4"
    assert format_cell(float("nan"), 1.0) == "n/a"
    assert format_cell(None, None) == "n/a"


# ------------------------------------------------------------------ paper numbers


def test_paper_rows_spot_checks():
    t3 = paper_rows("table3", "LLaMA")
    assert list(t3.index) == ["Unedited", "MALMEN", "MEMIT", "PMET", "JEEP"]
    assert tuple(t3.loc["JEEP", ["Score", "ES", "GS", "LS"]]) == (85.9, 99.8, 85.4, 75.7)
    assert t3.loc["JEEP", "GS_ci95"] == 0.5
    t2 = paper_rows("table2", "GPT-J")
    assert list(t2.index) == ["Unedited", "FT-WD", "MEND", "ROME", "MALMEN", "MEMIT", "PMET", "JEEP"]
    assert tuple(t2.loc["ROME", ["Score", "ES", "GS", "LS"]]) == (2.6, 21.0, 19.6, 0.9)
    assert paper_rows("table2", "LLaMA").loc["Unedited", "LS"] == 49.2
    assert paper_rows("table3", "GPT-J").loc["FT-WD", "ES"] == 99.4
    assert t2.loc["MEND", "status"] == QUOTED and t2.loc["MALMEN", "status"] == QUOTED
    assert t2.loc["MEMIT", "status"] == RAN_HERE
    with pytest.raises(InputError):
        paper_rows("table4", "GPT-J")
    with pytest.raises(InputError):
        paper_rows("table2", "GPT-2")


# Rows where the paper's printed Score is not hmean(ES, GS, LS) of its printed (rounded) cells: ROME's
# LS of 0.9 is too coarse to pin the Score, and the LLaMA unedited row gives 45.0, not the printed 44.4.
PAPER_SCORE_MISMATCHES = {("table2", "GPT-J", "ROME"), ("table2", "LLaMA", "Unedited")}


def test_paper_scores_are_harmonic_means():
    # A typo in a hard-coded cell would break the Score = hmean(ES, GS, LS) identity (to rounding).
    from jeepkit.metrics import score
    mismatches = set()
    for table in ("table2", "table3"):
        for model in ("GPT-J", "LLaMA"):
            for label, r in paper_rows(table, model).iterrows():
                if abs(score(r["ES"], r["GS"], r["LS"]) - r["Score"]) > 0.1:
                    mismatches.add((table, model, label))
    assert mismatches == PAPER_SCORE_MISMATCHES


# ------------------------------------------------------------------ writing


def test_write_table_and_figure(metrics_dir: Path, tmp_path: Path):
    df = load_metrics(metrics_dir)
    t = results_table(df, "counterfact")
    csv, md = write_table(t, tmp_path / "out" / "tables" / "results_counterfact")
    assert csv.name == "results_counterfact.csv" and md.name == "results_counterfact.md"
    back = pd.read_csv(csv, index_col=0)
    assert list(back.index) == list(t.index) and back.loc["JEEP", "ES"] == "99.0 ± 3.2"
    text = md.read_text()
    assert "| JEEP" in text and "99.0 ± 3.2" in text and t.attrs["note"] in text
    png, pdf = bar_figure(df, "counterfact", tmp_path / "out" / "figures" / "results_counterfact.png")
    assert png.exists() and png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf == png.with_suffix(".pdf") and pdf.read_bytes()[:5] == b"%PDF-"
    assert not list((tmp_path / "out").rglob("*.tmp"))


# ------------------------------------------------------------------ notebook


def _kernel_or_skip() -> None:
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
        import papermill  # noqa: F401
    except ImportError as e:  # pragma: no cover - environment dependent
        pytest.skip(f"papermill/jupyter_client not installed: {e}")
    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:  # pragma: no cover - environment dependent
        pytest.skip("no 'python3' Jupyter kernel; install one with "
                    "`.venv/bin/python -m ipykernel install --sys-prefix --name python3`")


def test_results_notebook_runs_with_papermill(metrics_dir: Path, tmp_path: Path, monkeypatch):
    _kernel_or_skip()
    import papermill as pm

    # The kernel is a child process: make sure it imports this checkout's jeepkit.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    reports = tmp_path / "reports"
    out_nb = tmp_path / "results.out.ipynb"
    pm.execute_notebook(str(NOTEBOOK), str(out_nb), kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
                        parameters={"metrics_dir": str(metrics_dir), "reports_dir": str(reports),
                                    "datasets": ["counterfact", "zsre", "absent"]})
    for ds in ("counterfact", "zsre"):
        for f in (f"tables/results_{ds}.csv", f"tables/results_{ds}.md", f"figures/results_{ds}.png",
                  f"figures/results_{ds}.pdf"):
            assert (reports / f).stat().st_size > 0, f
    assert not (reports / "tables" / "results_absent.csv").exists()
    text = out_nb.read_text()
    assert "no runs for: absent" in text and "quoted, not reproduced" in text


# ================================================================== metrics trees (Tables 1-4, Fig. 4, Fig. 6)

from jeepkit.metrics import score as hmean_score  # noqa: E402
from jeepkit.reporting import (  # noqa: E402
    ABLATION_LABELS, NOT_RUN, OURS, PAPER_REFERENCE, ablation_frame, case_study_frame, comparison_table,
    load_group, load_scaling, placeholder_figure, scaling_figure, scaling_frame, sweep_figure, sweep_frame, table4,
)


class MetricsTree:
    """Writes a fake `metrics/` tree laid out like the pipeline's (`edit_and_evaluate`, `scaling`)."""

    def __init__(self, root: Path, *, model: str = "smollm2", model_id: str = "HuggingFaceTB/SmolLM2-135M-Instruct",
                 source: str = "bundled", n_edits: int = 12, ci: float | None = 2.0):
        self.root, self.model, self.model_id, self.source, self.n_edits, self.ci = root, model, model_id, source, \
            n_edits, ci

    def _summary(self, dataset: str, es: float, gs: float, ls: float, n: int, ci: float | None) -> dict[str, Any]:
        def m(v: float) -> dict[str, Any]:
            return {"mean": v, "ci95": ci, "n": n}
        kind = "zsre" if dataset == "zsre" else "counterfact"
        return {"kind": kind, "n_records": n, "ES": m(es), "GS": m(gs), "LS": m(ls), "Score": m(hmean_score(es, gs, ls)),
                "interval": {"ES/GS/LS": "t-interval over per-record values, confidence 0.95",
                             "Score": "percentile bootstrap over records (2000 resamples, seed 0), half-width"}}

    def _header(self, method: str, dataset: str, seed: int, n: int) -> dict[str, Any]:
        return {"method": method, "dataset": dataset, "kind": "zsre" if dataset == "zsre" else "counterfact",
                "model": {"key": self.model, "id": self.model_id, "revision": "r0"},
                "data": {"source": self.source, "n_cases": n, "provenance": {"source": self.source}},
                "profile": "test", "seed": seed, "n_edits": n, "batch_size": n}

    def run(self, group: str, method: str, dataset: str, es: float, gs: float, ls: float, *, seed: int = 0,
            overrides: dict[str, Any] | None = None, case_study: dict[str, Any] | None = None,
            ci: float | None | str = "default", timing: dict[str, float] | None = None) -> Path:
        overrides = overrides or {}
        name = method + "".join(f"-{k}={v}" for k, v in sorted(overrides.items()))
        ci = self.ci if ci == "default" else ci
        obj = {**self._header(method, dataset, seed, self.n_edits), "overrides": overrides, "group": group,
               "name": name, "hparams": {"lr": 0.5, **overrides},
               "summary": self._summary(dataset, es, gs, ls, self.n_edits, ci), "case_study": case_study,
               "timing": timing or {"target_seconds": 10.0, "edit_seconds": 2.0, "eval_seconds": 3.0}}
        path = self.root / group / f"{name}_{dataset}_s{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj))
        return path

    def main(self, method: str, dataset: str, es: float, gs: float, ls: float, **kw: Any) -> Path:
        return self.run("main", method, dataset, es, gs, ls, **kw)

    def ablation(self, variant: str, dataset: str, es: float, gs: float, ls: float, **kw: Any) -> Path:
        return self.run("ablation", "jeep", dataset, es, gs, ls, overrides={"variant": variant}, **kw)

    def sweep(self, gamma: float, dataset: str, es: float, gs: float, ls: float, **kw: Any) -> Path:
        return self.run("sweep", "jeep", dataset, es, gs, ls, overrides={"clamp_high": gamma, "clamp_low": 1.0}, **kw)

    def scaling(self, method: str, dataset: str, points: list[tuple[int, float, float, float]], *, seed: int = 0,
                max_chunks: int = 2) -> Path:
        max_m = max(p[0] for p in points)
        pts = []
        for m, es, gs, ls in points:
            n_chunks = min(max_chunks, max_m // m)
            pts.append({"m": m, "n_chunks": n_chunks, "n_records": m * n_chunks,
                        "summary": self._summary(dataset, es, gs, ls, m * n_chunks, self.ci),
                        "timing": {"target_seconds": 1.0, "edit_seconds": 0.5, "eval_seconds": 0.5}})
        obj = {**self._header(method, dataset, seed, max_m), "overrides": {}, "group": "scaling", "name": method,
               "hparams": {}, "points": pts}
        path = self.root / "scaling" / f"{method}_{dataset}_s{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj))
        return path


def case_study(greedy: list[str], *, case_id: int = 7) -> dict[str, Any]:
    return {"case_id": case_id, "subject": "Henry S. LeBlanc", "target_new": "Canada", "target_true": "France",
            "prompts": ["Where was Henry S. LeBlanc from?", "Where did Henry S. LeBlanc come from?",
                        "Where does creatine come from in the body?"], "greedy": greedy}


ABLATION_SCORES = {  # (ES, GS, LS) per variant: JEEP best, w/o Step 2 worst, like the paper
    "wo_low": (90.0, 57.0, 61.0), "wo_high": (98.0, 80.0, 76.0), "wo_step2": (36.0, 24.0, 81.0),
    "wo_step3": (95.0, 77.0, 75.0), "separate": (98.0, 83.0, 72.0), "even_spread": (98.8, 84.0, 76.3),
    "mhsa_step3": (99.0, 86.0, 74.0),
}


@pytest.fixture
def tree(tmp_path: Path) -> MetricsTree:
    t = MetricsTree(tmp_path / "metrics")
    for ds in ("counterfact", "zsre"):
        t.main("none", ds, 13.0, 16.0, 84.0, case_study=case_study(["France", "France", "the liver"]))
        t.main("memit", ds, 98.0, 80.0, 76.0, case_study=case_study(["Canada", "of course", "the liver"]))
        t.main("pmet", ds, 98.5, 86.0, 73.0, case_study=case_study(["Canada", "Canada", "Where is creatine"]))
        t.main("jeep", ds, 99.8, 85.4, 75.7, case_study=case_study(["Canada", "Canada", "the liver"]))
    for v, (es, gs, ls) in ABLATION_SCORES.items():
        t.ablation(v, "counterfact", es, gs, ls)
    return t


def test_load_group_absent_is_empty(tmp_path: Path):
    assert load_group(tmp_path / "nothing", "main").empty
    assert load_scaling(tmp_path / "nothing").empty


def test_comparison_table_has_ours_and_paper_rows(tree: MetricsTree):
    t = comparison_table(load_group(tree.root, "main"), "zsre")
    assert list(t.columns) == ["Source", "Method", "Score", "ES", "GS", "LS", "status"]
    ours = t[t["Source"] == OURS]
    assert list(ours["Method"]) == ["Unedited", "MEMIT", "PMET", "JEEP"]
    assert t.loc["paper GPT-J: MEND", "status"] == QUOTED and t.loc["paper LLaMA: MALMEN", "status"] == QUOTED
    assert t.loc["paper LLaMA: JEEP", "status"] == PAPER_REFERENCE and t.loc["paper LLaMA: JEEP", "Score"] == "72.3"
    assert "smollm2" in t.attrs["note"] and "Table 2 (zsRE)" in t.attrs["note"]
    # no runs of ours: the paper's rows only, and the note says so
    empty = comparison_table(load_group(tree.root / "absent", "main"), "counterfact")
    assert (empty["Source"] != OURS).all() and "no runs of ours" in empty.attrs["note"]
    assert "Table 3 (Multi-CounterFact)" in empty.attrs["note"]


def test_table4_order_labels_and_missing_rows(tree: MetricsTree):
    t = table4(tree.root, "counterfact")
    assert list(t.index) == ["w/o δ′ & Step 2", "w/o δ* & Step 3", "w/o Step 2", "w/o Step 3", "Separate Optimization",
                             "Even Spread in Step 2", "w/ MHSA in Step 3", "JEEP"]
    assert list(t.index) == list(ABLATION_LABELS.values())
    assert t.loc["JEEP", "ES"] == "99.8 ± 2.0"  # full JEEP comes from metrics/main
    assert t.loc["w/o Step 2", "Score (paper)"] == "40.0" and t.loc["JEEP", "LS (paper)"] == "75.7"
    assert (t["status"] == RAN_HERE).all()
    note = t.attrs["note"]
    for part in ("smollm2", "bundled", "Edits per run: 12", "Seeds: 0", "per-record t-interval", "LLaMA-7B"):
        assert part in note
    fr = ablation_frame(tree.root, "counterfact")
    assert fr.loc["wo_step2", "Score_mean"] == pytest.approx(hmean_score(36.0, 24.0, 81.0))
    # a variant without runs stays in place, marked "not run"; another dataset has only full JEEP
    (tree.root / "ablation" / "jeep-variant=separate_counterfact_s0.json").unlink()
    t = table4(tree.root, "counterfact")
    assert t.loc["Separate Optimization", "Score"] == NOT_RUN and t.loc["Separate Optimization", "status"] == NOT_RUN
    z = table4(tree.root, "zsre")
    assert (z["status"] == NOT_RUN).sum() == 7 and z.loc["JEEP", "status"] == RAN_HERE


def test_table4_states_what_each_variant_changed(tree: MetricsTree):
    """‖ΔW‖_F per region and the edited model's target probability sit beside the metrics: a region a variant
    leaves alone reads 0 (recorded runs), a run that recorded nothing reads "–"."""
    for variant, norms, p in (("wo_step3", {"low": 1.25}, 0.41), ("mhsa_step3", {"low": 1.25, "high": 0.0},
                                                                         0.41)):
        f = tree.ablation(variant, "counterfact", 90.0, 80.0, 70.0)
        obj = json.loads(f.read_text())
        obj["work"] = {"mean_opt_steps": 3.0, "delta_frobenius": norms, "target_prob_with_deltas": 0.93,
                       "target_prob_after_edit": p}
        f.write_text(json.dumps(obj))
    t = table4(tree.root, "counterfact")
    assert (t.loc["w/o Step 3", "‖ΔW‖ low"], t.loc["w/o Step 3", "‖ΔW‖ high"]) == ("1.25", "0")
    assert t.loc["w/ MHSA in Step 3", "‖ΔW‖ high"] == "0" and t.loc["w/ MHSA in Step 3", "P(target) after edit"] == "0.410"
    assert t.loc["JEEP", "‖ΔW‖ low"] == "–"  # the fake main run recorded no work


def test_table4_seeds_use_interval_over_seed_means(tree: MetricsTree):
    for s, es in ((1, 97.0), (2, 99.0)):
        tree.ablation("wo_high", "counterfact", es, 80.0, 76.0, seed=s)
    fr = ablation_frame(tree.root, "counterfact")
    assert fr.loc["wo_high", "n_seeds"] == 3 and fr.loc["wo_high", "ES_mean"] == pytest.approx(98.0)
    assert fr.loc["wo_high", "interval"].startswith("t-interval over seed means")
    assert "t-interval over seed means (3 seeds)" in fr.attrs["note"] and "per-record t-interval" in fr.attrs["note"]


def test_sweep_frame_and_figure(tree: MetricsTree, tmp_path: Path):
    for g, (es, gs, ls) in {1.0: (90, 60, 70), 0.05: (80, 50, 80), 0.25: (99, 85, 76), 0.5: (97, 80, 74)}.items():
        tree.sweep(g, "counterfact", es, gs, ls)
    fr = sweep_frame(tree.root, "counterfact")
    assert list(fr["gamma"]) == [0.05, 0.25, 0.5, 1.0]
    assert list(fr["clamp_low"]) == [1.0] * 4 and fr.loc[1, "ES_mean"] == 99
    assert "γ′ = 1" in fr.attrs["note"] and "per-record t-interval" in fr.attrs["note"]
    png, pdf = sweep_figure(fr, tmp_path / "fig" / "fig6_clamp.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    assert sweep_frame(tree.root, "zsre").empty


def test_scaling_frame_and_figure(tree: MetricsTree, tmp_path: Path):
    pts = {"memit": [(1, 100, 90, 80), (3, 99, 85, 78), (12, 95, 80, 75)],
           "pmet": [(1, 100, 92, 79), (3, 99, 86, 77), (12, 96, 82, 74)],
           "jeep": [(1, 100, 93, 80), (3, 100, 88, 78), (12, 98, 85, 76)]}
    for m, p in pts.items():
        tree.scaling(m, "counterfact", p)
    tree.scaling("jeep", "counterfact", [(1, 100, 91, 80), (3, 100, 86, 78), (12, 97, 84, 76)], seed=1)
    fr = scaling_frame(tree.root, "counterfact")
    assert list(fr["method"]) == ["memit"] * 3 + ["pmet"] * 3 + ["jeep"] * 3
    assert list(fr["m"][:3]) == [1, 3, 12] and list(fr["n_chunks"][:3]) == [2, 2, 1]
    j12 = fr[(fr.method == "jeep") & (fr.m == 12)].iloc[0]
    assert j12["n_seeds"] == 2 and j12["ES_mean"] == pytest.approx(97.5)
    assert j12["interval"].startswith("t-interval over seed means")
    assert fr[(fr.method == "memit")]["interval"].str.startswith("per-record t-interval").all()
    assert "m = 1 ... 12" in fr.attrs["note"] and "smollm2" in fr.attrs["note"]
    assert list(scaling_frame(tree.root, "counterfact", methods=("jeep",))["method"].unique()) == ["jeep"]
    png, pdf = scaling_figure(fr, tmp_path / "figures" / "fig4_scaling.png")
    assert png.stat().st_size > 1000 and pdf.read_bytes()[:5] == b"%PDF-"
    # nothing to plot: a placeholder is still written
    empty = scaling_frame(tree.root, "zsre")
    assert empty.empty and "no runs" in empty.attrs["note"]
    png, pdf = scaling_figure(empty, tmp_path / "figures" / "empty.png")
    assert png.exists() and pdf.exists()


def test_scaling_file_errors_name_the_field(tree: MetricsTree):
    path = tree.scaling("jeep", "counterfact", [(1, 100, 90, 80)])
    obj = json.loads(path.read_text())
    obj["points"][0]["summary"]["ES"]["mean"] = 170
    path.write_text(json.dumps(obj))
    with pytest.raises(InputError) as e:
        load_scaling(tree.root)
    assert e.value.field == "points.0.summary.ES.mean" and e.value.file == str(path)


def test_case_study_frame(tree: MetricsTree):
    t = case_study_frame(tree.root, "zsre")
    assert list(t.index) == ["Edited", "Equivalent", "Unrelated"]
    assert list(t.columns) == ["Input prompt", "Expected", "Unedited", "MEMIT", "PMET", "JEEP"]
    assert t.loc["Equivalent", "MEMIT"] == "of course" and t.loc["Unrelated", "PMET"] == "Where is creatine"
    assert t.loc["Edited", "Expected"] == "Canada"
    note = t.attrs["note"]
    for part in ("record 7", "Henry S. LeBlanc", "smollm2", "Edits per run: 12", "Seed: 0", "Greedy", "Paper Table 1"):
        assert part in note
    assert list(case_study_frame(tree.root, "zsre", unedited=False).columns)[2:] == ["MEMIT", "PMET", "JEEP"]
    (tree.root / "main" / "pmet_zsre_s0.json").unlink()
    assert (case_study_frame(tree.root, "zsre")["PMET"] == "no run").all()
    assert case_study_frame(tree.root, "mcf").empty
    tree.main("memit", "zsre", 98.0, 80.0, 76.0, case_study=case_study(["x", "y", "z"], case_id=9))
    with pytest.raises(InputError, match="case_id"):
        case_study_frame(tree.root, "zsre")


def test_placeholder_figure(tmp_path: Path):
    png, pdf = placeholder_figure(tmp_path / "p.png", "Fig. 6", "no runs")
    assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:5] == b"%PDF-"


def test_saved_figures_are_byte_identical_on_rerun(tmp_path):
    import time

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jeepkit.io import save_figure

    digests = []
    for name in ("a", "b"):
        time.sleep(1.1)  # the PDF date has one-second resolution
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        png, pdf = save_figure(fig, tmp_path / f"{name}.png")
        plt.close(fig)
        digests.append((png.read_bytes(), pdf.read_bytes()))
    assert digests[0] == digests[1]  # no timestamp: DVC and git see no change when nothing changed


def test_paper_numbers_are_data_and_consistent_across_tables():
    """paper/jeep.json: Table 4's full JEEP row is Table 3's LLaMA JEEP row; Score ≤ max(ES, GS, LS) as a
    harmonic mean must be; every method the tables print has a label."""
    from jeepkit import reporting as rp

    t3 = rp.paper_rows("table3", "LLaMA")
    full = rp.paper_table4_values("full")
    assert full == tuple(float(t3.loc["JEEP", m]) for m in rp.METRIC_COLUMNS)
    for table in ("table2", "table3"):
        for model in ("GPT-J", "LLaMA"):
            rows = rp.paper_rows(table, model)
            assert (rows["Score"] <= rows[["ES", "GS", "LS"]].max(axis=1) + 1e-9).all()
            assert set(rows.index) <= set(rp.METHOD_LABELS.values()) | set(rp.NOT_IMPLEMENTED)
    assert list(rp.paper_table4().index) == list(rp.ABLATION_ORDER)


def test_markdown_table_keeps_one_row_per_record_when_a_cell_holds_newlines(tmp_path: Path):
    from jeepkit.reporting.tables import write_table
    df = pd.DataFrame({"JEEP": ["India\nIndia\nIndia", "a | b"]}, index=pd.Index(["Unrelated", "Edited"], name="Prompt"))
    _, md = write_table(df, tmp_path / "t")
    rows = [line for line in md.read_text().splitlines() if line.startswith("|")]
    assert len(rows) == 2 + 2  # header, rule, two records
    assert "India ⏎ India ⏎ India" in rows[2] and "a \\| b" in rows[3]
    assert pd.read_csv(tmp_path / "t.csv", index_col=0).loc["Unrelated", "JEEP"] == "India\nIndia\nIndia"


def test_error_bars_stay_inside_0_100():
    import numpy as np
    from jeepkit.reporting.figures import _clipped_err
    err = _clipped_err(np.array([95.0, 3.0, 50.0, np.nan]), np.array([10.0, 10.0, 5.0, np.nan]))
    assert err.tolist() == [[10.0, 3.0, 5.0, 0.0], [5.0, 10.0, 5.0, 0.0]]


# ------------------------------------------------------------------ protocols (issue 14)


def _with_free(run: dict[str, Any], es: float, gs: float, ls: float, ppl: tuple[float, float] | None,
               ci: float | None = 5.0) -> dict[str, Any]:
    """A run as the batch stages write it since issue 14: free-generation scores and held-out drift."""
    cell = lambda v: {"exact": {"mean": v, "ci95": ci, "n": 40}, "contains": {"mean": v + 1, "ci95": ci, "n": 40}}  # noqa: E731
    run["summary"]["free_generation"] = {"protocol": "free_generation", "ES": cell(es), "GS": cell(gs), "LS": cell(ls),
                                         "max_new_tokens": 8}
    for k in ("ES", "GS", "LS", "Score"):
        run["summary"][k]["protocol"] = "teacher_forced_prob"
    if ppl is not None:
        run["drift"] = {"protocol": "perplexity", "perplexity_before": ppl[0], "perplexity_after": ppl[1]}
    return run


def test_protocols_table_puts_free_generation_beside_teacher_forcing(tmp_path: Path):
    from jeepkit.reporting import protocols_table

    d = write_runs(tmp_path / "metrics", [
        _with_free(run_json("memit", "counterfact", 98.0, 80.0, 76.0, 84.0), 87.5, 40.0, 10.0, (7.96, 8.01)),
        _with_free(run_json("none", "counterfact", 13.0, 16.0, 84.0, 19.7), 0.0, 0.0, 12.0, (7.96, 7.96)),
        run_json("jeep", "counterfact", 99.0, 85.0, 75.0, 85.9),  # an older run: no free generation, no drift
    ])
    t = protocols_table(load_metrics(d), "counterfact")
    assert list(t.index) == ["Unedited", "MEMIT", "JEEP"]
    assert t.loc["MEMIT", "ES teacher-forced"] == "98.0 ± 3.2" and t.loc["MEMIT", "ES free exact"] == "87.5 ± 5.0"
    assert t.loc["MEMIT", "LS free contains"] == "11.0 ± 5.0"
    assert t.loc["MEMIT", "perplexity before → after"] == "7.960 → 8.010"
    assert t.loc["MEMIT", "protocol"] == "teacher_forced_prob / free_generation"
    assert t.loc["JEEP", "ES free exact"] == "n/a" and t.loc["JEEP", "perplexity before → after"] == "not run"
    assert "free generation" in t.attrs["note"] and "unedited row" in t.attrs["note"]
    assert "Fluency (GE)" not in t.columns  # no run has generation prompts (the mirror and bundled data)


def test_protocols_table_adds_fluency_and_consistency_from_official_runs(tmp_path: Path):
    from jeepkit.reporting import protocols_table

    memit = _with_free(run_json("memit", "counterfact", 98.0, 80.0, 76.0, 84.0), 87.5, 40.0, 10.0, (7.96, 8.01))
    memit["summary"]["generation"] = {"protocol": "free_generation", "GE": {"mean": 612.3, "ci95": 4.1, "n": 40},
                                      "RS": {"mean": None, "ci95": None, "n": 0}}  # no snippets: not scored
    none = _with_free(run_json("none", "counterfact", 13.0, 16.0, 84.0, 19.7), 0.0, 0.0, 12.0, (7.96, 7.96))
    t = protocols_table(load_metrics(write_runs(tmp_path / "metrics", [memit, none])), "counterfact")
    assert t.loc["MEMIT", "Fluency (GE)"] == "612.3 ± 4.1" and t.loc["MEMIT", "Consistency (RS)"] == "n/a"
    assert t.loc["Unedited", "Fluency (GE)"] == "n/a"
    memit["summary"]["generation"]["GE"]["ci95"] = -1.0
    with pytest.raises(InputError, match="summary.generation.GE.ci95"):
        load_metrics(write_runs(tmp_path / "bad", [memit]))


def test_free_generation_field_errors_name_the_file(tmp_path: Path):
    bad = _with_free(run_json("memit", "counterfact", 98.0, 80.0, 76.0, 84.0), 87.5, 40.0, 10.0, (7.9, 8.0))
    bad["summary"]["free_generation"]["GS"]["exact"]["mean"] = 140.0
    d = write_runs(tmp_path / "metrics", [bad])
    with pytest.raises(InputError) as e:
        load_metrics(d)
    assert "summary.free_generation.GS.exact.mean" in str(e.value) and "run00_memit_counterfact.json" in str(e.value)
