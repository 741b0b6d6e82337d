"""HF BERT models from and to local directories (``local_files_only``: never a hub).

A model directory is a standard HF directory: ``config.json``, ``model.safetensors`` and the
tokenizer files, so ``transformers.AutoModelForMaskedLM.from_pretrained(path)`` reads it and a
user's own Chinese BERT checkpoint (downloaded elsewhere) loads with the same call.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kexue.core.checks import check_positive_int
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


def save_pretrained(model: Any, tokenizer: Any, path: str | os.PathLike) -> Path:
    """Write ``model`` (``config.json`` + ``model.safetensors``) and ``tokenizer`` into ``path``."""
    import transformers

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    transformers.utils.logging.disable_progress_bar()  # one bar per shard: noise in our logs
    model.save_pretrained(str(path))
    save_tokenizer(tokenizer, path)
    return path


def load_pretrained(path: str | os.PathLike, head: str = "mlm") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a local HF directory.

    Args:
        path: directory with ``config.json``, weights and tokenizer files.
        head: ``"mlm"`` (``BertForMaskedLM``), ``"qa"`` (``BertForQuestionAnswering``; a fresh
            span head on the encoder when the checkpoint has none) or ``"base"`` (``BertModel``).

    Returns:
        The model in eval mode and the tokenizer.

    Raises:
        FileNotFoundError: no directory, no ``config.json`` or no tokenizer files.
        ValueError: unknown ``head``.
    """
    import transformers

    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {path}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a HF model directory")
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
    finally:
        transformers.logging.set_verbosity(verbosity)
    return model.eval(), tokenizer
