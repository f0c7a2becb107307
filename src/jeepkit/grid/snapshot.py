"""The working tree a grid runs, as git objects: HEAD plus the tree of every tracked and untracked,
not-ignored file. Jobs check out exactly this, so an uncommitted edit reaches them and a later edit in the
submitting checkout does not; `tree_of` tells whether the checkout still matches what was submitted."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError


def git(root: str | Path, *args: str, env: dict | None = None) -> str:
    r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    if r.returncode != 0:
        raise ConfigError(f"git {' '.join(args)} failed in {root}: {r.stderr.strip().splitlines()[-1:] or r.returncode}")
    return r.stdout.strip()


@dataclass(frozen=True)
class Snapshot:
    head: str  # the commit the jobs' checkouts sit on (metrics record it as git_commit)
    tree: str  # the working tree on top of it (the same tree as HEAD's when the checkout is clean)


def tree_of(root: str | Path) -> str:
    """The git tree of the working tree, built in a throw-away index: the user's index is not touched (the
    blobs it writes are ordinary loose objects, as `git stash create` writes)."""
    root = Path(root)
    with tempfile.TemporaryDirectory(prefix="jeepkit-index-") as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        git(root, "read-tree", "HEAD", env=env)
        git(root, "add", "-A", ".", env=env)
        return git(root, "write-tree", env=env)


def take(root: str | Path) -> Snapshot:
    root = Path(root)
    try:
        head = git(root, "rev-parse", "HEAD")
    except ConfigError:
        raise ConfigError(f"{root} is not a git checkout with a commit: grid jobs check out a commit") from None
    return Snapshot(head=head, tree=tree_of(root))


def check_out(src: str | Path, snap: Snapshot, dest: str | Path) -> None:
    """A checkout of `snap` at `dest` that shares `src`'s objects: HEAD at snap.head, the files of snap.tree,
    the index at HEAD (so uncommitted changes show as changes, as they do in the submitting checkout)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", str(src), str(dest)], check=True)
    git(dest, "checkout", "-q", "--detach", snap.head)
    git(dest, "read-tree", "--reset", "-u", snap.tree)
    git(dest, "reset", "-q")
