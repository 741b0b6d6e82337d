"""kexue.mrc: reading comprehension with a masked LM (Su, 2019-12-26) and two baselines.

* :class:`MLMReader`: ``[CLS] [MASK]*L [SEP] q [SEP] p [SEP]``, all answer slots in one
  forward pass, greedy decoding restricted to passage continuations, voting over passages;
* :class:`ARReader`: UniLM seq2seq reader on the same BERT (KV-cached generation);
* :class:`SpanReader`: ``BertForQuestionAnswering`` start/end reader;
* metrics: CMRC 2018 EM/F1 and the Sogou script's Accuracy/F1/Final.

Training and data live in :mod:`kexue.mrc.recipe`; the CLI is ``kexue mrc``.
"""

from kexue.mrc.baselines import ARReader, SpanReader, bert_incremental, unilm_mask
from kexue.mrc.features import build_inputs, build_target, normalize_passage, windows
from kexue.mrc.metrics import (
    cmrc_em,
    cmrc_f1,
    evaluate_predictions,
    sogou_accuracy,
    sogou_f1,
    sogou_normalize,
)
from kexue.mrc.reader import (
    MLMReader,
    PassageConstraint,
    aggregate_answers,
    best_answer,
    best_per_passage,
    constrained_greedy_decode,
    masked_slot_loss,
    unconstrained_decode,
)

__all__ = [
    "ARReader",
    "MLMReader",
    "PassageConstraint",
    "SpanReader",
    "aggregate_answers",
    "bert_incremental",
    "best_answer",
    "best_per_passage",
    "build_inputs",
    "build_target",
    "cmrc_em",
    "cmrc_f1",
    "constrained_greedy_decode",
    "evaluate_predictions",
    "masked_slot_loss",
    "normalize_passage",
    "sogou_accuracy",
    "sogou_f1",
    "sogou_normalize",
    "unconstrained_decode",
    "unilm_mask",
    "windows",
]
