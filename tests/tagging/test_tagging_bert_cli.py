"""`kexue tag train --encoder bert` end to end on a tiny random BERT built in a temp dir:
train -> evaluate -> predict -> resume, the encoder's own learning rate, one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from kexue.cli import main
from kexue.core.io import load_safetensors

pytest.importorskip("transformers")
TEXT = "我爱北京天安门上太阳升伟大领袖指引我们向前进"


@pytest.fixture(scope="module")
def bert_dir(make_tiny_bert):
    return make_tiny_bert(TEXT, hidden_size=16, num_layers=1)


def test_bert_train_evaluate_predict_resume(bert_dir, tmp_path, capsys):
    seg = tmp_path / "seg.txt"
    seg.write_text("我 爱 北京\n天安门 上 太阳 升\n伟大 领袖 指引 我们\n" * 3, encoding="utf-8")
    base = ["tag", "train", "--train", str(seg), "--format", "segmented", "--encoder", "bert",
            "--bert-dir", str(bert_dir), "--batch-size", "3", "--lr", "1e-2", "--encoder-lr",
            "1e-3", "--no-progress"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "full"), "--epochs", "4"]) == 0
    assert main([*base, "--out", str(tmp_path / "part"), "--epochs", "2"]) == 0
    assert main([*base, "--out", str(tmp_path / "part"), "--epochs", "4", "--resume"]) == 0
    a = load_safetensors(tmp_path / "full" / "train" / "model.safetensors")
    b = load_safetensors(tmp_path / "part" / "train" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # resume is bit-exact for BERT too
    meta = json.loads((tmp_path / "full" / "tagger.json").read_text(encoding="utf-8"))
    assert meta["config"]["encoder"] == "bert"
    js = tmp_path / "s.json"
    assert main(["tag", "evaluate", "--model", str(tmp_path / "full"), "--test", str(seg),
                 "--json", str(js)]) == 0  # fmt: skip
    assert 0.0 <= json.loads(js.read_text(encoding="utf-8"))["scores"]["f1"] <= 1.0
    text = tmp_path / "in.txt"
    text.write_text("我爱北京\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["tag", "predict", "--model", str(tmp_path / "full"), "--input", str(text),
                 "--no-progress"]) == 0  # fmt: skip
    assert "".join(capsys.readouterr().out.split()) == "我爱北京"


def test_encoder_lr_is_the_berts_own(bert_dir):
    from kexue.tagging.recipe import cws_examples, fit_tagger, new_bert_tagger

    ex = cws_examples([["我", "爱", "北京"], ["天安门", "上"]])
    torch.manual_seed(0)
    tg = new_bert_tagger(ex, "cws", bert_dir)
    before = {k: v.clone() for k, v in tg.state_dict().items()}
    fit_tagger(tg, ex, max_steps=2, batch_size=2, lr=1e-2, encoder_lr=1e-30, progress=False)
    after = tg.state_dict()
    bert = [k for k in before if k.startswith("bert.") and before[k].is_floating_point()]
    # a 1e-30 step moves the BERT by ~1e-30 (zero-initialised biases become ~1e-30)
    assert bert and max(float((before[k] - after[k]).abs().max()) for k in bert) < 1e-20
    assert not torch.equal(before["proj.weight"], after["proj.weight"])


@pytest.mark.parametrize(
    ("flags", "needle"),
    [(["--encoder", "bert"], "needs --bert-dir"),
     (["--bert-dir", "{d}"], "--bert-dir needs --encoder bert"),
     (["--encoder", "bert", "--bert-dir", "{d}/nope"], "no such directory"),
     (["--encoder", "bert", "--bert-dir", "{d}", "--encoder-lr", "0"], "--encoder-lr must be"),
     (["--encoder", "bert", "--bert-dir", "{d}", "--lowercase"], "--lowercase are for")],
)  # fmt: skip
def test_bert_flag_errors_are_one_line(bert_dir, tmp_path, capsys, flags, needle):
    seg = tmp_path / "seg.txt"
    seg.write_text("我 爱 北京\n", encoding="utf-8")
    flags = [f.format(d=bert_dir) for f in flags]
    argv = ["tag", "train", "--train", str(seg), "--format", "segmented", "--out",
            str(tmp_path / "m"), *flags]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kexue: error: ") and "\n" not in err and needle in err, err
