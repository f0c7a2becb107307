"""Run the pipeline under a profile: `dvc exp run` with the profile's overrides as -S key=value."""
import argparse
import subprocess
import sys

from jeepkit.cli import stage_main
from jeepkit.config import validate_params
from jeepkit.params import load_params
from jeepkit.profiles import apply_overrides, override_strings, profile_overrides


def override_args(overrides: dict) -> list[str]:
    return [a for s in override_strings(overrides) for a in ("-S", s)]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("profile", help="path to profiles/<name>.yaml")
    ap.add_argument("--model-key", default=None, help="also apply the profile's block for this model key")
    ap.add_argument("--dry", action="store_true", help="print the dvc command instead of running it")
    a, extra = ap.parse_known_args()
    ov = profile_overrides(a.profile, a.model_key)
    # the same schema the stages apply, before DVC starts anything (a typo would otherwise re-run stages)
    stage_main(lambda: validate_params(apply_overrides(load_params("params.yaml"), ov)))()
    cmd = ["dvc", "exp", "run", *override_args(ov), *extra]
    if a.dry:
        print(" ".join(cmd))
        sys.exit(0)
    sys.exit(subprocess.call(cmd))
