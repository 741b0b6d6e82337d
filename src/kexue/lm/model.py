"""HF BERT models from and to local directories (``local_files_only``: never a hub).

A model directory is a standard HF directory: ``config.json``, ``model.safetensors`` and the
tokenizer files, so ``transformers.AutoModelForMaskedLM.from_pretrained(path)`` reads it and a
user's own Chinese BERT checkpoint (downloaded elsewhere) loads with the same call.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kexue.core.checks import check_positive_int
from kexue.core.io import verify_dir_manifest, write_dir_manifest
from kexue.lm.tokenizer import load_tokenizer, save_tokenizer

__all__ = ["HEADS", "load_pretrained", "save_pretrained", "tiny_bert_config"]

HEADS = ("mlm", "qa", "base")


def tiny_bert_config(
    vocab_size: int,
    *,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_positions: int = 512,
    dropout: float = 0.1,
) -> Any:
    """A small ``transformers.BertConfig`` (post-LN BERT, GELU, tied MLM head).

    Args:
        vocab_size: tokenizer size ``v``.
        hidden_size: ``d``; must be divisible by ``num_heads``.
        num_layers: Transformer blocks.
        num_heads: attention heads.
        intermediate_size: FFN width (default ``4 d``).
        max_positions: longest input (learned absolute positions).
        dropout: hidden and attention dropout.

    Raises:
        ValueError / TypeError: a non-positive size, ``d % num_heads != 0``, dropout outside [0, 1).
    """
    from transformers import BertConfig

    for name, v in (
        ("vocab_size", vocab_size),
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
        ("num_heads", num_heads),
        ("max_positions", max_positions),
    ):
        check_positive_int(v, name)
    if hidden_size % num_heads:
        raise ValueError(
            f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})"
        )
    inter = 4 * hidden_size if intermediate_size is None else intermediate_size
    check_positive_int(inter, "intermediate_size")
    if not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=inter,
        max_position_embeddings=max_positions,
        hidden_dropout_prob=float(dropout),
        attention_probs_dropout_prob=float(dropout),
        type_vocab_size=2,
        pad_token_id=0,
    )


def save_pretrained(
    model: Any, tokenizer: Any, path: str | os.PathLike, *, manifest: bool = True
) -> Path:
    """Write ``model`` (``config.json`` + ``model.safetensors``) and ``tokenizer`` into ``path``,
    then (``manifest=True``) ``kexue_manifest.json`` with every file's size and sha256, which
    :func:`load_pretrained` checks, so a flipped byte is named instead of silently loaded."""
    import transformers

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    transformers.utils.logging.disable_progress_bar()  # one bar per shard: noise in our logs
    model.save_pretrained(str(path))
    save_tokenizer(tokenizer, path)
    if manifest:
        write_dir_manifest(path)
    return path


def load_pretrained(
    path: str | os.PathLike, head: str = "mlm", *, dtype: Any = "float32"
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a local HF directory or a shipped model's name.

    Args:
        path: directory with ``config.json``, weights and tokenizer files, or
            ``"zh-char-bert"`` (:func:`kexue.lm.shipped_dir`).
        head: ``"mlm"`` (``BertForMaskedLM``), ``"qa"`` (``BertForQuestionAnswering``; a fresh
            span head on the encoder when the checkpoint has none) or ``"base"`` (``BertModel``).
        dtype: the parameters' dtype after loading (default float32, whatever the file
            stores: an fp16 checkpoint trained in fp16 on a CPU overflows within steps);
            ``None`` keeps what ``transformers`` loads.

    Returns:
        The model in eval mode and the tokenizer.

    Raises:
        FileNotFoundError: no directory, no ``config.json`` or no tokenizer files.
        ValueError: unknown ``head``; a file that differs from the directory's
            ``kexue_manifest.json`` (one line naming it); a ``config.json`` that is not JSON.
    """
    import torch
    import transformers

    from kexue.lm.shipped import resolve_model_dir

    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    path = resolve_model_dir(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {path}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a HF model directory")
    verify_dir_manifest(path)
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{path / 'config.json'}: not valid JSON (corrupt config)") from None
    tokenizer = load_tokenizer(path)  # checked first: a model without a tokenizer is unusable
    cls = {
        "mlm": transformers.AutoModelForMaskedLM,
        "qa": transformers.AutoModelForQuestionAnswering,
        "base": transformers.AutoModel,
    }[head]
    verbosity = transformers.logging.get_verbosity()
    transformers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()  # the expected "qa_outputs newly initialised" report
    try:
        model = cls.from_pretrained(str(path), local_files_only=True)
    except OSError as e:  # missing or unreadable weights: one line, not a traceback
        raise FileNotFoundError(f"{path}: cannot load the weights ({e})".splitlines()[0]) from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    if dtype is not None:
        model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    return model.eval(), tokenizer
