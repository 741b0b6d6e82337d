"""`kexue tag evaluate` and `tag predict` end to end: scores against seqeval on the written
predictions, format round trips, streaming, bad inputs (one line, exit 2), defaults in --help."""

from __future__ import annotations

import json

import pytest

from kexue.cli import main
from kexue.data import read_conll, read_segmented
from kexue.tagging.formats import format_sentence, iter_sentences
from kexue.tagging.schemes import spans_to_tags, tags_to_words, words_to_tags

NER = [
    (list("张三在北京"), ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]),
    (list("李四去上海"), ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]),
    (list("王五"), ["B-PER", "I-PER"]),
    (list("赵六在天津"), ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]),
]
SMALL = ["--batch-size", "2", "--embed-dim", "16", "--hidden-dim", "16", "--num-layers", "1",
         "--lr", "0.01", "--no-progress"]  # fmt: skip


def _conll(path, sents):
    path.write_text("".join("".join(f"{c}\tPOS\t{t}\n" for c, t in zip(*s)) + "\n"
                            for s in sents), encoding="utf-8")  # fmt: skip
    return path


@pytest.fixture(scope="module")
def ner_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("ner")
    train = _conll(d / "train.conll", NER[:3])
    rc = main(["tag", "train", "--train", str(train), "--format", "conll", "--out",
               str(d / "m"), "--epochs", "25", *SMALL])  # fmt: skip
    assert rc == 0
    return d


def test_evaluate_json_matches_seqeval_on_the_written_predictions(ner_model, tmp_path, capsys):
    metrics = pytest.importorskip("seqeval.metrics")
    scheme = pytest.importorskip("seqeval.scheme")
    test = _conll(tmp_path / "test.conll", NER)
    out, js = tmp_path / "pred.conll", tmp_path / "scores.json"
    assert main(["tag", "evaluate", "--model", str(ner_model / "m"), "--test", str(test),
                 "--output", str(out), "--json", str(js)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    rep = json.loads(js.read_text(encoding="utf-8"))
    gold = [t for _, t in read_conll(test)]
    pred = [t for _, t in read_conll(out)]
    assert [c for c, _ in read_conll(out)] == [c for c, _ in NER]  # tokens kept
    f1 = metrics.f1_score(gold, pred, mode="strict", scheme=scheme.IOB2)
    assert rep["scores"]["f1"] == pytest.approx(f1)
    assert rep["sentences"] == 4 and "PER" in rep["scores"]["per_label"]
    # unknown words: 赵, 六, 天, 津 never occur in training
    assert rep["scores"]["oov_token_rate"] == pytest.approx(4 / 17)
    assert "oov" in rep["scores"] and "unseen" in rep["scores"]
    assert rep["test_train_ratio"] == pytest.approx(rep["scores"]["f1"] / rep["train_f1"])
    assert "test F1 / train F1" in printed


def test_evaluate_segmentation_writes_segmented_predictions(tmp_path, capsys):
    seg = tmp_path / "seg.txt"
    seg.write_text("我 爱 北京\n北京 很 大\n我 爱 你\n" * 4, encoding="utf-8")
    assert main(["tag", "train", "--train", str(seg), "--format", "segmented", "--out",
                 str(tmp_path / "cws"), "--epochs", "30", *SMALL]) == 0  # fmt: skip
    test = tmp_path / "test.txt"
    test.write_text("我 爱 北京\n北京 很 好\n", encoding="utf-8")
    out, js = tmp_path / "pred.txt", tmp_path / "s.json"
    assert main(["tag", "evaluate", "--model", str(tmp_path / "cws"), "--test", str(test),
                 "--output", str(out), "--json", str(js)]) == 0  # fmt: skip
    sc = json.loads(js.read_text(encoding="utf-8"))["scores"]
    assert [len("".join(w)) for w in read_segmented(out)] == [4, 4]
    assert sc["oov_rate"] == pytest.approx(1 / 6)  # 好 is the one unseen gold word
    assert "OOV recall" in capsys.readouterr().out


def test_predict_formats_round_trip_and_streaming_is_chunk_independent(ner_model, tmp_path, capsys):
    model = str(ner_model / "m")
    test = _conll(tmp_path / "in.conll", NER)
    outs = {}
    for chunk in ("1", "100"):
        o = tmp_path / f"p{chunk}.conll"
        assert main(["tag", "predict", "--model", model, "--input", str(test), "--input-format",
                     "conll", "--output-format", "conll", "--chunk", chunk, "--output", str(o),
                     "--no-progress"]) == 0  # fmt: skip
        outs[chunk] = o.read_text(encoding="utf-8")
    assert outs["1"] == outs["100"]
    back = read_conll(tmp_path / "p1.conll")
    assert [c for c, _ in back] == [c for c, _ in NER]
    raw = tmp_path / "in.txt"
    raw.write_text("".join("".join(c) + "\n" for c, _ in NER), encoding="utf-8")
    assert main(["tag", "predict", "--model", model, "--input", str(raw), "--output-format",
                 "json", "--no-progress"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    for line, (chars, tags) in zip(lines, back):  # JSON spans == the CoNLL tags of the same model
        obj = json.loads(line)
        spans = [(e["label"], e["start"], e["end"]) for e in obj["entities"]]
        assert obj["text"] == "".join(chars)
        assert spans_to_tags(spans, len(chars), "BIO") == tags


def test_format_helpers_round_trip(tmp_path):
    lines = ["-DOCSTART- -X- O\n", "\n", "a NN O\n", "b NN B-X\n", "\n", "\n", "c NN O\n"]
    assert list(iter_sentences(lines, "conll", "ner", "words")) == [["a", "b"], ["c"]]
    assert list(iter_sentences(["a b\n"], "segmented", "cws", "chars")) == [["a", "b"]]
    assert list(iter_sentences(["ab cd\n"], "segmented", "ner", "words")) == [["ab", "cd"]]
    with pytest.raises(ValueError, match="line 1: no column 3"):
        list(iter_sentences(["a b\n"], "conll", "ner", "words", token_col=3))
    words = ["我", "爱", "北京", "天安门"]
    chars, tags = list("".join(words)), words_to_tags(words)
    line = format_sentence(chars, tags, "cws", "segmented")
    (tmp_path / "s.txt").write_text(line + "\n", encoding="utf-8")
    assert read_segmented(tmp_path / "s.txt") == [words]
    assert tags_to_words(chars, tags) == words
    with pytest.raises(ValueError, match="segmenters"):
        format_sentence(["a"], ["O"], "ner", "segmented")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [(["--test", "{d}/missing.conll"], "no such file"),
     (["--test", "{d}/seg.txt", "--format", "segmented"], "word segmentation data but the model"),
     (["--test", "{d}/bioes.conll"], "BIOES but the model was trained on BIO"),
     (["--test", "{d}/in.conll", "--output", "{d}"], "is a directory"),
     (["--data", "nope"], "unknown dataset"),
     (["--test", "{d}/in.conll", "--batch-size", "0"], "--batch-size must be >= 1")],
)  # fmt: skip
def test_evaluate_bad_inputs_one_line_exit_2(ner_model, tmp_path, capsys, argv, needle):
    _conll(tmp_path / "in.conll", NER)
    _conll(tmp_path / "bioes.conll", [(list("张三"), ["B-PER", "E-PER"])])
    (tmp_path / "seg.txt").write_text("我 爱 北京\n", encoding="utf-8")
    argv = [a.format(d=tmp_path) for a in argv]
    assert main(["tag", "evaluate", "--model", str(ner_model / "m"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kexue: error: ") and "\n" not in err and needle in err, err


def test_predict_bad_inputs_one_line_exit_2(ner_model, tmp_path, capsys):
    model = str(ner_model / "m")
    for argv, needle in (
        (["--input", str(tmp_path / "none.txt")], "no such file"),
        (["--output-format", "segmented"], "for word segmenters"),
        (["--chunk", "0"], "--chunk must be >= 1"),
    ):
        assert main(["tag", "predict", "--model", model, *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("kexue: error: ") and needle in err, err


@pytest.mark.parametrize("sub", ["train", "evaluate", "predict"])
def test_help_shows_defaults(sub, capsys):
    with pytest.raises(SystemExit):
        main(["tag", sub, "--help"])
    assert "(default:" in capsys.readouterr().out
