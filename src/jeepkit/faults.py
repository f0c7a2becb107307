"""Named points where a test can kill the running stage, to prove that an interruption leaves nothing behind.

`JEEPKIT_FAULT=<point>` makes the process send itself SIGKILL (or SIGINT with `<point>:int`) the
first time it reaches that point; unset, a checkpoint costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = ("targets", "deltas", "metrics")
ENV = "JEEPKIT_FAULT"


def checkpoint(point: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, how = spec.partition(":")
    if name != point:
        return
    os.environ.pop(ENV)  # only the first time
    os.kill(os.getpid(), signal.SIGINT if how == "int" else signal.SIGKILL)
