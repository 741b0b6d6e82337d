r"""Train and evaluate a VQ-VAE and its PixelCNN prior (used by the experiment and the CLI).

Two stages, both through :class:`kexue.train.Trainer` (progress bar, ``metrics.jsonl``,
safetensors checkpoints, exact resume):

1. :func:`fit_vqvae`: minimise :math:`\overline{(x - \hat x)^2} + \mathcal L_\text{vq}` on images
   in [-1, 1];
2. :func:`code_maps` (eval mode: BatchNorm must not make codes depend on the batch), then
   :func:`fit_prior`: minimise the prior's mean negative log-likelihood per code.

Metrics (:func:`evaluate_vqvae`, :func:`evaluate_prior`): reconstruction MSE and PSNR on the
[0, 1] pixel scale, :math:`\mathrm{PSNR} = 10 \log_{10}(1 / \mathrm{MSE})`; codebook usage and
perplexity over the whole set (not per batch: perplexity grows with the batch); the prior's NLL
in nats per code and the latent's bits per image dimension,
:math:`\mathrm{NLL}_\text{image} / (C H W \ln 2)` (the prior's part only, not a full bound).

A trained model directory (:func:`save_bundle` / :func:`load_bundle`) holds ``model.json``
(constructor arguments and image geometry), ``vqvae/`` and ``prior/`` (the Trainer's run
directories, each with ``model.safetensors``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from kexue.core.checks import check_positive_int
from kexue.core.io import atomic_write_json
from kexue.train import TrainConfig, Trainer, load_model
from kexue.vq.pixelcnn import PixelCNNPrior
from kexue.vq.quantizer import code_statistics
from kexue.vq.vqvae import VQVAE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

__all__ = [
    "code_maps",
    "evaluate_prior",
    "evaluate_vqvae",
    "fit_prior",
    "fit_vqvae",
    "image_folder",
    "load_bundle",
    "load_images",
    "make_grid",
    "mnist_images",
    "save_bundle",
    "save_png",
]


# ---------------------------------------------------------------- data
def mnist_images(split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Shipped MNIST as ``(n, 1, 28, 28)`` floats in [-1, 1] and ``(n,)`` int64 labels."""
    from kexue import data

    x, y = data.load("mnist", split)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x.unsqueeze(1).float() / 127.5 - 1.0, y.long()


def load_images(paths: list[Path], size: int, channels: int) -> torch.Tensor:
    """Read image files (PIL), convert to ``channels`` (1: grey, 3: RGB), resize to a square.

    Returns:
        ``(n, channels, size, size)`` floats in [-1, 1].

    Raises:
        ValueError: a file cannot be read as an image (the message names it).
    """
    from PIL import Image, UnidentifiedImageError

    out = []
    mode = {1: "L", 3: "RGB"}[channels]
    for p in paths:
        try:
            with Image.open(p) as im:
                im = im.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
                arr = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"cannot read image {p}: {exc}") from None
        out.append(arr.view(size, size, channels).permute(2, 0, 1))
    return torch.stack(out).float() / 127.5 - 1.0


def image_folder(path: str | Path, size: int = 28, channels: int = 1) -> torch.Tensor:
    """Every PNG/JPEG/... file directly in folder ``path``, as :func:`load_images` returns.

    Raises:
        FileNotFoundError: ``path`` is not a directory.
        ValueError: it holds no image file, or a file is unreadable.
    """
    check_positive_int(size, "size")
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"images: no such directory: {root}")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"images: no image files ({', '.join(IMAGE_SUFFIXES)}) in {root}")
    return load_images(files, size, channels)


def make_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2) -> torch.Tensor:
    """Tile ``(n, c, h, w)`` images in [-1, 1] into one ``(c, H, W)`` uint8 picture."""
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    rows = math.ceil(n / ncol)
    grid = torch.zeros(c, rows * (h + pad) + pad, ncol * (w + pad) + pad)
    for k in range(n):
        r, q = divmod(k, ncol)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top : top + h, left : left + w] = images[k].detach().float().cpu()
    return ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def save_png(picture: torch.Tensor, path: str | Path) -> Path:
    """Write a ``(c, H, W)`` uint8 picture (c = 1 or 3) as a PNG file."""
    from PIL import Image

    arr = picture.permute(1, 2, 0).contiguous().numpy()
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    path = Path(path)
    img.save(path, format="PNG")
    return path


# ---------------------------------------------------------------- training
def _config(steps: int, batch_size: int, seed: int, log_every: int, ckpt_every: int | None,
            device: str | None) -> TrainConfig:  # fmt: skip
    return TrainConfig(
        max_steps=steps, batch_size=batch_size, log_every=max(1, min(log_every, steps)),
        ckpt_every=ckpt_every, seed=seed, keep_last=1, device=device,
    )  # fmt: skip


def fit_vqvae(
    model: VQVAE,
    images: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 2e-4,
    seed: int = 0,
    out_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log_every: int = 50,
    ckpt_every: int | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``images (n, c, H, W)`` in [-1, 1] with Adam for ``steps`` steps.

    ``resume`` continues from the newest checkpoint in ``out_dir``; ``overwrite`` starts over in
    an ``out_dir`` that holds checkpoints (without either, the Trainer refuses to discard them).

    Returns:
        The Trainer's history; ``history["train"]`` has the last window's ``loss``, ``mse``
        (on [-1, 1]), ``perplexity`` and ``usage`` (per batch).
    """

    def loss_fn(m: Any, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        from kexue.train import unwrap

        _, _, losses = m(batch[0])
        stats = unwrap(m).quantizer.stats
        return losses["total"], {
            "mse": losses["reconstruction"].detach(),
            "commitment": losses["commitment"].detach(),
            "perplexity": stats["perplexity"],
            "usage": stats["usage"],
        }

    trainer = Trainer(
        model, torch.optim.Adam(model.parameters(), lr=lr), train_data=TensorDataset(images),
        loss_fn=loss_fn, config=_config(steps, batch_size, seed, log_every, ckpt_every, device),
        out_dir=out_dir, progress=progress,
    )  # fmt: skip
    return trainer.fit(resume=resume, overwrite=overwrite)


@torch.no_grad()
def code_maps(model: VQVAE, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Codes of ``images (n, c, H, W)`` in eval mode: ``(n, h, w)`` int64."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        out = [
            model.encode(images[i : i + batch_size].to(device)).cpu()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        model.train(was)
    return torch.cat(out)


@torch.no_grad()
def evaluate_vqvae(model: VQVAE, images: torch.Tensor, batch_size: int = 500) -> dict[str, float]:
    """Reconstruction and codebook metrics of ``images (n, c, H, W)`` (eval mode).

    Returns:
        ``mse`` and ``psnr`` on the [0, 1] scale, ``mse_mean_image`` (predicting the set's mean
        image: the baseline a model must beat), ``usage`` and ``perplexity`` over all codes.
    """
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    sq, codes = 0.0, []
    try:
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].to(device)
            c = model.encode(x)
            sq += float(((model.decode(c) - x) / 2).square().sum())
            codes.append(c.cpu())
    finally:
        model.train(was)
    mse = sq / images.numel()
    base = float(((images - images.mean(0, keepdim=True)) / 2).square().mean())
    stats = code_statistics(torch.cat(codes), model.num_codes)
    return {
        "mse": mse,
        "psnr": 10 * math.log10(1 / max(mse, 1e-12)),
        "mse_mean_image": base,
        "usage": float(stats["usage"]),
        "perplexity": float(stats["perplexity"]),
    }


def fit_prior(
    prior: PixelCNNPrior,
    codes: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    out_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log_every: int = 50,
    ckpt_every: int | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Train ``prior`` on ``codes (n, h, w)`` (and ``labels (n,)`` if conditional) with Adam.

    The loss is the mean NLL per code in nats (``history["train"]["loss"]``).
    """
    conditional = prior.num_classes > 0
    if conditional and labels is None:
        raise ValueError("labels are required: the prior is class-conditional")
    tensors = (codes, labels) if conditional else (codes,)

    def loss_fn(m: Any, batch: Any) -> torch.Tensor:
        c = batch[0]
        logits = m(c, batch[1] if conditional else None)
        return F.cross_entropy(logits, c)

    trainer = Trainer(
        prior, torch.optim.Adam(prior.parameters(), lr=lr), train_data=TensorDataset(*tensors),
        loss_fn=loss_fn, config=_config(steps, batch_size, seed, log_every, ckpt_every, device),
        out_dir=out_dir, progress=progress,
    )  # fmt: skip
    return trainer.fit(resume=resume, overwrite=overwrite)


@torch.no_grad()
def evaluate_prior(
    prior: PixelCNNPrior,
    codes: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    image_dims: int,
    batch_size: int = 500,
) -> dict[str, float]:
    """Test NLL of ``codes (n, h, w)``: nats per code and the latent's bits per image dim.

    Args:
        image_dims: ``C * H * W`` of the images the codes stand for (784 for MNIST).

    Returns:
        ``nll_per_code`` (nats), ``nll_per_image`` (nats), ``bits_per_dim`` (latent part:
        ``nll_per_image / image_dims / ln 2``) and ``uniform_per_code`` (= ``ln m``).
    """
    was = prior.training
    prior.eval()
    device = prior.embed.weight.device
    total = 0.0
    try:
        for i in range(0, len(codes), batch_size):
            c = codes[i : i + batch_size].to(device)
            y = None if labels is None or not prior.num_classes else labels[i : i + batch_size]
            total -= float(prior.log_prob(c, None if y is None else y.to(device)).sum())
    finally:
        prior.train(was)
    n, per_map = len(codes), codes[0].numel()
    return {
        "nll_per_code": total / (n * per_map),
        "nll_per_image": total / n,
        "bits_per_dim": total / n / image_dims / math.log(2),
        "uniform_per_code": math.log(prior.num_codes),
    }


# ---------------------------------------------------------------- model directories
def save_bundle(model_dir: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``model.json`` (``meta``: ``vqvae`` and ``prior`` kwargs, ``image_size``, ...)."""
    return atomic_write_json(Path(model_dir) / "model.json", meta)


def load_bundle(
    model_dir: str | Path, with_prior: bool = True
) -> tuple[VQVAE, PixelCNNPrior | None, dict[str, Any]]:
    """Rebuild the models of a directory written by ``kexue vq train`` (eval mode, CPU).

    Raises:
        FileNotFoundError: ``model.json`` or a weight file is missing.
    """
    import json

    root = Path(model_dir)
    meta_path = root / "model.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"model: no model.json in {root} (train with `kexue vq train`)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    model = VQVAE(**meta["vqvae"])
    weights = root / "vqvae" / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"model: missing {weights} (training did not finish?)")
    load_model(model, weights)
    prior = None
    if with_prior:
        weights = root / "prior" / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"model: missing {weights} (training did not finish?)")
        prior = load_model(PixelCNNPrior(**meta["prior"]), weights)
        prior.eval()
    return model.eval(), prior, meta
