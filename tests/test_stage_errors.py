"""Stage CLIs on bad input: one clear line naming file/record/field, exit code 2, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_stage(cwd: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "stages" / script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def write_params(cwd: Path, **over) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in over.items():
        cur = params
        *head, last = dotted.split(".")
        for h in head:
            cur = cur[h]
        cur[last] = value
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))


def test_malformed_mirror_json_names_file_and_leaves_no_output(tmp_path):
    mirror = tmp_path / "mirror" / "counterfact"
    mirror.mkdir(parents=True)
    (mirror / "counterfact-edit.json").write_text('[{"case_id": 0, "prompt": "x is",')
    write_params(tmp_path, **{"data.source": "mirror", "data.mirror": str(tmp_path / "mirror")})
    r = run_stage(tmp_path, "build_data.py", "--dataset", "counterfact")
    assert r.returncode == 2
    assert "counterfact-edit.json" in r.stderr and "malformed JSON" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "data" / "datasets" / "counterfact.jsonl").exists()


def test_missing_field_names_record_and_field(tmp_path):
    mirror = tmp_path / "mirror" / "counterfact"
    mirror.mkdir(parents=True)
    rec = {"case_id": 7, "prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
           "ground_truth": "French", "rephrase_prompt": "p", "locality_prompt": "q", "locality_ground_truth": "x"}
    (mirror / "counterfact-edit.json").write_text(json.dumps([rec]))
    write_params(tmp_path, **{"data.source": "mirror", "data.mirror": str(tmp_path / "mirror")})
    r = run_stage(tmp_path, "build_data.py", "--dataset", "counterfact")
    assert r.returncode == 2
    assert "record 7" in r.stderr and "target_new" in r.stderr


def test_unknown_method_fails_fast(tmp_path):
    write_params(tmp_path)
    r = run_stage(tmp_path, "edit_eval.py", "--method", "magic", "--dataset", "counterfact")
    assert r.returncode == 2
    assert "unknown method 'magic'" in r.stderr


def test_unknown_model_source(tmp_path):
    write_params(tmp_path, **{"model.source": "ftp"})
    r = run_stage(tmp_path, "prepare_model.py")
    assert r.returncode == 2
    assert "model.source: unknown value 'ftp'" in r.stderr
    assert not (tmp_path / "data" / "models" / "smollm2").exists()


def test_bad_override_syntax(tmp_path):
    write_params(tmp_path)
    r = run_stage(tmp_path, "edit_eval.py", "--method", "jeep", "--dataset", "counterfact", "--set", "variant")
    assert r.returncode == 2
    assert "key=value" in r.stderr
