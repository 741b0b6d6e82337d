r"""Gated PixelCNN prior over code maps (van den Oord et al. 2016, "Conditional Image Generation
with PixelCNN Decoders"; the prior of the VQ-VAE paper).

The code map ``(h, w)`` is modelled autoregressively in raster order,

.. math::
    p(k \mid y) = \prod_{t=1}^{hw} p(k_t \mid k_{<t}, y),

with gated layers :math:`o = \tanh(W_f * x + V_f y) \odot \sigma(W_g * x + V_g y)` (``y`` an
optional class). Two stacks remove the blind spot of the plain masked PixelCNN:

* the **vertical** stack, a ``k x k`` convolution masked to the rows *above* (type A, first
  layer) or to the rows up to the current one (type B, later layers). By induction its features
  at row ``i`` depend only on rows ``< i``, with a receptive field that widens by ``k // 2``
  columns per layer on both sides;
* the **horizontal** stack, a ``1 x k`` convolution masked to the columns left of the current one
  (type A) or up to it (type B), plus the vertical features of the same position (a 1x1
  convolution) and a residual connection (not in the first layer, whose input is the current
  code itself).

Position ``(i, j)`` therefore sees every ``(i', j')`` with ``i' < i`` (after enough layers) and
every ``(i, j' < j)``: all earlier positions, nothing later (the tests check both by gradients).
There is one latent channel, so no colour-channel masks are needed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kexue.core.checks import check_dtype, check_positive_int, check_tensor

__all__ = ["GatedLayer", "MaskedConv2d", "PixelCNNPrior"]


class MaskedConv2d(nn.Conv2d):
    """A ``Conv2d`` whose kernel is multiplied by a fixed 0/1 mask (odd kernel, 'same' padding).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: ``(kh, kw)``, both odd.
        mask: ``(kh, kw)`` 0/1 tensor; the centre tap is the output position.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], mask: torch.Tensor
    ) -> None:
        kh, kw = kernel_size
        assert kh % 2 == 1 and kw % 2 == 1 and tuple(mask.shape) == (kh, kw)
        super().__init__(in_channels, out_channels, kernel_size, padding=(kh // 2, kw // 2))
        self.register_buffer("mask", mask.to(self.weight.dtype)[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (b, c_in, h, w)`` -> ``(b, c_out, h, w)``."""
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def _vertical_mask(k: int, kind: str) -> torch.Tensor:
    mask = torch.zeros(k, k)
    mask[: k // 2 + (kind == "B")] = 1.0  # rows above (A) or up to the centre row (B)
    return mask


def _horizontal_mask(k: int, kind: str) -> torch.Tensor:
    mask = torch.zeros(1, k)
    mask[0, : k // 2 + (kind == "B")] = 1.0  # columns left (A) or up to the centre (B)
    return mask


def _gate(x: torch.Tensor) -> torch.Tensor:
    f, g = x.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


class GatedLayer(nn.Module):
    """One gated PixelCNN layer with vertical and horizontal stacks (module docstring).

    Args:
        channels: ``c``, width of both stacks.
        kernel_size: odd ``k``.
        kind: ``"A"`` (first layer: excludes the current position) or ``"B"``.
        num_classes: classes for conditioning (0: unconditional).
    """

    def __init__(self, channels: int, kernel_size: int, kind: str, num_classes: int = 0) -> None:
        super().__init__()
        c, k = channels, kernel_size
        self.kind = kind
        self.vertical = MaskedConv2d(c, 2 * c, (k, k), _vertical_mask(k, kind))
        self.horizontal = MaskedConv2d(c, 2 * c, (1, k), _horizontal_mask(k, kind))
        self.v_to_h = nn.Conv2d(2 * c, 2 * c, 1)
        self.h_out = nn.Conv2d(c, c, 1)
        self.cond = nn.Embedding(num_classes, 2 * c) if num_classes else None

    def _bias(self, y: torch.Tensor | None) -> torch.Tensor | float:
        if self.cond is None or y is None:
            return 0.0
        return self.cond(y)[:, :, None, None]  # (b, 2c, 1, 1)

    def vertical_step(
        self, v: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Vertical stack: ``v (b, c, H, W)`` -> ``(v_pre (b, 2c, H, W), v_new (b, c, H, W))``;
        row ``i`` of both depends only on rows ``< i`` of the input map."""
        v_pre = self.vertical(v)
        return v_pre, _gate(v_pre + self._bias(y))

    def horizontal_step(
        self, h: torch.Tensor, v_pre: torch.Tensor, y: torch.Tensor | None
    ) -> torch.Tensor:
        """Horizontal stack: ``h (b, c, H, W)`` and this layer's ``v_pre`` -> new ``h``."""
        h_pre = self.horizontal(h) + self.v_to_h(v_pre) + self._bias(y)
        h_new = self.h_out(_gate(h_pre))
        return h_new + h if self.kind == "B" else h_new

    def forward(
        self, v: torch.Tensor, h: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``v, h (b, c, H, W)``, ``y (b,)`` or None -> new ``(v, h)``."""
        v_pre, v_new = self.vertical_step(v, y)  # (b, 2c, H, W): rows < i only
        return v_new, self.horizontal_step(h, v_pre, y)


class PixelCNNPrior(nn.Module):
    """Gated PixelCNN over ``(b, h, w)`` maps of codes in ``[0, num_codes)``.

    Args:
        num_codes: ``m``, the number of classes per position.
        channels: width ``c`` of the stacks.
        num_layers: gated layers (the first is type A); the receptive field covers a map of
            side ``s`` when ``num_layers * (kernel_size // 2) >= s - 1``.
        kernel_size: odd ``k`` of the masked convolutions.
        num_classes: classes ``y`` for conditioning (0: unconditional).

    Shapes:
        ``forward(codes (b, h, w), y (b,))`` -> ``logits (b, m, h, w)``.
    """

    def __init__(
        self,
        num_codes: int,
        *,
        channels: int = 64,
        num_layers: int = 8,
        kernel_size: int = 3,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        check_positive_int(num_codes, "num_codes")
        check_positive_int(channels, "channels")
        check_positive_int(num_layers, "num_layers")
        check_positive_int(kernel_size, "kernel_size", 3)
        check_positive_int(num_classes, "num_classes", 0)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.num_codes, self.num_classes = num_codes, num_classes
        self.embed = nn.Embedding(num_codes, channels)
        self.layers = nn.ModuleList(
            GatedLayer(channels, kernel_size, "A" if i == 0 else "B", num_classes)
            for i in range(num_layers)
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, 4 * channels, 1), nn.ReLU(),
            nn.Conv2d(4 * channels, num_codes, 1),
        )  # fmt: skip

    def _check(self, codes: torch.Tensor, y: torch.Tensor | None) -> None:
        check_tensor(codes, "codes")
        check_dtype(codes, "codes", "int")
        if codes.dim() != 3:
            raise ValueError(f"codes must have shape (b, h, w), got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.num_codes):
            raise ValueError(f"codes must lie in [0, {self.num_codes})")
        self._check_y(y, codes.shape[0])

    def _check_y(self, y: torch.Tensor | None, b: int) -> None:
        if self.num_classes and y is None:
            raise ValueError(f"y (class labels, shape ({b},)) is required: num_classes > 0")
        if y is None:
            return
        if not self.num_classes:
            raise ValueError("y given but the prior is unconditional (num_classes=0)")
        check_tensor(y, "y")
        check_dtype(y, "y", "int")
        if tuple(y.shape) != (b,):
            raise ValueError(f"y must have shape ({b},), got {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"y must lie in [0, {self.num_classes})")

    def _logits(self, codes: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.logits_from_embedding(self.embed(codes.long()).permute(0, 3, 1, 2), y)

    def logits_from_embedding(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The network on embedded codes: ``x (b, c, h, w)`` -> ``logits (b, m, h, w)``.

        Exposed so that causality can be checked by gradients with respect to the input.
        """
        v = h = x
        yl = None if y is None else y.long()
        for layer in self.layers:
            v, h = layer(v, h, yl)
        return self.head(h)

    def forward(self, codes: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Next-code logits at every position: ``codes (b, h, w)`` -> ``(b, m, h, w)``.

        ``logits[:, :, i, j]`` depends only on codes before ``(i, j)`` in raster order.
        """
        self._check(codes, y)
        return self._logits(codes, y)

    def log_prob(self, codes: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        r"""Teacher-forced :math:`\log p(k \mid y) = \sum_t \log p(k_t \mid k_{<t}, y)` in nats.

        Args:
            codes: ``(b, h, w)`` int code maps.
            y: ``(b,)`` class labels (required iff ``num_classes > 0``).

        Returns:
            ``(b,)`` log-probabilities of each map.
        """
        logits = self.forward(codes, y)
        return -F.cross_entropy(logits, codes.long(), reduction="none").sum((1, 2))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        shape: tuple[int, int],
        *,
        y: torch.Tensor | int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        r"""Draw ``n`` code maps, position by position in raster order, all ``n`` at once.

        Cost: the vertical stack once per row on the rows above (it does not depend on the
        current row), the horizontal stack and the head once per position on one row only:
        :math:`O(n\,h^2 w\,L\,c^2 k^2 / 2 + n\,h\,w^2\,L\,c^2 k)` for ``L`` layers of width
        ``c``, against :math:`O(n\,(hw)^2\,L\,c^2 k^2)` for one full pass per position
        (:meth:`sample_reference`, which draws the same codes).
        Temperature divides the logits: :math:`p \propto \exp(\ell / T)`.

        Args:
            n: number of maps.
            shape: ``(h, w)``.
            y: class labels ``(n,)`` or one int for all (required iff conditional).
            temperature: ``T > 0``.
            generator: a ``torch.Generator`` on the model's device for reproducible draws.

        Returns:
            ``(n, h, w)`` int64 codes.
        """
        check_positive_int(n, "n")
        if len(shape) != 2:
            raise ValueError(f"shape must be (h, w), got {shape!r}")
        hh, ww = (check_positive_int(s, "shape") for s in shape)
        if not (isinstance(temperature, int | float) and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        device = self.embed.weight.device
        if isinstance(y, int):
            y = torch.full((n,), y, dtype=torch.long, device=device)
        self._check_y(y, n)
        was = self.training
        self.eval()
        codes = torch.zeros(n, hh, ww, dtype=torch.long, device=device)
        yl = None if y is None else y.long()
        try:
            for i in range(hh):
                # the vertical stack's row i depends only on rows < i: once per row
                v = self.embed(codes[:, : i + 1]).permute(0, 3, 1, 2)
                v_rows = []
                for layer in self.layers:
                    v_pre, v = layer.vertical_step(v, yl)
                    v_rows.append(v_pre[:, :, i : i + 1])  # (n, 2c, 1, w)
                for j in range(ww):  # the horizontal stack on row i only, per position
                    h = self.embed(codes[:, i : i + 1]).permute(0, 3, 1, 2)  # (n, c, 1, w)
                    for layer, v_pre in zip(self.layers, v_rows):
                        h = layer.horizontal_step(h, v_pre, yl)
                    logits = self.head(h)[:, :, 0, j].float() / temperature  # (n, m)
                    probs = torch.softmax(logits, dim=-1)
                    codes[:, i, j] = torch.multinomial(probs, 1, generator=generator)[:, 0]
        finally:
            self.train(was)
        return codes

    @torch.no_grad()
    def sample_reference(
        self,
        n: int,
        shape: tuple[int, int],
        *,
        y: torch.Tensor | int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """:meth:`sample` by one full forward pass per position (the readable reference path;
        same draws for the same generator, ``h * w`` passes over the whole map)."""
        device = self.embed.weight.device
        if isinstance(y, int):
            y = torch.full((n,), y, dtype=torch.long, device=device)
        self._check_y(y, n)
        codes = torch.zeros(n, *shape, dtype=torch.long, device=device)
        for i in range(shape[0]):
            for j in range(shape[1]):
                logits = self._logits(codes, y)[:, :, i, j].float() / temperature
                probs = torch.softmax(logits, dim=-1)
                codes[:, i, j] = torch.multinomial(probs, 1, generator=generator)[:, 0]
        return codes
