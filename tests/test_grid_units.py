"""The grid's own logic without a cluster: resources per stage, job arrays and their dependencies, batch
scripts, the snapshot of an uncommitted working tree. tests/test_grid.py runs the real thing on SLURM."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from jeepkit.errors import ConfigError
from jeepkit.grid import cluster
from jeepkit.grid.dag import Node
from jeepkit.grid.slurm import Resources, write_script
from jeepkit.grid.snapshot import check_out, take, tree_of
from jeepkit.grid.state import Grid
from jeepkit.params import load_params
from jeepkit.profiles import load_profile, profile_params

ROOT = Path(__file__).resolve().parents[1]


def test_paper_profile_resources_follow_its_table_and_the_preflight():
    params = profile_params(load_params(ROOT / "params.yaml"), ROOT / "profiles/paper.yaml")
    cfg = load_profile(ROOT / "profiles/paper.yaml")["cluster"]
    r = cluster.resources_for(["stats", "edit@jeep-mcf-0", "edit@rome-mcf-0", "tables"], params, cfg)
    assert r["tables"].gpus == 0 and r["stats"].gpus == 1
    # the preflight's GPU-hours raise the time limit above the table's 120 min; ROME is the slowest editor
    assert r["edit@rome-mcf-0"].time_min > r["edit@jeep-mcf-0"].time_min > 120
    assert "--gres=gpu:1" in r["stats"].sbatch_args() and "--gres=gpu:1" not in r["tables"].sbatch_args()


@pytest.mark.parametrize("cfg, needle", [({"resource": {}}, "unknown keys ['resource']"),
                                         ({"resources": {"edit": {"gpu": 1}}}, "cluster.resources.edit")])
def test_misspelt_cluster_keys_are_refused(cfg, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        cluster.resources_for(["stats"], {"model": {}}, cfg)


def test_matrix_stages_with_one_upstream_go_in_one_array_and_dependents_wait_for_their_tasks(tmp_path, monkeypatch):
    calls = []

    def fake_sbatch(script, name, log, res, after, array=0):  # records what would be submitted
        calls.append((name, tuple(after), array))
        return str(100 + len(calls))

    monkeypatch.setattr(cluster, "sbatch", fake_sbatch)
    nodes = [Node("stats", ()), Node("edit@a-x-0", ("stats",)), Node("edit@b-x-0", ("stats",)),
             Node("tables", ("edit@a-x-0", "edit@b-x-0")), Node("edit@c-x-0", ("stats", "tables"))]
    res = {n.name: {**Resources().__dict__, "extra": []} for n in nodes}
    g = Grid(id="g", repo=str(tmp_path), remote=str(tmp_path / "r"), snapshot=None, profile=None, model_key=None,
             overrides={}, targets=[], links={}, stages=nodes, resources=res)
    (tmp_path / ".dvc/tmp/cluster/g/scripts").mkdir(parents=True)
    ids = cluster.submit_stages(g, nodes, Path("/usr/bin/python3"), {}, {})
    assert calls[0] == ("jeepkit-stats", (), 0)
    assert calls[1] == ("jeepkit-edit", ("101",), 2)  # one array of two tasks
    assert ids["edit@a-x-0"] == "102_0" and ids["edit@b-x-0"] == "102_1"
    assert calls[2] == ("jeepkit-tables", ("102_0", "102_1"), 0)
    assert calls[3] == ("jeepkit-edit_c-x-0", ("101", "103"), 0)  # same group, other upstream: its own job


def test_array_script_picks_its_stage(tmp_path):
    s = tmp_path / "a.sh"
    write_script(s, ["echo", "${STAGES[$SLURM_ARRAY_TASK_ID]}"], tmp_path, {"X": "a b"},
                 arrays={"STAGES": ["edit@m-x-0", "edit@n-x-0"]})
    out = subprocess.run(["bash", str(s)], env={"SLURM_ARRAY_TASK_ID": "1", "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert out.stdout.strip() == "edit@n-x-0", out.stderr


def test_snapshot_carries_uncommitted_and_untracked_files_without_touching_the_index(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    run = lambda *a, cwd=src: subprocess.run(["git", *a], cwd=cwd, check=True, capture_output=True, text=True)
    run("init", "-q")
    (src / "a.txt").write_text("one\n")
    (src / ".gitignore").write_text("ignored\n")
    run("add", "-A")
    run("-c", "user.email=x@y", "-c", "user.name=x", "commit", "-qm", "init")
    (src / "a.txt").write_text("two\n")
    (src / "new.txt").write_text("new\n")
    (src / "ignored").write_text("secret\n")
    before = run("status", "--porcelain").stdout
    snap = take(src)
    assert run("status", "--porcelain").stdout == before  # the user's index is untouched
    dest = tmp_path / "job" / "src"
    check_out(src, snap, dest)
    assert (dest / "a.txt").read_text() == "two\n" and (dest / "new.txt").read_text() == "new\n"
    assert not (dest / "ignored").exists()
    assert run("rev-parse", "HEAD", cwd=dest).stdout.strip() == snap.head
    assert tree_of(dest) == snap.tree
    (src / "a.txt").write_text("three\n")
    assert tree_of(src) != snap.tree  # a later edit is seen as a change
