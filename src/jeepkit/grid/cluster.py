"""`make cluster`: a profile's DVC stages as SLURM jobs that follow `dvc dag`, each running its stage with
DVC in a checkout of its own and pushing to a shared remote; a final job in the submitting checkout
restores every finished stage from the run-cache, leaving the dvc.lock a local run would leave.

Submit (`submit`), run one stage inside a job (`run_job`), finish (`finish`). `RESUME=1` resubmits only the
stages without a done marker; if the code or the params changed since, every stage is submitted again and
DVC decides which of them re-run (their run-cache keys changed) and which are restored."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..profiles import override_strings
from .dag import stage_graph, slug
from .remote import check_remote, configure, pull_entries, push_stage
from .slurm import Resources, job_state, require_sbatch, submit as sbatch, write_script
from .snapshot import check_out, take, tree_of
from .state import Grid, grid_id, grids_dir, latest, load, write_atomic

# Environment a job inherits from the submitting shell (besides PATH, which leads with this Python's bin).
PASS_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM",
            "DVC_NO_ANALYTICS", "MPLBACKEND", "HF_HOME", "JEEPKIT_DEBUG", "JEEPKIT_FAULT")


def prepare_checkout(g: Grid, dest: Path) -> Path:
    """A checkout of the grid's snapshot with its overrides applied to params.yaml and its links beside it."""
    from dvc.utils.hydra import apply_overrides

    if dest.parent.exists():
        shutil.rmtree(dest.parent)  # what a failed or pre-empted earlier try left
    check_out(g.repo, g.snapshot, dest)
    for name, target in g.links.items():
        os.symlink(target, dest.parent / name)
    if g.overrides:
        apply_overrides(str(dest / "params.yaml"), override_strings(g.overrides))
    return dest


def resources_for(stages: list[str], params: dict[str, Any], cluster_cfg: dict[str, Any]) -> dict[str, Resources]:
    """Per stage: the defaults, the profile's `cluster.resources.default`, then its entry for the stage's group
    (`edit`, `stats`, ...); the preflight's estimate raises the time limit (twice its hours + 10 min) and the
    memory (1.5× the weights + 4 GB) where it asks for more, and asks for a GPU on a CUDA profile."""
    unknown = set(cluster_cfg) - {"resources", "partition", "extra"}
    if unknown:
        raise ConfigError(f"profile cluster: unknown keys {sorted(unknown)} (known: extra, partition, resources)")
    table = dict(cluster_cfg.get("resources") or {})
    fields = set(Resources.__dataclass_fields__) - {"partition", "extra"}
    for group, spec in table.items():
        bad = set(spec or {}) - fields
        if bad:
            raise ConfigError(f"profile cluster.resources.{group}: unknown keys {sorted(bad)} (known: {sorted(fields)})")
    base = replace(Resources(partition=cluster_cfg.get("partition"), extra=tuple(cluster_cfg.get("extra") or ())),
                   **(table.get("default") or {}))
    try:
        from ..preflight import estimate
        estimates = {c.stage: c for c in estimate(params)}
    except Exception:  # a model the preflight does not know: the profile's table and the defaults only
        estimates = {}
    gpu = str((params.get("model") or {}).get("device", "auto")).startswith("cuda")
    out = {}
    for name in stages:
        r = replace(base, **(table.get(name.split("@")[0]) or {}))
        c = estimates.get(name)
        if c is not None:
            r = replace(r, time_min=max(r.time_min, int(math.ceil(c.total * 60 * 2)) + 10),
                        mem_gb=max(r.mem_gb, round(c.weights * 1.5 / 2**30 + 4, 1)),
                        gpus=r.gpus or (1 if gpu else 0))
        out[name] = r
    return out


def submit(repo: Path, remote: str, profile: str | None = None, model_key: str | None = None,
           targets: list[str] | None = None, resume: bool = False, links: list[str] | None = None) -> Grid:
    from ..config import validate_params
    from ..params import load_params
    from ..profiles import apply_overrides, load_profile, profile_overrides

    require_sbatch()
    repo = repo.resolve()
    remote_dir = check_remote(remote)
    snap = take(repo)
    overrides = profile_overrides(profile, model_key)
    params = validate_params(apply_overrides(load_params(repo / "params.yaml"), overrides))
    targets = list(targets or [])
    gid = grid_id(snap, overrides, targets, str(remote_dir))

    prev = latest(repo) if resume else None
    if resume and prev is None:
        raise ConfigError(f"RESUME=1: no grid was submitted from {repo} ({grids_dir(repo)} is empty)")
    if prev is not None and prev.id != gid:
        print(f"resume: the code, params, targets or remote changed since grid {prev.id} was submitted: every "
              f"stage is submitted again; DVC re-runs those whose dependencies changed and restores the rest "
              f"from the run-cache", flush=True)
    if prev is not None and prev.id == gid:
        g = prev
    else:
        link_map = {}
        for rel in links if links is not None else ["../shared"]:
            p = (repo / rel)
            if p.exists():
                link_map[Path(rel).name] = str(p.resolve())
        cfg = (load_profile(profile).get("cluster") or {}) if profile else {}
        g = Grid(id=gid, repo=str(repo), remote=str(remote_dir), snapshot=snap, profile=profile,
                 model_key=model_key, overrides=overrides, targets=targets, links=link_map, stages=[],
                 resources={})
        if g.dir.exists():
            raise ConfigError(f"grid {gid} was already submitted from this checkout ({g.dir}): RESUME=1 "
                              f"resubmits what did not finish")
        try:
            g.stages = stage_graph(prepare_checkout(g, g.dir / "plan" / repo.name), targets)
        except BaseException:
            shutil.rmtree(g.dir, ignore_errors=True)  # nothing recorded yet: a refused plan leaves no grid
            raise
        shutil.rmtree(g.dir / "plan")
        g.resources = {k: asdict(v) for k, v in resources_for([n.name for n in g.stages], params, cfg).items()}
    pending = [n for n in g.job_stages if g.done(n.name) is None]
    if g.submissions:  # a resume while the earlier jobs still wait or run would run stages twice
        last = g.submissions[-1]
        for job in [*(last["jobs"].get(n.name) for n in pending), last["finish"]]:
            state = job_state(job) if job else None
            if state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "SUSPENDED"):
                raise ConfigError(f"grid {g.id}: job {job} of the last submission is still {state}: wait for it "
                                  f"or scancel it before RESUME=1")

    py = Path(sys.executable)
    env = {"PATH": f"{py.parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "JEEPKIT_TARGET_CACHE": str(grids_dir(repo) / "targets")}
    env |= {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    for sub in ("scripts", "logs"):
        (g.dir / sub).mkdir(parents=True, exist_ok=True)
    new = not g.submissions
    g.save()  # before the first sbatch: a job may start at once and reads grid.json
    ids: dict[str, str] = {}
    try:
        submit_stages(g, pending, py, env, ids)
    except ConfigError as e:
        if not ids and new:
            shutil.rmtree(g.dir, ignore_errors=True)  # nothing reached SLURM: no grid either
            raise
        g.submissions.append({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "jobs": ids, "finish": None})
        g.save()
        raise ConfigError(f"{e} ({len(ids)} jobs of grid {g.id} were submitted before: scancel "
                          f"{' '.join(sorted(set(i.split('_')[0] for i in ids.values())))}, or let them run and "
                          f"RESUME=1)") from None
    final = g.dir / "scripts" / "finish.sh"
    write_script(final, [str(py), "-m", "jeepkit.grid", "finish", "--grid", str(g.dir)], repo, env)
    fin = sbatch(final, "jeepkit-finish", g.dir / "logs" / "finish.%j.log", finish_resources(g),
                 sorted(set(ids.values())))
    g.submissions.append({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "jobs": ids, "finish": fin})
    g.save()
    done = len(g.job_stages) - len(pending)
    local = [n.name for n in g.stages if n.runs_in == "finish"]
    print(f"grid {g.id}: {len(pending)} stage jobs submitted ({done} already done), final job {fin}; "
          f"logs in {g.dir / 'logs'}", flush=True)
    for n in pending:
        r = g.resources[n.name]
        print(f"  {ids[n.name]:>10}  {n.name}  cpus={r['cpus']} mem={r['mem_gb']}G time={r['time_min']}m "
              f"gpus={r['gpus']}", flush=True)
    if local:
        print(f"  the final job also runs {len(local)} stages DVC's run-cache does not cover (uncached outputs "
              f"that are neither metrics nor plots, and what reads them): {', '.join(local)}", flush=True)
    return g


def submit_stages(g: Grid, pending: list, py: Path, env: dict[str, str], ids: dict[str, str]) -> dict[str, str]:
    """sbatch the pending stages in waves, each wave the stages whose pending upstreams are submitted. In a
    wave, stages of one group (a foreach/matrix) that wait for the same jobs and ask for the same resources
    go in one job array, and a dependent waits for exactly the array tasks it reads (`afterok:<array>_<i>`).
    Fills `ids` (stage -> job id) as it goes, so a refusal half-way leaves what was submitted."""
    waiting = {n.name for n in pending}
    remaining = list(pending)
    while remaining:
        groups: dict[tuple, list] = {}
        for n in remaining:
            if all(u in ids or u not in waiting for u in n.upstream):
                after = tuple(sorted(ids[u] for u in n.upstream if u in waiting))
                key = (n.name.split("@")[0], after, json.dumps(g.resources[n.name], sort_keys=True))
                groups.setdefault(key, []).append(n)
        for (group, after, _), nodes in groups.items():
            _submit_group(g, group, list(after), nodes, ids, py, env)
        remaining = [n for n in remaining if n.name not in ids]
    return ids


def _submit_group(g: Grid, group: str, after: list[str], nodes: list, ids: dict[str, str], py: Path,
                  env: dict[str, str]) -> None:
    res = Resources(**{**g.resources[nodes[0].name], "extra": tuple(g.resources[nodes[0].name]["extra"])})
    job = [str(py), "-m", "jeepkit.grid", "job", "--grid", str(g.dir), "--stage"]
    if len(nodes) == 1:
        n = nodes[0]
        script = g.dir / "scripts" / f"{slug(n.name)}.sh"
        write_script(script, [*job, n.name], g.dir, env)
        ids[n.name] = sbatch(script, f"jeepkit-{slug(n.name)}", g.dir / "logs" / f"{slug(n.name)}.%j.log", res,
                             after)
        return
    script = g.dir / "scripts" / f"{slug(group)}-{slug(nodes[0].name)}-array.sh"
    write_script(script, [*job, "${STAGES[$SLURM_ARRAY_TASK_ID]}"], g.dir, env,
                 arrays={"STAGES": [n.name for n in nodes]})
    arr = sbatch(script, f"jeepkit-{slug(group)}", g.dir / "logs" / f"{slug(group)}.%A_%a.log", res, after,
                 array=len(nodes))
    for i, n in enumerate(nodes):
        ids[n.name] = f"{arr}_{i}"


def finish_resources(g: Grid) -> Resources:
    """The final job runs the stages the run-cache does not cover: the largest request among them."""
    local = [g.resources.get(n.name) for n in g.stages if n.runs_in == "finish" and n.name in g.resources]
    pick = max(local, key=lambda r: (r["gpus"], r["mem_gb"], r["time_min"]), default=None)
    if pick is None:
        first = next(iter(g.resources.values()), {})
        return Resources(cpus=1, mem_gb=4, time_min=60, partition=first.get("partition"))
    return Resources(**{**pick, "extra": tuple(pick["extra"])})


def run_job(grid_dir: Path, stage: str) -> None:
    """Inside a SLURM job: check out, `dvc repro --pull <stage>` (upstream stages restore from the remote),
    push the outputs and then the run-cache entry, then the done marker. A failure pushes nothing."""
    g = load(grid_dir)
    if stage not in {n.name for n in g.stages}:
        raise ConfigError(f"grid {g.id}: no stage {stage}")
    ck = prepare_checkout(g, g.dir / "jobs" / slug(stage) / Path(g.repo).name)
    configure(ck, Path(g.remote), default=True)
    print(f"grid {g.id}: {stage} in {ck}", flush=True)
    # the checkout's own jeepkit, not the one an editable install points at: the code DVC hashed is the code run
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ck / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    # as many threads as SLURM allocated cores: float reductions depend on the thread count, so a job is
    # byte-identical to a local run with the same count (and does not oversubscribe a shared node)
    if os.environ.get("SLURM_CPUS_PER_TASK") and "OMP_NUM_THREADS" not in os.environ:
        env |= {"OMP_NUM_THREADS": os.environ["SLURM_CPUS_PER_TASK"], "MKL_NUM_THREADS": os.environ["SLURM_CPUS_PER_TASK"]}
    rc = subprocess.call(["dvc", "repro", "--pull", stage], cwd=ck, env=env)
    if rc != 0:
        raise ConfigError(f"grid {g.id}: stage {stage} failed (dvc repro exit {rc}); nothing was pushed; its "
                          f"checkout is kept at {ck}")
    key, value = push_stage(ck, Path(g.remote), stage)
    write_atomic(g.done_path(stage), json.dumps({"stage": stage, "key": key, "value": value,
                                                 "tree": g.snapshot.tree,
                                                 "job": os.environ.get("SLURM_JOB_ID")}) + "\n")
    shutil.rmtree(ck.parent)
    print(f"grid {g.id}: {stage} pushed to {g.remote}", flush=True)


def finish(grid_dir: Path) -> int:
    """In the submitting checkout: pull the finished stages' entries and data, then the same command a local
    run uses (`dvc repro`, or `dvc exp run -S …` for a profile); every stage should restore, none run."""
    g = load(grid_dir)
    now = tree_of(g.repo)
    if now != g.snapshot.tree:
        raise ConfigError(f"grid {g.id}: {g.repo} changed since the grid was submitted (tree "
                          f"{g.snapshot.tree[:10]} -> {now[:10]}): its results would not restore; submit again "
                          f"with RESUME=1")
    missing = [n.name for n in g.job_stages if g.done(n.name) is None]
    if missing:
        raise ConfigError(f"grid {g.id}: {len(missing)} stages did not finish ({', '.join(missing[:5])}"
                          f"{', …' if len(missing) > 5 else ''}): resubmit them with RESUME=1")
    configure(g.repo, Path(g.remote), default=False)
    entries = [(d["key"], d["value"]) for d in (g.done(n.name) for n in g.job_stages)]
    pull_entries(g.repo, Path(g.remote), entries)
    if g.profile:
        cmd = [sys.executable, "stages/run_profile.py", g.profile,
               *(["--model-key", g.model_key] if g.model_key else []), *g.targets]
    else:
        cmd = ["dvc", "repro", *g.targets]
    proc = subprocess.Popen(cmd, cwd=g.repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # a stage either restores from the run-cache, is already current (its dvc.lock entry matches the code and
    # the outputs `dvc exp run` checked out from the pulled cache: a committed lock in step with the code), or runs
    cached = current = ran = 0
    for line in proc.stdout:
        sys.stdout.write(line)
        cached += "is cached - skipping run" in line
        current += "didn't change, skipping" in line
        ran += line.startswith("Running stage")
    rc = proc.wait()
    local = sum(n.runs_in == "finish" for n in g.stages)
    print(f"grid {g.id}: {cached + current} stages restored ({cached} from the run-cache, {current} already "
          f"current in dvc.lock), {ran} run in the submitting checkout "
          f"({local} of them are stages the run-cache does not cover; exit {rc})", flush=True)
    return rc
