"""Tiny shared helpers used by every part: argument checks, masks, seeding, atomic checkpoints."""

from kexue.core.checks import check_dtype, check_positive_int, check_shape, check_tensor
from kexue.core.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_safetensors,
    save_safetensors,
)
from kexue.core.masks import lengths_to_mask, mask_to_lengths, resolve_mask
from kexue.core.seed import seed_everything

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_dtype",
    "check_positive_int",
    "check_shape",
    "check_tensor",
    "lengths_to_mask",
    "load_safetensors",
    "mask_to_lengths",
    "resolve_mask",
    "save_safetensors",
    "seed_everything",
]
