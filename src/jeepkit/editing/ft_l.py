"""FT-L and FT-M, the fine-tuning baselines of the KnowEdit survey (seed 003 §3.4, EasyEdit's `FT`).

Both train one matrix — the MLP output matrix (`down_proj` / `fc_out`) of one layer — with Adam on the
edit requests, and differ only in the loss (EasyEdit's `objective_optimization`):

* **FT-L** (`prompt_last`, ROME's FT baseline): the prompt alone is the input; the distribution at its
  last token is asked to give every target token: −mean_j log p(t_j | prompt) per request;
* **FT-M** (`target_new`): prompt + target teacher forced, cross-entropy on the target tokens only (the
  prompt masked): −mean_j log p(t_j | prompt, t_<j) per request.

The batch loss is the mean of the per-request losses. `steps` passes over the requests in batches of
`batch_size` (request order); a batch whose loss is below `stop_loss` takes no step, and training ends after
a pass whose request-weighted mean loss is below it (EasyEdit: 1e-2). With `norm_constraint` ε, every
weight is clamped to [W₀ − ε, W₀ + ε] after each step (ROME's FT+L; EasyEdit's KnowEdit configs leave it
off). Target tokens are the ones " target" occupies after the prompt (`tokens.locate`, as every method
here), where EasyEdit tokenises the target on its own (which adds a BOS for LLaMA's tokenizer).
Defaults are EasyEdit's Llama-2 settings: 25 steps, batch 1, lr 5e-4, no weight decay, no constraint.
`train_bias` also trains the matrix's bias where it has one: EasyEdit's GPT-J module pattern
(`transformer.h.{}.mlp.fc_out`, matched as a prefix) selects `fc_out.weight` and `fc_out.bias`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
from torch import nn

from ..data.schema import EditCase
from ..device import CPU, input_device, output_device
from ..errors import ConfigError, OptimisationError
from ..forward import final_hidden
from ..models import Arch, get_module
from ..tokens import Located, locate_template, pad_id, right_pad
from .hparams import NONNEG, POS, HParams, knob
from .recipe import EditContext, EditResult
from .spec import MethodSpec


@dataclass(frozen=True, kw_only=True)
class Hparams(HParams):
    method: ClassVar[str] = "ft_l"
    layer: int = knob("int", lo=0)
    lr: float = knob("num", 5e-4, **POS)
    steps: int = knob("int", 25, lo=1)
    batch_size: int = knob("int", 1, lo=1)
    weight_decay: float = knob("num", 0.0, **NONNEG)
    norm_constraint: float | None = knob("num", None, nullable=True, gt=0.0)
    stop_loss: float = knob("num", 0.01, **NONNEG)
    train_bias: bool = knob("bool", False)  # the matrix's bias too, where it has one (EasyEdit's GPT-J FT)


@dataclass(frozen=True, kw_only=True)
class FTMHparams(Hparams):
    method: ClassVar[str] = "ft_m"


def _module(hp: Hparams, arch: Arch) -> str:
    if not 0 <= hp.layer < arch.n_layers:
        raise ConfigError(f"{hp.method}: layer {hp.layer} outside the model's 0..{arch.n_layers - 1}")
    return arch.name("mlp_out", hp.layer)


def prompt_last_loss(model: nn.Module, tok, locs: Sequence[Located]) -> torch.Tensor:
    """FT-L: per request −mean_j log p(t_j) under the prompt's last-token distribution; mean over requests."""
    dev = output_device(model)
    ids, mask = right_pad([l.ids[:l.prompt_last + 1] for l in locs], pad_id(tok), device=input_device(model))
    h = final_hidden(model, ids, mask).to(dev)
    last = torch.tensor([l.prompt_last for l in locs], dtype=torch.long, device=dev)
    logp = torch.log_softmax(model.get_output_embeddings()(h[torch.arange(len(locs), device=dev), last]).float(), -1)
    return torch.stack([-logp[i, torch.tensor(l.answer_ids, device=dev)].mean() for i, l in enumerate(locs)]).mean()


def target_new_loss(model: nn.Module, tok, locs: Sequence[Located]) -> torch.Tensor:
    """FT-M: per request the teacher-forced cross-entropy of the target tokens (prompt masked); mean over requests."""
    dev = output_device(model)
    ids, mask = right_pad([l.ids[:-1] for l in locs], pad_id(tok), device=input_device(model))
    rows = torch.tensor([i for i, l in enumerate(locs) for _ in l.answer_ids], dtype=torch.long, device=dev)
    cols = torch.tensor([c for l in locs for c in l.answer_positions], dtype=torch.long, device=dev)
    labels = torch.tensor([t for l in locs for t in l.answer_ids], dtype=torch.long, device=dev)
    h = final_hidden(model, ids, mask).to(dev)
    nll = torch.nn.functional.cross_entropy(model.get_output_embeddings()(h[rows, cols]).float(), labels,
                                            reduction="none")
    per_request = torch.zeros(len(locs), device=dev).index_add(0, rows, nll)
    n_tok = torch.tensor([len(l.answer_ids) for l in locs], dtype=torch.float32, device=dev)
    return (per_request / n_tok).mean()


def _edit(loss_fn):
    def edit(ctx: EditContext, cases: Sequence[EditCase], hp: Hparams) -> EditResult:
        model, tok, arch = ctx.model, ctx.tok, ctx.arch
        t0 = time.time()
        name = _module(hp, arch)
        if not cases:
            return EditResult(deltas={}, info={"edit_seconds": 0.0, "target_seconds": 0.0, "steps_run": 0})
        trained = _trained(hp, model, name)
        originals = {k: p.detach().clone() for k, p in trained.items()}
        # fp16/bf16 weights: Adam steps a float32 master copy (fp16 cannot hold Adam's eps), each takes its rounding
        masters = {k: p.detach().float().clone().requires_grad_(True) if p.dtype != torch.float32 else None
                   for k, p in trained.items()}
        opt = torch.optim.Adam([masters[k] if masters[k] is not None else p for k, p in trained.items()], lr=hp.lr,
                               weight_decay=hp.weight_decay)
        locs = [locate_template(tok, c.prompt, c.subject, answer=c.target_new) for c in cases]
        flags = {n: p.requires_grad for n, p in model.named_parameters()}
        chosen = {id(p) for p in trained.values()}
        losses: list[float] = []
        try:
            for n, p in model.named_parameters():
                p.requires_grad_(id(p) in chosen)
            for step in range(hp.steps):
                total = 0.0
                for b in range(0, len(locs), hp.batch_size):
                    part = locs[b:b + hp.batch_size]
                    with torch.enable_grad():
                        loss = loss_fn(model, tok, part)
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise OptimisationError(f"{hp.method}: non-finite loss {value} at step {step} (cases "
                                                f"{[c.case_id for c in cases[b:b + hp.batch_size]][:4]}); lower lr "
                                                "or check the model dtype")
                    total += value * len(part)
                    if value < hp.stop_loss:
                        continue
                    for p in trained.values():
                        p.grad = None
                    loss.backward()
                    with torch.no_grad():
                        for k, p in trained.items():
                            if masters[k] is not None:
                                masters[k].grad = p.grad.float()
                        opt.step()
                        for k, p in trained.items():
                            stepped = masters[k] if masters[k] is not None else p
                            if hp.norm_constraint is not None:
                                eps, p0 = hp.norm_constraint, originals[k].float()
                                stepped.copy_(torch.maximum(torch.minimum(stepped, p0 + eps), p0 - eps))
                            if masters[k] is not None:
                                p.copy_(masters[k].to(p.dtype))
                    for p in trained.values():
                        p.grad = None
                losses.append(total / len(locs))
                if losses[-1] < hp.stop_loss:
                    break
        finally:
            for n, p in model.named_parameters():
                p.requires_grad_(flags[n])
            for p in trained.values():
                p.grad = None
        deltas = {}
        for k, p in trained.items():
            d = p.detach().float() - originals[k].float()
            if not torch.isfinite(d).all():
                raise OptimisationError(f"{hp.method}: non-finite update of {k}")
            deltas[name if k.endswith(".weight") else k] = d.to(CPU)
        info = {"edit_seconds": round(time.time() - t0, 2), "target_seconds": 0.0, "steps_run": len(losses),
                "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
                "max_abs_change": max(float(d.abs().max()) for d in deltas.values()),
                "n_trained_elements": sum(p.numel() for p in trained.values())}
        return EditResult(deltas=deltas, info=info)
    return edit


def _trained(hp: Hparams, model: nn.Module, name: str) -> dict[str, nn.Parameter]:
    """The matrix's weight, and its bias when `train_bias` asks and the module has one."""
    mod = get_module(model, name)
    out = {f"{name}.weight": mod.weight}
    if hp.train_bias and getattr(mod, "bias", None) is not None:
        out[f"{name}.bias"] = mod.bias
    return out


def _parameters(hp: Hparams, arch: Arch, model: nn.Module) -> list[str]:
    return list(_trained(hp, model, _module(hp, arch)))


def _passes(hp: Hparams, n: int, depth: int) -> float:
    return hp.steps * n


SPEC = MethodSpec("ft_l", "FT-L", "gradient", Hparams, _edit(prompt_last_loss), parameters=_parameters,
                  layers=lambda hp, depth: [hp.layer], passes=_passes)
FTM_SPEC = MethodSpec("ft_m", "FT-M", "gradient", FTMHparams, _edit(target_new_loss), parameters=_parameters,
                      layers=lambda hp, depth: [hp.layer], passes=_passes)
