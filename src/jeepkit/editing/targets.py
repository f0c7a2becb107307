"""Cache of optimised target vectors.

A target depends only on (model, request, objective hyperparameters, context prefixes). Storing it
per case under a content hash lets edit counts, seeds' re-runs and method variants that share an
objective (JEEP's "w/o Step 2", "w/o Step 3", "even spread") reuse the dominant cost of an edit.
The cache itself is a scratch directory shared by stages; every edit run copies the targets it used
into its own DVC-tracked output (`export`), so each result carries the exact vectors it was built from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .. import faults
from ..data.schema import EditCase
from ..io import atomic_path, stable_hash
from ..lineage import fingerprint, module_file
from .engine import Objective, TargetResult


# The modules whose code decides an optimised target. A change to any of them (not to a comment or a
# docstring) changes every key, so a cache shared between clones never serves targets older code computed.
TARGET_CODE = ("jeepkit.editing.engine", "jeepkit.editing.targets", "jeepkit.tokens", "jeepkit.hooks",
               "jeepkit.forward", "jeepkit.models", "jeepkit.data.schema")


def code_fingerprint(method: str | None = None) -> str:
    """Fingerprint of TARGET_CODE plus the method's own module (which builds the objective)."""
    mods = list(TARGET_CODE)
    if method and module_file(f"jeepkit.editing.{method}") is not None:
        mods.append(f"jeepkit.editing.{method}")
    return fingerprint(mods)


def target_key(model_identity: dict[str, Any], case: EditCase, objective: Objective, prefixes: Sequence[str],
               method: str | None = None) -> str:
    return stable_hash({"model": model_identity, "prompt": case.prompt, "subject": case.subject,
                        "target_new": case.target_new, "objective": objective.describe(),
                        "prefixes": list(prefixes), "code": code_fingerprint(method)}, n=24)


class TargetCache:
    """Per-case safetensors files under `root`; `root=None` disables caching."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0
        self.used: dict[str, None] = {}  # keys read or written, in first-use order (for `export`)

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> TargetResult | None:
        if self.root is None or not self._path(key).exists():
            return None
        path = self._path(key)
        self._use(key)
        tensors = load_file(str(path))
        with open(path, "rb") as f:  # metadata lives in the safetensors header
            n = int.from_bytes(f.read(8), "little")
            meta = json.loads(f.read(n)).get("__metadata__", {})
        z = {k[2:]: v for k, v in tensors.items() if k.startswith("z.")}
        init = {k[5:]: v for k, v in tensors.items() if k.startswith("init.")}
        return TargetResult(z=z, init=init, info=json.loads(meta.get("info", "{}")))

    def put(self, key: str, res: TargetResult) -> None:
        if self.root is None:
            return
        tensors = {f"z.{k}": v.contiguous() for k, v in res.z.items()}
        tensors.update({f"init.{k}": v.contiguous() for k, v in res.init.items()})
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"info": json.dumps(res.info, sort_keys=True)})
        self._use(key)

    def _use(self, key: str) -> None:
        self.used.setdefault(key, None)

    def export(self, dest: str | Path, keys: Sequence[str] | None = None) -> int:
        """Copy the cached targets for `keys` (default: every key used so far) into `dest`, same layout.

        `dest` can later serve as the root of a `TargetCache` to re-use or audit those vectors.
        """
        if self.root is None:
            return 0
        n = 0
        for key in (self.used if keys is None else keys):
            src = self._path(key)
            if src.exists():
                out = Path(dest) / key[:2] / src.name
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, out)
                n += 1
        return n

    def get_or_compute(self, keys: Sequence[str], compute: Callable[[list[int]], list[TargetResult]],
                       batch: int = 8, desc: str = "optimise targets") -> list[TargetResult]:
        """Cached results where present; the rest computed `batch` requests at a time by `compute`."""
        out: list[TargetResult | None] = [self.get(k) for k in keys]
        todo = [i for i, r in enumerate(out) if r is None]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        bar = tqdm(total=len(todo), desc=desc, disable=not todo)
        for b in range(0, len(todo), batch):
            idx = todo[b:b + batch]
            for i, res in zip(idx, compute(idx)):
                self.put(keys[i], res)
                out[i] = res
            bar.update(len(idx))
            faults.checkpoint("targets")
        bar.close()
        return out  # type: ignore[return-value]
