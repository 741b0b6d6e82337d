r"""Parameter initialisers from a geometric point of view (kexue.fm article 7).

Su Jianlin, 《从几何视角来理解模型参数的初始化策略》 (Scientific Spaces, 2020-01-16): a matrix
$W\in\mathbb R^{m\times n}$ (PyTorch ``[out, in]``) with i.i.d. zero-mean entries of variance
$\sigma^2$ satisfies, for every fixed $x$,

$$\mathbb E\lVert Wx\rVert^2 = m\,\sigma^2\,\lVert x\rVert^2 ,$$

so $\sigma^2 = 1/m$ (``mode="fan_out"``, Su's rule, the "dual of LeCun") preserves the expected
squared norm, while $\sigma^2 = 1/n$ (``mode="fan_in"``, LeCun) preserves the per-coordinate second
moment $\lVert y\rVert^2/m = \lVert x\rVert^2/n$. Xavier/Glorot uses $2/(n+m)$ (``mode="avg"``);
ReLU halves the energy, hence ``gain`` $=\sqrt2$ (He). Every rule is
$\sigma = \text{gain}/\sqrt{\text{fan}}$, drawn from $\mathcal N(0,\sigma^2)$ or
$U[-\sqrt3\sigma, \sqrt3\sigma]$ (the uniform bound is $\sqrt3\cdot$std). ``orthogonal_`` gives an
exact isometry (QR of a Gaussian, sign-corrected; Saxe et al. 2014).

Fan convention (see :func:`fans`): ``fan_in`` is the number of inputs feeding one output unit and
``fan_out`` the number of outputs one input unit feeds, both counted per group and including the
receptive field. For plain tensors we follow PyTorch's layout ``[out, in, *k]``; pass the *module*
for transposed convolutions (stored ``[in, out/groups, *k]``) and embeddings (stored ``[v, d]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from kexue.core.checks import check_tensor

__all__ = [
    "fans",
    "geometric_init_",
    "he_",
    "init_module_",
    "lecun_",
    "orthogonal_",
    "xavier_",
]

MODES = ("fan_out", "fan_in", "avg")
DISTRIBUTIONS = ("normal", "uniform")
SCHEMES = ("geometric", "su", "lecun", "xavier", "he", "orthogonal", "torch")


def _receptive(weight: torch.Tensor) -> int:
    """Product of the kernel sizes (trailing dims beyond the first two); 1 for a matrix."""
    return math.prod(weight.shape[2:]) if weight.dim() > 2 else 1


def fans(tensor_or_module: torch.Tensor | nn.Module) -> tuple[int, int]:
    r"""Return ``(fan_in, fan_out)`` of a weight tensor or a layer.

    Conventions (``k`` = product of kernel sizes, ``g`` = groups; stride and padding are ignored,
    as in every library):

    * ``nn.Linear`` (weight ``[out, in]``): ``(in, out)``.
    * ``nn.Conv*d`` (weight ``[out, in/g, *k]``): ``(in/g * k, out/g * k)``. Each input unit feeds
      only the ``out/g`` channels of its group, so ``fan_out`` is divided by ``g``
      (``torch.nn.init`` does not divide, which over-counts depthwise fans by ``g``).
    * ``nn.ConvTranspose*d`` (weight stored ``[in, out/g, *k]``): ``(in/g * k, out/g * k)`` in the
      *module's* direction (input channels -> output channels). ``torch.nn.init`` reads dim 1 as
      fan_in, i.e. it swaps the two for transposed convolutions.
    * ``nn.Embedding`` (weight ``[v, d]``, a lookup of a one-hot input): ``(v, d)``, so Su's
      $1/\text{fan\_out}=1/d$ gives rows of unit expected norm.
    * a plain tensor of shape ``[out, in, *k]`` (``dim >= 2``): ``(in * k, out * k)``.

    Args:
        tensor_or_module: a weight tensor with ``dim >= 2`` or one of the layers above.

    Returns:
        ``(fan_in, fan_out)`` as Python ints.

    Raises:
        TypeError: an unsupported module or a non-tensor.
        ValueError: a tensor with fewer than 2 dimensions.
    """
    m = tensor_or_module
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    if isinstance(m, nn.modules.conv._ConvNd):
        k = math.prod(m.kernel_size)
        g = m.groups
        return m.in_channels // g * k, m.out_channels // g * k
    if isinstance(m, nn.Embedding):
        return m.num_embeddings, m.embedding_dim
    if isinstance(m, nn.Module):
        raise TypeError(
            f"fans: unsupported module {type(m).__name__}; expected Linear, Conv*d, "
            "ConvTranspose*d, Embedding or a weight tensor"
        )
    check_tensor(m, "tensor_or_module")
    if m.dim() < 2:
        raise ValueError(
            f"tensor_or_module must have shape (out, in, *k) with at least 2 dims, got {tuple(m.shape)}"
        )
    k = _receptive(m)
    return m.shape[1] * k, m.shape[0] * k


def _resolve(tensor_or_module: torch.Tensor | nn.Module) -> tuple[torch.Tensor, int, int]:
    """Weight tensor and its fans for a tensor or a module."""
    if isinstance(tensor_or_module, nn.Module):
        weight = getattr(tensor_or_module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise TypeError(f"module {type(tensor_or_module).__name__} has no weight tensor")
        fan_in, fan_out = fans(tensor_or_module)
        return weight, fan_in, fan_out
    fan_in, fan_out = fans(tensor_or_module)
    return tensor_or_module, fan_in, fan_out


def _check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value  # type: ignore[return-value]


def _check_gain(gain: object) -> float:
    if isinstance(gain, bool) or not isinstance(gain, int | float):
        raise TypeError(f"gain must be a float, got {type(gain).__name__}")
    if not math.isfinite(gain) or gain < 0:
        raise ValueError(f"gain must be a finite number >= 0, got {gain}")
    return float(gain)


@torch.no_grad()
def _fill_(
    weight: torch.Tensor, std: float, distribution: str, generator: torch.Generator | None
) -> torch.Tensor:
    """Fill ``weight`` with zero-mean ``std`` noise (uniform bound = sqrt(3) * std)."""
    if distribution == "normal":
        return weight.normal_(0.0, std, generator=generator)
    bound = math.sqrt(3.0) * std  # Var(U[-a, a]) = a^2 / 3
    return weight.uniform_(-bound, bound, generator=generator)


def geometric_init_(
    tensor: torch.Tensor | nn.Module,
    mode: str = "fan_out",
    gain: float = 1.0,
    distribution: str = "normal",
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Fill a weight in place with i.i.d. zero-mean entries of variance $\text{gain}^2/\text{fan}$.

    $\text{fan} = m$ (``"fan_out"``, Su's norm-preserving rule $\mathbb E\lVert Wx\rVert^2 =
    \lVert x\rVert^2$), $n$ (``"fan_in"``, LeCun) or $(n+m)/2$ (``"avg"``, Xavier).

    Args:
        tensor: weight of shape ``[out, in, *k]`` (``dim >= 2``), or a layer accepted by
            :func:`fans` (then its ``weight`` is filled with the layer's own fans; use this for
            ``ConvTranspose*d``, grouped convs and ``Embedding``).
        mode: ``"fan_out"`` (default, Su), ``"fan_in"`` (LeCun) or ``"avg"`` (Xavier).
        gain: multiplies the standard deviation; ``sqrt(2)`` for ReLU.
        distribution: ``"normal"`` ($\mathcal N(0,\sigma^2)$) or ``"uniform"``
            ($U[-\sqrt3\sigma,\sqrt3\sigma]$).
        generator: optional ``torch.Generator`` for reproducible draws.

    Returns:
        The filled weight tensor (same object).

    Raises:
        ValueError: bad ``mode``/``distribution``/``gain`` or a tensor with fewer than 2 dims.
        TypeError: not a tensor or a supported module.
    """
    _check_choice(mode, "mode", MODES)
    _check_choice(distribution, "distribution", DISTRIBUTIONS)
    gain = _check_gain(gain)
    weight, fan_in, fan_out = _resolve(tensor)
    fan = {"fan_out": fan_out, "fan_in": fan_in, "avg": (fan_in + fan_out) / 2}[mode]
    if fan == 0:
        raise ValueError(
            f"tensor has a zero fan (shape {tuple(weight.shape)}); nothing to scale by"
        )
    return _fill_(weight, gain / math.sqrt(fan), distribution, generator)


def lecun_(
    tensor: torch.Tensor | nn.Module,
    distribution: str = "normal",
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""LeCun init: variance $1/\text{fan\_in}$ (PyTorch ``[out, in]``: fan_in = ``shape[1]·k``).

    Same as ``geometric_init_(tensor, mode="fan_in")``; see it for Args/Returns/Raises.
    """
    return geometric_init_(tensor, "fan_in", 1.0, distribution, generator=generator)


def xavier_(
    tensor: torch.Tensor | nn.Module,
    gain: float = 1.0,
    distribution: str = "normal",
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Xavier/Glorot init: variance $2\,\text{gain}^2/(\text{fan\_in}+\text{fan\_out})$.

    Same as ``geometric_init_(tensor, mode="avg", gain=gain)``; symmetric in the fans, so the
    layout convention does not matter here. See :func:`geometric_init_` for Args/Returns/Raises.
    """
    return geometric_init_(tensor, "avg", gain, distribution, generator=generator)


def he_(
    tensor: torch.Tensor | nn.Module,
    mode: str = "fan_in",
    distribution: str = "normal",
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""He/Kaiming init for ReLU: variance $2/\text{fan}$.

    Default ``mode="fan_in"`` is He et al. (2015) and ``torch.nn.init.kaiming_normal_`` (fan_in =
    ``shape[1]·k`` for ``[out, in, *k]``); Su's convention is ``mode="fan_out"`` ($2/m$, keeps
    $\mathbb E\lVert\mathrm{relu}(Wx)\rVert^2=\lVert x\rVert^2$). Equals
    ``geometric_init_(tensor, mode, gain=sqrt(2))``; see it for Args/Returns/Raises.
    """
    return geometric_init_(tensor, mode, math.sqrt(2.0), distribution, generator=generator)


@torch.no_grad()
def orthogonal_(
    tensor: torch.Tensor | nn.Module,
    gain: float = 1.0,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Fill with a (semi-)orthogonal matrix times ``gain``: $W^\top W=\text{gain}^2 I$ or $WW^\top=\text{gain}^2 I$.

    The weight is viewed as a matrix ``[rows, cols] = [shape[0], prod(shape[1:])]``. A Gaussian
    ``[max, min]`` matrix is QR-factorised **in float32** (float64 for float64 weights; so bf16/fp16
    weights work although ``torch.linalg.qr`` has no half-precision CPU kernel), the columns
    of Q are sign-corrected by ``sign(diag(R))`` (which makes Q Haar-distributed), transposed back
    for wide matrices and cast to the weight's dtype. Tall (rows >= cols): orthonormal columns,
    $W^\top W=I$; wide: orthonormal rows, $WW^\top=I$.

    Args:
        tensor: weight with ``dim >= 2`` (any float dtype/device) or a module with a ``weight``.
        gain: scale of the result.
        generator: optional ``torch.Generator`` (on the weight's device).

    Returns:
        The filled weight tensor (same object).

    Raises:
        ValueError: fewer than 2 dims, an empty tensor or a bad gain.
        TypeError: not a floating-point tensor.
    """
    gain = _check_gain(gain)
    if isinstance(tensor, nn.Module):
        weight = getattr(tensor, "weight", None)
    else:
        weight = check_tensor(tensor, "tensor")
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        raise TypeError("tensor must be a floating-point torch.Tensor (or a module with one)")
    if weight.dim() < 2 or weight.numel() == 0:
        raise ValueError(f"tensor must have at least 2 non-empty dims, got {tuple(weight.shape)}")
    rows = weight.shape[0]
    cols = weight.numel() // rows
    big, small = max(rows, cols), min(rows, cols)
    work = torch.float64 if weight.dtype == torch.float64 else torch.float32  # fp32 for bf16/fp16
    a = torch.randn(big, small, generator=generator, device=weight.device, dtype=work)
    q, r = torch.linalg.qr(a)  # q: (big, small), orthonormal columns
    d = torch.sign(torch.diagonal(r))
    d = torch.where(d == 0, torch.ones_like(d), d)  # sign(0) = 0 would zero a column
    q = q * d  # Haar measure: fix the sign ambiguity of QR
    if rows < cols:
        q = q.T  # wide: orthonormal rows
    weight.copy_((q * gain).reshape(weight.shape))
    return weight


def _torch_default_(module: nn.Module, generator: torch.Generator | None) -> None:
    """PyTorch's own ``reset_parameters`` (kaiming_uniform a=sqrt(5): Var = 1/(3 fan_in))."""
    if generator is None:
        module.reset_parameters()
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        module.reset_parameters()


def init_module_(
    module: nn.Module,
    scheme: str | Callable[[torch.Tensor], object] = "geometric",
    *,
    gain: float = 1.0,
    distribution: str = "normal",
    zero_bias: bool = True,
    generator: torch.Generator | None = None,
) -> nn.Module:
    r"""Initialise every ``nn.Linear`` / ``nn.Conv*d`` / ``nn.ConvTranspose*d`` inside ``module``.

    Schemes (variance of each weight entry, fans from :func:`fans` of the layer itself):

    * ``"geometric"`` / ``"su"``: $\text{gain}^2/\text{fan\_out}$ (Su's rule);
    * ``"lecun"``: $\text{gain}^2/\text{fan\_in}$;  ``"xavier"``: $2\,\text{gain}^2/(\text{fan\_in}+\text{fan\_out})$;
    * ``"he"``: $2\,\text{gain}^2/\text{fan\_in}$ (He et al.);
    * ``"orthogonal"``: :func:`orthogonal_` with ``gain``;
    * ``"torch"``: the layer's own ``reset_parameters()`` (weights $U[\pm1/\sqrt{\text{fan\_in}}]$,
      Var $=1/(3\,\text{fan\_in})$; ``gain``/``distribution`` ignored);
    * a callable ``f(weight)`` that fills a weight tensor in place.

    Args:
        module: any model; its Linear/Conv layers are visited in ``module.modules()`` order.
        scheme: a name above or a callable.
        gain: standard-deviation multiplier for the named schemes.
        distribution: ``"normal"`` or ``"uniform"`` for the variance-based schemes.
        zero_bias: set biases to 0 (Su's rule; for ``"torch"`` the default uniform bias is kept
            when False).
        generator: optional ``torch.Generator``.

    Returns:
        ``module`` (initialised in place).

    Raises:
        ValueError: unknown scheme or distribution.
        TypeError: ``module`` is not an ``nn.Module``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    if not callable(scheme):
        _check_choice(scheme, "scheme", SCHEMES)
    _check_choice(distribution, "distribution", DISTRIBUTIONS)
    gain = _check_gain(gain)
    for layer in module.modules():
        if not isinstance(layer, nn.Linear | nn.modules.conv._ConvNd):
            continue
        if callable(scheme):
            with torch.no_grad():
                scheme(layer.weight)
        elif scheme in ("geometric", "su"):
            geometric_init_(layer, "fan_out", gain, distribution, generator=generator)
        elif scheme == "lecun":
            geometric_init_(layer, "fan_in", gain, distribution, generator=generator)
        elif scheme == "xavier":
            geometric_init_(layer, "avg", gain, distribution, generator=generator)
        elif scheme == "he":
            geometric_init_(
                layer, "fan_in", gain * math.sqrt(2.0), distribution, generator=generator
            )
        elif scheme == "orthogonal":
            orthogonal_(layer.weight, gain, generator=generator)
        else:  # "torch"
            _torch_default_(layer, generator)
        if zero_bias and layer.bias is not None:
            with torch.no_grad():
                layer.bias.zero_()
    return module
