"""Where a dataset comes from: the bundled benchmark, a local mirror, or the official download.

`resolve_dataset` returns the cases together with a provenance record (source, file or URL, SHA-256,
reader, counts) that later stages store next to their results, so every number can be traced back
to the exact input bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from ..errors import ConfigError, InputError
from ..io import atomic_path, read_json, sha256_file, stable_hash
from .readers import check_kind, parse_records, sniff_format
from .registry import DATASETS as SPECS
from .schema import EditCase

DATASETS = tuple(SPECS)
SOURCES = ("bundled", "mirror", "official")

OFFICIAL_URLS: Mapping[str, str] = MappingProxyType({k: s.official_url for k, s in SPECS.items() if s.official_url})
# None = not pinned in the code: the first download's hash is recorded in downloads.lock.json and verified after.
OFFICIAL_SHA256: Mapping[str, str | None] = MappingProxyType({k: s.official_sha256 for k, s in SPECS.items()})

# Paths inside a directory laid out like shared/data. The mirror has no MCF file: MCF is CounterFact
# without conflicting edits, so it is derived from the CounterFact file (see `drop_conflicts`).
MIRROR_FILES: Mapping[str, str | None] = MappingProxyType({k: s.mirror_file for k, s in SPECS.items()})
MIRROR_ENV = "JEEPKIT_DATA_MIRROR"
DEFAULT_CACHE_DIR = Path("data/downloads")
DOWNLOAD_LOCK = Path("downloads.lock.json")  # committed: URL -> sha256 of the first verified download

_OFFLINE_HINT = (
    "this machine seems offline or cannot reach the server. Set `data.source: mirror` and point "
    f"`data.mirror` (or the {MIRROR_ENV} environment variable) at a directory laid out like shared/data, "
    "or use `data.source: bundled`"
)


def drop_conflicts(cases: list[EditCase]) -> tuple[list[EditCase], int]:
    """Keep the first case per (subject, relation), as Multi-CounterFact does for batch edits.

    Without a relation id (EasyEdit schema) the subject alone is the key, which drops a superset of
    the true conflicts: safe for batch editing, at the cost of a few records.
    """
    seen: set[tuple[str, str | None]] = set()
    kept = []
    for c in cases:
        key = (c.subject, c.relation_id)
        if key not in seen:
            seen.add(key)
            kept.append(c)
    return kept, len(cases) - len(kept)


def download(url: str, dest: str | Path, sha256: str | None = None, *, timeout: float = 60.0,
             check: Callable[[Path], None] | None = None) -> str:
    """Stream `url` to `dest` through a temporary file, verify it, and return its SHA-256.

    Nothing is left at `dest` unless the whole file arrived, matched `sha256` (when given) and passed
    `check` (e.g. it parses), so a truncated or wrong download is never reused by a later run.
    """
    dest = Path(dest)
    if urllib.parse.urlparse(url).scheme not in ("http", "https", "file"):
        raise ConfigError(f"cannot download {url!r}: expected an http(s) or file URL")
    h = hashlib.sha256()
    made = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
    try:
        return _stream(url, dest, sha256, timeout, check, h)
    except Exception:
        for d in made:  # leave no empty cache directory behind a failed download
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _stream(url: str, dest: Path, sha256: str | None, timeout: float, check, h) -> str:
    try:
        with atomic_path(dest) as tmp, urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as f:
            for block in iter(lambda: resp.read(1 << 20), b""):
                h.update(block)
                f.write(block)
            f.flush()
            if sha256 is not None and h.hexdigest() != sha256.lower():
                raise InputError(
                    f"checksum mismatch: expected sha256 {sha256}, got {h.hexdigest()}; the download was discarded",
                    file=url, field="sha256",
                )
            if check is not None:
                try:
                    check(tmp)
                except InputError as e:
                    raise InputError(f"the download is unusable ({e.detail}); it was discarded", file=url) from None
    except urllib.error.HTTPError as e:
        raise ConfigError(f"downloading {url} failed: the server answered HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(f"could not download {url} ({reason}): {_OFFLINE_HINT}") from None
    return h.hexdigest()


def read_lock(path: str | Path = DOWNLOAD_LOCK) -> dict[str, str]:
    """URL -> sha256 recorded by the first download (a committed file, so every clone verifies against it)."""
    path = Path(path)
    if not path.exists():
        return {}
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise InputError("expected a JSON object of URL -> sha256", file=str(path))
    return data


def _record_lock(url: str, digest: str, path: str | Path = DOWNLOAD_LOCK) -> None:
    from ..io import write_json

    lock = read_lock(path)
    lock[url] = digest
    write_json(path, dict(sorted(lock.items())))
    print(f"recorded sha256 {digest} of {url} in {path}: commit it so later runs verify against it")


def _check_json(path: Path) -> None:
    read_json(path)


def _fetch_official(
    name: str, url: str | None, sha256: str | None, cache_dir: str | Path, timeout: float,
    lock_path: str | Path | None = None,
) -> tuple[Path, str, bool]:
    """Return the cached official file (downloading it if needed), its hash, and whether the hash is pinned.

    The expected hash is the explicit `sha256`, else the one in the lock file, else the built-in pin;
    with none of them, the first download's hash is recorded in the lock file and verified ever after.
    """
    url = url or OFFICIAL_URLS[name]
    expected = sha256 if sha256 is not None else (read_lock(lock_path).get(url) if lock_path else None)
    if expected is None and url == OFFICIAL_URLS[name]:
        expected = OFFICIAL_SHA256[name]
    basename = Path(urllib.parse.urlparse(url).path).name or f"{name}.json"
    # The URL hash in the name keeps two URLs with the same file name from sharing a cache entry.
    dest = Path(cache_dir) / f"{stable_hash(url, 8)}-{basename}"
    if dest.exists():
        digest = sha256_file(dest)
        if expected is None:
            _check_json(dest)
            if lock_path is None:
                return dest, digest, False
            _record_lock(url, digest, lock_path)  # downloaded before the lock file existed: record it now
            return dest, digest, True
        if digest == expected.lower():
            return dest, digest, True
        dest.unlink()  # a stale or corrupt cache entry: fetch again
    digest = download(url, dest, expected, timeout=timeout, check=_check_json)
    if expected is None:
        if lock_path is None:
            return dest, digest, False
        _record_lock(url, digest, lock_path)
    return dest, digest, True


def _mirror_path(name: str, mirror: str | Path | None, mirror_file: str | Path | None) -> Path:
    if mirror_file is None and MIRROR_FILES[name] is None:
        raise ConfigError(f"the mirror layout has no file for {name}: set data.files.{name} to one (e.g. a "
                          "KnowEdit JSON you downloaded)")
    rel = Path(mirror_file) if mirror_file is not None else Path(MIRROR_FILES[name])
    if rel.is_absolute():
        path = rel
    else:
        root = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
        if not root:
            raise ConfigError(
                f"data.source is 'mirror' but no mirror directory is set: set `data.mirror` or {MIRROR_ENV} "
                "to a directory laid out like shared/data"
            )
        path = Path(root) / rel
    if not path.is_file():
        raise ConfigError(
            f"mirror file {path} not found; the mirror directory should hold {MIRROR_FILES[name]} "
            "(or pass a file name override)"
        )
    return path


def _read_file(name: str, path: Path, source_label: str, n: int | None,
               skipped: dict[str, int] | None = None) -> tuple[list[EditCase], str]:
    data = read_json(path)
    reader = sniff_format(data, str(path))
    check_kind(reader, name, str(path))
    return parse_records(data, reader, path, source=source_label, n=n, skipped=skipped), reader


def resolve_dataset(
    name: str,
    source: str,
    mirror: str | Path | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    url: str | None = None,
    sha256: str | None = None,
    n: int | None = None,
    seed: int = 0,
    *,
    mirror_file: str | Path | None = None,
    timeout: float = 60.0,
    lock_path: str | Path | None = None,
) -> tuple[list[EditCase], dict[str, Any]]:
    """Load dataset `name` from `source`; return the cases (the first `n`) and their provenance.

    `seed` only affects the bundled benchmark. `sha256`, when given, is checked for mirror and official
    files; for the official files the hash in `lock_path` (the data stage passes downloads.lock.json),
    else a pinned constant, is used otherwise; with neither, the first download's hash is recorded there.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    if source not in SOURCES:
        raise ConfigError(f"unknown data source {source!r}; expected one of {SOURCES}")
    if n is not None and n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    prov: dict[str, Any] = {"dataset": name, "source": source, "n": n}

    spec = SPECS[name]
    if source == "bundled":
        if spec.bundled is None:
            have = [d for d, s in SPECS.items() if s.bundled is not None and s.kind == spec.kind]
            raise ConfigError(f"dataset {name!r} has no bundled cases (the bundled {spec.kind} cases are "
                              f"{', '.join(have)}'s); use source mirror (data.files.{name}) or official")
        cases, reader = spec.bundled(n, seed), f"bundled.{spec.bundled.__name__}"
        blob = json.dumps([c.to_dict() for c in cases], sort_keys=True).encode()
        prov.update(path="jeepkit/data/facts.py", seed=seed, reader=reader,
                    sha256=hashlib.sha256(blob).hexdigest(), sha256_of="generated cases")
    else:
        if source == "mirror":
            path = _mirror_path(name, mirror, mirror_file)
            digest, pinned = sha256_file(path), sha256 is not None
            if sha256 is not None and digest != sha256.lower():
                raise InputError(
                    f"checksum mismatch: expected sha256 {sha256}, got {digest}", file=str(path), field="sha256"
                )
        else:
            path, digest, pinned = _fetch_official(name, url, sha256, cache_dir, timeout, lock_path)
            prov["url"] = url or OFFICIAL_URLS[name]
            if not pinned:
                warnings.warn(
                    f"sha256 of {prov['url']} is not pinned; computed {digest}. Pin it so a changed file is noticed.",
                    stacklevel=2,
                )
        derive_mcf = spec.derive_from_mirror == "drop_conflicts" and source == "mirror"
        skipped: dict[str, int] = {}
        cases, reader = _read_file(name, path, f"{source}:{path.name}", None if derive_mcf else n, skipped)
        if reader == "knowedit":  # what the lenient reader left out, as EasyEdit's loader does
            prov["skipped"] = dict(sorted(skipped.items()))
        if derive_mcf:
            cases, dropped = drop_conflicts(cases)
            cases = cases if n is None else cases[:n]
            prov["mcf_derived"] = (
                f"CounterFact minus {dropped} records repeating an earlier (subject, relation); "
                "without relation ids, an earlier subject"
            )
        prov.update(path=str(path), sha256=digest, sha256_pinned=pinned, sha256_of="input file", reader=reader)
    prov["n_cases"] = len(cases)
    if n is not None and len(cases) < n:
        warnings.warn(f"{name} from {source} has only {len(cases)} cases; n={n} was requested", stacklevel=2)
    return cases, prov
