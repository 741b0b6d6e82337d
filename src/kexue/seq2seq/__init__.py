"""kexue.seq2seq: seq2seq with synchronous bidirectional decoding (article 5).

Su Jianlin, 《seq2seq之双向解码》 (kexue.fm, 2019-08-09): a Transformer encoder-decoder
(:mod:`kexue.seq2seq.model`), batched beam search (:mod:`kexue.seq2seq.beam`), a model with
left-to-right and right-to-left decoders that attend to each other step by step and its
bidirectional beam search (:mod:`kexue.seq2seq.bidirectional`), character ROUGE/BLEU
(:mod:`kexue.seq2seq.metrics`).
"""

from kexue.seq2seq.beam import ban_repeated_ngrams, beam_search, greedy_search
from kexue.seq2seq.bidirectional import BiDecodeState, BidirectionalSeq2Seq
from kexue.seq2seq.bisearch import BidirectionalOutput, bidirectional_beam_search
from kexue.seq2seq.model import DecodeState, Seq2Seq, Seq2SeqConfig

__all__ = [
    "BiDecodeState",
    "BidirectionalOutput",
    "BidirectionalSeq2Seq",
    "DecodeState",
    "Seq2Seq",
    "Seq2SeqConfig",
    "ban_repeated_ngrams",
    "beam_search",
    "bidirectional_beam_search",
    "greedy_search",
]
