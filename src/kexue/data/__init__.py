"""kexue.data: dataset readers, the shipped small datasets, one registry, and a vocabulary.

Quick use::

    from kexue import data
    data.list_datasets()                       # names, splits + counts, files, licences
    sents = data.load("ud-gsd-cws", "train")   # list[list[str]]
    x, y = data.load("mnist", "test")          # uint8 (10000, 28, 28), int64 (10000,)
    vocab = data.Vocab.build(sents, min_freq=2)

Set ``KEXUE_DATA`` to a directory laid out like the project's ``shared/data`` to use full copies
(they take precedence file by file). Readers for users' own files live in
:mod:`kexue.data.readers`.
"""

from kexue.data._io import DataFormatError
from kexue.data.readers import (
    read_cluener,
    read_cluener_spans,
    read_conll,
    read_mnist_idx,
    read_pairs_tsv,
    read_segmented,
    read_squad,
    read_webqa,
)
from kexue.data.registry import (
    DATASETS,
    DatasetInfo,
    clear_cache,
    data_path,
    list_datasets,
    load,
    shipped_root,
)
from kexue.data.vocab import Vocab

__all__ = [
    "DATASETS",
    "DataFormatError",
    "DatasetInfo",
    "Vocab",
    "clear_cache",
    "data_path",
    "list_datasets",
    "load",
    "read_cluener",
    "read_cluener_spans",
    "read_conll",
    "read_mnist_idx",
    "read_pairs_tsv",
    "read_segmented",
    "read_squad",
    "read_webqa",
    "shipped_root",
]
