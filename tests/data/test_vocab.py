"""Vocab: ordering, limits, specials, encode/decode, batching and JSON round trip."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kexue.data import Vocab


def test_build_order_and_specials() -> None:
    v = Vocab.build([["b", "a", "b"], ["c", "a", "b"]], specials=("<bos>", "<eos>"))
    # specials, then by count (b=3, a=2, c=1)
    assert v.tokens == ["<pad>", "<unk>", "<bos>", "<eos>", "b", "a", "c"]
    assert (v.pad_id, v.unk_id, len(v)) == (0, 1, 7)
    assert v["a"] == 5 and v["zzz"] == 1 and "c" in v and "zzz" not in v


def test_ties_break_by_first_appearance() -> None:
    assert Vocab.build(["xyz", "zyx"], pad=None, unk=None).tokens == ["x", "y", "z"]


def test_min_freq_and_max_size() -> None:
    corpus = [["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"]]
    assert Vocab.build(corpus, min_freq=2).tokens == ["<pad>", "<unk>", "a", "b", "c"]
    assert Vocab.build(corpus, max_size=4).tokens == ["<pad>", "<unk>", "a", "b"]
    with pytest.raises(ValueError):
        Vocab.build(corpus, max_size=1)
    with pytest.raises(ValueError):
        Vocab.build(corpus, min_freq=0)


def test_specials_in_corpus_are_not_duplicated() -> None:
    v = Vocab.build([["<unk>", "a", "a"]])
    assert v.tokens == ["<pad>", "<unk>", "a"]


def test_encode_decode() -> None:
    v = Vocab.build([list("hello world")])
    ids = v.encode("hold!")
    assert ids[-1] == v.unk_id
    assert v.decode(ids) == ["h", "o", "l", "d", "<unk>"]
    assert v.decode([v.pad_id, *ids[:2], -1, -1]) == ["h", "o"]
    assert v.decode(torch.tensor([v.pad_id, ids[0]]), skip_pad=False) == ["<pad>", "h"]
    with pytest.raises(IndexError):
        v.decode([len(v)])
    with pytest.raises(ValueError):
        v.decode(torch.zeros(2, 2, dtype=torch.long))


def test_no_unk_raises() -> None:
    v = Vocab(["a", "b"], pad=None, unk=None)
    assert v.encode(["b", "a"]) == [1, 0]
    with pytest.raises(KeyError):
        v.encode(["c"])
    with pytest.raises(ValueError):
        _ = v.pad_id


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Vocab(["<pad>", "<unk>", "a", "a"])
    with pytest.raises(ValueError, match="unk"):
        Vocab(["<pad>", "a"])


def test_encode_batch_pads_and_masks() -> None:
    v = Vocab.build([["a", "b", "c"]])
    ids, mask = v.encode_batch([["a", "b", "c"], ["c"], []])
    assert ids.shape == (3, 3) and ids.dtype == torch.int64 and mask.dtype == torch.bool
    assert ids.tolist() == [[2, 3, 4], [4, 0, 0], [0, 0, 0]]
    assert mask.sum(1).tolist() == [3, 1, 0]
    ids, mask = v.encode_batch([["a", "b", "c"]], max_len=2)
    assert ids.tolist() == [[2, 3]] and mask.all()


def test_json_round_trip() -> None:
    v = Vocab.build([["甲", "乙", "乙"]], specials=("[MASK]",), unk="[UNK]", pad="[PAD]")
    w = Vocab.from_dict(json.loads(json.dumps(v.to_dict(), ensure_ascii=False)))
    assert w == v and w.tokens == v.tokens and (w.pad, w.unk) == ("[PAD]", "[UNK]")
    assert w.encode(["乙", "丙"]) == [3, 1]
    with pytest.raises(ValueError):
        Vocab.from_dict({"tokens": "abc"})


@given(st.lists(st.lists(st.text(min_size=1, max_size=3), max_size=8), max_size=8))
def test_decode_inverts_encode_for_known_tokens(corpus: list[list[str]]) -> None:
    v = Vocab.build(corpus)
    for sent in corpus:
        known = [t for t in sent if t not in ("<pad>",)]
        assert v.decode(v.encode(known)) == known
