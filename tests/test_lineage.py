"""DVC deps come from the code: every project module a stage or notebook imports is one of its deps.

The closure is computed here independently of dvc.yaml (statically, lazy imports included) and
cross-checked at run time: a stage script's modules after import must all be in its closure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jeepkit import lineage

ROOT = Path(__file__).resolve().parents[1]


def _stages():
    return lineage.stage_entries(ROOT / "dvc.yaml")


def _declared(stage: str) -> list[str]:
    st = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    return [d for d in st.get("do", st)["deps"]]


def test_every_stage_has_an_entry_point():
    entries = _stages()
    all_stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(entries) == set(all_stages), set(all_stages) - set(entries)


@pytest.mark.parametrize("stage", sorted(lineage.stage_entries(ROOT / "dvc.yaml")))
def test_import_closure_is_covered_by_deps(stage):
    deps = _declared(stage)
    missing = []
    for entry in _stages()[stage]:
        assert str(entry) in deps or "${item}" in " ".join(deps)
        missing += [str(p.relative_to(ROOT)) for p in lineage.closure(ROOT / entry)
                    if not lineage.covered_by(str(p.relative_to(ROOT)), deps)]
    assert not missing, f"{stage}: imports {missing} but does not depend on them; run `python -m jeepkit.lineage`"


def test_edit_stages_depend_on_what_decides_positions_and_logits():
    for stage in ("edit", "ablation", "sweep", "scaling", "probe"):
        deps = _declared(stage)
        for f in ("src/jeepkit/tokens.py", "src/jeepkit/hooks.py", "src/jeepkit/models.py", "src/jeepkit/params.py"):
            assert lineage.covered_by(f, deps), (stage, f)
    for f in ("src/jeepkit/forward.py", "src/jeepkit/stats.py", "src/jeepkit/data/schema.py"):
        assert lineage.covered_by(f, _declared("edit")), f
    assert not lineage.covered_by("src/jeepkit/reporting/tables.py", _declared("edit"))


def test_dvc_yaml_is_up_to_date():
    r = subprocess.run([sys.executable, "-m", "jeepkit.lineage", "--check", "--dvc-yaml", str(ROOT / "dvc.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_closure_finds_relative_lazy_and_package_imports(tmp_path):
    pkg = tmp_path / "jeepkit"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from ..lazy import x\n")
    (pkg / "lazy.py").write_text("x = 1\n")
    (pkg / "unused.py").write_text("")
    entry = tmp_path / "script.py"
    entry.write_text("from jeepkit.sub import leaf\n")
    got = {p.relative_to(pkg).as_posix() for p in lineage.closure(entry, pkg)}
    assert got == {"__init__.py", "sub/__init__.py", "sub/leaf.py", "lazy.py"}


def test_notebook_imports_count(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": ["%matplotlib inline\n", "from jeepkit import reporting\n"]},
                    {"cell_type": "markdown", "source": "from jeepkit import probe"}]}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb))
    names = {p.name for p in lineage.closure(path)}
    assert "tables.py" in names and "probe.py" not in names


@pytest.mark.parametrize("script", ["edit_eval.py", "stats.py", "probe.py", "build_data.py"])
def test_runtime_imports_are_inside_the_static_closure(script):
    """What Python really imports (module level) is a subset of the static closure: no dynamic import escapes it."""
    code = ("import runpy, sys, json; sys.argv=['x', '--help']\n"
            "try:\n    runpy.run_path(sys.argv[1] if False else %r, run_name='not_main')\nexcept SystemExit: pass\n"
            "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() "
            "if n.startswith('jeepkit') and getattr(m, '__file__', None))))") % str(ROOT / "stages" / script)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    loaded = {Path(f).resolve() for f in json.loads(r.stdout.strip().splitlines()[-1])}
    static = {p.resolve() for p in lineage.closure(ROOT / "stages" / script)}
    assert loaded and loaded <= static, loaded - static


def test_fingerprint_ignores_docstrings_and_comments_not_code(tmp_path):
    pkg = tmp_path / "jeepkit"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "m.py").write_text('"""doc"""\nX = 1  # note\n')
    a = lineage.fingerprint(["jeepkit.m"], pkg)
    (pkg / "m.py").write_text('"""other doc"""\n# a comment\nX = 1\n')
    assert lineage.fingerprint(["jeepkit.m"], pkg) == a
    (pkg / "m.py").write_text('"""doc"""\nX = 2\n')
    assert lineage.fingerprint(["jeepkit.m"], pkg) != a
