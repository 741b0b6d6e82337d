"""Input layout, targets, windows and passage normalisation of the MLM reader."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kexue.mrc.features import (
    build_target,
    char_ids,
    collate,
    normalize_passage,
    special_ids,
    windows,
)
from kexue.mrc.reader import MLMReader


def test_layout_worked_example(tok, mlm):
    reader = MLMReader(mlm, tok, max_answer_len=4, max_question_len=8, max_passage_len=20)
    [(enc, text)] = reader.encode("长城在哪里？", "长城在 北京、中国")
    t = tok.convert_ids_to_tokens(enc.input_ids)
    assert t == [
        "[CLS]",
        "[MASK]",
        "[MASK]",
        "[MASK]",
        "[MASK]",
        "[SEP]",
        "长",
        "城",
        "在",
        "哪",
        "里",
        "？",
        "[SEP]",
        "长",
        "城",
        "在",
        ",",
        "北",
        "京",
        ",",
        "中",
        "国",
        "[SEP]",
    ]
    assert enc.passage_start == 13
    assert tok.convert_ids_to_tokens(enc.passage_ids)[-1] == "[SEP]"  # decoding table has it
    assert text == "长城在 北京、中国"  # the window's original text
    # the training target: answer 北京 in slots 1..2, then [SEP], then [PAD]
    [(ids, target)] = reader.training_features("长城在哪里？", "长城在 北京、中国", "北京")
    assert ids == enc.input_ids
    assert tok.convert_ids_to_tokens(target) == ["北", "京", "[SEP]", "[PAD]"]
    # answer not in the passage -> "no answer": [SEP] at slot 1
    [(_, target)] = reader.training_features("长城在哪里？", "长城在北京", "上海")
    assert tok.convert_ids_to_tokens(target) == ["[SEP]", "[PAD]", "[PAD]", "[PAD]"]


def test_question_is_truncated_before_its_sep(tok, mlm):
    reader = MLMReader(mlm, tok, max_answer_len=2, max_question_len=3, max_passage_len=10)
    [(enc, _)] = reader.encode("长城在哪里", "北京")
    assert tok.convert_ids_to_tokens(enc.input_ids) == [
        "[CLS]",
        "[MASK]",
        "[MASK]",
        "[SEP]",
        "长",
        "城",
        "[SEP]",
        "北",
        "京",
        "[SEP]",
    ]


def test_build_target_cases():
    a, b, c, d, e, f, SEP = 11, 12, 13, 14, 15, 16, 3
    assert build_target([a, b], 4, SEP) == [a, b, SEP, 0]
    assert build_target([], 4, SEP) == [SEP, 0, 0, 0]
    assert build_target([a, b, c, d, e, f], 4, SEP) == [a, b, c, SEP]  # keeps the final [SEP]
    with pytest.raises(ValueError, match="max_answer_len"):
        build_target([a], 0, SEP)


def test_normalize_passage_is_char_for_char():
    p = "北京 天安门、长城；故宫，颐和园。"
    q = normalize_passage(p)
    assert q == "北京,天安门,长城,故宫,颐和园。" and len(q) == len(p)


def test_char_ids_offsets_skip_spaces(tok):
    ids, off = char_ids(tok, "我 爱\tX")
    assert off == [0, 2, 4] and ids[2] == tok.unk_token_id
    with pytest.raises(TypeError, match="text"):
        char_ids(tok, None)


@given(n=st.integers(0, 200), size=st.integers(1, 40), data=st.data())
def test_windows_cover_with_stride(n, size, data):
    stride = data.draw(st.integers(1, size))
    ws = windows(n, size, stride)
    covered = set()
    for s, e in ws:
        assert 0 <= s <= e <= n and e - s <= size
        covered |= set(range(s, e))
    assert covered == set(range(n))
    assert ws[-1][1] == n
    starts = [s for s, _ in ws]
    assert starts == sorted(starts)
    if len(ws) > 1:
        assert all(b - a <= stride for a, b in zip(starts, starts[1:], strict=False))


def test_windows_and_collate_errors(tok):
    with pytest.raises(ValueError, match="stride"):
        windows(10, 4, 5)
    with pytest.raises(ValueError, match="size"):
        windows(10, 0, 1)
    with pytest.raises(ValueError, match="at least one"):
        collate([])
    ids, mask = collate([[1, 2, 3], [4]])
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [
        [True, True, True],
        [True, False, False],
    ]
    assert special_ids(tok).mask == tok.mask_token_id

    class NoMask:
        pad_token_id, unk_token_id, cls_token_id, sep_token_id, mask_token_id = 0, 1, 2, 3, None

    with pytest.raises(ValueError, match="MASK"):
        special_ids(NoMask())
