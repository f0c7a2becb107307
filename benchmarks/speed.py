"""Seconds per edit, split by phase, for MEMIT, PMET, JEEP and AlphaEdit: this package beside a reference loop.

Both paths run the stage recipe (`runners.edit.Session`: params.yaml's embedded default, the bundled
CounterFact records, the model's own covariance statistics and context prefixes) on the same requests, and
both end in the same metrics:
  * package: the engine as the stages run it (requests batched, each step only from each row's earliest δ
    position, LM head only at scored positions, early stop), no target cache;
  * reference: a loop written here the way the official code works: one request at a time, the full
    forward pass from the embedding at every step, full-vocabulary logits at every position of every row
    (for target optimisation and for evaluation), and each layer's keys read with a pass from the embedding
    (the package reads them from the region's first layer on, its input computed once), and attention as
    transformers runs it by default (the package's grouped-query shortcut off). The solve is the package's
    in both.
Per method it prints target optimisation / keys / solve / evaluation seconds per edit, the ratio of the
reference's seconds to the package's, the largest target difference and whether ES / GS / LS agree; then
process start-up (imports + model load, measured in a fresh interpreter), the covariance throughput
(tokens/s over the statistics layers) and the machine's measured fp32 matmul rate. Usage:
  python benchmarks/speed.py [--n 8] [--threads 2] [--methods memit pmet jeep alphaedit] [--work /tmp/speed]
      [--out docs/measurements/speed/speed.json]
Timings are figures only when nothing else runs on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from jeepkit import evaluation
from jeepkit.editing import engine, recipe
from jeepkit.editing import run as run_module
from jeepkit.editing.engine import KL_TEMPLATE, context_prefixes, locate_template
from jeepkit.editing.recipe import EditContext
from jeepkit.editing.run import edit
from jeepkit.evaluation import evaluate_cases
from jeepkit.hooks import add_at
from jeepkit.metrics import summarise
from jeepkit.models import get_module
from jeepkit.params import load_params
from jeepkit.runners.edit import Session
from jeepkit.runners.workspace import ensure_inputs, working_directory, workspace_params
from jeepkit.tokens import pad_id, right_pad

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = {"memit": 27.4, "jeep": 25.1, "pmet": 32.4}  # s per fact, official JEEP code, this machine (issue 15)


# ------------------------------------------------------------------ the reference loop

def reference_targets(model, tok, arch, cases, objective, prefixes) -> list[engine.TargetResult]:
    """The engine's objective, optimised one request at a time with full forwards and full logits."""
    out = []
    for case in cases:
        ctx = context_prefixes(prefixes)
        rows = [locate_template(tok, case.prompt, case.subject, prefix=p, answer=case.target_new) for p in ctx]
        kl = locate_template(tok, KL_TEMPLATE, case.subject)
        seqs = [r.ids[:-1] for r in rows] + [kl.ids]
        ids, mask = right_pad(seqs, pad_id(tok), device="cpu")
        n = len(rows)
        deltas = {d.name: torch.zeros(arch.hidden_size, requires_grad=True) for d in objective.deltas}
        inits: dict[str, dict] = {d.name: {} for d in objective.deltas}
        opt = torch.optim.Adam(list(deltas.values()), lr=objective.lr)
        all_rows = rows + [kl]
        pos = {d.name: torch.tensor([r.subject_last if d.position == "subject_last" else r.prompt_last
                                     for r in all_rows]) for d in objective.deltas}
        kl_init, nll_factor, info = None, 1.0, {}
        for step in range(objective.steps):
            with contextlib.ExitStack() as stack:
                for d in objective.deltas:
                    stack.enter_context(add_at(get_module(model, arch.name(d.role, d.layer)),
                                               torch.arange(len(all_rows)), pos[d.name],
                                               lambda name=d.name: deltas[name], record_init=inits[d.name],
                                               init_row=0))
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
            logp = torch.log_softmax(logits, -1)  # every position, every token
            per_prompt = torch.stack([logp[i, r.answer_positions, r.answer_ids].mean() for i, r in enumerate(rows)])
            kl_logp = logp[n, kl.subject_last]
            if kl_init is None:
                kl_init = kl_logp.detach().clone()
            hit = all(bool((logp[i, r.answer_positions].argmax(-1) == torch.tensor(r.answer_ids)).all())
                      for i, r in enumerate(rows))
            nll = -per_prompt.mean()
            kl_v = (kl_logp.exp() * (kl_logp - kl_init)).sum()
            wd = sum(d.weight_decay * deltas[d.name].norm() / inits[d.name]["init"].float().norm() ** 2
                     for d in objective.deltas)
            loss = nll_factor * nll + objective.kl_factor * kl_v + wd
            prob = float(per_prompt.detach().exp().mean())
            info = {"steps": step, "loss": float(loss.detach()), "target_prob": prob}
            stop = False
            if objective.nll_schedule == "pmet":
                nll_factor = 0.1 if hit else 1.0
                stop = hit and float(kl_v.detach()) <= 0.01
            if objective.stop_rule == "loss":
                stop = stop or float(loss.detach()) < objective.stop_value
            else:
                stop = stop or prob >= objective.stop_value
            if stop or step == objective.steps - 1:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for d in objective.deltas:
                    v, limit = deltas[d.name], d.clamp * inits[d.name]["init"].float().norm()
                    if v.norm() > limit:
                        v.mul_(limit / v.norm())
        init = {k: v["init"].float().clone() for k, v in inits.items()}
        out.append(engine.TargetResult(z={k: init[k] + deltas[k].detach() for k in deltas}, init=init, info=info))
    return out


def full_logits(model):
    """Evaluation the official way: logits over the whole vocabulary at every position, then gathered."""
    def fn(ids, mask, rows, cols):
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits[rows, cols]
    return fn


# ------------------------------------------------------------------ timing

@contextlib.contextmanager
def phases(reference: bool) -> Iterator[dict[str, Any]]:
    """Time target optimisation, key reading and the rest of the closed-form update inside the block."""
    t: dict[str, Any] = {"targets": 0.0, "keys": 0.0, "regions": 0.0, "results": []}
    saved = recipe.optimise_targets_batch, recipe.apply_regions, engine.KeyRows.__init__, engine.KeyRows.read

    def targets(model, tok, arch, cases, objective, prefixes):
        t0 = time.perf_counter()
        res = (reference_targets if reference else saved[0])(model, tok, arch, cases, objective, prefixes)
        t["targets"] += time.perf_counter() - t0
        t["results"] += res
        return res

    def timed(phase: str, fn):
        def call(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                t[phase] += time.perf_counter() - t0
        return call

    def key_rows(self, *a, first_layer=None, **k):  # the reference reads every layer's keys from the embedding
        saved[2](self, *a, first_layer=None if reference else first_layer, **k)

    recipe.optimise_targets_batch, recipe.apply_regions = targets, timed("regions", saved[1])
    engine.KeyRows.__init__, engine.KeyRows.read = timed("keys", key_rows), timed("keys", saved[3])
    try:
        yield t
    finally:
        recipe.optimise_targets_batch, recipe.apply_regions, engine.KeyRows.__init__, engine.KeyRows.read = saved


@contextlib.contextmanager
def transformers_attention(reference: bool) -> Iterator[None]:
    """The reference attends the way transformers does by default (key/value heads copied per query head
    under a mask); the package's grouped-query shortcut (`forward.grouped_kv_attention`) is off for it."""
    if not reference:
        yield
        return
    saved = run_module.grouped_kv_attention, evaluation.grouped_kv_attention, engine.grouped_kv_attention
    off = lambda _model: contextlib.nullcontext()  # noqa: E731
    run_module.grouped_kv_attention = evaluation.grouped_kv_attention = engine.grouped_kv_attention = off
    try:
        yield
    finally:
        run_module.grouped_kv_attention, evaluation.grouped_kv_attention, engine.grouped_kv_attention = saved


def run_method(s: Session, reference: bool) -> dict[str, Any]:
    ctx = EditContext(s.model, s.tok, s.arch, s.cov.get, s.prefixes, None, None, s.runtime)
    cases = s.cases[:s.n]
    pristine = s._snapshot()  # the originals, kept before the first edit of the session
    with transformers_attention(reference):
        with phases(reference) as t:
            res = edit(ctx, s.method, cases, s.hparams)
        t0 = time.perf_counter()
        per_case = evaluate_cases(s.model, s.tok, cases, progress=False, batch_size=s.runtime.eval_rows,
                                  logits_fn=full_logits(s.model) if reference else None)
        t_eval = time.perf_counter() - t0
    pristine.restore(res.deltas)
    summary = summarise(per_case, cases[0].kind)
    n = len(cases)
    return {"targets": t["targets"] / n, "keys": t["keys"] / n, "solve": (t["regions"] - t["keys"]) / n,
            "eval": t_eval / n, "z": t["results"], "summary": summary}


def startup_seconds(params_path: Path) -> float:
    """Imports and model load in a fresh interpreter: the fixed cost every stage pays."""
    code = ("import time; t=time.perf_counter(); from jeepkit.runners.edit import Session; "
            "from jeepkit.runtime import load_run_model; from jeepkit.params import load_params; "
            f"load_run_model(load_params({str(params_path)!r})); print(time.perf_counter()-t)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1])


def matmul_gflops(threads: int, n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def covariance_throughput(s: Session, params: dict[str, Any], n_docs: int) -> tuple[float, int]:
    from jeepkit.stats import accumulate_second_moments, corpus_documents, corpus_spec
    spec = corpus_spec(params)
    docs = corpus_documents(spec, s.model, s.tok)[:n_docs]
    names = [s.arch.name(m, l) for l in params["stats"]["layers"]
             for m in ("mlp_out",)]
    t0 = time.perf_counter()
    accumulate_second_moments(s.model, s.tok, s.arch, names, docs, spec.max_length, spec.dtype,
                              token_budget=s.runtime.stats_tokens)
    dt = time.perf_counter() - t0
    n_tok = sum(min(len(s.tok(d)["input_ids"]), spec.max_length) for d in docs)
    return n_tok / dt, len(names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="requests per method (the first N bundled CounterFact records)")
    ap.add_argument("--methods", nargs="*", default=["memit", "pmet", "jeep", "alphaedit"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/speed")
    ap.add_argument("--cov-docs", type=int, default=64)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    params = workspace_params(load_params(ROOT / "params.yaml"), None, {"edit.n_edits": a.n, "edit.batch_size": a.n})
    report: dict[str, Any] = {"n": a.n, "threads": a.threads, "methods": {}}
    with working_directory(a.work) as work:
        ensure_inputs(params, ["counterfact"])
        (work / "params.yaml").write_text(json.dumps(params))
        print(f"{'method':10s} {'path':9s} {'targets':>8s} {'keys':>6s} {'solve':>6s} {'eval':>6s} {'total':>7s}  "
              "ES / GS / LS (s per edit)")
        for m in a.methods:
            s = Session(params, m, "counterfact", None, {})
            s.n = a.n
            got = {}
            for path, ref in (("package", False), ("reference", True)):
                r = run_method(s, ref)
                got[path] = r
                sm = r["summary"]
                tot = r["targets"] + r["keys"] + r["solve"] + r["eval"]
                print(f"{m:10s} {path:9s} {r['targets']:8.2f} {r['keys']:6.2f} {r['solve']:6.2f} {r['eval']:6.2f} "
                      f"{tot:7.2f}  {sm['ES']['mean']:.1f} / {sm['GS']['mean']:.1f} / {sm['LS']['mean']:.1f}",
                      flush=True)
            p, r = got["package"], got["reference"]
            dz = max(float((a_.z[k] - b_.z[k]).abs().max() / b_.z[k].abs().max())
                     for a_, b_ in zip(p["z"], r["z"]) for k in b_.z)
            same = all(p["summary"][k]["mean"] == r["summary"][k]["mean"] for k in ("ES", "GS", "LS"))
            steps_same = [x.info["steps"] for x in p["z"]] == [x.info["steps"] for x in r["z"]]
            ratio_t = r["targets"] / p["targets"]
            tot = {k: v["targets"] + v["keys"] + v["solve"] + v["eval"] for k, v in got.items()}
            off = OFFICIAL.get(m)
            print(f"{'':10s} ratio     targets {ratio_t:.1f}x, per edit {tot['reference'] / tot['package']:.1f}x; "
                  f"max |Δz|/|z| {dz:.1e}; same steps {steps_same}; same ES/GS/LS {same}"
                  + (f"; official code {off} s/fact on targets: {off / p['targets']:.1f}x" if off else ""), flush=True)
            report["methods"][m] = {k: {x: round(v[x], 3) for x in ("targets", "keys", "solve", "eval")}
                                    | {"summary": {q: v["summary"][q]["mean"] for q in ("ES", "GS", "LS", "Score")}}
                                    for k, v in got.items()}
            report["methods"][m].update({"ratio_targets": round(ratio_t, 2), "max_rel_dz": dz,
                                         "same_metrics": same, "same_steps": steps_same, "official_s": off})
            del s
        start = startup_seconds(work / "params.yaml")
        print(f"process start-up (imports + model load, fresh interpreter): {start:.1f} s")
        s = Session(params, "memit", "counterfact", None, {})
        tps, n_layers = covariance_throughput(s, params, a.cov_docs)
        peak = matmul_gflops(a.threads)
        print(f"covariance: {tps:.0f} tokens/s over {n_layers} statistics layers ({a.cov_docs} documents); "
              f"fp32 matmul {peak:.0f} GFLOP/s at {a.threads} threads")
        report.update({"startup_s": round(start, 2), "cov_tokens_per_s": round(tps, 1), "cov_layers": n_layers,
                       "matmul_gflops": round(peak, 1)})
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
