"""`make grid` (DVC's queue, two CPU workers) and `make cluster` against a real SLURM (munged + slurmctld + slurmd on 127.0.0.1, Debian's slurm-wlm, which
.ci/run installs): the embedded default's cheap stages as SLURM jobs equal a local run of the same stages
(dvc.lock hashes and metrics bytes); a job killed mid-stage pushes nothing and RESUME=1 finishes the grid;
a code change makes the changed stages re-run, not restore; bad input gets one line each."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from jeepkit.grid import local_slurm
from jeepkit.grid.snapshot import check_out, take

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(local_slurm.missing_daemons()) and not os.environ.get("CI_REQUIRE_SLURM"),
                                 reason="slurm-wlm not installed (.ci/run installs it)")]

# the embedded default, shrunk to a few minutes: one dataset, the unedited model and MEMIT on 2 records
PROFILE = {"overrides": {"data.datasets": ["counterfact"], "edit.methods": ["none", "memit"], "edit.n_edits": 2,
                         "edit.batch_size": 2, "stats.n_samples": 16, "stats.max_length": 32},
           # one core per job, so the two-core test node runs two jobs at once
           "cluster": {"resources": {"default": {"cpus": 1, "mem_gb": 4, "time_min": 30}}}}
TARGET = "report@counterfact"
STAGES = ["data@counterfact", "prepare_model", "stats", "edit@none-counterfact-0", "edit@memit-counterfact-0",
          TARGET]


# one thread, as a one-core SLURM job and each of two queue workers on two cores run: float reductions depend
# on the thread count, and the comparison is byte for byte
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def env() -> dict[str, str]:
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
         "TOKENIZERS_PARALLELISM": "false", "DVC_NO_ANALYTICS": "1", "MPLBACKEND": "Agg",
         "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for k in ("JEEPKIT_FAULT", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        e.pop(k, None)
    return e


@functools.cache
def snapshot():
    return take(ROOT)  # once: every checkout of the module is the same tree, even if ROOT is edited meanwhile


def checkout(base: Path) -> Path:
    """This working tree (committed or not) in the CI layout: base/project beside base/shared."""
    dest = base / "project"
    check_out(ROOT, snapshot(), dest)
    if SHARED.exists():
        (base / "shared").symlink_to(SHARED)
    return dest


def grid(cwd: Path, *args: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**env(), "PYTHONPATH": str(cwd / "src"), **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "jeepkit.grid", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=900)


def wait_for(conf: Path, job: str, timeout: float = 900) -> str:
    e = {**env(), "SLURM_CONF": str(conf)}
    t0 = time.time()
    while time.time() - t0 < timeout:
        r = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, env=e)
        state = next((p.split("=", 1)[1] for p in r.stdout.split() if p.startswith("JobState=")), None)
        if state not in (None, "PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
            return state
        time.sleep(2)
    raise AssertionError(f"job {job} still running after {timeout} s")


def wait_idle(conf: Path, timeout: float = 900) -> None:
    """Until no job is left in the queue: a killed job cancels the final job at once, while a sibling job of
    the same submission may still be running (and RESUME=1 refuses while one is)."""
    e = {**env(), "SLURM_CONF": str(conf)}
    t0 = time.time()
    while time.time() - t0 < timeout:
        r = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, env=e)
        if r.returncode == 0 and not r.stdout.strip():
            return
        time.sleep(2)
    raise AssertionError(f"jobs still queued after {timeout} s: {r.stdout}")


def lock_entries(project: Path) -> dict:
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {s: lock[s] for s in STAGES}


def final_job(out: str) -> str:
    return out.split("final job ")[1].split(";")[0]


def stage_logs(gdir: Path, gid: str) -> dict[str, str]:
    """stage -> its job's log (a job array writes one log per task, named by the array)."""
    out = {}
    for f in (gdir / "logs").glob("*.log"):
        text = f.read_text()
        for line in text.splitlines():
            if line.startswith(f"grid {gid}: ") and " in /" in line:
                out[line.split(": ", 1)[1].split(" in /")[0]] = text
    return out


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    d = tmp_path_factory.mktemp("slurm")
    conf = local_slurm.up(d, cpus=2, mem_mb=12000)
    yield conf
    local_slurm.down(d)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The same stages run by `dvc exp run -S …` in a checkout of their own: the reference."""
    base = tmp_path_factory.mktemp("local")
    p = checkout(base)
    (base / "profile.yaml").write_text(yaml.safe_dump(PROFILE))
    t0 = time.time()
    r = subprocess.run([sys.executable, "stages/run_profile.py", str(base / "profile.yaml"), TARGET], cwd=p,
                       env={**env(), "PYTHONPATH": str(p / "src"), "JEEPKIT_TARGET_CACHE": str(base / "targets"),
                            **ONE_THREAD},
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    print(f"local run of {len(STAGES)} stages: {time.time() - t0:.0f} s")
    return p


def test_cluster_equals_local_run_and_resumes_after_a_killed_job(slurm, local_run, tmp_path):
    p = checkout(tmp_path)
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(PROFILE))
    remote = tmp_path / "remote"
    args = ["cluster", "--profile", str(tmp_path / "profile.yaml"), "--remote", str(remote), TARGET]
    e = {"SLURM_CONF": str(slurm)}

    status = lambda: subprocess.run(["git", "status", "--porcelain"], cwd=p, capture_output=True, text=True).stdout
    before = status()
    # 1. MEMIT's job is killed (SIGKILL) after its targets: as a pre-empted job would be
    r = grid(p, *args, extra_env={**e, "JEEPKIT_FAULT": "targets"})
    assert r.returncode == 0, r.stderr
    t0 = time.time()
    assert wait_for(slurm, final_job(r.stdout)) != "COMPLETED"
    wait_idle(slurm)  # the unedited stage's job may still be running when the killed one cancels the final job
    gdir = next((p / ".dvc/tmp/cluster").glob("*/grid.json")).parent
    done = {json.loads(f.read_text())["stage"] for f in (gdir / "done").glob("*.json")}
    assert "edit@memit-counterfact-0" not in done and TARGET not in done
    killed = stage_logs(gdir, gdir.name)["edit@memit-counterfact-0"]
    assert "stage edit@memit-counterfact-0 failed (dvc repro exit" in killed and "nothing was pushed" in killed
    assert {"prepare_model", "stats", "data@counterfact"} <= done
    # nothing of the killed stage reached the remote: every run-cache entry there belongs to a finished stage
    entries = {f.name for f in (remote / "runs").rglob("*") if f.is_file()}
    assert entries == {json.loads(f.read_text())["value"] for f in (gdir / "done").glob("*.json")}
    assert status() == before  # the failed grid wrote nothing into the submitting checkout

    # 2. RESUME=1 resubmits only what did not finish; the final job restores every stage in this checkout
    r = grid(p, *args, "--resume", extra_env=e)
    assert r.returncode == 0, r.stderr
    assert "1 stage jobs submitted (4 already done)" in r.stdout, r.stdout
    assert wait_for(slurm, final_job(r.stdout)) == "COMPLETED"
    print(f"cluster run (failed try + resume): {time.time() - t0:.0f} s")
    log = next((gdir / "logs").glob("finish.*.log")).read_text()
    # every stage a job ran is restored, from the run-cache or (where the committed dvc.lock already matches the
    # code and the profile leaves its params alone) as current; the report stage (uncached outputs) runs here
    summary = re.search(r"(\d+) stages restored \((\d+) from the run-cache, (\d+) already current in dvc\.lock\), "
                        r"(\d+) run in the submitting checkout", log)
    assert summary, log[-3000:]
    restored, cached, current, ran = map(int, summary.groups())
    assert (restored, ran) == (len(STAGES) - 1, 1), summary.group(0)
    # the stages the profile changes (smaller statistics, two edits) cannot be current: they restore from the cache
    assert cached >= 3, summary.group(0)
    assert lock_entries(p) == lock_entries(local_run)
    for f in ("metrics/main/memit_counterfact_s0.json", "metrics/main/none_counterfact_s0.json",
              "reports/tables/results_counterfact.csv"):
        assert (p / f).read_bytes() == (local_run / f).read_bytes(), f
    st = subprocess.run(["dvc", "status", TARGET], cwd=p, env=env(), capture_output=True, text=True)
    assert "up to date" in st.stdout, st.stdout

    # 3. after a code change the stages that import the changed module re-run, the others restore
    with open(p / "src/jeepkit/metrics.py", "a") as f:
        f.write("\n# a change\n")
    r = grid(p, *args, "--resume", extra_env=e)
    assert r.returncode == 0, r.stderr
    assert "changed since grid" in r.stdout and "re-runs those whose dependencies changed" in r.stdout
    assert wait_for(slurm, final_job(r.stdout)) == "COMPLETED"
    g2 = max((p / ".dvc/tmp/cluster").glob("*/grid.json"), key=lambda f: f.stat().st_mtime).parent
    assert g2 != gdir
    logs = stage_logs(g2, g2.name)
    assert "Running stage 'prepare_model'" not in logs["prepare_model"]  # restored: metrics.py is not its code
    assert "Running stage 'edit@memit-counterfact-0'" in logs["edit@memit-counterfact-0"]


def test_bad_input_one_line_each(slurm, tmp_path):
    p = checkout(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = {
        "no SLURM": (["cluster", "--remote", str(tmp_path / "r")], {"PATH": str(Path(sys.executable).parent)},
                     "no SLURM on the PATH"),
        "remote not writable": (["cluster", "--remote", str(blocker / "remote")], {"SLURM_CONF": str(slurm)},
                                "is not writable"),
        "nothing to resume": (["cluster", "--resume", "--remote", str(tmp_path / "r")], {"SLURM_CONF": str(slurm)},
                              "no grid was submitted"),
        "unknown stage": (["cluster", "--remote", str(tmp_path / "r"), "edit@nope"], {"SLURM_CONF": str(slurm)},
                          "unknown stage"),
        "sbatch refuses": (["cluster", "--remote", str(tmp_path / "r"), "data@counterfact"],
                           {"SLURM_CONF": str(tmp_path / "no-such.conf")}, "sbatch refused"),
    }
    for name, (args, extra, needle) in cases.items():
        r = grid(p, *args, extra_env=extra)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], (name, r.stdout, r.stderr)
    assert not list((p / ".dvc/tmp/cluster").glob("*/grid.json")) if (p / ".dvc/tmp/cluster").exists() else True


def test_queue_two_cpu_workers_equal_local_run(local_run, tmp_path):
    p = checkout(tmp_path)
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(PROFILE))
    t0 = time.time()
    # two experiments: 2 and 3 edits (a sweep over seeds would mix its runs with the committed seed-0 metrics)
    r = grid(p, "queue", "--profile", str(tmp_path / "profile.yaml"), "--jobs", "2", "--vary", "edit.n_edits=2,3",
             TARGET, extra_env={"JEEPKIT_TARGET_CACHE": str(tmp_path / "targets")})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    print(f"queue, 2 workers, 2 experiments: {time.time() - t0:.0f} s")
    assert "worker 2:" in r.stdout and "2 experiments succeeded, 0 failed" in r.stdout, r.stdout
    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=p, env=env(), capture_output=True,
                                      text=True, check=True).stdout)
    exps = {}
    for rev in shown:
        for e in rev.get("experiments") or []:
            for run in e.get("revs") or []:
                data = (run.get("data") or {})
                p_ = (((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})
                exps[run.get("name")] = ((p_.get("edit") or {}).get("n_edits"), run.get("rev"))
    # the two queued experiments (beside the temporary one of the shared stages); the 2-edit one, brought back,
    # is the local run: same dvc.lock hashes, same metrics bytes
    queued = re.findall(r"Queued experiment '([^']+)'", r.stdout)
    assert sorted(exps[n][0] for n in queued) == [2, 3], (queued, exps)
    rev = next(exps[n][1] for n in queued if exps[n][0] == 2)
    # read from the experiment's commit (`dvc exp apply` would also check out the DVC-cached outputs of every
    # stage of the committed default, which this fresh checkout's cache does not hold)
    show = lambda f: subprocess.run(["git", "show", f"{rev}:{f}"], cwd=p, capture_output=True, check=True).stdout
    lock = yaml.safe_load(show("dvc.lock"))["stages"]
    assert {s: lock[s] for s in STAGES} == lock_entries(local_run)
    for f in ("metrics/main/memit_counterfact_s0.json", "metrics/main/none_counterfact_s0.json",
              "reports/tables/results_counterfact.csv"):
        assert show(f) == (local_run / f).read_bytes(), f
