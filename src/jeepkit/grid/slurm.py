"""SLURM through its own commands (`sbatch`, `scontrol`): one batch script per stage, `afterok`
dependencies that follow the DVC graph, and nothing scheduled by us."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError


@dataclass(frozen=True)
class Resources:
    """What one job asks for. From the profile's `cluster.resources` (per stage group), else the
    preflight's estimate, else these defaults (sized for the embedded model on a CPU node)."""
    cpus: int = 2
    mem_gb: float = 8.0
    time_min: int = 60
    gpus: int = 0
    partition: str | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)  # further sbatch options, e.g. ("--account=x",)

    def sbatch_args(self) -> list[str]:
        args = [f"--cpus-per-task={self.cpus}", f"--mem={max(1, int(round(self.mem_gb * 1024)))}M",
                f"--time={max(1, int(self.time_min))}"]
        if self.gpus:
            args.append(f"--gres=gpu:{self.gpus}")
        if self.partition:
            args.append(f"--partition={self.partition}")
        return args + list(self.extra)


def require_sbatch() -> str:
    path = shutil.which("sbatch")
    if not path:
        raise ConfigError("no SLURM on the PATH (sbatch not found): install the SLURM client, or use "
                          "`make grid` to run the grid on this node with DVC's queue")
    return path


def write_script(path: Path, command: list[str], cwd: Path, env: dict[str, str],
                 arrays: dict[str, list[str]] | None = None) -> None:
    """A batch script; `arrays` become bash arrays, and an argument "${NAME[$SLURM_ARRAY_TASK_ID]}" picks one."""
    lines = ["#!/usr/bin/env bash", "set -euo pipefail", f"cd {shlex.quote(str(cwd))}"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    lines += [f"{k}=({' '.join(shlex.quote(v) for v in vs)})" for k, vs in (arrays or {}).items()]
    lines.append("exec " + " ".join(f'"{c}"' if c.startswith("${") else shlex.quote(c) for c in command))
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)


def submit(script: Path, name: str, log: Path, res: Resources, after: list[str], array: int = 0) -> str:
    """sbatch the script (as a job array of `array` tasks when > 0); its job id. A job whose dependency failed
    is cancelled by SLURM, not left pending."""
    cmd = [require_sbatch(), "--parsable", f"--job-name={name}", f"--output={log}", *res.sbatch_args()]
    if array:
        cmd.append(f"--array=0-{array - 1}")
    if after:
        cmd += [f"--dependency=afterok:{':'.join(after)}", "--kill-on-invalid-dep=yes"]
    r = subprocess.run([*cmd, str(script)], capture_output=True, text=True)
    if r.returncode != 0:
        lines = (r.stderr.strip() or r.stdout.strip() or f"exit {r.returncode}").splitlines()
        raise ConfigError(f"sbatch refused {name}: {lines[-1]}")
    return r.stdout.strip().split(";")[0]


def job_state(job_id: str) -> str | None:
    """PENDING / RUNNING / COMPLETED / FAILED / CANCELLED ... while slurmctld still knows the job, else None."""
    r = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    for part in r.stdout.split():
        if part.startswith("JobState="):
            return part.split("=", 1)[1]
    return None
