"""The bad-input corpus (tests/bad_inputs/*.yaml), one case per file, run through the real stage CLIs.

Each case mutates a scratch repository (a tiny LLaMA on disk, its data, statistics and params built
once), runs one stage, and asserts the rule every stage keeps: a non-zero exit, exactly one line
starting with "error:" that contains the case's `expect` strings, no traceback, and not one file
created or modified. Case keys: see tests/bad_inputs/README.md.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

import tiny

ROOT = Path(__file__).resolve().parents[1]
CASES = sorted((ROOT / "tests" / "bad_inputs").glob("*.yaml"))
TINY_HP = {
    "none": {"unedited": True},
    "memit": {"layers": [1, 2], "clamp": 4.0, "lambda": 10.0, "lr": 0.5, "steps": 4, "weight_decay": 0.5,
              "kl_factor": 0.0625, "stop_loss": 0.05},
    "jeep": {"layers_low": [1], "layers_high": [3], "clamp_low": 4.0, "clamp_high": 2.0, "lambda_low": 10.0,
             "lambda_high": 10.0, "weight_decay_low": 0.5, "weight_decay_high": 0.5, "kl_factor_low": 0.0625,
             "lr": 0.5, "steps": 4, "min_prob": 0.9, "high_anchor": "attn_as_released", "variant": "full"},
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JEEPKIT_", "DVC_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    return env


@pytest.fixture(scope="session")
def base_repo(tmp_path_factory, llama_tok):
    """data/, model, statistics and params.yaml of a tiny project, built with the stage CLIs."""
    root = tmp_path_factory.mktemp("bad_base")
    params = {
        "profile": "test", "seed": 0, "seeds": [0],
        "data": {"source": "bundled", "datasets": ["counterfact", "zsre"], "n_records": 6},
        "model": {"key": "tiny", "source": "path", "id": "tiny_model", "dtype": "float32"},
        "stats": {"corpus": "file:corpus.txt", "n_samples": 20, "max_length": 32, "seed": 1,
                  "layers": [1, 2, 3], "modules": ["mlp_out"]},
        "edit": {"methods": ["none", "memit", "jeep"], "n_edits": 2, "batch_size": 2, "eval_batch_size": 8},
        "ablation": {"dataset": "counterfact", "variants": ["wo_low"]},
        "hparams": {"tiny": TINY_HP},
    }
    tiny.write_tiny_project(root, llama_tok, params)
    for args in (["build_data.py", "--dataset", "counterfact"], ["build_data.py", "--dataset", "zsre"],
                 ["prepare_model.py"], ["stats.py"]):
        r = subprocess.run([sys.executable, str(ROOT / "stages" / args[0]), *args[1:]], cwd=root, env=_env(),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
    return root


class _Server:
    def __init__(self, root: Path):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *a, **k: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _set(d: dict, dotted: str, value) -> None:
    *head, last = dotted.split(".")
    for h in head:
        d = d.setdefault(h, {})
    d[last] = value


def _fill(obj, server: str):
    if isinstance(obj, str):
        return obj.replace("{server}", server)
    if isinstance(obj, dict):
        return {k: _fill(v, server) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fill(v, server) for v in obj]
    return obj


def _mutate(root: Path, case: dict, server: str) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    for dotted, value in _fill(case.get("params") or {}, server).items():
        _set(params, dotted, value)
    if "mirror" in case or "mirror_raw" in case:
        _set(params, "data.source", "mirror")
        _set(params, "data.mirror", "mirror")
        f = root / "mirror" / case.get("mirror_file", "counterfact/counterfact-edit.json")
        f.parent.mkdir(parents=True, exist_ok=True)
        text = case["mirror_raw"] if "mirror_raw" in case else json.dumps(case["mirror"], ensure_ascii=False)
        f.write_bytes(text.encode(case.get("mirror_encoding", "utf-8")))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if "params_raw" in case:
        (root / "params.yaml").write_bytes(case["params_raw"].encode(case.get("params_encoding", "utf-8")))
    if "profile" in case:
        (root / "bad_profile.yaml").write_text(yaml.safe_dump({"overrides": case["profile"]}))
    data = root / "data" / "datasets" / "counterfact.jsonl"
    if "dataset_set" in case:
        rows = [json.loads(l) for l in data.read_text().splitlines() if l.strip()]
        for edit in case["dataset_set"]:
            rows[edit.get("index", 0)][edit["field"]] = edit["value"]
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    if case.get("dataset_duplicate"):
        first = data.read_text().splitlines()[0]
        data.write_text(data.read_text() + first + "\n")
    if "dataset_raw" in case:
        data.write_text(case["dataset_raw"])
    for pattern, size in (case.get("truncate") or {}).items():
        for f in root.glob(pattern):
            f.write_bytes(f.read_bytes()[:size])
    for pattern in case.get("delete") or []:
        for f in root.glob(pattern):
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    for pattern, shape in (case.get("write_covariance") or {}).items():
        import torch
        from safetensors.torch import save_file

        for f in root.glob(pattern):
            save_file({"mom2": torch.eye(shape[0], shape[1])}, str(f))
    for name, factor in (case.get("scale_parameter") or {}).items():
        from safetensors.torch import load_file, save_file

        f = root / "tiny_model" / "model.safetensors"
        tensors = load_file(str(f))
        tensors[name] = tensors[name] * float(factor)
        save_file(tensors, str(f), metadata={"format": "pt"})
    for key, value in (case.get("model_card") or {}).items():
        f = root / "data" / "models" / "tiny" / "model_card.json"
        card = json.loads(f.read_text())
        card[key] = value
        f.write_text(json.dumps(card))
    if "sidecar_model" in case:
        for f in root.glob("data/stats/tiny/*/sidecar.json"):
            side = json.loads(f.read_text())
            side["model"] = case["sidecar_model"]
            f.write_text(json.dumps(side))


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file with its size and mtime, every directory (a directory's own mtime only says a temporary
    came and went, which is allowed)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else "dir"
            for p in root.rglob("*")}


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_bad_input(path, base_repo, tmp_path):
    case = yaml.safe_load(path.read_text())
    if case.get("needs_no_cuda"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("the case is about a machine without CUDA")
    root = tmp_path / "repo"
    shutil.copytree(base_repo, root)
    served = tmp_path / "served"
    served.mkdir()
    for name, text in (case.get("serve") or {}).items():
        (served / name).write_text(text)
    server = _Server(served)
    try:
        _mutate(root, case, server.url)
        before = _listing(root)
        r = subprocess.run([sys.executable, str(ROOT / "stages" / case["stage"]), *map(str, case.get("args", []))],
                           cwd=root, env=_env(), capture_output=True, text=True, timeout=case.get("timeout", 300))
    finally:
        server.close()
    errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert r.returncode == case.get("rc", 2), f"rc {r.returncode}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(errors) == 1, r.stderr[-3000:]
    for s in case["expect"]:
        assert s in errors[0], f"{s!r} not in {errors[0]!r}"
    after = _listing(root)
    assert after == before, {k for k in set(after) | set(before) if after.get(k) != before.get(k)}
    print(f"{path.stem}: {errors[0]}")
