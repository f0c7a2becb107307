"""The dataset contract: every registered dataset has a known case kind, a way to be built, and a kind whose
probe sets are all scorable and summarised. Fails when an entry declares what the code cannot deliver."""

from __future__ import annotations

import dataclasses

import pytest

from jeepkit.data.kinds import KINDS, SCORINGS, ProbeSet
from jeepkit.data.registry import DATASETS, dataset_spec
from jeepkit.data.schema import EditCase
from jeepkit.errors import ConfigError
from jeepkit.evaluation import SCORERS
from jeepkit.metrics import record_scores

CASE_FIELDS = {f.name for f in dataclasses.fields(EditCase)} | {"rewrite"}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_probe_set_reads_a_case_field_and_has_a_scorer(name):
    kind = KINDS[name]
    assert kind.probe_sets and set(kind.score_of) <= set(kind.metrics)
    for ps in kind.probe_sets:
        assert ps.field in CASE_FIELDS, f"{name}.{ps.metric}: no EditCase field {ps.field!r}"
        if not ps.scoring.generated:
            assert ps.scorer in SCORERS, f"{name}.{ps.metric}: scorer {ps.scorer!r} is not implemented"
    assert not kind.fluency or any(ps.scoring.generated for ps in kind.probe_sets)


def test_every_teacher_forced_scoring_is_implemented_and_vice_versa():
    assert {k for k, s in SCORINGS.items() if not s.generated} == set(SCORERS)
    with pytest.raises(KeyError, match="unknown scorer"):
        ProbeSet("rewrite", "ES", "new_beats_tru")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_builds_offline_into_cases_its_kind_can_score(name):
    spec = DATASETS[name]
    assert spec.kind in KINDS and (spec.bundled is not None or spec.mirror_file is not None
                                   or spec.official_url is not None)
    assert spec.official_url is None or spec.official_url.startswith("https://")
    if spec.bundled is None:
        return
    cases = spec.bundled(3, 0)
    kind = KINDS[spec.kind]
    assert len(cases) == 3 and {c.kind for c in cases} == {spec.kind}
    for c in cases:
        assert c.target_true is not None or not kind.needs_true
        assert c.portability or not kind.needs_portability
        assert c.locality or not kind.needs_locality
        # a result shaped as evaluation writes it yields a value for every declared metric
        result = {"case_id": c.case_id, "kind": c.kind}
        for ps in kind.probe_sets:
            sc = ps.scoring
            if sc.generated:
                result["fluency"] = {"text": "", sc.value: 50.0}
            elif ps.field == "rewrite":
                result["rewrite"] = {sc.value: 1.0}
            else:
                result[ps.field] = [{sc.value: 0.5} for _ in getattr(c, ps.field)]
        scores = record_scores(result)
        assert set(scores) == set(kind.metrics), scores
        assert all(scores[m] is not None for m in kind.score_of), scores  # Score is defined for every case


def test_unknown_dataset_names_the_nearest():
    with pytest.raises(ConfigError, match="did you mean 'counterfact'"):
        dataset_spec("counterfat")
