"""Tiny in-memory tokenizers and models for tests (nothing is downloaded).

Two tokenizer families, trained on a small corpus that contains every word the tests use:
  * ``gpt2_style_tokenizer``: byte-level BPE, leading-space tokens ("Ġ"), no BOS, pad = eos;
  * ``llama_style_tokenizer``: SentencePiece-like BPE (Metaspace "▁", digits split one by one, a
    ``<s>`` BOS prepended by a TemplateProcessing post-processor), pad = ``<unk>`` (id 0).
Both are ``transformers`` fast tokenizers (character offsets available), right-padded.

Two tiny random models (4 layers, hidden 64, init std 0.1): GPT-J (parallel block, fc_out and lm_head
with biases) and LLaMA (sequential block, down_proj, RMSNorm), float32, passed through
``jeepkit.models.finish_loading``.
"""

from __future__ import annotations

import torch

from jeepkit.data.schema import EditCase

# Edit requests and context prefixes shared by the editor tests (every word is in CORPUS below).
CASE = EditCase(case_id="c0", kind="counterfact", prompt="The mother tongue of {} is", subject="Danielle Darrieux",
                target_new="English", target_true="French")
CASE_B = EditCase(case_id="c2", kind="counterfact", prompt="{} is a city in", subject="Paris",
                  target_new="Japan", target_true="France")
PREFIXES = ["Therefore you know. ", "Because I said so, you know. "]

# Words the tests put in prompts, subjects, answers, prefixes and the "self" corpus seeds.
CORPUS = [
    "The mother tongue of Danielle Darrieux is French.",
    "The mother tongue of Barack Obama is English.",
    "Danielle Darrieux was born in Paris and spoke French and English.",
    "Paris's capital is a question. The capital of France is Paris.",
    "Toyota's capital is Tokyo. Berlin's capital status is old.",
    "1984 is a novel written by George Orwell in English.",
    "1984's author is George Orwell. 2001 is a film.",
    "Therefore the answer is French. Because I said so, you know.",
    "I think you are right. You speak French, I speak English.",
    "In the beginning a man was born. It is a city. He is a singer.",
    "She is an actress. This is a test. According to the news, it rained.",
    "During the war, after the war, the city was rebuilt in 1950.",
    "Apple is a company. Microsoft is a company. Google is a company.",
    "The official language of Italy is Italian. The language of Spain is Spanish.",
    "Danielle Darrieux is a French actress and singer from Bordeaux.",
    "Tokyo is a city in Japan. Rome is a city in Italy, the capital of Italy.",
    "What is the name of the city? The city is called Paris, the capital.",
    "He works in the field of physics. She plays the piano and the violin.",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 42 7.5",
    "A, B. C; D: E! F? G' H\" (I) [J] {K} -L- /M/",
]


def _corpus(extra: list[str] | None = None) -> list[str]:
    # repeat so frequent words get whole-word merges
    return (CORPUS + (extra or [])) * 3


def gpt2_style_tokenizer(vocab_size: int = 600):
    """Byte-level BPE like GPT-2: "Ġ" word starts, no BOS, eos = pad = <|endoftext|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(_corpus(), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.padding_side = "right"
    return tok


def llama_style_tokenizer(vocab_size: int = 600, split_punctuation: bool = True):
    """SentencePiece-like BPE: "▁" word starts, digits split, BOS <s> prepended, pad = <unk> (id 0).

    SentencePiece's ``split_by_unicode_script`` keeps punctuation out of letter pieces; with
    ``split_punctuation=False`` merges such as "▁Paris's" are learnt, so a token can straddle the end
    of a subject (the case the reference code patched by hand).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
        pre_tokenizers.Digits(individual_digits=True),
    ] + ([pre_tokenizers.Punctuation("isolated")] if split_punctuation else []))
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  show_progress=False)
    core.train_from_iterator(_corpus(), trainer)
    assert core.token_to_id("<unk>") == 0 and core.token_to_id("<s>") == 1
    core.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                        special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<unk>")
    tok.padding_side = "right"
    return tok


# Larger than the HF default (0.02) so that logits are not flat and edits visibly move probabilities.
INIT_RANGE = 0.1

TOKENIZERS = {"gpt2": gpt2_style_tokenizer, "llama": llama_style_tokenizer}


def tiny_gptj(tok, seed: int = 0, init_range: float = INIT_RANGE):
    from transformers import GPTJConfig, GPTJForCausalLM

    from jeepkit.models import finish_loading

    torch.manual_seed(seed)
    cfg = GPTJConfig(n_layer=4, n_embd=64, n_head=4, rotary_dim=16, n_positions=128, vocab_size=len(tok),
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                     initializer_range=init_range)
    model = GPTJForCausalLM(cfg).to(torch.float32)
    return finish_loading(model, tok)


def tiny_llama(tok, seed: int = 0, init_range: float = INIT_RANGE):
    from transformers import LlamaConfig, LlamaForCausalLM

    from jeepkit.models import finish_loading

    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=len(tok), max_position_embeddings=128,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      initializer_range=init_range)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    return finish_loading(model, tok)


def build(family: str, seed: int = 0, **kw):
    """(model, tok, arch) for family "gptj" (GPT-2 style tokenizer) or "llama" (SentencePiece style)."""
    if family == "gptj":
        return tiny_gptj(gpt2_style_tokenizer(), seed, **kw)
    if family == "llama":
        return tiny_llama(llama_style_tokenizer(), seed, **kw)
    raise ValueError(family)


@torch.no_grad()
def answer_logprob(model, tok, template: str, subject: str, answer: str, prefix: str = "") -> float:
    """Sum of log-probabilities of the tokens of " answer" after the filled template (teacher forced)."""
    from jeepkit.tokens import locate_template

    loc = locate_template(tok, template, subject, prefix=prefix, answer=answer)
    ids = torch.tensor([loc.ids])
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return float(sum(logp[p, t] for p, t in zip(loc.answer_positions, loc.answer_ids)))


def write_tiny_project(root, tok, params: dict) -> None:
    """A scratch project on disk: the tiny LLaMA (seed 0) in tiny_model/, corpus.txt and params.yaml."""
    import yaml

    model, tok, _ = tiny_llama(tok, seed=0)
    model.save_pretrained(root / "tiny_model", safe_serialization=True)
    tok.save_pretrained(root / "tiny_model")
    (root / "corpus.txt").write_text("\n".join(CORPUS) + "\n")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
