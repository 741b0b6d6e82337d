"""The audit's reader fixes: one vote per passage, multi-part answers labelled part by part,
and evaluation of every question (empty ones counted, not fatal)."""

from __future__ import annotations

import pytest
import torch
from tests.mrc.conftest import make_mlm

from kexue.mrc import ARReader, MLMReader, SpanReader, best_answer, best_per_passage
from kexue.mrc.features import answer_in_window
from kexue.mrc.recipe import Example, evaluate


def test_one_passage_votes_once_hand_case():
    # three windows of ONE passage: the two 'A' windows overlap, so they are one occurrence
    windows = [(0, "A", 0.8), (0, "A", 0.8), (0, "B", 0.9)]
    assert best_per_passage(windows) == [("B", 0.9)]
    assert best_answer(best_per_passage(windows)) == ("B", pytest.approx(0.81 / 1.9))
    # had every window voted, 'A' would win: 1.28 / 2.6 > 0.81 / 1.9
    assert best_answer([(a, v) for _, a, v in windows])[0] == "A"
    # two passages that both say 'A' still agree, and outvote a third that says 'B'
    three = [(0, "A", 0.8), (1, "A", 0.8), (2, "B", 0.9)]
    assert best_answer(best_per_passage(three)) == ("A", pytest.approx(1.28 / 2.6))


def test_best_per_passage_prefers_an_answer_over_no_answer_and_keeps_order():
    w = [(1, "", 0.99), (0, "X", 0.2), (1, "Y", 0.3), (0, "", 0.9), (2, "", 0.4), (2, "", 0.7)]
    assert best_per_passage(w) == [("Y", 0.3), ("X", 0.2), ("", 0.7)]


class _Spell(torch.nn.Module):
    """Every window's slots spell ``target`` (so each window of a long passage answers)."""

    def __init__(self, vocab: int, target: list[int]) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.v, self.target = vocab, target

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        b, n = input_ids.shape
        logits = torch.zeros(b, n, self.v)
        for k, y in enumerate(self.target):
            logits[:, 1 + k, y] = 10.0
        return type("Out", (), {"logits": logits})()


def test_mlm_reader_gives_one_candidate_per_passage(tok):
    target = [tok.convert_tokens_to_ids("京"), tok.sep_token_id]
    reader = MLMReader(
        _Spell(len(tok), target), tok, max_answer_len=3, max_passage_len=10, stride=5
    )
    long = "北京天安门长城北京在哪里是谁的名字北京上海"  # 京 in several overlapping windows
    assert len(reader.encode("哪里", long)) >= 3
    [cands] = reader.candidates_batch([("哪里", [long, "中国人民大学"])])
    assert len(cands) == 2 and cands[0][0] == "京" and cands[1][0] == ""
    answer, score = reader.predict("哪里", long)
    v = cands[0][1]
    assert answer == "京" and score == pytest.approx(v * v / (v + 1))  # one vote, not three


@pytest.mark.parametrize("kind", ["ar", "span"])
def test_baselines_give_one_candidate_per_passage(tok, kind):
    from transformers import BertForQuestionAnswering

    from kexue.lm import tiny_bert_config

    if kind == "ar":
        reader = ARReader(make_mlm(tok), tok, max_answer_len=4, max_passage_len=10, stride=5)
    else:
        torch.manual_seed(0)
        qa = BertForQuestionAnswering(
            tiny_bert_config(len(tok), hidden_size=32, num_layers=1, num_heads=2)
        ).eval()
        reader = SpanReader(qa, tok, max_answer_len=4, max_passage_len=10, stride=5)
    long = "北京天安门长城北京在哪里是谁的名字北京上海"
    [cands] = reader.candidates_batch([("哪里", [long, "中国人民大学", long])])
    assert len(cands) == 3


def test_multi_part_answers_are_labelled_part_by_part(tok):
    assert answer_in_window("北京 上海", "北京在东，上海在南")
    assert not answer_in_window("北京 上海", "北京在东")
    assert answer_in_window("北京、上海", "有北京，上海")  # normalised on both sides
    assert not answer_in_window("", "北京")
    reader = MLMReader(make_mlm(tok), tok, max_answer_len=8, max_passage_len=40)
    [(_, target)] = reader.training_features("哪里", "北京在东，上海在南", "北京 上海")
    ids = [tok.convert_tokens_to_ids(c) for c in "北京,上海"]
    assert target[: len(ids) + 1] == [*ids, tok.sep_token_id]
    [(_, none)] = reader.training_features("哪里", "北京在东", "北京 上海")
    assert none[0] == tok.sep_token_id
    ar = ARReader(make_mlm(tok), tok, max_answer_len=8, max_passage_len=40)
    [(seq, plen)] = ar.training_features("哪里", "北京在东，上海在南", "北京 上海")
    assert len(seq) - plen == len(ids) + 1


def test_evaluate_counts_empty_questions_as_the_official_script(tok):
    reader = MLMReader(make_mlm(tok), tok, max_answer_len=4, max_passage_len=20)
    ex = [
        Example("a", "哪里", ["北京在东"], ["北京"], ["北京"]),
        Example("b", "", ["上海在南"], ["上海"], ["上海"]),
        Example("c", "  ", ["上海在南"], ["上海"], ["上海"]),
    ]
    res = evaluate(reader, ex)
    assert res["n"] == 3 and res["empty_questions"] == 2
    assert res["predictions"]["b"] == "" and res["predictions"]["c"] == ""
    assert res["em"] <= 1 / 3 + 1e-9
