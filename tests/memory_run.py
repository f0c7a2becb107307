"""One MEMIT edit of N requests on the tiny LLaMA in a fresh process, for tests/test_memory.py.

Prints one JSON line: the runtime's chunk sizes, the peak resident memory the edit added (the exact
ru_maxrss when the edit raised the process peak, else the highest RSS sampled every millisecond), and
writes the applied deltas to --out (safetensors) so two runs can be compared byte for byte.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))

import psutil  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import tiny  # noqa: E402
from jeepkit.editing.recipe import EditContext
from jeepkit.data.schema import EditCase  # noqa: E402
from jeepkit.editing.run import edit  # noqa: E402
from jeepkit.memory import Dims, plan  # noqa: E402
from jeepkit.runtime import Runtime  # noqa: E402
from jeepkit.stats import accumulate_second_moments  # noqa: E402

HP = {"layers": [1, 2], "clamp": 4.0, "lambda": 10.0, "lr": 0.5, "steps": 3, "weight_decay": 0.5,
      "kl_factor": 0.0625, "stop_loss": 0.0}
WORDS = ["Paris", "Tokyo", "Rome", "Berlin", "Italy", "Japan", "France", "George Orwell", "Barack Obama", "Apple"]
TARGETS = ["English", "French", "Italian", "Spanish", "Japan", "Paris"]


def cases(n: int) -> list[EditCase]:
    return [EditCase(case_id=f"m{i}", kind="counterfact", prompt="The capital of {} is",
                     subject=f"{WORDS[i % len(WORDS)]} {i}", target_new=TARGETS[i % len(TARGETS)], target_true="x")
            for i in range(n)]


class PeakRSS:
    def __init__(self):
        self.proc, self.peak, self.stop = psutil.Process(), 0, False

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.001)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--budget-gb", type=float, default=None)
    ap.add_argument("--target-requests", type=int, default=None)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    tok = tiny.llama_style_tokenizer()
    model, tok, arch = tiny.tiny_llama(tok, seed=0)
    mods = [arch.name("mlp_out", l) for l in HP["layers"]]
    cov, _ = accumulate_second_moments(model, tok, arch, mods, tiny.CORPUS, 24)
    reqs = cases(a.n)
    if a.budget_gb is not None:
        rt = plan(Dims.from_model(model), a.budget_gb * 2 ** 30, Runtime(target_requests=4096, key_rows=1 << 20))
    else:
        rt = Runtime(target_requests=a.target_requests, key_rows=6 * a.target_requests)
    rss0, max0 = psutil.Process().memory_info().rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sampler = PeakRSS()
    th = threading.Thread(target=sampler.run, daemon=True)
    th.start()
    t0 = time.time()
    res = edit(EditContext(model, tok, arch, cov.__getitem__, tiny.PREFIXES, {"id": "tiny"}, runtime=rt), "memit", reqs, HP)
    seconds = time.time() - t0
    sampler.stop = True
    th.join()
    max1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = max1 if max1 > max0 else sampler.peak
    save_file({k: v.contiguous() for k, v in res.deltas.items()}, a.out)
    print(json.dumps({"target_requests": rt.target_requests, "key_rows": rt.key_rows, "peak_added": peak - rss0,
                      "exact_peak": max1 > max0, "seconds": round(seconds, 1), "n": a.n}))


if __name__ == "__main__":
    main()
