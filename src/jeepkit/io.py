"""Atomic file writes and strict readers: no half-written artifact, no code loaded from data."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError


TMP_PREFIX = ".jeepkit-tmp"  # .dvcignore and .gitignore hide these; `sweep_stale` removes dead ones


def _tmp_prefix(name: str) -> str:
    return f"{TMP_PREFIX}.{socket.gethostname()}.{os.getpid()}.{name}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(directory: str | os.PathLike) -> list[Path]:
    """Remove temporaries a killed process left in `directory` (this host's, whose process is gone).

    Temporaries of live processes and of other hosts (a shared file system) are left alone.
    """
    d, host, removed = Path(directory), socket.gethostname(), []
    if not d.is_dir():
        return removed
    for entry in d.iterdir():
        parts = entry.name.split(".")
        if not entry.name.startswith(TMP_PREFIX + ".") or len(parts) < 5 or parts[2] != host:
            continue
        try:
            pid = int(parts[3])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _publish_mode(path: Path) -> None:
    """mkstemp/mkdtemp create 0600/0700; give the artifact the usual umask-derived mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            _publish_mode(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory next to `path`; it replaces `path` only if the block succeeds.

    A kill at any point leaves either the old directory (or none) or the complete new one, never a
    mixture; the temporary is hidden from DVC and git and swept by the next writer.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path.name), dir=path.parent))
    try:
        yield tmp
        _publish_mode(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path.name + ".old"), dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, sort_keys=False, allow_nan=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            for r in rows:
                f.write(json.dumps(r, allow_nan=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_figure(fig: Any, path: str | os.PathLike) -> tuple[Path, Path]:
    """PNG and PDF next to each other, atomically; the PDF carries no creation date, so a re-run
    with the same data gives the same bytes (DVC and git then see no change)."""
    png = Path(path).with_suffix(".png")
    pdf = png.with_suffix(".pdf")
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=150)
    with atomic_path(pdf) as tmp:
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None})
    return png, pdf


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON; a parse error names the file, line and column."""
    path = Path(path)
    if not path.exists():
        raise InputError("file does not exist", file=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start}: {e.reason}); re-save the file as UTF-8",
                         file=str(path)) from None
    if not text.strip():
        raise InputError("empty file (no JSON value)", file=str(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}", file=str(path)) from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise InputError("file does not exist", file=str(path))
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise InputError(f"malformed JSON on line {i}: {e.msg}", file=str(path),
                                     record=f"line {i}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start}: {e.reason})", file=str(path)) from None
    return rows


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any, n: int = 16) -> str:
    """Short content hash of a JSON-able object (sorted keys): the basis of every cache key."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]
