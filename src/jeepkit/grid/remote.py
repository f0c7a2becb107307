"""The shared DVC remote of a grid: a directory every node can read and write. Jobs push the outputs of the
stage they ran and then its run-cache entry (in that order, so an entry never names data the remote lacks);
the finishing job pulls entries and data back and lets `dvc repro` restore from them.

`dvc push --run-cache` sends run-cache entries but not the data of outputs declared `cache: false` (the
pipeline's metrics and reports), so the data is pushed here from the entry itself. The entry's key is
DVC's own (`dvc.stage.cache`): a pinned DVC version, and tests/test_grid_slurm.py exercise it."""

from __future__ import annotations

import os
from contextlib import chdir
import subprocess
import tempfile
from pathlib import Path

from ..errors import ConfigError
from ..io import atomic_path

REMOTE_NAME = "jeepkit-grid"


def check_remote(path: str | Path) -> Path:
    """The remote as an absolute directory, created if missing; one clear error if it cannot be written."""
    text = str(path)
    if "://" in text:
        raise ConfigError(f"grid remote {text}: must be a directory on a shared filesystem, not a URL")
    p = Path(text).expanduser().resolve()
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".jeepkit-write-check-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"grid remote {p} is not writable: {e.strerror or e}") from None
    return p


def configure(root: str | Path, remote: Path, default: bool) -> None:
    """Add the remote to the checkout's .dvc/config.local (never the committed config)."""
    args = ["dvc", "remote", "add", "--local", "-f", *(["-d"] if default else []), REMOTE_NAME, str(remote)]
    r = subprocess.run(args, cwd=root, capture_output=True, text=True)
    if r.returncode != 0:
        raise ConfigError(f"{' '.join(args)} failed: {r.stderr.strip()}")


def _entry_path(base: Path, key: str, value: str) -> Path:
    return base / "runs" / key[:2] / key / value


def stage_entry(root: str | Path, name: str) -> tuple[str, str]:
    """The run-cache (key, value) DVC stores for the stage as it now stands in the checkout."""
    from dvc.repo import Repo
    from dvc.stage.cache import _can_hash, _get_cache_hash, _get_stage_hash
    from dvc.stage.serialize import to_single_stage_lockfile

    with chdir(root), Repo(".") as repo:
        (stage,) = repo.stage.collect(name)
        if not _can_hash(stage):
            raise ConfigError(f"stage {name} cannot be run-cached (no deps, no outs or persistent outs): "
                              f"it cannot be carried between grid jobs")
        return _get_stage_hash(stage), _get_cache_hash(to_single_stage_lockfile(stage))


def push_stage(root: str | Path, remote: Path, name: str) -> tuple[str, str]:
    """Push the stage's outputs (cached or not) and then its run-cache entry; the entry."""
    from dvc.repo import Repo

    key, value = stage_entry(root, name)
    with chdir(root), Repo(".") as repo:
        local = Path(repo.cache.legacy.path)
        src = _entry_path(local, key, value)
        if not src.exists():
            raise ConfigError(f"stage {name}: no run-cache entry after the run ({src}); nothing was pushed")
        for objs in repo.stage_cache.get_used_objs([(key, value)]).values():
            failed = repo.cloud.push(objs, remote=REMOTE_NAME).failed
            if failed:
                raise ConfigError(f"stage {name}: pushing {len(failed)} objects to {remote} failed")
    _copy_atomic(src, _entry_path(remote, key, value))
    return key, value


def pull_entries(root: str | Path, remote: Path, entries: list[tuple[str, str]]) -> None:
    """Bring entries and their data from the remote into the checkout's cache, so `dvc repro` restores them."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    with chdir(root), Repo(".") as repo:
        local = Path(repo.cache.legacy.path)
        for key, value in entries:
            src = _entry_path(remote, key, value)
            if not src.exists():
                raise ConfigError(f"grid remote {remote}: run-cache entry {key[:12]}…/{value[:12]}… is missing")
            _copy_atomic(src, _entry_path(local, key, value))
        try:  # with remote=: the listing of a directory output is fetched first, then its files
            used = repo.stage_cache.get_used_objs(entries, remote=REMOTE_NAME)
        except DvcException as e:
            raise ConfigError(f"grid remote {remote}: the data of finished stages is incomplete: {e}") from None
        for objs in used.values():
            failed = repo.cloud.pull(objs, remote=REMOTE_NAME).failed
            if failed:
                raise ConfigError(f"grid remote {remote}: {len(failed)} objects of finished stages are missing")


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        tmp.write_bytes(src.read_bytes())
