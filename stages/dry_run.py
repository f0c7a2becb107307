"""Check a profile without loading weights: expand every stage and validate each method's config."""
import argparse

from jeepkit.cli import stage_main
from jeepkit.models import _is_commit as is_commit  # not a stage: importing it re-runs nothing
from jeepkit.params import load_params
from jeepkit.profiles import dry_run, profile_params


def main(a: argparse.Namespace) -> None:
    params = profile_params(load_params(a.params), a.profile, a.model_key)
    s = dry_run(params)
    print(f"profile {a.profile}: model {s['model']} ({s['depth']} layers), {s['runs']} edit runs OK")
    m = params["model"]
    if m.get("source") == "hf" and not is_commit(str(m.get("revision") or "")):
        print(f"note: model.revision {m.get('revision')!r} of {m.get('id')} is not a commit hash; prepare_model "
              "refuses it until you pin one (-S model.revision=<40-hex commit>)")

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--model-key", default=None, help="apply the profile's per-model block (e.g. gptj)")
    ap.add_argument("--params", default="params.yaml")
    stage_main(main)(ap.parse_args())
