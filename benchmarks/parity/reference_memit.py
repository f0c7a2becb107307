"""Runs kmeng01/memit's MEMIT and its CounterFact evaluation on injected inputs; writes what the
parity harness compares. Executed by `harness.py` in a subprocess with the patched checkout first on sys.path;
imports nothing from jeepkit, so the reference's numbers come from the reference's code alone.

Input (JSON, argv[1]): model_dir, method ("memit"), hparams (the reference's hyperparameter fields),
records (ROME-format CounterFact records) or zsre_dir and n (the reference builds its zsRE records from
zsre_mend_eval.json there with its own dataset class), prefixes (the package's context prefixes, each ending in ". "),
covariance ({module: safetensors file holding E[kkᵀ] under "cov"}), out (a directory), threads.
Output in `out`: reference.json (per record: z / v*, per-probe NLLs and outcomes; phase seconds) and
delta.safetensors (ΔW per edited weight, the weights after minus before).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(spec.get("threads", 2)))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], torch_dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    tok.pad_token = tok.eos_token  # as experiments/evaluate.py
    tok.padding_side = "right"  # the reference locates targets from the attention mask's sum
    model_name = model.config._name_or_path.replace("/", "_")
    if spec.get("zsre_dir"):  # the reference's own zsRE records, built by its dataset class from the same file
        from dsets import MENDQADataset

        records = list(MENDQADataset(spec["zsre_dir"], tok, size=spec["n"]))
    else:
        records = spec["records"]
    requests = [dict(r["requested_rewrite"], case_id=r["case_id"]) for r in records]
    timing = {"targets": 0.0, "update": 0.0, "evaluation": 0.0}
    names = [f"{m}.weight" for m in spec["covariance"]]
    before = {n: model.get_parameter(n).detach().clone() for n in names}

    if spec["method"] != "memit":
        raise SystemExit(f"error: method {spec['method']!r}: this runner drives MEMIT only so far")
    from memit import memit_main
    from memit.memit_hparams import MEMITHyperParams

    hp = MEMITHyperParams(**spec["hparams"])
    memit_main.CONTEXT_TEMPLATES_CACHE = [["{}"], [p + "{}" for p in spec["prefixes"]]]
    for module, f in spec["covariance"].items():
        memit_main.COV_CACHE[(model_name, module)] = load_file(f)["cov"].float()
    real_z = memit_main.compute_z

    def timed_z(*a, **k):
        t = time.time()
        z = real_z(*a, **k)
        timing["targets"] += time.time() - t
        return z

    memit_main.compute_z = timed_z
    t0 = time.time()
    memit_main.apply_memit_to_model(model, tok, requests, hp, cache_template=str(out / "z_{}_{}_{}.npz"))
    timing["update"] = time.time() - t0 - timing["targets"]
    z = {str(r["case_id"]): np.load(out / f"z_{hp.layers[-1]}_{hp.clamp_norm_factor}_{r['case_id']}.npz")
         ["v_star"].tolist() for r in requests}

    delta = {n: (model.get_parameter(n).detach() - before[n]).contiguous() for n in names}
    save_file(delta, str(out / "delta.safetensors"))
    if spec.get("zsre_dir"):
        from experiments.py.eval_utils_zsre import compute_rewrite_quality_zsre as quality
    else:
        from experiments.py.eval_utils_counterfact import compute_rewrite_quality_counterfact as quality

    t0 = time.time()
    per_record = []
    for r in records:
        q = quality(model, tok, r, None, None)
        per_record.append({"case_id": str(r["case_id"]), "z": z.get(str(r["case_id"])), **q})
    timing["evaluation"] = time.time() - t0
    (out / "reference.json").write_text(json.dumps({"records": per_record, "seconds": timing,
                                                    "torch": torch.__version__}))


if __name__ == "__main__":
    main(sys.argv[1])
