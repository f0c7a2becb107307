"""Profiles: the paper profile expands to every stage and validates without loading 6B weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from jeepkit.errors import ConfigError
from jeepkit.params import load_params
from jeepkit.runners.edit import scaling_sizes
from jeepkit.profiles import apply_overrides, dry_run, expand_runs, load_profile

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("model_key", ["llama7b", "gptj"])
def test_paper_profile_dry_run(model_key):
    params = load_params(ROOT / "params.yaml")
    prof = load_profile(ROOT / "profiles" / "paper.yaml")
    params = apply_overrides(params, prof["overrides"])
    if model_key in prof:
        params = apply_overrides(params, prof[model_key])
    summary = dry_run(params)
    n_seeds, n_ds, n_methods = 3, 2, len(params["edit"]["methods"])
    expected = n_seeds * (n_ds * n_methods + len(params["knowedit"]["methods"]) + len(params["ablation"]["variants"])
                          + len(params["sweep"]["clamp_high"]) + len(params["scaling"]["methods"])
                          + len(params["sequential"]["methods"]) * len(params["sequential"]["regularisers"]))
    assert summary["runs"] == expected
    assert "sequential@rome-rect-2" in summary["stages"]
    assert summary["depth"] == {"llama7b": 32, "gptj": 28}[model_key]


def test_default_and_real_small_profiles_validate():
    params = load_params(ROOT / "params.yaml")
    assert dry_run(params)["runs"] == len(expand_runs(params))
    real = apply_overrides(params, load_profile(ROOT / "profiles" / "real-small.yaml")["overrides"])
    assert real["data"]["source"] == "mirror"
    dry_run(real)
    bad = apply_overrides(real, {"sequential.total": 210})  # not a whole number of batches of 20
    with pytest.raises(ConfigError, match="not a multiple of sequential.batch"):
        dry_run(bad)


def test_embedded_24_profile_changes_only_the_edit_count():
    """The 24-edit profile is the embedded default with every cell (and Fig. 4's largest size) at 24, applied
    at once: the same runs, nothing else different."""
    params = load_params(ROOT / "params.yaml")
    p24 = apply_overrides(params, load_profile(ROOT / "profiles" / "embedded-24.yaml")["overrides"])
    assert (p24["edit"]["n_edits"], p24["edit"]["batch_size"], p24["scaling"]["max_edits"]) == (24, 24, 24)
    assert [r["stage"] for r in expand_runs(p24)] == [r["stage"] for r in expand_runs(params)]
    rest = {k: v for k, v in p24.items() if k not in ("profile", "edit", "scaling")}
    assert rest == {k: v for k, v in params.items() if k not in ("profile", "edit", "scaling")}
    assert scaling_sizes(24)[-1] == 24
    dry_run(p24)


def test_dry_run_reports_missing_covariance_and_bad_layers():
    params = load_params(ROOT / "params.yaml")
    bad = apply_overrides(params, {"stats.layers": [4, 5, 6, 7, 8, 9], "hparams.smollm2.memit.layers": [28, 29, 30]})
    with pytest.raises(ConfigError) as e:
        dry_run(bad)
    msg = str(e.value)
    assert "outside 0..29" in msg and "needs covariance of mlp_out@20" in msg


def test_scaling_sizes_match_the_paper_grid():
    assert scaling_sizes(10000) == [1, 2, 3, 6, 10, 18, 32, 56, 100, 178, 316, 562, 1000, 1778, 3162, 5623, 10000]
    assert scaling_sizes(12)[0] == 1 and scaling_sizes(12)[-1] == 12


def test_runs_score_what_their_dvc_stage_commands_say():
    """expand_runs (what the preflight and dry run cost) marks the stages whose dvc.yaml command scores
    teacher-forced only, and no other: the two lists are written separately and must not drift apart."""
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    groups = {"edit": "edit@", "knowedit": "knowedit@", "ablation": "ablation@", "sweep": "sweep@"}
    runs = expand_runs(load_params(ROOT / "params.yaml"))
    for group, prefix in groups.items():
        teacher_only = "--scores teacher_forced" in " ".join(stages[group]["cmd"].split())
        mine = [r for r in runs if r["stage"].startswith(prefix)]
        assert mine, group
        assert all((r.get("scores", "all") == "teacher_forced") == teacher_only for r in mine), group
    assert {g for g in groups if "--scores teacher_forced" in stages[g]["cmd"]} == {"ablation", "sweep"}
