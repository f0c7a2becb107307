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

import hashlib
import math
import re
import unicodedata
from typing import Any, Sequence

import torch
from torch import nn

from .data.schema import EditCase
from .device import input_device
from .forward import last_logits
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


def greedy(model: nn.Module, tok, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 32) -> list[str]:
    """Greedy continuations with a key/value cache (`decode` with argmax): each stripped, without its prompt."""
    return decode(model, tok, prompts, max_new_tokens, batch_size)


def _row_seed(seed: int, prompt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()[:8], "little") >> 1


@torch.no_grad()
def decode(model: nn.Module, tok, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 32, *,
           top_k: int = 0, seed: int = 0, max_length: int | None = None, keep_prompt: bool = False,
           stop_at_eos: bool = True) -> list[str]:
    """Continuations with a key/value cache: prompts left-padded, positions from the mask.

    Each step feeds one token per row, so n new tokens cost n single-token passes instead of n passes over
    the whole sequence. A row stops at EOS (unless `stop_at_eos` is off: MEMIT's sampler runs on to its length and
    the decoded text drops the special tokens), after `max_new_tokens`, or (when given) once prompt and
    continuation hold `max_length` tokens (MEMIT's max_out_len). `top_k` = 0 takes the argmax; `top_k` > 0 samples from the
    k most probable tokens (MEMIT's generation metrics) with one generator per prompt, seeded by (`seed`, prompt),
    so a text does not depend on the batch it ran in. The continuation is decoded with its prompt and the decoded
    prompt cut off (a word-start space stays right), then stripped; `keep_prompt` returns prompt + continuation.
    Prompts run in order of length (ties in input order), so a batch pads little; texts come back in input order.
    """
    dev, pad, eos = input_device(model), pad_id(tok), tok.eos_token_id
    was_training = model.training
    model.eval()
    encoded = [tok(p, add_special_tokens=True)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    texts: dict[int, str] = {}
    try:
        for b in range(0, len(order), batch_size):
            rows = order[b:b + batch_size]
            chunk = [prompts[i] for i in rows]
            starts = [encoded[i] for i in rows]
            out: list[str] = []
            width = max(len(s) for s in starts)
            ids = torch.tensor([[pad] * (width - len(s)) + s for s in starts], dtype=torch.long, device=dev)
            mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in starts], dtype=torch.long, device=dev)
            pos = (mask.cumsum(1) - 1).clamp_min(0)
            budget = [max_new_tokens if max_length is None else min(max_new_tokens, max(0, max_length - len(s)))
                      for s in starts]
            gens = ([torch.Generator(device=dev).manual_seed(_row_seed(seed, p)) for p in chunk] if top_k > 0
                    else None)
            new = [[] for _ in starts]
            done = torch.tensor([n == 0 for n in budget], dtype=torch.bool, device=dev)
            past, cur = None, ids
            for _ in range(max(budget, default=0)):
                if bool(done.all()):
                    break
                last, past = last_logits(model, input_ids=cur, attention_mask=mask, position_ids=pos,
                                         past_key_values=past)
                if gens is None:
                    nxt = last.argmax(-1)
                else:
                    top = last.float().topk(top_k, dim=-1)
                    probs = torch.softmax(top.values, dim=-1)
                    pick = torch.stack([torch.multinomial(probs[i], 1, generator=g)[0] for i, g in enumerate(gens)])
                    nxt = top.indices.gather(1, pick[:, None])[:, 0]
                if eos is not None and stop_at_eos:
                    done = done | (nxt == eos)
                for i, t in enumerate(nxt.tolist()):
                    if not bool(done[i]):
                        new[i].append(int(t))
                        if len(new[i]) >= budget[i]:
                            done[i] = True
                cur = nxt[:, None]
                mask = torch.cat([mask, torch.ones_like(cur)], 1)
                pos = pos[:, -1:] + 1
            for s0, s in zip(starts, new):
                head = tok.decode(s0, skip_special_tokens=True)
                full = tok.decode(s0 + s, skip_special_tokens=True)
                if keep_prompt:
                    out.append(full.strip())
                    continue
                text = full[len(head):] if full.startswith(head) else tok.decode(s, skip_special_tokens=True)
                out.append(text.strip())
            texts.update(zip(rows, out))
    finally:
        model.train(was_training)
    return [texts[i] for i in range(len(prompts))]


SAMPLING = {"max_length": 100, "top_k": 5, "seed": 0}  # ROME / MEMIT's generate_fast (params: generation)


def sampled_texts(model: nn.Module, tok, prompts: Sequence[str], *, max_length: int = SAMPLING["max_length"],
                  top_k: int = SAMPLING["top_k"], seed: int = SAMPLING["seed"], batch_size: int = 32) -> list[str]:
    """ROME / MEMIT's `generate_fast` texts: top-k samples of prompt + continuation to `max_length` tokens, not
    stopped at end-of-text (special tokens dropped), NFKD-normalised, blank lines joined. MEMIT's Fluency (GE)
    and KnowEdit's Fluency (the survey follows ROME) both read these."""
    texts = decode(model, tok, prompts, max_length, batch_size, top_k=top_k, seed=seed, max_length=max_length,
                   keep_prompt=True, stop_at_eos=False)
    return [unicodedata.normalize("NFKD", t).replace("\n\n", " ") for t in texts]


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
