"""`make grid`: a profile's experiments on DVC's own queue on one node (`dvc exp run --queue`, `dvc queue
start`), one worker per GPU (or a share of the CPU threads each), all sharing the repository's DVC cache and
run-cache and one target cache, so a stage computed by one worker is restored, not recomputed, by the next.

The stages every experiment shares (model preparation, statistics, data) run once first, in a temporary
experiment (`dvc exp run --temp`), so that the workers start from their run-cache entries instead of all
computing them at once. `dvc exp show` compares the experiments; `dvc exp apply <name>` brings one back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ..errors import ConfigError
from ..profiles import override_strings

WARM = ["prepare_model", "stats", "data"]


def _visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        import torch
        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def worker_env(slot: int, jobs: int, gpus: list[str], cores: int) -> dict[str, str]:
    """The environment of worker `slot` (0-based): its own GPU when there are GPUs, else cores // jobs threads
    (float reductions depend on the thread count: an experiment is byte-identical to a local run with the same
    OMP_NUM_THREADS)."""
    if gpus:
        return {"CUDA_VISIBLE_DEVICES": gpus[slot % len(gpus)]}
    threads = str(max(1, cores // max(1, jobs)))
    return {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def _dvc(args: list[str], repo: Path, env: dict[str, str], capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=repo, env=env, text=True,
                          capture_output=capture)


def queue_states(repo: Path, env: dict[str, str], names: list[str]) -> dict[str, str]:
    """name -> Queued / Running / Success / Failed for the named experiments (`dvc queue status`)."""
    r = _dvc(["queue", "status"], repo, env, capture=True)
    out = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] in names:
            out[parts[1]] = parts[-1]
    return out


def active_workers(repo: Path, env: dict[str, str]) -> int:
    r = _dvc(["queue", "status"], repo, env, capture=True)
    for line in r.stdout.splitlines():
        if line.startswith("Worker status:"):
            return sum(int(w) for w in line.split(":")[1].replace(",", " ").split() if w.isdigit())
    return 0


def run_queue(repo: Path, profile: str | None, model_key: str | None, jobs: int, vary: list[str],
              warm: list[str] | None, targets: list[str], wait: bool = True) -> int:
    from ..config import validate_params
    from ..params import load_params
    from ..profiles import apply_overrides, profile_overrides

    if jobs < 1:
        raise ConfigError(f"JOBS={jobs}: need at least one worker")
    repo = repo.resolve()
    overrides = profile_overrides(profile, model_key)
    validate_params(apply_overrides(load_params(repo / "params.yaml"), overrides))
    if not vary and profile:
        from ..profiles import load_profile
        vary = list(load_profile(profile).get("grid") or [])  # the profile's own sweeps, e.g. seeds=[0],[1],[2]
    varied = {v.split("=", 1)[0] for v in vary}
    sets = [a for k, s in zip(overrides, override_strings(overrides)) if k not in varied for a in ("-S", s)]
    # each experiment runs its own copy of the code (not an editable install's), and one target cache
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(["src", *filter(None, [os.environ.get("PYTHONPATH")])]),
           "JEEPKIT_TARGET_CACHE": os.environ.get("JEEPKIT_TARGET_CACHE") or str(repo / "data/cache/targets")}

    warm = WARM if warm is None else warm
    if warm:
        print(f"grid: the shared stages first ({' '.join(warm)}), once, in a temporary experiment", flush=True)
        if _dvc(["exp", "run", "--temp", *sets, *warm], repo, env).returncode != 0:
            raise ConfigError("grid: the shared stages failed; nothing was queued")
    sweep = [a for v in vary for a in ("-S", v)]
    r = _dvc(["exp", "run", "--queue", *sets, *sweep, *targets], repo, env, capture=True)
    sys.stdout.write(r.stdout)
    if r.returncode != 0:
        raise ConfigError(f"grid: dvc exp run --queue refused the experiments: {r.stderr.strip()[-500:]}")
    names = [l.split("'")[1] for l in r.stdout.splitlines() if l.startswith("Queued experiment '")]
    gpus, cores = _visible_gpus(), os.cpu_count() or 1
    for slot in range(jobs):
        wenv = {**env, **worker_env(slot, jobs, gpus, cores)}
        # `dvc queue start -j n` starts the workers numbered up to n that are not yet running: one at a time,
        # each with its own environment, waiting until the previous one is up
        # (not captured: the worker it spawns would inherit the pipe and `run` would wait for the worker)
        log = repo / ".dvc" / "tmp" / f"grid-queue-start-{slot + 1}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            rc = subprocess.run(["dvc", "queue", "start", "-j", str(slot + 1)], cwd=repo, env=wenv, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
        if rc != 0:
            raise ConfigError(f"grid: dvc queue start failed (see {log})")
        for _ in range(120):
            if active_workers(repo, env) >= slot + 1:
                break
            time.sleep(1)
        print(f"grid: worker {slot + 1}: " + " ".join(f"{k}={v!r}" for k, v in worker_env(slot, jobs, gpus, cores).items()),
              flush=True)
    if not wait:
        print("grid: queued; follow with `dvc queue status`, compare with `dvc exp show`", flush=True)
        return 0
    while True:
        states = queue_states(repo, env, names)
        if all(states.get(n) in ("Success", "Failed") for n in names):
            break
        time.sleep(5)
    _dvc(["queue", "stop"], repo, env, capture=True)
    ok = sum(v == "Success" for v in states.values())
    failed = [n for n, v in states.items() if v == "Failed"]
    print(f"grid: {ok} experiments succeeded, {len(failed)} failed"
          f"{' (' + ', '.join(failed) + '; `dvc queue logs <name>` shows why)' if failed else ''}; "
          f"`dvc exp show` compares them", flush=True)
    return 1 if failed else 0
