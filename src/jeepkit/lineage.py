"""What code produced an artifact: import closures for DVC deps, source fingerprints for cache keys.

DVC only re-runs a stage when one of its listed deps changes, and a cache only misses when its key
changes. Both are derived here from the code itself, so neither can silently fall behind it:

* `closure(entry)` is the set of project files a stage script or notebook imports, transitively
  (found statically with `ast`, lazy function-level imports included). `python -m jeepkit.lineage`
  writes those files into the `deps` of every stage in dvc.yaml, and `--check` fails when they differ.
* `fingerprint(modules)` hashes the *code* of some modules (their AST without docstrings, so comments
  and docstrings do not invalidate a cache; any statement does). Target and statistics cache keys
  include the fingerprint of the modules that compute them.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

PACKAGE = "jeepkit"
PACKAGE_DIR = Path(__file__).resolve().parent  # src/jeepkit
REPO_ROOT = PACKAGE_DIR.parents[1]


# ------------------------------------------------------------------ module <-> file

def module_file(module: str, package_dir: Path = PACKAGE_DIR) -> Path | None:
    """src/jeepkit/a/b.py or src/jeepkit/a/b/__init__.py for "jeepkit.a.b"; None if not a project module."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = package_dir.joinpath(*parts[1:])
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    rel = path.resolve().relative_to(package_dir.resolve()).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_names(tree: ast.AST, current: str | None, is_package: bool) -> set[str]:
    """Every absolute module name an AST imports (or may import: `from a import b` yields a and a.b)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if current is None:
                    continue
                pkg = current.split(".") if is_package else current.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _with_parents(module: str) -> list[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def notebook_source(path: Path) -> str:
    """The code cells of a notebook as one Python source (IPython magics and shell lines dropped)."""
    nb = json.loads(Path(path).read_text())
    lines = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        for line in (src if isinstance(src, list) else src.splitlines(True)):
            lines.append("" if line.lstrip().startswith(("%", "!")) else line.rstrip("\n"))
    return "\n".join(lines) + "\n"


def closure(entry: str | Path, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Project source files `entry` (a script, a notebook or a project module file) imports, transitively."""
    entry = Path(entry)
    if entry.suffix == ".ipynb":
        source, current, is_pkg = notebook_source(entry), None, False
    else:
        source = entry.read_text()
        inside = entry.resolve().is_relative_to(package_dir.resolve())
        current = module_name(entry, package_dir) if inside else None
        is_pkg = entry.name == "__init__.py"
    seen: dict[Path, None] = {}
    todo = [n for name in _imported_names(ast.parse(source), current, is_pkg) for n in _with_parents(name)]
    while todo:
        name = todo.pop()
        f = module_file(name, package_dir)
        if f is None or f in seen:
            continue
        seen[f] = None
        pkg = f.name == "__init__.py"
        todo += [n for m in _imported_names(ast.parse(f.read_text()), name, pkg) for n in _with_parents(m)]
    return sorted(seen)


# ------------------------------------------------------------------ fingerprints

def _code_only(source: str) -> str:
    """AST dump without docstrings: the behaviour of a module, not its prose."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


@lru_cache(maxsize=None)
def _file_digest(path: Path, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(_code_only(path.read_text()).encode()).hexdigest()


def fingerprint(modules: Iterable[str], package_dir: Path = PACKAGE_DIR, n: int = 16) -> str:
    """Content hash of the code of `modules` ("jeepkit.tokens", ...); unknown names are an error."""
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        f = module_file(name, package_dir)
        if f is None:
            raise ValueError(f"fingerprint: {name} is not a module of {package_dir}")
        st = f.stat()
        h.update(f"{name}\0{_file_digest(f, st.st_mtime_ns, st.st_size)}\n".encode())
    return h.hexdigest()[:n]


def closure_fingerprint(module: str, package_dir: Path = PACKAGE_DIR) -> str:
    """Fingerprint of a module together with everything it imports from the project."""
    f = module_file(module, package_dir)
    if f is None:
        raise ValueError(f"{module} is not a project module")
    return fingerprint({module, *(module_name(p, package_dir) for p in closure(f, package_dir))}, package_dir)


def code_version(repo: Path = REPO_ROOT) -> dict[str, object]:
    """Git commit and whether the code (src/, stages/, notebooks/) differs from it; library versions."""
    from importlib import metadata

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--", "src", "stages", "notebooks") if commit else None
    libs = {}
    for lib in ("torch", "transformers", "tokenizers", "safetensors", "numpy", "scipy"):
        try:
            libs[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            libs[lib] = None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status),
            "package_fingerprint": fingerprint(module_name(p) for p in PACKAGE_DIR.rglob("*.py")),
            "python": ".".join(map(str, sys.version_info[:3])), "libraries": libs}


# ------------------------------------------------------------------ dvc.yaml deps

_CODE_DEP = re.compile(r"^\s*-\s+(src/jeepkit[\w./-]*)\s*$")


def stage_entries(dvc_yaml: Path) -> dict[str, list[Path]]:
    """Stage name -> the scripts or notebooks its command runs (one per `foreach` item when the path uses it)."""
    import yaml

    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    out = {}
    for name, st in stages.items():
        body = st.get("do", st)
        cmd = str(body.get("cmd", ""))
        m = re.search(r"(?:python\s+(stages/\S+\.py))|(?:(?:papermill|-m\s+jeepkit\.notebooks)\s+(notebooks/\S+\.ipynb))",
                      cmd)
        if not m:
            continue
        runner = [Path("src/jeepkit/notebooks.py")] if re.search(r"-m\s+jeepkit\.notebooks", cmd) else []
        path = m.group(1) or m.group(2)
        items = st.get("foreach") if "${item}" in path else None
        if isinstance(items, list):
            out[name] = runner + [Path(path.replace("${item}", str(i))) for i in items]
        elif "${" not in path:
            out[name] = runner + [Path(path)]
    return out


def package_data(module: Path, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Data files a module reads, as it declares them: `PACKAGE_DATA = ("paper/x.json", ...)` (package-relative)."""
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PACKAGE_DATA" for t in node.targets):
            return [package_dir / v for v in ast.literal_eval(node.value)]
    return []


def code_deps(entries: Sequence[Path], root: Path = REPO_ROOT) -> list[str]:
    """The project files the entries import (and the package data those declare), as repo-relative paths;
    a directory when all of it is imported."""
    pkg = (root / "src" / PACKAGE).resolve()
    files = {p.resolve() for e in entries for p in closure(root / e, pkg)}
    files |= {(root / e).resolve() for e in entries if (root / e).resolve().is_relative_to(pkg)}  # `-m` modules
    files |= {d.resolve() for f in list(files) for d in package_data(f, pkg)}
    out: list[str] = []
    covered: set[Path] = set()
    for d in sorted({p.parent for p in files}, key=lambda p: len(p.parts)):
        if d == (root / "src" / PACKAGE).resolve() or any(d.is_relative_to(c) for c in covered):
            continue
        everything = {p.resolve() for p in d.rglob("*.py") if "__pycache__" not in p.parts}
        if everything <= files:
            covered.add(d)
            out.append(str(d.relative_to(root.resolve())))
    out += [str(p.relative_to(root.resolve())) for p in sorted(files) if not any(p.is_relative_to(c) for c in covered)]
    return sorted(out)


def covered_by(path: str, deps: Sequence[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def rewrite_dvc_yaml(text: str, wanted: dict[str, list[str]]) -> str:
    """Replace the `src/jeepkit...` lines of each stage's deps with `wanted[stage]`, right after the entry dep.

    Line-based so comments and layout survive; a stage is a two-space-indented key under `stages:`.
    """
    out, stage, in_deps, indent = [], None, False, ""
    for line in text.splitlines():
        m = re.match(r"^  ([\w-]+):", line)
        if m:
            stage, in_deps = m.group(1), False
        if re.match(r"^\s+deps:\s*$", line):
            in_deps = True
            out.append(line)
            continue
        if in_deps and not re.match(r"^\s+-\s", line):
            in_deps = False
        if in_deps and stage in wanted:
            if _CODE_DEP.match(line):
                continue
            out.append(line)
            entry = re.match(r"^(\s+)-\s+((?:stages|notebooks)/\S+)\s*$", line)
            if entry and out[-2:-1] and re.match(r"^\s+-\s+(?:stages|notebooks)/", out[-2]):
                entry = None  # insert once, after the first entry dep
            if entry:
                indent = entry.group(1)
                out += [f"{indent}- {d}" for d in wanted[stage]]
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write (or --check) the code deps of every dvc.yaml stage.")
    ap.add_argument("--dvc-yaml", default=str(REPO_ROOT / "dvc.yaml"))
    ap.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml differs from the import closures")
    a = ap.parse_args(argv)
    path = Path(a.dvc_yaml)
    root = path.resolve().parent
    wanted = {name: code_deps(entries, root) for name, entries in stage_entries(path).items()}
    old = path.read_text()
    new = rewrite_dvc_yaml(old, wanted)
    if a.check:
        if new != old:
            print(f"{path}: code deps differ from the import closures; run `python -m jeepkit.lineage`",
                  file=sys.stderr)
            return 1
        print(f"{path}: code deps match the import closures of {len(wanted)} stages")
        return 0
    if new != old:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(new)
        tmp.replace(path)
    print(f"{path}: code deps written for {len(wanted)} stages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
