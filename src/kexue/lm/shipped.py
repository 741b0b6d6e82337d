"""The one checkpoint kexue ships: ``zh-char-bert``, a character-level Chinese BERT-mini.

It lives in the package (``kexue/lm/shipped/zh-char-bert/``) as a standard HF directory:
``config.json``, ``model.safetensors`` (fp16), ``vocab.txt``, ``tokenizer.json``,
``tokenizer_config.json``, plus ``kexue_manifest.json``: the sha256 of every file, the
pretraining config, corpus, steps and CPU hours, and the held-out MLM accuracy / perplexity with
the unigram baseline beside them. Nothing downloads it; ``kexue lm pretrain --preset
zh-char-bert`` rebuilds it and :func:`export_fp16` writes such a directory from any HF masked
LM directory.

``transformers.AutoModelForMaskedLM.from_pretrained(shipped_dir("zh-char-bert"),
local_files_only=True)`` loads it with no kexue code; every kexue command that takes a BERT
directory also takes the name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kexue.core.io import (
    DIR_MANIFEST,
    default_file_mode,
    staged_dir,
    verify_dir_manifest,
    write_dir_manifest,
)

__all__ = ["SHIPPED", "export_fp16", "resolve_model_dir", "shipped_dir"]

SHIPPED_ROOT = Path(__file__).with_name("shipped")
SHIPPED = ("zh-char-bert",)


def shipped_dir(name: str = "zh-char-bert", *, verify: bool = True) -> Path:
    """The directory of a shipped model, its files checked against its manifest.

    Args:
        name: one of :data:`SHIPPED`.
        verify: check every file's size and sha256 (a few ms).

    Returns:
        The directory (a standard HF one).

    Raises:
        ValueError: unknown ``name``, or a file that differs from the manifest (named in one
            line).
        FileNotFoundError: the package was installed without its model files.
    """
    if name not in SHIPPED:
        raise ValueError(f"unknown shipped model {name!r}; shipped: {', '.join(SHIPPED)}")
    path = SHIPPED_ROOT / name
    if not (path / DIR_MANIFEST).is_file():
        raise FileNotFoundError(
            f"shipped model {name!r} is missing from this installation ({path}); reinstall "
            f"kexue, or rebuild it: kexue lm pretrain --preset {name} --out DIR"
        )
    if verify:
        verify_dir_manifest(path, required=True)
    return path


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """A shipped model's name (``"zh-char-bert"``) to its directory; any other value is taken
    as a path (returned as given; the caller checks it exists)."""
    if isinstance(name_or_path, str) and name_or_path in SHIPPED:
        return shipped_dir(name_or_path)
    return Path(name_or_path)


def export_fp16(
    model_dir: str | os.PathLike, out: str | os.PathLike, *, info: dict[str, Any] | None = None
) -> Path:
    """Write an fp16 copy of the HF masked LM in ``model_dir`` (weights, config, tokenizer)
    to ``out`` with a manifest (``info`` + every file's sha256), atomically.

    Float tensors are rounded to fp16 (round-to-nearest-even); loading them back in float32 is
    exact, so an evaluation of the fp16 file is reproducible bit for bit.
    """
    import torch

    from kexue.lm.model import load_pretrained, save_pretrained

    model, tok = load_pretrained(model_dir)
    model = model.to(torch.float16)
    with staged_dir(out) as tmp:
        save_pretrained(model, tok, tmp, manifest=False)
        for f in tmp.iterdir():  # package data: readable by everyone, as any installed file
            os.chmod(f, default_file_mode())
        write_dir_manifest(tmp, extra=info)
    return Path(out)
