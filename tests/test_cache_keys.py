"""Caches are keyed by the code that fills them: a changed engine/tokens/stats source misses, a reporting
change hits. Run on a temporary copy of the package so the checkout itself is never touched."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys, torch
from jeepkit.data.schema import EditCase
from jeepkit.editing import memit
from jeepkit.editing.targets import TargetCache, target_key
from jeepkit.editing.engine import TargetResult
from jeepkit.stats import CorpusSpec
case = EditCase("1", "counterfact", "{} speaks", "Danielle Darrieux", "English", "French")
obj = memit.objective({"layers": [1, 2], "clamp": 4.0, "lambda": 10.0, "lr": 0.5, "steps": 6, "weight_decay": 0.5,
                       "kl_factor": 0.0625, "stop_loss": 0.05})
key = target_key({"id": "tiny"}, case, obj, ["The cat. "], method="memit")
cache = TargetCache(sys.argv[1])
hit = cache.get(key) is not None
if not hit:
    cache.put(key, TargetResult(z={"mlp": torch.ones(3)}, init={"mlp": torch.zeros(3)}))
stats_key = CorpusSpec("self", 8, 16).key({"id": "tiny"})
print(json.dumps({"key": key, "hit": hit, "stats_key": stats_key}))
"""


@pytest.fixture
def package_copy(tmp_path):
    dst = tmp_path / "src" / "jeepkit"
    shutil.copytree(ROOT / "src" / "jeepkit", dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _probe(pkg: Path, cache: Path) -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE, str(cache)], capture_output=True, text=True,
                       env={"PYTHONPATH": str(pkg.parent), "PATH": "/usr/bin:/bin"}, cwd=pkg.parent)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(__import__("jeepkit").__file__).resolve() != (pkg / "__init__.py").resolve()
    return out


def _edit(path: Path, line: str) -> None:
    path.write_text(path.read_text() + "\n" + line + "\n")


def test_target_cache_misses_after_engine_code_changes_and_hits_after_reporting_changes(package_copy, tmp_path):
    cache = tmp_path / "cache"
    first = _probe(package_copy, cache)
    assert not first["hit"]
    assert _probe(package_copy, cache)["hit"]  # same code: hit

    _edit(package_copy / "reporting" / "tables.py", "_REPORTING_ONLY = 1")
    _edit(package_copy / "evaluation.py", "# a comment changes nothing")
    again = _probe(package_copy, cache)
    assert again["hit"] and again["key"] == first["key"] and again["stats_key"] == first["stats_key"]

    _edit(package_copy / "tokens.py", "_CHANGED = 1")
    changed = _probe(package_copy, cache)
    assert not changed["hit"] and changed["key"] != first["key"]
    assert changed["stats_key"] != first["stats_key"]  # tokens decide which positions C averages over


@pytest.mark.parametrize("module,target_changes,stats_changes", [
    ("editing/engine.py", True, False), ("editing/memit.py", True, False), ("data/schema.py", True, False),
    ("hooks.py", True, True), ("models.py", True, True), ("stats.py", False, True), ("ledger/claims.py", False, False),
])
def test_which_sources_are_fingerprinted(package_copy, tmp_path, module, target_changes, stats_changes):
    base = _probe(package_copy, tmp_path / "c")
    _edit(package_copy / module, "_CHANGED = 1")
    now = _probe(package_copy, tmp_path / "c")
    assert (now["key"] != base["key"]) == target_changes
    assert (now["stats_key"] != base["stats_key"]) == stats_changes
