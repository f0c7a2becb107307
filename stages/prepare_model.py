"""DVC stage: materialise the model once (embedded GGUF -> safetensors, or a pinned hub pointer)."""
import argparse

from jeepkit.cli import stage_main
from jeepkit.runners.inputs import prepare

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    stage_main(prepare)(ap.parse_args().params)
