"""Free-generation scoring (issue 14): the cached greedy decoder equals plain greedy decoding, and the
match rules and summary are checked on a scripted model whose continuations are known."""

from __future__ import annotations

import pytest
import torch

from jeepkit.data.schema import EditCase, LocalityPrompt
from jeepkit.evaluation import greedy_continuations
from jeepkit.free_generation import greedy, matches, score_cases, summarise

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_cached_greedy_equals_uncached_greedy(tiny_llama):
    model, tok, _ = tiny_llama
    prompts = ["The mother tongue of Danielle Darrieux is", "Paris is the capital of", "A", "Barack Obama was born in"]
    assert greedy(model, tok, prompts, 6, batch_size=3) == greedy_continuations(model, tok, prompts, 6, batch_size=1)


def test_last_position_logits_equal_those_of_the_whole_pass(tiny_llama):
    """Free generation projects only each row's last position through the LM head; the numbers are those of
    the full forward pass (to float rounding), with a left-padded batch and its position ids."""
    from jeepkit.forward import last_logits

    model, tok, _ = tiny_llama
    ids = torch.tensor([[0, 0, 5, 9, 13], [7, 3, 8, 2, 11]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    pos = (mask.cumsum(1) - 1).clamp_min(0)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
        last, past = last_logits(model, input_ids=ids, attention_mask=mask, position_ids=pos)
    assert last.shape == full.shape and past is not None
    torch.testing.assert_close(last, full, rtol=1e-5, atol=1e-5)


def test_match_rules():
    assert matches("  English, and French", "english") == {"exact": True, "contains": True}
    assert matches("French and English", "English") == {"exact": False, "contains": True}
    assert matches("Eng", "English") == {"exact": False, "contains": False}
    assert matches("anything", " ") == {"exact": False, "contains": False}


class Scripted(torch.nn.Module):
    """A 'model' whose next token depends only on the last one: a table of successors (greedy = a chain)."""

    def __init__(self, vocab: int, successor: dict[int, int]):
        super().__init__()
        self.vocab, self.successor = vocab, successor
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        logits = torch.full((*input_ids.shape, self.vocab), -1e4)
        for b in range(input_ids.shape[0]):
            for t in range(input_ids.shape[1]):
                logits[b, t, self.successor.get(int(input_ids[b, t]), 0)] = 0.0
        return type("Out", (), {"logits": logits, "past_key_values": None})()


def test_scores_on_a_scripted_model(llama_tok):
    tok = llama_tok
    ids = {w: tok(" " + w, add_special_tokens=False)["input_ids"] for w in ("English", "French", "Paris", "is", "in")}
    assert all(len(v) == 1 for v in ids.values()), ids
    E, F, P, IS, IN = (ids[w][0] for w in ("English", "French", "Paris", "is", "in"))
    model = Scripted(len(tok), {IS: E, E: F, IN: P, P: P})  # "... is" → English French French ...; "... in" → Paris
    case = EditCase("c1", "counterfact", "{} speaks, and it is", "Danielle", "English", "French",
                    paraphrases=("Her language is", "She was born in"),
                    locality=(LocalityPrompt("Pierre lives in", "Paris"), LocalityPrompt("Pierre's tongue is", "French")))
    per = score_cases(model, tok, [case], max_new_tokens=3)
    assert per[0]["rewrite"]["text"].startswith("English") and per[0]["rewrite"]["exact"]
    assert [p["exact"] for p in per[0]["paraphrases"]] == [True, False]
    assert [(p["exact"], p["contains"]) for p in per[0]["locality"]] == [(True, True), (False, True)]
    s = summarise(per)
    assert s["ES"]["exact"]["mean"] == 100.0 and s["GS"]["exact"]["mean"] == 50.0
    assert s["LS"]["exact"]["mean"] == 50.0 and s["LS"]["contains"]["mean"] == 100.0
    assert s["ES"]["exact"]["ci95"] is None and s["protocol"] == "free_generation"  # one record: no spread


def test_sampled_texts_run_past_end_of_text_as_memits_sampler(llama_tok):
    """MEMIT's generate_fast samples on to max_out_len and drops "<|endoftext|>" when decoding: a text whose chain
    hits EOS keeps going (the successor of EOS is "Paris"), while the greedy decoder of the free-generation
    scores stops there. The texts keep their prompt."""
    from jeepkit.free_generation import decode, sampled_texts

    tok = llama_tok
    E, P = (tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in ("English", "Paris"))
    eos = tok.eos_token_id
    model = Scripted(len(tok), {E: eos, eos: P, P: P})
    prompt = "Her language is English"
    n_prompt = len(tok(prompt)["input_ids"])
    stopped = decode(model, tok, [prompt], 20, top_k=1, max_length=n_prompt + 4, keep_prompt=True)
    assert stopped == [prompt]
    full = sampled_texts(model, tok, [prompt], max_length=n_prompt + 4, top_k=1)
    assert full[0].startswith(prompt) and full[0].split()[-3:] == ["Paris", "Paris", "Paris"], full
