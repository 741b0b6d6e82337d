"""A fastText-style classifier: the embedding-heavy model of article 4's Lazy-optimizer test.

:math:`\\mathrm{logits} = W\\,\\frac{1}{|F|}\\sum_{f\\in F} E_f + b` over the text's character
unigram and bigram features :math:`F` (Joulin et al., 2017). Most rows of :math:`E` are rare, so
Adam's momentum keeps moving rows that are absent from the batch: the setting Lazy targets.
"""

from __future__ import annotations

import re

import torch
from torch import nn

_CJK = re.compile(r"[^\u4e00-\u9fff]")


def cjk_only(text: str) -> str:
    """``text`` without anything but CJK unified ideographs (punctuation style gives nothing away)."""
    return _CJK.sub("", text)


def char_features(text: str, max_chars: int) -> list[str]:
    """Unigrams and bigrams of the first ``max_chars`` CJK characters of ``text``."""
    s = cjk_only(text)[:max_chars]
    return list(s) + [s[i : i + 2] for i in range(len(s) - 1)]


def collate_bags(
    batch: list[tuple[torch.Tensor, int]],
) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``[(ids (n_i,), label)]`` -> ``((flat ids (sum n_i,), offsets (b,)), labels (b,))``."""
    ids = [x for x, _ in batch]
    offsets = torch.tensor([0] + [len(x) for x in ids[:-1]]).cumsum(0)
    return (torch.cat(ids), offsets), torch.tensor([y for _, y in batch])


class BagClassifier(nn.Module):
    """fastText-style classifier: mean of feature embeddings, then a linear layer.

    Args:
        num_features: ``v``, rows of the embedding table.
        dim: ``d``.
        num_classes: ``k``.
    """

    def __init__(self, num_features: int, dim: int, num_classes: int) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(num_features, dim, mode="mean")
        self.head = nn.Linear(dim, num_classes)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """``ids`` ``(n,)`` flat feature ids, ``offsets`` ``(b,)`` -> logits ``(b, k)``."""
        return self.head(self.embedding(ids, offsets))
