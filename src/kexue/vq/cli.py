"""``kexue vq train | reconstruct | sample``: a VQ-VAE and its PixelCNN prior from the shell.

* ``kexue vq train --data mnist --out DIR`` (or ``--images FOLDER``: PNG/JPEG/... files of any
  size, converted to grey or RGB and resized) trains the VQ-VAE, then the prior on its codes
  (class-conditional for MNIST unless ``--unconditional``), with a progress bar; ``--resume``
  continues an interrupted run, ``--overwrite`` replaces one.
* ``kexue vq reconstruct --model DIR IMAGE...`` prints each image's MSE/PSNR after a round trip
  through the codes and with ``--out grid.png`` draws originals above reconstructions.
* ``kexue vq sample --model DIR --n 64 --out grid.png [--class C]`` draws code maps from the
  prior and decodes them.

User errors raise ``ValueError``/``FileNotFoundError`` with one line; the main CLI prints it and
exits 2.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

from kexue.core.checks import check_positive_int
from kexue.core.io import check_out_dir
from kexue.core.seed import seed_everything
from kexue.vq.pixelcnn import PixelCNNPrior
from kexue.vq.recipe import (
    code_maps,
    evaluate_vqvae,
    fit_prior,
    fit_vqvae,
    image_folder,
    load_bundle,
    load_images,
    make_grid,
    mnist_images,
    save_bundle,
    save_png,
)
from kexue.vq.vqvae import VQVAE

DATASETS = ("mnist",)


def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``vq train|reconstruct|sample`` on the main CLI's subparsers; returns ``vq``."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    vq = subparsers.add_parser("vq", help="VQ-VAE + PixelCNN prior: train, reconstruct, sample")
    sub = vq.add_subparsers(dest="vq_command", metavar="SUBCOMMAND", parser_class=type(vq))

    t = sub.add_parser("train", help="train a VQ-VAE and its prior into --out", formatter_class=fmt)
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", choices=DATASETS, help="a shipped image dataset")
    src.add_argument("--images", metavar="DIR", help="a folder of image files")
    t.add_argument("--out", required=True, metavar="DIR", help="output model directory")
    t.add_argument("--size", type=int, default=28, help="image side after resizing (--images)")
    t.add_argument("--channels", type=int, choices=(1, 3), default=1, help="1 grey, 3 RGB")
    t.add_argument("--max-train", type=int, default=0, help="use the first N images (0: all)")
    t.add_argument("--num-codes", type=int, default=128, help="codebook size K")
    t.add_argument("--code-dim", type=int, default=32, help="code dimension d")
    t.add_argument("--hidden", type=int, default=32, help="conv width")
    t.add_argument("--res-blocks", type=int, default=1)
    t.add_argument("--downsample", type=int, default=2, help="stride-2 layers (28 -> 7 with 2)")
    t.add_argument("--commitment", type=float, default=0.25, help="commitment weight beta")
    t.add_argument("--ema-decay", type=float, default=0.0, help="EMA codebook decay (0: off)")
    t.add_argument("--dead-code-threshold", type=float, default=1.0, help="0: no restarts")
    t.add_argument("--vq-steps", type=int, default=2000)
    t.add_argument("--prior-steps", type=int, default=2000)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=1e-3, help="VQ-VAE learning rate")
    t.add_argument("--prior-lr", type=float, default=1e-3)
    t.add_argument("--prior-channels", type=int, default=32)
    t.add_argument("--prior-layers", type=int, default=6)
    t.add_argument("--unconditional", action="store_true", help="no class conditioning")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("reconstruct", help="round-trip images through the codes",
                       formatter_class=fmt)  # fmt: skip
    r.add_argument("--model", required=True, metavar="DIR", help="directory of `vq train`")
    r.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    r.add_argument("--out", metavar="PNG", help="write originals over reconstructions here")
    r.set_defaults(func=cmd_reconstruct)

    s = sub.add_parser("sample", help="sample code maps from the prior and decode them",
                       formatter_class=fmt)  # fmt: skip
    s.add_argument("--model", required=True, metavar="DIR", help="directory of `vq train`")
    s.add_argument("--n", type=int, default=64, help="number of samples")
    s.add_argument("--out", required=True, metavar="PNG", help="the grid image to write")
    s.add_argument("--class", dest="cls", type=int, help="class to condition on")
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_sample)
    return vq


# -- train --------------------------------------------------------------------------------------
def _validate_train(args: argparse.Namespace) -> Path:
    for flag, minimum in (
        ("size", 1), ("max_train", 0), ("num_codes", 2), ("code_dim", 1), ("hidden", 1),
        ("res_blocks", 0), ("downsample", 1), ("vq_steps", 1), ("prior_steps", 1),
        ("batch_size", 1), ("prior_channels", 1), ("prior_layers", 1),
    ):  # fmt: skip
        check_positive_int(getattr(args, flag), "--" + flag.replace("_", "-"), minimum)
    for flag in ("lr", "prior_lr"):
        v = getattr(args, flag)
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be a finite number > 0, got {v}")
    for flag in ("commitment", "dead_code_threshold"):
        v = getattr(args, flag)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be a finite number >= 0, got {v}")
    if not 0 <= args.ema_decay < 1:
        raise ValueError(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
    if args.size % 2**args.downsample:
        raise ValueError(f"--size {args.size} must be divisible by 2**--downsample")
    if args.data == "mnist" and (args.size != 28 or args.channels != 1):
        raise ValueError("--data mnist is 28x28 grey: drop --size/--channels")
    out = check_out_dir(args.out, resume=args.resume, overwrite=args.overwrite)
    if args.resume and not (out / "model.json").is_file():
        raise ValueError(f"--resume: no model.json in {out} to continue from")
    return out


def cmd_train(args: argparse.Namespace) -> int:
    """Handler of ``kexue vq train``."""
    out = _validate_train(args)
    labels: torch.Tensor | None = None
    if args.data:
        images, labels = mnist_images("train", args.max_train or None)
    else:
        images = image_folder(args.images, args.size, args.channels)
        if args.max_train:
            images = images[: args.max_train]
    conditional = labels is not None and not args.unconditional
    meta = {
        "vqvae": {
            "in_channels": args.channels, "hidden": args.hidden, "code_dim": args.code_dim,
            "num_codes": args.num_codes, "downsample": args.downsample,
            "num_res_blocks": args.res_blocks,
            "quantizer_kwargs": {
                "commitment": args.commitment,
                "ema_decay": args.ema_decay or None,
                "dead_code_threshold": args.dead_code_threshold or None,
            },
        },
        "prior": {
            "num_codes": args.num_codes, "channels": args.prior_channels,
            "num_layers": args.prior_layers, "num_classes": 10 if conditional else 0,
        },
        "image_size": args.size, "channels": args.channels,
        "data": args.data or str(args.images), "train_images": len(images),
    }  # fmt: skip
    if args.resume:
        old = json.loads((out / "model.json").read_text(encoding="utf-8"))
        if old.get("vqvae") != meta["vqvae"] or old.get("prior") != meta["prior"]:
            raise ValueError(f"--resume: the model options differ from the run in {out}")
    out.mkdir(parents=True, exist_ok=True)
    save_bundle(out, meta)
    progress = not args.no_progress
    seed_everything(args.seed)
    model = VQVAE(**meta["vqvae"])
    common = {"batch_size": args.batch_size, "seed": args.seed, "progress": progress,
              "ckpt_every": 500, "overwrite": args.overwrite}  # fmt: skip
    resume_vq = args.resume and (out / "vqvae" / "checkpoints").is_dir()
    fit_vqvae(model, images, steps=args.vq_steps, lr=args.lr, out_dir=out / "vqvae",
              resume=resume_vq, **common)  # fmt: skip
    ev = evaluate_vqvae(model, images[:5000])
    codes = code_maps(model, images)
    seed_everything(args.seed)
    prior = PixelCNNPrior(**meta["prior"])
    resume_prior = args.resume and (out / "prior" / "checkpoints").is_dir()
    hist = fit_prior(prior, codes, labels, steps=args.prior_steps, lr=args.prior_lr,
                     out_dir=out / "prior", resume=resume_prior, **common)  # fmt: skip
    meta["train_metrics"] = {**ev, "prior_train_nll_per_code": hist["train"].get("loss")}
    save_bundle(out, meta)
    print(
        f"saved VQ-VAE (K={args.num_codes}, {codes.shape[1]}x{codes.shape[2]} codes) and prior "
        f"to {out}; train PSNR {ev['psnr']:.2f} dB, usage {100 * ev['usage']:.0f}%, prior "
        f"train NLL {hist['train'].get('loss', float('nan')):.3f} nats/code"
    )
    return 0


# -- reconstruct / sample -----------------------------------------------------------------------
def _model_dir(path: str) -> Path:
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"--model: no such directory: {root}")
    return root


def cmd_reconstruct(args: argparse.Namespace) -> int:
    """Handler of ``kexue vq reconstruct``."""
    model, _, meta = load_bundle(_model_dir(args.model), with_prior=False)
    paths = [Path(p) for p in args.images]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"no such image file: {p}")
    x = load_images(paths, meta["image_size"], meta["channels"])
    with torch.no_grad():
        x_hat = model.reconstruct(x)
    for p, a, b in zip(paths, x, x_hat):
        mse = float(((a - b) / 2).square().mean())
        print(f"{p}\tmse {mse:.5f}\tpsnr {10 * math.log10(1 / max(mse, 1e-12)):.2f} dB")
    if args.out:
        if not Path(args.out).parent.is_dir():
            raise FileNotFoundError(f"--out: no such directory: {Path(args.out).parent}")
        save_png(make_grid(torch.cat([x, x_hat]), nrow=len(paths)), args.out)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """Handler of ``kexue vq sample``."""
    check_positive_int(args.n, "--n")
    if not math.isfinite(args.temperature) or args.temperature <= 0:
        raise ValueError(f"--temperature must be a finite number > 0, got {args.temperature}")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out: no such directory: {out.parent}")
    model, prior, meta = load_bundle(_model_dir(args.model))
    assert prior is not None
    if prior.num_classes:
        if args.cls is None:
            raise ValueError(
                f"--class is required: the prior is conditional (0..{prior.num_classes - 1})"
            )
        if not 0 <= args.cls < prior.num_classes:
            raise ValueError(f"--class must be in [0, {prior.num_classes}), got {args.cls}")
    elif args.cls is not None:
        raise ValueError("--class given but the prior is unconditional")
    side = meta["image_size"] // 2 ** meta["vqvae"]["downsample"]
    gen = torch.Generator().manual_seed(args.seed)
    codes = prior.sample(args.n, (side, side), y=args.cls, temperature=args.temperature,
                         generator=gen)  # fmt: skip
    with torch.no_grad():
        images = model.decode(codes)
    save_png(make_grid(images, nrow=math.ceil(math.sqrt(args.n))), args.out)
    print(f"wrote {args.n} samples to {args.out}")
    return 0
