"""kexue.lm: tokenizer, HF save/load round trip, masking, held-out metrics, pretraining + cache."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tests.lm._texts import corpus

from kexue.lm import (
    PretrainConfig,
    build_tokenizer,
    cached_pretrained,
    char_vocab,
    encode_chars,
    evaluate_mlm,
    load_pretrained,
    load_tokenizer,
    mask_tokens,
    pack_texts,
    pretrain,
    save_pretrained,
    save_tokenizer,
    tiny_bert_config,
)


def test_char_vocab_order_and_min_freq():
    assert char_vocab(["bab", "c a", "A"], min_freq=1) == ["a", "b", "c"]  # a:3 (lower), b:2
    assert char_vocab(["bab", "c a"], min_freq=2) == ["a", "b"]
    assert char_vocab(["bab", "ca"], max_size=1) == ["a"]
    with pytest.raises(TypeError, match="texts"):
        char_vocab([1])
    with pytest.raises(ValueError, match="min_freq"):
        char_vocab(["a"], min_freq=0)


def test_tokenizer_special_ids_and_char_encoding(tmp_path):
    tok = build_tokenizer(["我爱北京", "abc 12"])
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id] == [0, 1, 2]
    assert [tok.sep_token_id, tok.mask_token_id] == [3, 4]
    ids = encode_chars(tok, "我 爱ABc京?")
    # one id per non-space char, lower-cased lookup, unknown -> [UNK]
    assert tok.convert_ids_to_tokens(ids) == ["我", "爱", "a", "b", "c", "京", "[UNK]"]
    # the HF tokenizer itself splits Latin words into characters too (## pieces exist)
    hf = tok.convert_ids_to_tokens(tok("abc", add_special_tokens=False)["input_ids"])
    assert [t.removeprefix("##") for t in hf] == ["a", "b", "c"]
    save_tokenizer(tok, tmp_path)
    assert (tmp_path / "vocab.txt").read_text().splitlines()[:5] == [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
    ]
    back = load_tokenizer(tmp_path)
    assert back.get_vocab() == tok.get_vocab()
    assert encode_chars(back, "我 爱ABc京?") == ids


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        load_tokenizer(tmp_path)


def test_tiny_bert_config_validation():
    cfg = tiny_bert_config(100, hidden_size=32, num_layers=1, num_heads=2)
    assert cfg.intermediate_size == 128 and cfg.vocab_size == 100
    with pytest.raises(ValueError, match="divisible"):
        tiny_bert_config(100, hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="vocab_size"):
        tiny_bert_config(0)
    with pytest.raises(TypeError, match="num_layers"):
        tiny_bert_config(10, num_layers=1.5)
    with pytest.raises(ValueError, match="dropout"):
        tiny_bert_config(10, dropout=1.0)


def _tiny_model(tok, **kw):
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    cfg = tiny_bert_config(
        len(tok), hidden_size=32, num_layers=2, num_heads=2, max_positions=64, **kw
    )
    return BertForMaskedLM(cfg).eval()


def test_save_load_round_trip(tmp_path):
    tok = build_tokenizer(corpus(50))
    model = _tiny_model(tok)
    save_pretrained(model, tok, tmp_path / "m")
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt"} <= names
    back, tok2 = load_pretrained(tmp_path / "m")
    ids = torch.tensor([[2, *encode_chars(tok, "我们喜欢长城"), 3]])
    torch.testing.assert_close(back(input_ids=ids).logits, model(input_ids=ids).logits)
    assert tok2.get_vocab() == tok.get_vocab()
    # the same encoder under a span head: the encoder weights are the pretrained ones
    qa, _ = load_pretrained(tmp_path / "m", head="qa")
    torch.testing.assert_close(
        qa.bert.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight
    )


def test_load_pretrained_errors(tmp_path):
    tok = build_tokenizer(corpus(20))
    model = _tiny_model(tok)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_pretrained(tmp_path / "missing")
    model.save_pretrained(str(tmp_path / "no_tok"))  # weights but no tokenizer
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        load_pretrained(tmp_path / "no_tok")
    save_tokenizer(tok, tmp_path / "no_cfg")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(tmp_path / "no_cfg")
    with pytest.raises(ValueError, match="head"):
        load_pretrained(tmp_path / "no_tok", head="seq2seq")


def test_pack_texts_concatenates_in_order():
    ids = [[1, 2, 3], [], [4, 5], [6, 7, 8, 9, 10]]
    chunks = pack_texts(ids, 4)
    assert [x for c in chunks for x in c] == list(range(1, 11))  # nothing lost or reordered
    assert all(0 < len(c) <= 4 for c in chunks) and [len(c) for c in chunks] == [4, 4, 2]


def test_mask_tokens_never_touches_special_positions():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 50, (64, 40))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -5:] = True
    inputs, labels = mask_tokens(
        ids, special=special, mask_id=4, vocab_size=50, mask_prob=0.15, generator=g
    )
    chosen = labels != -100
    assert not chosen[special].any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])  # untouched outside the chosen set
    rate = chosen.float().sum() / (~special).sum()
    assert 0.12 < rate < 0.18
    frac_mask = (inputs[chosen] == 4).float().mean()
    assert 0.72 < frac_mask < 0.88  # 80 % [MASK]
    inputs2, _ = mask_tokens(
        ids,
        special=special,
        mask_id=4,
        vocab_size=50,
        mask_prob=0.15,
        generator=torch.Generator().manual_seed(0),
        keep_random=False,
    )
    assert (inputs2[labels != -100] == 4).all()


class _Uniform(torch.nn.Module):
    def __init__(self, v: int) -> None:
        super().__init__()
        self.v = v
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None):
        class Out:
            logits = torch.zeros(*input_ids.shape, self.v) + self.w

        return Out()


def test_evaluate_mlm_uniform_model_has_perplexity_v():
    tok = build_tokenizer(corpus(30))
    res = evaluate_mlm(_Uniform(len(tok)), tok, corpus(30, seed=1), max_len=16)
    assert math.isclose(res["perplexity"], len(tok), rel_tol=1e-5)
    assert res["mlm_accuracy"] == 0.0  # argmax of a flat row is id 0 = [PAD], never a label
    assert res["masked_tokens"] > 0


def _pretrain_and_check(tmp_path, cfg, ppl_ratio):
    texts = (corpus(400), corpus(60, seed=9))
    res = pretrain(cfg, tmp_path / "run", progress=False, texts=texts)
    model, tok = load_pretrained(tmp_path / "run")
    again = evaluate_mlm(model, tok, texts[1], max_len=cfg.max_len)
    assert math.isclose(again["perplexity"], res["eval"]["perplexity"], rel_tol=1e-5)
    # baseline: the same architecture untrained, same held-out text and masked positions
    from transformers import BertForMaskedLM

    torch.manual_seed(cfg.seed)
    untrained = BertForMaskedLM(model.config).eval()
    base = evaluate_mlm(untrained, tok, texts[1], max_len=cfg.max_len)
    assert res["eval"]["perplexity"] < ppl_ratio * base["perplexity"]
    assert res["final_loss"] < res["initial_loss"]  # the first record is already a 20-step mean
    return res


def test_pretraining_learns(tmp_path):
    cfg = PretrainConfig(
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        max_positions=64,
        max_len=32,
        steps=80,
        batch_size=16,
        lr=5e-3,
        warmup=5,
        min_freq=1,
        dropout=0.0,
    )
    _pretrain_and_check(tmp_path, cfg, ppl_ratio=0.85)


@pytest.mark.slow
def test_pretraining_learns_context(tmp_path):
    cfg = PretrainConfig(
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        max_positions=64,
        max_len=32,
        steps=300,
        batch_size=16,
        lr=2e-3,
        warmup=10,
        min_freq=1,
        dropout=0.0,
    )
    res = _pretrain_and_check(tmp_path, cfg, ppl_ratio=0.7)
    assert res["final_loss"] < 0.85 * res["initial_loss"]


def test_cache_resumes_an_unfinished_run_then_reuses_it(tmp_path, monkeypatch):
    cfg = PretrainConfig(
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        max_positions=64,
        max_len=32,
        steps=10,
        batch_size=16,
        warmup=2,
        min_freq=1,
    )
    texts = (corpus(100), corpus(20, seed=9))

    # the cache: an unfinished directory is resumed (no steps left: same weights), then reused
    monkeypatch.setenv("KEXUE_CACHE", str(tmp_path / "cache"))
    import kexue.lm.pretraining as pt

    monkeypatch.setattr(
        pt, "chinese_texts", lambda split, limit=0: texts[0] if split == "train" else texts[1]
    )
    target = tmp_path / "cache" / "lm" / f"tiny-bert-{cfg.key()}"
    pretrain(cfg, target, progress=False, texts=texts)  # as if killed before the marker
    before = load_pretrained(target)[0].state_dict()
    path, info = cached_pretrained(cfg, progress=False)
    assert path == target and info["cached"] is False and info["history"]["steps"] == 10
    after = load_pretrained(path)[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    path2, info2 = cached_pretrained(cfg, progress=False)
    assert path2 == path and info2["cached"] is True
    assert json.loads((path / "pretrain_config.json").read_text()) == cfg.to_dict()


def test_pretrain_config_validation():
    with pytest.raises(ValueError, match="hidden_size"):
        PretrainConfig(hidden_size=0)
    with pytest.raises(ValueError, match="divisible"):
        PretrainConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="max_len"):
        PretrainConfig(max_len=1000, max_positions=512)
    with pytest.raises(ValueError, match="mask_prob"):
        PretrainConfig(mask_prob=0.0)
    assert PretrainConfig().key() == PretrainConfig().key() != PretrainConfig(seed=1).key()
