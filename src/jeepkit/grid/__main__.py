"""python -m jeepkit.grid cluster|job|finish|queue … (the Makefile's `cluster` and `grid` call this)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import JeepkitError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jeepkit.grid", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cluster", help="submit the profile's stages to SLURM")
    c.add_argument("--profile", default=None, help="profiles/<name>.yaml (default: params.yaml as is)")
    c.add_argument("--model-key", default=None)
    c.add_argument("--remote", required=True, help="shared DVC remote: a directory every node can write")
    c.add_argument("--resume", action="store_true", help="resubmit only the stages that did not finish")
    c.add_argument("--link", action="append", default=None,
                   help="a path beside the checkout that jobs need (default: ../shared when it exists)")
    c.add_argument("targets", nargs="*", help="stages (and what they depend on); default: the whole DAG")
    j = sub.add_parser("job", help="(inside a SLURM job) run one stage of a submitted grid")
    j.add_argument("--grid", required=True, type=Path)
    j.add_argument("--stage", required=True)
    f = sub.add_parser("finish", help="(final job) restore every finished stage in the submitting checkout")
    f.add_argument("--grid", required=True, type=Path)
    q = sub.add_parser("queue", help="run the profile's experiments on DVC's queue on this node")
    q.add_argument("--profile", default=None)
    q.add_argument("--model-key", default=None)
    q.add_argument("--jobs", type=int, default=1, help="workers (one GPU each when GPUs are visible)")
    q.add_argument("--vary", action="append", default=[],
                   help="a DVC sweep, e.g. 'seeds=[0],[1]': one experiment per value (repeatable)")
    q.add_argument("--warm", nargs="*", default=None, help="stages run once before the queue (default: "
                   "prepare_model, stats and the data stages)")
    q.add_argument("--no-wait", action="store_true")
    q.add_argument("targets", nargs="*")
    ls = sub.add_parser("local-slurm", help="start or stop a one-node SLURM on 127.0.0.1 (tests, trying it out)")
    ls.add_argument("action", choices=["up", "down"])
    ls.add_argument("folder", type=Path)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "cluster":
            from .cluster import submit
            submit(Path.cwd(), a.remote, a.profile, a.model_key, a.targets, a.resume, a.link)
            return 0
        if a.cmd == "job":
            from .cluster import run_job
            run_job(a.grid, a.stage)
            return 0
        if a.cmd == "finish":
            from .cluster import finish
            return finish(a.grid)
        if a.cmd == "local-slurm":
            from . import local_slurm
            if a.action == "down":
                local_slurm.down(a.folder)
            else:
                print(f"export SLURM_CONF={local_slurm.up(a.folder)}")
            return 0
        from .queue import run_queue
        return run_queue(Path.cwd(), a.profile, a.model_key, a.jobs, a.vary, a.warm, a.targets, not a.no_wait)
    except JeepkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
