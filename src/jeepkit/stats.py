"""Second-moment statistics C = E[k kᵀ] of the edited Linear layers' inputs.

MEMIT-family editors weigh an edit against how the layer is normally used: A = λC + KKᵀ. C is
accumulated over every non-padded token of a text corpus in one forward pass that hooks all the
layers a run needs and stops after the deepest one. Each file carries a sidecar with what produced
it (corpus, samples, length, dtype, model id and revision); the cache key hashes all of it.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from .device import CPU, input_device, module_device
from .errors import ConfigError, InputError
from .hooks import StopForward, capture, stop_after
from .io import atomic_path, sha256_file, stable_hash, write_json
from .lineage import fingerprint
from .models import Arch, get_module, layer_index
from .params import need
from .tokens import pad_id, right_pad


@dataclass(frozen=True)
class CorpusSpec:
    """corpus: "wikitext" (HF datasets, online), "file:<path>" (raw text, one document per line) or "self"."""

    corpus: str
    n_samples: int
    max_length: int
    dtype: str = "float32"
    seed: int = 1

    def corpus_sha256(self) -> str | None:
        """The corpus file's hash (a different file under the same name is a different corpus)."""
        if not self.corpus.startswith("file:"):
            return None
        path = Path(self.corpus[5:])
        if not path.is_file():
            raise InputError("covariance corpus file does not exist", file=str(path))
        st = path.stat()
        return _sha256_once(path.resolve(), st.st_mtime_ns, st.st_size)

    def key(self, model_identity: dict[str, Any]) -> str:
        """Everything C depends on: corpus (and its bytes), sizes, dtype, seed, model, and the code."""
        return stable_hash({"corpus": self.corpus, "n_samples": self.n_samples, "max_length": self.max_length,
                            "dtype": self.dtype, "seed": self.seed, "model": model_identity,
                            "corpus_sha256": self.corpus_sha256(), "code": code_fingerprint()})


@lru_cache(maxsize=None)
def _sha256_once(path: Path, mtime_ns: int, size: int) -> str:
    """The key, the sidecar and the metrics all need the corpus hash: read a large corpus once per process."""
    return sha256_file(path)


# The modules whose code decides C (statistics cache key); reporting or editing changes keep the cache.
STATS_CODE = ("jeepkit.stats", "jeepkit.hooks", "jeepkit.tokens", "jeepkit.models")


def code_fingerprint() -> str:
    return fingerprint(STATS_CODE)


def corpus_spec(params: dict[str, Any]) -> CorpusSpec:
    s = need(params, "stats")
    return CorpusSpec(corpus=str(s["corpus"]), n_samples=int(s["n_samples"]), max_length=int(s["max_length"]),
                      dtype=str(s.get("dtype", "float32")), seed=int(s.get("seed", 1)))


def _file_documents(path: str, n: int) -> list[str]:
    p = Path(path)
    if not p.exists():
        raise InputError("covariance corpus file does not exist", file=str(p))
    docs = []
    with open(p, encoding="utf-8", newline=None) as f:
        for line in f:
            line = line.strip()
            if line:
                docs.append(line)
                if len(docs) >= n:
                    break
    if not docs:
        raise InputError("no non-empty lines", file=str(p))
    return docs


def _wikitext_documents(n: int, seed: int) -> list[str]:
    try:
        from datasets import load_dataset

        ds = load_dataset("Salesforce/wikitext", "wikitext-103-raw-v1", split="train")
    except Exception as e:  # network or cache failure: say what to do instead
        raise ConfigError(f"cannot load WikiText through `datasets` ({type(e).__name__}: {e}). Offline? Use "
                          "stats.corpus: file:<path to wiki.test.raw> or stats.corpus: self") from None
    texts = [t.strip() for t in ds["text"] if len(t.strip()) > 50]
    idx = list(range(len(texts)))
    random.Random(seed).shuffle(idx)
    return [texts[i] for i in idx[:n]]


@torch.no_grad()
def _self_documents(model: nn.Module, tok, n: int, max_length: int, seed: int, batch: int = 128) -> list[str]:
    """Text sampled from the model itself (top-k 40, fixed seed): a corpus that needs nothing offline.

    Draws are made on the CPU with a CPU generator (the same choice among the top 40 on any device)."""
    gen = torch.Generator(device=CPU).manual_seed(seed)
    dev = input_device(model)
    words = ["The", "In", "A", "It", "He", "She", "This", "During", "After", "When", "His", "Her"]
    lengths = {w: len(tok(w, add_special_tokens=True)["input_ids"]) for w in words}
    starts = [w for w in words if lengths[w] == min(lengths.values())]  # equal lengths: no padding needed
    docs: list[str] = []
    for b in tqdm(range(0, n, batch), desc="sampling text from the model", leave=False):
        m = min(batch, n - b)
        seqs = [tok(starts[(b + i) % len(starts)], add_special_tokens=True)["input_ids"] for i in range(m)]
        width = len(seqs[0])
        ids = torch.tensor(seqs, dtype=torch.long, device=CPU)
        past = None
        cur = ids
        out = [ids]
        for _ in range(max_length - width):
            res = model(input_ids=cur.to(dev), past_key_values=past, use_cache=True)
            past = res.past_key_values
            logits = res.logits[:, -1].float()
            top = logits.topk(40, dim=-1)
            choice = torch.multinomial(torch.softmax(top.values.to(CPU), -1), 1, generator=gen)
            cur = top.indices.to(CPU).gather(1, choice)
            out.append(cur)
        full = torch.cat(out, 1)
        docs.extend(tok.batch_decode(full, skip_special_tokens=True))
    return docs


def corpus_documents(spec: CorpusSpec, model: nn.Module, tok) -> list[str]:
    if spec.corpus.startswith("file:"):
        return _file_documents(spec.corpus[5:], spec.n_samples)
    if spec.corpus == "wikitext":
        return _wikitext_documents(spec.n_samples, spec.seed)
    if spec.corpus == "self":
        return _self_documents(model, tok, spec.n_samples, spec.max_length, spec.seed)
    raise ConfigError(f"unknown stats corpus {spec.corpus!r}; expected wikitext, file:<path> or self")


def _batches(token_lists: list[list[int]], budget: int) -> Iterable[list[list[int]]]:
    """Length-sorted batches of at most `budget` padded tokens (fewer pad positions, fewer passes)."""
    order = sorted(token_lists, key=len)
    cur: list[list[int]] = []
    for seq in order:
        if cur and (len(cur) + 1) * len(seq) > budget:
            yield cur
            cur = []
        cur.append(seq)
    if cur:
        yield cur


@torch.no_grad()
def accumulate_second_moments(model: nn.Module, tok, arch: Arch, module_names: list[str], docs: list[str],
                              max_length: int, dtype: str = "float32", token_budget: int = 4096
                              ) -> tuple[dict[str, torch.Tensor], int]:
    """Σ x xᵀ / count over all non-padded tokens, for every module input in one pass over `docs`.

    Each sum is accumulated on its module's device in `dtype` (float32 by default, whatever the model
    dtype) and returned on the CPU; `token_budget` padded tokens per pass bound the activation memory.
    """
    acc_dtype = {"float32": torch.float32, "float64": torch.float64}.get(dtype)
    if acc_dtype is None:
        raise ConfigError(f"stats dtype must be float32 or float64, not {dtype!r}")
    mods = {n: get_module(model, n) for n in module_names}
    deepest = get_module(model, arch.name("layer", max(layer_index(n) for n in module_names)))
    enc = [tok(d, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"] for d in docs]
    enc = [e for e in enc if len(e) > 1]
    if not enc:
        raise ConfigError("the covariance corpus has no document of two or more tokens")
    sums = {n: torch.zeros(m.in_features, m.in_features, dtype=acc_dtype, device=module_device(m))
            for n, m in mods.items()}
    count = 0
    total = sum(len(e) for e in enc)
    bar = tqdm(total=total, desc=f"covariance ({len(mods)} layers)", unit="tok")
    for chunk in _batches(enc, token_budget):
        ids, mask = right_pad(chunk, pad_id(tok), device=input_device(model))
        flat = mask.bool().reshape(-1)
        with capture(mods, inputs=True) as got, stop_after(deepest):
            try:
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            except StopForward:
                pass
        for n, x in got.items():
            x = x.reshape(-1, x.shape[-1])[flat.to(x.device)].to(acc_dtype)
            sums[n].addmm_(x.T, x)
        n_tok = int(flat.sum())
        count += n_tok
        bar.update(n_tok)
    bar.close()
    moments = {n: (s / count).to(CPU) for n, s in sums.items()}
    for n, c in moments.items():
        if not torch.isfinite(c).all():
            raise ConfigError(f"statistics of {n} are not finite (an activation overflowed in the model dtype); "
                              "compute statistics with model.dtype float32 or bfloat16")
    return moments, count


def compute_stats(model: nn.Module, tok, arch: Arch, module_names: list[str], spec: CorpusSpec,
                  model_identity: dict[str, Any], out_dir: str | Path, token_budget: int = 4096
                  ) -> tuple[dict[str, Any], dict[str, float]]:
    """Compute and store C for `module_names` under out_dir/<key>/ (safetensors + sidecar).

    Returns (sidecar, wall times); the times stay out of the files so a re-run writes the same bytes.
    """
    t0 = time.time()
    docs = corpus_documents(spec, model, tok)
    t_corpus = time.time() - t0
    moments, count = accumulate_second_moments(model, tok, arch, module_names, docs, spec.max_length, spec.dtype,
                                               token_budget=token_budget)
    n_used = sum(len(tok(d, add_special_tokens=True, truncation=True, max_length=spec.max_length)["input_ids"]) > 1
                 for d in docs)
    key = spec.key(model_identity)
    out = Path(out_dir) / key
    out.mkdir(parents=True, exist_ok=True)
    sidecar = {"corpus": spec.corpus, "corpus_sha256": spec.corpus_sha256(), "n_samples": spec.n_samples,
               "max_length": spec.max_length, "dtype": spec.dtype, "seed": spec.seed, "model": model_identity,
               "key": key, "code_fingerprint": code_fingerprint(), "n_documents": len(docs),
               "n_documents_used": n_used, "n_tokens": count}
    seconds = {"corpus_seconds": round(t_corpus, 1), "seconds": round(time.time() - t0, 1)}
    for name, c in moments.items():
        with atomic_path(out / f"{name}.safetensors") as tmp:
            save_file({"mom2": c.contiguous()}, str(tmp),
                      metadata={"sidecar": json.dumps({**sidecar, "count": count}, sort_keys=True)})
    write_json(out / "sidecar.json", {**sidecar, "modules": sorted(moments)})
    return sidecar, seconds


class CovarianceStore:
    """Read-only access to computed statistics, checked against the requested corpus spec and model."""

    def __init__(self, root: str | Path, spec: CorpusSpec, model_identity: dict[str, Any]):
        self.dir = Path(root) / spec.key(model_identity)
        self.spec = spec
        self.model_identity = model_identity
        self._cache: dict[str, torch.Tensor] = {}

    def describe(self) -> dict[str, Any]:
        """The covariance settings a run used (recorded in its metrics)."""
        side = self.dir / "sidecar.json"
        info = {"key": self.dir.name, "corpus": self.spec.corpus, "corpus_sha256": self.spec.corpus_sha256(),
                "n_samples": self.spec.n_samples, "max_length": self.spec.max_length, "dtype": self.spec.dtype,
                "seed": self.spec.seed}
        if side.exists():
            s = _read_sidecar(side)
            info.update({k: s.get(k) for k in ("n_documents", "n_documents_used", "n_tokens", "code_fingerprint")})
        return info

    def get(self, module_name: str) -> torch.Tensor:
        """C for one module, in its stored dtype on the CPU (held once; each solver converts it to float64
        on its own device); a clear error if the stats stage did not produce it."""
        if module_name not in self._cache:
            path = self.dir / f"{module_name}.safetensors"
            if not path.exists():
                raise ConfigError(f"missing covariance statistics for {module_name} ({path}); add the layer to the "
                                  f"methods' params and re-run the `stats` stage (corpus {self.spec.corpus}, "
                                  f"{self.spec.n_samples} samples)")
            try:
                tensors = load_file(str(path))
            except Exception as e:  # safetensors raises its own error types for empty or truncated files
                raise InputError(f"unreadable statistics file ({type(e).__name__}: {e}); re-run the stats stage",
                                 file=str(path)) from None
            if "mom2" not in tensors or tensors["mom2"].ndim != 2 or tensors["mom2"].shape[0] != tensors["mom2"].shape[1]:
                raise InputError("expected one square matrix 'mom2'; re-run the stats stage", file=str(path))
            side = self.dir / "sidecar.json"
            if side.exists():
                model = _read_sidecar(side).get("model")
                if model != self.model_identity:
                    raise InputError(f"statistics computed for model {model}, not {self.model_identity}; "
                                     "re-run the stats stage", file=str(side), field="model")
            c = tensors["mom2"]
            if not torch.isfinite(c).all():
                raise InputError("non-finite values; re-run the stats stage", file=str(path))
            self._cache[module_name] = c
        return self._cache[module_name]


def _read_sidecar(path: Path) -> dict[str, Any]:
    from .io import read_json

    s = read_json(path)
    if not isinstance(s, dict):
        raise InputError("expected a JSON object", file=str(path))
    return s
