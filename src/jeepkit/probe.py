"""The logit-lens probe behind Fig. 2 and Fig. 5 (spec §8), the layer recommendation, and the figures.

For every record the prompt ``prompt.format(subject)`` (no prefix; BOS when the tokenizer adds one) is
run once, in right-padded batches, with forward hooks on the embedding module and on every decoder
layer. At two positions -- the subject's last token and the prompt's last token (the "prediction"
position, whose logits predict the answer) -- each residual-stream state ``h`` is read through the LM
head: ``p = softmax(h W_lm^T + b)`` (``b`` only if the head has a bias). As in the paper and the
official code (Eq. 5) the final norm is **not** applied by default; ``apply_final_norm=True`` gives
the usual logit lens ``softmax(lm_head(final_norm(h)))``. States are taken from hooks, never from
``output_hidden_states`` (whose last entry already has the final norm in HF models).

Layer axis: entry 0 is the embedding output, entry k (1..L) the output of decoder layer k-1 (the
residual stream after it), so decoder layer i moves entry i to entry i+1. Position axis: 0 =
``subject_last``, 1 = ``prediction``. Ranks count the tokens with a strictly larger logit (rank 0 =
most probable; ties share the better rank). Probabilities are computed in float64.

Arrays (``probe_records``), each (n_records, n_layers + 1, 2) unless stated:
``rank_orig``, ``rank_target``, ``prob_orig``, ``prob_target`` (first token of target_true /
target_new); with word sets, for s in stop, factual, nonfactual, unrelated: ``mass_<s>`` (summed
probability of the set: the paper's "probability" is this mass, spec §8.3) and ``meanrank_<s>`` (mean
rank over the set; NaN for an empty set), plus ``size_<s>`` (n_records,). Per record also
``token_orig``, ``token_target``, ``subject_last``, ``prompt_last`` and ``n_tokens``.

Deliberately not reproduced from the official scripts (spec §8.5, §8.6, §11.14): the layer-0 stride
bug of plot_fig2 (the prediction curve at layer 0 read the embedding-subject entry), the shifted
factual/non-factual indices of plot_fig5, the LLaMA-only "first token = input_ids[1]" (here the first
answer token comes from character offsets for any tokenizer), and the skip list of record positions
7/8/132/376 matched against case ids (no record is skipped unless it cannot be tokenised, and those
are listed in the sidecar).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .data.schema import EditCase
from .device import input_device, module_device
from .errors import ConfigError, InputError
from .hooks import capture
from .io import atomic_path, save_figure, write_json
from .models import Arch, get_module
from .tokens import locate_template, pad_id, right_pad
from .wordsets import EXPLICIT_SETS, SET_NAMES, WordSets

POSITIONS = ("subject_last", "prediction")
BASE_QUANTITIES = ("rank_orig", "rank_target", "prob_orig", "prob_target")
LAYER_AXIS = "entry 0 = embedding output; entry k = output of decoder layer k-1 (residual stream after it)"


# ------------------------------------------------------------------ the probe

def probe_prompt(tok, case: EditCase) -> tuple[list[int], int, int, int, int]:
    """Prompt ids, subject_last, prompt_last and the first tokens of the true and new answers."""
    if not case.target_true:
        raise InputError("the probe needs a true answer (CounterFact-style records)", record=case.case_id,
                         field="target_true")
    loc_true = locate_template(tok, case.prompt, case.subject, answer=case.target_true)
    loc_new = locate_template(tok, case.prompt, case.subject, answer=case.target_new)
    ids = loc_true.ids[: loc_true.prompt_last + 1]
    if ids != loc_new.ids[: loc_new.prompt_last + 1]:
        raise InputError("the prompt tokenises differently before the two answers", record=case.case_id)
    return ids, int(loc_true.subject_last), int(loc_true.prompt_last), int(loc_true.answer_ids[0]), \
        int(loc_new.answer_ids[0])


def lens_logits(h: torch.Tensor, lm_head: nn.Module, final_norm: nn.Module | None = None) -> torch.Tensor:
    """LM-head logits of residual states ``h`` (..., d): ``lm_head(h)`` or ``lm_head(final_norm(h))``."""
    if final_norm is not None:
        h = final_norm(h)
    return lm_head(h).double()


def _strict_ranks(logits: torch.Tensor, sorted_flat: torch.Tensor | None, token_ids: list[int]) -> torch.Tensor:
    """(..., len(token_ids)): how many tokens have a strictly larger logit (rank 0 = most probable)."""
    idx = torch.tensor(token_ids, dtype=torch.long, device=logits.device)
    vals = logits[..., idx]
    if sorted_flat is None:  # few tokens: compare directly, no sort needed
        return (logits.unsqueeze(-2) > vals.unsqueeze(-1)).sum(-1)
    vocab = logits.shape[-1]
    below_or_equal = torch.searchsorted(sorted_flat, vals.reshape(-1, len(token_ids)).contiguous(), right=True)
    return (vocab - below_or_equal).reshape(vals.shape)


def _rank_sum(sorted_flat: torch.Tensor) -> torch.Tensor:
    """Per row, the sum over the whole vocabulary of the strict ranks.

    Without ties it is V(V-1)/2; each group of g equal logits lowers it by g(g-1)/2 (they share the best
    rank), i.e. by the number of equal pairs, counted on the sorted row without a second search.
    """
    vocab = sorted_flat.shape[-1]
    no_ties = vocab * (vocab - 1) // 2
    starts = torch.ones_like(sorted_flat, dtype=torch.bool)
    starts[:, 1:] = sorted_flat[:, 1:] != sorted_flat[:, :-1]
    if bool(starts.all()):
        return torch.full(sorted_flat.shape[:1], float(no_ties), dtype=torch.float64, device=sorted_flat.device)
    pos = torch.arange(vocab, device=sorted_flat.device).expand_as(sorted_flat)
    first = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), dim=-1).values
    equal_pairs = (pos - first).sum(-1)
    return (no_ties - equal_pairs).double()


def _lens_stats(logits: torch.Tensor, t_orig: int, t_new: int,
                sets: dict[str, list[int]] | None) -> dict[str, np.ndarray]:
    """Ranks, probabilities and word-set statistics from lens logits (n_entries, 2, V) of one record."""
    vocab = logits.shape[-1]
    probs = torch.softmax(logits, dim=-1)
    sorted_flat = None if sets is None else torch.sort(logits.reshape(-1, vocab), dim=-1).values
    ro, rt = _strict_ranks(logits, sorted_flat, [t_orig, t_new]).unbind(-1)
    res = {"rank_orig": ro, "rank_target": rt, "prob_orig": probs[..., t_orig], "prob_target": probs[..., t_new]}
    if sets is not None:
        mass_taken, rank_taken, n_taken = probs[..., t_orig].clone(), ro.double(), 1
        for name in EXPLICIT_SETS:
            members = [t for t in sets[name] if t < vocab]
            res[f"size_{name}"] = np.int64(len(members))
            if not members:  # an empty set: no mass, undefined mean rank (the arrays' NaN stays)
                continue
            m = probs[..., members].sum(-1)
            rk = _strict_ranks(logits, sorted_flat, members).double()
            res[f"mass_{name}"], res[f"meanrank_{name}"] = m, rk.mean(-1)
            mass_taken, rank_taken, n_taken = mass_taken + m, rank_taken + rk.sum(-1), n_taken + len(members)
        # unrelated = the complement: mass 1 - the rest, mean rank from the total rank sum
        total = _rank_sum(sorted_flat).reshape(ro.shape)
        res["size_unrelated"] = np.int64(vocab - n_taken)
        res["mass_unrelated"] = (1.0 - mass_taken).clamp_min(0.0)
        res["meanrank_unrelated"] = (total - rank_taken) / max(vocab - n_taken, 1)
    return {k: v.cpu().numpy() if torch.is_tensor(v) else v for k, v in res.items()}


@torch.no_grad()
def probe_records(model: nn.Module, tok, arch: Arch, cases: Sequence[EditCase], *, apply_final_norm: bool = False,
                  wordsets: WordSets | None = None, batch_size: int = 16, progress: bool = True) -> dict[str, np.ndarray]:
    """Logit-lens ranks and probabilities at every layer and both positions (module docstring).

    ``wordsets`` (from ``jeepkit.wordsets.build_wordsets`` on the same cases, same order) adds the
    per-set arrays. Raises InputError for a record that cannot be tokenised; the stage filters first.
    """
    from tqdm.auto import tqdm

    cases = list(cases)
    if wordsets is not None and list(wordsets.case_ids) != [c.case_id for c in cases]:
        raise InputError("word sets were built for other cases (case ids differ)")
    n, n_entries = len(cases), arch.n_layers + 1
    dev = input_device(model)
    lm_head = get_module(model, arch.lm_head)
    head_dev = module_device(lm_head)  # every layer's state is read through the head where the head lives
    norm = get_module(model, arch.final_norm) if apply_final_norm else None
    embed = get_module(model, arch.embed)
    layers = {f"L{i}": get_module(model, arch.name("layer", i)) for i in range(arch.n_layers)}

    shape = (n, n_entries, 2)
    out: dict[str, np.ndarray] = {
        "rank_orig": np.zeros(shape, np.int64), "rank_target": np.zeros(shape, np.int64),
        "prob_orig": np.zeros(shape), "prob_target": np.zeros(shape),
    }
    for k in ("token_orig", "token_target", "subject_last", "prompt_last", "n_tokens"):
        out[k] = np.zeros(n, np.int64)
    if wordsets is not None:
        for s in SET_NAMES:
            out[f"mass_{s}"] = np.zeros(shape)
            out[f"meanrank_{s}"] = np.full(shape, np.nan)
            out[f"size_{s}"] = np.zeros(n, np.int64)

    prepared = [probe_prompt(tok, c) for c in cases]
    pad = pad_id(tok)
    bar = tqdm(total=n, desc="probe", disable=not progress)
    for b0 in range(0, n, max(1, int(batch_size))):
        chunk = prepared[b0:b0 + batch_size]
        ids, mask = right_pad([p[0] for p in chunk], pad, device=dev)
        with capture({"embed": embed, **layers}) as store:
            model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
        # (B, n_entries, T, d): entry 0 = embedding output, entry k = output of layer k-1
        states = torch.stack([store["embed"].to(head_dev)] + [store[f"L{i}"].to(head_dev)
                                                              for i in range(arch.n_layers)], dim=1)
        for j, (p_ids, subj, last, t_orig, t_new) in enumerate(chunk):
            r = b0 + j
            if wordsets is not None and wordsets.orig[r] != t_orig:
                raise InputError("word sets disagree with the probe on the original answer token",
                                 record=cases[r].case_id)
            logits = lens_logits(states[j][:, [subj, last], :], lm_head, norm)  # (n_entries, 2, V) float64
            sets = None if wordsets is None else {s: wordsets.sets[s][r] for s in EXPLICIT_SETS}
            for key, val in _lens_stats(logits, t_orig, t_new, sets).items():
                out[key][r] = val
            out["token_orig"][r], out["token_target"][r] = t_orig, t_new
            out["subject_last"][r], out["prompt_last"][r], out["n_tokens"][r] = subj, last, len(p_ids)
        bar.update(len(chunk))
        del store, states
    bar.close()
    return out


# ------------------------------------------------------------------ storage

def save_probe(out_dir: str | Path, arrays: dict[str, np.ndarray], sidecar: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``arrays.npz`` (np.savez, no pickled objects) and ``arrays.json`` atomically."""
    out_dir = Path(out_dir)
    npz = out_dir / "arrays.npz"
    with atomic_path(npz) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a path
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    side = out_dir / "arrays.json"
    write_json(side, sidecar)
    return npz, side


def load_probe(probe_dir: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, sidecar) from a probe directory (``allow_pickle=False``)."""
    probe_dir = Path(probe_dir)
    npz = probe_dir / "arrays.npz"
    if not npz.exists():
        raise InputError("probe arrays not found; run the probe stage", file=str(npz))
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    side = probe_dir / "arrays.json"
    meta = json.loads(side.read_text()) if side.exists() else {}
    return arrays, meta


# ------------------------------------------------------------------ aggregation

def probe_quantities(arrays: dict[str, np.ndarray]) -> list[str]:
    """Names of the per-layer, per-position arrays (n_records, n_layers + 1, 2)."""
    return [k for k, v in arrays.items() if np.ndim(v) == 3]


def aggregate(arrays: dict[str, np.ndarray]):
    """Long DataFrame: quantity, position, layer, n, mean, sem, lo, hi (normal 95% band, mean ± 1.96·SEM).

    NaNs (mean rank of an empty set) are left out record by record; n is the count used.
    """
    import pandas as pd

    rows = []
    for q in probe_quantities(arrays):
        a = np.asarray(arrays[q], dtype=float)
        n = np.sum(~np.isnan(a), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, np.nansum(a, axis=0) / np.maximum(n, 1), np.nan)
            dev = np.where(np.isnan(a), 0.0, a - mean[None])
            var = np.where(n > 1, (dev ** 2).sum(axis=0) / np.maximum(n - 1, 1), np.nan)
            sem = np.sqrt(var / np.maximum(n, 1))
        for layer in range(a.shape[1]):
            for p, pos in enumerate(POSITIONS):
                m, s = mean[layer, p], sem[layer, p]
                rows.append({"quantity": q, "position": pos, "layer": layer, "n": int(n[layer, p]),
                             "mean": m, "sem": s, "lo": m - 1.96 * s, "hi": m + 1.96 * s})
    return pd.DataFrame(rows, columns=["quantity", "position", "layer", "n", "mean", "sem", "lo", "hi"])


# ------------------------------------------------------------------ layer recommendation

RULE = (
    "Curves are means over records; entry k of the layer axis is the output of decoder layer k-1, so decoder "
    "layer i's contribution is entry i+1 minus entry i. LOW region = the n_low consecutive decoder layers "
    "over which the mean rank of the original answer at the subject's last token falls the most (the rank "
    "'rises' on the inverted axis of Fig. 2): argmax over s of mean_rank[s] - mean_rank[s + n_low]. HIGH "
    "region = the n_high consecutive decoder layers, after the low region, that promote the original answer "
    "but not the target at the prediction position: argmax of the summed per-layer gain of mean prob_orig "
    "minus the positive part of the gain of mean prob_target. If no window fits after the low region, any "
    "window not overlapping it is used (then any window)."
)


def _best_window(score: np.ndarray, width: int, allowed: Sequence[int]) -> tuple[int, float]:
    best, best_val = None, -math.inf
    for s in allowed:
        v = float(np.sum(score[s:s + width]))
        if v > best_val + 1e-15:
            best, best_val = s, v
    return int(best), best_val


def recommend_layers(arrays: dict[str, np.ndarray], n_low: int = 6, n_high: int = 3) -> dict[str, Any]:
    """Recommend JEEP's low and high editing regions from probe arrays (rule in ``RULE``).

    Returns decoder-layer indices (the ones ``hparams.*.layers`` use) ``layers_low`` and
    ``layers_high``, the per-layer curves the choice was made from, and the rule text.
    """
    rank = np.nanmean(np.asarray(arrays["rank_orig"], float)[:, :, 0], axis=0)  # (L+1,) subject_last
    po = np.nanmean(np.asarray(arrays["prob_orig"], float)[:, :, 1], axis=0)  # prediction
    pt = np.nanmean(np.asarray(arrays["prob_target"], float)[:, :, 1], axis=0)
    n_layers = rank.shape[0] - 1
    n_low, n_high = int(n_low), int(n_high)
    if n_low < 1 or n_high < 1 or n_low + n_high > n_layers:
        raise ConfigError(f"cannot place {n_low} low + {n_high} high layers in a {n_layers}-layer model")
    rank_drop = rank[:-1] - rank[1:]  # per decoder layer: > 0 when the original answer moves up
    orig_gain, target_gain = po[1:] - po[:-1], pt[1:] - pt[:-1]
    high_score = orig_gain - np.clip(target_gain, 0.0, None)
    low_start, low_val = _best_window(rank_drop, n_low, range(0, n_layers - n_low + 1))
    low = set(range(low_start, low_start + n_low))
    after = [s for s in range(low_start + n_low, n_layers - n_high + 1)]
    disjoint = [s for s in range(0, n_layers - n_high + 1) if not low & set(range(s, s + n_high))]
    placement = "after_low" if after else "disjoint" if disjoint else "overlapping"
    high_start, high_val = _best_window(high_score, n_high, after or disjoint or range(0, n_layers - n_high + 1))
    return {
        "layers_low": list(range(low_start, low_start + n_low)),
        "layers_high": list(range(high_start, high_start + n_high)),
        "low_rank_drop": low_val, "high_score": high_val, "high_placement": placement,
        "n_layers": n_layers, "n_low": n_low, "n_high": n_high,
        "per_layer": {"rank_drop_subject_last": rank_drop.tolist(), "orig_gain_prediction": orig_gain.tolist(),
                      "target_gain_prediction": target_gain.tolist()},
        "rule": RULE,
    }


def configured_layers(params: dict[str, Any]) -> dict[str, Any]:
    """The layers params.yaml configures for the current model (None where a key is absent)."""
    key = (params.get("model") or {}).get("key")
    table = ((params.get("hparams") or {}).get(key) or {}) if key else {}
    jeep = table.get("jeep") or {}
    memit = table.get("memit") or {}
    return {"model_key": key, "jeep.layers_low": jeep.get("layers_low"), "jeep.layers_high": jeep.get("layers_high"),
            "memit.layers": memit.get("layers")}


def format_recommendation(rec: dict[str, Any], configured: dict[str, Any] | None = None) -> str:
    lines = [f"recommended low layers  {rec['layers_low']}  (mean rank drop of the original answer at the "
             f"subject's last token: {rec['low_rank_drop']:.1f})",
             f"recommended high layers {rec['layers_high']}  (original-minus-target probability gain at the "
             f"prediction position: {rec['high_score']:.4f}; placement {rec['high_placement']})"]
    if configured is not None:
        key = configured.get("model_key")
        for name in ("jeep.layers_low", "jeep.layers_high", "memit.layers"):
            val = configured.get(name)
            lines.append(f"params.yaml hparams.{key}.{name}: {val if val is not None else 'not set'}")
    return "\n".join(lines)


# ------------------------------------------------------------------ figures

COLORS = {"orig": "tab:blue", "target": "tab:red", "stop": "tab:gray", "factual": "tab:green",
          "nonfactual": "tab:orange", "unrelated": "tab:purple"}


def _curve(df, quantity: str, position: str):
    d = df[(df.quantity == quantity) & (df.position == position)].sort_values("layer")
    return d.layer.to_numpy(), d["mean"].to_numpy(), d.lo.to_numpy(), d.hi.to_numpy()


def _shade_regions(ax, rec: dict[str, Any] | None, configured: dict[str, Any] | None = None) -> None:
    """Recommended regions as shaded spans over the entries a region's layers move (i -> i+1)."""
    if rec:
        for name, color in (("layers_low", "tab:cyan"), ("layers_high", "tab:pink")):
            ls = rec.get(name) or []
            if ls:
                ax.axvspan(min(ls), max(ls) + 1, color=color, alpha=0.15, lw=0,
                           label=f"recommended {name.split('_')[1]} {min(ls)}-{max(ls)}")
    if configured:
        for name, ls_ in (("jeep.layers_low", ":"), ("jeep.layers_high", "--")):
            ls = configured.get(name)
            if ls:
                for i, x in enumerate((min(ls), max(ls) + 1)):
                    ax.axvline(x, color="k", ls=ls_, lw=0.8,
                               label=f"configured {name.split('_')[1]} {min(ls)}-{max(ls)} (params.yaml)" if i == 0
                               else None)


def layers_note(rec: dict[str, Any] | None, configured: dict[str, Any] | None) -> str:
    """One line when the probe's recommendation and the layers the edits use disagree (and why that is)."""
    if not rec or not configured:
        return ""
    diff = [side for side in ("low", "high") if configured.get(f"jeep.layers_{side}") is not None
            and sorted(configured[f"jeep.layers_{side}"]) != sorted(rec.get(f"layers_{side}") or [])]
    if not diff:
        return ""
    return (f"The {' and '.join(diff)} layers the edits use (lines: params.yaml, chosen by the paper's setting or "
            "the train-split search) differ from the probe rule's recommendation (shaded): the rule reads "
            "these curves only, the configured layers were chosen on editing scores.")


def plot_fig2(arrays: dict[str, np.ndarray], path: str | Path, *, rec: dict[str, Any] | None = None,
              configured: dict[str, Any] | None = None, title: str | None = None) -> list[Path]:
    """Fig. 2: rank (inverted, solid, markers) and probability (twin axis, dashed) of the original and
    target first tokens per layer; top = subject's last token, bottom = prediction; 95% bands.
    Writes ``path`` (.png) and the same name as .pdf."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = aggregate({k: arrays[k] for k in BASE_QUANTITIES})
    fig, axes = plt.subplots(2, 1, figsize=(8, 7.5), sharex=True)
    twins = []
    for ax, pos, label in zip(axes, POSITIONS, ("subject's last token", "prediction position")):
        tw = ax.twinx()
        twins.append(tw)
        for who, name in (("orig", "original"), ("target", "target")):
            x, m, lo, hi = _curve(df, f"rank_{who}", pos)
            ax.plot(x, m, "-o", ms=3, color=COLORS[who], label=f"rank ({name})")
            ax.fill_between(x, lo, hi, color=COLORS[who], alpha=0.15, lw=0)
            x, m, lo, hi = _curve(df, f"prob_{who}", pos)
            tw.plot(x, m, "--", color=COLORS[who], label=f"probability ({name})")
            tw.fill_between(x, lo, hi, color=COLORS[who], alpha=0.08, lw=0)
        ax.invert_yaxis()
        ax.set_ylabel("mean rank (0 = top)")
        tw.set_ylabel("mean probability")
        ax.set_title(label)
        _shade_regions(ax, rec, configured)
    top = max(max(t.get_ylim()) for t in twins)
    for t in twins:
        t.set_ylim(0, top)
    h1, l1 = axes[0].get_legend_handles_labels()
    h2, l2 = twins[0].get_legend_handles_labels()
    axes[1].set_xlabel("layer (0 = embedding, k = output of decoder layer k-1)")
    fig.suptitle(title or "Logit lens: original vs target answer (first token)", fontsize=10)
    note = layers_note(rec, configured)
    fig.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower center", ncol=3, frameon=False,
               bbox_to_anchor=(0.5, 0.04 if note else 0.0))
    if note:
        import textwrap

        fig.text(0.5, 0.005, "\n".join(textwrap.wrap(note, 140)), ha="center", va="bottom", fontsize=6.5)
    fig.tight_layout(rect=(0, 0.15 if note else 0.09, 1, 1))
    return _save(fig, path)


FAINT_MASS = 0.02  # below this a word set's mean mass is indistinguishable from none on a linear axis


def plot_fig5(arrays: dict[str, np.ndarray], path: str | Path, *, first_layer: int = 0,
              title: str | None = None) -> list[Path]:
    """Fig. 5: probability mass per word set at the prediction position vs layer, 95% bands.
    The related sets are the offline substitutes of ``jeepkit.wordsets`` and are labelled so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .wordsets import SET_LABELS

    if "mass_stop" not in arrays:
        raise InputError("probe arrays have no word-set masses; run the probe with word sets")
    df = aggregate({"mass_orig": arrays["prob_orig"], **{f"mass_{s}": arrays[f"mass_{s}"] for s in SET_NAMES}})
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for key in ("orig",) + SET_NAMES:
        x, m, lo, hi = _curve(df, f"mass_{key}", "prediction")
        keep = x >= first_layer
        ax.plot(x[keep], m[keep], "-o", ms=3, color=COLORS[key], label=SET_LABELS[key])
        ax.fill_between(x[keep], lo[keep], hi[keep], color=COLORS[key], alpha=0.15, lw=0)
    ax.set_xlabel("layer (0 = embedding, k = output of decoder layer k-1)")
    ax.set_ylabel("probability mass (mean over records)")
    ax.set_ylim(bottom=0)
    informative = ("orig", "factual", "nonfactual")  # the sets the figure is read for
    top = max(float(np.nanmax(df[(df.quantity == f"mass_{s}") & (df.position == "prediction")]["mean"].to_numpy()))
              for s in informative)
    if top < FAINT_MASS:  # the paper's lens (no final norm) on a model whose residual stream needs it
        ax.text(0.5, 0.5, f"The answer and the related sets never reach {FAINT_MASS:.0%} of the mass (largest "
                f"{top:.2g}): without\nthe final norm this model's hidden states decode to the rest of the "
                "vocabulary at every layer,\nso this lens cannot show the paper's shift; the figure with the final "
                "norm (…_final_norm) can.",
                ha="center", va="center", fontsize=8, transform=ax.transAxes,
                bbox=dict(boxstyle="round", fc="white", ec="0.7"))
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
    ax.set_title(title or "Prediction position: probability mass per word set\n"
                          "(factual / non-factual = offline substitutes, not the paper's BM25 + GPT-4 sets)",
                 fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> list[Path]:
    """The shared PNG + PDF writer, then free the pyplot figure."""
    import matplotlib.pyplot as plt

    written = list(save_figure(fig, path))
    plt.close(fig)
    return written


# ------------------------------------------------------------------ the stage

DEFAULTS = {"dataset": "counterfact", "n_records": 200, "apply_final_norm": False, "batch_size": 16,
            "wordsets": True, "max_related": 50, "n_low": 6, "n_high": 3}


def probe_settings(params: dict[str, Any]) -> dict[str, Any]:
    """``params['probe']`` over the defaults (unknown keys are an error, to catch typos)."""
    given = params.get("probe") or {}
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"params.yaml: unknown probe keys {unknown}; known: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **given}
