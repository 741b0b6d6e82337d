r"""The VQ-VAE: conv encoder, vector quantiser, conv decoder with residual blocks (Su 2019).

.. math::
    z = E(x) \in \mathbb{R}^{b \times h \times w \times d}, \quad
    \tilde z = z + \mathrm{sg}[z_q - z], \quad \hat x = D(\tilde z),

    \mathcal L = \overline{(x - \hat x)^2} + \mathcal L_\text{vq}
    \quad(\text{codebook} + \beta \cdot \text{commitment}; see :mod:`kexue.vq.quantizer`).

The layout follows Su's Keras script (after nadavbh12/VQ-VAE): ``downsample`` stride-2 4x4
convolutions with BatchNorm and ReLU between them, then residual blocks
``x + Conv1x1(ReLU(BN(Conv3x3(ReLU(x)))))``; the decoder mirrors it with transposed
convolutions and ends in ``tanh`` (images in [-1, 1]). Each stride-2 layer halves the side:
28x28 -> 7x7 codes for MNIST with ``downsample=2``, 64x64 -> 16x16, 128x128 -> 32x32 (Su's
CelebA setting). The quantiser works channels last: the encoder's ``(b, d, h, w)`` output is
permuted to ``(b, h, w, d)`` before the search (quantising the wrong axis would mix space).
BatchNorm makes codes depend on the batch in training mode: extract codes in ``eval()`` mode.
"""

from __future__ import annotations

import torch
from torch import nn

from kexue.core.checks import check_dtype, check_positive_int, check_tensor
from kexue.vq.quantizer import VectorQuantizer

__all__ = ["VQVAE", "ResidualBlock"]


class ResidualBlock(nn.Module):
    """``x + Conv1x1(ReLU(BN(Conv3x3(ReLU(x)))))`` (Su's ``resnet_block``), shape-preserving.

    Args:
        channels: ``c`` in and out.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (b, c, h, w)`` -> ``(b, c, h, w)``."""
        return x + self.body(x)


class VQVAE(nn.Module):
    """Encoder -> :class:`VectorQuantizer` -> decoder.

    Args:
        in_channels: image channels (1 for MNIST, 3 for colour).
        hidden: width of the conv stacks.
        code_dim: ``d``, the dimension of the codes (encoder output channels).
        num_codes: codebook size ``m`` (ignored when ``quantizer`` is given).
        downsample: number of stride-2 layers; the code map is ``H / 2**downsample`` a side.
        num_res_blocks: residual blocks in the encoder and in the decoder.
        quantizer: a ready quantiser (its ``dim`` must equal ``code_dim``); default
            ``VectorQuantizer(num_codes, code_dim, **quantizer_kwargs)``.
        quantizer_kwargs: keyword arguments of the default quantiser (``commitment``,
            ``ema_decay``, ``dead_code_threshold``, ``init``, ...).

    Shapes:
        images ``x (b, c, H, W)`` in [-1, 1], ``H`` and ``W`` divisible by ``2**downsample``;
        codes ``(b, h, w)`` with ``h = H / 2**downsample``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        hidden: int = 64,
        code_dim: int = 64,
        num_codes: int = 512,
        downsample: int = 2,
        num_res_blocks: int = 2,
        quantizer: VectorQuantizer | None = None,
        quantizer_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        for name, val, lo in (
            ("in_channels", in_channels, 1),
            ("hidden", hidden, 1),
            ("code_dim", code_dim, 1),
            ("num_codes", num_codes, 1),
            ("downsample", downsample, 1),
            ("num_res_blocks", num_res_blocks, 0),
        ):
            check_positive_int(val, name, lo)
        if quantizer is None:
            quantizer = VectorQuantizer(num_codes, code_dim, **(quantizer_kwargs or {}))
        elif not isinstance(quantizer, VectorQuantizer):
            raise TypeError(f"quantizer must be a VectorQuantizer, got {type(quantizer).__name__}")
        if quantizer.dim != code_dim:
            raise ValueError(f"quantizer.dim ({quantizer.dim}) must equal code_dim ({code_dim})")
        self.in_channels, self.downsample = in_channels, downsample

        enc: list[nn.Module] = []
        c = in_channels
        for i in range(downsample):
            enc += [nn.Conv2d(c, hidden, 4, stride=2, padding=1), nn.BatchNorm2d(hidden)]
            if i < downsample - 1:
                enc.append(nn.ReLU())
            c = hidden
        enc += [ResidualBlock(hidden) for _ in range(num_res_blocks)]
        enc += [nn.ReLU(), nn.Conv2d(hidden, code_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = quantizer

        dec: list[nn.Module] = [nn.Conv2d(code_dim, hidden, 3, padding=1)]
        dec += [ResidualBlock(hidden) for _ in range(num_res_blocks)]
        dec.append(nn.ReLU())
        for i in range(downsample):
            last = i == downsample - 1
            out = in_channels if last else hidden
            dec.append(nn.ConvTranspose2d(hidden, out, 4, stride=2, padding=1))
            if not last:
                dec += [nn.BatchNorm2d(hidden), nn.ReLU()]
        dec.append(nn.Tanh())
        self.decoder = nn.Sequential(*dec)

    @property
    def num_codes(self) -> int:
        """Codebook size ``m``."""
        return self.quantizer.num_codes

    def _check_images(self, x: torch.Tensor) -> None:
        check_tensor(x, "x")
        check_dtype(x, "x", "float")
        f = 2**self.downsample
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[2] % f or x.shape[3] % f:
            raise ValueError(
                f"x must have shape (b, {self.in_channels}, H, W) with H, W divisible by {f}, "
                f"got {tuple(x.shape)}"
            )

    def encode_continuous(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder output before quantisation: ``x (b, c, H, W)`` -> ``z (b, h, w, d)``."""
        self._check_images(x)
        return self.encoder(x).permute(0, 2, 3, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Code map of images: ``x (b, c, H, W)`` -> ``codes (b, h, w)`` int64 (no updates)."""
        return self.quantizer.quantize(self.encode_continuous(x))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Images from a code map: ``codes (b, h, w)`` int -> ``(b, c, H, W)`` in [-1, 1].

        Raises:
            TypeError / ValueError: ``codes`` is not an int tensor of rank 3 or out of range.
        """
        check_tensor(codes, "codes")
        if codes.dim() != 3:
            raise ValueError(f"codes must have shape (b, h, w), got {tuple(codes.shape)}")
        return self.decode_vectors(self.quantizer.lookup(codes))

    def decode_vectors(self, z_q: torch.Tensor) -> torch.Tensor:
        """Decoder on (quantised) vectors: ``z_q (b, h, w, d)`` -> ``(b, c, H, W)``."""
        return self.decoder(z_q.permute(0, 3, 1, 2))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))``: ``(b, c, H, W)`` -> ``(b, c, H, W)``."""
        return self.decode(self.encode(x))

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Training pass.

        Args:
            x: ``(b, c, H, W)`` images in [-1, 1].

        Returns:
            ``x_hat (b, c, H, W)``, ``codes (b, h, w)``, and the quantiser's ``losses`` plus
            ``"reconstruction"`` (mean squared error) and ``"total"`` = reconstruction +
            ``losses["loss"]``.
        """
        z = self.encode_continuous(x)
        z_q, codes, losses = self.quantizer(z)
        x_hat = self.decode_vectors(z_q)
        rec = (x_hat - x).square().mean()
        return x_hat, codes, {**losses, "reconstruction": rec, "total": rec + losses["loss"]}
