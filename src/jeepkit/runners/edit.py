"""What the edit stages do (Tables 2-4, Fig. 4 and 6). Stages in stages/ only parse arguments and call these.

Every edit stage writes its run directory and metrics deterministically: wall times, target-cache
hits and other machine- or history-dependent facts go to data/timings/ (outside every DVC output),
so two runs of the same stage, on any machine, give the same bytes.
"""

from __future__ import annotations

import time
from typing import Any

from .. import faults
from ..config import DATASET_SECTIONS
from ..data.kinds import KINDS
from ..data.schema import load_cases, save_cases
from ..editing.deltas import Pristine, save_deltas
from ..device import device_kind, input_device
from ..errors import ConfigError, InputError
from ..io import atomic_dir, read_json, write_json, write_jsonl
from ..lineage import code_version
from ..metrics import summarise
from ..models import model_identity
from ..params import ParamsLike, method_hparams, need, paths, resolve_params
from ..runtime import load_run_model, runtime_for
from ..stats import CovarianceStore, corpus_spec

TIMING_SUFFIX = "_seconds"
HISTORY_KEYS = ("target_cache_hits", "target_cache_misses")  # depend on what an earlier run left in the cache


def split_timing(obj: Any, into: dict[str, float] | None = None) -> tuple[Any, dict[str, float]]:
    """(obj without wall times and cache-history counts, their per-key sums): the first part is reproducible."""
    into = {} if into is None else into
    if isinstance(obj, dict):
        kept = {}
        for k, v in obj.items():
            if isinstance(k, str) and (k.endswith(TIMING_SUFFIX) or k in HISTORY_KEYS) and isinstance(v, (int, float)):
                into[k] = into.get(k, 0) + v
            else:
                kept[k] = split_timing(v, into)[0]
        return kept, into
    if isinstance(obj, list):
        return [split_timing(v, into)[0] for v in obj], into
    return obj, into


def generation_tokens(params: dict[str, Any], kind: str) -> int:
    """New tokens per free-generation probe for a kind's cases; 0 when its kind is not scored that way."""
    from ..free_generation import DEFAULT_TOKENS

    if not KINDS[kind].free_generation:
        return 0
    return int((params.get("edit") or {}).get("free_generation_tokens", DEFAULT_TOKENS))


def run_name(method: str, overrides: dict[str, Any]) -> str:
    return method + "".join(f"-{k}={v}" for k, v in sorted(overrides.items()))


class Session:
    """What every edit stage loads once: params, cases, model, statistics, target cache, prefixes.

    Everything that can be checked without optimising is checked here, before any work starts.
    """

    def __init__(self, params: ParamsLike, method: str, dataset: str, seed: int | None, overrides: dict[str, Any]):
        from ..editing.prefixes import PrefixCache
        from ..editing.run import check_params, method_spec
        from ..editing.targets import TargetCache

        self.params = params = resolve_params(params)
        check_params(params)
        self.spec = spec = method_spec(method)
        self.p = p = paths(params)
        self.e = need(params, "edit")
        self.method, self.dataset = method, dataset
        self.seed = int(params.get("seed", 0) if seed is None else seed)
        self.hp = {**method_hparams(params, method, dataset), **overrides}  # as given: what metrics record
        spec.hparams.check(overrides, where="--set", partial=True)
        self.hparams = spec.hparams.from_dict(self.hp, where=f"hparams.{params['model']['key']}.{method}")
        self.overrides = overrides
        named = [*need(params, "data.datasets"), *((params.get(s) or {}).get("dataset") for s in DATASET_SECTIONS)]
        known = [d for d in dict.fromkeys(named) if d is not None]
        if dataset not in known:
            raise ConfigError(f"unknown dataset {dataset!r}; params data.datasets and the stage groups' "
                              f"`dataset` list {known}")
        data_file = p["datasets"] / f"{dataset}.jsonl"
        self.cases = load_cases(data_file)
        if not self.cases:
            raise InputError("no records (re-run the data stage)", file=str(data_file))
        self.prov = read_json(p["datasets"] / f"{dataset}.provenance.json")
        self.model, self.tok, self.arch, card = load_run_model(params)
        self.ident = model_identity(card)
        self.device = device_kind(input_device(self.model))
        # a target computed on a GPU is not bit-equal to a CPU one: the device kind is part of its cache key
        self.target_ident = {**self.ident, "device": self.device}
        self.runtime = runtime_for(params, self.model)
        self.cov = CovarianceStore(p["stats"], corpus_spec(params), self.ident)
        self._preflight(spec.statistics(self.hparams))
        self.cache = TargetCache(p["targets"])
        self.prefix_cache = PrefixCache(p["targets"])
        self.prefixes = (self.prefix_cache.get(self.model, self.tok, self.target_ident, self.seed)
                         if spec.kind != "unedited" else [])
        self._pristine: Pristine | None = None
        self._heldout: tuple[list[str], Any] | None = None
        self._unedited: tuple[dict[str, Any], Any] | None = None
        from ..generation_metrics import GenerationSettings, check_files

        self.generation_settings = GenerationSettings.from_params(params)
        check_files(self.generation_settings)
        self._generation = None

    def generation_scorer(self, cases: list):
        """MEMIT's Fluency / Consistency scorer when these cases carry generation prompts (official CounterFact)
        and `generation.max_length` > 0; else None. Snippets and vectoriser are loaded once."""
        from ..generation_metrics import GenerationScorer

        from ..generation_metrics import applies

        if not applies(self.generation_settings, cases):
            return None
        if self._generation is None:
            self._generation = GenerationScorer(self.generation_settings)
        return self._generation

    # -- general-capability drift (issue 14): perplexity of held-out text the statistics never read

    def drift_on(self) -> bool:
        """`edit.drift`; the `drift` block it reads is required then (a clear error before any edit)."""
        return bool(self.e.get("drift", False))

    def _heldout_docs(self) -> list[str]:
        from ..drift import cached_heldout

        if self._heldout is None:
            self._heldout = cached_heldout(self.params, self.model, self.tok, self.p["targets"], self.ident)
        return self._heldout[0]

    def perplexity(self) -> dict[str, Any]:
        """Held-out perplexity of the model as it stands now."""
        from ..drift import drift_settings, perplexity

        d = drift_settings(self.params)
        return perplexity(self.model, self.tok, self._heldout_docs(), max_length=d["max_length"], batch=d["batch"])

    def unedited_perplexity(self) -> dict[str, Any]:
        """Held-out perplexity of the unedited model (call before any edit): read from the cache that every
        stage of this model shares, or computed and stored there by `finish`."""
        from ..drift import cached_unedited_perplexity

        if self._unedited is None:
            self._unedited = cached_unedited_perplexity(self.params, self.model, self.tok, self._heldout_docs(),
                                                        self.p["targets"], self.target_ident)
        return self._unedited[0]

    def fluency_sampling(self) -> dict[str, int]:
        """KnowEdit's Fluency samples as GE does (the `generation` block; its length even where GE is off)."""
        g = self.generation_settings
        return {"max_length": g.max_length or 100, "top_k": g.top_k, "seed": g.seed}

    def drift_protocol(self) -> dict[str, Any]:
        from ..drift import drift_settings

        d = drift_settings(self.params)
        return {**d, "text": d["corpus"], "corpus": (d["corpus"] if d["corpus"] == "python_docs"
                                                     else self.params["stats"]["corpus"]),
                "protocol": "perplexity", "name": "held-out perplexity drift"}

    def _preflight(self, needs: list[tuple[str, int]]) -> None:
        """Layer indices in range, statistics present and of the right shape, prompts within the context."""
        from ..models import get_module
        from ..tokens import check_context

        depth = self.arch.n_layers
        for role, layer in needs:
            if not 0 <= int(layer) < depth:
                raise ConfigError(f"{self.method}: layer {layer} is outside the model's layers 0..{depth - 1}")
            name = self.arch.name(role, layer)
            c = self.cov.get(name)
            n_in = get_module(self.model, name).in_features
            if tuple(c.shape) != (n_in, n_in):
                raise InputError(f"covariance of shape {tuple(c.shape)} does not fit {name} ({n_in} inputs); "
                                 "it was computed for another model: re-run the stats stage",
                                 file=str(self.cov.dir / f"{name}.safetensors"))
        n = min(int(self.e["n_edits"]), len(self.cases))
        check_context(self.tok, self.model, self.cases[:n], file=str(self.p["datasets"] / f"{self.dataset}.jsonl"))

    def _snapshot(self) -> Pristine:
        """The originals of the parameters the method can change, taken once per session."""
        if self._pristine is None:
            self._pristine = Pristine(self.model, self.spec.edited_parameters(self.hparams, self.arch, self.model),
                                      owner=self.method)
        return self._pristine

    def run_chunks(self, cases: list, chunk: int, *, keep_deltas: bool = True, case_study: bool = False,
                   progress: bool = True, restore: bool = True, free_generation: int = 0,
                   generation: bool = False, drift: bool = False) -> dict[str, Any]:
        """Edit each chunk on the original model, evaluate it, restore; chunks are independent.

        `free_generation` > 0 also scores each chunk by greedy decoding of that many tokens; cases with
        generation prompts get MEMIT's Fluency / Consistency when `generation` is set; `drift` records the held-out
        perplexity of each chunk's edited model. `restore=False` leaves the last chunk's edit in
        place (nothing uses the model afterwards).
        """
        from ..editing.recipe import EditContext
        from ..editing.run import edit
        from ..evaluation import evaluate_cases, greedy_continuations, needs_reference, reference_predictions

        ctx = EditContext(self.model, self.tok, self.arch, self.cov.get, self.prefixes, self.target_ident,
                          self.cache, self.runtime)
        from ..free_generation import score_cases

        out: dict[str, Any] = {"per_case": [], "infos": [], "deltas": {}, "case_study": None,
                               "free_generation": [], "generation": [], "drift_after": [],
                               "timing": {"target_seconds": 0.0, "edit_seconds": 0.0, "eval_seconds": 0.0}}
        n_chunks = -(-len(cases) // chunk)
        pristine = self._snapshot() if restore or n_chunks > 1 else None
        # probes scored against the unedited model (KnowEdit locality): its predictions, before any edit
        ref = reference_predictions(self.model, self.tok, cases, progress=progress, batch_size=self.runtime.eval_rows) \
            if needs_reference(cases) else None
        for c0 in range(0, len(cases), chunk):
            part = cases[c0:c0 + chunk]
            res = edit(ctx, self.method, part, self.hparams)
            t0 = time.time()
            out["per_case"] += evaluate_cases(self.model, self.tok, part, progress=progress,
                                              batch_size=self.runtime.eval_rows,
                                              reference=None if ref is None else ref[c0:c0 + chunk],
                                              sampling=self.fluency_sampling())
            if free_generation:
                out["free_generation"] += score_cases(self.model, self.tok, part, max_new_tokens=free_generation,
                                                      batch_size=self.runtime.decode_rows)
            gen = self.generation_scorer(part) if generation else None
            if gen is not None:
                out["generation"] += gen.score(self.model, self.tok, part, batch_size=self.runtime.decode_rows)
            if drift:  # an unedited "edit" leaves the weights as they were
                out["drift_after"].append(self.unedited_perplexity() if self.spec.kind == "unedited"
                                          else self.perplexity())
            if case_study and out["case_study"] is None:
                c = part[0]
                prompts = [c.rewrite_prompt] + list(c.paraphrases[:1]) + [lp.prompt for lp in c.locality[:1]]
                out["case_study"] = {"case_id": c.case_id, "subject": c.subject, "target_new": c.target_new,
                                     "target_true": c.target_true, "prompts": prompts,
                                     "greedy": greedy_continuations(self.model, self.tok, prompts, max_new_tokens=8)}
            out["timing"]["eval_seconds"] += time.time() - t0
            info, timing = split_timing(res.info)
            for k, v in timing.items():
                if k in ("target_seconds", "edit_seconds") or k in HISTORY_KEYS:
                    out["timing"][k] = out["timing"].get(k, 0) + v
            out["infos"].append(info)
            if keep_deltas and res.deltas:
                out["deltas"][f"delta_chunk{c0 // chunk}.safetensors"] = (
                    {k: v.contiguous() for k, v in res.deltas.items()}, [c.case_id for c in part])
            if pristine is not None and (restore or c0 + chunk < len(cases)):
                pristine.restore(res.deltas)
        return out

    def target_tokens(self, n_edits: int) -> dict[str, int]:
        """How many tokens the edited targets take: with one each, objectives that differ only on later
        target tokens (FT-L's and FT-M's) coincide, and the ledger calls claims between them not testable."""
        from ..tokens import locate_template

        n = [len(locate_template(self.tok, c.prompt, c.subject, answer=c.target_new).answer_ids)
             for c in self.cases[:n_edits]]
        return {"max": max(n, default=0), "multi_token_records": sum(k > 1 for k in n)}

    def header(self, n_edits: int, batch: int) -> dict[str, Any]:
        return {"method": self.method, "method_label": self.spec.label, "dataset": self.dataset,
                "kind": self.cases[0].kind,
                "overrides": self.overrides, "model": {"key": self.params["model"]["key"], **self.ident},
                "data": {"source": self.prov.get("source"), "n_cases": n_edits, "provenance": self.prov,
                         "target_tokens": self.target_tokens(n_edits)},
                "profile": self.params.get("profile"), "seed": self.seed, "n_edits": n_edits, "batch_size": batch,
                "covariance": self.cov.describe(), "code": code_version(), "device": self.device}

    def finish(self, group: str, name: str, timing: dict[str, Any]) -> None:
        """A stage's last writes, after its outputs: newly sampled prefixes and held-out text into their
        caches, its wall times."""
        self.prefix_cache.flush()
        for cached in (self._heldout, self._unedited):
            if cached is not None and cached[1] is not None:
                write_json(cached[1], cached[0])
        write_json(self.p["timings"] / group / f"{name}_{self.dataset}_s{self.seed}.json",
                   {"method": self.method, "dataset": self.dataset, "seed": self.seed, "finished": time.time(),
                    "target_cache": {"hits": self.cache.hits, "misses": self.cache.misses},
                    **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in timing.items()}})


SCORES = ("all", "teacher_forced")  # what an edit stage scores (`edit_and_evaluate`'s `scores`)


def edit_and_evaluate(method: str, dataset: str, params: ParamsLike = "params.yaml", *, group: str = "main",
                      seed: int | None = None, overrides: dict[str, Any] | None = None,
                      n_edits: int | None = None, batch_size: int | None = None,
                      scores: str = "all") -> dict[str, Any]:
    """Edit n_edits (default edit.n_edits) records in independent chunks of batch_size (default
    edit.batch_size; 1 is the single-edit protocol with rollback); evaluate each chunk on its edited model.

    `scores` "all": the teacher-forced scores and what `edit:` adds beyond them (free generation, held-out drift,
    MEMIT's GE / RS where the data has them, Table 1's greedy case study); "teacher_forced": the paper's scores
    only, for the groups whose tables and figures read nothing else (Table 4's ablation, Fig. 6's sweep).
    """
    if scores not in SCORES:
        raise ConfigError(f"scores: expected one of {', '.join(SCORES)}, got {scores!r}")
    for flag, value in (("n_edits", n_edits), ("batch_size", batch_size)):
        if value is not None and int(value) < 1:
            raise ConfigError(f"{flag}: expected an integer >= 1, got {value}")
    overrides = overrides or {}
    s = Session(params, method, dataset, seed, overrides)
    n_edits = min(int(n_edits or s.e["n_edits"]), len(s.cases))
    cases = s.cases[:n_edits]
    batch = min(int(batch_size or s.e.get("batch_size") or n_edits), n_edits)
    extras = scores == "all"
    tokens = generation_tokens(s.params, cases[0].kind) if extras else 0
    before = s.unedited_perplexity() if extras and s.drift_on() else None
    out = s.run_chunks(cases, batch, case_study=extras, restore=False, free_generation=tokens, generation=extras,
                       drift=before is not None)
    summary = summarise(out["per_case"], cases[0].kind)
    if tokens:
        from ..free_generation import summarise as summarise_free

        summary["free_generation"] = {**summarise_free(out["free_generation"]), "max_new_tokens": tokens}
    if out["generation"]:
        from ..generation_metrics import summarise as summarise_generation

        summary["generation"] = summarise_generation(out["generation"], s.generation_settings)
    name = run_name(method, overrides)
    run_dir = s.p["runs"] / group / name / dataset / f"s{s.seed}"
    with atomic_dir(run_dir) as tmp:
        write_jsonl(tmp / "cases.jsonl", out["per_case"])
        if tokens:
            write_jsonl(tmp / "free_generation.jsonl", out["free_generation"])
        if out["generation"]:
            write_jsonl(tmp / "generation.jsonl", out["generation"])
        save_cases(tmp / "requests.jsonl", cases)
        for fname, (tensors, ids) in out["deltas"].items():
            faults.checkpoint("deltas")
            save_deltas(tmp / fname, tensors, {"case_ids": ids, "method": method, "hparams": s.hp, "model": s.ident})
        n_targets = s.cache.export(tmp / "targets")
        write_json(tmp / "info.json", {"hparams": s.hp, "prefixes": s.prefixes, "chunks": out["infos"],
                                       "targets": {"n": n_targets, "keys": list(s.cache.used)}})
    metrics = {**s.header(n_edits, batch), "group": group, "name": name, "scores": scores, "hparams": s.hp,
               "summary": summary,
               "work": work_summary(out["infos"]), "case_study": out["case_study"]}
    if before is not None:
        metrics["drift"] = drift_record(before, out["drift_after"], s.drift_protocol())
    faults.checkpoint("metrics")
    write_json(s.p["metrics"] / group / f"{name}_{dataset}_s{s.seed}.json", metrics)
    s.finish(group, name, out["timing"])
    shown = " ".join(f"{k} {'-' if summary[k]['mean'] is None else format(summary[k]['mean'], '.1f')}"
                     for k in (*KINDS[cases[0].kind].metrics, "Score"))
    print(f"{name} on {dataset} ({n_edits} edits, seed {s.seed}): {shown}  [{out['timing']['edit_seconds']:.0f} s edit]")
    return metrics


def drift_record(before: dict[str, Any], after: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """Held-out perplexity before editing and after each chunk's edit; `perplexity_after` is the chunks' mean;
    `log_ppl_change` the change in log-perplexity with its paired bootstrap interval over documents."""
    from ..drift import change

    mean_after = sum(a["perplexity"] for a in after) / len(after)
    return {"protocol": "perplexity", "settings": settings, "before": before, "after": after,
            "perplexity_before": before["perplexity"], "perplexity_after": mean_after,
            "change": mean_after - before["perplexity"],
            "log_ppl_change": change(before, after, seed=int(settings.get("seed", 0)))}


def work_summary(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """Machine-independent cost and reach of the edit, means over chunks: optimisation steps per request (the
    wall time is in timings); ‖ΔW‖_F per updated region (so a variant that changes nothing shows a zero, not
    just equal scores); the target probability the optimised δ's reached and the one the edited weights give."""
    import re

    def mean(key: str) -> float | None:
        vals = [i[key] for i in infos if isinstance(i.get(key), (int, float))]
        return round(sum(vals) / len(vals), 6) if vals else None

    regions: dict[str, list[float]] = {}
    for i in infos:
        for k, v in i.items():
            m = re.search(r"(?:^|/)([^/]+)/delta_frobenius$", k)
            if m and isinstance(v, (int, float)):
                regions.setdefault(m.group(1), []).append(float(v))
    steps = mean("mean_opt_steps")
    return {"mean_opt_steps": None if steps is None else round(steps, 4),
            "delta_frobenius": {r: round(sum(v) / len(v), 6) for r, v in sorted(regions.items())},
            "target_prob_with_deltas": mean("mean_target_prob"),
            "target_prob_after_edit": mean("target_prob_after_edit")}


def scaling_sizes(max_m: int, n_points: int = 16) -> list[int]:
    """m_i = round(exp(ln(M)·i/16)), i = 0..16 (Fig. 4), deduplicated."""
    import math

    return sorted({max(1, round(math.exp(math.log(max_m) * i / n_points))) for i in range(n_points + 1)})


def scaling(method: str, dataset: str, params: ParamsLike = "params.yaml", *, seed: int | None = None) -> dict:
    """Fig. 4: for each batch size m ≤ M, edit up to max_chunks independent chunks of m and evaluate.

    Targets are cached per request, so every m after the first costs only the closed-form updates.
    """
    s = Session(params, method, dataset, seed, {})
    sc = need(s.params, "scaling")
    max_m = min(int(sc["max_edits"]), len(s.cases))
    points, timings = [], []
    for m in scaling_sizes(max_m):
        n_chunks = min(int(sc.get("max_chunks", 4)), max_m // m)
        cases = s.cases[: m * n_chunks]
        out = s.run_chunks(cases, m, keep_deltas=False, progress=False)
        summ = summarise(out["per_case"], cases[0].kind)
        points.append({"m": m, "n_chunks": n_chunks, "n_records": len(cases), "summary": summ,
                       "work": work_summary(out["infos"])})
        timings.append({"m": m, **{k: round(v, 2) for k, v in out["timing"].items()}})
        print(f"{method} m={m} ({n_chunks} chunks): Score {summ['Score']['mean']:.1f}")
    metrics = {**s.header(max_m, max_m), "group": "scaling", "name": method, "hparams": s.hp, "points": points}
    write_json(s.p["metrics"] / "scaling" / f"{method}_{dataset}_s{s.seed}.json", metrics)
    s.finish("scaling", method, {"points": timings})
    return metrics


