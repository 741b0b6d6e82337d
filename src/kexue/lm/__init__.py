"""kexue.lm: HF BERT models from local directories, a character-level Chinese tokenizer built
from our own text, and tiny-BERT MLM pretraining (through :class:`kexue.train.Trainer`) with a
cache keyed by the pretraining config.

Nothing is ever fetched from a hub: every load is ``local_files_only``. One model ships in the
package, ``zh-char-bert`` (:func:`shipped_dir`); its name works wherever a BERT directory does.
"""

from kexue.lm.model import HEADS, load_pretrained, save_pretrained, tiny_bert_config
from kexue.lm.pretraining import (
    PRESETS,
    PretrainConfig,
    build_mlm,
    cache_dir,
    cached_pretrained,
    encoder_and_head,
    evaluate_mlm,
    mask_tokens,
    pack_texts,
    pretrain,
)
from kexue.lm.shipped import SHIPPED, export_fp16, resolve_model_dir, shipped_dir
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
    "PRESETS",
    "SHIPPED",
    "SPECIAL_TOKENS",
    "PretrainConfig",
    "build_mlm",
    "build_tokenizer",
    "cache_dir",
    "cached_pretrained",
    "char_vocab",
    "encode_chars",
    "encoder_and_head",
    "evaluate_mlm",
    "export_fp16",
    "load_pretrained",
    "load_tokenizer",
    "mask_tokens",
    "pack_texts",
    "pretrain",
    "resolve_model_dir",
    "save_pretrained",
    "save_tokenizer",
    "shipped_dir",
    "tiny_bert_config",
]
