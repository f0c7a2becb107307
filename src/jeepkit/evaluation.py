"""Teacher-forced evaluation of edit cases: the raw per-prompt numbers behind ES / GS / LS.

Every scored (prompt, candidate) pair becomes one sequence f"{prompt} {candidate}" located with
`tokens.locate`, so the candidate's tokens are exactly those the model sees after the prompt (no
per-tokenizer BOS/space hacks). Pairs from many cases are batched together (right-padded, longest
first to waste little padding) and the LM head is applied only at the answer positions
(`forward.logits_at`). From those logits one pass gives both numbers the paper uses:

* CounterFact / MCF (spec §7.2): the mean per-token NLL of a candidate; ES/GS succeed when
  NLL(target_new) < NLL(target_true), LS when NLL(locality answer) < NLL(target_new).
* zsRE (spec §7.3, LLaMA form): per-token argmax correctness of the target under teacher forcing.

Aggregation into table numbers lives in `jeepkit.metrics`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from collections import Counter
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

import numpy as np

import torch
from torch import nn
from tqdm.auto import tqdm

from .data.kinds import KINDS
from .data.schema import EditCase, Probe
from .device import CPU, input_device
from .errors import InputError, OptimisationError
from .forward import grouped_kv_attention, logits_at
from .free_generation import SAMPLING, sampled_texts
from .tokens import locate, pad_id, right_pad

# (input_ids, attention_mask, rows, cols) -> logits (len(rows) x vocab) at those positions.
LogitsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class _Query:
    """One teacher-forced sequence and where its answer tokens are scored."""

    case: int
    case_id: str
    slot: tuple  # (role, prompt index, which candidate)
    ids: list[int]
    cols: list[int]
    targets: list[int]


def _device(model: nn.Module | None) -> torch.device:
    """Where inputs go (the embedding's device); the CPU when logits come from a test's logits_fn."""
    return CPU if model is None else input_device(model)


@contextlib.contextmanager
def _eval_mode(model: nn.Module | None) -> Iterator[None]:
    """Evaluate without dropout, then give the model back in the mode it came in (on the CPU, grouped-query
    attention without copied key/value heads: bit-equal, faster)."""
    if model is None:
        yield
        return
    was_training = model.training
    model.eval()
    try:
        with grouped_kv_attention(model):
            yield
    finally:
        model.train(was_training)


def _query(tok, case_idx: int, case: EditCase, slot: tuple, prompt: str, answer: str) -> _Query:
    try:
        loc = locate(tok, prompt, answer=answer)
    except InputError as e:
        raise InputError(str(e), record=case.case_id, field=slot[0]) from None
    return _Query(case_idx, str(case.case_id), slot, loc.ids, loc.answer_positions, loc.answer_ids)


@dataclass(frozen=True)
class Scorer:
    """How one probe set is scored (data/kinds.py names it): which candidates each prompt is paired with,
    and how their scores become the prompt's result (data/kinds.py `SCORINGS` says which key a metric reads)."""

    candidates: Callable[[EditCase, Probe | None], list[tuple[str, str]]]  # (which, answer) per prompt
    assemble: Callable[[dict[str, "_Scored"], Any], dict[str, Any]]  # (scored candidates, reference) -> result
    needs_reference: bool = False  # scored against the unedited model's predictions


@dataclass(frozen=True)
class _Scored:
    nll: float  # mean token NLL of the candidate
    correct: list[bool]  # argmax == candidate token, per token
    pred: list[int]  # argmax token ids at the candidate's positions


def _nll_pair(got: dict[str, _Scored], winner: str, loser: str) -> dict[str, Any]:
    new, true = got["new"].nll, got["true"].nll
    return {"nll_new": new, "nll_true": true, "success": bool(got[winner].nll < got[loser].nll)}


def _acc(got: dict[str, _Scored], which: str) -> dict[str, Any]:
    correct = got[which].correct
    return {"correct": correct, "acc": sum(correct) / len(correct)}


def _agreement(got: dict[str, _Scored], reference: list[int] | None) -> dict[str, Any]:
    pred = got["true"].pred
    if reference is None:  # the unedited pass itself: these predictions are the reference
        return {"pred": pred}
    if len(reference) != len(pred):
        raise InputError(f"reference predictions cover {len(reference)} tokens, the probe {len(pred)}")
    agree = [bool(a == b) for a, b in zip(pred, reference)]
    return {"pred": pred, "agree": agree, "acc": sum(agree) / len(agree)}


SCORERS: Mapping[str, Scorer] = MappingProxyType({
    "new_beats_true": Scorer(lambda c, p: [("new", c.target_new), ("true", c.target_true)],
                             lambda got, _: _nll_pair(got, "new", "true")),
    "answer_beats_new": Scorer(lambda c, p: [("true", p.answer), ("new", c.target_new)],
                               lambda got, _: _nll_pair(got, "true", "new")),
    "new_token_acc": Scorer(lambda c, p: [("new", c.target_new)], lambda got, _: _acc(got, "new")),
    "answer_token_acc": Scorer(lambda c, p: [("true", p.answer)], lambda got, _: _acc(got, "true")),
    "agrees_with_unedited": Scorer(lambda c, p: [("true", p.answer)], _agreement, needs_reference=True),
})


def probe_prompts(case: EditCase, field: str) -> list[tuple[str, Probe | None]]:
    """(prompt, probe) for each prompt of a probe set: the rewrite prompt, paraphrases, or probes."""
    if field == "rewrite":
        return [(case.rewrite_prompt, None)]
    if field == "paraphrases":
        return [(p, None) for p in case.paraphrases]
    return [(p.prompt, p) for p in getattr(case, field)]


def _teacher_forced(case: EditCase, only_reference: bool = False):
    for ps in KINDS[case.kind].probe_sets:
        if ps.scoring.generated:
            continue
        sc = SCORERS[ps.scorer]
        if only_reference and not sc.needs_reference:
            continue
        yield ps, sc


def _queries(tok, cases: list[EditCase], only_reference: bool = False) -> list[_Query]:
    """Every (prompt, candidate) pair the case's probe sets need, tagged with its case and slot."""
    out: list[_Query] = []
    for ci, c in enumerate(cases):
        if c.kind not in KINDS:
            raise InputError(f"unknown kind {c.kind!r}", record=c.case_id, field="kind")
        if KINDS[c.kind].needs_true and c.target_true is None:
            raise InputError(f"{c.kind} case without target_true", record=c.case_id, field="target_true")
        for ps, sc in _teacher_forced(c, only_reference):
            for i, (prompt, probe) in enumerate(probe_prompts(c, ps.field)):
                for which, answer in sc.candidates(c, probe):
                    out.append(_query(tok, ci, c, (ps.field, i, which), prompt, answer))
    return out


def _shared_rows(queries: list[_Query]) -> list[tuple[list[int], list[int]]]:
    """(ids, query indices) per forward row. Causal attention: a query needs its tokens only up to its last
    scored position (the final answer token is predicted, never read), and a query whose needed tokens begin
    another's of the same prompt is scored in that one's row: a one-token candidate and its rival share one
    row. Rows in order of decreasing length (stable: deterministic)."""
    need = [q.ids[:max(q.cols) + 1] for q in queries]
    rows: list[tuple[list[int], list[int]]] = []
    by_prompt: dict[tuple, list[int]] = {}
    for qi in sorted(range(len(queries)), key=lambda i: -len(need[i])):
        q = queries[qi]
        group = by_prompt.setdefault((q.case, q.slot[0], q.slot[1]), [])
        host = next((r for r in group if rows[r][0][:len(need[qi])] == need[qi]), None)
        if host is None:
            group.append(len(rows))
            rows.append((need[qi], [qi]))
        else:
            rows[host][1].append(qi)
    return sorted(rows, key=lambda r: -len(r[0]))


def _score_queries(queries: list[_Query], logits_fn: LogitsFn, pad: int, device: torch.device,
                   batch_size: int, progress: bool) -> list[_Scored]:
    """Mean token NLL, per-token argmax correctness and argmax ids for every query, in the queries' order."""
    results: list[_Scored | None] = [None] * len(queries)
    rows = _shared_rows(queries)
    batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    for batch in tqdm(batches, desc="evaluate", unit="batch", disable=not progress):
        ids, mask = right_pad([r[0] for r in batch], pad, device=device)
        scored = [(r, qi) for r, (_, qis) in enumerate(batch) for qi in qis]
        rows_t = torch.tensor([r for r, qi in scored for _ in queries[qi].cols], dtype=torch.long, device=device)
        cols = torch.tensor([c for _, qi in scored for c in queries[qi].cols], dtype=torch.long, device=device)
        targets = [t for _, qi in scored for t in queries[qi].targets]
        # log-softmax in float32 where the logits are; only the scored numbers leave the device
        logits = logits_fn(ids, mask, rows_t, cols).float()
        tgt = torch.tensor(targets, dtype=torch.long, device=logits.device)
        logp = torch.log_softmax(logits, dim=-1)
        tok_nll = (-logp.gather(1, tgt[:, None]).squeeze(1).double()).cpu()
        argmax = logits.argmax(dim=-1)
        correct = (argmax == tgt).tolist()
        pred = argmax.tolist()
        start = 0
        for _, qi in scored:
            k = len(queries[qi].targets)
            results[qi] = _Scored(float(tok_nll[start:start + k].mean()), [bool(x) for x in correct[start:start + k]],
                                  [int(x) for x in pred[start:start + k]])
            if not math.isfinite(results[qi].nll):
                raise OptimisationError(f"case {queries[qi].case_id}: evaluation NLL is {results[qi].nll} for "
                                        f"{queries[qi].slot}; an activation overflowed: try model.dtype bfloat16 "
                                        "or float32")
            start += k
    return results  # type: ignore[return-value]


def _assemble(case: EditCase, got: dict[tuple, _Scored], reference: dict[str, Any] | None) -> dict[str, Any]:
    """One case's result: per probe set (by its field) one dict for the rewrite prompt, else a list."""
    out: dict[str, Any] = {"case_id": case.case_id, "kind": case.kind}
    for ps, sc in _teacher_forced(case):
        results = []
        for i, (_, probe) in enumerate(probe_prompts(case, ps.field)):
            cands = {which: got[(ps.field, i, which)] for which, _ in sc.candidates(case, probe)}
            ref = None
            if sc.needs_reference and reference is not None:
                ref = reference[ps.field][i]["pred"]
            r = sc.assemble(cands, ref)
            results.append(r if probe is None or probe.group is None else {**r, "group": probe.group})
        out[ps.field] = results[0] if ps.field == "rewrite" else results
    return out


def evaluate_cases(model: nn.Module | None, tok, cases: list[EditCase], batch_size: int = 16,
                   progress: bool = True, *, logits_fn: LogitsFn | None = None,
                   reference: list[dict[str, Any]] | None = None,
                   sampling: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """Raw per-prompt evaluation numbers for each case, in input order.

    `batch_size` is the number of sequences per forward pass (pairs from many cases share a batch).
    `logits_fn` replaces `forward.logits_at(model, ...)`, so tests can dictate the logits exactly;
    `model` may then be None.

    CounterFact case dict: {"case_id", "kind", "rewrite": {"nll_new", "nll_true", "success"},
    "paraphrases": [same, aligned with case.paraphrases], "locality": [{"nll_new", "nll_true",
    "success"}, aligned with case.locality]}. NLLs are mean per-token negative log-likelihoods in
    nats; for locality "nll_true" is that of the prompt's own answer (LocalityPrompt.answer) and
    success means it beats target_new. Ties count as failures (strict <).

    zsRE case dict: {"case_id", "kind", "rewrite": {"correct": [bool per target token], "acc"},
    "paraphrases": [same], "locality": [same, for the locality answer]}. Locality prompts are used
    exactly as stored: spec §7.3 scores f"{loc}? {loc_ans}", so the zsRE reader must keep the "?".

    Other kinds (data/kinds.py) give one entry per probe set the same way. Probe sets scored against
    the unedited model (KnowEdit locality) need `reference`: `reference_predictions` of the same cases on
    the unedited model. A kind with `fluency` adds "fluency": {"text", "entropy"}: the rewrite prompt's text as
    ROME's sampler makes it (`free_generation.sampled_texts`; `sampling` overrides its max_length / top_k / seed).
    Probes of a benchmark sub-set carry its name as "group".
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if not cases:
        return []
    if reference is None and needs_reference(cases):
        raise ValueError("these cases are scored against the unedited model: pass reference=reference_predictions(...)")
    if reference is not None and len(reference) != len(cases):
        raise ValueError(f"reference holds {len(reference)} cases, not {len(cases)}")
    out = _evaluate(model, tok, cases, batch_size, progress, logits_fn, reference, only_reference=False)
    gen = [i for i, c in enumerate(cases) if KINDS[c.kind].fluency]
    if gen:
        if model is None:
            raise ValueError("fluency is scored on sampled text: pass the model")
        texts = sampled_texts(model, tok, [cases[i].rewrite_prompt for i in gen], batch_size=batch_size,
                              **{**SAMPLING, **(sampling or {})})
        for i, t in zip(gen, texts):
            out[i]["fluency"] = {"text": t, "entropy": 100.0 * ngram_entropy(t)}
    return out


def needs_reference(cases: list[EditCase]) -> bool:
    """Whether any probe of these cases is scored against the unedited model."""
    return any(sc.needs_reference for c in cases for _, sc in _teacher_forced(c))


def reference_predictions(model: nn.Module | None, tok, cases: list[EditCase], batch_size: int = 16,
                          progress: bool = True, *, logits_fn: LogitsFn | None = None) -> list[dict[str, Any]]:
    """The unedited model's argmax tokens on every probe scored against it (call before editing)."""
    return _evaluate(model, tok, cases, batch_size, progress, logits_fn, None, only_reference=True)


def _evaluate(model, tok, cases, batch_size, progress, logits_fn, reference, *, only_reference: bool):
    if logits_fn is None:
        if model is None:
            raise ValueError("need a model or a logits_fn")
        logits_fn = functools.partial(logits_at, model)
    queries = _queries(tok, cases, only_reference)
    with _eval_mode(model), torch.inference_mode():
        scored = _score_queries(queries, logits_fn, pad_id(tok), _device(model), batch_size, progress)
    per_case: list[dict[tuple, _Scored]] = [{} for _ in cases]
    for q, r in zip(queries, scored):
        per_case[q.case][q.slot] = r
    if only_reference:
        return [{ps.field: [sc.assemble({w: got[(ps.field, i, w)] for w, _ in sc.candidates(c, p)}, None)
                            for i, (_, p) in enumerate(probe_prompts(c, ps.field))]
                 for ps, sc in _teacher_forced(c, True)} for c, got in zip(cases, per_case)]
    return [_assemble(c, got, None if reference is None else reference[i])
            for i, (c, got) in enumerate(zip(cases, per_case))]


_WORD = re.compile(r"\w+|[^\w\s]")


def ngram_entropy(text: str, ns: tuple[int, ...] = (2, 3), weights: tuple[float, ...] = (2 / 3, 4 / 3)) -> float:
    """Weighted bi-/tri-gram entropy (bits) of a text, MEMIT's fluency measure (survey §3.3: ×100 in tables).

    Words are split by a regular expression (runs of word characters, single punctuation marks) where the
    reference uses NLTK's word_tokenize; a text with fewer than n words has zero n-gram entropy.
    """
    words = _WORD.findall(text)
    ent = []
    for n, w in zip(ns, weights):
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        if not grams:
            ent.append(0.0)
            continue
        counts = np.array(list(Counter(grams).values()), dtype=np.float64)
        f = counts / counts.sum()
        ent.append(float(-(f * np.log2(f)).sum()) * w)
    return float(np.mean(ent))


def greedy_continuations(model: nn.Module | None, tok, prompts: list[str], max_new_tokens: int = 8,
                         *, batch_size: int = 16, logits_fn: LogitsFn | None = None) -> list[str]:
    """Greedy (argmax) continuations of each prompt, for the paper's qualitative Table 1.

    Stops a prompt at EOS. The continuation is decoded together with the prompt and the decoded
    prompt is cut off, so a SentencePiece word-start space is kept right; the result is stripped.
    No KV cache: for a handful of tokens a fresh pass per step is simplest and exactly greedy.
    """
    if logits_fn is None:
        if model is None:
            raise ValueError("need a model or a logits_fn")
        logits_fn = functools.partial(logits_at, model)
    device, pad, eos = _device(model), pad_id(tok), tok.eos_token_id
    out: list[str] = []
    with _eval_mode(model), torch.inference_mode():
        for b in range(0, len(prompts), batch_size):
            chunk = prompts[b:b + batch_size]
            starts = [locate(tok, p).ids for p in chunk]
            seqs = [list(s) for s in starts]
            live = list(range(len(seqs)))
            for _ in range(max_new_tokens):
                if not live:
                    break
                ids, mask = right_pad([seqs[i] for i in live], pad, device=device)
                rows = torch.arange(len(live), device=device)
                cols = torch.tensor([len(seqs[i]) - 1 for i in live], dtype=torch.long, device=device)
                nxt = logits_fn(ids, mask, rows, cols).argmax(-1).tolist()
                still = []
                for i, t in zip(live, nxt):
                    if eos is not None and t == eos:
                        continue
                    seqs[i].append(int(t))
                    still.append(i)
                live = still
            for s0, s in zip(starts, seqs):
                head = tok.decode(s0, skip_special_tokens=True)
                full = tok.decode(s, skip_special_tokens=True)
                text = full[len(head):] if full.startswith(head) else tok.decode(s[len(s0):], skip_special_tokens=True)
                out.append(text.strip())
    return out
