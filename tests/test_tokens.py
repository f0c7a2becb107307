"""Token positions (spec §2.3/§2.4) on both tokenizer families: GPT-2 byte-level BPE and SentencePiece-style.

Every position is checked by decoding: the token at subject_last ends the subject, the token at
prompt_last ends the prompt, the answer tokens decode to the answer; and positions stay valid in a
right-padded batch of prompts of different lengths.
"""

from __future__ import annotations

import copy

import pytest
import torch

import tiny
from jeepkit.errors import InputError
from jeepkit.models import finish_loading
from jeepkit.tokens import locate, locate_template, pad_id, right_pad

pytestmark = pytest.mark.usefixtures("torch_one_thread")

PREFIXES = ["", "Therefore you know. ", "Because I said so, you know. ", "I think you are right. "]

# (template, subject, answer): subject in the middle / at the start, multi-token subject,
# subject followed by punctuation, digit-initial subject, multi-token answer.
CASES = [
    ("The mother tongue of {} is", "Danielle Darrieux", "French"),
    ("{} is a city in", "Paris", "Italy"),
    ("{}'s capital is", "Toyota", "Tokyo"),
    ("{}'s author is", "1984", "George Orwell"),
    ("The author of {} is", "1984", "George Orwell"),
    ("In {}, the capital is", "Paris", "Rome"),
]


def _text(ids, tok) -> str:
    return tok.decode(ids, skip_special_tokens=True)


def _norm(s: str) -> str:
    return " ".join(s.split())


def check_located(tok, loc, prefix: str, template: str, subject: str, answer: str | None):
    prompt = prefix + template.format(subject)
    ids = loc.ids
    # subject_last: the decoded prefix up to and including it ends with the subject ...
    upto = _text(ids[: loc.subject_last + 1], tok)
    assert upto.rstrip().endswith(subject), (upto, subject)
    # ... and it is the first such index: one token less does not contain the whole subject at that spot
    before = _text(ids[: loc.subject_last], tok)
    assert not before.rstrip().endswith(subject)
    assert _norm(before + " ").count(subject) == _norm(prefix + template.split("{}")[0]).count(subject)
    # prompt_last: the decoded ids up to it are exactly the prompt (modulo BOS and surrounding spaces)
    assert _norm(_text(ids[: loc.prompt_last + 1], tok)) == _norm(prompt)
    assert loc.prompt_last >= loc.subject_last
    if answer is None:
        assert loc.answer_ids == [] and loc.answer_positions == []
        assert loc.prompt_last == len(ids) - 1
        return
    assert loc.prompt_last == len(ids) - len(loc.answer_ids) - 1
    assert _text(loc.answer_ids, tok).strip() == answer
    assert ids[loc.prompt_last + 1:] == loc.answer_ids
    assert loc.answer_positions == [loc.prompt_last + j for j in range(len(loc.answer_ids))]
    # the ids are the joint tokenisation of "prompt answer" (what the model reads when teacher forced)
    assert ids == tok(f"{prompt} {answer}")["input_ids"]


@pytest.mark.parametrize("template,subject,answer", CASES)
@pytest.mark.parametrize("prefix", PREFIXES)
def test_locate_template_positions(any_tok, template, subject, answer, prefix):
    loc = locate_template(any_tok, template, subject, prefix=prefix, answer=answer)
    check_located(any_tok, loc, prefix, template, subject, answer)
    bare = locate_template(any_tok, template, subject, prefix=prefix)
    check_located(any_tok, bare, prefix, template, subject, None)
    # the prompt part does not depend on whether an answer follows
    assert bare.ids == loc.ids[: bare.prompt_last + 1]
    assert (bare.subject_last, bare.prompt_last) == (loc.subject_last, loc.prompt_last)


def test_bos_convention(gpt2_tok, llama_tok):
    g = locate_template(gpt2_tok, "The mother tongue of {} is", "Danielle Darrieux", answer="French")
    s = locate_template(llama_tok, "The mother tongue of {} is", "Danielle Darrieux", answer="French")
    assert g.ids[0] != gpt2_tok.bos_token_id  # GPT-2 style: no BOS
    assert s.ids[0] == llama_tok.bos_token_id == 1  # SentencePiece style: BOS counts as a position
    assert gpt2_tok.convert_ids_to_tokens(g.answer_ids) == ["ĠFrench"]
    assert llama_tok.convert_ids_to_tokens(s.answer_ids) == ["▁French"]
    # same word positions, shifted by one for the BOS
    assert (s.subject_last, s.prompt_last) == (g.subject_last + 1, g.prompt_last + 1)


def test_multi_token_subject_and_digit_subject(any_tok):
    loc = locate_template(any_tok, "The mother tongue of {} is", "Danielle Darrieux")
    first = locate_template(any_tok, "The mother tongue of {} is", "Danielle").subject_last
    assert loc.subject_last == first + 1  # "Danielle" and "Darrieux" are one token each here
    d = locate_template(any_tok, "{} is a novel", "1987")  # not a vocabulary word: several digit tokens
    toks = any_tok.convert_ids_to_tokens(d.ids[: d.subject_last + 1])
    assert len([t for t in toks if any(c.isdigit() for c in t)]) >= 2
    assert _text(d.ids[: d.subject_last + 1], any_tok).strip() == "1987"
    assert d.subject_last == len(d.ids) - 4  # then "is", "a", "novel"


def test_answer_with_leading_space_is_the_same(any_tok):
    a = locate_template(any_tok, "{} is a city in", "Paris", answer="Italy")
    b = locate_template(any_tok, "{} is a city in", "Paris", answer=" Italy")
    assert a == b


def test_positions_in_right_padded_batch(any_tok):
    locs = [locate_template(any_tok, "The mother tongue of {} is", "Danielle Darrieux", prefix=p, answer="French")
            for p in PREFIXES]
    assert len({len(l.ids) for l in locs}) == len(PREFIXES)  # really different lengths
    ids, mask = right_pad([l.ids for l in locs], pad_id(any_tok), device="cpu")
    width = max(len(l.ids) for l in locs)
    assert ids.shape == mask.shape == (len(locs), width)
    for r, l in enumerate(locs):
        n = len(l.ids)
        assert ids[r, :n].tolist() == l.ids
        assert mask[r, :n].all() and not mask[r, n:].any()
        assert (ids[r, n:] == pad_id(any_tok)).all()
        row = ids[r].tolist()
        assert _text(row[: l.subject_last + 1], any_tok).rstrip().endswith("Danielle Darrieux")
        assert any_tok.convert_ids_to_tokens(row[l.prompt_last]).lstrip("Ġ▁") == "is"
        assert [row[c] for c in l.answer_positions] == [row[l.prompt_last]]
        assert row[l.prompt_last + 1] == l.answer_ids[0]
    # the tokenizer itself pads on the right too (finish_loading / tiny set it)
    enc = any_tok(["Paris", "The mother tongue of Danielle Darrieux is"], padding=True)
    assert enc["attention_mask"][0][0] == 1 and enc["attention_mask"][0][-1] == 0


def test_pad_ids(gpt2_tok, llama_tok):
    assert pad_id(gpt2_tok) == gpt2_tok.eos_token_id  # GPT-2: pad = eos
    assert pad_id(llama_tok) == 0  # LLaMA: pad = <unk> = 0


def test_finish_loading_forces_right_padding(tiny_model):
    model, tok, _ = tiny_model
    left = copy.deepcopy(tok)
    left.padding_side = "left"
    _, tok2, arch = finish_loading(model, left)
    assert tok2.padding_side == "right"
    assert arch.n_layers == 4 and arch.hidden_size == 64


def test_token_straddling_subject_end(llama_tok):
    """A piece like "▁Toyota's" crosses the subject's end: subject_last is the token holding its last character."""
    tok = tiny.llama_style_tokenizer(split_punctuation=False)
    loc = locate_template(tok, "{}'s capital is", "Toyota")
    pieces = tok.convert_ids_to_tokens(loc.ids)
    assert "▁Toyota's" in pieces  # the merge exists in this tokenizer
    assert pieces[loc.subject_last] == "▁Toyota's"
    assert loc.prompt_last == len(loc.ids) - 1
    # with punctuation split (real SentencePiece splits by script) the subject ends on a boundary
    loc2 = locate_template(llama_tok, "{}'s capital is", "Toyota")
    assert llama_tok.convert_ids_to_tokens(loc2.ids)[loc2.subject_last] == "▁Toyota"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("template", ["The mother tongue is", "{} and {} are", "{0} is"])
def test_template_needs_exactly_one_placeholder(any_tok, template):
    with pytest.raises(InputError, match="template"):
        locate_template(any_tok, template, "Paris")


def test_subject_span_outside_prompt(any_tok):
    with pytest.raises(InputError, match="outside"):
        locate(any_tok, "Paris is", subject_span=(3, 40))
    with pytest.raises(InputError):
        locate(any_tok, "Paris is", subject_span=(4, 4))


def test_slow_tokenizer_rejected():
    class Slow:
        is_fast = False

    with pytest.raises(TypeError, match="fast"):
        locate(Slow(), "Paris is")


@pytest.mark.parametrize("answer", ["", "  "])
def test_blank_answer_rejected(any_tok, answer):
    with pytest.raises(InputError, match="no tokens"):
        locate_template(any_tok, "{} is", "Paris", answer=answer)
