"""Print what each stage of a profile will cost (memory, disk, GPU-hours) before any weight is loaded."""
import argparse

from jeepkit.cli import stage_main
from jeepkit.memory import known_dims
from jeepkit.params import load_params
from jeepkit.preflight import GPUS, PAPER_HOURS, estimate, format_table
from jeepkit.profiles import apply_overrides, profile_params


def main(a: argparse.Namespace) -> None:
    params = profile_params(load_params(a.params), a.profile, a.model_key)
    if a.budget is not None:
        params = apply_overrides(params, {"run.memory_budget_gb": a.budget})
    key = params["model"]["key"]
    d = known_dims(key, params["model"].get("dtype", "float32"))
    print(f"preflight: {a.profile or a.params}, model {key} ({d.n_params / 1e9:.2f} B parameters, {d.dtype}), "
          f"GPU {a.gpu}")
    print(format_table(estimate(params, d, a.gpu), a.gpu, a.gpu_mem, d, PAPER_HOURS.get(key)))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default=None, help="profiles/<name>.yaml (default: params.yaml as is)")
    ap.add_argument("--model-key", default=None, help="the profile's per-model block, e.g. gptj")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--gpu", default="a100", choices=sorted(GPUS))
    ap.add_argument("--gpu-mem", type=float, default=None, help="GB per GPU: name the stages that do not fit")
    ap.add_argument("--budget", type=float, default=None, help="run.memory_budget_gb for the chunk sizes")
    stage_main(main)(ap.parse_args())
