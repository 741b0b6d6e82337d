"""Readers on small hand-written files, every compression, and malformed input (file + line)."""

from __future__ import annotations

import gzip
import json
import lzma
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from kexue.core.spans import spans_to_tags
from kexue.data import (
    read_cluener,
    read_cluener_spans,
    read_conll,
    read_mnist_idx,
    read_pairs_tsv,
    read_segmented,
    read_squad,
    read_webqa,
    readers,
)


def write(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path``, compressed according to its suffix (.gz / .xz / .zip)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(raw))
    elif path.suffix == ".xz":
        path.write_bytes(lzma.compress(raw))
    elif path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(path.stem, raw)
    else:
        path.write_bytes(raw)
    return path


def assert_where(err: pytest.ExceptionInfo, path: Path, line: int) -> None:
    msg = str(err.value)
    assert path.name in msg, msg
    assert f"line {line}:" in msg, msg


SUFFIXES = ["", ".gz", ".xz", ".zip"]


# --- segmented --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_read_segmented_all_compressions(tmp_path: Path, suffix: str) -> None:
    # SIGHAN gold: two spaces, CRLF, trailing empty line; UD: one space, LF.
    p = write(tmp_path / f"seg.txt{suffix}", "共同  创造  美好\r\n\r\n女士 们 ，\r\n\r\n")
    assert read_segmented(p) == [["共同", "创造", "美好"], ["女士", "们", "，"]]


def test_read_segmented_bad_utf8_names_line(tmp_path: Path) -> None:
    p = write(tmp_path / "bad_seg.txt", "一 二\n三 四\n".encode() + b"\xff\xfe oops\n")
    with pytest.raises(ValueError) as err:
        read_segmented(p)
    assert_where(err, p, 3)


def test_read_segmented_bad_utf8_in_xz_names_line(tmp_path: Path) -> None:
    p = write(tmp_path / "bad_seg.txt.xz", b"a b\n\xc3\n")
    with pytest.raises(ValueError) as err:
        read_segmented(p)
    assert_where(err, p, 2)


def test_line_numbers_ignore_unicode_line_separators_and_bom(tmp_path: Path) -> None:
    # U+2028 / U+0085 / \x1c are line breaks for str.splitlines but not in these files.
    p = write(tmp_path / "sep_conll.txt", "\ufeff甲\u2028 O\n乙\x85 O\n\x1c B-X\n丙 O O\n")
    with pytest.raises(ValueError) as err:
        read_conll(p)
    assert_where(err, p, 4)
    q = write(tmp_path / "bom.txt", "\ufeff一 二\n")
    assert read_segmented(q) == [["一", "二"]]


def test_missing_file_and_corrupt_archive(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_segmented(tmp_path / "nope.txt")
    bad = tmp_path / "corrupt.txt.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="corrupt.txt.gz"):
        read_segmented(bad)


# --- CoNLL ------------------------------------------------------------------------------------

CONLL = "Confidence NN B-NP\nin IN B-PP\n\nthe DT B-NP\npound NN I-NP\n\n\n"


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_read_conll_columns(tmp_path: Path, suffix: str) -> None:
    p = write(tmp_path / f"chunk.txt{suffix}", CONLL)
    assert read_conll(p) == [
        (["Confidence", "in"], ["B-NP", "B-PP"]),
        (["the", "pound"], ["B-NP", "I-NP"]),
    ]
    assert read_conll(p, token_col=0, tag_col=1)[0] == (["Confidence", "in"], ["NN", "IN"])


def test_read_conll_tab_separated_keeps_space_tokens(tmp_path: Path) -> None:
    # MSRA layout "<char>\t<tag>"; a space or U+3000 token must survive, no final blank line.
    p = write(tmp_path / "msra.txt", "中\tB-LOC\n \tO\n国\tI-LOC\n\n\u3000\tO")
    assert read_conll(p) == [(["中", " ", "国"], ["B-LOC", "O", "I-LOC"]), (["\u3000"], ["O"])]


def test_read_conll_space_separated_ideographic_space_token(tmp_path: Path) -> None:
    p = write(tmp_path / "pd.txt", "在 O\n\u3000 O\n")
    assert read_conll(p) == [(["在", "\u3000"], ["O", "O"])]


def test_read_conll_skips_docstart(tmp_path: Path) -> None:
    p = write(tmp_path / "c03.txt", "-DOCSTART- -X- O O\n\nEU NNP B-NP B-ORG\n")
    assert read_conll(p) == [(["EU"], ["B-ORG"])]


def test_read_conll_malformed_column_count(tmp_path: Path) -> None:
    p = write(tmp_path / "bad_chunk.txt", "a DT B-NP\nb NN I-NP\n\nc B-NP\n")
    with pytest.raises(ValueError) as err:
        read_conll(p)
    assert_where(err, p, 4)


def test_read_conll_whitespace_lines(tmp_path: Path) -> None:
    # a TAB-only line is a sentence break, an empty tag is an error
    p = write(tmp_path / "ws.txt", "中\tB-LOC\n\t\n好\tO\n")
    assert read_conll(p) == [(["中"], ["B-LOC"]), (["好"], ["O"])]
    q = write(tmp_path / "empty_tag.txt", "中\tB-LOC\n国\t\n")
    with pytest.raises(ValueError, match="empty tag") as err:
        read_conll(q)
    assert_where(err, q, 2)


def test_read_conll_column_out_of_range(tmp_path: Path) -> None:
    p = write(tmp_path / "two.txt", "a B\n")
    with pytest.raises(ValueError, match="tag_col=5") as err:
        read_conll(p, tag_col=5)
    assert_where(err, p, 1)


def test_read_conll_too_few_columns(tmp_path: Path) -> None:
    p = write(tmp_path / "one_col.txt", "a\nb\n")
    with pytest.raises(ValueError) as err:
        read_conll(p)
    assert_where(err, p, 1)


# --- CLUENER ----------------------------------------------------------------------------------

CLUE = (
    '{"text": "浙商银行企业信贷部叶老桂博士", "label": {"name": {"叶老桂": [[9, 11]]}, '
    '"company": {"浙商银行": [[0, 3]]}}}\n'
    '{"text": "生生不息CSOL生化狂潮", "label": {"game": {"CSOL": [[4, 7]]}}}\n'
    '{"text": "无实体"}\n'
)


def test_read_cluener_spans_and_bio(tmp_path: Path) -> None:
    p = write(tmp_path / "train.json.xz", CLUE)
    spans = read_cluener_spans(p)
    assert spans[0] == {
        "text": "浙商银行企业信贷部叶老桂博士",
        "spans": [(0, 4, "company"), (9, 12, "name")],
    }
    assert spans[2] == {"text": "无实体", "spans": []}
    chars, tags = read_cluener(p)[0]
    assert "".join(chars) == "浙商银行企业信贷部叶老桂博士"
    assert tags == ["B-company"] + ["I-company"] * 3 + ["O"] * 5 + [
        "B-name",
        "I-name",
        "I-name",
    ] + [
        "O",
        "O",
    ]
    assert read_cluener(p)[1][1] == ["O"] * 4 + ["B-game"] + ["I-game"] * 3 + ["O"] * 4
    assert read_cluener(p)[2] == (["无", "实", "体"], ["O", "O", "O"])


def test_cluener_overlaps_go_through_the_one_span_converter() -> None:
    # issue 8: one span<->tag converter (kexue.core.spans), spans as (label, start, end)
    spans = [("b", 1, 3), ("a", 0, 4), ("c", 4, 5)]
    assert spans_to_tags(spans, 5, "BIO", overlap="drop") == [
        "B-a",
        "I-a",
        "I-a",
        "I-a",
        "B-c",
    ]
    with pytest.raises(ValueError, match="overlaps"):
        spans_to_tags(spans, 5, "BIO")
    with pytest.raises(ValueError, match="out of range"):
        spans_to_tags([("x", 2, 4)], 3, "BIO", overlap="drop")
    assert not hasattr(readers, "spans_to_bio")


@pytest.mark.parametrize(
    "bad_line",
    [
        '{"text": "abc", "label": {"x": {"abc": [[0, 2]]}}',  # truncated JSON
        '{"text": "abc", "label": {"x": {"abd": [[0, 2]]}}}',  # mention != text
        '{"text": "abc", "label": {"x": {"abc": [[0, 3]]}}}',  # end out of range
        '{"label": {}}',  # no text
    ],
)
def test_read_cluener_malformed(tmp_path: Path, bad_line: str) -> None:
    p = write(tmp_path / "bad_clue.json", CLUE + bad_line + "\n")
    with pytest.raises(ValueError) as err:
        read_cluener_spans(p)
    assert_where(err, p, 4)


# --- SQuAD / CMRC -----------------------------------------------------------------------------


def squad_doc(answer_start: int = 11) -> dict:
    return {
        "version": "v1.0",
        "data": [
            {
                "id": "DEV_0",
                "title": "战国无双3",
                "paragraphs": [
                    {
                        "id": "DEV_0",
                        "context": "《战国无双3》（）是由光荣和ω-force开发的。光荣和ω-force",
                        "qas": [
                            {
                                "id": "DEV_0_QUERY_0",
                                "question": "由哪两个公司开发？",
                                "answers": [
                                    {"text": "光荣和ω-force", "answer_start": answer_start}
                                ],
                            },
                            {"id": "DEV_0_QUERY_1", "question": "无答案？", "answers": []},
                        ],
                    }
                ],
            }
        ],
    }


def test_read_squad_flat_records(tmp_path: Path) -> None:
    p = write(tmp_path / "dev.json.gz", json.dumps(squad_doc(), ensure_ascii=False, indent=2))
    recs = read_squad(p)
    assert [r["id"] for r in recs] == ["DEV_0_QUERY_0", "DEV_0_QUERY_1"]
    r = recs[0]
    assert r["title"] == "战国无双3" and r["question"] == "由哪两个公司开发？"
    a = r["answers"][0]
    assert r["context"][a["answer_start"] : a["answer_start"] + len(a["text"])] == a["text"]
    assert recs[1]["answers"] == []


@pytest.mark.parametrize("given, fixed", [(-1, 11), (12, 11), (25, 25), (29, 25)])
def test_read_squad_fixes_offsets(tmp_path: Path, given: int, fixed: int) -> None:
    p = write(tmp_path / "dev.json", json.dumps(squad_doc(given), ensure_ascii=False))
    assert read_squad(p)[0]["answers"][0]["answer_start"] == fixed
    assert read_squad(p, fix_offsets=False)[0]["answers"][0]["answer_start"] == given


def test_read_squad_invalid_json_line(tmp_path: Path) -> None:
    text = json.dumps(squad_doc(), ensure_ascii=False, indent=2).splitlines()
    text[7] = text[7] + ","  # stray comma after "paragraphs": [ on line 8
    p = write(tmp_path / "broken_squad.json", "\n".join(text))
    with pytest.raises(ValueError) as err:
        read_squad(p)
    assert str(tmp_path / "broken_squad.json") in str(err.value)
    assert "line 9:" in str(err.value) or "line 8:" in str(err.value), str(err.value)


def test_read_squad_missing_question_names_line(tmp_path: Path) -> None:
    doc = squad_doc()
    del doc["data"][0]["paragraphs"][0]["qas"][1]["question"]
    p = write(tmp_path / "noq.json", json.dumps(doc, ensure_ascii=False, indent=1))
    line = next(
        i for i, s in enumerate(p.read_text("utf-8").splitlines(), 1) if "DEV_0_QUERY_1" in s
    )
    with pytest.raises(ValueError) as err:
        read_squad(p)
    assert_where(err, p, line)


# --- WebQA ------------------------------------------------------------------------------------

WEBQA = [
    {
        "id": "Q_1",
        "question": "吞噬星空的作者是谁",
        "passages": [
            {"passage": "作者是我吃西红柿", "answer": "我吃西红柿"},
            {"passage": "无关", "answer": ""},
            {"passage": "番茄即我吃西红柿", "answer": "我吃西红柿"},
            {"passage": "别的说法", "answer": "番茄"},
        ],
    },
    {"id": "Q_2", "question": "没有答案", "passages": [{"passage": "x", "answer": ""}]},
]


def test_read_webqa(tmp_path: Path) -> None:
    p = write(tmp_path / "webqa.json.xz", json.dumps(WEBQA))  # \uXXXX escapes like the sample
    recs = read_webqa(p)
    assert recs[0]["answer"] == "我吃西红柿" and recs[0]["question"] == "吞噬星空的作者是谁"
    assert len(recs[0]["passages"]) == 4 and recs[0]["passages"][1] == {
        "passage": "无关",
        "answer": "",
    }
    assert recs[1] == {
        "id": "Q_2",
        "question": "没有答案",
        "answer": "",
        "passages": [{"passage": "x", "answer": ""}],
    }


def test_read_webqa_malformed(tmp_path: Path) -> None:
    items = [dict(WEBQA[0]), {"id": "Q_2", "question": "坏", "passages": "not a list"}]
    p = write(tmp_path / "bad_webqa.json", json.dumps(items, ensure_ascii=False, indent=1))
    line = next(i for i, s in enumerate(p.read_text("utf-8").splitlines(), 1) if '"坏"' in s)
    with pytest.raises(ValueError) as err:
        read_webqa(p)
    assert_where(err, p, line)
    p2 = write(tmp_path / "trunc_webqa.json", '[\n{"id": 1,\n "question": ]')
    with pytest.raises(ValueError) as err:
        read_webqa(p2)
    assert_where(err, p2, 3)


# --- TSV pairs --------------------------------------------------------------------------------


def test_read_pairs_two_columns_target_first(tmp_path: Path) -> None:
    p = write(tmp_path / "lcsts.tsv.gz", "标题一\t正文一。\n标题二\t正文二。\n\n")
    assert read_pairs_tsv(p) == [("正文一。", "标题一"), ("正文二。", "标题二")]


def test_read_pairs_three_columns_prompt(tmp_path: Path) -> None:
    p = write(tmp_path / "csl_ts.tsv", "to title\t摘要一\t标题一\nto title\t摘要二\t标题二\n")
    assert read_pairs_tsv(p) == [("摘要一", "标题一"), ("摘要二", "标题二")]
    assert read_pairs_tsv(p, source_col=2, target_col=1)[1] == ("标题二", "摘要二")


def test_read_pairs_malformed(tmp_path: Path) -> None:
    p = write(tmp_path / "bad_pairs.tsv", "a\tb\nc\td\ne without tab\n")
    with pytest.raises(ValueError) as err:
        read_pairs_tsv(p)
    assert_where(err, p, 3)
    p2 = write(tmp_path / "bad_cols.tsv", "a\tb\nc\n")
    with pytest.raises(ValueError) as err:
        read_pairs_tsv(p2, source_col=1, target_col=0)
    assert_where(err, p2, 2)
    with pytest.raises(ValueError):
        read_pairs_tsv(p, source_col=1)


# --- MNIST IDX --------------------------------------------------------------------------------


def idx_images(x: torch.Tensor) -> bytes:
    return struct.pack(">IIII", 0x803, *x.shape) + x.numpy().tobytes()


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_mnist_idx_roundtrip(tmp_path: Path, suffix: str) -> None:
    x = torch.randint(
        0, 256, (3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    p = write(tmp_path / f"imgs-idx3-ubyte{suffix}", idx_images(x))
    got = read_mnist_idx(p)
    assert got.dtype == torch.uint8 and torch.equal(got, x)
    q = write(
        tmp_path / f"labels-idx1-ubyte{suffix}", struct.pack(">II", 0x801, 4) + bytes([5, 0, 4, 9])
    )
    labels = read_mnist_idx(q)
    assert labels.dtype == torch.int64 and labels.tolist() == [5, 0, 4, 9]


def test_read_mnist_idx_bad_magic_and_size(tmp_path: Path) -> None:
    p = write(tmp_path / "bad-magic.gz", struct.pack(">II", 0x802, 1) + b"\x00")
    with pytest.raises(ValueError, match="magic") as err:
        read_mnist_idx(p)
    assert_where(err, p, 1)
    x = torch.zeros(2, 28, 28, dtype=torch.uint8)
    q = write(tmp_path / "short-idx3", idx_images(x)[:-1])
    with pytest.raises(ValueError, match="size mismatch") as err:
        read_mnist_idx(q)
    assert "short-idx3" in str(err.value)
    r = write(tmp_path / "tiny-idx", b"\x00\x00")
    with pytest.raises(ValueError, match="truncated"):
        read_mnist_idx(r)
