"""The sequential-editing stage (issue 14; beyond the paper): T edits as T/B batches of B, each batch
edited on the model that carries the earlier ones.

After every batch the run records, on the model as it stands: the metrics over every fact edited so far,
over the first batch's facts (forgetting) and over the batch just edited; the σ_max of ΣΔW and the
condition number κ of each edited matrix (PRUNE Table 1's quantities); and the perplexity of held-out
text (drift; after the first and the last batch). PRUNE is applied to ΣΔW after the last batch (and
after every batch with `prune.every`), scored, and taken back, so it never changes the trajectory. After the first batch (the one-batch model)
and after the last, the rewrite, paraphrase and neighbourhood prompts are also scored by free generation
(`free_generation`: the model must produce the answer). RECT (`--regulariser rect`) sparsifies every
batch's ΔW before the next batch is edited, so it is a trajectory of its own.

Targets are optimised on the model as it stands before each batch. Only the first batch meets the
unedited model, so only its targets are read from or written to the target cache.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from .. import faults
from ..data.kinds import KINDS
from ..data.schema import load_cases, save_cases
from ..editing.deltas import parameter, restored, save_deltas
from ..errors import ConfigError
from ..io import atomic_dir, write_json, write_jsonl
from ..metrics import summarise
from ..params import ParamsLike, need, paths, resolve_params
from .edit import Session, generation_tokens, split_timing, work_summary

REGULARISERS = ("none", "rect")
LOCATE_THEN_EDIT = ("closed_form", "sequential")  # kinds PRUNE and RECT apply to (MethodSpec.kind)


def protocol(params: dict[str, Any], n_available: int, dataset: str) -> tuple[int, int]:
    """(total, batch) of `sequential`, refused with one line when they cannot make whole batches."""
    sq = need(params, "sequential")
    total, batch = int(sq["total"]), int(sq["batch"])
    if batch > total:
        raise ConfigError(f"params: sequential.batch ({batch}) is larger than sequential.total ({total})")
    if total % batch:
        raise ConfigError(f"params: sequential.total ({total}) is not a multiple of sequential.batch ({batch}): "
                          f"the last batch would be partial; use total {total - total % batch} or "
                          f"{total + batch - total % batch}")
    if total > n_available:
        raise ConfigError(f"params: sequential.total ({total}) is more than the {n_available} records of "
                          f"dataset {dataset!r}")
    return total, batch


def check_run(params: dict[str, Any], method: str, regulariser: str) -> None:
    """What can be refused from params alone: the regulariser, and PRUNE / RECT on a method they do not fit."""
    from ..editing.run import method_spec

    if regulariser not in REGULARISERS:
        raise ConfigError(f"unknown regulariser {regulariser!r}; expected one of {list(REGULARISERS)}")
    kind = method_spec(method).kind
    prune = (need(params, "sequential").get("prune") or {}).get("alpha") is not None
    if (prune or regulariser != "none") and kind not in LOCATE_THEN_EDIT:
        what = "RECT" if regulariser != "none" else "PRUNE"
        hint = "" if what == "RECT" else " (sequential.prune.alpha: null runs it without PRUNE)"
        raise ConfigError(f"{what} restrains the update of a locate-then-edit method; {method} is not one "
                          f"(its kind is {kind!r}){hint}")


def _finite(x: float) -> float | None:
    return round(x, 6) if math.isfinite(x) else None


class SequentialRun:
    """One method (and regulariser) through the whole protocol on one Session's model."""

    def __init__(self, s: Session, regulariser: str):
        check_run(s.params, s.method, regulariser)
        sq = need(s.params, "sequential")
        self.prune = dict(sq.get("prune") or {})
        self.s, self.regulariser = s, regulariser
        self.rect_top = float(sq.get("rect_top_percent", 20))
        self.generation_tokens = generation_tokens(s.params, s.cases[0].kind)
        self.total, self.batch = protocol(s.params, len(s.cases), s.dataset)
        self.cases = s.cases[:self.total]
        from ..tokens import check_context

        check_context(s.tok, s.model, self.cases, file=str(s.p["datasets"] / f"{s.dataset}.jsonl"))
        self.pristine = s._snapshot()
        self.matrices = [n for n in self.pristine.kept if self.pristine.kept[n].dim() == 2]
        self._original_sv: dict[str, torch.Tensor] = {}

    # -- the model as it stands

    def total_delta(self) -> dict[str, torch.Tensor]:
        """ΣΔW = W − W₀ of every parameter the method may change (exact: read off the weights)."""
        return {n: parameter(self.s.model, n).detach().float().cpu() - w0.float()
                for n, w0 in self.pristine.kept.items()}

    def perplexity(self) -> dict[str, Any]:
        return self.s.perplexity()

    def drift(self, before: dict[str, Any]) -> dict[str, Any]:
        """Held-out perplexity now, and its log-perplexity change from `before` with the paired interval."""
        from ..drift import change, drift_settings

        now = self.perplexity()
        return {**now, "change": change(before, [now], seed=drift_settings(self.s.params)["seed"])}

    def score(self, upto: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from ..evaluation import evaluate_cases

        per_case = evaluate_cases(self.s.model, self.s.tok, self.cases[:upto], progress=False,
                                  batch_size=self.s.runtime.eval_rows)
        kind = self.cases[0].kind
        return {"protocol": KINDS[kind].protocol("ES"), "all_so_far": summarise(per_case, kind),
                "first_batch": summarise(per_case[:self.batch], kind),
                "latest_batch": summarise(per_case[upto - self.batch:upto], kind)}, per_case

    def free_generation(self, upto: int) -> dict[str, Any]:
        from ..free_generation import score_cases, summarise

        return summarise(score_cases(self.s.model, self.s.tok, self.cases[:upto], max_new_tokens=self.generation_tokens,
                                     batch_size=self.s.runtime.decode_rows))

    def spectra(self, delta: dict[str, torch.Tensor]) -> dict[str, dict[str, float | None]]:
        from ..editing.restraint import spectrum

        for n in self.matrices:
            if n not in self._original_sv:
                self._original_sv[n] = torch.linalg.svdvals(self.pristine.kept[n].double())
        return {n: {k: _finite(v) for k, v in spectrum(self.pristine.kept[n], delta[n],
                                                        original=self._original_sv[n]).items()}
                for n in self.matrices if delta[n].abs().max() > 0}

    @torch.no_grad()
    def set_delta(self, delta: dict[str, torch.Tensor]) -> None:
        """W ← W₀ + delta for every kept parameter (one rounding)."""
        for n, w0 in self.pristine.kept.items():
            p = parameter(self.s.model, n)
            p.copy_((w0.float() + delta[n]).to(device=p.device, dtype=p.dtype))

    def pruned(self, delta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from ..editing.restraint import prune

        alpha = float(self.prune["alpha"])
        return {n: (prune(self.pristine.kept[n], d, alpha) if n in self.matrices else d) for n, d in delta.items()}

    @torch.no_grad()
    def sparsify(self, before: dict[str, torch.Tensor], deltas: dict[str, torch.Tensor]) -> None:
        """RECT: replace this batch's applied ΔW by its top entries (relative to the weights before it)."""
        from ..editing.restraint import rect

        for name, d in deltas.items():
            p = parameter(self.s.model, name)
            key = name if name in before else f"{name}.weight"
            if p.dim() != 2:
                continue
            kept = rect(before[key], d.float().cpu(), self.rect_top)
            p.copy_((before[key] + kept).to(device=p.device, dtype=p.dtype))

    # -- the protocol

    def run(self) -> dict[str, Any]:
        from ..editing.recipe import EditContext
        from ..editing.run import edit, finishing

        s = self.s
        ctx0 = EditContext(s.model, s.tok, s.arch, s.cov.get, s.prefixes, s.target_ident, s.cache, s.runtime,
                           carry={})
        out: dict[str, Any] = {"checkpoints": [], "infos": [], "timing": {"edit_seconds": 0.0, "eval_seconds": 0.0,
                                                                         "target_seconds": 0.0}}
        t0 = time.time()
        out["drift_before"] = self.s.unedited_perplexity()
        n_batches = self.total // self.batch
        prune_every = bool(self.prune.get("every", False)) and self.prune.get("alpha") is not None
        for b in range(n_batches):
            part = self.cases[b * self.batch:(b + 1) * self.batch]
            ctx = ctx0 if b == 0 else ctx0.uncached()  # an edited model has no identity to key targets by
            before = {n: parameter(s.model, n).detach().to("cpu", torch.float32, copy=True)
                      for n in self.pristine.kept} if self.regulariser == "rect" else None
            res = edit(ctx, s.method, part, s.hparams, finish=before is None)
            if before is not None:
                self.sparsify(before, res.deltas)
                finishing(ctx, res)  # AlphaEdit's C_p from the sparsified model the run carries forward
            info, timing = split_timing(res.info)
            for k in ("edit_seconds", "target_seconds"):
                out["timing"][k] += timing.get(k, 0.0)
            out["infos"].append(info)
            t1 = time.time()
            upto = (b + 1) * self.batch
            delta = self.total_delta()
            point: dict[str, Any] = {"batch": b + 1, "edits": upto}
            point["summary"], per_case = self.score(upto)
            last = b == n_batches - 1
            if self.generation_tokens and (b == 0 or last):  # the one-batch model, and the model after all batches
                point["free_generation"] = self.free_generation(upto)
            if b == 0 or last:  # drift: the one-batch model and the model after all batches (beside `drift_before`)
                point["drift"] = self.drift(out["drift_before"])
            point["spectra"] = self.spectra(delta)
            if self.prune.get("alpha") is not None and (prune_every or last):
                restrained = self.pruned(delta)
                acted = [n for n in self.matrices if not torch.equal(restrained[n], delta[n])]
                if not acted:  # no singular value of ΣΔW above max σ(W): the restrained model is this model
                    point["prune"] = {"acted": [], "summary": point["summary"], "spectra": point["spectra"],
                                      **({"drift": point["drift"]} if "drift" in point else {})}
                else:
                    with restored(s.model, list(self.pristine.kept), owner=s.method):  # the trajectory's weights
                        self.set_delta(restrained)
                        point["prune"] = {"acted": acted, "summary": self.score(upto)[0],
                                          "spectra": self.spectra(restrained),
                                          **({"drift": self.drift(out["drift_before"])} if "drift" in point else {})}
                if last:
                    out["pruned_delta"] = restrained
            out["timing"]["eval_seconds"] += time.time() - t1
            out["checkpoints"].append(point)
            if last:
                out["per_case"], out["delta"] = per_case, delta
            shown = point["summary"]["all_so_far"]["Score"]["mean"]
            ppl = f", perplexity {point['drift']['perplexity']:.2f}" if "drift" in point else ""
            print(f"{s.method}/{self.regulariser} batch {b + 1}/{n_batches} ({upto} edits): Score "
                  f"{'-' if shown is None else format(shown, '.1f')}{ppl}"
                  + (f", with PRUNE {point['prune']['summary']['all_so_far']['Score']['mean']:.1f}"
                     if "prune" in point else ""), flush=True)
        out["timing"]["wall_seconds"] = time.time() - t0
        return out


def run_name(method: str, regulariser: str) -> str:
    return f"{method}-{regulariser}"


def sequential(method: str, dataset: str, params: ParamsLike = "params.yaml", *, regulariser: str = "none",
               seed: int | None = None) -> dict[str, Any]:
    """Run the sequential protocol for one method; write its run directory, metrics and timing."""
    params = resolve_params(params)
    check_run(params, method, regulariser)  # refused before the model is loaded or any cache is written
    data_file = paths(params)["datasets"] / f"{dataset}.jsonl"
    protocol(params, len(load_cases(data_file)) if data_file.exists() else 10 ** 9, dataset)
    s = Session(params, method, dataset, seed, {})
    run = SequentialRun(s, regulariser)
    out = run.run()
    name = run_name(method, regulariser)
    run_dir = s.p["runs"] / "sequential" / name / dataset / f"s{s.seed}"
    meta = {"case_ids": [c.case_id for c in run.cases], "method": method, "hparams": s.hp, "model": s.ident,
            "regulariser": regulariser}
    with atomic_dir(run_dir) as tmp:
        write_jsonl(tmp / "cases.jsonl", out["per_case"])
        save_cases(tmp / "requests.jsonl", run.cases)
        faults.checkpoint("deltas")
        save_deltas(tmp / "delta_total.safetensors", out["delta"], meta)
        if "pruned_delta" in out:
            save_deltas(tmp / "delta_total_pruned.safetensors", out["pruned_delta"],
                        {**meta, "prune": run.prune})
        n_targets = s.cache.export(tmp / "targets")
        write_json(tmp / "info.json", {"hparams": s.hp, "prefixes": s.prefixes, "batches": out["infos"],
                                       "targets": {"n": n_targets, "keys": list(s.cache.used)}})
    sq = need(params, "sequential")
    metrics = {**s.header(run.total, run.batch), "group": "sequential", "name": name, "hparams": s.hp,
               "protocol": {"total": run.total, "batch": run.batch, "regulariser": regulariser,
                            "rect_top_percent": run.rect_top if regulariser == "rect" else None,
                            "prune": run.prune or None, "drift": s.drift_protocol(),
                            "targets": "optimised on the model as it stands before each batch"},
               "drift_before": out["drift_before"], "checkpoints": out["checkpoints"],
               "summary": out["checkpoints"][-1]["summary"]["all_so_far"],
               "work": work_summary(out["infos"]), "beyond_the_paper": True,
               "methods_in_group": list(sq.get("methods", []))}
    faults.checkpoint("metrics")
    write_json(s.p["metrics"] / "sequential" / f"{name}_{dataset}_s{s.seed}.json", metrics)
    s.finish("sequential", name, out["timing"])
    kinds = KINDS[run.cases[0].kind].metrics
    last = out["checkpoints"][-1]["summary"]["all_so_far"]
    print(f"{name} on {dataset} ({run.total} edits in batches of {run.batch}): "
          + " ".join(f"{k} {'-' if last[k]['mean'] is None else format(last[k]['mean'], '.1f')}"
                     for k in (*kinds, "Score")) + f"  [{out['timing']['wall_seconds']:.0f} s]")
    return metrics
