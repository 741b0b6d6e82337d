r"""Small Transformer encoder for the character tagger, built on :mod:`kexue.attention`.

$$h^{(0)}=W_{\rm in}\,\mathrm{Emb}(x)+P,\qquad h^{(l)}=\mathrm{Block}_l\big(h^{(l-1)},M\big),
\qquad \mathrm{Enc}(x)=\mathrm{LN}\big(h^{(L)}\big),$$

where each block is the pre-norm :class:`kexue.attention.TransformerEncoderBlock`
(self-attention restricted to a pattern, e.g. ``local`` with half-width $w$ so a sentence of $t$
characters costs $O(t\,w)$ instead of $O(t^2)$), $M$ the key padding mask (padding is never
attended, so the outputs at valid positions do not depend on how much padding follows), and $P$
either the sinusoidal table of Vaswani et al. (2017),
$P_{i,2j}=\sin(i/10000^{2j/d}),\ P_{i,2j+1}=\cos(i/10000^{2j/d})$ (any length), or learned
absolute positions (at most ``max_positions``). The final LayerNorm is the usual closing norm of a
pre-norm stack.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from kexue.attention import TransformerEncoderBlock
from kexue.core.checks import check_positive_int

POSITIONS = ("sinusoidal", "learned")
TRANSFORMER_DEFAULTS: dict[str, Any] = {
    "num_heads": 4,
    "pattern": "full",
    "window": None,
    "rate": None,
    "positions": "sinusoidal",
    "max_positions": 512,
    "ffn_dim": None,
}


def sinusoidal_positions(n: int, d: int, device: torch.device | None = None) -> Tensor:
    """The ``(t, d)`` sinusoidal position table for ``t = n`` positions (``d`` even or odd; float32)."""
    pos = torch.arange(n, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(
        torch.arange(0, d, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / d)
    )
    out = torch.zeros(n, d, device=device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return out


class TransformerEncoder(nn.Module):
    """Positions + ``num_layers`` pre-norm encoder blocks + final LayerNorm.

    Args:
        input_dim: size of the incoming (embedding) features.
        embed_dim: model width ``d`` (= the tagger's ``hidden_dim``).
        num_layers: blocks ``L``.
        num_heads: heads ``h`` (``d`` divisible by ``h``).
        pattern: self-attention pattern of :class:`kexue.attention.MultiHeadSelfAttention`
            (``"full"``, ``"local"``, ``"atrous"``, ...).
        window: local half-width ``w`` (``pattern="local"``: position ``i`` sees ``|i-j| <= w``).
        rate: atrous/sparse rate or strided/fixed stride.
        positions: ``"sinusoidal"`` or ``"learned"``.
        max_positions: longest sentence with learned positions.
        ffn_dim: feed-forward width (default ``4 d``).
        dropout: dropout on attention probabilities and residual branches.

    Raises:
        ValueError: on an unknown ``positions`` or invalid sizes.
    """

    def __init__(
        self,
        input_dim: int,
        embed_dim: int,
        *,
        num_layers: int = 2,
        num_heads: int = 4,
        pattern: str = "full",
        window: int | None = None,
        rate: int | None = None,
        positions: str = "sinusoidal",
        max_positions: int = 512,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
        check_positive_int(num_layers, "num_layers")
        self.positions = positions
        self.max_positions = check_positive_int(max_positions, "max_positions")
        self.inp = nn.Linear(input_dim, embed_dim) if input_dim != embed_dim else nn.Identity()
        self.pos = nn.Embedding(max_positions, embed_dim) if positions == "learned" else None
        if self.pos is not None:
            nn.init.normal_(self.pos.weight, std=0.02)
        self.blocks = nn.ModuleList(
            TransformerEncoderBlock(
                embed_dim,
                num_heads,
                ffn_dim=ffn_dim,
                pattern=pattern,
                rate=rate,
                window=window,
                dropout=dropout,
            )  # fmt: skip
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Encode.

        Args:
            x: ``(b, t, input_dim)`` features.
            mask: ``(b, t)`` bool, True = valid character (right padding).

        Returns:
            ``(b, t, d)``, zero at padded positions.

        Raises:
            ValueError: ``t > max_positions`` with learned positions.
        """
        n = x.shape[1]
        h = self.inp(x)  # (b, t, d)
        if self.pos is None:
            h = h + sinusoidal_positions(n, h.shape[2], h.device).to(h.dtype)
        else:
            if n > self.max_positions:
                raise ValueError(
                    f"sentence length {n} exceeds max_positions={self.max_positions} "
                    "(learned positions); use positions='sinusoidal' or a larger max_positions"
                )
            h = h + self.pos.weight[:n].to(h.dtype)
        for block in self.blocks:
            h = block(h, mask)
        return self.norm(h) * mask.unsqueeze(2).to(h.dtype)
