"""Free-generation scores beside the teacher-forced ones (issue 14; "The Mirage of Model Editing", ACL 2025).

Teacher forcing compares the probabilities of given continuations, so it tells the model the answer's
length and tokens. Here the model must produce the answer itself: greedy decoding of at most
`max_new_tokens` tokens from every rewrite and paraphrase prompt (scored against the new target) and
every neighbourhood prompt (scored against that prompt's own true answer). Two matches are reported:
`exact` — the continuation begins with the answer — and `contains` — the answer occurs anywhere in it
(case-insensitive, whitespace collapsed, for both). Metric names carry the protocol: ES/GS/LS under
`free_generation`, beside the `teacher_forced_prob` (CounterFact) or `teacher_forced_token_acc` (zsRE) ones
(each kind's tags: data/kinds.py).
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import torch
from torch import nn

from .data.schema import EditCase
from .device import input_device
from .metrics import t_interval
from .tokens import pad_id

PROTOCOL = "free_generation"
DEFAULT_TOKENS = 8  # the case study's 8 new tokens (every bundled answer is 1-4 tokens); params edit.free_generation_tokens
MATCHES = ("exact", "contains")
SETS = (("ES", "rewrite"), ("GS", "paraphrases"), ("LS", "locality"))


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def matches(continuation: str, answer: str) -> dict[str, bool]:
    c, a = _norm(continuation), _norm(answer)
    return {"exact": bool(a) and c.startswith(a), "contains": bool(a) and a in c}


@torch.no_grad()
def greedy(model: nn.Module, tok, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 32) -> list[str]:
    """Greedy continuations with a key/value cache: prompts left-padded, positions from the mask.

    Each step feeds one token per row, so n new tokens cost n single-token passes instead of n passes over
    the whole sequence. A row stops at EOS. The continuation is decoded with its prompt and the decoded
    prompt cut off (a word-start space stays right), then stripped.
    """
    dev, pad, eos = input_device(model), pad_id(tok), tok.eos_token_id
    was_training = model.training
    model.eval()
    out: list[str] = []
    try:
        for b in range(0, len(prompts), batch_size):
            starts = [tok(p, add_special_tokens=True)["input_ids"] for p in prompts[b:b + batch_size]]
            width = max(len(s) for s in starts)
            ids = torch.tensor([[pad] * (width - len(s)) + s for s in starts], dtype=torch.long, device=dev)
            mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in starts], dtype=torch.long, device=dev)
            pos = (mask.cumsum(1) - 1).clamp_min(0)
            new = [[] for _ in starts]
            done = torch.zeros(len(starts), dtype=torch.bool, device=dev)
            past, cur = None, ids
            for _ in range(max_new_tokens):
                res = model(input_ids=cur, attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True)
                past = res.past_key_values
                nxt = res.logits[:, -1].argmax(-1)
                if eos is not None:
                    done = done | (nxt == eos)
                for i, t in enumerate(nxt.tolist()):
                    if not bool(done[i]):
                        new[i].append(int(t))
                if bool(done.all()):
                    break
                cur = nxt[:, None]
                mask = torch.cat([mask, torch.ones_like(cur)], 1)
                pos = pos[:, -1:] + 1
            for s0, s in zip(starts, new):
                head = tok.decode(s0, skip_special_tokens=True)
                full = tok.decode(s0 + s, skip_special_tokens=True)
                text = full[len(head):] if full.startswith(head) else tok.decode(s, skip_special_tokens=True)
                out.append(text.strip())
    finally:
        model.train(was_training)
    return out


def _probes(case: EditCase) -> list[tuple[str, str, str]]:
    """(probe set, prompt, wanted answer) of one case."""
    rows = [("rewrite", case.rewrite_prompt, case.target_new)]
    rows += [("paraphrases", p, case.target_new) for p in case.paraphrases]
    rows += [("locality", lp.prompt, lp.answer) for lp in case.locality]
    return rows


def score_cases(model: nn.Module, tok, cases: Sequence[EditCase], *, max_new_tokens: int = 8,
                batch_size: int = 32) -> list[dict[str, Any]]:
    """Per case: {"case_id", "rewrite": {"text", "exact", "contains"}, "paraphrases": [...], "locality": [...]}."""
    probes = [(ci, s, p, a) for ci, c in enumerate(cases) for s, p, a in _probes(c)]
    texts = greedy(model, tok, [p for _, _, p, _ in probes], max_new_tokens, batch_size)
    out: list[dict[str, Any]] = [{"case_id": c.case_id, "rewrite": None, "paraphrases": [], "locality": []}
                                 for c in cases]
    for (ci, s, _, a), t in zip(probes, texts):
        r = {"text": t, **matches(t, a)}
        if s == "rewrite":
            out[ci][s] = r
        else:
            out[ci][s].append(r)
    return out


def summarise(per_case: Sequence[dict[str, Any]], *, confidence: float = 0.95) -> dict[str, Any]:
    """ES / GS / LS in % per match rule: a record's score is the mean over its prompts of the set; the
    interval is the per-record t-interval (as the teacher-forced summary)."""
    out: dict[str, Any] = {"protocol": PROTOCOL}
    for metric, field in SETS:
        out[metric] = {}
        for rule in MATCHES:
            vals = []
            for c in per_case:
                got = c[field] if isinstance(c[field], list) else [c[field]]
                got = [g for g in got if g is not None]
                if got:
                    vals.append(100.0 * sum(g[rule] for g in got) / len(got))
            mean, ci = t_interval(vals, confidence) if vals else (math.nan, math.nan)
            out[metric][rule] = {"mean": None if math.isnan(mean) else round(mean, 6),
                                 "ci95": None if math.isnan(ci) else round(ci, 6), "n": len(vals)}
    return out
