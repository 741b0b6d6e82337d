"""Readers for the standard file formats of the shipped datasets (and users' own copies).

Every reader takes a path to a plain file or a ``.gz`` / ``.xz`` / ``.zip`` compressed one and
returns plain Python objects (or a tensor for MNIST). Malformed input raises ``ValueError``
(:class:`~kexue.data._io.DataFormatError`) whose message names the file and the 1-based line:
``"path/to/file, line 17: expected 3 columns, got 2"``.

Formats:

* segmented text (SIGHAN 2005, UD-derived CWS): one sentence per line, words separated by runs
  of white space (one or two spaces; ``\\r\\n`` tolerated);
* CoNLL columns (BIO NER, CoNLL-2000 chunking): one token per line, columns separated by a TAB
  (if the line has one) or by white space, sentences separated by blank lines;
* CLUENER2020 JSON lines: ``{"text": str, "label": {type: {entity: [[start, end], ...]}}}`` with
  **inclusive** ``end``;
* SQuAD v1.1 JSON (CMRC 2018);
* WebQA JSON (bert4keras layout): ``[{"id", "question", "passages": [{"passage", "answer"}]}]``;
* tab-separated text pairs (LCSTS, CSL);
* MNIST IDX (big-endian header, uint8 payload).
"""

from __future__ import annotations

import functools
import json
import math
import re
import struct
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import torch

from kexue.core.spans import spans_to_tags
from kexue.data._io import DataFormatError, PathLike, iter_lines, read_bytes, read_text

__all__ = [
    "read_cluener",
    "read_cluener_spans",
    "read_conll",
    "read_mnist_idx",
    "read_pairs_tsv",
    "read_segmented",
    "read_squad",
    "read_webqa",
]


# ---------------------------------------------------------------------------------------------
# Word segmentation
# ---------------------------------------------------------------------------------------------


def read_segmented(path: PathLike) -> list[list[str]]:
    """Read a word-segmented corpus: one sentence per line, words separated by white space.

    Blank lines are skipped (the PKU files end with one).

    Args:
        path: plain / ``.gz`` / ``.xz`` / ``.zip`` UTF-8 file.

    Returns:
        One list of words per non-blank line, e.g. ``[["共同", "创造", "美好"], ...]``.

    Raises:
        ValueError: invalid UTF-8 (the message names the file and line).
    """
    out: list[list[str]] = []
    intern = cast(Callable[[str, str], str], {}.setdefault)  # one str object per distinct word
    for lineno, line in enumerate(iter_lines(path), start=1):
        words = [intern(w, w) for w in line.split()]
        if not words:
            continue
        if "\x00" in line:
            raise DataFormatError(path, lineno, "NUL byte in a text line")
        out.append(words)
    return out


# ---------------------------------------------------------------------------------------------
# CoNLL-style columns
# ---------------------------------------------------------------------------------------------

_SPACES = re.compile(" +")


def read_conll(
    path: PathLike, token_col: int = 0, tag_col: int = -1
) -> list[tuple[list[str], list[str]]]:
    """Read a column file (one token per line, blank line between sentences).

    A line is split on TAB if it contains one (``"<char>\\t<tag>"``, so a space character can be a
    token), otherwise on runs of ASCII spaces (so U+3000 can be a token). Every token line of
    the file must have the same number of columns. ``-DOCSTART-`` lines (CoNLL-2003) are skipped.

    Args:
        path: plain / compressed UTF-8 file.
        token_col: column holding the token (Python indexing, negative allowed).
        tag_col: column holding the tag; default: the last one.

    Returns:
        ``[(tokens, tags), ...]`` with ``len(tokens) == len(tags)`` for each sentence; tags are
        returned as written (``B-PER``, ``I-NP``, ``O``...).

    Raises:
        ValueError: a line with fewer columns than needed or a column count differing from the
            file's first token line (message names file and line), or invalid UTF-8.
    """
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    ncols = -1  # column count of the first token line; every token line must match it
    # one str object per distinct token / tag (2.3 M MSRA characters: ~650 MB -> ~150 MB)
    intern = cast(Callable[[str, str], str], {}.setdefault)
    for lineno, line in enumerate(iter_lines(path), start=1):
        # TAB-separated if possible; else runs of ASCII spaces (not str.split(): U+3000 is a token)
        parts = line.split("\t") if "\t" in line else _SPACES.split(line.strip(" "))
        if len(parts) != ncols or not parts[tag_col].strip():
            if not line.strip():  # blank line: end of sentence
                if tokens:
                    sentences.append((tokens, tags))
                    tokens, tags = [], []
                continue
            if line.startswith("-DOCSTART-"):
                continue
            if ncols >= 0 and len(parts) == ncols:
                raise DataFormatError(path, lineno, f"empty tag column: {line!r}")
            if ncols >= 0:
                raise DataFormatError(
                    path,
                    lineno,
                    f"expected {ncols} columns like the first token line, got {len(parts)}: "
                    f"{line!r}",
                )
            ncols = len(parts)
            _check_columns(path, lineno, ncols, token_col, tag_col)
        elif line.startswith("-DOCSTART-"):
            continue
        tok, tag = parts[token_col], parts[tag_col]
        tokens.append(intern(tok, tok))
        tags.append(intern(tag, tag))
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def _check_columns(path: PathLike, lineno: int, ncols: int, token_col: int, tag_col: int) -> None:
    """Raise unless ``token_col`` and ``tag_col`` are two distinct columns of ``ncols``."""
    for name, col in (("token_col", token_col), ("tag_col", tag_col)):
        if not -ncols <= col < ncols:
            raise DataFormatError(path, lineno, f"{name}={col} is out of range for {ncols} columns")
    if (token_col - tag_col) % ncols == 0:
        raise DataFormatError(
            path,
            lineno,
            f"token_col={token_col} and tag_col={tag_col} are the same column of "
            f"a {ncols}-column line",
        )


# ---------------------------------------------------------------------------------------------
# CLUENER2020
# ---------------------------------------------------------------------------------------------


def read_cluener_spans(path: PathLike) -> list[dict[str, Any]]:
    """Read CLUENER2020 JSON lines into texts and entity spans.

    Args:
        path: plain / compressed JSON-lines file; the ``label`` key may be absent (test set).

    Returns:
        ``[{"text": str, "spans": [(start, end, type), ...]}, ...]`` with **end exclusive**
        (``text[start:end]`` is the mention; the file's offsets are inclusive) and spans sorted by
        ``(start, end, type)``. Overlapping spans (8 characters in train) are kept here.

    Raises:
        ValueError: invalid JSON, a missing ``text``, a malformed offset pair, an offset out of
            range or a mention that differs from ``text[start:end + 1]`` (names file and line).
    """
    out: list[dict[str, Any]] = []
    for lineno, line in enumerate(iter_lines(path), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(path, lineno, f"invalid JSON: {err.msg}") from err
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise DataFormatError(path, lineno, 'expected an object with a string "text"')
        text: str = obj["text"]
        spans: list[tuple[int, int, str]] = []
        label = obj.get("label") or {}
        if not isinstance(label, dict):
            raise DataFormatError(path, lineno, '"label" must be an object')
        for etype, mentions in label.items():
            if not isinstance(mentions, dict):
                raise DataFormatError(path, lineno, f'label "{etype}" must map entity -> offsets')
            for mention, offsets in mentions.items():
                for pair in offsets if isinstance(offsets, list) else [None]:
                    ok = (
                        isinstance(pair, list)
                        and len(pair) == 2
                        and all(isinstance(v, int) for v in pair)
                    )
                    if not ok or not 0 <= pair[0] <= pair[1] < len(text):
                        raise DataFormatError(
                            path,
                            lineno,
                            f"bad offsets {pair!r} for {mention!r} (text length {len(text)})",
                        )
                    start, end = pair[0], pair[1] + 1
                    if text[start:end] != mention:
                        raise DataFormatError(
                            path,
                            lineno,
                            f"mention {mention!r} != text[{start}:{end}] {text[start:end]!r}",
                        )
                    spans.append((start, end, etype))
        out.append({"text": text, "spans": sorted(spans)})
    return out


def _cluener_tags(record: dict[str, Any]) -> list[str]:
    """BIO tags of one :func:`read_cluener_spans` record (spans are ``(start, end, type)``)."""
    spans = [(etype, start, end) for start, end, etype in record["spans"]]
    return spans_to_tags(spans, len(record["text"]), "BIO", overlap="drop")


def read_cluener(path: PathLike) -> list[tuple[list[str], list[str]]]:
    """Read CLUENER2020 JSON lines as characters + BIO tags.

    Args:
        path: plain / compressed JSON-lines file.

    Returns:
        ``[(chars, tags), ...]``, ``chars = list(text)``, tags such as ``B-name``, ``I-company``,
        ``O``; overlapping mentions are resolved greedily (by start, longer first; a mention
        overlapping an already tagged one is dropped), by the one span converter
        :func:`kexue.core.spans.spans_to_tags` with ``overlap="drop"``.

    Raises:
        ValueError: as :func:`read_cluener_spans`.
    """
    return [(list(r["text"]), _cluener_tags(r)) for r in read_cluener_spans(path)]


# ---------------------------------------------------------------------------------------------
# JSON question answering
# ---------------------------------------------------------------------------------------------


def _load_json(path: PathLike) -> tuple[Any, str]:
    text = read_text(path)
    try:
        return json.loads(text), text
    except json.JSONDecodeError as err:
        raise DataFormatError(path, err.lineno, f"invalid JSON: {err.msg}") from err


def _line_of(text: str, needle: str) -> int | None:
    """1-based line of the first occurrence of ``needle`` in ``text`` (``None`` if absent)."""
    pos = text.find(needle)
    return None if pos < 0 else text.count("\n", 0, pos) + 1


def read_squad(path: PathLike, fix_offsets: bool = True) -> list[dict[str, Any]]:
    """Read a SQuAD v1.1-style JSON file (CMRC 2018) as flat question records.

    Args:
        path: plain / compressed JSON file ``{"data": [{"title", "paragraphs": [{"context",
            "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}``.
        fix_offsets: where ``context[answer_start:answer_start + len(text)] != text`` (CMRC dev:
            193 answers with ``answer_start = -1`` and 7 misaligned ones; trial: 5), move
            ``answer_start`` to the occurrence of ``text`` in ``context`` nearest to the given
            offset, or ``-1`` if ``text`` does not occur. ``False`` keeps the file's values.

    Returns:
        One dict per question, in file order: ``{"id": str, "title": str, "context": str,
        "question": str, "answers": [{"text": str, "answer_start": int}, ...]}``.

    Raises:
        ValueError: invalid JSON or a missing / mistyped field (names file and line).
    """
    obj, raw = _load_json(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise DataFormatError(path, 1, 'expected a top-level object with a "data" list')
    records: list[dict[str, Any]] = []
    for a, article in enumerate(obj["data"]):
        title = article.get("title", "") if isinstance(article, dict) else ""
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise DataFormatError(
                path,
                _line_of(raw, str(title)) if title else None,
                f'data[{a}] has no "paragraphs" list',
            )
        for p, para in enumerate(paragraphs):
            where = f"data[{a}].paragraphs[{p}]"
            if not isinstance(para, dict) or not isinstance(para.get("context"), str):
                line = _line_of(raw, f'"{para.get("id")}"') if isinstance(para, dict) else None
                raise DataFormatError(path, line, f'{where} has no string "context"')
            context = para["context"]
            for q, qa in enumerate(para.get("qas", [])):
                qid = qa.get("id") if isinstance(qa, dict) else None
                # line of the question id, computed only for an error message (O(file size))
                line = functools.partial(lambda i: _line_of(raw, f'"{i}"') if i else None, qid)
                if not isinstance(qa, dict) or not isinstance(qa.get("question"), str):
                    raise DataFormatError(
                        path, line(), f'{where}.qas[{q}] has no string "question"'
                    )
                answers = []
                for ans in qa.get("answers", []):
                    if not (
                        isinstance(ans, dict)
                        and isinstance(ans.get("text"), str)
                        and isinstance(ans.get("answer_start"), int)
                    ):
                        raise DataFormatError(
                            path,
                            line(),
                            f"{where}.qas[{q}] ({qid}): answers need text and integer answer_start",
                        )
                    text, start = ans["text"], ans["answer_start"]
                    if fix_offsets and (start < 0 or context[start : start + len(text)] != text):
                        start = _nearest(context, text, start)
                    answers.append({"text": text, "answer_start": start})
                records.append(
                    {
                        "id": str(qid if qid is not None else f"{where}.qas[{q}]"),
                        "title": str(title),
                        "context": context,
                        "question": qa["question"],
                        "answers": answers,
                    }
                )
    return records


def _nearest(context: str, text: str, start: int) -> int:
    """Offset of the occurrence of ``text`` in ``context`` closest to ``start`` (-1 if none)."""
    if not text:
        return -1
    best, pos = -1, context.find(text)
    while pos >= 0:
        if best < 0 or abs(pos - start) < abs(best - start):
            best = pos
        pos = context.find(text, pos + 1)
    return best


def read_webqa(path: PathLike) -> list[dict[str, Any]]:
    """Read WebQA / SogouQA JSON in the bert4keras layout.

    Args:
        path: plain / compressed JSON file: a list (or an id-keyed object) of
            ``{"id", "question", "passages": [{"passage": str, "answer": str}, ...]}``;
            ``answer`` is ``""`` for passages without the answer.

    Returns:
        ``[{"id": str, "question": str, "answer": str, "passages": [{"passage", "answer"}]}]``
        where the top-level ``answer`` is the most frequent non-empty passage answer (ties:
        first seen; ``""`` if no passage has one).

    Raises:
        ValueError: invalid JSON or a missing / mistyped field (names file and line).
    """
    obj, raw = _load_json(path)
    items = list(obj.values()) if isinstance(obj, dict) else obj
    if not isinstance(items, list):
        raise DataFormatError(path, 1, "expected a JSON list of questions")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        ok = isinstance(item, dict) and isinstance(item.get("question"), str)
        line = _line_of(raw, json.dumps(item["question"], ensure_ascii=False)) if ok else None
        if ok and line is None:  # file stores \\uXXXX escapes
            line = _line_of(raw, json.dumps(item["question"], ensure_ascii=True))
        if not ok or not isinstance(item.get("passages"), list):
            raise DataFormatError(
                path, line, f'item {i} needs a string "question" and a "passages" list'
            )
        passages = []
        for j, p in enumerate(item["passages"]):
            if not (
                isinstance(p, dict)
                and isinstance(p.get("passage"), str)
                and isinstance(p.get("answer", ""), str)
            ):
                raise DataFormatError(
                    path, line, f'item {i} passage {j} needs string "passage" and "answer"'
                )
            passages.append({"passage": p["passage"], "answer": p.get("answer", "")})
        votes = Counter(p["answer"] for p in passages if p["answer"])
        answer = max(votes, key=lambda k: votes[k]) if votes else ""
        out.append(
            {
                "id": str(item.get("id", i)),
                "question": item["question"],
                "answer": answer,
                "passages": passages,
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# Text pairs
# ---------------------------------------------------------------------------------------------


def read_pairs_tsv(
    path: PathLike, source_col: int | None = None, target_col: int | None = None
) -> list[tuple[str, str]]:
    """Read tab-separated (source, target) text pairs, e.g. text -> headline.

    Column order by default (both ``None``), from the first non-blank line:

    * 2 columns: ``target \\t source`` — the LCSTS (``headline \\t text``) and CLGE CSL
      (``title \\t abstract``) layout;
    * 3 columns: ``prompt \\t source \\t target`` — the ydli-ai CSL layout
      (``to title \\t abstract \\t title``; the constant prompt is dropped).

    Args:
        path: plain / compressed UTF-8 file, no header, no quoting; blank lines are skipped.
        source_col: explicit source column (then ``target_col`` is required too).
        target_col: explicit target column.

    Returns:
        ``[(source, target), ...]`` in file order, e.g. ``("日前，方舟子发文...", "林志颖公司...")``.

    Raises:
        ValueError: a line whose column count differs from the first line's (default mode) or is
            too small for the requested columns (names file and line); only one of the two
            columns given.
    """
    if (source_col is None) != (target_col is None):
        raise ValueError("give both source_col and target_col, or neither")
    pairs: list[tuple[str, str]] = []
    ncols: int | None = None
    for lineno, line in enumerate(iter_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if source_col is None:
            if ncols is None:
                ncols = len(parts)
                if ncols not in (2, 3):
                    raise DataFormatError(
                        path,
                        lineno,
                        f"expected 2 (target, source) or 3 (prompt, source, target)"
                        f" tab-separated columns, got {ncols}",
                    )
            if len(parts) != ncols:
                raise DataFormatError(
                    path, lineno, f"expected {ncols} tab-separated columns, got {len(parts)}"
                )
            pairs.append((parts[1], parts[0]) if ncols == 2 else (parts[1], parts[2]))
        else:
            assert target_col is not None
            try:
                pairs.append((parts[source_col], parts[target_col]))
            except IndexError:
                raise DataFormatError(
                    path,
                    lineno,
                    f"need columns {source_col} and {target_col}, got {len(parts)} columns",
                ) from None
    return pairs


# ---------------------------------------------------------------------------------------------
# MNIST IDX
# ---------------------------------------------------------------------------------------------

_IDX_IMAGES, _IDX_LABELS = 0x00000803, 0x00000801


def read_mnist_idx(path: PathLike) -> torch.Tensor:
    """Read an MNIST IDX file (plain or ``.gz``).

    Format (big-endian): magic ``0x00000803`` (images: count, rows, cols) or ``0x00000801``
    (labels: count), then the uint8 payload.

    Args:
        path: ``*-images-idx3-ubyte[.gz]`` or ``*-labels-idx1-ubyte[.gz]``.

    Returns:
        images: ``(N, rows, cols)`` uint8 (``(N, 28, 28)`` for MNIST, 0 = background), or
        labels: ``(N,)`` int64.

    Raises:
        ValueError: unknown magic number, truncated header or a payload size that does not
            match the header (message names the file; line 1 = the header).
    """
    data = read_bytes(path)
    if len(data) < 8:
        raise DataFormatError(path, 1, f"IDX header truncated ({len(data)} bytes)")
    (magic,) = struct.unpack(">I", data[:4])
    if magic not in (_IDX_IMAGES, _IDX_LABELS):
        raise DataFormatError(
            path,
            1,
            f"bad IDX magic number 0x{magic:08x}; expected 0x{_IDX_IMAGES:08x} (images) "
            f"or 0x{_IDX_LABELS:08x} (labels)",
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(path, 1, f"IDX header truncated ({len(data)} < {header} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(dims)
    if len(data) != expected:
        raise DataFormatError(
            path,
            1,
            f"IDX payload size mismatch: header says {dims} -> {expected} bytes, file has "
            f"{len(data)}",
        )
    flat = torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8)
    if magic == _IDX_LABELS:
        return flat.to(torch.int64)
    return flat.reshape(dims)
