"""kexue.tagging: CRF, MEMM and bidirectional MEMM heads for sequence labelling (article 8).

Su Jianlin, 《CRF用过了，不妨再了解下更快的MEMM？》 (kexue.fm, 2020-02-24) and
《简明条件随机场CRF介绍（附带纯Keras实现）》 (2018-05-18).
"""

from kexue.tagging._common import Constraints
from kexue.tagging.bert import BertTagger, load_tagger
from kexue.tagging.crf import CRF
from kexue.tagging.memm import MEMM, BiMEMM
from kexue.tagging.metrics import cws_prf, entity_prf, entity_set_f1
from kexue.tagging.schemes import (
    allowed_transitions,
    spans_to_tags,
    tag_set,
    tags_to_spans,
    tags_to_words,
    words_to_tags,
)
from kexue.tagging.tagger import Tagger
from kexue.tagging.viterbi import viterbi_decode, viterbi_nbest

__all__ = [
    "CRF",
    "MEMM",
    "BertTagger",
    "BiMEMM",
    "Constraints",
    "Tagger",
    "allowed_transitions",
    "cws_prf",
    "entity_prf",
    "entity_set_f1",
    "load_tagger",
    "spans_to_tags",
    "tag_set",
    "tags_to_spans",
    "tags_to_words",
    "viterbi_decode",
    "viterbi_nbest",
    "words_to_tags",
]
