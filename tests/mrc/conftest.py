"""Tiny random BERT MLM + tokenizer shared by the mrc tests (no download, seconds to build)."""

from __future__ import annotations

import pytest
import torch

CHARS = "我爱北京天安门长城在哪里是谁的名字上海中国人民大学问答书东西南？。，,、abc123"


def make_tokenizer():
    from kexue.lm import build_tokenizer

    return build_tokenizer([CHARS])


def make_mlm(tok, *, seed: int = 0, max_positions: int = 128, hidden: int = 32):
    from transformers import BertForMaskedLM

    from kexue.lm import tiny_bert_config

    torch.manual_seed(seed)
    cfg = tiny_bert_config(
        len(tok),
        hidden_size=hidden,
        num_layers=2,
        num_heads=2,
        max_positions=max_positions,
        dropout=0.0,
    )
    return BertForMaskedLM(cfg).eval()


@pytest.fixture(autouse=True)
def _one_thread():
    from kexue.core.threads import num_threads

    with num_threads(1):  # tiny models: one intra-op thread is faster on a shared CPU
        yield


@pytest.fixture(scope="session")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="session")
def mlm(tok):
    return make_mlm(tok)
