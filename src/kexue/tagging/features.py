r"""Token features for unknown words: word dropout, lowercasing with a case feature, a char CNN.

A word tagger trained on a small set meets many words at test time that it never saw; with a
plain vocabulary they all map to ``<unk>``, whose embedding was never trained. Three remedies
(Lample et al. 2016; Ma & Hovy 2016), each optional and stored with the model:

* **word dropout**: in training, each valid token id is replaced by ``<unk>`` with probability
  $p$, so $e_{\rm unk}$ is learned as "some word the model does not know";
* **lowercasing + case feature**: the vocabulary is built on $\operatorname{lower}(w)$ and the
  case class $c(w)\in\{$no letters, lower, UPPER, Title, mIxed$\}$ gets its own small embedding,
  so "Apple" and "apple" share a word vector while the capital is still seen;
* **char CNN** (words only): a token's characters $x_1..x_L$ are embedded, convolved (width 3)
  and max-pooled, $$h_w=\max_{j\le L}\big(W * [E_{x_{j-1}};E_{x_j};E_{x_{j+1}}]+b\big)_{\cdot},$$
  and $h_w$ is concatenated to the word embedding, so an unseen word still has a representation
  built from its spelling.

With the case feature or the char CNN the tagger's ids are packed as ``(b, t, 2 + L)``: column 0
the word id, column 1 the case class (0 at padding), columns ``2:`` the character ids (0 = pad,
1 = unknown character, first ``L = max_word_chars`` characters). Without them ids stay ``(b, t)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

FEATURE_DEFAULTS: dict[str, Any] = {
    "word_dropout": 0.0,
    "lowercase": False,
    "case_dim": 8,
    "char_filters": 0,
    "char_dim": 32,
    "max_word_chars": 20,
    "char_vocab": None,
}
CASE_CLASSES = 6  # 0 pad, 1 no cased letter, 2 lower, 3 UPPER, 4 Title, 5 mIxed


def case_class(token: str) -> int:
    """Case class of ``token``: 1 no cased letter, 2 lower, 3 UPPER, 4 Title, 5 mixed."""
    if token.lower() == token.upper():
        return 1
    if token.islower():
        return 2
    if token.isupper():
        return 3
    if token[:1].isupper() and (token[1:].islower() or token[1:].lower() == token[1:].upper()):
        return 4
    return 5


def check_features(features: dict[str, Any] | None, units: str) -> dict[str, Any]:
    """Validated full feature dict (defaults filled in).

    Raises:
        ValueError: unknown keys, ``word_dropout`` outside [0, 1), sizes < 1, a char CNN for
            ``units="chars"`` or without ``char_vocab``. TypeError: wrong value types.
    """
    feats = dict(features or {})
    unknown = sorted(set(feats) - set(FEATURE_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown features {unknown}; known: {sorted(FEATURE_DEFAULTS)}")
    out = {**FEATURE_DEFAULTS, **feats}
    p = out["word_dropout"]
    if isinstance(p, bool) or not isinstance(p, int | float):
        raise TypeError(f"word_dropout must be a float, got {type(p).__name__}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"word_dropout must be in [0, 1), got {p}")
    if not isinstance(out["lowercase"], bool):
        raise TypeError(f"lowercase must be a bool, got {out['lowercase']!r}")
    for name, low in (("case_dim", 1), ("char_filters", 0), ("char_dim", 1), ("max_word_chars", 1)):
        v = out[name]
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        if v < low:
            raise ValueError(f"{name} must be >= {low}, got {v}")
    if out["char_filters"]:
        if units != "words":
            raise ValueError("a char CNN (char_filters > 0) needs units='words'")
        cv = out["char_vocab"]
        if not isinstance(cv, list) or cv[:2] != ["<pad>", "<unk>"]:
            raise ValueError("char_filters > 0 needs char_vocab, a list starting '<pad>', '<unk>'")
    return out


def packed(features: dict[str, Any]) -> bool:
    """Do these features need ``(b, t, 2 + L)`` ids (case feature or char CNN)?"""
    return bool(features["lowercase"] or features["char_filters"])


def pack_ids(
    sentences: Sequence[Sequence[str]],
    word_ids: Tensor,
    features: dict[str, Any],
    char_index: dict[str, int],
) -> Tensor:
    """Word ids ``(b, t)`` -> packed ``(b, t, 2 + L)`` ids (see the module docstring)."""
    b, t = word_ids.shape
    width = features["max_word_chars"] if features["char_filters"] else 0
    out = torch.zeros(b, t, 2 + width, dtype=torch.long)
    out[..., 0] = word_ids
    for i, s in enumerate(sentences):
        for j, tok in enumerate(s):
            out[i, j, 1] = case_class(tok)
            if width:
                ids = [char_index.get(c, 1) for c in tok[:width]]
                if ids:
                    out[i, j, 2 : 2 + len(ids)] = torch.tensor(ids)
    return out


def drop_words(ids: Tensor, mask: Tensor, p: float, unk: int = 1) -> Tensor:
    """Replace each valid word id by ``unk`` with probability ``p`` (global torch RNG).

    Args:
        ids: ``(b, t)`` word ids.
        mask: ``(b, t)`` bool, True = valid token.
        p: drop probability.

    Returns:
        ``(b, t)`` ids (a new tensor; ``ids`` is not modified).
    """
    if p <= 0:
        return ids
    drop = (torch.rand(ids.shape, device=ids.device) < p) & mask & (ids > unk)
    return ids.masked_fill(drop, unk)


class CharCNN(nn.Module):
    """Per-token char CNN: embed, Conv1d(width 3), max over the token's characters.

    Args:
        num_chars: character vocabulary size (id 0 = pad).
        char_dim: character embedding size.
        filters: output size per token.
    """

    def __init__(self, num_chars: int, char_dim: int, filters: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_chars, char_dim, padding_idx=0)
        self.conv = nn.Conv1d(char_dim, filters, kernel_size=3, padding=1)

    def forward(self, chars: Tensor) -> Tensor:
        """Token vectors.

        Args:
            chars: ``(b, t, L)`` character ids, 0 = padding.

        Returns:
            ``(b, t, filters)``; 0 for tokens without characters (padding positions).
        """
        b, t, n = chars.shape
        flat = chars.reshape(b * t, n)
        h = self.conv(self.embed(flat).transpose(1, 2))  # (b t, filters, L)
        valid = (flat > 0).unsqueeze(1)
        h = h.masked_fill(~valid, float("-inf")).amax(2)  # max over the token's characters
        h = h.masked_fill(~valid.any(2), 0.0)
        return h.reshape(b, t, -1)
