"""Recipe: examples from the shipped sets and user files, training sampling, and end-to-end
learning of all three readers on synthetic data (answer = the span inside 《 》)."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from kexue.mrc.baselines import ARReader
from kexue.mrc.recipe import (
    Example,
    TrainSet,
    evaluate,
    fit,
    load_examples,
    load_reader,
    make_reader,
    save_reader,
)

ALPHABET = "我爱北京天安门长城在哪里是谁的名字上海中国人民大学问答东西南"


def synthetic(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ans = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(2, 4)))
        left = ""  # answer at a fixed offset: learnable by a random-init BERT in seconds
        right = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 6)))
        out.append(
            Example(str(i), "书名是什么？", [left + "《" + ans + "》" + right], [ans], [ans])
        )
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tests.mrc.conftest import make_mlm, make_tokenizer

    from kexue.lm import save_pretrained

    tok = make_tokenizer()
    path = tmp_path_factory.mktemp("bert")
    save_pretrained(make_mlm(tok, hidden=64), tok, path)
    return path


def _learn(kind, model_dir, tmp_path, steps, lr=3e-3, em_min=0.8):
    torch.manual_seed(0)
    reader = make_reader(kind, model_dir, max_answer_len=6, max_question_len=8, max_passage_len=24)
    test = synthetic(40, seed=1)
    before = evaluate(reader, test)["em"]
    hist = fit(
        reader, synthetic(400, seed=0), steps=steps, batch_size=16, lr=lr, warmup=10, progress=False
    )
    after = evaluate(reader, test)
    first, last = sum(hist["losses"][:20]) / 20, sum(hist["losses"][-20:]) / 20
    assert last < 0.5 * first, (first, last)
    assert after["questions_per_s"] > 0 and after["n"] == 40
    if em_min:
        assert after["em"] >= em_min and after["em"] > before + 0.5, (before, after["em"])
    # save / load gives the same predictions
    save_reader(reader, tmp_path / kind)
    back = load_reader(tmp_path / kind)
    assert type(back) is type(reader)
    assert evaluate(back, test[:10])["predictions"] == evaluate(reader, test[:10])["predictions"]
    return before, after


def test_mlm_reader_learns_the_marked_span(model_dir, tmp_path):
    _learn("mlm", model_dir, tmp_path, steps=300)


def test_span_reader_learns_the_marked_span(model_dir, tmp_path):
    _learn("span", model_dir, tmp_path, steps=150)


@pytest.mark.slow
def test_ar_reader_learns_the_marked_span(model_dir, tmp_path):
    _learn("ar", model_dir, tmp_path, steps=1000)  # AR copies more slowly than the MLM reader


def test_train_set_samples_passages_and_answer_windows(model_dir):
    reader = make_reader("mlm", model_dir, max_answer_len=4, max_passage_len=8, stride=4)
    ex = Example(
        "x", "哪里", ["北京天安门长城在哪里是谁的名字上海", "中国人民"], ["上海", ""], ["上海"]
    )
    g = torch.Generator().manual_seed(0)
    ds = TrainSet(reader, [ex], answer_window_prob=1.0, generator=g)
    feats = [ds[0] for _ in range(200)]
    sep = reader.ids.sep
    positive = [f for f in feats if f[1][0] != sep]
    # passage 0 is drawn about half the time, and then always an answer window
    assert 70 < len(positive) < 130
    assert all(reader.tokenizer.decode(f[1][:2]).replace(" ", "") == "上海" for f in positive)
    with pytest.raises(ValueError, match="answer_window_prob"):
        TrainSet(reader, [ex], answer_window_prob=2.0)


def test_load_examples_shipped_and_files(tmp_path):
    cm = load_examples("cmrc2018", "trial", limit=5)
    assert len(cm) == 5 and cm[0].answers and cm[0].passage_answers[0] == cm[0].answers[0]
    assert cm[0].answers[0] in cm[0].passages[0]
    web = load_examples("webqa-sample")
    assert len(web) == 7 and all(len(e.passages) == len(e.passage_answers) for e in web)
    squad = {
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": "长城在北京",
                        "qas": [
                            {
                                "id": "q1",
                                "question": "长城在哪里",
                                "answers": [{"text": "北京", "answer_start": 3}],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    (tmp_path / "s.json").write_text(json.dumps(squad, ensure_ascii=False))
    [e] = load_examples(str(tmp_path / "s.json"))
    assert e.answers == ["北京"] and e.passages == ["长城在北京"]
    webqa = [
        {
            "id": "w",
            "question": "哪里",
            "passages": [{"passage": "北京", "answer": "北京"}, {"passage": "上海", "answer": ""}],
        }
    ]
    (tmp_path / "w.json").write_text(json.dumps(webqa, ensure_ascii=False))
    [w] = load_examples(str(tmp_path / "w.json"))
    assert w.passage_answers == ["北京", ""] and w.answers == ["北京"]


def test_load_examples_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data file"):
        load_examples(str(tmp_path / "nope.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_examples(str(tmp_path / "bad.json"))
    (tmp_path / "shape.json").write_text(json.dumps({"data": [{"title": "x"}]}))
    with pytest.raises(ValueError, match="paragraphs"):
        load_examples(str(tmp_path / "shape.json"))
    (tmp_path / "w.json").write_text(json.dumps([{"question": 3}]))
    with pytest.raises(ValueError, match="question"):
        load_examples(str(tmp_path / "w.json"))
    with pytest.raises(FileNotFoundError, match="reader.json"):
        load_reader(tmp_path)
    with pytest.raises(ValueError, match="kind"):
        make_reader("crf", tmp_path)


def test_ar_reader_trains_saves_and_loads(model_dir, tmp_path):
    torch.manual_seed(0)
    reader = make_reader("ar", model_dir, max_answer_len=6, max_question_len=8, max_passage_len=24)
    hist = fit(
        reader, synthetic(40, seed=0), steps=3, batch_size=8, lr=1e-3, warmup=1, progress=False
    )
    assert len(hist["losses"]) == 3 and all(math.isfinite(x) for x in hist["losses"])
    save_reader(reader, tmp_path / "ar")
    back = load_reader(tmp_path / "ar")
    test = synthetic(8, seed=1)
    assert type(back) is ARReader
    assert evaluate(back, test)["predictions"] == evaluate(reader, test)["predictions"]
