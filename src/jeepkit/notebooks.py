"""Execute a report notebook with papermill and write it without wall-clock metadata.

papermill records start/end times and durations in the notebook and in every cell, so two runs of the
same report on the same inputs differ byte for byte (and DVC sees a change). This runner executes the
notebook exactly as `papermill IN OUT -p k v -y yaml` would, drops those fields, and renames the result
into place only when the whole notebook ran.

    python -m jeepkit.notebooks notebooks/tables.ipynb reports/notebooks/tables.ipynb -p metrics_root metrics
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .io import atomic_path

TIME_KEYS = ("start_time", "end_time", "duration")


def _value(text: str) -> Any:
    """papermill's -p typing: int, float, true/false/none, else the string itself."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def strip_times(nb: dict[str, Any]) -> dict[str, Any]:
    """Remove every wall-clock field papermill and the kernel add (notebook and cell metadata), and
    give the injected-parameters cell a fixed id."""
    pm = nb.get("metadata", {}).get("papermill", {})
    for k in TIME_KEYS:
        pm.pop(k, None)
    for cell in nb.get("cells", []):
        meta = cell.get("metadata", {})
        if "injected-parameters" in meta.get("tags", []):
            cell["id"] = "injected-parameters"  # papermill gives the cell it adds a random id
        meta.pop("execution", None)
        for k in TIME_KEYS:
            meta.get("papermill", {}).pop(k, None)
    return nb


def run(src: str | Path, dst: str | Path, parameters: dict[str, Any]) -> None:
    import papermill as pm

    dst = Path(dst)
    with tempfile.TemporaryDirectory(prefix="jeepkit-nb-") as d:
        scratch = Path(d) / dst.name
        pm.execute_notebook(str(src), str(scratch), parameters=parameters, progress_bar=True)
        nb = json.loads(scratch.read_text())
    nb["metadata"].get("papermill", {})["output_path"] = str(dst)
    with atomic_path(dst) as tmp:
        tmp.write_text(json.dumps(strip_times(nb), indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("-y", action="append", default=[], metavar="YAML")
    a = ap.parse_args(argv)
    params: dict[str, Any] = {}
    for text in a.y:
        params.update(yaml.safe_load(text) or {})
    params.update({k: _value(v) for k, v in a.p})
    run(a.src, a.dst, params)
    return 0


if __name__ == "__main__":
    sys.exit(main())
