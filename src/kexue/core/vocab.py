"""A token <-> id vocabulary with padding / unknown / other special tokens (``kexue.data.Vocab``).

Ids are assigned as: specials first in the order given (``pad`` = 0, ``unk`` = 1 by default),
then tokens by decreasing frequency, ties broken by first appearance in the corpus (so ``build``
is deterministic for a fixed corpus order).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from kexue.core.checks import check_positive_int

__all__ = ["Vocab"]


class Vocab:
    """Bidirectional token <-> id map.

    Args:
        tokens: the id -> token table; must be unique and contain ``pad`` and ``unk`` (if those
            are not ``None``).
        pad: padding token (``None``: no padding token).
        unk: unknown token used by :meth:`encode` for out-of-vocabulary tokens (``None``:
            unknown tokens raise ``KeyError``).

    Example:
        >>> v = Vocab.build([["a", "b", "a"], ["c"]], specials=("<bos>", "<eos>"))
        >>> v.tokens
        ['<pad>', '<unk>', '<bos>', '<eos>', 'a', 'b', 'c']
        >>> v.encode(["a", "z"])
        [4, 1]
    """

    def __init__(
        self, tokens: Sequence[str], *, pad: str | None = "<pad>", unk: str | None = "<unk>"
    ) -> None:
        self.tokens: list[str] = list(tokens)
        self.index: dict[str, int] = {}
        for i, tok in enumerate(self.tokens):
            if not isinstance(tok, str):
                raise TypeError(f"tokens must be str, got {type(tok).__name__} at id {i}")
            if tok in self.index:
                raise ValueError(f"duplicate token {tok!r} at ids {self.index[tok]} and {i}")
            self.index[tok] = i
        for name, tok in (("pad", pad), ("unk", unk)):
            if tok is not None and tok not in self.index:
                raise ValueError(f"{name} token {tok!r} is not in tokens")
        self.pad, self.unk = pad, unk

    @classmethod
    def build(
        cls,
        corpus: Iterable[Iterable[str]],
        min_freq: int = 1,
        max_size: int | None = None,
        *,
        pad: str | None = "<pad>",
        unk: str | None = "<unk>",
        specials: Sequence[str] = (),
    ) -> Vocab:
        """Count tokens and keep the frequent ones.

        Args:
            corpus: iterable of token sequences (e.g. words per sentence, or strings, which
                iterate as characters).
            min_freq: keep tokens seen at least this often.
            max_size: maximum vocabulary size **including** the special tokens (``None``: no
                limit).
            pad: padding token, id 0 (``None`` to omit).
            unk: unknown token, next id (``None`` to omit).
            specials: further special tokens (e.g. ``"<bos>"``, ``"<eos>"``, ``"[MASK]"``), ids
                after pad/unk in this order.

        Returns:
            The vocabulary: specials, then tokens by decreasing count (ties: first appearance).
        """
        check_positive_int(min_freq, "min_freq")
        head = [t for t in (pad, unk) if t is not None] + list(specials)
        if len(set(head)) != len(head):
            raise ValueError(f"special tokens must be distinct, got {head}")
        if max_size is not None and max_size < len(head):
            raise ValueError(f"max_size={max_size} is smaller than the {len(head)} special tokens")
        counts: Counter[str] = Counter()
        for seq in corpus:
            counts.update(seq)
        # Counter preserves first-insertion order, and sorted() is stable -> ties by first seen.
        ranked = [
            t
            for t, c in sorted(counts.items(), key=lambda kv: -kv[1])
            if c >= min_freq and t not in head
        ]
        if max_size is not None:
            ranked = ranked[: max_size - len(head)]
        return cls(head + ranked, pad=pad, unk=unk)

    # --- lookups --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.index

    def __getitem__(self, token: str) -> int:
        """Id of ``token`` (the unk id if absent and ``unk`` is set)."""
        return self.token_to_id(token)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, pad={self.pad!r}, unk={self.unk!r})"

    @property
    def pad_id(self) -> int:
        """Id of the padding token; ``ValueError`` if there is none."""
        if self.pad is None:
            raise ValueError("this vocabulary has no padding token")
        return self.index[self.pad]

    @property
    def unk_id(self) -> int:
        """Id of the unknown token; ``ValueError`` if there is none."""
        if self.unk is None:
            raise ValueError("this vocabulary has no unknown token")
        return self.index[self.unk]

    def token_to_id(self, token: str) -> int:
        """Id of ``token``; the unk id for unknown tokens (``KeyError`` if no unk token)."""
        i = self.index.get(token)
        if i is None:
            if self.unk is None:
                raise KeyError(f"token {token!r} not in vocabulary and no unk token is set")
            return self.index[self.unk]
        return i

    def id_to_token(self, i: int) -> str:
        """Token of id ``i`` (``IndexError`` outside ``[0, len)``)."""
        if not 0 <= i < len(self.tokens):
            raise IndexError(f"id {i} out of range [0, {len(self.tokens)})")
        return self.tokens[i]

    # --- sequences ------------------------------------------------------------------------------

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Map tokens to ids (unknown -> unk id).

        Args:
            tokens: sequence of ``n`` tokens (a ``str`` encodes its characters).

        Returns:
            ``n`` ids.
        """
        return [self.token_to_id(t) for t in tokens]

    def decode(self, ids: Iterable[int] | torch.Tensor, skip_pad: bool = True) -> list[str]:
        """Map ids back to tokens.

        Args:
            ids: ``n`` ids (list or 1-D integer tensor); negative ids (the ``-1`` padding of
                decoders) are skipped.
            skip_pad: drop the padding token.

        Returns:
            Tokens, at most ``n``.
        """
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"ids must have shape (n,), got {tuple(ids.shape)}")
            ids = ids.tolist()
        pad_id = self.index.get(self.pad) if (skip_pad and self.pad is not None) else None
        return [self.id_to_token(int(i)) for i in ids if int(i) >= 0 and int(i) != pad_id]

    def encode_batch(
        self, batch: Sequence[Iterable[str]], max_len: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode and right-pad a batch.

        Args:
            batch: ``b`` token sequences.
            max_len: truncate to this length ``n`` (default: the longest sequence).

        Returns:
            ``ids``: ``(b, n)`` int64 padded with the pad id; ``mask``: ``(b, n)`` bool,
            True = real token.
        """
        seqs = [self.encode(s) for s in batch]
        if max_len is not None:
            seqs = [s[:max_len] for s in seqs]
        n = max((len(s) for s in seqs), default=0)
        ids = torch.full((len(seqs), n), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(seqs), n), dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.int64)
            mask[i, : len(s)] = True
        return ids, mask

    # --- serialisation --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict ``{"tokens": [...], "pad": str|None, "unk": str|None}``."""
        return {"tokens": list(self.tokens), "pad": self.pad, "unk": self.unk}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocab:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, dict) or not isinstance(d.get("tokens"), list):
            raise ValueError('expected a dict with a "tokens" list')
        return cls(d["tokens"], pad=d.get("pad"), unk=d.get("unk"))
