"""Token positions from character offsets, not from hand-tuned per-tokenizer rules.

The official code finds the subject's last token by tokenising prefix, subject and suffix separately
and patching SentencePiece quirks one by one. Here every position comes from the fast tokenizer's
character offsets on the exact string the model sees, which works the same for GPT-2-style BPE
(leading-space tokens, no BOS) and SentencePiece (BOS, "▁" word starts). All batches are right-padded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InputError


def _require_fast(tok) -> None:
    if not getattr(tok, "is_fast", False):
        raise TypeError("jeepkit needs a fast (Rust) tokenizer for character offsets; load it with use_fast=True")


def _encode(tok, text: str) -> tuple[list[int], list[tuple[int, int]], list[bool]]:
    enc = tok(text, return_offsets_mapping=True, return_special_tokens_mask=True, add_special_tokens=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]], [bool(s) for s in enc["special_tokens_mask"]]


@dataclass(frozen=True)
class Located:
    """A tokenised prompt, optionally followed by an answer, with the positions editors need."""

    ids: list[int]
    subject_last: int | None  # index of the token that ends the subject
    prompt_last: int  # index of the prompt's last token: its logits predict the first answer token
    answer_ids: list[int]  # the tokens " answer" occupies after the prompt (empty when no answer)

    @property
    def answer_positions(self) -> list[int]:
        """Positions whose logits predict each answer token (teacher forcing)."""
        return [self.prompt_last + j for j in range(len(self.answer_ids))]


def locate(tok, text: str, *, subject_span: tuple[int, int] | None = None, answer: str | None = None) -> Located:
    """Tokenise `text` (+ " " + answer) and find the subject's last token and the prompt's last token.

    `subject_span` is the subject's (start, end) character span inside `text`. The answer tokens are
    those that begin at or after the end of `text`, which equals what the official code gets by
    tokenising " answer" separately for GPT-2 BPE, and drops SentencePiece's stray BOS/"▁" pair.
    """
    _require_fast(tok)
    if answer is not None and not answer.strip():
        raise InputError(f"answer {answer!r} produced no tokens")
    full = text if answer is None else f"{text} {answer.strip()}"
    ids, offsets, special = _encode(tok, full)
    cut = len(text)
    prompt_idx, answer_idx = [], []
    for i, ((s, e), sp) in enumerate(zip(offsets, special)):
        if sp and e == s:
            if not answer_idx:  # BOS and other leading specials belong to the prompt
                prompt_idx.append(i)
            continue
        if answer is not None and s >= cut:
            answer_idx.append(i)
        elif answer is not None and e > cut:
            raise InputError(f"a token spans the prompt/answer boundary in {full!r}; cannot separate the answer")
        else:
            if answer_idx:
                raise InputError(f"answer tokens are not contiguous in {full!r}")
            prompt_idx.append(i)
    if not prompt_idx:
        raise InputError(f"empty prompt: {text!r}")
    if answer is not None and not answer_idx:
        raise InputError(f"answer {answer!r} produced no tokens")
    subject_last = None
    if subject_span is not None:
        s0, s1 = subject_span
        if not (0 <= s0 < s1 <= len(text)):
            raise InputError(f"subject span {subject_span} outside prompt {text!r}")
        hits = [i for i in prompt_idx if not special[i] and offsets[i][0] < s1 and offsets[i][1] > s0]
        if not hits:
            raise InputError(f"subject at characters {s0}-{s1} maps to no token in {text!r}")
        subject_last = max(hits)
    return Located(
        ids=ids[: len(prompt_idx) + len(answer_idx)],
        subject_last=subject_last,
        prompt_last=max(prompt_idx),
        answer_ids=[ids[i] for i in answer_idx],
    )


def locate_template(tok, template: str, subject: str, *, prefix: str = "", answer: str | None = None) -> Located:
    """`prefix + template.format(subject)` located, with the subject span known by construction."""
    if template.count("{}") != 1:
        raise InputError(f"template needs exactly one '{{}}': {template!r}", field="prompt")
    head, tail = template.split("{}")
    text = prefix + head + subject + tail
    start = len(prefix) + len(head)
    return locate(tok, text, subject_span=(start, start + len(subject)), answer=answer)


def pad_id(tok) -> int:
    pid = tok.pad_token_id
    if pid is None:
        pid = tok.eos_token_id if tok.eos_token_id is not None else 0
    return int(pid)


def right_pad(seqs: list[list[int]], pad: int, *, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input_ids and attention_mask on `device`: every index computed on a row stays valid.

    `device` is required: a tensor made on the default device breaks the moment the model is on a GPU.
    """
    n = max(len(s) for s in seqs)
    ids = torch.tensor([list(s) + [pad] * (n - len(s)) for s in seqs], dtype=torch.long, device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs], dtype=torch.long, device=device)
    return ids, mask


# Room left after the longest prompt for a sampled context prefix (≈10 tokens) and the answer tokens.
CONTEXT_MARGIN = 32


def context_length(model) -> int | None:
    cfg = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def check_context(tok, model, cases, *, file: str | None = None) -> None:
    """Refuse, before any work, a record whose longest prompt + answer does not fit the model's context."""
    limit = context_length(model)
    if limit is None:
        return
    for c in cases:
        answers = [c.target_new] + ([c.target_true] if c.target_true else []) + [lp.answer for lp in c.locality]
        prompts = [c.rewrite_prompt, *c.paraphrases, *(lp.prompt for lp in c.locality)]
        longest = max(len(tok(p, add_special_tokens=True)["input_ids"]) for p in prompts)
        answer = max(len(tok(" " + a, add_special_tokens=False)["input_ids"]) for a in answers)
        if longest + answer + CONTEXT_MARGIN > limit:
            raise InputError(f"a prompt of {longest} tokens (+ {answer} answer tokens and {CONTEXT_MARGIN} for a "
                             f"context prefix) exceeds the model's context of {limit} tokens",
                             file=file, record=c.case_id, field="prompt")
