"""Parity with the reference implementations, record by record (issue 40). A benchmark: it prints and writes
figures; it is not a test.

For one method it runs this package and the reference code at a pinned commit on the same SmolLM2 weights, the
same records, the same covariance statistics and the same context prefixes (the package's, injected into the
reference; nothing is re-drawn), and compares per record: the target vector z (cosine, relative norm
difference), ΔW of every edited matrix (relative Frobenius difference), every probe's NLL of the new and the
true target, and the 0/1 outcomes of ES / GS / LS. Both sides are timed per phase in the same run.

  python benchmarks/parity/harness.py memit --n 12 [--reference PATH] [--mirror ../shared/data] [--threads 2]

`--reference` is a checkout of the reference repository; without it the pinned commit is cloned from its URL
(a network is needed; here the checkouts are local copies). The checkout is copied, the patch in `patches/`
applied (compatibility only: device, config names, transformers' output types; each with its reason), and the
reference runs in a subprocess that imports nothing from this package. Writes docs/measurements/parity/
<method>_<dataset>.json (per-record rows and the summary) and regenerates docs/measurements/parity/README.md
from every such file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
REFERENCES = {  # method -> (repository, pinned commit, patch, runner)
    "memit": ("https://github.com/kmeng01/memit", "80426fd9316cf9a50c5ba15e0912f2c2c5bfe84b",
              "kmeng01-memit-80426fd.patch", "reference_memit.py"),
}
OUT = ROOT / "docs" / "measurements" / "parity"


def checkout(method: str, given: str | None, work: Path) -> Path:
    """A patched copy of the reference at its pinned commit."""
    url, commit, patch, _ = REFERENCES[method]
    dest = work / f"reference-{method}"
    if dest.exists():
        shutil.rmtree(dest)
    src = given or url
    subprocess.run(["git", "clone", "-q", src, str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "-q", commit], check=True)
    subprocess.run(["git", "-C", str(dest), "apply", str(HERE / "patches" / patch)], check=True)
    return dest


def rome_record(case) -> dict:
    """A ROME-format CounterFact record of a canonical case (what the reference's evaluation reads)."""
    return {"case_id": case.case_id,
            "requested_rewrite": {"prompt": case.prompt, "subject": case.subject,
                                  "target_new": {"str": case.target_new}, "target_true": {"str": case.target_true},
                                  "relation_id": case.relation_id},
            "paraphrase_prompts": list(case.paraphrases), "neighborhood_prompts": [lp.prompt for lp in case.locality],
            "generation_prompts": []}


def memit_hparams(hp, depth: int) -> dict:
    """The reference's MEMITHyperParams for the package's MEMIT settings on a LLaMA-family model (module
    templates are the family's; SmolLM2 ties its LM head to the embedding, so the head is read there)."""
    return {"layers": list(hp.layers), "layer_selection": "all", "fact_token": "subject_last",
            "v_num_grad_steps": hp.steps, "v_lr": hp.lr, "v_loss_layer": depth - 1, "v_weight_decay": hp.weight_decay,
            "clamp_norm_factor": hp.clamp, "kl_factor": hp.kl_factor, "mom2_adjustment": True,
            "mom2_update_weight": hp.lam, "rewrite_module_tmp": "model.layers.{}.mlp.down_proj",
            "layer_module_tmp": "model.layers.{}", "mlp_module_tmp": "model.layers.{}.mlp",
            "attn_module_tmp": "model.layers.{}.self_attn", "ln_f_module": "model.norm",
            "lm_head_module": "model.embed_tokens", "mom2_dataset": "injected", "mom2_n_samples": 0,
            "mom2_dtype": "float32"}


def ours(params: dict, method: str, dataset: str, n: int, threads: int) -> dict:
    """The package's edit of the first n records (one batch), per-record targets, ΔW, evaluation, phase times."""
    from jeepkit.editing import memit
    from jeepkit.editing.recipe import EditContext
    from jeepkit.editing.run import edit
    from jeepkit.editing.targets import TargetCache, target_key
    from jeepkit.evaluation import evaluate_cases
    from jeepkit.runners.edit import Session

    torch.set_num_threads(threads)
    s = Session(params, method, dataset, None, {})
    cases = s.cases[:n]
    with tempfile.TemporaryDirectory() as tmp:
        cache = TargetCache(tmp)
        ctx = EditContext(s.model, s.tok, s.arch, s.cov.get, s.prefixes, s.target_ident, cache, s.runtime)
        res = edit(ctx, method, cases, s.hparams)
        hp = memit.Hparams.coerce(s.hparams)
        obj = memit.objective(hp)
        z = {c.case_id: cache.get(target_key(s.target_ident, c, obj, s.prefixes, method=method)).z["main"]
             for c in cases}
        t0 = time.time()
        per_case = evaluate_cases(s.model, s.tok, cases, batch_size=s.runtime.eval_rows, progress=False)
        t_eval = time.time() - t0
    return {"session": s, "cases": cases, "hp": hp, "z": z, "deltas": res.deltas, "per_case": per_case,
            "kind": cases[0].kind, "source_file": s.prov.get("path"),
            "seconds": {"targets": res.info["target_seconds"],
                        "update": res.info["edit_seconds"] - res.info["target_seconds"], "evaluation": t_eval},
            "depth": s.arch.n_layers, "cov": {m: s.cov.get(m) for m in res.deltas},
            "model_dir": str(Path(s.p["model"]).resolve())}


def reference(method: str, mine: dict, ref_dir: Path, work: Path, threads: int, python: str) -> dict:
    cov_dir = work / "covariance"
    cov_dir.mkdir(parents=True, exist_ok=True)
    cov_files = {}
    for m, c in mine["cov"].items():
        f = cov_dir / f"{m}.safetensors"
        save_file({"cov": c.float().contiguous().cpu()}, str(f))
        cov_files[m] = str(f)
    out = work / f"out-{method}"
    if out.exists():  # the reference reuses cached z files it finds there: every run computes its own
        shutil.rmtree(out)
    spec = {"model_dir": mine["model_dir"], "method": method, "hparams": memit_hparams(mine["hp"], mine["depth"]),
            "prefixes": list(mine["session"].prefixes), "covariance": cov_files, "out": str(out), "threads": threads}
    if mine["kind"] == "zsre":  # the same file, under the name the reference's dataset class reads
        zdir = work / "zsre"
        zdir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mine["source_file"], zdir / "zsre_mend_eval.json")
        spec.update(zsre_dir=str(zdir), n=len(mine["cases"]))
    else:
        spec["records"] = [rome_record(c) for c in mine["cases"]]
    spec_file = work / f"spec-{method}.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(ref_dir)}
    runner = HERE / REFERENCES[method][3]
    t0 = time.time()
    done = subprocess.run([python, str(runner), str(spec_file)], cwd=ref_dir, env=env, capture_output=True,
                          text=True)
    if done.returncode:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"error: the reference run failed (exit {done.returncode}); its output is above")
    got = json.loads((out / "reference.json").read_text())
    got["wall"] = time.time() - t0
    got["deltas"] = load_file(str(out / "delta.safetensors"))
    return got


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def compare(mine: dict, ref: dict) -> dict:
    """Per-record rows and the summary."""
    rows = []
    by_id = {r["case_id"]: r for r in ref["records"]}
    for c, pc in zip(mine["cases"], mine["per_case"]):
        r = by_id[c.case_id]
        z_ours, z_ref = mine["z"][c.case_id].double(), torch.tensor(r["z"], dtype=torch.float64)
        nll_diff, outcomes = (0.0 if c.kind == "counterfact" else None), {}
        if c.kind == "zsre":  # per target token: is the argmax the token (the reference prints accuracies only)
            outcomes["ES"] = {"ours": list(pc["rewrite"]["correct"]), "reference": r["rewrite_prompts_correct"]}
            outcomes["GS"] = {"ours": [t for p in pc["paraphrases"] for t in p["correct"]],
                              "reference": r["paraphrase_prompts_correct"]}
            outcomes["LS"] = {"ours": [t for p in pc["locality"] for t in p["correct"]],
                              "reference": r["neighborhood_prompts_correct"]}
        for field, got, want, metric in ([("rewrite", [pc["rewrite"]], r["rewrite_prompts_probs"], "ES"),
                                          ("paraphrases", pc["paraphrases"], r["paraphrase_prompts_probs"], "GS"),
                                          ("locality", pc["locality"], r["neighborhood_prompts_probs"], "LS")]
                                         if c.kind == "counterfact" else []):
            o, w = [], []
            for g, x in zip(got, want):
                nll_diff = max(nll_diff, abs(g["nll_new"] - x["target_new"]), abs(g["nll_true"] - x["target_true"]))
                o.append(bool(g["success"]))
                w.append(x["target_new"] < x["target_true"] if metric != "LS" else x["target_true"] < x["target_new"])
            outcomes[metric] = {"ours": o, "reference": w}
        loc_answers = {lp.answer for lp in c.locality}
        rows.append({"case_id": c.case_id,
                     "z_cosine": float(torch.nn.functional.cosine_similarity(z_ours, z_ref, dim=0)),
                     "z_rel_norm_diff": float(abs(z_ours.norm() - z_ref.norm()) / z_ref.norm()),
                     "max_nll_diff": nll_diff, "outcomes": outcomes,
                     "outcomes_agree": all(v["ours"] == v["reference"] for v in outcomes.values()),
                     "locality_answer_is_target_true": loc_answers <= {c.target_true}})
    dw = {m: _rel(mine["deltas"][m], ref["deltas"][f"{m}.weight"]) for m in mine["deltas"]}
    n = len(mine["cases"])
    ours_s, ref_s = mine["seconds"], ref["seconds"]
    return {"rows": rows, "delta_rel_frobenius": dw, "summary": {
        "records": n, "outcome_agreement": sum(r["outcomes_agree"] for r in rows) / n,
        "worst_z_cosine": min(r["z_cosine"] for r in rows),
        "worst_z_rel_norm_diff": max(r["z_rel_norm_diff"] for r in rows),
        "worst_delta_rel_frobenius": max(dw.values()),
        "worst_nll_diff": max((r["max_nll_diff"] for r in rows if r["max_nll_diff"] is not None), default=None),
        "seconds_per_fact": {"ours": {k: v / n for k, v in ours_s.items()},
                             "reference": {k: v / n for k, v in ref_s.items()}}}}


def write_table(out: Path) -> str:
    """docs/measurements/parity/README.md from every <method>_<dataset>.json there."""
    lines = ["# Parity with the reference implementations, record by record", "",
             "Written by `benchmarks/parity/harness.py` (do not edit). One row per method and dataset: records "
             "compared, the share whose ES / GS / LS outcomes are all identical, the worst target-vector cosine, the "
             "worst relative Frobenius difference of ΔW over the edited matrices, the worst difference of a probe's "
             "mean per-token NLL (nats), and seconds per fact on each side (targets + update + evaluation), measured "
             "in the same run on the same host.", "",
             "| method | dataset | reference | records | outcomes identical | worst z cosine | worst ΔW rel. diff | "
             "worst NLL diff | s/fact ours | s/fact reference | disagreements |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in sorted(out.glob("*_*.json")):
        d = json.loads(f.read_text())
        s = d["summary"]
        tot = {k: sum(v.values()) for k, v in s["seconds_per_fact"].items()}
        lines.append(f"| {d['method']} | {d['dataset']} | {d['reference']['repository']}@{d['reference']['commit'][:7]}"
                     f" | {s['records']} | {100 * s['outcome_agreement']:.0f} % | {s['worst_z_cosine']:.6f} | "
                     f"{s['worst_delta_rel_frobenius']:.2e} | "
                     f"{'–' if s['worst_nll_diff'] is None else format(s['worst_nll_diff'], '.2e')} | {tot['ours']:.1f} | "
                     f"{tot['reference']:.1f} | {d.get('explanation', '')} |")
    text = "\n".join(lines) + "\n"
    (out / "README.md").write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("method", choices=sorted(REFERENCES))
    ap.add_argument("--dataset", default="counterfact", choices=("counterfact", "zsre"))
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--reference", default=None, help="a checkout of the reference repository (default: clone)")
    ap.add_argument("--mirror", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/parity")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--explain", default="", help="the cause of any disagreement, for the summary table")
    ap.add_argument("--python", default=str(ROOT / ".venv-parity" / "bin" / "python"),
                    help="the reference's interpreter (make parity-env builds .venv-parity)")
    a = ap.parse_args()
    if a.n < 1:
        raise SystemExit(f"error: --n: expected an integer >= 1, got {a.n}")
    if not Path(a.python).exists():
        raise SystemExit(f"error: --python: {a.python} does not exist; build the reference's environment with "
                         "`make parity-env`")
    from jeepkit.params import load_params
    from jeepkit.runners.workspace import ensure_inputs, working_directory, workspace_params

    params = workspace_params(load_params(ROOT / "params.yaml"), None, {
        "data.source": "mirror", "data.mirror": str(Path(a.mirror).resolve()), "edit.n_edits": a.n,
        "edit.batch_size": a.n})
    work = Path(a.work).resolve()
    ref_dir = checkout(a.method, a.reference, work)
    with working_directory(work / "package"):
        ensure_inputs(params, [a.dataset])
        mine = ours(params, a.method, a.dataset, a.n, a.threads)
    ref = reference(a.method, mine, ref_dir, work, a.threads, a.python)
    result = compare(mine, ref)
    url, commit, patch, _ = REFERENCES[a.method]
    doc = {"method": a.method, "dataset": a.dataset, "model": mine["session"].ident,
           "reference": {"repository": url.removeprefix("https://github.com/"), "commit": commit,
                         "patch": f"benchmarks/parity/patches/{patch}", "torch": ref.get("torch")},
           "host": {"threads": a.threads, "cpu_count": os.cpu_count()}, "explanation": a.explain, **result}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.method}_{a.dataset}.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    s = result["summary"]
    print(f"{a.method} on {a.dataset}, {s['records']} records: outcomes identical {100 * s['outcome_agreement']:.0f} %, "
          f"worst z cosine {s['worst_z_cosine']:.6f}, worst ΔW rel. diff {s['worst_delta_rel_frobenius']:.2e}, "
          f"worst NLL diff {s['worst_nll_diff']}")
    for side in ("ours", "reference"):
        t = s["seconds_per_fact"][side]
        print(f"  {side:9s} s/fact: " + ", ".join(f"{k} {v:.2f}" for k, v in t.items()))
    print(write_table(out))


if __name__ == "__main__":
    main()
