"""The report runner writes the same bytes on every run (papermill's timestamps and random cell ids removed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

NB = {"cells": [{"cell_type": "code", "execution_count": None, "id": "p1", "metadata": {"tags": ["parameters"]},
                 "outputs": [], "source": ["x = 1\n"]},
                {"cell_type": "code", "execution_count": None, "id": "c2", "metadata": {}, "outputs": [],
                 "source": ["print(x * 2)\n"]}],
      "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
      "nbformat": 4, "nbformat_minor": 5}


def test_two_runs_are_byte_identical_and_parameters_apply(tmp_path):
    src = tmp_path / "n.ipynb"
    src.write_text(json.dumps(NB))
    out = tmp_path / "out" / "n.ipynb"
    runs = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-m", "jeepkit.notebooks", str(src), str(out), "-p", "x", "21"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr
        runs.append(out.read_bytes())
    assert runs[0] == runs[1]
    nb = json.loads(runs[0])
    assert "start_time" not in json.dumps(nb) and "iopub" not in json.dumps(nb)
    assert nb["cells"][-1]["outputs"][0]["text"] == ["42\n"]
    assert [p.name for p in out.parent.iterdir()] == ["n.ipynb"]  # no temporary left beside it
