"""MEMIT's generation metrics on CounterFact `generation_prompts` (PMET Table 1's Fluency and Consistency).

Only the official CounterFact / Multi-CounterFact files carry generation prompts (ten per record); the mirror's
EasyEdit-style records and the bundled cases do not, and are not scored here. As in ROME/MEMIT
(spec §7.2, "optional extras"): every generation prompt is continued by top-k sampling (k = 5) up to
`max_length` tokens including the prompt, not stopped at end-of-text, and the texts keep their prompt.

* **Fluency** (GE): per text the weighted bi-/tri-gram entropy (`evaluation.ngram_entropy`), averaged over the
  record's texts; tables report it ×100.
* **Consistency** (RS, reference score): the cosine of TF-IDF vectors of the record's generated texts joined and
  of the attribute snippets of its new target (`attribute_snippets[relation_id][target_new.id]`, Wikipedia
  text about other subjects that have that object), ×100. The vectoriser reads MEMIT's `idf.npy` and
  `tfidf_vocab.json`; without them it is fitted on every snippet text, as MEMIT computed those files.

The sampler seeds one generator per prompt, so a text does not depend on its batch; a GPU's sampler draws
other numbers than the CPU's, so these two scores are reproducible per device kind, not across them.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from torch import nn

from .data.schema import EditCase
from .errors import ConfigError, InputError
from .evaluation import ngram_entropy
from .free_generation import PROTOCOL, sampled_texts
from .metrics import t_interval

_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern, on lower-cased text


@dataclass(frozen=True)
class GenerationSettings:
    max_length: int = 100  # prompt + continuation tokens (MEMIT's max_out_len); 0: not scored
    top_k: int = 5
    seed: int = 0
    attribute_snippets: str | None = None  # MEMIT's attribute_snippets.json: Consistency needs it
    idf: str | None = None  # MEMIT's idf.npy and tfidf_vocab.json (both or neither)
    tfidf_vocab: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "GenerationSettings":
        g = dict(params.get("generation") or {})
        s = cls(**g)
        if (s.idf is None) != (s.tfidf_vocab is None):
            raise ConfigError("params: generation.idf and generation.tfidf_vocab go together (MEMIT's idf.npy and "
                              "tfidf_vocab.json); give both or neither")
        return s


class TfIdf:
    """scikit-learn's TfidfVectorizer transform (raw counts × idf, L2-normalised) over a fixed vocabulary."""

    def __init__(self, vocab: Mapping[str, int], idf: np.ndarray):
        self.vocab, self.idf = dict(vocab), np.asarray(idf, dtype=np.float64)

    @classmethod
    def fit(cls, documents: Sequence[str]) -> "TfIdf":
        """Smoothed idf = ln((1 + n) / (1 + df)) + 1 over these documents (the vectoriser's defaults)."""
        df: Counter[str] = Counter()
        for d in documents:
            df.update(set(_TOKEN.findall(d.lower())))
        words = sorted(df)
        n = len(documents)
        return cls({w: i for i, w in enumerate(words)},
                   np.array([math.log((1 + n) / (1 + df[w])) + 1.0 for w in words]))

    @classmethod
    def from_files(cls, idf_path: str, vocab_path: str) -> "TfIdf":
        idf = np.load(idf_path, allow_pickle=False)
        with open(vocab_path, encoding="utf-8") as f:
            vocab = json.load(f)
        if not isinstance(vocab, dict) or not all(isinstance(v, int) and 0 <= v < len(idf) for v in vocab.values()):
            raise InputError(f"expected a mapping of words to indices below {len(idf)}", file=vocab_path)
        return cls(vocab, idf)

    def vector(self, text: str) -> np.ndarray:
        v = np.zeros(len(self.idf))
        for w, c in Counter(_TOKEN.findall(text.lower())).items():
            if w in self.vocab:
                v[self.vocab[w]] += c
        v *= self.idf
        n = np.linalg.norm(v)
        return v / n if n > 0 else v

    def similarity(self, a: str, b: str) -> float | None:
        """Cosine of the two texts' vectors; None when either has no word of the vocabulary."""
        va, vb = self.vector(a), self.vector(b)
        if not va.any() or not vb.any():
            return None
        return float(va @ vb)


def read_attribute_snippets(path: str) -> dict[tuple[str, str], list[str]]:
    """MEMIT's attribute_snippets.json: [{relation_id, target_id, samples: [{text, …}]}] -> texts per (r, o)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise InputError(f"expected a JSON list, got {type(data).__name__}", file=path)
    out: dict[tuple[str, str], list[str]] = {}
    for i, el in enumerate(data):
        for key in ("relation_id", "target_id", "samples"):
            if not isinstance(el, dict) or key not in el:
                raise InputError("missing field", file=path, record=i, field=key)
        if not isinstance(el["samples"], list):
            raise InputError("expected a list of {text} objects", file=path, record=i, field="samples")
        for j, s in enumerate(el["samples"]):
            if not isinstance(s, dict) or not isinstance(s.get("text"), str):
                raise InputError("expected an object with a text", file=path, record=i, field=f"samples[{j}].text")
            out.setdefault((str(el["relation_id"]), str(el["target_id"])), []).append(s["text"])
    return out


def applies(settings: GenerationSettings, cases: Sequence[EditCase]) -> bool:
    """Whether MEMIT's generation metrics score these cases: some carry generation prompts and sampling is on."""
    return settings.max_length > 0 and any(c.generation_prompts for c in cases)


class GenerationScorer:
    """Loads the snippets and the vectoriser once per stage; scores each chunk's cases on its edited model."""

    def __init__(self, settings: GenerationSettings):
        self.settings = settings
        self.snippets = (read_attribute_snippets(settings.attribute_snippets)
                         if settings.attribute_snippets else None)
        self.tfidf: TfIdf | None = None
        if self.snippets is not None:
            self.tfidf = (TfIdf.from_files(settings.idf, settings.tfidf_vocab) if settings.idf
                          else TfIdf.fit([t for texts in self.snippets.values() for t in texts]))

    def applies(self, cases: Sequence[EditCase]) -> bool:
        return applies(self.settings, cases)

    def score(self, model: nn.Module, tok, cases: Sequence[EditCase], batch_size: int = 32) -> list[dict[str, Any]]:
        """Per case with generation prompts: {"case_id", "texts", "fluency", "consistency"} (both ×100;
        consistency None without snippets for its (relation, new target))."""
        s = self.settings
        todo = [c for c in cases if c.generation_prompts]
        texts = sampled_texts(model, tok, [p for c in todo for p in c.generation_prompts], max_length=s.max_length,
                              top_k=s.top_k, seed=s.seed, batch_size=batch_size)
        out, k = [], 0
        for c in todo:
            mine = texts[k:k + len(c.generation_prompts)]
            k += len(mine)
            refs = (self.snippets or {}).get((str(c.relation_id), str(c.target_new_id)))
            sim = self.tfidf.similarity(" ".join(mine), " ".join(refs)) if (self.tfidf and refs) else None
            out.append({"case_id": c.case_id, "texts": mine,
                        "fluency": 100.0 * float(np.mean([ngram_entropy(t) for t in mine])),
                        "consistency": None if sim is None else 100.0 * sim})
        return out


def summarise(per_case: Sequence[dict[str, Any]], settings: GenerationSettings, *,
              confidence: float = 0.95) -> dict[str, Any]:
    """GE (fluency) and RS (consistency): per-record means with t-intervals, and the settings."""
    out: dict[str, Any] = {"protocol": PROTOCOL, "settings": {"max_length": settings.max_length,
                                                              "top_k": settings.top_k, "seed": settings.seed}}
    for metric, key in (("GE", "fluency"), ("RS", "consistency")):
        vals = [c[key] for c in per_case if c.get(key) is not None]
        mean, ci = t_interval(vals, confidence) if vals else (math.nan, math.nan)
        out[metric] = {"mean": None if math.isnan(mean) else round(mean, 6),
                       "ci95": None if math.isnan(ci) else round(ci, 6), "n": len(vals)}
    return out


def check_files(settings: GenerationSettings) -> None:
    """Before any edit: the files the settings name exist."""
    for key in ("attribute_snippets", "idf", "tfidf_vocab"):
        path = getattr(settings, key)
        if path is not None and not Path(path).is_file():
            raise InputError("file not found", file=path, field=f"generation.{key}")
