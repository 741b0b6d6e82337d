"""AR (UniLM) and span baselines: UniLM mask, cached generation == recomputation, incremental
BERT == HF BERT, span decoding, training features, bad inputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue.mrc.baselines import ARReader, SpanReader, bert_incremental, unilm_mask
from kexue.mrc.reader import PassageConstraint


def _dense_unilm(n: int, valid_len: int, p: int) -> torch.Tensor:
    """Oracle, row by row."""
    m = torch.zeros(n, n, dtype=torch.bool)
    for q in range(n):
        for k in range(n):
            ok = k < valid_len and (k < p or (p <= q and k <= q))
            m[q, k] = ok or q == k
    return m


@given(n=st.integers(1, 12), data=st.data())
def test_unilm_mask_matches_dense_oracle(n, data):
    valid_len = data.draw(st.integers(1, n))
    p = data.draw(st.integers(1, valid_len))
    valid = torch.arange(n)[None] < valid_len
    got = unilm_mask(valid, torch.tensor([p]))[0, 0]
    assert torch.equal(got, _dense_unilm(n, valid_len, p))


def test_incremental_bert_equals_hf_bert(tok, mlm):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, len(tok), (2, 9), generator=g)
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[1, 8] = False
    mask = unilm_mask(valid, torch.tensor([6, 5]))
    with torch.no_grad():
        ref = mlm.bert(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
        pos = torch.arange(9)[None].expand(2, 9)
        full, _ = bert_incremental(mlm.bert, ids, types, pos, mask[:, 0])
        # the same in two pieces: 6 positions, then 3 more attending the cached keys
        h1, cache = bert_incremental(
            mlm.bert, ids[:, :6], types[:, :6], pos[:, :6], mask[:, 0, :6, :6]
        )
        h2, _ = bert_incremental(
            mlm.bert, ids[:, 6:], types[:, 6:], pos[:, 6:], mask[:, 0, 6:, :], cache
        )
    torch.testing.assert_close(full[valid], ref[valid], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.cat([h1, h2], 1)[valid], ref[valid], atol=1e-5, rtol=1e-4)


@settings(max_examples=8)
@given(seed=st.integers(0, 1000), constrained=st.booleans())
def test_cached_generation_equals_recomputation_token_by_token(tok, mlm, seed, constrained):
    g = torch.Generator().manual_seed(seed)
    lens = [int(x) for x in torch.randint(1, 12, (3,), generator=g)]
    passages = [[int(t) for t in torch.randint(5, len(tok), (m,), generator=g)] for m in lens]
    q = [int(t) for t in torch.randint(5, len(tok), (3,), generator=g)]
    cached = ARReader(mlm, tok, max_answer_len=5, max_passage_len=16)
    plain = ARReader(mlm, tok, max_answer_len=5, max_passage_len=16, use_cache=False)
    prefixes = [cached._prefix(q, p) for p in passages]

    def cons():
        return (
            [PassageConstraint(p + [tok.sep_token_id], tok.sep_token_id) for p in passages]
            if constrained
            else None
        )

    with torch.no_grad():
        a = cached.generate(prefixes, cons())
        b = plain.generate(prefixes, cons())
    assert [x for x, _ in a] == [x for x, _ in b]
    for (_, s1), (_, s2) in zip(a, b, strict=True):
        assert abs(s1 - s2) < 1e-5
    # and token by token: the cached next-token distribution after every generated prefix
    # equals the full recomputation with the UniLM mask
    with torch.no_grad():
        for prefix, (ans, _) in zip(prefixes, a, strict=True):
            n = len(prefix)
            ids = torch.tensor([prefix])
            h, cache = bert_incremental(
                mlm.bert,
                ids,
                torch.zeros_like(ids),
                torch.arange(n)[None],
                torch.ones(1, n, n, dtype=bool),
            )
            last = h[:, -1]
            for t in range(len(ans) + 1):
                ref = plain.step_probs_reference(prefix, ans[:t])
                torch.testing.assert_close(mlm.cls(last)[0].softmax(-1), ref, atol=1e-5, rtol=1e-4)
                if t == len(ans):
                    break
                new = torch.tensor([[ans[t]]])
                h, cache = bert_incremental(
                    mlm.bert,
                    new,
                    torch.ones_like(new),
                    torch.tensor([[n + t]]),
                    torch.ones(1, 1, n + t + 1, dtype=bool),
                    cache,
                )
                last = h[:, 0]


def test_ar_training_features_and_labels(tok, mlm):
    r = ARReader(mlm, tok, max_answer_len=4, max_question_len=8, max_passage_len=20)
    [(ids, plen)] = r.training_features("哪里？", "长城在北京", "北京")
    assert tok.convert_ids_to_tokens(ids) == [
        "[CLS]",
        "哪",
        "里",
        "？",
        "[SEP]",
        "长",
        "城",
        "在",
        "北",
        "京",
        "[SEP]",
        "北",
        "京",
        "[SEP]",
    ]
    assert plen == 11
    batch = r.collate_features([(ids, plen), r.training_features("哪里？", "上海", "北京")[0]])
    labels = batch["labels"]
    assert tok.convert_ids_to_tokens(labels[0][labels[0] != -100].tolist()) == ["北", "京", "[SEP]"]
    assert labels[1][labels[1] != -100].tolist() == [tok.sep_token_id]  # no answer: [SEP] only
    assert batch["token_type_ids"][0].tolist() == [0] * 11 + [1] * 3
    loss = r.batch_loss(mlm, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_ar_answers_are_passage_substrings(tok, mlm):
    r = ARReader(mlm, tok, max_answer_len=5, max_passage_len=10, stride=5)
    passage = "长城在北京是中国的名字上海人民大学"
    for q in ("哪里", "谁的名字"):
        answer, _ = r.predict(q, [passage, "北京天安门"])
        assert answer == "" or answer in passage or answer in "北京天安门"


def _qa_model(tok):
    from transformers import BertForQuestionAnswering

    from kexue.lm import tiny_bert_config

    torch.manual_seed(0)
    return BertForQuestionAnswering(
        tiny_bert_config(len(tok), hidden_size=32, num_layers=1, num_heads=2, max_positions=128)
    ).eval()


def test_span_reader_features_decoding_and_loss(tok):
    model = _qa_model(tok)
    r = SpanReader(model, tok, max_answer_len=4, max_question_len=8, max_passage_len=20)
    [(ids, types, s, e)] = r.training_features("哪里？", "长城在北京", "北京")
    assert tok.convert_ids_to_tokens(ids[s : e + 1]) == ["北", "京"]
    assert types == [0] * 5 + [1] * 6
    assert r.training_features("哪里？", "长城", "北京")[0][2:] == (0, 0)
    batch = r.collate_features([(ids, types, s, e)])
    assert torch.isfinite(r.batch_loss(model, batch))

    class Fixed(torch.nn.Module):  # start at 北, end at 京 with high probability
        def __init__(self) -> None:
            super().__init__()
            self.config = model.config
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            s_ = torch.zeros(input_ids.shape)
            e_ = torch.zeros(input_ids.shape)
            s_[:, 9], e_[:, 10] = 10.0, 10.0  # 北 京 (the space became ',')

            class Out:
                start_logits, end_logits = s_, e_

            return Out()

    fixed = SpanReader(Fixed(), tok, max_answer_len=4, max_question_len=8, max_passage_len=20)
    answer, score = fixed.predict("哪里？", "长城在 北京")  # offsets map back around the space
    assert answer == "北京" and score > 0.4


def test_baseline_bad_inputs(tok, mlm, tmp_path):
    with pytest.raises(TypeError, match="BertForMaskedLM"):
        ARReader(torch.nn.Linear(2, 2), tok)
    with pytest.raises(ValueError, match="positions"):
        ARReader(mlm, tok, max_passage_len=100)
    with pytest.raises(ValueError, match="passages is empty"):
        SpanReader(_qa_model(tok), tok, max_passage_len=20).predict("哪里", [])
    with pytest.raises(FileNotFoundError, match="config.json"):
        SpanReader.from_pretrained(tmp_path)
