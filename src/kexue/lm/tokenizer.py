"""A character-level Chinese ``BertTokenizerFast`` built from our own text's vocabulary.

Every non-space character is one token (Chinese BERT vocabularies are essentially
character-level for CJK text; we split Latin letters and digits into characters too, so that a
character offset is a token offset). The vocabulary is

    [PAD] [UNK] [CLS] [SEP] [MASK]  c_1 ... c_V  ##x_1 ... ##x_W

with ``c`` the characters of the training text seen at least ``min_freq`` times (most frequent
first, ties by code point) and ``##x`` continuation pieces for the non-CJK ones, so that the HF
tokenizer itself (whose basic tokenizer keeps Latin words whole) also falls back to characters.
:func:`encode_chars` is the tokenisation every kexue model uses: one id per character.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kexue.core.checks import check_positive_int

__all__ = [
    "SPECIAL_TOKENS",
    "build_tokenizer",
    "char_vocab",
    "encode_chars",
    "load_tokenizer",
    "save_tokenizer",
]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def char_vocab(
    texts: Iterable[str], *, min_freq: int = 1, max_size: int | None = None
) -> list[str]:
    """Characters of ``texts`` (lower-cased, whitespace dropped), most frequent first.

    Args:
        texts: training text, one string per item.
        min_freq: keep characters seen at least this often.
        max_size: keep at most this many characters (``None``: all).

    Returns:
        The characters, sorted by descending count, ties broken by code point (deterministic).

    Raises:
        TypeError: an item of ``texts`` is not a str.
        ValueError: ``min_freq`` / ``max_size`` < 1.
    """
    check_positive_int(min_freq, "min_freq")
    if max_size is not None:
        check_positive_int(max_size, "max_size")
    counts: Counter[str] = Counter()
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"texts must hold str, got {type(t).__name__}")
        counts.update(c for c in t.lower() if not c.isspace())
    for s in SPECIAL_TOKENS:
        counts.pop(s, None)
    chars = sorted((c for c, n in counts.items() if n >= min_freq), key=lambda c: (-counts[c], c))
    return chars[:max_size] if max_size is not None else chars


def build_tokenizer(texts: Iterable[str], *, min_freq: int = 1, max_size: int | None = None) -> Any:
    """A ``transformers.BertTokenizerFast`` whose vocabulary is the characters of ``texts``.

    Args:
        texts: training text.
        min_freq: see :func:`char_vocab`.
        max_size: see :func:`char_vocab` (continuation pieces ``##x`` come on top).

    Returns:
        The tokenizer (``do_lower_case=True``; ids 0-4 are ``[PAD] [UNK] [CLS] [SEP] [MASK]``).
    """
    from transformers import BertTokenizerFast

    chars = char_vocab(texts, min_freq=min_freq, max_size=max_size)
    tokens = list(SPECIAL_TOKENS) + chars + ["##" + c for c in chars if not _is_cjk(c)]
    vocab = {t: i for i, t in enumerate(tokens)}
    return BertTokenizerFast(vocab=vocab, do_lower_case=True, tokenize_chinese_chars=True)


def _vocab_of(tokenizer: Any) -> dict[str, int]:
    # get_vocab() builds a new dict on every call: cache it on the tokenizer object
    cached = getattr(tokenizer, "_kexue_vocab", None)
    if cached is None or len(cached) != len(tokenizer):
        cached = dict(tokenizer.get_vocab())
        tokenizer._kexue_vocab = cached
    return cached


def encode_chars(tokenizer: Any, text: str) -> list[int]:
    """One token id per non-space character of ``text`` (lower-cased; unknown -> ``[UNK]``).

    Args:
        tokenizer: any BERT-style tokenizer with ``get_vocab()`` and ``unk_token_id``.
        text: the text.

    Returns:
        ``len([c for c in text if not c.isspace()])`` ids.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    vocab, unk = _vocab_of(tokenizer), tokenizer.unk_token_id
    return [vocab.get(c, vocab.get(c.lower(), unk)) for c in text if not c.isspace()]


def save_tokenizer(tokenizer: Any, path: str | os.PathLike) -> Path:
    """Write the tokenizer's HF files (``tokenizer.json``, ``tokenizer_config.json``,
    ``vocab.txt``) into directory ``path``; returns it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(path))
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    (path / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
    return path


def load_tokenizer(path: str | os.PathLike) -> Any:
    """Load a tokenizer from a local directory (never from a hub).

    Raises:
        FileNotFoundError: ``path`` is not a directory or holds no tokenizer files.
    """
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory not found: {path}")
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
        # tokenizer_config.json alone would give a 5-token tokenizer that silently maps
        # every character to [UNK]
        raise FileNotFoundError(
            f"{path} has no tokenizer vocabulary (expected tokenizer.json or vocab.txt)"
        )
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
