r"""Vector quantisation with a straight-through estimator (van den Oord et al. 2017; Su 2019).

Every input vector :math:`z \in \mathbb{R}^d` is replaced by its nearest code

.. math::
    k^\star = \arg\min_j \lVert z - e_j \rVert_2^2
            = \arg\min_j \left(\lVert e_j \rVert^2 - 2 \langle z, e_j \rangle\right),
    \qquad z_q = e_{k^\star},

and the decoder sees :math:`\tilde z = z + \mathrm{sg}[z_q - z]` (value :math:`z_q`, Jacobian
:math:`I` with respect to :math:`z`: the straight-through estimator). Two squared errors, each a
mean over all elements as in Su's Keras code (``K.mean``), train the codebook and the encoder:

.. math::
    \mathcal L_\text{codebook} = \overline{(\mathrm{sg}[z] - z_q)^2}, \qquad
    \mathcal L_\text{commit} = \overline{(z - \mathrm{sg}[z_q])^2}, \qquad
    \mathcal L_\text{vq} = w_\text{cb} \mathcal L_\text{codebook}
        + \beta \mathcal L_\text{commit}

(paper: :math:`w_\text{cb} = 1`, :math:`\beta = 0.25`; Su's :math:`\beta` is the paper's
:math:`w_\text{cb}` and Su's :math:`\gamma` the paper's :math:`\beta`). Both terms are computed
from the raw :math:`z` and :math:`z_q`, *before* the straight-through sum, so the codebook loss
moves only the codebook and the commitment loss only the encoder (the bugs of
karpathy/deep-vector-quantization#2 and andylolu2/jax-vqvae-gpt#2).

Optional EMA codebook (paper, appendix; Sonnet's ``VectorQuantizerEMA``), per batch counts
:math:`n_k` and sums :math:`s_k = \sum_{i: k_i = k} z_i`, all-reduced over processes under
``torch.distributed`` so that replicas never diverge:

.. math::
    N_k \leftarrow \lambda N_k + (1 - \lambda) n_k, \quad
    M_k \leftarrow \lambda M_k + (1 - \lambda) s_k, \quad
    e_k = M_k / \tilde N_k, \quad
    \tilde N_k = \frac{N_k + \epsilon}{\sum_j N_j + m \epsilon} \sum_j N_j

(Laplace smoothing: a code whose :math:`N_k` has decayed to 0 becomes 0, never NaN). Buffers
start at :math:`N = 1, M = e` (lucidrains), not :math:`N = 0`, which divides by ~ε at first
(rosinality/vq-vae-2-pytorch#72). With EMA the codebook loss carries no gradient and is left
out of ``losses["loss"]`` (it is still reported).

Dead-code restart (Jukebox): an EMA of each code's per-batch count (all-reduced) is kept; codes
whose average falls below ``dead_code_threshold`` are replaced by encoder outputs of the current
batch, drawn with probability proportional to their squared distance to their nearest code
(k-means++ seeding, so badly served regions get the new codes; rank 0's draw, broadcast).

The nearest-code search works on row chunks, so at most ``chunk_elems`` distances exist at once
instead of the full :math:`(N, m)` matrix, and it runs in fp32 (fp64 for fp64 input) even under
autocast: the expanded form loses the nearest neighbour in half precision.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from kexue.core.checks import check_dtype, check_positive_int, check_tensor

__all__ = ["VectorQuantizer", "code_statistics", "nearest_code"]

DEFAULT_CHUNK_ELEMS = 1 << 22  # 4M distances (16 MiB in fp32) per chunk


def _search_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.no_grad()
def nearest_code(
    z: torch.Tensor, codebook: torch.Tensor, *, chunk_elems: int = DEFAULT_CHUNK_ELEMS
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Index and squared distance of the nearest code for every row of ``z``, in chunks.

    :math:`k^\star_i = \arg\min_j (\lVert e_j\rVert^2 - 2\langle z_i, e_j\rangle)` (the constant
    :math:`\lVert z_i\rVert^2` is added back only for the returned distance). Ties go to the
    lowest index on CPU (``torch.min`` returns the first minimum there; CUDA does not document
    its tie rule). Rows are processed
    ``max(1, chunk_elems // m)`` at a time, so the peak extra memory is about
    ``chunk_elems`` distances, whatever ``n``.

    Args:
        z: ``(n, d)`` floating vectors.
        codebook: ``(m, d)`` floating codes.
        chunk_elems: at most this many distances are held at once (>= 1).

    Returns:
        ``codes (n,)`` int64 and ``dist (n,)`` squared Euclidean distances (fp32, or fp64 for
        fp64 input).

    Raises:
        TypeError: non-tensor or non-float inputs.
        ValueError: wrong ranks or mismatched ``d``.
    """
    check_tensor(z, "z")
    check_tensor(codebook, "codebook")
    check_dtype(z, "z", "float")
    check_dtype(codebook, "codebook", "float")
    if z.dim() != 2 or codebook.dim() != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"z must be (n, d) and codebook (m, d) with the same d, got {tuple(z.shape)} "
            f"and {tuple(codebook.shape)}"
        )
    check_positive_int(chunk_elems, "chunk_elems")
    dtype = _search_dtype(z.dtype)
    n, m = z.shape[0], codebook.shape[0]
    with torch.autocast(z.device.type, enabled=False):
        e = codebook.to(dtype)
        e_sq = e.square().sum(1)  # (m,)
        et = e.t().contiguous()  # (d, m)
        codes = torch.empty(n, dtype=torch.long, device=z.device)
        dist_out = torch.empty(n, dtype=dtype, device=z.device)
        rows = max(1, chunk_elems // max(m, 1))
        for start in range(0, n, rows):
            zc = z[start : start + rows].to(dtype)
            # (c, m): ||e||^2 - 2 <z, e>, one fused addmm
            scores = torch.addmm(e_sq, zc, et, beta=1.0, alpha=-2.0)
            best, idx = scores.min(dim=1)
            codes[start : start + rows] = idx
            dist_out[start : start + rows] = (best + zc.square().sum(1)).clamp_min_(0)
    return codes, dist_out


def code_statistics(codes: torch.Tensor, num_codes: int) -> dict[str, torch.Tensor]:
    r"""Perplexity and usage of a batch of code indices.

    :math:`\bar p_k = n_k / \sum_j n_j`, perplexity :math:`\exp(-\sum_k \bar p_k \log \bar p_k)`
    (between 1 and ``num_codes``; it grows with the batch size, so compare at equal sizes),
    usage = fraction of codes used at least once.

    Args:
        codes: int tensor of any shape, values in ``[0, num_codes)``.
        num_codes: ``m``.

    Returns:
        ``{"perplexity": (), "usage": (), "counts": (m,)}`` (float tensors).
    """
    counts = torch.bincount(codes.reshape(-1), minlength=num_codes).float()
    return _stats_from_counts(counts)


def _stats_from_counts(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum()
    return {
        "perplexity": entropy.exp(),
        "usage": (counts > 0).float().mean(),
        "counts": counts,
    }


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _broadcast_(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.broadcast(t, src=0)
    return t


class VectorQuantizer(nn.Module):
    r"""Nearest-code quantiser with straight-through gradients (module docstring for the maths).

    Args:
        num_codes: codebook size ``m``.
        dim: code dimension ``d`` (the last dimension of the input).
        commitment: weight :math:`\beta` of the commitment loss (paper: 0.25).
        codebook_weight: weight of the codebook loss (paper and Su: 1; unused with EMA).
        ema_decay: :math:`\lambda` for EMA codebook updates (paper: 0.99); ``None``: the codebook
            is an ``nn.Parameter`` trained by the codebook loss.
        eps: Laplace smoothing :math:`\epsilon` of the EMA counts.
        dead_code_threshold: restart codes whose EMA per-batch count is below this (``None``:
            never; Jukebox uses 1.0).
        usage_decay: decay of the per-code count average used for dead-code detection.
        init: ``"uniform"`` (U(-init_range, init_range), Keras' and Su's default) or
            ``"kmeans"`` (k-means on the first training batch).
        init_range: half-width of the uniform initialisation (Su: 0.05).
        kmeans_iters: Lloyd iterations for ``init="kmeans"``.
        chunk_elems: distances held at once by the search (see :func:`nearest_code`).

    Shapes:
        ``forward(z)``: ``z (b, ..., d)`` -> ``z_q (b, ..., d)``, ``codes (b, ...)`` int64.

    Attributes:
        stats: ``{"perplexity", "usage"}`` of the last call (0-dim tensors; all-reduced when
            EMA or dead-code restart is on and training under ``torch.distributed``).
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        *,
        commitment: float = 0.25,
        codebook_weight: float = 1.0,
        ema_decay: float | None = None,
        eps: float = 1e-5,
        dead_code_threshold: float | None = None,
        usage_decay: float = 0.99,
        init: str = "uniform",
        init_range: float = 0.05,
        kmeans_iters: int = 10,
        chunk_elems: int = DEFAULT_CHUNK_ELEMS,
    ) -> None:
        super().__init__()
        check_positive_int(num_codes, "num_codes")
        check_positive_int(dim, "dim")
        check_positive_int(kmeans_iters, "kmeans_iters")
        check_positive_int(chunk_elems, "chunk_elems")
        for name, val in (("commitment", commitment), ("codebook_weight", codebook_weight)):
            if not isinstance(val, int | float) or isinstance(val, bool) or not val >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {val!r}")
        if ema_decay is not None and not (
            isinstance(ema_decay, int | float) and 0 <= ema_decay < 1
        ):
            raise ValueError(f"ema_decay must be in [0, 1) or None, got {ema_decay!r}")
        if not (isinstance(usage_decay, int | float) and 0 <= usage_decay < 1):
            raise ValueError(f"usage_decay must be in [0, 1), got {usage_decay!r}")
        if not (isinstance(eps, int | float) and eps >= 0):
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        if dead_code_threshold is not None and not (
            isinstance(dead_code_threshold, int | float) and dead_code_threshold > 0
        ):
            raise ValueError(
                f"dead_code_threshold must be > 0 or None, got {dead_code_threshold!r}"
            )
        if init not in ("uniform", "kmeans"):
            raise ValueError(f"init must be 'uniform' or 'kmeans', got {init!r}")
        if not (isinstance(init_range, int | float) and init_range > 0):
            raise ValueError(f"init_range must be > 0, got {init_range!r}")
        self.num_codes, self.dim = num_codes, dim
        self.commitment, self.codebook_weight = float(commitment), float(codebook_weight)
        self.ema_decay = None if ema_decay is None else float(ema_decay)
        self.eps = float(eps)
        self.dead_code_threshold = dead_code_threshold
        self.usage_decay = float(usage_decay)
        self.init, self.kmeans_iters, self.chunk_elems = init, kmeans_iters, chunk_elems

        weight = torch.empty(num_codes, dim).uniform_(-init_range, init_range)
        if self.ema_decay is None:
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("ema_count", torch.ones(num_codes))  # N = 1 ...
            self.register_buffer("ema_sum", weight.clone())  # ... M = e, so e = M / N at start
        # EMA of per-batch counts for dead-code detection; -1 = not seen a batch yet
        self.register_buffer("code_usage", torch.full((num_codes,), -1.0))
        self.register_buffer("initialised", torch.tensor(init == "uniform"))
        self.stats: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ public helpers
    @property
    def codebook(self) -> torch.Tensor:
        """The current code vectors, ``(m, d)``."""
        return self.weight

    @property
    def perplexity(self) -> torch.Tensor:
        """Perplexity of the codes of the last call (0-dim tensor; NaN before any call)."""
        return self.stats.get("perplexity", torch.tensor(float("nan")))

    @property
    def usage(self) -> torch.Tensor:
        """Fraction of codes used by the last call (0-dim tensor; NaN before any call)."""
        return self.stats.get("usage", torch.tensor(float("nan")))

    def extra_repr(self) -> str:
        ema = f", ema_decay={self.ema_decay}" if self.ema_decay is not None else ""
        return f"num_codes={self.num_codes}, dim={self.dim}, commitment={self.commitment}{ema}"

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors of indices: ``codes (b, ...)`` int -> ``(b, ..., d)``.

        Raises:
            TypeError: ``codes`` is not an integer tensor.
            ValueError: an index is outside ``[0, num_codes)``.
        """
        check_tensor(codes, "codes")
        check_dtype(codes, "codes", "int")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.num_codes):
            raise ValueError(
                f"codes must lie in [0, {self.num_codes}), got values in "
                f"[{int(codes.min())}, {int(codes.max())}]"
            )
        return F.embedding(codes.long(), self.weight)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest-code indices only (no losses, no updates): ``z (b, ..., d)`` -> ``(b, ...)``."""
        self._check_input(z)
        codes, _ = nearest_code(z.reshape(-1, self.dim), self.weight, chunk_elems=self.chunk_elems)
        return codes.view(z.shape[:-1])

    # ------------------------------------------------------------------ forward
    def _check_input(self, z: torch.Tensor) -> None:
        check_tensor(z, "z")
        check_dtype(z, "z", "float")
        if z.dim() < 2 or z.shape[-1] != self.dim:
            raise ValueError(
                f"z must have shape (b, ..., {self.dim}) (last dim = dim), got {tuple(z.shape)}"
            )
        if z.device.type == "meta":
            raise ValueError("z is a meta tensor (no data): quantise a materialised tensor")
        if not bool(torch.isfinite(z).all()):
            # NaN would pick code 0 everywhere and, with EMA, turn the codebook NaN for good
            raise ValueError("z holds NaN or inf: refusing to quantise (and to update codes)")

    def forward(
        self, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Quantise ``z``; in training mode also update the EMA codebook / restart dead codes.

        Args:
            z: ``(b, ..., d)`` floating encoder outputs (channels last).

        Returns:
            ``z_q (b, ..., d)``: :math:`z + \\mathrm{sg}[z_q - z]` (forward value = the codes);
            ``codes (b, ...)`` int64; ``losses``: ``{"codebook", "commitment", "loss"}`` scalars,
            ``loss`` = ``codebook_weight * codebook + commitment * commitment`` (without the
            codebook term when EMA is on).

        Raises:
            TypeError: ``z`` is not a floating tensor.
            ValueError: ``z``'s last dimension is not ``dim``.
        """
        self._check_input(z)
        flat = z.reshape(-1, self.dim)
        if self.training and not bool(self.initialised):
            self._kmeans_init(flat.detach())
        codes, dist2 = nearest_code(flat.detach(), self.weight, chunk_elems=self.chunk_elems)
        z_q = F.embedding(codes, self.weight).view_as(z).to(z.dtype)  # (b, ..., d)
        # VQ losses on the raw z and z_q, before the straight-through sum (see module doc)
        codebook_loss = F.mse_loss(z_q, z.detach())
        commitment_loss = F.mse_loss(z, z_q.detach())
        loss = self.commitment * commitment_loss
        if self.ema_decay is None:
            loss = loss + self.codebook_weight * codebook_loss
        # z + sg[z_q - z], written as sg[z_q] + (z - sg[z]): the same gradient (identity to z,
        # none to the codebook) and a forward value exactly z_q, without rounding
        z_st = z_q.detach() + (z - z.detach())

        counts = torch.bincount(codes, minlength=self.num_codes).to(torch.float32)
        if self.training and (self.ema_decay is not None or self.dead_code_threshold is not None):
            counts = _all_reduce_(counts)
            with torch.no_grad():
                if self.ema_decay is not None:
                    self._ema_update(flat.detach(), codes, counts)
                if self.dead_code_threshold is not None:
                    self._restart_dead(flat.detach(), dist2, counts)
        stats = _stats_from_counts(counts.detach())
        self.stats = {"perplexity": stats["perplexity"], "usage": stats["usage"]}
        return (
            z_st,
            codes.view(z.shape[:-1]),
            {
                "codebook": codebook_loss,
                "commitment": commitment_loss,
                "loss": loss,
            },
        )

    # ------------------------------------------------------------------ updates (no grad)
    def _ema_update(self, flat: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor) -> None:
        lam = self.ema_decay
        assert lam is not None
        sums = torch.zeros_like(self.ema_sum)
        sums.index_add_(0, codes, flat.to(sums.dtype))  # s_k = sum of z_i assigned to k
        sums = _all_reduce_(sums)
        self.ema_count.mul_(lam).add_(counts.to(self.ema_count.dtype), alpha=1 - lam)
        self.ema_sum.mul_(lam).add_(sums.to(self.ema_sum.dtype), alpha=1 - lam)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (total + self.num_codes * self.eps) * total
        self.weight.copy_(self.ema_sum / smoothed.clamp_min(1e-30).unsqueeze(1))

    def _restart_dead(self, flat: torch.Tensor, dist2: torch.Tensor, counts: torch.Tensor) -> None:
        thr = float(self.dead_code_threshold)  # type: ignore[arg-type]
        usage = self.code_usage
        if bool((usage < 0).all()):
            usage.copy_(counts)  # first batch: start the average at the observed counts
        else:
            usage.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
        dead = usage < thr  # identical on every rank: counts are all-reduced
        n_dead = int(dead.sum())
        if n_dead == 0 or flat.shape[0] == 0:
            return
        # new codes: encoder outputs of this batch drawn with probability proportional to their
        # squared distance to their code (k-means++ seeding: badly served regions first);
        # rank 0's draw is broadcast
        weights = dist2.float() + 1e-12
        idx = torch.multinomial(weights, n_dead, replacement=n_dead > weights.numel())
        new = _broadcast_(flat[idx].to(self.weight.dtype).contiguous())
        self.weight.data[dead] = new
        if self.ema_decay is not None:
            self.ema_count[dead] = 1.0
            self.ema_sum[dead] = new
        usage[dead] = thr  # a grace value: restarted again next step if still unused

    def _kmeans_init(self, flat: torch.Tensor) -> None:
        """Lloyd's k-means on the first training batch (rank 0's result, broadcast)."""
        with torch.no_grad():
            x = flat.float()
            n = x.shape[0]
            idx = torch.randperm(n, device=x.device)[: self.num_codes]
            if n < self.num_codes:
                idx = torch.randint(n, (self.num_codes,), device=x.device)
            centres = x[idx].clone()
            for _ in range(self.kmeans_iters):
                codes, _ = nearest_code(x, centres, chunk_elems=self.chunk_elems)
                cnt = torch.bincount(codes, minlength=self.num_codes).float()
                sums = torch.zeros_like(centres).index_add_(0, codes, x)
                used = cnt > 0  # empty clusters keep their centre
                centres[used] = sums[used] / cnt[used].unsqueeze(1)
            centres = _broadcast_(centres.to(self.weight.dtype).contiguous())
            self.weight.data.copy_(centres)
            if self.ema_decay is not None:
                self.ema_count.fill_(1.0)
                self.ema_sum.copy_(centres)
            self.initialised.fill_(True)
