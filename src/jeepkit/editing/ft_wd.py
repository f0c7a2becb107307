"""FT-WD: fine-tune every parameter of one decoder layer on the edit set, spec §4.4 (JEEP `baselines/ft`).

* Trained: all parameters whose name starts with `arch.name("layer", hp["layer"]) + "."` (attention,
  MLP, norms, biases). The reference matches the layer string as a substring ("model.layers.23" in n);
  the trailing dot here keeps layer 2 from also matching layers 20-29.
* Input: `prompt + " " + target` (subject filled in). Loss: cross-entropy on the target tokens only,
  teacher forced, as the mean over all target tokens of the batch (torch `CrossEntropyLoss` over the
  concatenated target positions, as in the reference). Target tokens are those " target" occupies after
  the prompt (`tokens.locate`), which equals tokenize(" " + target) for GPT-2 BPE and tokenize(target)
  without BOS for SentencePiece, the reference's two branches.
* Adam (default betas), lr `lr`, batches of `batch_size` cases in request order, up to `epochs` passes.
  A batch whose loss is < `loss_threshold` is skipped (no step); training stops after an epoch whose
  case-weighted mean batch loss is < `loss_threshold`. No norm constraint, no KL.
* Weight decay (Adam's coupled L2 term): 0 by default, as the reference code actually runs (its power
  law is applied only when the JSON value is a tuple, and JSON gives a list). With
  `apply_wd_power_law: true` it is n_edits^(-0.87028798)·e^(0.15589562), n_edits = len(cases) of
  this call (the reference's len(requests)).
* `shuffle: false` (default) keeps the reference's fixed request order; `shuffle: true` permutes the
  cases every epoch with a torch Generator seeded by `seed`.
* The model's train/eval mode is left unchanged (the reference calls model.train(), but GPT-J,
  LLaMA and SmolLM2 have zero dropout, so the forward pass is the same).

Returned deltas are keyed by the full parameter name (e.g. "model.layers.21.mlp.down_proj.weight",
"transformer.h.21.ln_1.bias"), one float32 tensor W_after − W_before per parameter that changed; the
parameters' `requires_grad` flags are restored afterwards (also on error).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
from torch import nn
from torch.optim import Adam
from tqdm.auto import tqdm

from ..data.schema import EditCase
from ..device import CPU, input_device, output_device
from ..errors import ConfigError, OptimisationError
from ..forward import final_hidden
from ..models import Arch
from ..tokens import Located, locate_template, pad_id, right_pad
from .hparams import NONNEG, POS, HParams, knob
from .recipe import EditContext, EditResult
from .spec import MethodSpec

WD_POWER_LAW = (-0.87028798, 0.15589562)

@dataclass(frozen=True, kw_only=True)
class Hparams(HParams):
    method: ClassVar[str] = "ft_wd"
    layer: int = knob("int", lo=0)
    lr: float = knob("num", 5e-5, **POS)
    epochs: int = knob("int", 25, lo=1)
    batch_size: int = knob("int", 32, lo=1)
    loss_threshold: float = knob("num", 0.1, **NONNEG)
    apply_wd_power_law: bool = knob("bool", False)
    wd_power_law: tuple[float, ...] = knob("nums", WD_POWER_LAW, nonempty=True)  # (exponent, log-scale)
    weight_decay: float = knob("num", 0.0, **NONNEG)  # used when the power law is off (the reference's value)
    shuffle: bool = knob("bool", False)
    seed: int = knob("int", 0)
    progress: bool = knob("bool", True)


def resolve_hp(hp: Any, arch: Arch | None = None) -> dict[str, Any]:
    """Every hyperparameter (defaults from `Hparams`) as a mapping; the layer checked against `arch`."""
    out = Hparams.coerce(hp).as_dict()
    if arch is not None and not 0 <= out["layer"] < arch.n_layers:
        raise ConfigError(f"ft_wd: layer {out['layer']} outside the model's 0..{arch.n_layers - 1}")
    return out


def power_law_weight_decay(n_edits: int, law: Sequence[float] = WD_POWER_LAW) -> float:
    """n^a · e^b, the reference's intended weight decay for n edits (≈ 3.9e-4 at 10k)."""
    a, b = law
    return float(n_edits ** a * math.exp(b))


def weight_decay(hp: Any, n_edits: int) -> float:
    hp = resolve_hp(hp)
    if hp["apply_wd_power_law"]:
        return power_law_weight_decay(n_edits, tuple(hp["wd_power_law"]))
    return float(hp["weight_decay"] or 0.0)


def trained_parameters(model: nn.Module, arch: Arch, layer: int) -> dict[str, nn.Parameter]:
    prefix = arch.name("layer", layer) + "."
    params = {n: p for n, p in model.named_parameters() if n.startswith(prefix)}
    if not params:
        raise ConfigError(f"ft_wd: no parameters start with {prefix!r}")
    return params


def encode(tok, cases: Sequence[EditCase]) -> list[Located]:
    return [locate_template(tok, c.prompt, c.subject, answer=c.target_new) for c in cases]


def batch_loss(model: nn.Module, tok, locs: Sequence[Located]) -> torch.Tensor:
    """Mean cross-entropy over all target tokens of the batch (teacher forced), in float32."""
    # the last target token is never an input
    ids, mask = right_pad([l.ids[:-1] for l in locs], pad_id(tok), device=input_device(model))
    dev = output_device(model)
    rows = torch.tensor([i for i, l in enumerate(locs) for _ in l.answer_ids], dtype=torch.long, device=dev)
    cols = torch.tensor([c for l in locs for c in l.answer_positions], dtype=torch.long, device=dev)
    labels = torch.tensor([t for l in locs for t in l.answer_ids], dtype=torch.long, device=dev)
    h = final_hidden(model, ids, mask).to(dev)
    logits = model.get_output_embeddings()(h[rows, cols]).float()
    return torch.nn.functional.cross_entropy(logits, labels)


def edit(ctx: EditContext, cases: Sequence[EditCase], hp: Any) -> EditResult:
    """Fine-tune layer hp["layer"] on `cases` in place; covariance, prefixes and cache are unused."""
    model, tok, arch = ctx.model, ctx.tok, ctx.arch
    hp = resolve_hp(hp, arch)
    t0 = time.time()
    params = trained_parameters(model, arch, hp["layer"])
    if not cases:
        return EditResult(deltas={}, info={"edit_seconds": 0.0, "target_seconds": 0.0, "epochs_run": 0})
    before = {n: p.detach().clone() for n, p in params.items()}
    locs = encode(tok, cases)
    n = len(cases)
    bs = int(hp["batch_size"])
    thr = float(hp["loss_threshold"])
    wd = weight_decay(hp, n)
    flags = {n_: p.requires_grad for n_, p in model.named_parameters()}
    gen = torch.Generator(device=CPU).manual_seed(int(hp["seed"]))
    epoch_losses: list[float] = []
    skipped: list[int] = []
    try:
        for name, p in model.named_parameters():
            p.requires_grad_(name in params)
        # Half-precision weights: Adam steps a float32 master copy (fp16 cannot even hold Adam's eps of 1e-8,
        # so a zero gradient gives 0/0) and the weights take its rounded value after each step.
        half = {k: p.detach().float().clone() for k, p in params.items() if p.dtype in (torch.float16, torch.bfloat16)}
        stepped = [half.get(k, p) for k, p in params.items()]
        opt = Adam(stepped, lr=float(hp["lr"]), weight_decay=wd)
        order = list(range(n))
        for epoch in tqdm(range(int(hp["epochs"])), desc="ft_wd", disable=not hp["progress"], leave=False):
            if hp["shuffle"]:
                order = torch.randperm(n, generator=gen, device=CPU).tolist()
            total, n_skip = 0.0, 0
            for b in range(0, n, bs):
                idx = order[b:b + bs]
                with torch.enable_grad():
                    loss = batch_loss(model, tok, [locs[i] for i in idx])
                value = loss.item()
                if not math.isfinite(value):
                    raise OptimisationError(f"ft_wd: non-finite loss {value} in epoch {epoch}, batch of cases "
                                            f"{[cases[i].case_id for i in idx][:4]}; lower lr or check the dtype")
                total += value * len(idx)
                if value >= thr:
                    opt.zero_grad(set_to_none=True)
                    for p in params.values():
                        p.grad = None
                    loss.backward()
                    with torch.no_grad():
                        for k, master in half.items():
                            master.grad = params[k].grad.float()
                        opt.step()
                        for k, master in half.items():
                            params[k].copy_(master)
                else:
                    n_skip += 1
            epoch_losses.append(total / n)
            skipped.append(n_skip)
            if total / n < thr:
                break
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
            if name in params:
                p.grad = None
    deltas = {}
    for name, p in params.items():
        d = p.detach().float() - before[name].float()
        if bool((d != 0).any()):
            deltas[name] = d.to(CPU)
    info = {"edit_seconds": round(time.time() - t0, 2), "target_seconds": 0.0, "weight_decay": wd,
            "epochs_run": len(epoch_losses), "epoch_losses": epoch_losses, "batches_skipped": skipped,
            "n_batches_per_epoch": math.ceil(n / bs), "final_loss": epoch_losses[-1] if epoch_losses else None,
            "trained_parameters": sorted(params), "n_trained_elements": sum(p.numel() for p in params.values())}
    return EditResult(deltas=deltas, info=info)


def _parameters(hp: Hparams, arch: Arch, model: nn.Module) -> list[str]:
    prefix = arch.name("layer", int(hp.layer)) + "."
    return [n for n, _ in model.named_parameters() if n.startswith(prefix)]


SPEC = MethodSpec("ft_wd", "FT-WD", "gradient", Hparams, edit, parameters=_parameters,
                  layers=lambda hp, depth: [hp.layer])
