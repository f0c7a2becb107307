"""What a case of each kind is scored on: its named probe sets, the scorer of each, and what Score means.

A dataset (data/registry.py) produces cases of one kind; evaluation, metrics and tables loop over the
probe sets the kind declares, so a new benchmark is one `CaseKind` here (and its reader), not a switch
in every module. The scorers are implemented in `jeepkit.evaluation.SCORERS`:

* `new_beats_true`: success when the mean token NLL of target_new is below that of target_true
  (CounterFact / MCF efficacy and generalisation, spec §7.2);
* `answer_beats_new`: success when the probe's own answer beats target_new (CounterFact locality);
* `new_token_acc` / `answer_token_acc`: teacher-forced argmax accuracy of target_new / of the probe's
  own answer (zsRE, spec §7.3; KnowEdit Edit Succ and Portability);
* `agrees_with_unedited`: the share of the probe's answer positions whose argmax token is the one the
  unedited model predicts there (KnowEdit Locality, survey §3.3);
* `ngram_entropy`: fluency of a greedy continuation, weighted bi-/tri-gram entropy (×100).

Every scorer names its protocol (`Scoring.protocol`), which travels with each metric into the metrics JSON,
the tables and the ledger: teacher-forced scores are not free-generation ones ("The Mirage of Model
Editing", ACL 2025). A kind with `free_generation` set is also scored by greedy decoding
(`jeepkit.free_generation`) in every batch and sequential run.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class Scoring:
    """Where a scorer's metric value sits in a case's evaluation result."""

    value: str  # the per-prompt result key the metric averages
    generated: bool = False  # scores generated text (the case result's "fluency"), not teacher-forced candidates
    scale: float = 1.0  # the metric's fraction is result[value] / scale (fluency is stored ×100)
    protocol: str = "teacher_forced_prob"  # how the model is asked: the tag every reported number carries


SCORINGS: Mapping[str, Scoring] = MappingProxyType({
    "new_beats_true": Scoring("success"), "answer_beats_new": Scoring("success"),
    "new_token_acc": Scoring("acc", protocol="teacher_forced_token_acc"),
    "answer_token_acc": Scoring("acc", protocol="teacher_forced_token_acc"),
    "agrees_with_unedited": Scoring("acc", protocol="teacher_forced_agreement"),
    "ngram_entropy": Scoring("entropy", generated=True, scale=100.0, protocol="free_generation"),
})


@dataclass(frozen=True)
class ProbeSet:
    field: str  # the EditCase field holding its prompts: rewrite | paraphrases | locality | portability
    metric: str  # the table column it feeds
    scorer: str  # a key of SCORINGS (teacher-forced ones are implemented in evaluation.SCORERS)

    def __post_init__(self):
        if self.scorer not in SCORINGS:
            raise KeyError(f"probe set {self.metric}: unknown scorer {self.scorer!r}")

    @property
    def scoring(self) -> Scoring:
        return SCORINGS[self.scorer]


@dataclass(frozen=True)
class CaseKind:
    name: str
    probe_sets: tuple[ProbeSet, ...]
    score_of: tuple[str, ...]  # Score = harmonic mean of these metrics
    needs_true: bool = False  # target_true is required (probability comparisons against it)
    needs_portability: bool = False
    needs_locality: bool = False
    fluency: bool = False  # the rewrite prompt's sampled text (ROME's generate_fast) is scored for fluency
    subtype_mean: bool = False  # a record's probe set is the mean of its sub-types' means (EasyEdit's KnowEdit)
    free_generation: bool = False  # rewrite / paraphrase / locality answers also scored by greedy decoding

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.metric for p in self.probe_sets))

    def protocol(self, metric: str) -> str:
        """The protocol tag of a metric; Score's is its components' one (joined with "+" when they differ)."""
        if metric == "Score":
            return "+".join(dict.fromkeys(self.protocol(m) for m in self.score_of))
        return self.probe(metric).scoring.protocol

    def probe(self, metric: str) -> ProbeSet:
        return next(p for p in self.probe_sets if p.metric == metric)


KINDS: Mapping[str, CaseKind] = MappingProxyType({k.name: k for k in (
    CaseKind("counterfact", (ProbeSet("rewrite", "ES", "new_beats_true"),
                             ProbeSet("paraphrases", "GS", "new_beats_true"),
                             ProbeSet("locality", "LS", "answer_beats_new")),
             score_of=("ES", "GS", "LS"), needs_true=True, free_generation=True),
    CaseKind("zsre", (ProbeSet("rewrite", "ES", "new_token_acc"),
                      ProbeSet("paraphrases", "GS", "new_token_acc"),
                      ProbeSet("locality", "LS", "answer_token_acc")),
             score_of=("ES", "GS", "LS"), free_generation=True),
    # KnowEdit (survey §3.3): Edit Succ, Portability, Locality against the unedited model, Fluency. Portability
    # and Locality average their sub-types' means per record (run_knowedit_llama2.py's eval). Score here is the
    # harmonic mean of the first three (the survey defines none). A record without portability probes is left
    # out of the Portability mean, as EasyEdit does.
    CaseKind("knowedit", (ProbeSet("rewrite", "ES", "new_token_acc"),
                          ProbeSet("paraphrases", "GS", "new_token_acc"),
                          ProbeSet("portability", "PS", "answer_token_acc"),
                          ProbeSet("locality", "LS", "agrees_with_unedited"),
                          ProbeSet("rewrite", "FL", "ngram_entropy")),
             score_of=("ES", "PS", "LS"), needs_locality=True, fluency=True,
             subtype_mean=True),
)})


def kind(name: str) -> CaseKind:
    if name not in KINDS:
        raise KeyError(name)
    return KINDS[name]
