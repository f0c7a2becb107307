"""The locate-then-edit engine shared by MEMIT, PMET, JEEP and AlphaEdit.

Two calls express every method:
  * `optimise_targets`: find deltas (δ) added to chosen module outputs at chosen token positions that
    make the model emit the new target, jointly for all deltas, with the KL / weight-decay / clamp /
    early-stop rules of the reference code (spec §2.7);
  * `apply_regions`: for each region (a run of layers whose MLP output matrices are edited), spread the
    residual between the optimised target and the current value over the layers with the closed-form
    update ΔW = R Kᵀ (λC + KKᵀ)⁻¹ (spec §2.6), layer by layer on the progressively edited model.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.schema import EditCase
from ..device import CPU, input_device, module_device, output_device
from ..errors import ConfigError, OptimisationError
from ..forward import (freeze_prefix, grouped_kv_attention, layer_input, run_layers, scored_log_probs, select_rows,
                       suffix_hidden)
from ..hooks import StopForward, add_at, capture, stop_after
from ..models import Arch, get_module, layer_index
from ..tokens import Located, locate_template, pad_id, right_pad

POSITIONS = ("subject_last", "prompt_last")
ANCHOR_ROLES = ("layer", "mlp", "attn", "mlp_out", "attn_out")
KL_TEMPLATE = "{} is a"
PREFIX_SEEDS = ("The", "Therefore", "Because", "I", "You")


# ------------------------------------------------------------------ context templates

@torch.no_grad()
def sample_prefixes(model: nn.Module, tok, seed: int, length: int = 10, seeds: Sequence[str] = PREFIX_SEEDS) -> list[str]:
    """Five short texts sampled from the unedited model (top-k 5), one per seed word, seeded.

    The reference code samples these unseeded; they are the only random element of an edit, so the
    seed is a param here. Each is `length` tokens including the seed word (and BOS where the tokenizer
    adds one), braces blanked, followed by ". " so the prompt reads as a new sentence. The draw is made
    on the CPU with a CPU generator, so a seed gives the same choice among the top 5 on any device.
    """
    gen = torch.Generator(device=CPU).manual_seed(seed)
    dev = input_device(model)
    out = []
    for word in seeds:
        ids = tok(word, add_special_tokens=True)["input_ids"]
        cur = torch.tensor([ids], dtype=torch.long, device=dev)
        while cur.shape[1] < length:
            logits = model(input_ids=cur, use_cache=False).logits[0, -1].float()
            top = logits.topk(5)
            choice = torch.multinomial(torch.softmax(top.values.to(CPU), -1), 1, generator=gen)
            pick = top.indices.to(CPU)[choice]
            cur = torch.cat([cur, pick.view(1, 1).to(dev)], 1)
        text = tok.decode(cur[0], skip_special_tokens=True)
        out.append(text.replace("{", " ").replace("}", " ") + ". ")
    return out


def context_prefixes(prefixes: Sequence[str]) -> list[str]:
    """Bare prompt first (group 0), then the sampled prefixes (group 1)."""
    return [""] + list(prefixes)


# ------------------------------------------------------------------ target optimisation

@dataclass(frozen=True)
class DeltaSpec:
    """One optimised vector δ: added to `role`'s output at `layer`, at `position` of every row."""

    name: str
    role: str
    layer: int
    position: str
    clamp: float
    weight_decay: float

    def __post_init__(self):
        if self.role not in ANCHOR_ROLES:
            raise ConfigError(f"delta {self.name}: unknown anchor role {self.role!r}; expected {ANCHOR_ROLES}")
        if self.position not in POSITIONS:
            raise ConfigError(f"delta {self.name}: unknown position {self.position!r}; expected {POSITIONS}")


@dataclass(frozen=True)
class Objective:
    """Everything the optimised targets depend on (with the model, the request and the prefixes)."""

    deltas: tuple[DeltaSpec, ...]
    lr: float
    steps: int
    kl_factor: float
    stop_rule: str = "loss"  # "loss": total loss < stop_value (MEMIT); "prob": mean target prob ≥ stop_value (JEEP)
    stop_value: float = 0.05
    nll_schedule: str = "constant"  # "pmet": φ drops to 0.1 once every target token is the argmax

    def __post_init__(self):
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1 (one forward pass records the anchors), got {self.steps}")
        if self.stop_rule not in ("loss", "prob"):
            raise ConfigError(f"unknown stop rule {self.stop_rule!r}; expected loss or prob")

    def describe(self) -> dict[str, Any]:
        return {"deltas": [d.__dict__ for d in self.deltas], "lr": self.lr, "steps": self.steps,
                "kl_factor": self.kl_factor, "stop_rule": self.stop_rule, "stop_value": self.stop_value,
                "nll_schedule": self.nll_schedule}


@dataclass
class TargetResult:
    z: dict[str, torch.Tensor]  # init + δ per delta name
    init: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)


def _pos(loc: Located, position: str) -> int:
    return loc.subject_last if position == "subject_last" else loc.prompt_last


def _rewrite_rows(tok, case: EditCase, prefixes: Sequence[str]) -> list[Located]:
    return [locate_template(tok, case.prompt, case.subject, prefix=p, answer=case.target_new) for p in prefixes]


def optimise_targets(model: nn.Module, tok, arch: Arch, case: EditCase, objective: Objective,
                     prefixes: Sequence[str], reuse_prefix: bool = True) -> TargetResult:
    """Optimise all deltas of `objective` jointly for one request on the (unedited) model."""
    return optimise_targets_batch(model, tok, arch, [case], objective, prefixes, reuse_prefix)[0]


def optimise_targets_batch(model: nn.Module, tok, arch: Arch, cases: Sequence[EditCase], objective: Objective,
                           prefixes: Sequence[str], reuse_prefix: bool = True) -> list[TargetResult]:
    """Optimise each request's deltas, several requests per forward pass (`_optimise_targets_batch`),
    grouped-query attention without copied key/value heads on the CPU (`forward.grouped_kv_attention`:
    bit-equal)."""
    with grouped_kv_attention(model):
        return _optimise_targets_batch(model, tok, arch, cases, objective, prefixes, reuse_prefix)


def _optimise_targets_batch(model: nn.Module, tok, arch: Arch, cases: Sequence[EditCase], objective: Objective,
                            prefixes: Sequence[str], reuse_prefix: bool) -> list[TargetResult]:
    """Optimise each request's deltas, several requests per forward pass.

    Every request keeps its own δ rows, loss, clamp and early stop, and Adam is element-wise, so the
    result equals optimising the requests one at a time; batching only fills the CPU's matrix units
    better. A request that has stopped leaves the batch (later passes compute only the active ones)
    and stays frozen (its δ restored after each Adam step).

    `reuse_prefix` (the default) computes once the tokens before each row's earliest δ position and the
    layers below the lowest δ layer, and runs every step on the rest only (`forward.FrozenPrefix`); the
    result equals whole rows through the whole model (`False`) to float rounding (tested).

    Devices: input ids go to the embedding's device; δ rows, losses and all bookkeeping live on the LM
    head's device (the hooks move each δ to the module it is added to). δ is float32 whatever the model
    dtype, and log-softmax and losses are computed in float32, as the reference code does. Results are
    returned on the CPU (what the target cache stores).
    """
    ctx = context_prefixes(prefixes)
    n_c, n_p = len(cases), len(ctx)
    rewrite = [_rewrite_rows(tok, c, ctx) for c in cases]
    kl_loc = [locate_template(tok, KL_TEMPLATE, c.subject) for c in cases]
    dev, in_dev = output_device(model), input_device(model)
    deltas = {d.name: torch.zeros(n_c, arch.hidden_size, device=dev, requires_grad=True) for d in objective.deltas}
    inits: dict[str, dict] = {d.name: {} for d in objective.deltas}
    opt = torch.optim.Adam(list(deltas.values()), lr=objective.lr)
    lm_head = model.get_output_embeddings()
    nll_factor = torch.ones(n_c, device=dev)
    active = torch.ones(n_c, dtype=torch.bool, device=dev)
    kl_init = None
    infos: list[dict[str, Any]] = [{} for _ in cases]
    batches: dict[tuple[int, ...], dict[str, Any]] = {}
    low = min(d.layer for d in objective.deltas)  # nothing below this layer depends on any δ
    resume = {"layers": [get_module(model, arch.name("layer", i)) for i in range(low, arch.n_layers)],
              "norm": get_module(model, arch.final_norm),
              "token_wise": [get_module(model, arch.name("mlp", i)) for i in range(arch.n_layers)]} \
        if reuse_prefix else {}

    def batch_for(sel: tuple[int, ...]) -> dict[str, Any]:
        """Inputs and label indices for the requests `sel` (rewrite rows case-major, then KL rows).

        With `reuse_prefix`, each row is split at its earliest δ position (`forward.FrozenPrefix`) and
        every index below is into the suffix; otherwise rows are whole and right-padded.
        """
        if sel not in batches:
            rows = [r for i in sel for r in rewrite[i]]
            all_rows = rows + [kl_loc[i] for i in sel]
            seqs = [r.ids[:-1] for r in rows] + [kl_loc[i].ids for i in sel]
            # each row from its earliest δ position or scored position (a KL row is scored at its subject,
            # which a δ at the prompt's end comes after)
            scored = [r.prompt_last for r in rows] + [kl_loc[i].subject_last for i in sel]
            starts = [min([sc] + [_pos(r, d.position) for d in objective.deltas]) if reuse_prefix else 0
                      for r, sc in zip(all_rows, scored)]
            if not batches:  # the first pass has every request: its prefix pass serves every later subset
                frozen = freeze_prefix(model, seqs, starts, pad_id(tok), in_dev, **resume)
            else:
                first = next(iter(batches.values()))["frozen"]  # rows: every request's n_p rewrites, then KL rows
                frozen = select_rows(model, first, [i * n_p + k for i in sel for k in range(n_p)]
                                     + [n_c * n_p + i for i in sel])
            row_of_label = [i for i, r in enumerate(rows) for _ in r.answer_ids]

            def index(values: list[int]) -> torch.Tensor:
                return torch.tensor(values, dtype=torch.long, device=dev)

            batches[sel] = {
                "frozen": frozen, "rows": torch.arange(len(all_rows), device=dev),
                "case_of_row": index([j for j in range(len(sel)) for _ in range(n_p)] + list(range(len(sel)))),
                "cols": {d.name: index([_pos(r, d.position) - s for r, s in zip(all_rows, starts)])
                         for d in objective.deltas},
                "lab_rows": index(row_of_label),
                "lab_cols": index([c - starts[i] for i, r in enumerate(rows) for c in r.answer_positions]),
                "lab_tok": index([t for r in rows for t in r.answer_ids]),
                "n_tok": torch.tensor([len(r.answer_ids) for r in rows], dtype=torch.float32, device=dev),
                "kl_idx": torch.arange(len(rows), len(all_rows), device=dev),
                "kl_cols": index([kl_loc[i].subject_last - starts[len(rows) + k] for k, i in enumerate(sel)]),
                "bare_rows": [j * n_p for j in range(len(sel))],  # each request's bare prompt
                "n_rows": len(rows)}
            b = batches[sel]
            b["head_rows"] = torch.cat([b["lab_rows"], b["kl_idx"]])
            b["head_cols"] = torch.cat([b["lab_cols"], b["kl_cols"]])
        return batches[sel]

    def forward(sel: tuple[int, ...], idx: torch.Tensor):
        b = batch_for(sel)
        with contextlib.ExitStack() as stack:
            for d in objective.deltas:
                stack.enter_context(add_at(get_module(model, arch.name(d.role, d.layer)), b["rows"], b["cols"][d.name],
                                           (lambda name=d.name: deltas[name][idx][b["case_of_row"]]),
                                           record_init=inits[d.name], init_row=b["bare_rows"]))
            h = suffix_hidden(model, b["frozen"]).to(dev)
        lab_rows, lab_tok, n_tok = b["lab_rows"], b["lab_tok"], b["n_tok"]
        # one LM-head pass over the target tokens' positions, then the KL rows' subject positions
        tok_logp, hit, kl_logp = scored_log_probs(lm_head(h[b["head_rows"], b["head_cols"]]).float(), lab_tok)
        per_prompt = torch.zeros(b["n_rows"], device=dev).index_add(0, lab_rows, tok_logp) / n_tok
        argmax_ok = torch.zeros(b["n_rows"], device=dev).index_add(0, lab_rows, hit.float()).view(len(sel), n_p) \
            .sum(1) == n_tok.view(len(sel), n_p).sum(1)
        return per_prompt.view(len(sel), n_p), kl_logp, argmax_ok

    for step in range(objective.steps):
        sel = tuple(active.nonzero().flatten().tolist())  # step 0: every request (records the anchors)
        idx = torch.tensor(sel, dtype=torch.long, device=dev)
        per_prompt, kl_logp, argmax_ok = forward(sel, idx)
        if kl_init is None:
            kl_init = kl_logp.detach().clone()
            for d in objective.deltas:  # anchors on the loss device, checked once: fp16 overflow shows here first
                inits[d.name]["init"] = inits[d.name]["init"].to(dev)
                _check_finite(inits[d.name]["init"], cases, sel, f"the anchor value of δ {d.name} (layer {d.layer} "
                              f"{d.role}) at step 0")
        nll = -per_prompt.mean(1)
        kl = (kl_logp.exp() * (kl_logp - kl_init[idx])).sum(1)  # KL(P_current || P_init) per request
        wd = sum(d.weight_decay * deltas[d.name][idx].norm(dim=1) / inits[d.name]["init"][idx].float().norm(dim=1) ** 2
                 for d in objective.deltas)
        loss = nll_factor[idx] * nll + objective.kl_factor * kl + wd
        bad = ~torch.isfinite(loss)
        if bad.any():
            j = int(bad.nonzero()[0])
            raise OptimisationError(f"case {cases[sel[j]].case_id}: non-finite loss at step {step} "
                                    f"(loss={loss[j].item()}, nll={nll[j].item()}, kl={kl[j].item()}); "
                                    "lower lr or check the model dtype")
        prob = per_prompt.detach().exp().mean(1)
        loss_v, nll_v, kl_v = loss.detach(), nll.detach(), kl.detach()
        stop = torch.zeros(len(sel), dtype=torch.bool, device=dev)
        for j, i in enumerate(sel):
            infos[i] = {"steps": step, "loss": loss_v[j].item(), "nll": nll_v[j].item(), "kl": kl_v[j].item(),
                        "target_prob": prob[j].item()}
        if objective.nll_schedule == "pmet":
            # PMET: once every target token is the argmax, lower the NLL weight and stop when KL is small.
            nll_factor[idx] = torch.where(argmax_ok, torch.full_like(prob, 0.1), torch.ones_like(prob))
            stop |= argmax_ok & (kl_v <= 0.01)
        if objective.stop_rule == "loss":
            stop |= loss_v < objective.stop_value
        elif objective.stop_rule == "prob":
            stop |= prob >= objective.stop_value
        active[idx[stop]] = False
        if not active.any() or step == objective.steps - 1:
            break
        frozen = {k: v.detach()[~active].clone() for k, v in deltas.items()}
        opt.zero_grad()
        (loss * ~stop).sum().backward()
        opt.step()
        with torch.no_grad():
            for d in objective.deltas:
                v = deltas[d.name]
                v[~active] = frozen[d.name]
                limit = d.clamp * inits[d.name]["init"].float().norm(dim=1)
                norm = v.norm(dim=1)
                scale = torch.where(norm > limit, limit / norm.clamp_min(1e-12), torch.ones_like(norm))
                v.mul_(scale[:, None])
                _check_finite(v, cases, range(n_c), f"δ {d.name} after step {step}")
    out = []
    for i in range(n_c):
        init = {k: v["init"][i].float().to(CPU, copy=True) for k, v in inits.items()}
        z = {k: (init[k] + deltas[k].detach()[i].to(CPU)).clone() for k in deltas}
        info = dict(infos[i])
        info.update({f"delta_norm_{k}": float(deltas[k].detach()[i].norm()) for k in deltas})
        info.update({f"init_norm_{k}": float(init[k].norm()) for k in deltas})
        out.append(TargetResult(z=z, init=init, info=info))
    return out


def _check_finite(x: torch.Tensor, cases: Sequence[EditCase], rows: Sequence[int], what: str) -> None:
    """Raise, naming the first affected case and a value, when a row of x (one per rows[j]) is not finite."""
    if bool(torch.isfinite(x).all()):  # one device sync on the common path
        return
    flat = x.reshape(len(rows), -1)
    j = int((~torch.isfinite(flat).all(1)).nonzero()[0])
    bad = flat[j][~torch.isfinite(flat[j])]
    raise OptimisationError(f"case {cases[rows[j]].case_id}: {what} is not finite ({bad.numel()} of {flat.shape[1]} "
                            f"entries, e.g. {bad[0].item()}); in float16 an activation may overflow: "
                            "try model.dtype: bfloat16 or float32")


# ------------------------------------------------------------------ closed-form update

@dataclass(frozen=True)
class Region:
    """A run of layers edited together toward one optimised target.

    key_position: where keys (inputs of the edited Linear) are read. The residual T = z − cur is
    measured at `cur_role` of `cur_layer` (the anchor layer) on the bare prompt.
    """

    name: str
    layers: tuple[int, ...]
    target: str  # name of the DeltaSpec whose z this region realises
    key_position: str
    cur_role: str
    cur_layer: int
    lam: float  # λ, weight of the covariance term
    spread: str = "linear"  # "linear": ÷(N−i); "sqrt": ÷√(N−i)
    edit_role: str = "mlp_out"

    def divisor(self, i: int) -> float:
        remaining = len(self.layers) - i
        if self.spread == "linear":
            return float(remaining)
        if self.spread == "sqrt":
            return math.sqrt(remaining)
        raise ConfigError(f"region {self.name}: unknown spread {self.spread!r}; expected linear or sqrt")


def memit_solve(C: torch.Tensor, K: torch.Tensor, R: torch.Tensor, lam: float, **_: Any) -> torch.Tensor:
    """ΔW = R Kᵀ (λC + KKᵀ)⁻¹, computed as R · solve(λC + KKᵀ, K)ᵀ in float64 on K's device."""
    K = K.to(torch.float64)
    A = lam * C.to(device=K.device, dtype=torch.float64) + K @ K.T
    adj = torch.linalg.solve(A, K)
    return R.to(device=K.device, dtype=torch.float64) @ adj.T


Solver = Callable[..., torch.Tensor]


def _group_mean(x: torch.Tensor, n_templates: int, grouping: str) -> torch.Tensor:
    """x: (n_cases*n_templates, d), case-major. Grouped: ½ bare + ½ mean(prefixed) (spec §2.5)."""
    x = x.view(-1, n_templates, x.shape[-1])
    if grouping == "uniform" or n_templates == 1:
        return x.mean(1)
    if grouping == "grouped":
        return 0.5 * x[:, 0] + 0.5 * x[:, 1:].mean(1)
    raise ConfigError(f"unknown key averaging {grouping!r}; expected grouped or uniform")


class KeyRows:
    """The prompts keys and current values are read from: every case under every context prefix.

    Tokenised and padded once, in passes of `batch_rows` prompts. With `first_layer`, each pass's input
    to that decoder layer is computed once, and every read runs the layers from there up to the deepest
    one it needs, with the arguments the model itself gave them: bit-equal to a pass from the embedding
    as long as nothing below `first_layer` changes (a region edits only layers at or above its first).
    The inputs are kept only while they fit in `cache_bytes` (`run.key_cache_mb`, which a memory budget
    sizes); beyond that every read starts from the embedding.
    """

    def __init__(self, model: nn.Module, tok, arch: Arch, cases: Sequence[EditCase], prefixes: Sequence[str],
                 batch_rows: int = 48, first_layer: int | None = None, cache_bytes: int = 256 << 20):
        self.model, self.arch, self.n_cases = model, arch, len(cases)
        self.n_ctx = len(context_prefixes(prefixes))
        locs = [locate_template(tok, c.prompt, c.subject, prefix=p) for c in cases for p in context_prefixes(prefixes)]
        self.pad, self.in_dev = pad_id(tok), input_device(model)
        self.passes = [locs[b:b + batch_rows] for b in range(0, len(locs), batch_rows)]
        self.first, self.starts = None, []
        if first_layer is not None:
            width = model.config.hidden_size * next(model.parameters()).element_size()
            if sum(len(part) * max(len(l.ids) for l in part) for part in self.passes) * width <= cache_bytes:
                layer = get_module(model, arch.name("layer", first_layer))
                with torch.no_grad():
                    self.starts = [layer_input(layer, lambda part=part: self._embed_pass(part))
                                   for part in self.passes]
                self.first = first_layer

    def _embed_pass(self, part: list[Located]):
        """One pass of these prompts from the embedding (padded here, so only one pass's inputs exist at a time)."""
        ids, mask = right_pad([l.ids for l in part], self.pad, device=self.in_dev)
        return self.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)

    @torch.no_grad()
    def read(self, key_module: str, key_position: str, cur_module: str,
             grouping: str = "grouped") -> tuple[torch.Tensor, torch.Tensor]:
        """Keys K (d_k × n, template-averaged) and current values (d × n, bare prompt), float32 on the key
        module's device."""
        model, arch = self.model, self.arch
        mods = {"key": get_module(model, key_module), "cur": get_module(model, cur_module)}
        deepest = max(layer_index(key_module), layer_index(cur_module))
        dev = module_device(mods["key"])
        if self.first is not None and min(layer_index(key_module), layer_index(cur_module)) < self.first:
            raise ValueError(f"{key_module} / {cur_module} lie below layer {self.first}, where these reads start")
        layers = [get_module(model, arch.name("layer", i)) for i in range(self.first or 0, deepest + 1)]
        keys, curs = [], []
        for j, part in enumerate(self.passes):
            with capture({"key": mods["key"]}, inputs=True) as kin, capture({"cur": mods["cur"]}) as cout:
                if self.first is not None:
                    run_layers(layers, self.starts[j])
                else:
                    with stop_after(layers[-1]):
                        try:
                            self._embed_pass(part)
                        except StopForward:
                            pass
            k_in, c_out = kin["key"].to(dev), cout["cur"].to(dev)
            rows = torch.arange(len(part), device=dev)
            kcols = torch.tensor([_pos(l, key_position) for l in part], dtype=torch.long, device=dev)
            keys.append(k_in[rows, kcols].float())
            curs.append(c_out[rows, kcols].float())
        K = _group_mean(torch.cat(keys), self.n_ctx, grouping)
        cur = torch.cat(curs).view(self.n_cases, self.n_ctx, -1)[:, 0]  # bare prompt
        return K.T, cur.T


def read_keys_and_cur(model: nn.Module, tok, arch: Arch, cases: Sequence[EditCase], prefixes: Sequence[str],
                      key_module: str, key_position: str, cur_module: str, grouping: str = "grouped",
                      batch_rows: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys K (d_k × n, template-averaged) and current values (d × n, bare prompt) in one pass.

    Both are float32 on the key module's device; `batch_rows` prompts per forward pass bounds the memory.
    """
    return KeyRows(model, tok, arch, cases, prefixes, batch_rows).read(key_module, key_position, cur_module, grouping)


SOLVE_ON = ("weight", "cpu")


def apply_regions(model: nn.Module, tok, arch: Arch, cases: Sequence[EditCase], regions: Sequence[Region],
                  targets: dict[str, torch.Tensor], cov: Callable[[str], torch.Tensor], prefixes: Sequence[str],
                  solver: Solver = memit_solve, grouping: str = "grouped", progress: bool = True,
                  solver_kwargs: dict[str, Any] | None = None, solve_on: str = "weight", key_batch_rows: int = 48,
                  key_cache_bytes: int = 256 << 20) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Edit the model in place region by region; return ΔW per module name (float32, CPU) and diagnostics.

    targets[name] is (n × d), row j for cases[j]. Each layer sees the weights already changed by
    the layers (and regions) before it, as in the reference code. The float64 solve runs on the edited
    weight's device (`solve_on="weight"`) or on the CPU (`"cpu"`); ΔW is cast to the weight's dtype.
    """
    if solve_on not in SOLVE_ON:
        raise ConfigError(f"solve_on must be one of {SOLVE_ON}, not {solve_on!r}")
    initial: dict[str, torch.Tensor] = {}
    diag: dict[str, Any] = {}
    for region in regions:
        sq_norm = 0.0
        cur_module = arch.name(region.cur_role, region.cur_layer)
        # read from the region's lowest layer: nothing below it changes while the region is applied
        rows = KeyRows(model, tok, arch, cases, prefixes, key_batch_rows,
                       first_layer=min(region.cur_layer, *region.layers), cache_bytes=key_cache_bytes)
        it = tqdm(list(enumerate(region.layers)), desc=f"update {region.name}", disable=not progress, leave=False)
        for i, layer in it:
            key_module = arch.name(region.edit_role, layer)
            W = get_module(model, key_module).weight
            where = W.device if solve_on == "weight" else CPU
            K, cur = rows.read(key_module, region.key_position, cur_module, grouping)
            Z = targets[region.target].T.to(device=where, dtype=torch.float64)  # d × n
            T = Z - cur.to(device=where, dtype=torch.float64)
            R = T / region.divisor(i)
            dW = solver(cov(key_module), K.to(where), R, region.lam, layer=layer, module=key_module,
                        **(solver_kwargs or {}))
            if not torch.isfinite(dW).all():
                raise OptimisationError(f"non-finite weight update at {key_module} (region {region.name}, "
                                        f"{int((~torch.isfinite(dW)).sum())} entries): check the covariance "
                                        "statistics and lambda")
            with torch.no_grad():
                initial.setdefault(key_module, W.detach().float().clone())
                W.add_(dW.to(device=W.device, dtype=W.dtype))
            diag[f"{region.name}/{layer}/residual_norm"] = float(T.norm(dim=0).mean())
            sq_norm += float(dW.double().pow(2).sum())
        diag[f"{region.name}/delta_frobenius"] = sq_norm ** 0.5  # ‖ΔW‖_F over the region's matrices
    # What was really applied (exact for fp16/bf16 weights, and for a module two regions both edit).
    deltas = {name: (get_module(model, name).weight.detach().float() - w0).to(CPU) for name, w0 in initial.items()}
    return deltas, diag
