"""MLM reader: constrained decoding (properties + brute force), voting, loss, one-pass == per slot,
batching, windows, bad inputs and loading."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kexue.mrc.reader import (
    MLMReader,
    aggregate_answers,
    best_answer,
    constrained_greedy_decode,
    masked_slot_loss,
    unconstrained_decode,
)

SEP = 3


def _is_sublist(a: list[int], t: list[int]) -> bool:
    return any(t[i : i + len(a)] == a for i in range(len(t) - len(a) + 1))


def _brute_force_decode(P: torch.Tensor, t: list[int], end: int) -> list[int]:
    """Independent oracle: at each step scan the passage for tokens that follow the prefix."""
    a: list[int] = []
    for i in range(P.shape[0]):
        follow = {
            t[j + len(a)] for j in range(len(t)) if t[j : j + len(a)] == a and j + len(a) < len(t)
        }
        allowed = sorted(follow | {end})
        best = max(allowed, key=lambda y: (float(P[i, y]), -y))  # ties -> lowest id
        if best == end:
            break
        a.append(best)
    return a


passages = st.lists(st.integers(5, 12), min_size=0, max_size=30).map(lambda p: p + [SEP])


@given(
    t=passages,
    L=st.integers(1, 8),
    seed=st.integers(0, 10_000),
    temp=st.sampled_from([0.05, 1.0, 20.0]),
)
def test_constrained_answer_is_a_passage_span_and_matches_brute_force(t, L, seed, temp):
    g = torch.Generator().manual_seed(seed)
    P = (torch.randn(L, 13, generator=g, dtype=torch.float64) / temp).softmax(-1)
    ids, score, start = constrained_greedy_decode(P, t, SEP)
    assert _is_sublist(ids, t) and SEP not in ids
    if ids:
        assert t[start : start + len(ids)] == ids
    assert ids == _brute_force_decode(P, t, SEP)
    assert 0.0 <= score <= 1.0


@given(t=passages, data=st.data())
def test_one_hot_span_is_recovered_with_score_one(t, data):
    n = len(t) - 1
    if n == 0:
        return
    i = data.draw(st.integers(0, n - 1))
    j = data.draw(st.integers(i + 1, n))
    span = t[i:j]
    L = len(span) + 1 + data.draw(st.integers(0, 3))
    P = torch.zeros(L, 13, dtype=torch.float64)
    for k, y in enumerate(span):
        P[k, y] = 1.0
    P[len(span) :, SEP] = 1.0
    ids, score, _ = constrained_greedy_decode(P, t, SEP)
    assert ids == span and score == 1.0


def test_sep_first_gives_empty_answer_and_underflow_stays_in_allowed_set():
    t = [7, 8, 9, SEP]
    P = torch.zeros(4, 13)
    P[0, SEP] = 1.0
    assert constrained_greedy_decode(P, t, SEP) == ([], 1.0, 0)
    # every allowed probability 0 (underflow): the pick must still be allowed (lowest id wins)
    P = torch.zeros(3, 13)
    P[:, 0] = 1.0  # all mass on [PAD], which is never allowed
    ids, score, _ = constrained_greedy_decode(P, t, SEP)
    assert ids == [] and score == 0.0  # SEP (3) < 7: the lowest allowed id
    # no [SEP] ever chosen: runs all L steps, score = mean over L
    P = torch.full((2, 13), 0.0)
    P[0, 8], P[1, 9] = 0.5, 0.25
    assert constrained_greedy_decode(P, t, SEP) == ([8, 9], 0.375, 1)
    # an empty passage (only its [SEP]) never fails
    assert constrained_greedy_decode(torch.rand(3, 13), [SEP], SEP)[0] == []
    with pytest.raises(ValueError, match="slot_probs"):
        constrained_greedy_decode(torch.rand(13), t, SEP)


def test_aggregation_hand_computed():
    cands = [("a", 0.9), ("b", 0.95), ("a", 0.8), ("", 0.99)]
    s = aggregate_answers(cands)
    assert set(s) == {"a", "b"}  # the empty answer never votes
    assert math.isclose(s["a"], (0.81 + 0.64) / (1.7 + 1))  # 0.537...
    assert math.isclose(s["b"], 0.9025 / 1.95)  # 0.4628...
    assert best_answer(cands) == ("a", s["a"])
    assert best_answer([("", 0.9)]) == ("", 0.0)


def test_masked_slot_loss_hand_computed_and_pad_invariant():
    logits = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[4, 3, 0], [3, 0, 0]])
    loss = masked_slot_loss(logits, targets)
    lp = logits.log_softmax(-1)
    hand = -(lp[0, 0, 4] + lp[0, 1, 3] + lp[1, 0, 3]) / 3
    torch.testing.assert_close(loss, hand)
    loss.backward()
    g = logits.grad.clone()
    assert (g[0, 2] == 0).all() and (g[1, 1:] == 0).all()  # pad slots get no gradient
    changed = logits.detach().clone()
    changed[0, 2] += 100.0
    torch.testing.assert_close(masked_slot_loss(changed, targets), hand.detach())
    with pytest.raises(ValueError, match="targets"):
        masked_slot_loss(logits, targets[:, :2])
    with pytest.raises(ValueError, match="reduction"):
        masked_slot_loss(logits, targets, reduction="avg")


def test_one_pass_unconstrained_equals_slot_by_slot_argmax(tok, mlm):
    reader = MLMReader(mlm, tok, max_answer_len=5, max_passage_len=40, constrained=False)
    q, p = "长城在哪里？", "长城在北京，是中国的名字"
    [(enc, _)] = reader.encode(q, p)
    ids = torch.tensor([enc.input_ids])
    with torch.no_grad():
        full = mlm(input_ids=ids, token_type_ids=torch.zeros_like(ids)).logits[0]
    picks = []
    for slot in range(1, 6):  # each slot on its own, from the full-vocabulary logits
        y = int(full[slot].argmax())
        if y == tok.sep_token_id:
            break
        picks.append(y)
    answer, _ = reader.predict(q, p)
    assert answer == tok.decode(picks).replace(" ", "")
    # fast path (head on the slots only) == generic model(...).logits
    with torch.no_grad():
        fast = reader.slot_logits(ids, torch.ones_like(ids, dtype=torch.bool))[0]
    torch.testing.assert_close(fast, full[1:6])
    P = fast.softmax(-1)
    assert unconstrained_decode(P, tok.sep_token_id)[0] == picks


@given(
    passage=st.text(
        alphabet="我爱北京天安门长城在哪里是谁的名字上海中国人民大学，、 abc1",
        min_size=0,
        max_size=70,
    ),
    seed=st.integers(0, 3),
)
def test_predicted_answers_are_substrings_of_a_passage(tok, passage, seed):
    from tests.mrc.conftest import make_mlm

    model = _MODELS.setdefault(seed, make_mlm(tok, seed=seed))
    reader = MLMReader(
        model, tok, max_answer_len=6, max_question_len=8, max_passage_len=16, stride=8
    )  # long passages are windowed
    answer, score = reader.predict("长城在哪里？", [passage, "北京天安门"])
    assert answer == "" or answer in passage or answer in "北京天安门"
    assert score >= 0.0


_MODELS: dict[int, torch.nn.Module] = {}


def test_windows_let_an_answer_beyond_the_first_window_be_found(tok):
    # a stub model whose slots spell the last characters of the passage: only the last window
    # can produce them
    reader_tok = tok
    target = [reader_tok.convert_tokens_to_ids(c) for c in "南"] + [reader_tok.sep_token_id]

    class Spell(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            b, n = input_ids.shape
            logits = torch.zeros(b, n, len(reader_tok))
            for k, y in enumerate(target):
                logits[:, 1 + k, y] = 10.0

            class Out:
                pass

            out = Out()
            out.logits = logits
            return out

    reader = MLMReader(Spell(), tok, max_answer_len=3, max_passage_len=10, stride=5)
    passage = "北京天安门长城在哪里是谁的名字上海中国人民大学东西南"
    assert len(reader.encode("哪里", passage)) > 1
    answer, score = reader.predict("哪里", passage)
    assert answer == "南" and score > 0.49  # s = v^2 / (v + 1) with v close to 1


def test_predict_batch_equals_predict_one_by_one(tok, mlm):
    reader = MLMReader(mlm, tok, max_answer_len=4, max_passage_len=12, stride=6)
    queries = [
        ("长城在哪里？", ["长城在北京", "北京天安门"]),
        ("谁的名字", "中国人民大学是名字"),
        ("哪里", ["上海东西南北中国人民大学在上海", ""]),
    ]
    batched = reader.predict_batch(queries, batch_size=2)
    single = [reader.predict(q, p) for q, p in queries]
    assert [a for a, _ in batched] == [a for a, _ in single]
    for (_, s1), (_, s2) in zip(batched, single, strict=True):
        assert math.isclose(s1, s2, rel_tol=1e-5, abs_tol=1e-7)


def test_bad_inputs(tok, mlm):
    reader = MLMReader(mlm, tok, max_answer_len=4, max_passage_len=12)
    with pytest.raises(TypeError, match="question"):
        reader.predict(None, ["北京"])
    with pytest.raises(ValueError, match="question is empty"):
        reader.predict("  ", ["北京"])
    with pytest.raises(ValueError, match="passages is empty"):
        reader.predict("哪里", [])
    with pytest.raises(TypeError, match=r"passages\[1\]"):
        reader.predict("哪里", ["北京", 3])
    with pytest.raises(TypeError, match="passages"):
        reader.predict("哪里", {"p": "北京"})
    with pytest.raises(ValueError, match="stride"):
        MLMReader(mlm, tok, max_passage_len=10, stride=11)
    with pytest.raises(ValueError, match="positions"):
        MLMReader(mlm, tok, max_passage_len=256)  # 128 positions only
    with pytest.raises(ValueError, match="max_answer_len"):
        MLMReader(mlm, tok, max_answer_len=0)
    with pytest.raises(TypeError, match="model"):
        MLMReader("bert", tok)
    with pytest.raises(ValueError, match="batch_size"):
        reader.predict_batch([("哪里", "北京")], batch_size=0)


def test_from_pretrained_round_trip_and_errors(tok, mlm, tmp_path):
    from kexue.lm import save_pretrained

    save_pretrained(mlm, tok, tmp_path / "m")
    r1 = MLMReader(mlm, tok, max_answer_len=4, max_passage_len=20)
    r2 = MLMReader.from_pretrained(tmp_path / "m", max_answer_len=4, max_passage_len=20)
    q, p = "长城在哪里？", "长城在北京，是中国的名字"
    assert r1.predict(q, p) == r2.predict(q, p)
    mlm.save_pretrained(str(tmp_path / "no_tok"))
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        MLMReader.from_pretrained(tmp_path / "no_tok")
    with pytest.raises(FileNotFoundError, match="config.json"):
        MLMReader.from_pretrained(tmp_path / "nothing")


def _brute_force_min1(P: torch.Tensor, t: list[int], end: int) -> list[int]:
    """Oracle for ``min_len=1``: slot 0 picks the best passage token (never ``end`` unless the
    passage is empty), later slots as in :func:`_brute_force_decode`."""
    a: list[int] = []
    for i in range(P.shape[0]):
        follow = {
            t[j + len(a)] for j in range(len(t)) if t[j : j + len(a)] == a and j + len(a) < len(t)
        } - {end}
        allowed = sorted(follow) if i == 0 and follow else sorted(follow | {end})
        best = max(allowed, key=lambda y: (float(P[i, y]), -y))
        if best == end:
            break
        a.append(best)
    return a


@given(t=passages, L=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_required_answer_is_never_empty_and_matches_brute_force(t, L, seed):
    g = torch.Generator().manual_seed(seed)
    P = torch.randn(L, 13, generator=g, dtype=torch.float64).softmax(-1)
    P[0, SEP] = 5.0  # the model would rather say "no answer"
    ids, _, start = constrained_greedy_decode(P, t, SEP, min_len=1)
    assert ids == _brute_force_min1(P, t, SEP)
    assert (len(ids) >= 1) == (len(t) > 1)  # only an empty passage gives an empty answer
    assert t[start : start + len(ids)] == ids
    free, _ = unconstrained_decode(P, SEP, min_len=1)
    assert free and free[0] == max((y for y in range(13) if y != SEP), key=lambda y: float(P[0, y]))


def test_readers_that_require_an_answer_never_answer_empty(tok, mlm):
    from kexue.mrc import ARReader, SpanReader

    passage = "长城在北京是中国的名字"
    kw = {"max_answer_len": 5, "max_question_len": 8, "max_passage_len": 10, "stride": 5}
    for cls in (MLMReader, ARReader):
        with torch.no_grad():  # make [SEP] the likeliest output everywhere
            bias = mlm.cls.predictions.decoder.bias
            old = bias.clone()
            bias[tok.sep_token_id] = 50.0
        try:
            assert cls(mlm, tok, **kw).predict("哪里", passage)[0] == ""
            answer, _ = cls(mlm, tok, require_answer=True, **kw).predict("哪里", passage)
            assert answer and answer in passage, cls.__name__
        finally:
            with torch.no_grad():
                bias.copy_(old)

    class NullFirst(torch.nn.Module):  # the [CLS] null span beats every real span
        def __init__(self) -> None:
            super().__init__()
            self.config = mlm.config
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            s_ = torch.zeros(input_ids.shape)
            s_[:, 0] = 20.0
            s_[:, 12] = 5.0

            class Out:
                start_logits, end_logits = s_, s_.clone()

            return Out()

    assert SpanReader(NullFirst(), tok, **kw).predict("哪里", passage)[0] == ""
    answer, _ = SpanReader(NullFirst(), tok, require_answer=True, **kw).predict("哪里", passage)
    assert answer and answer in passage
