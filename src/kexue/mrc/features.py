r"""Inputs and targets of the MLM reader (Su, 《"非自回归"也不差：基于MLM的阅读理解问答》, 2019).

Layout (masks first, all segment ids 0; bert4keras ``task_reading_comprehension_by_mlm.py``)::

    [CLS] [MASK] x L [SEP] question [SEP] passage [SEP]

The MLM head at slot $t\in\{1..L\}$ predicts the $t$-th answer token, and ``[SEP]`` where the
answer ends. The target is ``a_1 .. a_{min(r, L-1)} [SEP]`` right-padded with ``[PAD]`` (id 0):
a long answer keeps its first ``L - 1`` tokens and *always* ends in ``[SEP]``; an empty answer
("no answer in this passage") is ``[SEP]`` at slot 1.

Tokenisation is one id per non-space character (:func:`char_ids`), so a token span is a
character span and answers are read back from the passage text by offsets. Passages are
normalised as in the original code (space, 、 ； ， -> ``,``). A passage longer than
``max_passage_len`` tokens is cut into windows of that length with ``stride`` (no silent
truncation); each window is scored like a separate passage.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "Encoded",
    "SpecialIds",
    "answer_in_window",
    "build_inputs",
    "build_target",
    "char_ids",
    "collate",
    "normalize_passage",
    "special_ids",
    "windows",
]

_NORM = re.compile(" |、|；|，")


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the BERT special tokens."""

    pad: int
    unk: int
    cls: int
    sep: int
    mask: int


def special_ids(tokenizer: Any) -> SpecialIds:
    """Read the special ids of a BERT-style tokenizer (raises ``ValueError`` if one is missing)."""
    ids = {}
    for name in ("pad", "unk", "cls", "sep", "mask"):
        v = getattr(tokenizer, f"{name}_token_id", None)
        if v is None:
            raise ValueError(f"tokenizer has no [{name.upper()}] token")
        ids[name] = int(v)
    return SpecialIds(**ids)


def _vocab_of(tokenizer: Any) -> dict[str, int]:
    cached = getattr(tokenizer, "_kexue_vocab", None)
    if cached is None or len(cached) != len(tokenizer):
        cached = dict(tokenizer.get_vocab())
        tokenizer._kexue_vocab = cached
    return cached


def char_ids(tokenizer: Any, text: str) -> tuple[list[int], list[int]]:
    """Character tokenisation: one id per non-space character (lower-cased fallback, else UNK).

    Args:
        tokenizer: a BERT-style tokenizer (``get_vocab()``, ``unk_token_id``).
        text: the text.

    Returns:
        ``(ids, offsets)``: ``offsets[i]`` is the index in ``text`` of token ``i``'s character.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    vocab, unk = _vocab_of(tokenizer), int(tokenizer.unk_token_id)
    ids, offsets = [], []
    for i, c in enumerate(text):
        if c.isspace():
            continue
        ids.append(vocab.get(c, vocab.get(c.lower(), unk)))
        offsets.append(i)
    return ids, offsets


def normalize_passage(passage: str) -> str:
    """The original code's passage normalisation: every space, 、, ；, ， becomes ``,``."""
    return _NORM.sub(",", passage)


def answer_in_window(answer: str, text: str) -> bool:
    """Whether ``answer`` labels a window whose text is ``text`` (design note 02, section 2
    step 4): every whitespace-separated part of the answer occurs in the normalised text, each
    on its own (a multi-part answer ``"A B"`` need not occur joined). Empty answer: False."""
    parts = [normalize_passage(a) for a in answer.split()]
    if not parts:
        return False
    norm = normalize_passage(text)
    return all(part in norm for part in parts)


def windows(n: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Token windows ``[start, end)`` of at most ``size`` covering ``range(n)``, ``stride`` apart.

    The last window ends at ``n`` (it may overlap its neighbour more than ``size - stride``).
    ``n == 0`` gives ``[(0, 0)]`` (one empty passage).

    Raises:
        ValueError: ``size < 1`` or ``stride`` not in ``[1, size]``.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if not 1 <= stride <= size:
        raise ValueError(f"stride must be in [1, size={size}], got {stride}")
    if n <= size:
        return [(0, n)]
    out, start = [], 0
    while start + size < n:
        out.append((start, start + size))
        start += stride
    out.append((n - size, n))
    return out


def build_target(answer_ids: Sequence[int], max_answer_len: int, sep_id: int) -> list[int]:
    """Slot targets ``a_1..a_{min(r, L-1)} [SEP]`` right-padded with 0 to length ``L``.

    Example: ``L = 4``: ``ab -> [a, b, SEP, 0]``, ``'' -> [SEP, 0, 0, 0]``,
    ``abcdef -> [a, b, c, SEP]``.
    """
    if max_answer_len < 1:
        raise ValueError(f"max_answer_len must be >= 1, got {max_answer_len}")
    body = list(answer_ids)[: max_answer_len - 1]
    return body + [sep_id] + [0] * (max_answer_len - 1 - len(body))


@dataclass
class Encoded:
    """One input sequence of the MLM reader.

    Attributes:
        input_ids: ``[CLS] [MASK]*L [SEP] q [SEP] p [SEP]`` (python list, length n).
        passage_ids: the passage tokens *including* the final ``[SEP]`` (the decoding table).
        passage_offsets: character offset in the passage text of each passage token.
        passage_start: index in ``input_ids`` of the first passage token.
    """

    input_ids: list[int]
    passage_ids: list[int]
    passage_offsets: list[int]
    passage_start: int


def build_inputs(
    question_ids: Sequence[int],
    passage_ids: Sequence[int],
    passage_offsets: Sequence[int],
    ids: SpecialIds,
    *,
    max_answer_len: int,
    max_question_len: int,
) -> Encoded:
    """Lay out ``[CLS] [MASK]*L [SEP] q [SEP] p [SEP]`` (segment ids are all 0).

    The question keeps its first ``max_question_len - 1`` tokens (then ``[SEP]``); the passage
    window is taken as given (cut it with :func:`windows`).
    """
    q = list(question_ids)[: max_question_len - 1]
    head = [ids.cls] + [ids.mask] * max_answer_len + [ids.sep] + q + [ids.sep]
    p = list(passage_ids) + [ids.sep]
    return Encoded(head + p, p, list(passage_offsets), len(head))


def collate(seqs: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into ``(ids (b, n) long, attention_mask (b, n) bool, True = token)``."""
    if not seqs:
        raise ValueError("collate needs at least one sequence")
    n = max(len(s) for s in seqs)
    out = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), n, dtype=torch.bool)
    for b, s in enumerate(seqs):
        out[b, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[b, : len(s)] = True
    return out, mask
