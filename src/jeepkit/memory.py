"""A memory and compute model of each stage, from the model's dimensions: the preflight's numbers and the
chunk sizes that fit `run.memory_budget_gb`.

Bytes are counted per token from what a decoder layer keeps alive (no-grad forward: the residual, q/k/v,
the MLP's intermediate activations of one layer at a time; with gradients to a δ at layer l0: what autograd
saves in every layer from l0 up). FLOPs are 2·params per token forward and 4·params per token backward.
The constants are deliberately simple and are checked against measured peaks (`benchmarks/preflight_check.py`,
SmolLM2 on a CPU) and, on a GPU, by `benchmarks/gpu_check.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from .errors import ConfigError

GB = 2 ** 30
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}

# Per-token elements a layer holds, as multiples of (hidden, intermediate): measured on SmolLM2 (see module doc).
FWD_HIDDEN, FWD_INTER = 6, 3  # transient, one layer at a time
BWD_HIDDEN, BWD_INTER = 12, 4  # saved for backward, every layer from the lowest δ up


@dataclass(frozen=True)
class Dims:
    """What memory and compute depend on. `n_params` counts every weight (embeddings included)."""

    n_layers: int
    hidden: int
    intermediate: int
    vocab: int
    n_params: int
    dtype: str = "float32"
    tied: bool = False

    @property
    def bytes(self) -> int:
        return BYTES[self.dtype]

    @property
    def layer_params(self) -> int:
        emb = self.vocab * self.hidden * (1 if self.tied else 2)
        return max(1, (self.n_params - emb) // self.n_layers)

    def params_through(self, layer: int) -> int:
        """Weights a forward pass up to (and including) decoder layer `layer` touches."""
        return self.vocab * self.hidden + self.layer_params * (layer + 1)

    @classmethod
    def from_config(cls, cfg: Any, dtype: str = "float32") -> "Dims":
        hidden = int(getattr(cfg, "hidden_size", None) or cfg.n_embd)
        layers = int(getattr(cfg, "num_hidden_layers", None) or cfg.n_layer)
        inter = int(getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * hidden)
        vocab = int(cfg.vocab_size)
        heads = int(getattr(cfg, "num_attention_heads", None) or cfg.n_head)
        kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
        gated = cfg.model_type in ("llama", "mistral", "qwen2", "qwen3")
        attn = 2 * hidden * hidden + 2 * hidden * (hidden * kv // heads)
        mlp = (3 if gated else 2) * hidden * inter
        tied = bool(getattr(cfg, "tie_word_embeddings", False))
        n = layers * (attn + mlp) + vocab * hidden * (1 if tied else 2)
        return cls(layers, hidden, inter, vocab, n, dtype, tied)

    @classmethod
    def from_model(cls, model: Any) -> "Dims":
        d = cls.from_config(model.config, str(next(model.parameters()).dtype).removeprefix("torch."))
        return replace(d, n_params=sum(p.numel() for p in model.parameters()))


# The paper's models and the embedded one, as data (the preflight needs no weights). Configs of
# huggyllama/llama-7b, EleutherAI/gpt-j-6B and HuggingFaceTB/SmolLM2-135M-Instruct.
KNOWN: dict[str, dict[str, Any]] = {
    "llama7b": dict(model_type="llama", hidden_size=4096, num_hidden_layers=32, intermediate_size=11008,
                    vocab_size=32000, num_attention_heads=32, tie_word_embeddings=False),
    "gptj": dict(model_type="gptj", n_embd=4096, n_layer=28, n_inner=16384, vocab_size=50400, n_head=16,
                 tie_word_embeddings=False),
    "smollm2": dict(model_type="llama", hidden_size=576, num_hidden_layers=30, intermediate_size=1536,
                    vocab_size=49152, num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True),
}


def known_dims(key: str, dtype: str) -> Dims:
    from types import SimpleNamespace

    if key not in KNOWN:
        raise ConfigError(f"preflight: no dimensions for model {key!r}; known: {sorted(KNOWN)}")
    return Dims.from_config(SimpleNamespace(**KNOWN[key]), dtype)


# ------------------------------------------------------------------ per-stage activation bytes

def forward_bytes(d: Dims, tokens: int, seq_len: int) -> int:
    """Transient peak of a no-grad forward over `tokens` tokens (rows × padded length)."""
    per_tok = FWD_HIDDEN * d.hidden + FWD_INTER * d.intermediate
    return tokens * per_tok * d.bytes + tokens * seq_len * 4  # + one layer's attention scores (fp32)


def logits_bytes(d: Dims, positions: int, grad: bool = False) -> int:
    """LM-head logits at scored positions only, in float32 (+ log-softmax, + gradient)."""
    return positions * d.vocab * 4 * (4 if grad else 2)


def train_bytes(d: Dims, tokens: int, seq_len: int, from_layer: int) -> int:
    """Activations autograd saves for a backward pass to a δ at `from_layer` (layers below need nothing)."""
    layers = d.n_layers - from_layer
    per_tok = BWD_HIDDEN * d.hidden + BWD_INTER * d.intermediate
    return tokens * layers * per_tok * d.bytes + forward_bytes(d, tokens, seq_len)


@dataclass(frozen=True)
class Workload:
    """The shape of one stage's work: tokens per prompt, rows per request, answer tokens."""

    seq_len: int = 40  # padded tokens of a rewrite row (prefix ≈ 10 + prompt + answer)
    rows_per_request: int = 7  # bare + 5 prefixes + the KL prompt
    answer_tokens: int = 3
    eval_rows_per_case: int | None = None  # sequences per case (None: the dataset kind's usual count)


def target_request_bytes(d: Dims, w: Workload, from_layer: int) -> int:
    toks = w.rows_per_request * w.seq_len
    return train_bytes(d, toks, w.seq_len, from_layer) + logits_bytes(d, w.rows_per_request * w.answer_tokens + 1,
                                                                       grad=True)


def key_row_bytes(d: Dims, w: Workload) -> int:
    return forward_bytes(d, w.seq_len, w.seq_len) + w.seq_len * (d.intermediate + d.hidden) * d.bytes


def eval_row_bytes(d: Dims, w: Workload) -> int:
    return forward_bytes(d, w.seq_len, w.seq_len) + logits_bytes(d, w.answer_tokens)


def probe_row_bytes(d: Dims, w: Workload) -> int:
    states = (d.n_layers + 1) * w.seq_len * d.hidden * d.bytes
    return forward_bytes(d, w.seq_len, w.seq_len) + states


def stats_token_bytes(d: Dims, seq_len: int, n_layers_hooked: int) -> int:
    """Per padded token: the forward plus each hooked layer's captured input (d_k, model dtype + fp32 copy)."""
    return forward_bytes(d, 1, seq_len) + n_layers_hooked * d.intermediate * (d.bytes + 4)


def covariance_bytes(d_k: int, dtype: str = "float32") -> int:
    return d_k * d_k * BYTES[dtype]


# ------------------------------------------------------------------ sizing chunks to a budget

HEADROOM = 0.85  # of the budget, for chunks and fixed buffers; the rest for the allocator and Python objects


def plan(d: Dims, budget: float, rt, params: dict[str, Any] | None = None, w: Workload = Workload()):
    """A Runtime whose chunks fit `budget` bytes beside the weights and the largest fixed buffers.

    Fixed: the weights, one float64 covariance and solve system of the largest edited input (d_k²·8·3), the
    float32 K of every request (d_k × n). Each chunk size is the largest that fits what is left, capped by
    the explicit limit already in `rt`. A budget that leaves room for no single row is refused.
    """
    n = int(((params or {}).get("edit") or {}).get("batch_size") or ((params or {}).get("edit") or {}).get("n_edits", 1))
    fixed = d.n_params * d.bytes + 3 * d.intermediate ** 2 * 8 + d.intermediate * n * 4
    free = HEADROOM * budget - fixed
    lowest = _lowest_delta_layer(params, d)
    need = {"target_requests": target_request_bytes(d, w, lowest), "key_rows": key_row_bytes(d, w),
            "eval_rows": eval_row_bytes(d, w), "decode_rows": eval_row_bytes(d, w), "probe_rows": probe_row_bytes(d, w),
            "stats_tokens": stats_token_bytes(d, 2048, 9),
            "grad_rows": train_bytes(d, w.seq_len, w.seq_len, 0) + logits_bytes(d, w.answer_tokens, grad=True)}
    if free < max(need.values()):
        worst = max(need, key=need.get)
        raise ConfigError(f"params: run.memory_budget_gb: {budget / GB:.3g} GB leaves {max(free, 0) / GB:.3g} GB "
                          f"beside the weights and solve buffers ({fixed / GB:.3g} GB), less than one row of "
                          f"{worst} needs ({need[worst] / GB:.3f} GB); raise the budget or use a smaller dtype")
    sizes = {}
    for k, per in need.items():
        cap = getattr(rt, k) or (8 if k == "target_requests" else None)
        sizes[k] = max(1, min(int(free // per), cap if cap is not None else 1 << 30))
    # the key reads' cached layer inputs stay while one pass of key rows runs beside them
    sizes["key_cache_mb"] = min(rt.key_cache_mb, max(0, int((free - sizes["key_rows"] * need["key_rows"]) // 2 ** 20)))
    return rt.with_(**sizes)


def _lowest_delta_layer(params: dict[str, Any] | None, d: Dims) -> int:
    """The lowest layer any configured method puts a δ at (gradients flow from there up); 0 if unknown."""
    try:
        hp = (params or {})["hparams"][params["model"]["key"]]
    except (KeyError, TypeError):
        return 0
    tops = []
    for name, h in hp.items():
        h = h or {}
        if "layers" in h:
            tops.append(max(h["layers"]))
        if "layers_low" in h:
            tops.append(max(h["layers_low"]))
        if "layer" in h:
            tops.append(int(h["layer"]))
    return min(tops) if tops else 0


def fits(total: float, budget: float) -> bool:
    return math.isfinite(total) and total <= budget


def host_overhead(d: Dims) -> float:
    """Host memory beyond the device peak when the model runs on the CPU: the loader's transient copy of
    the weights (safetensors pages mapped while the parameters are filled). Zero on a GPU, where the
    device peak is what the preflight reports."""
    return float(d.n_params * d.bytes)
