"""The dataset contract: every dataset the pipeline can build, where it comes from and how it is scored.

A `DatasetSpec` names the case kind its records have (data/kinds.py: the probe sets and metrics), the
bundled builder that makes it offline, the file of a mirror laid out like shared/data, the official
download and the paper table it is compared with. Stages, sources and the dry run read only this
table; adding a dataset is one entry here (plus its reader in readers.py when it has a new format).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

from ..errors import ConfigError, did_you_mean
from .bundled import build_counterfact, build_knowedit, build_zsre
from .kinds import KINDS
from .schema import EditCase

KNOWEDIT_HUB = "https://huggingface.co/datasets/zjunlp/KnowEdit/resolve/main/benchmark"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    label: str  # as tables print it
    kind: str  # the case kind its records have (data.kinds.KINDS)
    bundled: Callable[[int | None, int], list[EditCase]] | None  # (n, seed) -> cases, offline
    mirror_file: str | None  # path inside a directory laid out like shared/data
    official_url: str | None
    official_sha256: str | None = None  # None: the first download's hash is recorded in downloads.lock.json
    derive_from_mirror: str | None = None  # "drop_conflicts": MCF is CounterFact without conflicting edits
    paper_table: str | None = None  # the table of the JEEP paper it is compared with

    def __post_init__(self):
        if self.kind not in KINDS:
            raise TypeError(f"dataset {self.name!r}: kind {self.kind!r} is not one of {sorted(KINDS)}")


DATASETS: Mapping[str, DatasetSpec] = MappingProxyType({d.name: d for d in (
    DatasetSpec("counterfact", "CounterFact", "counterfact", build_counterfact, "counterfact/counterfact-edit.json",
                "https://rome.baulab.info/data/dsets/counterfact.json", paper_table="table3"),
    # One fact per (subject, relation) in the bundled table: already conflict-free, so it serves as MCF too.
    DatasetSpec("mcf", "Multi-CounterFact", "counterfact", build_counterfact, "counterfact/counterfact-edit.json",
                "https://rome.baulab.info/data/dsets/multi_counterfact.json", derive_from_mirror="drop_conflicts",
                paper_table="table3"),
    DatasetSpec("zsre", "zsRE", "zsre", build_zsre, "zsre/zsre_mend_eval-first34.json",
                "https://rome.baulab.info/data/dsets/zsre_mem_eval.json", paper_table="table2"),
    # KnowEdit (survey 003 §3.2, zjunlp/KnowEdit on the Hub). The bundled builder makes WikiData_counterfact-like
    # cases from the fact table; nothing bundled resembles ZsRE or WikiData_recent, so those two have no bundled
    # cases (a mirror file via data.files.<name>, or the official file). The mirror has no KnowEdit file.
    DatasetSpec("wiki_counterfact", "WikiData_counterfact", "knowedit", build_knowedit, None,
                f"{KNOWEDIT_HUB}/wiki_counterfact/test_cf.json"),
    DatasetSpec("knowedit_zsre", "ZsRE (KnowEdit)", "knowedit", None, None,
                f"{KNOWEDIT_HUB}/ZsRE/ZsRE-test-all.json"),
    DatasetSpec("wiki_recent", "WikiData_recent", "knowedit", None, None,
                f"{KNOWEDIT_HUB}/wiki_recent/recent_test.json"),
)})


def dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}{did_you_mean(name, DATASETS)}")
    return DATASETS[name]
