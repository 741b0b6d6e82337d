"""kexue.lm: HF BERT models from local directories, a character-level Chinese tokenizer built
from our own text, and tiny-BERT MLM pretraining (through :class:`kexue.train.Trainer`) with a
cache keyed by the pretraining config.

Nothing is ever fetched from a hub: every load is ``local_files_only``.
"""

from kexue.lm.model import HEADS, load_pretrained, save_pretrained, tiny_bert_config
from kexue.lm.pretraining import (
    PretrainConfig,
    cache_dir,
    cached_pretrained,
    evaluate_mlm,
    mask_tokens,
    pack_texts,
    pretrain,
)
from kexue.lm.tokenizer import (
    SPECIAL_TOKENS,
    build_tokenizer,
    char_vocab,
    encode_chars,
    load_tokenizer,
    save_tokenizer,
)

__all__ = [
    "HEADS",
    "SPECIAL_TOKENS",
    "PretrainConfig",
    "build_tokenizer",
    "cache_dir",
    "cached_pretrained",
    "char_vocab",
    "encode_chars",
    "evaluate_mlm",
    "load_pretrained",
    "load_tokenizer",
    "mask_tokens",
    "pack_texts",
    "pretrain",
    "save_pretrained",
    "save_tokenizer",
    "tiny_bert_config",
]
