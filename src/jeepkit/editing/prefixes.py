"""Cache of the sampled context prefixes of an edit seed.

Sampling the five prefixes is 46 small forwards of the unedited model: about 4.5 s on two CPU cores,
paid again by every edit stage of a seed although the result depends only on the model, the seed and
the sampling code. The cache key names all three (the engine's code by content hash, so a change to
the sampler invalidates it); every run still records the prefixes it used in its own outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from ..io import stable_hash, write_json
from ..lineage import fingerprint
from .engine import PREFIX_SEEDS, sample_prefixes

SAMPLER_CODE = ("jeepkit.editing.engine",)


def prefix_key(model_identity: dict[str, Any], seed: int, length: int = 10) -> str:
    return stable_hash({"model": model_identity, "seed": int(seed), "length": int(length),
                        "seeds": list(PREFIX_SEEDS), "code": fingerprint(SAMPLER_CODE)}, n=24)


class PrefixCache:
    """`engine.sample_prefixes` results under `root/prefixes/` (`root=None`: no cache).

    A freshly sampled set is written by `flush()`, which a stage calls once its outputs are written, so a
    stage that fails leaves nothing behind. A stored file that is not a list of strings is sampled again.
    """

    def __init__(self, root: str | Path | None):
        self.root = None if root is None else Path(root) / "prefixes"
        self.pending: dict[Path, list[str]] = {}

    def get(self, model: nn.Module, tok, model_identity: dict[str, Any], seed: int, length: int = 10) -> list[str]:
        if self.root is None:
            return sample_prefixes(model, tok, seed, length=length)
        path = self.root / f"{prefix_key(model_identity, seed, length)}.json"
        if path.exists():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                stored = None
            if isinstance(stored, list) and len(stored) == len(PREFIX_SEEDS) and all(isinstance(x, str) for x in stored):
                return stored
        prefixes = sample_prefixes(model, tok, seed, length=length)
        self.pending[path] = prefixes
        return prefixes

    def flush(self) -> None:
        for path, prefixes in self.pending.items():
            write_json(path, prefixes)
        self.pending.clear()
