"""A grid's record on disk (`.dvc/tmp/cluster/<id>/`): what was submitted (grid.json), one marker per
finished stage (done/), batch scripts, job logs and the jobs' scratch checkouts. Markers are written only
after a stage's outputs and run-cache entry are in the remote, so a marker never outruns the data."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io import atomic_path
from .dag import Node, slug
from .snapshot import Snapshot


@dataclass
class Grid:
    id: str
    repo: str  # the submitting checkout
    remote: str
    snapshot: Snapshot
    profile: str | None
    model_key: str | None
    overrides: dict[str, Any]
    targets: list[str]
    links: dict[str, str]  # name beside the checkout -> what it points at (e.g. shared -> /data/shared)
    stages: list[Node]
    resources: dict[str, dict[str, Any]]
    submissions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        return grids_dir(self.repo) / self.id

    @property
    def job_stages(self) -> list[Node]:
        return [n for n in self.stages if n.runs_in == "job"]

    def done_path(self, stage: str) -> Path:
        return self.dir / "done" / f"{slug(stage)}.json"

    def done(self, stage: str) -> dict[str, Any] | None:
        p = self.done_path(stage)
        return json.loads(p.read_text()) if p.exists() else None

    def save(self) -> None:
        d = asdict(self)
        write_atomic(self.dir / "grid.json", json.dumps(d, indent=1, sort_keys=True) + "\n")
        write_atomic(grids_dir(self.repo) / "latest", self.id + "\n")


def grids_dir(repo: str | Path) -> Path:
    return Path(repo) / ".dvc" / "tmp" / "cluster"


def grid_id(snap: Snapshot, overrides: dict, targets: list[str], remote: str) -> str:
    text = json.dumps([snap.head, snap.tree, overrides, targets, remote], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load(path: str | Path) -> Grid:
    p = Path(path)
    p = p / "grid.json" if p.is_dir() else p
    if not p.exists():
        raise ConfigError(f"{p}: no grid was recorded here")
    d = json.loads(p.read_text())
    d["snapshot"] = Snapshot(**d["snapshot"])
    d["stages"] = [Node(s["name"], tuple(s["upstream"]), s.get("runs_in", "job")) for s in d["stages"]]
    return Grid(**d)


def latest(repo: str | Path) -> Grid | None:
    p = grids_dir(repo) / "latest"
    return load(grids_dir(repo) / p.read_text().strip()) if p.exists() else None


def write_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
