"""``kexue mrc train|predict|evaluate`` and ``kexue lm pretrain|eval`` through the real CLI."""

from __future__ import annotations

import json

import pytest

from kexue.cli import main


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    from tests.mrc.conftest import make_mlm

    from kexue import data
    from kexue.lm import build_tokenizer, save_pretrained

    texts = [
        p["passage"] + q["question"]
        for q in data.load("webqa-sample", "sample")
        for p in q["passages"]
    ]
    tok = build_tokenizer(texts)
    path = tmp_path_factory.mktemp("bert")
    save_pretrained(make_mlm(tok, max_positions=256), tok, path)
    return path


def _err(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("reader", ["mlm", "span"])
def test_train_predict_evaluate(reader, bert_dir, tmp_path, capsys):
    out = tmp_path / "r"
    code = main(
        [
            "mrc",
            "train",
            "--reader",
            reader,
            "--model",
            str(bert_dir),
            "--data",
            "webqa-sample",
            "--out",
            str(out),
            "--steps",
            "4",
            "--batch-size",
            "4",
            "--no-progress",
            "--max-passage-len",
            "64",
            "--stride",
            "32",
        ]
    )
    assert code == 0 and "saved" in capsys.readouterr().out
    assert json.loads((out / "reader.json").read_text())["kind"] == reader
    passage = "《吞噬星空》作者是我吃西红柿"
    assert (
        main(
            [
                "mrc",
                "predict",
                "--model",
                str(out),
                "--question",
                "作者是谁",
                "--passage",
                passage,
                "--passage",
                "番茄的小说",
            ]
        )
        == 0
    )
    line = json.loads(capsys.readouterr().out)
    assert line["answer"] == "" or line["answer"] in passage or line["answer"] in "番茄的小说"
    preds = tmp_path / "p.json"
    assert (
        main(
            [
                "mrc",
                "evaluate",
                "--model",
                str(out),
                "--data",
                "webqa-sample",
                "--predictions",
                str(preds),
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 7 and 0 <= res["em"] <= 1 and 0 <= res["final"] <= 1
    assert len(json.loads(preds.read_text())) == 7
    # an existing run directory is never overwritten silently
    msg = _err(
        capsys,
        [
            "mrc",
            "train",
            "--model",
            str(bert_dir),
            "--data",
            "webqa-sample",
            "--out",
            str(out),
            "--steps",
            "1",
        ],
    )
    assert "--overwrite" in msg


def test_predict_input_file_and_errors(bert_dir, tmp_path, capsys):
    out = tmp_path / "r"
    assert (
        main(
            [
                "mrc",
                "train",
                "--model",
                str(bert_dir),
                "--data",
                "webqa-sample",
                "--out",
                str(out),
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--no-progress",
                "--max-passage-len",
                "64",
                "--stride",
                "32",
            ]
        )
        == 0
    )
    capsys.readouterr()
    lines = tmp_path / "q.jsonl"
    lines.write_text(
        json.dumps({"question": "作者是谁", "passages": ["我吃西红柿"]}, ensure_ascii=False) + "\n"
    )
    assert (
        main(["mrc", "predict", "--model", str(out), "--input", str(lines), "--unconstrained"]) == 0
    )
    assert "answer" in json.loads(capsys.readouterr().out)
    lines.write_text('{"question": "x"}\n')
    assert "expected" in _err(
        capsys, ["mrc", "predict", "--model", str(out), "--input", str(lines)]
    )
    lines.write_text("{oops\n")
    assert "not JSON" in _err(
        capsys, ["mrc", "predict", "--model", str(out), "--input", str(lines)]
    )
    assert "--passage" in _err(
        capsys, ["mrc", "predict", "--model", str(out), "--question", "作者是谁"]
    )
    assert "question is empty" in _err(
        capsys, ["mrc", "predict", "--model", str(out), "--question", " ", "--passage", "p"]
    )
    assert "reader.json" in _err(
        capsys, ["mrc", "predict", "--model", str(bert_dir), "--question", "q", "--passage", "p"]
    )
    assert "no such directory" in _err(
        capsys, ["mrc", "train", "--model", str(tmp_path / "x"), "--out", str(tmp_path / "o")]
    )
    shape = tmp_path / "bad.json"
    shape.write_text(json.dumps({"data": [{"title": "t"}]}))
    assert "paragraphs" in _err(
        capsys,
        [
            "mrc",
            "train",
            "--model",
            str(bert_dir),
            "--train",
            str(shape),
            "--out",
            str(tmp_path / "o2"),
        ],
    )
    assert "--steps" in _err(
        capsys,
        ["mrc", "train", "--model", str(bert_dir), "--steps", "0", "--out", str(tmp_path / "o3")],
    )
    no_tok = tmp_path / "no_tok"
    from transformers import BertForMaskedLM

    BertForMaskedLM.from_pretrained(str(bert_dir)).save_pretrained(str(no_tok))
    assert "tokenizer" in _err(
        capsys,
        [
            "mrc",
            "train",
            "--model",
            str(no_tok),
            "--data",
            "webqa-sample",
            "--out",
            str(tmp_path / "o4"),
        ],
    )


def test_the_default_model_is_the_shipped_bert_and_quick_uses_it():
    from kexue.experiments import get
    from kexue.mrc.cli import add_subparser

    module = get("mlm-mrc").load()
    assert module.PRESETS["quick"].bert == "zh-char-bert"
    assert module.PRESETS["full"].bert == "zh-char-bert"
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    mrc = add_subparser(sub)
    args = mrc.parse_args(["train", "--out", "x"])
    assert args.model == "zh-char-bert"
