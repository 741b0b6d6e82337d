"""Tagger (encoders x heads), save/load, recipe helpers, CLI on a user's own CoNLL file, experiment smoke."""

from __future__ import annotations

import json

import pytest
import torch

from kexue.tagging import tag_set
from kexue.tagging.recipe import (
    cws_examples,
    detect_scheme,
    evaluate,
    fit_tagger,
    ner_examples,
    new_tagger,
)
from kexue.tagging.tagger import Tagger

NER = [
    (list("张三在北京"), ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]),
    (list("李四去上海"), ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]),
    (list("王五"), ["B-PER", "I-PER"]),
]


@pytest.mark.parametrize("encoder", ["cnn", "bilstm", "transformer"])
@pytest.mark.parametrize("head", ["softmax", "crf", "memm", "bimemm"])
def test_tagger_batched_equals_single_and_round_trips(tmp_path, encoder, head):
    torch.manual_seed(0)
    tg = new_tagger(NER, "ner", head=head, encoder=encoder, embed_dim=8, hidden_dim=8, num_layers=1)
    tg.eval()
    ids, mask = tg.encode([c for c, _ in NER])
    em = tg.emissions(ids, mask)
    for i, (c, _) in enumerate(NER):
        one = tg.emissions(*tg.encode([c]))
        torch.testing.assert_close(em[i, : len(c)], one[0], rtol=1e-5, atol=1e-6)
    tags = tg.encode_tags([t for _, t in NER], ids.shape[1])
    loss = tg(ids, mask, tags)
    assert loss.ndim == 0 and torch.isfinite(loss)
    pred = tg.predict([c for c, _ in NER] + [[]])
    assert [len(p) for p in pred] == [5, 5, 2, 0]
    tg.save(tmp_path / "m")
    back = Tagger.load(tmp_path / "m")
    assert back.predict([c for c, _ in NER]) == pred[:3]
    assert back.tags == tag_set("BIO", ["LOC", "PER"])


def test_training_learns_a_tiny_task():
    torch.manual_seed(0)
    data = NER * 8
    tg = new_tagger(data, "ner", head="crf", embed_dim=16, hidden_dim=16, num_layers=2)
    hist = fit_tagger(tg, data, epochs=15, batch_size=4, lr=1e-2, progress=False)
    assert hist["seconds_per_epoch"] > 0
    assert evaluate(tg, NER, "ner")["f1"] == 1.0


def test_examples_and_scheme_detection():
    ex = cws_examples([["我", "爱", "北京", "天安门"]], max_len=3)
    assert ex == [
        (["我", "爱"], ["S", "S"]),
        (["北", "京"], ["B", "E"]),
        (["天", "安", "门"], ["B", "M", "E"]),
    ]
    assert ner_examples([(list("abcde"), ["O"] * 5)], max_len=2)[-1] == (["e"], ["O"])
    assert detect_scheme(NER) == "BIO"
    assert detect_scheme([(["a"], ["S-X"])]) == "BIOES"
    with pytest.raises(ValueError, match="BIO or BIOES"):
        detect_scheme([(["a"], ["U-X"])])
    with pytest.raises(ValueError, match="head"):
        Tagger(vocab=["<pad>", "<unk>"], tags=["O"], head="lstm")


def test_cli_train_and_predict_on_own_conll_file(tmp_path, capsys):
    from kexue.cli import main

    conll = tmp_path / "own.conll"
    lines = []
    for chars, tags in NER:
        lines += [f"{c} POS {t}" for c, t in zip(chars, tags)] + [""]
    conll.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "model"
    rc = main(
        ["tag", "train", "--train", str(conll), "--dev", str(conll), "--format", "conll",
         "--head", "memm", "--out", str(out), "--epochs", "40", "--batch-size", "3",
         "--embed-dim", "16", "--hidden-dim", "16", "--lr", "0.01", "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    assert "F1 1.0000" in capsys.readouterr().out
    meta = json.loads((out / "tagger.json").read_text(encoding="utf-8"))
    assert meta["extra"]["task"] == "ner" and meta["config"]["head"] == "memm"
    text = tmp_path / "in.txt"
    text.write_text("张三在北京\n王五\n", encoding="utf-8")
    assert main(["tag", "predict", "--model", str(out), "--input", str(text)]) == 0
    got = capsys.readouterr().out.splitlines()
    assert got == ["张三在北京\tPER:张三 LOC:北京", "王五\tPER:王五"]
    assert main(["tag", "predict", "--model", str(out), "--input", str(text), "--json"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["entities"][0] == {"text": "张三", "label": "PER", "start": 0, "end": 2}


def test_cli_user_errors_are_one_line_exit_2(tmp_path, capsys):
    from kexue.cli import main

    assert main(["tag", "train", "--train", str(tmp_path / "missing.txt"), "--format", "conll",
                 "--out", str(tmp_path / "m")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith("kexue: error: no such file") and "\n" not in err
    assert main(["tag", "train", "--train", str(tmp_path / "x"), "--out", str(tmp_path / "m")]) == 2
    assert "--format" in capsys.readouterr().err
    assert main(["tag", "predict", "--model", str(tmp_path)]) == 2
    assert "not a saved tagger" in capsys.readouterr().err


def test_cli_segmented_file(tmp_path, capsys):
    from kexue.cli import main

    seg = tmp_path / "seg.txt"
    seg.write_text("我 爱 北京\n北京 很 大\n我 爱 你\n" * 4, encoding="utf-8")
    out = tmp_path / "cws"
    assert main(["tag", "train", "--train", str(seg), "--format", "segmented", "--head", "bimemm",
                 "--out", str(out), "--epochs", "30", "--batch-size", "4", "--lr", "0.01",
                 "--embed-dim", "16", "--hidden-dim", "16", "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    text = tmp_path / "in.txt"
    text.write_text("我爱北京\n", encoding="utf-8")
    assert main(["tag", "predict", "--model", str(out), "--input", str(text)]) == 0
    assert capsys.readouterr().out.strip() == "我 爱 北京"


def test_experiment_smoke(tmp_path):
    from kexue.experiments.runner import reproduce

    res = reproduce("crf-memm", "smoke", tmp_path, progress=False)
    assert {p.file for p in res.plots} == {"f1.png", "train_time.png"}
    assert (tmp_path / "f1.png").is_file() and (tmp_path / "results.json").is_file()
    m = res.metrics
    for h in ("softmax", "crf", "memm", "bimemm"):
        # learning, not a range: every head beats the same tagger before training by a margin
        # on the CWS set (the smoke NER subset is too small for any head to find entities)
        assert m[f"f1_ud_gsd_cws_{h}"] >= m[f"f1_untrained_ud_gsd_cws_{h}"] + 0.2, h
        for d in ("ud_gsd_cws", "msra_ner"):
            assert 0.0 <= m[f"f1_{d}_{h}"] <= 1.0
    assert res.comparison and res.notes
    # one seed: every ranking is reported as within noise, never as a finding
    assert all(c.verdict in ("within noise", "", "not comparable") for c in res.comparison)


def test_experiment_config_is_validated_and_seeds_really_run(tmp_path):
    from kexue.experiments import crf_memm
    from kexue.experiments.runner import reproduce

    for bad in ({"seeds": ()}, {"seeds": (0, 0)}, {"heads": ("lstm",)}, {"epochs": 0},
                {"lr": -1.0}, {"dropout": 1.0}, {"max_train": -1}, {"encoder": "rnn"}):  # fmt: skip
        with pytest.raises(ValueError, match=f"Config.{next(iter(bad))}"):
            crf_memm.Config(**bad)
    over = {"seeds": "0,1", "datasets": "ud-gsd-cws", "heads": "softmax,crf"}
    res = reproduce("crf-memm", "smoke", tmp_path, overrides=over, progress=False)
    one = reproduce("crf-memm", "smoke", tmp_path / "one", overrides={**over, "seeds": "1"},
                    progress=False)  # fmt: skip
    two = reproduce("crf-memm", "smoke", tmp_path / "zero", overrides={**over, "seeds": "0"},
                    progress=False)  # fmt: skip
    for h in ("softmax", "crf"):  # the 2-seed mean is the mean of the two 1-seed runs
        mean = (one.metrics[f"f1_ud_gsd_cws_{h}"] + two.metrics[f"f1_ud_gsd_cws_{h}"]) / 2
        assert res.metrics[f"f1_ud_gsd_cws_{h}"] == pytest.approx(mean, abs=2e-5)
        assert f"f1_ud_gsd_cws_{h}_std" in res.metrics
