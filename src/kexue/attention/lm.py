r"""A causal character language model over any attention pattern (article 1's quality test).

Embeddings plus learned positions, pre-norm decoder-only blocks of
:mod:`kexue.attention.transformer` with the chosen self-attention pattern, a final LayerNorm and
an output layer tied to the embeddings:

.. math:: p(x_t \mid x_{<t}) = \mathrm{softmax}(\mathrm{LN}(h_t) E^\top),\qquad
   \mathrm{bpc} = \overline{-\log_2 p(x_t \mid x_{<t})}.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kexue.attention.transformer import TransformerDecoderBlock
from kexue.core.checks import check_positive_int

_PATTERN_ARGS = {
    "local": "window", "atrous": "rate", "sparse": "rate", "strided": "rate", "fixed": "rate"
}  # fmt: skip


class CharLM(nn.Module):
    """Causal character LM: embeddings + learned positions, decoder-only blocks, tied output.

    Args:
        vocab_size: vocabulary size ``v``.
        max_len: maximum length ``n``.
        dim: width ``d``.
        num_heads: heads ``h``.
        num_layers: number of blocks.
        pattern: self-attention pattern of every block (``"full"``, ``"local"``, ``"atrous"``,
            ``"sparse"``, ``"strided"``, ``"fixed"``).
        window: local window (``pattern="local"``).
        rate: atrous/sparse rate; the stride ``l`` of the Sparse Transformer's strided/fixed
            patterns (fixed: summary size 1).
        dropout: dropout probability.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        max_len: int,
        dim: int,
        num_heads: int,
        num_layers: int,
        pattern: str = "full",
        window: int = 16,
        rate: int = 16,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, v in (("vocab_size", vocab_size), ("max_len", max_len), ("dim", dim),
                        ("num_heads", num_heads), ("num_layers", num_layers)):  # fmt: skip
            check_positive_int(v, name)
        kw = {}
        if pattern in _PATTERN_ARGS:
            kw[_PATTERN_ARGS[pattern]] = window if pattern == "local" else rate
        self.embed = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.embed.weight, std=dim**-0.5)  # tied output: unit-variance logits
        self.pos = nn.Parameter(torch.zeros(max_len, dim))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(
            TransformerDecoderBlock(
                dim, num_heads, pattern=pattern, cross_attention=False, dropout=dropout, **kw
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Next-character logits.

        Args:
            x: ``(b, n)`` token ids, ``n <= max_len``.

        Returns:
            ``(b, n, v)`` logits for positions ``1..n``.
        """
        if x.dim() != 2 or x.dtype != torch.long:
            raise ValueError(f"x must be a (b, n) long tensor, got {tuple(x.shape)} {x.dtype}")
        if x.shape[1] > self.pos.shape[0]:
            raise ValueError(f"x has length {x.shape[1]} > max_len {self.pos.shape[0]}")
        h = self.embed(x) + self.pos[: x.shape[1]]
        for blk in self.blocks:
            h = blk(h)
        return self.norm(h) @ self.embed.weight.T


@torch.no_grad()
def bits_per_char(model: nn.Module, windows: torch.Tensor, batch_size: int = 32) -> float:
    r"""Mean :math:`-\log_2 p(x_t \mid x_{<t})` over every target of ``windows``.

    Args:
        model: maps ``(b, n)`` ids to ``(b, n, v)`` logits.
        windows: ``(N, n + 1)`` ids: inputs ``[:, :-1]``, targets ``[:, 1:]``.
        batch_size: windows per forward pass.

    Returns:
        Bits per character (the model's train/eval mode is restored).
    """
    was = model.training
    model.eval()
    nats, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        w = windows[i : i + batch_size]
        logits = model(w[:, :-1])
        nats += nn.functional.cross_entropy(
            logits.flatten(0, 1), w[:, 1:].flatten(), reduction="sum"
        ).item()
        count += w[:, 1:].numel()
    model.train(was)
    return nats / max(count, 1) / math.log(2)


def ngram_bpc(train: torch.Tensor, test: torch.Tensor, vocab_size: int, order: int) -> float:
    r"""Bits/char of an add-one-smoothed unigram (``order=1``) or bigram (``order=2``) model.

    The baseline that makes an LM's bpc meaningful: :math:`p(x_t) = (c(x_t)+1)/(N+v)`, or
    :math:`p(x_t \mid x_{t-1}) = (c(x_{t-1}x_t)+1)/(c(x_{t-1})+v)`, fitted on ``train``.

    Args:
        train: ``(N,)`` ids of the training stream.
        test: ``(M,)`` ids of the test stream.
        vocab_size: ``v``.
        order: 1 or 2.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    v = vocab_size
    if order == 1:
        counts = torch.bincount(train, minlength=v).double()
        logp = torch.log((counts + 1) / (counts.sum() + v))
        return float(-logp[test].mean() / math.log(2))
    pair = torch.bincount(train[:-1] * v + train[1:], minlength=v * v).double().view(v, v)
    prev = pair.sum(1, keepdim=True)
    logp = torch.log((pair[test[:-1], test[1:]] + 1) / (prev[test[:-1], 0] + v))
    return float(-logp.mean() / math.log(2))
