"""KNE, Knowledge Neuronal Ensemble (seed 004, seed-scope §5): locate neurons in every layer, then train
only those rows of every layer jointly.

1. Attribution (Eqs. 3-5). For the k-th output neuron of the target matrix W⁽ˡ⁾ of layer l,
   Attr(w_k) = w̄_k · (1/m) Σ_{i=1..m} ∂P(i/m · W̄⁽ˡ⁾)/∂w_k, with P the sum over the edit's answer tokens
   of their teacher-forced probabilities, summed over the localisation requests. Scaling a layer's
   weight by α scales the weight's part of its output, o = Wx, and leaves a bias b unscaled
   (o′ = α·Wx + b, what the model sees), so w̄_k · ∂P/∂w_k = Σ_t o_t[k] · ∂P/∂o′_t[k]: one backward pass
   per (request, layer, step) row yields every neuron of that layer, and rows for different layers
   share a batch (each row scales one layer). On biased Linears (GPT-J, GPT-NeoX) the bias stays out of
   both the scaling and the attribution, as Eq. 5 scales the weight only.
   Layers are scaled one at a time, as in the knowledge-neuron integrated gradients KNE builds on.
2. Selection (Eqs. 6-7): the global top fraction `p` of all layers' neurons (the seed writes both "top
   p%" and "top 1-p%": here `p` is the fraction kept), at least one, ordered by attribution.
3. Editing (Eqs. 8-11): per layer a zero W_kne (n × d_in) scattered into the rows M of ΔW (the seed
   writes ΔW[:, M]; its indices are output neurons, so rows), Ŵ = W + (α/√n)·ΔW, all layers' W_kne
   trained together by Adam on the mean cross-entropy of the target tokens (`steps`, `lr`, stopping once
   the loss is below `stop_loss`).

The seed gives no values for p, m, α, lr, steps or the localisation set: params.yaml says how they were
chosen. `module` picks the matrix: `down` (the value layer, default per §4.3), `up` or `gate` (key layers).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.schema import EditCase
from ..device import CPU, input_device, output_device
from ..errors import ConfigError, OptimisationError
from ..forward import final_hidden
from ..models import Arch, get_module
from ..tokens import Located, locate_template, pad_id, right_pad
from .hparams import POS, HParams, knob
from .recipe import EditContext, EditResult
from .spec import MethodSpec

# module -> the Linear's name inside the decoder layer's MLP, per architecture family
MODULES = {
    "down": None,  # the architecture's mlp_out (down_proj / fc_out / dense_4h_to_h)
    "up": {"llama": "up_proj", "mistral": "up_proj", "qwen2": "up_proj", "qwen3": "up_proj", "gptj": "fc_in",
           "gpt_neox": "dense_h_to_4h"},
    "gate": {"llama": "gate_proj", "mistral": "gate_proj", "qwen2": "gate_proj", "qwen3": "gate_proj"},
}


@dataclass(frozen=True, kw_only=True)
class Hparams(HParams):
    method: ClassVar[str] = "kne"
    module: str = knob("str", "down", choices=tuple(MODULES))
    layers: tuple[int, ...] | None = knob("ints", None, lo=0, nullable=True, nonempty=True)  # None: all layers
    p: float = knob("num", 0.01, gt=0.0, hi=1.0)  # fraction of the neurons of all layers kept
    m: int = knob("int", 4, lo=1)  # Riemann steps of the attribution integral
    alpha: float = knob("num", 1.0, **POS)  # Ŵ = W + (α/√n)·ΔW
    lr: float = knob("num", 1e-2, **POS)
    steps: int = knob("int", 20, lo=1)
    stop_loss: float = knob("num", 0.0, lo=0.0)  # stop training once the mean target NLL is below this
    localisation_size: int | None = knob("int", None, lo=1, nullable=True)  # requests located on (None: all)


def target_names(hp: Hparams, arch: Arch, layers: Sequence[int]) -> list[str]:
    """Full module names of the matrix KNE edits in each of `layers`."""
    if hp.module == "down":
        return [arch.name("mlp_out", l) for l in layers]
    leaf = MODULES[hp.module].get(arch.family)
    if leaf is None:
        raise ConfigError(f"kne: module {hp.module!r} does not exist in a {arch.family} MLP; "
                          f"use one of {[m for m, t in MODULES.items() if t is None or arch.family in t]}")
    return [f"{arch.name('mlp', l)}.{leaf}" for l in layers]


def layers_of(hp: Hparams, depth: int) -> list[int]:
    return list(range(depth)) if hp.layers is None else sorted(set(hp.layers))


def _encode(tok, cases: Sequence[EditCase]) -> list[Located]:
    return [locate_template(tok, c.prompt, c.subject, answer=c.target_new) for c in cases]


def _scored(locs: Sequence[Located], dev) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = torch.tensor([i for i, l in enumerate(locs) for _ in l.answer_ids], dtype=torch.long, device=dev)
    cols = torch.tensor([c for l in locs for c in l.answer_positions], dtype=torch.long, device=dev)
    labels = torch.tensor([t for l in locs for t in l.answer_ids], dtype=torch.long, device=dev)
    return rows, cols, labels


def attribution(model: nn.Module, tok, locs: Sequence[Located], names: Sequence[str], hp: Hparams,
                rows_per_pass: int = 32, progress: bool = True) -> list[torch.Tensor]:
    """Attr of every output neuron of each module in `names` (float64, CPU), Eq. 5 summed over `locs`."""
    mods = [get_module(model, n) for n in names]
    # one row per (request, layer, step i = 1..m): scale that layer's weight by i/m
    plan = [(r, li, (i + 1) / hp.m) for r in range(len(locs)) for li in range(len(mods)) for i in range(hp.m)]
    attr = [torch.zeros(m.out_features, dtype=torch.float64, device=CPU) for m in mods]
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    dev = output_device(model)
    try:
        for p in model.parameters():
            p.requires_grad_(False)  # only activation gradients are needed
        for s in tqdm(range(0, len(plan), rows_per_pass), desc="kne: attribution", disable=not progress,
                      leave=False):
            chunk = plan[s:s + rows_per_pass]
            sel = [locs[r] for r, _, _ in chunk]
            ids, mask = right_pad([l.ids[:-1] for l in sel], pad_id(tok), device=input_device(model))
            held: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
            handles = []
            for li, mod in enumerate(mods):
                idx = [j for j, (_, l2, _) in enumerate(chunk) if l2 == li]
                if not idx:
                    continue

                def hook(m_, _inp, out, li=li, idx=idx):
                    rows = torch.tensor(idx, dtype=torch.long, device=out.device)
                    scale = torch.tensor([chunk[j][2] for j in idx], dtype=out.dtype, device=out.device)
                    o = out.index_select(0, rows)
                    if m_.bias is not None:  # Eq. 5 scales W, not b: o = Wx, o' = α·Wx + b
                        o = o - m_.bias.to(o.dtype)
                    scaled = (o * scale[:, None, None]).requires_grad_(True)
                    held[li] = (o.detach(), scaled, rows)
                    new = out.clone()
                    new[rows] = scaled if m_.bias is None else scaled + m_.bias.to(o.dtype)
                    return new

                handles.append(mod.register_forward_hook(hook))
            try:
                with torch.enable_grad():
                    h = final_hidden(model, ids, mask).to(dev)
                    rows, cols, labels = _scored(sel, dev)
                    logits = model.get_output_embeddings()(h[rows, cols]).float()
                    prob = torch.softmax(logits, dim=-1).gather(1, labels[:, None]).sum()
                    grads = torch.autograd.grad(prob, [held[li][1] for li in sorted(held)])
            finally:
                for hd in handles:
                    hd.remove()
            for li, g in zip(sorted(held), grads):
                o, _, _ = held[li]
                attr[li] += (o.float() * g.float()).sum(dim=(0, 1)).to(CPU, torch.float64)
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
    return [a / hp.m for a in attr]


def select(attr: Sequence[torch.Tensor], p: float, names: Sequence[str]) -> list[torch.Tensor]:
    """Row indices per module: the global top fraction `p` of all neurons by attribution (Eqs. 6-7)."""
    flat = torch.cat(list(attr))
    if not torch.isfinite(flat).all():
        raise OptimisationError("kne: non-finite attribution scores; check the model's dtype")
    k = math.floor(p * flat.numel())
    if k < 1:
        raise ConfigError(f"kne: p = {p:g} of {flat.numel()} neurons selects no neuron; p must be at least "
                          f"{1 / flat.numel():.3g} for {len(names)} layers of this model")
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    out, start = [], 0
    for a in attr:
        mine = order[(order >= start) & (order < start + a.numel())] - start
        out.append(torch.sort(mine).values)
        start += a.numel()
    return out


def edit(ctx: EditContext, cases: Sequence[EditCase], hp: Hparams) -> EditResult:
    """Locate the ensemble on the first `localisation_size` cases, train its rows on all `cases`, apply."""
    model, tok, arch = ctx.model, ctx.tok, ctx.arch
    hp = Hparams.coerce(hp)
    t0 = time.time()
    if not cases:
        return EditResult(deltas={}, info={"edit_seconds": 0.0, "target_seconds": 0.0})
    layers = layers_of(hp, arch.n_layers)
    if layers[-1] >= arch.n_layers:
        raise ConfigError(f"kne: layer {layers[-1]} outside the model's 0..{arch.n_layers - 1}")
    names = target_names(hp, arch, layers)
    locs = _encode(tok, cases)
    n_loc = len(cases) if hp.localisation_size is None else min(hp.localisation_size, len(cases))
    rows_per_pass = ctx.runtime.grad_rows
    attr = attribution(model, tok, locs[:n_loc], names, hp, rows_per_pass)
    t_attr = time.time() - t0
    chosen = select(attr, hp.p, names)
    live = [(n, idx) for n, idx in zip(names, chosen) if idx.numel()]
    mods = {n: get_module(model, n) for n, _ in live}
    # W_kne per layer (n × d_in, float32, zeros) on its module's device, and its scale α/√n
    w_kne = {n: torch.zeros(idx.numel(), mods[n].in_features, dtype=torch.float32, device=mods[n].weight.device,
                            requires_grad=True) for n, idx in live}
    rows = {n: idx.to(mods[n].weight.device) for n, idx in live}
    scale = {n: hp.alpha / math.sqrt(idx.numel()) for n, idx in live}

    def hook(name):
        def add_rows(_m, inp, out):
            extra = (inp[0].float() @ w_kne[name].T) * scale[name]
            return out.index_add(-1, rows[name], extra.to(out.dtype))
        return add_rows

    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    dev = output_device(model)
    n_tokens = sum(len(l.answer_ids) for l in locs)
    # padded once: the inputs do not change between steps (token ids are small beside the activations)
    batches = [(*right_pad([l.ids[:-1] for l in part], pad_id(tok), device=input_device(model)), *_scored(part, dev))
               for part in (locs[b:b + rows_per_pass] for b in range(0, len(locs), rows_per_pass))]
    losses: list[float] = []
    handles = [mods[n].register_forward_hook(hook(n)) for n, _ in live]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        opt = torch.optim.Adam(list(w_kne.values()), lr=hp.lr)
        for step in range(hp.steps):
            # the mean cross-entropy over every target token of the batch, accumulated over passes of grad_rows
            opt.zero_grad(set_to_none=True)
            value = 0.0
            for ids, mask, r_, c_, labels in batches:
                with torch.enable_grad():
                    h = final_hidden(model, ids, mask).to(dev)
                    logits = model.get_output_embeddings()(h[r_, c_]).float()
                    loss = torch.nn.functional.cross_entropy(logits, labels, reduction="sum") / n_tokens
                    loss.backward()
                value += float(loss.detach())
            if not math.isfinite(value):
                raise OptimisationError(f"kne: non-finite loss {value} at step {step} (cases "
                                        f"{[c.case_id for c in cases][:4]}); lower lr or alpha, or check the dtype")
            losses.append(value)
            if value < hp.stop_loss:
                break
            opt.step()
    finally:
        for hd in handles:
            hd.remove()
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
    deltas = {}
    with torch.no_grad():
        for n, _ in live:
            W = mods[n].weight
            before = W.detach().float().clone()
            upd = (w_kne[n].detach() * scale[n]).to(W.dtype)
            W.index_add_(0, rows[n], upd)
            d = W.detach().float() - before
            if not torch.isfinite(d).all():
                raise OptimisationError(f"kne: non-finite update of {n}")
            deltas[n] = d.to(CPU)
    per_layer = {str(l): int(idx.numel()) for l, idx in zip(layers, chosen) if idx.numel()}
    info = {"edit_seconds": round(time.time() - t0, 2), "attribution_seconds": round(t_attr, 2),
            "target_seconds": 0.0, "n_localisation": n_loc, "n_neurons": sum(per_layer.values()),
            "neurons_per_layer": per_layer, "steps_run": len(losses), "final_loss": losses[-1] if losses else None,
            "first_loss": losses[0] if losses else None,
            "n_trained_elements": sum(w.numel() for w in w_kne.values()),
            # p counts neurons (rows) of the edited matrices; KNE's "~1 % of the parameters" is another base
            "share_of_model_parameters": sum(w.numel() for w in w_kne.values())
            / sum(p.numel() for p in model.parameters()),
            "localised_on": "edit batch"}
    return EditResult(deltas=deltas, info=info)


def _parameters(hp: Hparams, arch: Arch, model: nn.Module) -> list[str]:
    return [n + ".weight" for n in target_names(hp, arch, layers_of(hp, arch.n_layers))]


def _passes(hp: Hparams, n: int, depth: int) -> float:
    """Attribution: one sequence per (localisation request, layer, step); training: `steps` over the batch."""
    n_loc = n if hp.localisation_size is None else min(hp.localisation_size, n)
    return n_loc * len(layers_of(hp, depth)) * hp.m + hp.steps * n


SPEC = MethodSpec("kne", "KNE", "gradient", Hparams, edit, parameters=_parameters, layers=layers_of,
                  passes=_passes)
