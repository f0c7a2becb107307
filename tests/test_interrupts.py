"""Interrupted stages under real DVC: SIGKILL during target optimisation, the delta write and the metrics
write leaves no partial output, `dvc status` reports the stage as changed, and the re-run succeeds and
writes exactly what an uninterrupted run writes. Ctrl-C exits 130 with one line and writes nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import tiny

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))
HP = {"none": {"unedited": True},
      "memit": {"layers": [1, 2], "clamp": 4.0, "lambda": 10.0, "lr": 0.5, "steps": 4, "weight_decay": 0.5,
                "kl_factor": 0.0625, "stop_loss": 0.05, "target_batch": 1}}
RUN = "data/runs/main/memit/counterfact/s0"
METRICS = "metrics/main/memit_counterfact_s0.json"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JEEPKIT_", "DVC_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}", **extra)
    return env


def _sigint_default() -> None:
    """A test run in the background (`cmd &`, nohup, some CI runners) inherits SIGINT ignored, and Python then
    installs no KeyboardInterrupt handler; give the stage the terminal's default, as for a user at a prompt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run(cwd: Path, *cmd: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=600,
                          preexec_fn=_sigint_default)


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory, llama_tok):
    """A DVC project (no git) with one edit stage on a tiny LLaMA: 4 edits in 2 chunks."""
    root = tmp_path_factory.mktemp("dvcrepo")
    params = {"seed": 0, "data": {"source": "bundled", "datasets": ["counterfact"], "n_records": 6},
              "model": {"key": "tiny", "source": "path", "id": "tiny_model", "dtype": "float32"},
              "stats": {"corpus": "file:corpus.txt", "n_samples": 20, "max_length": 32, "layers": [1, 2],
                        "modules": ["mlp_out"]},
              "edit": {"methods": ["memit"], "n_edits": 4, "batch_size": 2, "eval_batch_size": 8},
              "hparams": {"tiny": HP}}
    tiny.write_tiny_project(root, llama_tok, params)
    for args in (["build_data.py", "--dataset", "counterfact"], ["prepare_model.py"], ["stats.py"]):
        r = _run(root, sys.executable, str(ROOT / "stages" / args[0]), *args[1:])
        assert r.returncode == 0, r.stderr
    stage = {"cmd": f"{sys.executable} {ROOT / 'stages/edit_eval.py'} --method memit --dataset counterfact --seed 0",
             "deps": ["data/datasets/counterfact.jsonl", "data/models/tiny", "data/stats/tiny"],
             "params": ["edit.n_edits", "hparams.tiny.memit"], "outs": [RUN],
             "metrics": [{METRICS: {"cache": False}}]}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"edit": stage}}))
    (root / ".dvcignore").write_text((ROOT / ".dvcignore").read_text())
    assert _run(root, DVC, "init", "--no-scm", "-q").returncode == 0
    r = _run(root, DVC, "repro", "-q", JEEPKIT_TARGET_CACHE=str(root / "cache_ref"))
    assert r.returncode == 0, r.stderr
    return root


def _outputs(root: Path) -> dict[str, bytes]:
    """The run directory's files and the metrics file (left out when absent)."""
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / RUN).rglob("*")) if p.is_file()}
    if (root / METRICS).exists():
        files[METRICS] = (root / METRICS).read_bytes()
    return files


def _leftovers(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob(".jeepkit-tmp*")]


@pytest.mark.parametrize("point", ["targets", "deltas", "metrics"])
def test_sigkill_leaves_no_partial_output_and_rerun_equals_uninterrupted(dvc_repo, point, tmp_path):
    reference = _outputs(dvc_repo)
    cache = str(tmp_path / "cache")  # a cold cache, so the kill lands in the middle of optimisation
    r = _run(dvc_repo, DVC, "repro", "-f", JEEPKIT_TARGET_CACHE=cache, JEEPKIT_FAULT=point)
    assert r.returncode != 0
    metrics = dvc_repo / METRICS
    assert not metrics.exists()  # DVC removed the old one; the killed stage wrote no new one
    run = dvc_repo / RUN
    if point in ("targets", "deltas"):
        assert not run.exists()  # the run directory appears whole or not at all
    else:
        assert sorted(p.name for p in run.iterdir()) == sorted({Path(k).parts[6] for k in reference if k != METRICS})
    if point == "targets":  # some targets were cached before the kill: the re-run must reuse them
        assert list(Path(cache).rglob("*.safetensors"))
    st = _run(dvc_repo, DVC, "status")
    assert "edit:" in st.stdout and ("deleted" in st.stdout or "modified" in st.stdout), st.stdout
    # -f: really run the command (DVC would otherwise restore the earlier run from its run-cache)
    again = _run(dvc_repo, DVC, "repro", "-f", JEEPKIT_TARGET_CACHE=cache)
    assert again.returncode == 0, again.stderr
    assert _outputs(dvc_repo) == reference
    assert _leftovers(dvc_repo) == []  # temporaries of the killed process were swept by the re-run
    assert "up to date" in _run(dvc_repo, DVC, "status").stdout


def test_failed_stage_under_dvc_says_how_to_restore_outputs(dvc_repo, tmp_path):
    reference = _outputs(dvc_repo)
    params = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    params["hparams"]["tiny"]["memit"]["layers"] = [0, 1]  # layer 0 has no statistics
    (dvc_repo / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        r = _run(dvc_repo, DVC, "repro", JEEPKIT_TARGET_CACHE=str(tmp_path / "c"))
        assert r.returncode != 0
        line = [l for l in r.stderr.splitlines() if l.startswith("error:")]
        assert len(line) == 1 and "dvc checkout edit" in line[0], r.stderr
    finally:
        params["hparams"]["tiny"]["memit"]["layers"] = [1, 2]
        (dvc_repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert not (dvc_repo / RUN).exists()
    assert _run(dvc_repo, DVC, "checkout", "edit").returncode == 0
    restored = _outputs(dvc_repo)
    assert {k: v for k, v in restored.items() if k != METRICS} == {k: v for k, v in reference.items() if k != METRICS}
    # the uncached metrics file lives in git in the real project (`git checkout -- metrics`); put it back here
    (dvc_repo / METRICS).write_bytes(reference[METRICS])
    assert "up to date" in _run(dvc_repo, DVC, "status").stdout


def test_ctrl_c_exits_130_with_one_line_and_no_output(dvc_repo, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(dvc_repo, work, ignore=shutil.ignore_patterns(".dvc", "runs", "metrics"))
    r = _run(work, sys.executable, str(ROOT / "stages/edit_eval.py"), "--method", "memit", "--dataset", "counterfact",
             JEEPKIT_TARGET_CACHE=str(tmp_path / "c"), JEEPKIT_FAULT="targets:int")
    assert r.returncode == 130, r.stderr
    assert "Traceback" not in r.stderr
    assert [l for l in r.stderr.splitlines() if l.startswith("interrupted:")]
    assert not (work / RUN).exists() and not (work / METRICS).exists() and not _leftovers(work)
