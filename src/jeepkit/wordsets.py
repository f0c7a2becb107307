"""Per-record token sets for the Fig. 5 probe (spec §8.2), built offline from the dataset itself.

The paper splits the vocabulary, for every record, into the original answer, *factual related*
words, *non-factual related* words, stopwords and *unrelated* tokens. Its related sets came from BM25
over Wikipedia (paragraphs about the subject and relation) filtered by GPT-4 (``related_words.npy``,
not public). That cannot be redone offline, so this module builds documented **substitutes** from the
records of the dataset file (all of it, not only the probed records):

* ``factual`` (substitute for GPT-4's factual words): words of the *true objects of other facts about
  the same subject*, i.e. ``target_true`` of every other record whose subject is the same (case- and
  whitespace-insensitive) and whose question differs. In CounterFact most subjects occur once, so
  many records have an empty factual set; the sidecar reports how many do.
* ``nonfactual`` (substitute for "BM25 words minus GPT-4 facts"): words that co-occur with the subject
  and relation but are not its answer: (a) the subject's own name, (b) the content words of the
  record's prompt and paraphrases, and (c) other objects of the same relation -- ``target_true`` of
  other records with the same ``relation_id`` (or, when the data has no relation ids, the same prompt
  template) and the answers of the record's locality prompts -- the ``max_related`` most frequent
  ones. These are answers of the right type that are wrong for this subject.
* ``stop``: the project's own English stopword and punctuation list below (``STOPWORDS``; written for
  this project, not the paper's 298 strings), each word also in its capitalised form.
* ``unrelated``: every other token of the LM head's output vocabulary. It is never materialised:
  the probe computes its probability mass as ``1 - (original + stop + factual + nonfactual)``.

Every set is "the first token of each word, deduplicated" (spec §8.2). The first token of a word is
the one it starts with when it follows a prompt after a space (exactly how an answer's first token is
found, ``tokens.locate``); punctuation stopwords also add their no-space form ("Paris," -> ","). Special
tokens (BOS/EOS/PAD/UNK) never enter a set.

The sets are made **disjoint** so that the masses partition the distribution, with the precedence
original answer > stopwords > factual > non-factual > unrelated. The original answer's first token is
removed from every set (the paper removes the object from S). The target answer's first token is
removed from the two related sets (``target_new`` is by construction another object of the same
relation and would otherwise sit in ``nonfactual``); it stays in ``stop`` if it is a stopword and is
otherwise counted in ``unrelated``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from .data.schema import EditCase
from .errors import InputError
from .tokens import locate, locate_template

SET_NAMES = ("stop", "factual", "nonfactual", "unrelated")  # the word sets of Fig. 5 (original answer aside)
EXPLICIT_SETS = ("stop", "factual", "nonfactual")  # sets stored as token ids; unrelated is the complement

SET_LABELS = {
    "orig": "Original answer",
    "stop": "Stopwords (project list)",
    "factual": "Factual related (substitute: other true facts of the subject)",
    "nonfactual": "Non-factual related (substitute: subject/prompt words, same-relation objects)",
    "unrelated": "Unrelated (rest of vocabulary)",
}
SHORT_LABELS = {"orig": "Original answer", "stop": "Stopwords", "factual": "Factual (subst.)",
                "nonfactual": "Non-factual (subst.)", "unrelated": "Unrelated"}

DEFINITIONS = {
    "orig": "first token of ' ' + target_true after the prompt",
    "stop": "first tokens of jeepkit.wordsets.STOPWORDS (the project's own English function words and "
            "punctuation), words also capitalised, punctuation also in its no-space form",
    "factual": "SUBSTITUTE for the paper's GPT-4 factual words: first tokens of the words of target_true of the "
               "other records (whole dataset file) with the same subject and a different question",
    "nonfactual": "SUBSTITUTE for the paper's BM25-minus-GPT-4 words: first tokens of the subject's words, the "
                  "content words of the prompt and paraphrases, and the max_related most frequent other objects "
                  "of the same relation (target_true of same-relation records, locality answers)",
    "unrelated": "every other token of the output vocabulary (complement; mass = 1 - the others)",
    "precedence": "sets are disjoint: original > stop > factual > nonfactual > unrelated; the target's first "
                  "token is excluded from factual and nonfactual",
}

# The project's own list: English function words (articles, pronouns, prepositions, conjunctions,
# auxiliaries and modal verbs, quantifiers, frequent adverbs) and punctuation. Written for jeepkit.
_FUNCTION_WORDS = """
a an the this that these those such
i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its
itself we us our ours ourselves they them their theirs themselves one ones oneself
who whom whose which what whatever whoever whichever when where why how whether
am is are was were be been being have has had having do does did doing done
can could may might must shall should will would ought
not no nor neither either none never
and or but if then else so yet because since although though unless until while whereas
as than too very also just only even still already again ever quite rather almost
of in on at by for with without within from to into onto upon about above below over under
between among through throughout during before after against along around across behind beyond
near off out up down toward towards via per
here there now then thus hence therefore however moreover otherwise instead
all any both each every few many more most much other others some several own same such enough
less least lot lots whatever something anything nothing everything someone anyone everyone nobody
yes ok well oh
s t d ll m re ve
"""
_PUNCTUATION = (". , ; : ! ? ' \" ` ( ) [ ] { } < > - -- — – ... … / \\ | & * # @ % $ + = _ ~ ^ "
                "'s 's n't").split()

STOPWORDS: tuple[str, ...] = tuple(dict.fromkeys(_FUNCTION_WORDS.split() + _PUNCTUATION + ["\n"]))

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?", re.UNICODE)


def _is_punct(word: str) -> bool:
    return not any(ch.isalnum() for ch in word)


def first_token(tok, word: str, *, specials: frozenset[int] | None = None) -> int | None:
    """The token ``word`` starts with when it follows a prompt after a space (None if none/special)."""
    word = word.strip()
    if not word:
        return None
    specials = frozenset(tok.all_special_ids) if specials is None else specials
    try:
        ids = locate(tok, "The", answer=word).answer_ids
    except InputError:
        return None
    return None if not ids or ids[0] in specials else int(ids[0])


def bare_token(tok, word: str, *, specials: frozenset[int] | None = None) -> int | None:
    """The first token of ``word`` glued to the preceding text ("Paris," -> ","), or None."""
    specials = frozenset(tok.all_special_ids) if specials is None else specials
    head = "The"
    enc = tok(head + word, return_offsets_mapping=True, add_special_tokens=False)
    for tid, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]):
        if e <= len(head):
            continue
        if s < len(head):  # a token straddles "The" and the word: no clean bare form
            return None
        return None if tid in specials else int(tid)
    return None


def word_tokens(tok, words: Iterable[str], *, specials: frozenset[int] | None = None) -> list[int]:
    """First token of each word of each string (split on word characters), deduplicated, in order."""
    specials = frozenset(tok.all_special_ids) if specials is None else specials
    out: dict[int, None] = {}
    for text in words:
        for w in _WORD.findall(text or ""):
            t = first_token(tok, w, specials=specials)
            if t is not None:
                out[t] = None
    return list(out)


def stopword_tokens(tok, words: Sequence[str] = STOPWORDS) -> list[int]:
    """Token ids of the stopword set: word-start form of every entry and of its capitalised form, plus the
    bare (no-space) form of punctuation."""
    specials = frozenset(tok.all_special_ids)
    out: dict[int, None] = {}
    for w in words:
        forms = [first_token(tok, w, specials=specials)]
        if w[:1].islower():  # sentence-initial form too ("The", "He")
            forms.append(first_token(tok, w[:1].upper() + w[1:], specials=specials))
        if _is_punct(w):
            forms.append(bare_token(tok, w, specials=specials))
        for t in forms:
            if t is not None:
                out[t] = None
    return sorted(out)


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def _relation_key(c: EditCase) -> str:
    return f"rel:{c.relation_id}" if c.relation_id else f"tpl:{c.prompt}"


def _same_question(a: EditCase, b: EditCase) -> bool:
    """Same relation (by id when both have one, else by prompt template)."""
    if a.relation_id and b.relation_id:
        return a.relation_id == b.relation_id
    return a.prompt == b.prompt


def answer_token(tok, case: EditCase, answer: str) -> int:
    """First token of ``answer`` after the case's prompt (same as the probe and the editors use)."""
    return int(locate_template(tok, case.prompt, case.subject, answer=answer).answer_ids[0])


@dataclass
class WordSets:
    """Per-record token-id sets, aligned with the probed cases (``unrelated`` is implicit)."""

    case_ids: list[str]
    orig: list[int]
    target: list[int]
    sets: dict[str, list[list[int]]]  # name in EXPLICIT_SETS -> one sorted id list per record
    definitions: dict[str, str] = field(default_factory=lambda: dict(DEFINITIONS))
    max_related: int = 50

    def summary(self) -> dict[str, Any]:
        """Set sizes for the sidecar: mean size and how many records have an empty set."""
        out: dict[str, Any] = {"definitions": self.definitions, "max_related": self.max_related}
        for name, per in self.sets.items():
            sizes = [len(s) for s in per]
            out[f"{name}_mean_size"] = round(sum(sizes) / max(len(sizes), 1), 2)
            out[f"{name}_n_empty"] = sum(1 for n in sizes if n == 0)
        return out


def build_wordsets(tok, cases: Sequence[EditCase], *, reference: Sequence[EditCase] | None = None,
                   max_related: int = 50, stopwords: Sequence[str] = STOPWORDS) -> WordSets:
    """Build the substitute word sets for ``cases``, drawing related words from ``reference``.

    ``reference`` is the pool of records the related words come from (default: ``cases``); pass the
    whole dataset file so that probing the first N records still sees every fact of the data.
    """
    reference = list(cases) if reference is None else list(reference)
    specials = frozenset(tok.all_special_ids)
    stop = set(stopword_tokens(tok, stopwords))

    by_subject: dict[str, list[EditCase]] = {}
    relation_objects: dict[str, Counter] = {}
    for c in reference:
        by_subject.setdefault(_norm(c.subject), []).append(c)
        if c.target_true:
            relation_objects.setdefault(_relation_key(c), Counter())[c.target_true.strip()] += 1

    cache: dict[str, list[int]] = {}

    def toks(text: str) -> list[int]:
        if text not in cache:
            cache[text] = word_tokens(tok, [text], specials=specials)
        return cache[text]

    orig_ids, target_ids = [], []
    sets: dict[str, list[list[int]]] = {k: [] for k in EXPLICIT_SETS}
    for c in cases:
        if not c.target_true:
            raise InputError("the probe needs a true answer (CounterFact-style records)", record=c.case_id,
                             field="target_true")
        o, t = answer_token(tok, c, c.target_true), answer_token(tok, c, c.target_new)
        orig_ids.append(o)
        target_ids.append(t)
        true_norm = _norm(c.target_true)

        fact_words = [x.target_true for x in by_subject.get(_norm(c.subject), [])
                      if x is not c and x.target_true and _norm(x.target_true) != true_norm
                      and not _same_question(x, c)]
        factual: dict[int, None] = {}
        for w in fact_words:
            factual.update(dict.fromkeys(toks(w)))

        objects = Counter({k: v for k, v in relation_objects.get(_relation_key(c), Counter()).items()
                           if _norm(k) != true_norm})
        for lp in c.locality:
            if _norm(lp.answer) != true_norm:
                objects[lp.answer.strip()] += 1
        top = [w for w, _ in sorted(objects.items(), key=lambda kv: (-kv[1], kv[0]))[:max_related]]
        texts = [c.subject, c.prompt.replace("{}", " "), *c.paraphrases, *top]
        nonfactual: dict[int, None] = {}
        for w in texts:
            nonfactual.update(dict.fromkeys(toks(w)))

        s_stop = stop - {o}
        s_fact = set(factual) - s_stop - {o, t}
        s_non = set(nonfactual) - s_fact - s_stop - {o, t}
        sets["stop"].append(sorted(s_stop))
        sets["factual"].append(sorted(s_fact))
        sets["nonfactual"].append(sorted(s_non))
    return WordSets(case_ids=[c.case_id for c in cases], orig=orig_ids, target=target_ids, sets=sets,
                    max_related=max_related)
