"""The bundled benchmark, the mirror source on the real data, and the official download over local HTTP."""

from __future__ import annotations

import collections
import functools
import hashlib
import http.server
import json
import re
import socket
import threading
from pathlib import Path

import pytest

from jeepkit.data.bundled import build_counterfact, build_zsre
from jeepkit.data.facts import RELATIONS
from jeepkit.data.sources import MIRROR_ENV, download, drop_conflicts, resolve_dataset
from jeepkit.errors import ConfigError, InputError

SHARED = Path(__file__).parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"real benchmark subsets not found at {SHARED} (shared/data beside the project)"
)
REL = {r.relation_id: r for r in RELATIONS}
TRUTH = {(r.relation_id, s): o for r in RELATIONS for s, o in r.facts}


# ---------------------------------------------------------------- fact table and bundled benchmark

def test_fact_table_is_well_formed():
    assert len(RELATIONS) >= 8
    assert len({r.relation_id for r in RELATIONS}) == len(RELATIONS)
    assert 250 <= len(TRUTH) <= 600
    for r in RELATIONS:
        templates = (r.prompt, *r.paraphrases, r.question, *r.rephrased_questions)
        assert all(t.count("{}") == 1 for t in templates), r.relation_id
        assert len(r.paraphrases) >= 2 and len(r.rephrased_questions) >= 1
        subjects = [s for s, _ in r.facts]
        assert len(subjects) == len(set(subjects)), f"{r.relation_id} repeats a subject"
        assert len(r.objects) >= 2
        for s, o in r.facts:
            assert s.strip() == s and o.strip() == o and s and o
            assert not re.search(rf"\b{re.escape(o)}\b", s), f"{s!r} gives its answer away"
            assert "{" not in s


def test_bundled_counterfact_is_a_valid_counterfact_benchmark():
    cases = build_counterfact()
    assert len(cases) >= 200
    assert len({c.relation_id for c in cases}) >= 8
    assert len({c.case_id for c in cases}) == len(cases)
    for c in cases:
        c.validate()
        rel = REL[c.relation_id]
        assert c.kind == "counterfact" and c.source == "bundled:counterfact"
        assert c.prompt == rel.prompt
        assert c.target_true == TRUTH[(c.relation_id, c.subject)]
        assert c.target_new in rel.objects and c.target_new != c.target_true  # same type, and wrong
        assert len(c.paraphrases) == 2 and all(c.subject in p for p in c.paraphrases)
        assert len(c.locality) == 5
        same = sum(o == c.target_true for s, o in rel.facts if s != c.subject)
        answers = [lp.answer for lp in c.locality]
        # CounterFact's neighborhood: subjects sharing the true object first, then other facts.
        assert answers[: min(same, 5)] == [c.target_true] * min(same, 5)
        assert c.target_new not in answers
        for lp in c.locality:
            assert c.subject not in lp.prompt
            subject = next(s for s, o in rel.facts if s in lp.prompt and o == lp.answer)
            assert TRUTH[(c.relation_id, subject)] == lp.answer


def test_bundled_counterfact_targets_are_varied():
    cases = build_counterfact()
    per_relation = collections.defaultdict(set)
    for c in cases:
        per_relation[c.relation_id].add(c.target_new)
    assert all(len(v) >= 2 for v in per_relation.values())


def test_bundled_zsre_is_a_valid_zsre_benchmark():
    cases = build_zsre()
    assert len(cases) >= 200
    assert len({c.relation_id for c in cases}) >= 8
    for c in cases:
        c.validate()
        rel = REL[c.relation_id]
        assert c.kind == "zsre" and c.target_true is None and c.source == "bundled:zsre"
        assert c.prompt == rel.question and c.rewrite_prompt.endswith("?")
        assert c.target_new in rel.objects and c.target_new != TRUTH[(c.relation_id, c.subject)]
        assert len(c.paraphrases) == 1 and c.subject in c.paraphrases[0] and c.paraphrases[0] != c.rewrite_prompt
        (lp,) = c.locality
        assert lp.prompt.endswith("?") and c.subject not in lp.prompt
        other = [(r, s) for (r, s), o in TRUTH.items() if r != c.relation_id and o == lp.answer
                 and REL[r].question.format(s) == lp.prompt]
        assert other, f"locality question {lp.prompt!r} is not an unrelated fact with answer {lp.answer!r}"
    true_targets = build_zsre(counterfactual=False)
    assert all(c.target_new == TRUTH[(c.relation_id, c.subject)] for c in true_targets)


@pytest.mark.parametrize("build", [build_counterfact, build_zsre])
def test_bundled_is_deterministic(build):
    assert build(seed=3) == build(seed=3)
    assert build(seed=3) != build(seed=4)
    assert build(40, seed=3) == build(seed=3)[:40]
    assert len({c.relation_id for c in build(40, seed=3)}) >= 5  # a small n still mixes relations
    # A case's content depends on the seed and the fact, not on which other cases are requested.
    by_id = {c.case_id: c for c in build(seed=3)}
    assert all(by_id[c.case_id] == c for c in build(10, seed=3))


def test_resolve_bundled():
    cases, prov = resolve_dataset("counterfact", "bundled", n=250, seed=1)
    assert cases == build_counterfact(250, 1)
    assert prov["source"] == "bundled" and prov["n_cases"] == 250 and prov["seed"] == 1
    assert prov["sha256"] == resolve_dataset("counterfact", "bundled", n=250, seed=1)[1]["sha256"]
    assert prov["sha256"] != resolve_dataset("counterfact", "bundled", n=250, seed=2)[1]["sha256"]
    zcases, zprov = resolve_dataset("zsre", "bundled")
    assert zcases == build_zsre() and zprov["reader"] == "bundled.build_zsre"
    mcf, _ = resolve_dataset("mcf", "bundled")
    assert drop_conflicts(mcf)[1] == 0
    with pytest.warns(UserWarning, match="only"):
        resolve_dataset("zsre", "bundled", n=10_000)


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "wiki", "source": "bundled"}, "unknown dataset"),
    ({"name": "zsre", "source": "hub"}, "unknown data source"),
    ({"name": "zsre", "source": "bundled", "n": -1}, "n must be"),
])
def test_resolve_rejects_bad_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        resolve_dataset(**kwargs)


# ---------------------------------------------------------------- mirror

def _published_sha256(rel: str) -> str:
    sums = dict(reversed(line.split()) for line in (SHARED / "SHA256SUMS").read_text().splitlines() if line.strip())
    return sums[rel]


@needs_shared
def test_mirror_counterfact_reads_real_data():
    cases, prov = resolve_dataset("counterfact", "mirror", mirror=SHARED, n=100)
    assert len(cases) == 100 and cases[0].subject == "Danielle Darrieux"
    assert all(c.source == "mirror:counterfact-edit.json" for c in cases)
    assert prov["reader"] == "easyedit_counterfact"
    assert prov["path"] == str(SHARED / "counterfact" / "counterfact-edit.json")
    assert prov["sha256"] == _published_sha256("counterfact/counterfact-edit.json")
    assert prov["n"] == 100 and prov["n_cases"] == 100


@needs_shared
def test_mirror_zsre_and_file_override(monkeypatch):
    cases, prov = resolve_dataset("zsre", "mirror", mirror=SHARED)
    assert len(cases) == 34 and prov["reader"] == "mend_zsre" and cases[0].kind == "zsre"
    assert prov["sha256"] == _published_sha256("zsre/zsre_mend_eval-first34.json")
    monkeypatch.setenv(MIRROR_ENV, str(SHARED))  # the environment variable stands in for data.mirror
    train, tprov = resolve_dataset("zsre", "mirror", n=10, mirror_file="zsre/zsre_mend_train-1k.json")
    assert len(train) == 10 and tprov["sha256"] == _published_sha256("zsre/zsre_mend_train-1k.json")
    rome, _ = resolve_dataset("counterfact", "mirror", mirror_file=SHARED / "counterfact" / "counterfact-rome-schema-excerpt.json")
    assert [c.case_id for c in rome] == ["0", "3"] and len(rome[0].locality) == 10


@needs_shared
def test_mirror_mcf_has_no_conflicting_edits():
    cases, prov = resolve_dataset("mcf", "mirror", mirror=SHARED)
    subjects = [c.subject for c in cases]
    assert len(subjects) == len(set(subjects))
    assert 9000 < len(cases) < 10_000 and "mcf_derived" in prov
    assert len(resolve_dataset("mcf", "mirror", mirror=SHARED, n=20)[0]) == 20


@needs_shared
def test_mirror_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    with pytest.raises(ConfigError, match="no mirror directory"):
        resolve_dataset("zsre", "mirror")
    with pytest.raises(ConfigError, match="not found"):
        resolve_dataset("zsre", "mirror", mirror=tmp_path)
    with pytest.raises(InputError, match="checksum mismatch"):
        resolve_dataset("zsre", "mirror", mirror=SHARED, sha256="0" * 64)
    with pytest.raises(InputError, match="not counterfact"):
        resolve_dataset("counterfact", "mirror", mirror=SHARED, mirror_file="zsre/zsre_mend_eval-first34.json")


# ---------------------------------------------------------------- official download over a local server

ZSRE_RECORDS = [
    {"subject": s, "src": f"What is the capital of {s}?", "answers": [a], "rephrase": f"Which city is the capital of {s}?",
     "loc": "nq question: who wrote hamlet", "loc_ans": "William Shakespeare"}
    for s, a in [("France", "Paris"), ("Japan", "Tokyo"), ("Peru", "Lima")]
]


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve a small zsRE file from 127.0.0.1; yield (base url, served dir, its sha256)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "served"
    root.mkdir()
    blob = json.dumps(ZSRE_RECORDS).encode()
    (root / "zsre_mem_eval.json").write_bytes(blob)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root, hashlib.sha256(blob).hexdigest()
    finally:
        httpd.shutdown()
        httpd.server_close()


def _files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file()) if d.exists() else []


def test_official_download_with_checksum(server, tmp_path):
    base, root, digest = server
    cache = tmp_path / "cache"
    url = f"{base}/zsre_mem_eval.json"
    cases, prov = resolve_dataset("zsre", "official", cache_dir=cache, url=url, sha256=digest, n=2)
    assert [c.target_new for c in cases] == ["Paris", "Tokyo"]
    assert cases[0].locality[0].prompt == "nq question: who wrote hamlet?"
    assert prov["url"] == url and prov["sha256"] == digest and prov["sha256_pinned"] is True
    assert prov["reader"] == "mend_zsre" and cases[0].source == f"official:{Path(prov['path']).name}"
    (cached,) = _files(cache)  # the file, and no temporary left behind
    assert str(cached) == prov["path"] and not cached.name.startswith(".")
    # A second call uses the cache: it works with the server's file gone.
    (root / "zsre_mem_eval.json").unlink()
    again, prov2 = resolve_dataset("zsre", "official", cache_dir=cache, url=url, sha256=digest)
    assert len(again) == 3 and prov2["path"] == prov["path"]


def test_official_unpinned_checksum_is_recorded_with_a_warning(server, tmp_path):
    base, _, digest = server
    with pytest.warns(UserWarning, match="not pinned"):
        _, prov = resolve_dataset("zsre", "official", cache_dir=tmp_path / "c", url=f"{base}/zsre_mem_eval.json")
    assert prov["sha256"] == digest and prov["sha256_pinned"] is False


def test_official_checksum_mismatch_leaves_no_file(server, tmp_path):
    base, _, _ = server
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="checksum mismatch") as info:
        resolve_dataset("zsre", "official", cache_dir=cache, url=f"{base}/zsre_mem_eval.json", sha256="ab" * 32)
    assert info.value.field == "sha256" and "zsre_mem_eval.json" in str(info.value)
    assert _files(cache) == []


def test_stale_cache_entry_is_fetched_again(server, tmp_path):
    base, _, digest = server
    cache = tmp_path / "cache"
    url = f"{base}/zsre_mem_eval.json"
    _, prov = resolve_dataset("zsre", "official", cache_dir=cache, url=url, sha256=digest)
    Path(prov["path"]).write_text("[]")  # corrupt the cached copy
    cases, _ = resolve_dataset("zsre", "official", cache_dir=cache, url=url, sha256=digest)
    assert len(cases) == 3 and hashlib.sha256(Path(prov["path"]).read_bytes()).hexdigest() == digest


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_url_says_offline_and_how_to_use_the_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError) as info:
        resolve_dataset("counterfact", "official", cache_dir=cache, url=f"http://127.0.0.1:{_closed_port()}/counterfact.json", timeout=5)
    msg = str(info.value)
    assert "offline" in msg and "data.source: mirror" in msg and "counterfact.json" in msg
    assert _files(cache) == []


def test_http_error_is_reported(server, tmp_path):
    base, _, _ = server
    dest = tmp_path / "cache" / "x.json"
    with pytest.raises(ConfigError, match="HTTP 404"):
        download(f"{base}/missing.json", dest)
    assert _files(dest.parent) == []


def test_download_returns_the_hash(server, tmp_path):
    base, root, digest = server
    dest = tmp_path / "sub" / "f.json"
    assert download(f"{base}/zsre_mem_eval.json", dest) == digest
    assert dest.read_bytes() == (root / "zsre_mem_eval.json").read_bytes()


def test_first_download_is_recorded_in_the_lock_file_and_verified_after(server, tmp_path):
    base, _, digest = server
    lock, cache, url = tmp_path / "downloads.lock.json", tmp_path / "c", f"{base}/zsre_mem_eval.json"
    _, prov = resolve_dataset("zsre", "official", cache_dir=cache, url=url, lock_path=lock)
    assert json.loads(lock.read_text()) == {url: digest} and prov["sha256_pinned"] is True
    lock.write_text(json.dumps({url: "ab" * 32}))  # the file changed upstream (or the lock was edited)
    for f in cache.iterdir():
        f.unlink()
    with pytest.raises(InputError, match="checksum mismatch"):
        resolve_dataset("zsre", "official", cache_dir=cache, url=url, lock_path=lock)
    assert list(cache.iterdir()) == []


def test_download_that_is_not_json_is_discarded(tmp_path):
    served = tmp_path / "srv"
    served.mkdir()
    (served / "zsre.json").write_text("<html>maintenance</html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(InputError, match="malformed JSON"):
            resolve_dataset("zsre", "official", cache_dir=tmp_path / "c",
                            url=f"http://127.0.0.1:{httpd.server_address[1]}/zsre.json", lock_path=tmp_path / "l.json")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not (tmp_path / "l.json").exists() and list((tmp_path / "c").glob("*")) == []
