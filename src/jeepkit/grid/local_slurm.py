"""A real one-node SLURM (munged, slurmctld, slurmd from Debian's slurm-wlm) on 127.0.0.1 in a folder of its
own: what the tests submit to, and a way to try `make cluster` on a laptop before a real cluster.

    python -m jeepkit.grid local-slurm up DIR      # prints `export SLURM_CONF=DIR/slurm.conf`
    python -m jeepkit.grid local-slurm down DIR
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..errors import ConfigError

DAEMONS = ("munged", "slurmctld", "slurmd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_daemons() -> list[str]:
    return [d for d in DAEMONS if not (shutil.which(d) or Path("/usr/sbin", d).exists())]


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin") / name)


def up(folder: str | Path, cpus: int | None = None, mem_mb: int = 16000) -> Path:
    """Start the three daemons; the slurm.conf path once the node is idle."""
    if missing_daemons():
        raise ConfigError(f"local SLURM: {', '.join(missing_daemons())} not installed (Debian: apt-get install "
                          f"slurm-wlm munge; .ci/run does this)")
    d = Path(folder).resolve()
    for sub in ("state", "spool", "log", "munge"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    key = d / "munge" / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
    sock = d / "munge" / "sock"
    cmd = [_exe("munged"), "-S", str(sock), f"--key-file={key}", f"--pid-file={d / 'munge/pid'}",
           f"--log-file={d / 'munge/log'}", f"--seed-file={d / 'munge/seed'}"]
    if os.geteuid() == 0:
        cmd.append("--force")  # munged refuses root without it
    subprocess.run(cmd, check=True)
    user, host = getpass.getuser(), socket.gethostname().split(".")[0]
    cpus = cpus or os.cpu_count() or 1
    conf = d / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=jeepkit-local", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmUser={user}", f"SlurmdUser={user}",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}", "AuthType=auth/munge",
        f"AuthInfo=socket={sock}", "CredType=cred/munge", f"StateSaveLocation={d / 'state'}",
        f"SlurmdSpoolDir={d / 'spool'}", f"SlurmctldPidFile={d / 'slurmctld.pid'}", f"SlurmdPidFile={d / 'slurmd.pid'}",
        f"SlurmctldLogFile={d / 'log/slurmctld.log'}", f"SlurmdLogFile={d / 'log/slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU_Memory", "SchedulerType=sched/backfill", "MpiDefault=none", "ReturnToService=2",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none", "MinJobAge=3600",
        f"DefMemPerCPU={mem_mb // cpus}",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN",
        "PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    subprocess.run([_exe("slurmctld"), "-c"], check=True, env=env)
    subprocess.run([_exe("slurmd")], check=True, env=env)
    for _ in range(60):
        r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env)
        if r.stdout.strip() == "idle":
            return conf
        time.sleep(0.5)
    raise ConfigError(f"local SLURM in {d} did not come up: see {d / 'log'}")


def down(folder: str | Path) -> None:
    d = Path(folder).resolve()
    for pid_file in (d / "slurmd.pid", d / "slurmctld.pid", d / "munge" / "pid"):
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
    time.sleep(0.5)
