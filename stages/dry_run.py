"""Check a profile without loading weights: expand every stage and validate each method's config."""
import argparse

import yaml

from jeepkit.params import load_params
from jeepkit.cli import stage_main
from jeepkit.profiles import apply_overrides, dry_run, load_profile


def main(a: argparse.Namespace) -> None:
    params = load_params(a.params)
    prof = load_profile(a.profile)
    params = apply_overrides(params, prof["overrides"])
    if a.model_key and a.model_key in prof:
        params = apply_overrides(params, prof[a.model_key])
    elif a.model_key:
        params = apply_overrides(params, {"model.key": a.model_key})
    s = dry_run(params)
    print(f"profile {a.profile}: model {s['model']} ({s['depth']} layers), {s['runs']} edit runs OK")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--model-key", default=None, help="apply the profile's per-model block (e.g. gptj)")
    ap.add_argument("--params", default="params.yaml")
    stage_main(main)(ap.parse_args())
