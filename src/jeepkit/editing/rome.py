"""ROME (Meng et al. 2022) applied sequentially to a batch of requests, spec §4.3.

For each request, in order, on the model already edited by the requests before it:

1. **Key / left vector u.** k = input of the edited Linear (fc_out / down_proj) at the subject's last
   token, averaged *uniformly* over ROME's 21 context templates (the bare prompt plus 10 length-5 and
   10 length-10 texts sampled from the unedited model). u = C⁻¹k / ‖C⁻¹k‖ with C = E[kkᵀ].
2. **Target z.** δ added to the *MLP module output* at the ROME layer, subject_last, in every row, is
   optimised with the shared engine (`engine.optimise_targets`): NLL on the model's final logits +
   kl_factor·KL("{} is a") + wd·‖δ‖/‖m‖², clamp ‖δ‖ ≤ γ‖m‖, stop when loss < stop_loss, `steps`
   forward passes. The rewrite prompts are the same 21 ROME templates (that is what the reference
   `compute_v` receives), not the 1 + 5 MEMIT-style prefixes passed to `edit()`.
3. **Right vector** = (z − m_cur) / (k_cur·u), k_cur and m_cur being the edited Linear's input and
   output at subject_last of the bare prompt on the current model; ΔW = right ⊗ u (d_out × d_in) is
   added to the weight in place before the next request.

Context templates. The reference samples them once per process from the string "<|endoftext|>"
(a special token for GPT-2/GPT-J and SmolLM2; literal text for LLaMA's SentencePiece, spec §11.16),
unseeded. Here they are sampled once per `edit()` call, on the model as passed (the unedited model:
the pipeline restores weights between chunks), with `engine.sample_prefixes` (top-k 5), the start
string repeated n times as seed words and a torch Generator seeded from the run seed. The short and
the long group use different generator seeds (seed·1000 + length), so a long sample never starts with
a short one. `hp["seed"]`, when given, is that seed; otherwise it is derived from a hash of the
`prefixes` argument, which the pipeline samples from the run seed, so each of the 3 seeded runs gets
its own ROME templates without an extra parameter.

Target cache. Not used. A target depends on the model it is optimised on, and after the first request
that model carries the earlier edits, so a key of (model, request, objective, templates) would be
wrong for every request but the first; caching only the first of thousands saves nothing. (The
reference caches first-request vectors for the same reason, and only those.)

C⁻¹ is computed in float64 from `cov(module)` (the reference inverts in fp32), once per `edit()` call
(one chunk of sequential requests); nothing is kept between calls.

The returned delta is the change actually applied, W_after − W_before in float32, so it is exact
even for fp16 weights (where each rank-one update is rounded when added).
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.schema import EditCase
from ..errors import ConfigError, OptimisationError
from ..io import stable_hash
from ..models import Arch, get_module
from .engine import DeltaSpec, Objective, optimise_targets, read_keys_and_cur, sample_prefixes
from .hparams import NONNEG, POS, HParams, knob
from .recipe import EditContext, EditResult
from .spec import MethodSpec

@dataclass(frozen=True, kw_only=True)
class Hparams(HParams):
    method: ClassVar[str] = "rome"
    layer: int = knob("int", lo=0)
    steps: int = knob("int", 20, lo=1)
    lr: float = knob("num", 0.5, **POS)
    weight_decay: float = knob("num", 0.5, **NONNEG)
    kl_factor: float = knob("num", 0.0625, **NONNEG)
    clamp: float = knob("num", 4.0, **POS)
    stop_loss: float = knob("num", 0.05, **NONNEG)
    n_prefix_short: int = knob("int", 10, lo=0)
    n_prefix_long: int = knob("int", 10, lo=0)
    prefix_len_short: int = knob("int", 5, lo=1)
    prefix_len_long: int = knob("int", 10, lo=1)
    template_start: str = knob("str", "<|endoftext|>")
    seed: int | None = knob("int", None, nullable=True)  # None: derived from the run's prefixes
    progress: bool = knob("bool", True)


def resolve_hp(hp: Any, arch: Arch | None = None) -> dict[str, Any]:
    """Every hyperparameter (defaults from `Hparams`) as a mapping; the layer checked against `arch`."""
    out = Hparams.coerce(hp).as_dict()
    if arch is not None and not 0 <= out["layer"] < arch.n_layers:
        raise ConfigError(f"rome: layer {out['layer']} outside the model's 0..{arch.n_layers - 1}")
    return out


def objective(hp: dict[str, Any]) -> Objective:
    """δ on the MLP module output at the ROME layer, subject_last; loss-based early stop."""
    hp = resolve_hp(hp)
    return Objective(
        deltas=(DeltaSpec("mlp", role="mlp", layer=hp["layer"], position="subject_last",
                          clamp=float(hp["clamp"]), weight_decay=float(hp["weight_decay"])),),
        lr=float(hp["lr"]), steps=int(hp["steps"]), kl_factor=float(hp["kl_factor"]),
        stop_rule="loss", stop_value=float(hp["stop_loss"]),
    )


def template_seed(hp: dict[str, Any], prefixes: Sequence[str]) -> int:
    """hp["seed"] if set, else a deterministic seed derived from the run's MEMIT-style prefixes."""
    if hp.get("seed") is not None:
        return int(hp["seed"])
    return int(stable_hash({"rome_templates_from": list(prefixes)}, n=8), 16) % (2 ** 31)


def rome_prefixes(model: nn.Module, tok, hp: dict[str, Any], seed: int) -> list[str]:
    """The 20 sampled ROME prefixes (10 of length 5, then 10 of length 10); the bare prompt is implicit.

    Each is a sample of `length` tokens (counting the start string's tokens and any BOS), top-k 5,
    decoded without special tokens, NFKD-normalised with blank lines folded as in the reference,
    braces blanked, followed by ". ".
    """
    out: list[str] = []
    start = hp["template_start"]
    for n, length in ((int(hp["n_prefix_short"]), int(hp["prefix_len_short"])),
                      (int(hp["n_prefix_long"]), int(hp["prefix_len_long"]))):
        if n <= 0:
            continue
        texts = sample_prefixes(model, tok, seed * 1000 + length, length=length, seeds=[start] * n)
        out += [unicodedata.normalize("NFKD", t).replace("\n\n", " ") for t in texts]
    return out


def inverse_cov(cov: Callable[[str], torch.Tensor], module: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """C⁻¹ (float64, on `device`) for `module`; a clear error when C is singular."""
    singular = OptimisationError(f"rome: the covariance of {module} is singular (non-finite inverse); "
                                 "use more covariance samples")
    try:
        inv = torch.linalg.inv(cov(module).to(device=device, dtype=torch.float64))
    except torch.linalg.LinAlgError as e:
        raise singular from e
    if not torch.isfinite(inv).all():
        raise singular
    return inv


@torch.no_grad()
def compute_u(model: nn.Module, tok, arch: Arch, case: EditCase, layer: int, prefixes: Sequence[str],
              c_inv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, k): k = uniform mean over bare + `prefixes` of the edited Linear's input at subject_last;
    u = C⁻¹k normalised to unit length (float32)."""
    module = arch.name("mlp_out", layer)
    K, _ = read_keys_and_cur(model, tok, arch, [case], prefixes, module, "subject_last", module,
                             grouping="uniform")
    k = K[:, 0].to(device=c_inv.device, dtype=torch.float64)
    u = c_inv.to(torch.float64) @ k
    norm = u.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise OptimisationError(f"case {case.case_id}: C⁻¹k has norm {float(norm)}")
    return (u / norm).to(torch.float32), k.to(torch.float32)


@dataclass
class RomeUpdate:
    """One request's rank-one update ΔW = right ⊗ u, and what it was computed from."""

    case_id: str
    module: str
    u: torch.Tensor  # (d_k,) unit vector, C⁻¹k normalised
    right: torch.Tensor  # (d,)
    k: torch.Tensor  # template-averaged key
    k_cur: torch.Tensor  # key on the bare prompt
    m_cur: torch.Tensor  # edited Linear output on the bare prompt (before this update)
    z: torch.Tensor  # optimised target MLP output
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def delta(self) -> torch.Tensor:
        return torch.outer(self.right, self.u)

    def light(self) -> "RomeUpdate":
        """A copy without the vectors (10k LLaMA requests would otherwise hold ~2 GB)."""
        return RomeUpdate(self.case_id, self.module, *([None] * 6), info=self.info)  # type: ignore[arg-type]


def request_update(model: nn.Module, tok, arch: Arch, case: EditCase, hp: dict[str, Any],
                   prefixes: Sequence[str], c_inv: torch.Tensor) -> RomeUpdate:
    """Compute (not apply) the ROME update for one request on the model as it is now."""
    hp = resolve_hp(hp, arch)
    layer = hp["layer"]
    module = arch.name("mlp_out", layer)
    u, k = compute_u(model, tok, arch, case, layer, prefixes, c_inv)
    t0 = time.time()
    res = optimise_targets(model, tok, arch, case, objective(hp), prefixes)
    t_target = time.time() - t0
    k_cur, m_cur = read_keys_and_cur(model, tok, arch, [case], [], module, "subject_last", module)
    k_cur, m_cur = k_cur[:, 0].to(u.device), m_cur[:, 0].to(u.device)
    z = res.z["mlp"].to(u.device)  # targets come back on the CPU
    denom = torch.dot(k_cur, u)
    if not torch.isfinite(denom) or denom == 0:
        raise OptimisationError(f"case {case.case_id}: k_cur·u = {float(denom)}; cannot form the rank-one update")
    right = (z - m_cur) / denom
    if not torch.isfinite(right).all():
        raise OptimisationError(f"case {case.case_id}: non-finite ROME right vector")
    info = {**res.info, "k_dot_u": float(denom), "residual_norm": float((z - m_cur).norm()),
            "right_norm": float(right.norm()), "target_seconds": t_target}
    return RomeUpdate(case.case_id, module, u, right, k, k_cur, m_cur, z, info)


def apply_sequential(model: nn.Module, tok, arch: Arch, cases: Sequence[EditCase], hp: dict[str, Any],
                     prefixes: Sequence[str], c_inv: torch.Tensor, keep_vectors: bool = True
                     ) -> tuple[dict[str, torch.Tensor], list[RomeUpdate]]:
    """Compute and apply each request's update in order, in place; return (applied ΔW, per-request updates).

    With keep_vectors=False the returned updates carry only their info (see `RomeUpdate.light`).
    """
    hp = resolve_hp(hp, arch)
    module = arch.name("mlp_out", hp["layer"])
    W = get_module(model, module).weight
    before = W.detach().clone()
    updates = []
    for case in tqdm(cases, desc="rome", disable=not hp["progress"], leave=False):
        upd = request_update(model, tok, arch, case, hp, prefixes, c_inv)
        with torch.no_grad():
            W.add_(upd.delta.to(device=W.device, dtype=W.dtype))
        updates.append(upd if keep_vectors else upd.light())
    deltas = {module: (W.detach().float() - before.float()).cpu()} if updates else {}
    return deltas, updates


def edit(ctx: EditContext, cases: Sequence[EditCase], hp: Any) -> EditResult:
    """Sequential ROME on `cases` (in order), in place. The target cache is unused (see the module docstring)."""
    model, tok, arch, prefixes, runtime = ctx.model, ctx.tok, ctx.arch, ctx.prefixes, ctx.runtime
    hp = resolve_hp(hp, arch)
    t0 = time.time()
    seed = template_seed(hp, prefixes)
    templates = rome_prefixes(model, tok, hp, seed)
    t_templates = time.time() - t0
    module = arch.name("mlp_out", hp["layer"])
    solve_dev = "cpu" if runtime is not None and runtime.solve_on == "cpu" else get_module(model, module).weight.device
    c_inv = inverse_cov(ctx.cov, module, solve_dev)
    deltas, updates = apply_sequential(model, tok, arch, cases, hp, templates, c_inv, keep_vectors=False)

    def mean(key: str) -> float | None:
        vals = [u.info[key] for u in updates if key in u.info]
        return sum(vals) / len(vals) if vals else None

    info = {"edit_seconds": round(time.time() - t0, 2), "template_seconds": round(t_templates, 2),
            "target_seconds": round(sum(u.info["target_seconds"] for u in updates), 2),
            "template_seed": seed, "n_templates": 1 + len(templates), "templates": templates,
            "target_cache": "unused (sequential edits)", "n_requests": len(updates),
            "mean_target_prob": mean("target_prob"), "mean_opt_steps": mean("steps"),
            "mean_residual_norm": mean("residual_norm"), "mean_right_norm": mean("right_norm"),
            "mean_k_dot_u": mean("k_dot_u")}
    return EditResult(deltas=deltas, info=info)


SPEC = MethodSpec("rome", "ROME", "sequential", Hparams, edit, statistics=lambda hp: [("mlp_out", hp.layer)])
