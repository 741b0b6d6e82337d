"""Tagging tests run single-threaded: tiny ops, and 2 threads on a shared 2-core box can be ~8x slower."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def make_tiny_bert(tmp_path_factory):
    """``make(text, hidden_size, num_layers)``: a random tiny BERT with a character tokenizer
    built from ``text``, saved as a HuggingFace directory (seeded: the same call, the same
    weights); returns the directory."""

    def make(text: str, hidden_size: int, num_layers: int):
        from transformers import BertForMaskedLM

        from kexue.lm import build_tokenizer, save_pretrained, tiny_bert_config

        d = tmp_path_factory.mktemp("tiny-bert")
        tok = build_tokenizer([text])
        cfg = tiny_bert_config(
            len(tok), hidden_size=hidden_size, num_layers=num_layers, num_heads=2, max_positions=64
        )
        torch.manual_seed(0)
        save_pretrained(BertForMaskedLM(cfg), tok, d)
        return d

    return make
