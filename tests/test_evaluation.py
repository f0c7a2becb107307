"""evaluate_cases on logits we dictate (hand-checked ES/GS/LS and zsRE accuracies) and on a tiny
random LLaMA (NLLs equal a plain full-logits computation)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from jeepkit.data.schema import EditCase, LocalityPrompt
from jeepkit.evaluation import evaluate_cases, greedy_continuations
from jeepkit.metrics import summarise

WORDS = (
    "<pad> <s> </s> <unk> Danielle speaks English French Her tongue is She talks Pierre natively Lyon "
    "people speak Berlin lies in Germany Obama was born New York Honolulu The birthplace of Michelle "
    "Chicago Which language does use ? What Old Latin who wrote Hamlet William Shakespeare capital "
    "France Paris"
).split()
VOCAB = {w: i for i, w in enumerate(WORDS)}
V = len(VOCAB)


def make_tok(bos: bool) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer; with `bos`, a LLaMA-like "<s>" is prepended."""
    t = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", VOCAB["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


def words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]+", text)


# ------------------------------------------------------------------ dictated logits: a bigram table
# logits at a position depend only on the token there, so every number below is computable by hand.
BIGRAM = {
    "speaks": {"English": 3, "French": 1},
    "is": {"French": 2, "English": 0, "Honolulu": 3},
    "talks": {"English": 1, "French": 0},
    "natively": {"French": 2},
    "speak": {"English": 5, "French": 1},
    "in": {"Germany": 2, "New": 1, "Honolulu": 0.5},
    "New": {"York": 4},
    "?": {"Old": 3},
    "use": {"Latin": 2, "Old": 1},
    "Old": {"English": 3},
    "William": {"Shakespeare": 1},
    "France": {"Paris": 2},
}


def bigram_table() -> torch.Tensor:
    table = torch.zeros(V, V)
    for prev, row in BIGRAM.items():
        for nxt, v in row.items():
            table[VOCAB[prev], VOCAB[nxt]] = v
    return table


def bigram_logits_fn(table: torch.Tensor, calls: list | None = None):
    def fn(ids, mask, rows, cols):
        assert mask[rows, cols].all(), "scored a padding position"
        if calls is not None:
            calls.append(ids.shape[0])
        return table[ids[rows, cols]]
    return fn


def ref_bigram_nll(table: torch.Tensor, prompt: str, answer: str) -> float:
    """Independent of tokens.locate: split on words, look the bigram log-probs up."""
    seq = [VOCAB[w] for w in words(prompt)]
    total = []
    for w in words(answer):
        logp = torch.log_softmax(table[seq[-1]].double(), -1)
        total.append(-float(logp[VOCAB[w]]))
        seq.append(VOCAB[w])
    return sum(total) / len(total)


CF1 = EditCase(
    case_id="cf1", kind="counterfact", prompt="{} speaks", subject="Danielle",
    target_new="English", target_true="French",
    paraphrases=("Her tongue is", "She talks"),
    locality=(LocalityPrompt("Pierre speaks natively", "French"), LocalityPrompt("Lyon people speak", "French"),
              LocalityPrompt("Berlin lies in", "Germany")),
)
CF2 = EditCase(
    case_id="cf2", kind="counterfact", prompt="{} was born in", subject="Obama",
    target_new="New York", target_true="Honolulu",
    paraphrases=("The birthplace of Obama is",),
    locality=(LocalityPrompt("Michelle was born in", "Chicago"),),
)
ZS1 = EditCase(
    case_id="zs1", kind="zsre", prompt="Which language does {} use ?", subject="Danielle",
    target_new="Old English", target_true=None,
    paraphrases=("What tongue does Danielle use",),
    locality=(LocalityPrompt("who wrote Hamlet ?", "William Shakespeare"), LocalityPrompt("capital of France", "Paris")),
)


@pytest.mark.parametrize("bos", [False, True])
@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_counterfact_successes_on_dictated_logits(bos, batch_size):
    table = bigram_table()
    calls: list[int] = []
    res = evaluate_cases(None, make_tok(bos), [CF1, CF2], batch_size=batch_size, progress=False,
                         logits_fn=bigram_logits_fn(table, calls))
    # one row per prompt: CF1's candidates are one token each (both need only the prompt) and each of CF2's
    # one-token candidates is a prefix of its rival "New York"'s row: 6 prompts of CF1 + 3 of CF2
    assert sum(calls) == 6 + 3 and max(calls) <= batch_size
    r1, r2 = res
    assert [r1["case_id"], r2["case_id"]] == ["cf1", "cf2"]
    # cf1: "speaks" prefers English (3 > 1): ES succeeds
    assert r1["rewrite"]["success"] is True
    # paraphrases: "is" prefers French (2 > 0) -> fail; "talks" prefers English (1 > 0) -> success
    assert [p["success"] for p in r1["paraphrases"]] == [False, True]
    # locality: natively->French ok; speak->English wins (5 > 1) -> fail; in->Germany (2) beats English (0)
    assert [p["success"] for p in r1["locality"]] == [True, False, True]
    # single-token NLLs by hand: row "speaks" has logits 3 (English), 1 (French), 0 elsewhere
    lse = math.log(math.exp(3) + math.exp(1) + (V - 2))
    assert r1["rewrite"]["nll_new"] == pytest.approx(lse - 3, abs=1e-6)
    assert r1["rewrite"]["nll_true"] == pytest.approx(lse - 1, abs=1e-6)
    # cf2: multi-token "New York" is the mean of NLL(New | in) and NLL(York | New)
    lse_in = math.log(math.exp(2) + math.exp(1) + math.exp(0.5) + (V - 3))
    lse_new = math.log(math.exp(4) + (V - 1))
    assert r2["rewrite"]["nll_new"] == pytest.approx(((lse_in - 1) + (lse_new - 4)) / 2, abs=1e-6)
    assert r2["rewrite"]["nll_true"] == pytest.approx(lse_in - 0.5, abs=1e-6)
    assert r2["rewrite"]["success"] is True  # 1.71 < 3.39
    assert [p["success"] for p in r2["paraphrases"]] == [False]  # "is": Honolulu 3 vs New 0
    assert r2["locality"][0]["nll_true"] == pytest.approx(lse_in, abs=1e-6)  # Chicago has logit 0
    assert [p["success"] for p in r2["locality"]] == [False]
    # every NLL agrees with the word-split reference
    for case, r in ((CF1, r1), (CF2, r2)):
        prompts = [case.rewrite_prompt, *case.paraphrases]
        for p, got in zip(prompts, [r["rewrite"], *r["paraphrases"]]):
            assert got["nll_new"] == pytest.approx(ref_bigram_nll(table, p, case.target_new), abs=1e-6)
            assert got["nll_true"] == pytest.approx(ref_bigram_nll(table, p, case.target_true), abs=1e-6)
        for lp, got in zip(case.locality, r["locality"]):
            assert got["nll_true"] == pytest.approx(ref_bigram_nll(table, lp.prompt, lp.answer), abs=1e-6)
            assert got["nll_new"] == pytest.approx(ref_bigram_nll(table, lp.prompt, case.target_new), abs=1e-6)
    s = summarise(res, "counterfact")
    assert s["ES"]["mean"] == pytest.approx(100.0)
    assert s["GS"]["mean"] == pytest.approx((50 + 0) / 2)
    assert s["LS"]["mean"] == pytest.approx((200 / 3 + 0) / 2)


@pytest.mark.parametrize("bos", [False, True])
def test_zsre_token_accuracy_on_dictated_logits(bos):
    (r,) = evaluate_cases(None, make_tok(bos), [ZS1], batch_size=2, progress=False,
                          logits_fn=bigram_logits_fn(bigram_table()))
    assert r["case_id"] == "zs1" and r["kind"] == "zsre"
    # "?" -> argmax Old (right), "Old" -> argmax English (right)
    assert r["rewrite"] == {"correct": [True, True], "acc": 1.0}
    # "use" -> argmax Latin (wrong), then teacher-forced "Old" -> English (right)
    assert r["paraphrases"] == [{"correct": [False, True], "acc": 0.5}]
    # "?" -> Old, not William (wrong); "William" -> Shakespeare (right); "France" -> Paris (right)
    assert r["locality"] == [{"correct": [False, True], "acc": 0.5}, {"correct": [True], "acc": 1.0}]
    s = summarise([r], "zsre")
    assert (s["ES"]["mean"], s["GS"]["mean"], s["LS"]["mean"]) == pytest.approx((100.0, 50.0, 75.0))


def test_mixed_kinds_batched_together_keep_order():
    table = bigram_table()
    tok = make_tok(True)
    alone = [evaluate_cases(None, tok, [c], progress=False, logits_fn=bigram_logits_fn(table))[0]
             for c in (ZS1, CF1, CF2)]
    together = evaluate_cases(None, tok, [ZS1, CF1, CF2], batch_size=5, progress=False,
                              logits_fn=bigram_logits_fn(table))
    assert together == alone
    assert evaluate_cases(None, tok, [], progress=False, logits_fn=bigram_logits_fn(table)) == []


# ------------------------------------------------------------------ a real (tiny, random) LLaMA


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=VOCAB["<s>"], eos_token_id=VOCAB["</s>"], pad_token_id=VOCAB["<pad>"])
    model = LlamaForCausalLM(cfg).float()
    with torch.no_grad():  # larger logits than the default init, so predictions are not near-ties
        model.lm_head.weight.mul_(20)
    return model


def full_logits_ref(model, tok, prompt: str, answer: str) -> tuple[float, list[bool]]:
    """Plain computation: full logits of one unpadded sequence, log_softmax, gather."""
    p_ids = tok(prompt)["input_ids"]
    ids = tok(f"{prompt} {answer}")["input_ids"]
    assert ids[: len(p_ids)] == p_ids
    ans = ids[len(p_ids):]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    pos = torch.arange(len(p_ids) - 1, len(ids) - 1)
    logp = torch.log_softmax(logits[pos], -1)
    tgt = torch.tensor(ans)
    nll = float(-logp.gather(1, tgt[:, None]).mean())
    return nll, (logits[pos].argmax(-1) == tgt).tolist()


@pytest.mark.parametrize("batch_size", [1, 4])
def test_llama_nll_matches_full_logits(tiny_llama, batch_size):
    tok = make_tok(True)
    model = tiny_llama
    model.train()  # evaluate_cases must score in eval mode and give the mode back
    res = evaluate_cases(model, tok, [CF1, ZS1, CF2], batch_size=batch_size, progress=False)
    assert model.training
    cf1, zs1, cf2 = res
    n_checked = 0
    for case, r in ((CF1, cf1), (CF2, cf2)):
        prompts = [case.rewrite_prompt, *case.paraphrases]
        for p, got in zip(prompts, [r["rewrite"], *r["paraphrases"]]):
            new, true = full_logits_ref(model, tok, p, case.target_new)[0], full_logits_ref(model, tok, p, case.target_true)[0]
            assert got["nll_new"] == pytest.approx(new, abs=1e-5)
            assert got["nll_true"] == pytest.approx(true, abs=1e-5)
            assert got["success"] == (new < true)
            n_checked += 2
        for lp, got in zip(case.locality, r["locality"]):
            ans, new = full_logits_ref(model, tok, lp.prompt, lp.answer)[0], full_logits_ref(model, tok, lp.prompt, case.target_new)[0]
            assert got["nll_true"] == pytest.approx(ans, abs=1e-5)
            assert got["nll_new"] == pytest.approx(new, abs=1e-5)
            assert got["success"] == (ans < new)
            n_checked += 2
    assert n_checked == 18
    for p, got in zip([ZS1.rewrite_prompt, *ZS1.paraphrases], [zs1["rewrite"], *zs1["paraphrases"]]):
        assert got["correct"] == full_logits_ref(model, tok, p, ZS1.target_new)[1]
    for lp, got in zip(ZS1.locality, zs1["locality"]):
        assert got["correct"] == full_logits_ref(model, tok, lp.prompt, lp.answer)[1]
    # the metrics are not degenerate on this model (some successes and some failures)
    succ = [x["success"] for r in (cf1, cf2) for x in (r["rewrite"], *r["paraphrases"], *r["locality"])]
    assert any(succ) and not all(succ)


def test_llama_deterministic_across_batch_sizes(tiny_llama):
    tok = make_tok(True)
    a = evaluate_cases(tiny_llama, tok, [CF1, CF2, ZS1], batch_size=2, progress=False)
    b = evaluate_cases(tiny_llama, tok, [CF1, CF2, ZS1], batch_size=2, progress=False)
    c = evaluate_cases(tiny_llama, tok, [CF1, CF2, ZS1], batch_size=32, progress=True)
    assert a == b
    for x, y in zip(a, c):
        if x["kind"] == "counterfact":
            assert x["rewrite"]["nll_new"] == pytest.approx(y["rewrite"]["nll_new"], abs=1e-5)
            assert [p["success"] for p in x["locality"]] == [p["success"] for p in y["locality"]]
        else:
            assert x == y


def test_greedy_continuations_match_generate(tiny_llama):
    tok = make_tok(True)
    prompts = ["Danielle speaks", "Which language does Obama use ?", "The capital of France is"]
    got = greedy_continuations(tiny_llama, tok, prompts, max_new_tokens=5, batch_size=2)
    assert len(got) == 3
    for p, text in zip(prompts, got):
        ids = torch.tensor([tok(p)["input_ids"]])
        with torch.no_grad():
            out = tiny_llama.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                                      pad_token_id=VOCAB["<pad>"], eos_token_id=VOCAB["</s>"])
        new = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
        assert text == new
        assert 0 < len(text.split()) <= 5


def test_greedy_continuations_dictated_stops_at_eos():
    table = bigram_table()
    table[VOCAB["Paris"], VOCAB["</s>"]] = 9  # "Paris" is followed by EOS
    table[VOCAB["New"], VOCAB["York"]] = 4
    table[VOCAB["York"], VOCAB["New"]] = 4  # New York New York ...
    out = greedy_continuations(None, make_tok(True), ["capital of France", "born in New"], max_new_tokens=4,
                               logits_fn=bigram_logits_fn(table))
    assert out == ["Paris", "York New York New"]


def test_candidates_of_one_prompt_share_a_row_and_score_as_alone(tiny_llama):
    """A one-token candidate needs only the prompt: it rides in its rival's row (or they share the prompt),
    and scores as in a row of its own."""
    from jeepkit.evaluation import _queries, _score_queries, _shared_rows
    from jeepkit.forward import logits_at

    tok = make_tok(True)
    queries = _queries(tok, [CF1, CF2])
    rows = _shared_rows(queries)
    assert len(rows) < len(queries)
    assert sorted(qi for _, qis in rows for qi in qis) == list(range(len(queries)))  # every query exactly once
    for ids, qis in rows:
        for qi in qis:
            q = queries[qi]
            assert ids[:max(q.cols) + 1] == q.ids[:max(q.cols) + 1]
    import functools

    fn = functools.partial(logits_at, tiny_llama)
    with torch.inference_mode():
        shared = _score_queries(queries, fn, 0, torch.device("cpu"), 4, False)
        alone = [_score_queries([q], fn, 0, torch.device("cpu"), 1, False)[0] for q in queries]
    for a, b in zip(shared, alone):
        assert a.nll == pytest.approx(b.nll, abs=1e-5) and a.correct == b.correct and a.pred == b.pred
