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
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from .data.schema import EditCase
from .device import CPU, input_device
from .errors import InputError, OptimisationError
from .forward import logits_at
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
    """Evaluate without dropout, then give the model back in the mode it came in."""
    if model is None:
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _query(tok, case_idx: int, case: EditCase, slot: tuple, prompt: str, answer: str) -> _Query:
    try:
        loc = locate(tok, prompt, answer=answer)
    except InputError as e:
        raise InputError(str(e), record=case.case_id, field=slot[0]) from None
    return _Query(case_idx, str(case.case_id), slot, loc.ids, loc.answer_positions, loc.answer_ids)


def _queries(tok, cases: list[EditCase]) -> list[_Query]:
    """Every (prompt, candidate) pair the metrics need, tagged with its case and slot."""
    out: list[_Query] = []
    for ci, c in enumerate(cases):
        if c.kind == "counterfact":
            if c.target_true is None:
                raise InputError("counterfact case without target_true", record=c.case_id, field="target_true")
            prompts = [("rewrite", 0, c.rewrite_prompt)] + [("paraphrases", i, p) for i, p in enumerate(c.paraphrases)]
            for role, i, p in prompts:
                out.append(_query(tok, ci, c, (role, i, "new"), p, c.target_new))
                out.append(_query(tok, ci, c, (role, i, "true"), p, c.target_true))
            for i, lp in enumerate(c.locality):
                out.append(_query(tok, ci, c, ("locality", i, "true"), lp.prompt, lp.answer))
                out.append(_query(tok, ci, c, ("locality", i, "new"), lp.prompt, c.target_new))
        elif c.kind == "zsre":
            out.append(_query(tok, ci, c, ("rewrite", 0, "new"), c.rewrite_prompt, c.target_new))
            for i, p in enumerate(c.paraphrases):
                out.append(_query(tok, ci, c, ("paraphrases", i, "new"), p, c.target_new))
            for i, lp in enumerate(c.locality):
                out.append(_query(tok, ci, c, ("locality", i, "true"), lp.prompt, lp.answer))
        else:
            raise InputError(f"unknown kind {c.kind!r}", record=c.case_id, field="kind")
    return out


def _score_queries(queries: list[_Query], logits_fn: LogitsFn, pad: int, device: torch.device,
                   batch_size: int, progress: bool) -> list[tuple[float, list[bool]]]:
    """(mean token NLL, per-token argmax correctness) for every query, in the queries' order."""
    results: list[tuple[float, list[bool]] | None] = [None] * len(queries)
    order = sorted(range(len(queries)), key=lambda i: -len(queries[i].ids))  # stable: deterministic
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc="evaluate", unit="batch", disable=not progress):
        ids, mask = right_pad([queries[i].ids for i in batch], pad, device=device)
        rows = torch.tensor([r for r, qi in enumerate(batch) for _ in queries[qi].cols], dtype=torch.long, device=device)
        cols = torch.tensor([c for qi in batch for c in queries[qi].cols], dtype=torch.long, device=device)
        targets = [t for qi in batch for t in queries[qi].targets]
        # log-softmax in float32 where the logits are; only the scored numbers leave the device
        logits = logits_fn(ids, mask, rows, cols).float()
        tgt = torch.tensor(targets, dtype=torch.long, device=logits.device)
        logp = torch.log_softmax(logits, dim=-1)
        tok_nll = (-logp.gather(1, tgt[:, None]).squeeze(1).double()).cpu()
        correct = (logits.argmax(dim=-1) == tgt).tolist()
        start = 0
        for qi in batch:
            k = len(queries[qi].targets)
            results[qi] = (float(tok_nll[start:start + k].mean()), [bool(x) for x in correct[start:start + k]])
            if not math.isfinite(results[qi][0]):
                raise OptimisationError(f"case {queries[qi].case_id}: evaluation NLL is {results[qi][0]} for "
                                        f"{queries[qi].slot}; an activation overflowed: try model.dtype bfloat16 "
                                        "or float32")
            start += k
    return results  # type: ignore[return-value]


def _assemble(case: EditCase, got: dict[tuple, tuple[float, list[bool]]]) -> dict[str, Any]:
    """Turn one case's scored slots into its result dict (see `evaluate_cases`)."""
    if case.kind == "counterfact":
        def pair(role: str, i: int) -> dict[str, Any]:
            new, true = got[(role, i, "new")][0], got[(role, i, "true")][0]
            return {"nll_new": new, "nll_true": true, "success": bool(new < true)}

        def loc(i: int) -> dict[str, Any]:
            new, true = got[("locality", i, "new")][0], got[("locality", i, "true")][0]
            return {"nll_new": new, "nll_true": true, "success": bool(true < new)}

        return {
            "case_id": case.case_id, "kind": case.kind,
            "rewrite": pair("rewrite", 0),
            "paraphrases": [pair("paraphrases", i) for i in range(len(case.paraphrases))],
            "locality": [loc(i) for i in range(len(case.locality))],
        }

    def acc(slot: tuple) -> dict[str, Any]:
        correct = got[slot][1]
        return {"correct": correct, "acc": sum(correct) / len(correct)}

    return {
        "case_id": case.case_id, "kind": case.kind,
        "rewrite": acc(("rewrite", 0, "new")),
        "paraphrases": [acc(("paraphrases", i, "new")) for i in range(len(case.paraphrases))],
        "locality": [acc(("locality", i, "true")) for i in range(len(case.locality))],
    }


def evaluate_cases(model: nn.Module | None, tok, cases: list[EditCase], batch_size: int = 16,
                   progress: bool = True, *, logits_fn: LogitsFn | None = None) -> list[dict[str, Any]]:
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
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if not cases:
        return []
    if logits_fn is None:
        if model is None:
            raise ValueError("need a model or a logits_fn")
        logits_fn = functools.partial(logits_at, model)
    queries = _queries(tok, cases)
    with _eval_mode(model), torch.inference_mode():
        scored = _score_queries(queries, logits_fn, pad_id(tok), _device(model), batch_size, progress)
    per_case: list[dict[tuple, tuple[float, list[bool]]]] = [{} for _ in cases]
    for q, r in zip(queries, scored):
        per_case[q.case][q.slot] = r
    return [_assemble(c, got) for c, got in zip(cases, per_case)]


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
