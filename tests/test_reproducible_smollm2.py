"""Byte-identical re-runs on the real model (slow): the prepared SmolLM2, its statistics and a ROME edit
stage (whose case-study text is the most fragile output) give the same bytes when run twice."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SHARED.exists(), reason=f"{SHARED} not found")]


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _stage(cwd: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JEEPKIT_", "DVC_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    r = subprocess.run([sys.executable, str(ROOT / "stages" / args[0]), *args[1:]], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]


def test_prepare_stats_and_rome_stage_are_byte_identical(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(source="mirror", mirror=str(SHARED), n_records=4, datasets=["counterfact"])
    params["stats"].update(corpus=f"file:{SHARED / 'wikitext' / 'wiki.test.raw'}", n_samples=40, max_length=64,
                           layers=[6])
    params["stats"]["modules"] = ["mlp_out"]
    params["edit"].update(methods=["rome"], n_edits=2, batch_size=2)
    params.pop("scaling")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    outs = []
    for _ in range(2):
        for d in ("data", "metrics"):
            shutil.rmtree(tmp_path / d, ignore_errors=True)
        _stage(tmp_path, "build_data.py", "--dataset", "counterfact")
        _stage(tmp_path, "prepare_model.py")
        _stage(tmp_path, "stats.py")
        _stage(tmp_path, "edit_eval.py", "--method", "rome", "--dataset", "counterfact")
        outs.append({d: _tree(tmp_path / p) for d, p in (("model", "data/models/smollm2"), ("stats", "data/stats"),
                                                         ("run", "data/runs"), ("metrics", "metrics"))})
    for part in outs[0]:
        assert outs[0][part].keys() == outs[1][part].keys(), part
        differ = [k for k in outs[0][part] if outs[0][part][k] != outs[1][part][k]]
        assert not differ, (part, differ)
    assert any(k.endswith("model.safetensors") for k in outs[0]["model"])


def test_prepared_tokenizer_does_not_depend_on_the_shell(tmp_path):
    """transformers writes `local_files_only` (from HF_HUB_OFFLINE when not given) into tokenizer_config.json:
    the prepared model once differed by that one byte between `make repro` and a bare `dvc repro`."""
    code = ("import sys; from pathlib import Path; from jeepkit.models import embedded_gguf_path, embedded_tokenizer;"
            "embedded_tokenizer(embedded_gguf_path()).save_pretrained(sys.argv[1])")
    saved = {}
    for offline in ("1", None):
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        if offline:
            env.update(HF_HUB_OFFLINE=offline, TRANSFORMERS_OFFLINE=offline)
        out = tmp_path / f"offline={offline}"
        r = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        saved[offline] = _tree(out)
    assert saved["1"] == saved[None]
