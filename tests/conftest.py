"""Shared fixtures: tiny in-memory tokenizers and models (see tests/tiny.py); nothing is downloaded."""

from __future__ import annotations

import copy
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # make `import tiny` work from every test module

import tiny  # noqa: E402

FAMILIES = ("gptj", "llama")


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run tiny-model tests on one intra-op thread (much faster than OpenMP spinning on a busy 2-CPU box).

    Opt in with `pytestmark = pytest.mark.usefixtures("torch_one_thread")`; the old setting is restored.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def gpt2_tok():
    return tiny.gpt2_style_tokenizer()


@pytest.fixture(scope="session")
def llama_tok():
    return tiny.llama_style_tokenizer()


@pytest.fixture(scope="session", params=["gpt2", "llama"])
def any_tok(request, gpt2_tok, llama_tok):
    """Each tokenizer family in turn."""
    return {"gpt2": gpt2_tok, "llama": llama_tok}[request.param]


@pytest.fixture(scope="session")
def tiny_gptj(gpt2_tok):
    """(model, tok, arch): 4-layer GPT-J, hidden 64, GPT-2 style tokenizer. Do not modify in place."""
    return tiny.tiny_gptj(gpt2_tok, seed=0)


@pytest.fixture(scope="session")
def tiny_llama(llama_tok):
    """(model, tok, arch): 4-layer LLaMA, hidden 64, SentencePiece style tokenizer. Do not modify in place."""
    return tiny.tiny_llama(llama_tok, seed=0)


@pytest.fixture(scope="session", params=FAMILIES)
def tiny_model(request, tiny_gptj, tiny_llama):
    """Each tiny model in turn, shared read-only across the session."""
    return {"gptj": tiny_gptj, "llama": tiny_llama}[request.param]


@pytest.fixture
def editable_model(tiny_model):
    """A private deep copy of `tiny_model` that a test may edit in place."""
    model, tok, arch = tiny_model
    return copy.deepcopy(model), tok, arch
