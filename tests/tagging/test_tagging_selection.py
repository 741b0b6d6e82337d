"""Model selection in fit_tagger / `tag train`: the kept weights are those of the best dev
evaluation, patience stops, the time budget stops cleanly, resume with a dev set is bit-exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import kexue.tagging.recipe as recipe
from kexue.cli import main
from kexue.core.io import load_safetensors
from kexue.core.seed import seed_everything
from kexue.tagging.recipe import fit_tagger, new_tagger

NER = [
    (list("张三在北京"), ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]),
    (list("李四去上海"), ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]),
    (list("王五"), ["B-PER", "I-PER"]),
]
DATA = NER * 4  # 12 sentences, batch 4: 3 steps per epoch


def _tagger():
    seed_everything(0, deterministic=False)
    return new_tagger(DATA, "ner", embed_dim=8, hidden_dim=8, num_layers=1)


def _scripted(monkeypatch, scores):
    """Make every dev evaluation return the next of ``scores`` (training is not affected:
    evaluation runs with the RNG states saved and restored)."""
    it = iter(scores)
    monkeypatch.setattr(recipe, "evaluate", lambda *a, **k: {"f1": next(it)})


def _fit(tagger, **kw):
    return fit_tagger(tagger, DATA, batch_size=4, lr=1e-2, progress=False, **kw)


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_kept_weights_are_those_of_the_best_dev_epoch(monkeypatch):
    _scripted(monkeypatch, [0.1, 0.6, 0.3, 0.6, 0.2])
    best = _tagger()
    hist = _fit(best, epochs=5, dev=NER)
    assert [e["dev_f1"] for e in hist["evals"]] == [0.1, 0.6, 0.3, 0.6, 0.2]
    assert hist["best"] == {"step": 6, "epoch": 2.0, "dev_f1": 0.6}  # first of the equal 0.6
    two = _tagger()
    _fit(two, epochs=2)  # the same run stopped after epoch 2, no dev
    five = _tagger()
    _fit(five, epochs=5)
    assert _same(best, two) and not _same(best, five)


def test_patience_stops_and_time_budget_stops_cleanly(monkeypatch):
    _scripted(monkeypatch, [0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    tg = _tagger()
    hist = _fit(tg, epochs=6, dev=NER, patience=2)
    assert hist["steps"] == 9 and hist["stopped_by"] == "patience"  # evals at epochs 1, 2, 3
    one = _tagger()
    _fit(one, epochs=1)
    assert _same(tg, one) and hist["best"]["epoch"] == 1.0
    _scripted(monkeypatch, [0.7])
    tg = _tagger()
    hist = _fit(tg, epochs=6, dev=NER, max_seconds=1e-9)
    assert hist["steps"] == 1 and hist["stopped_by"] == "time"
    assert [e["step"] for e in hist["evals"]] == [1]  # the final evaluation still ran
    with pytest.raises(ValueError, match="max_seconds"):
        _fit(_tagger(), epochs=1, max_seconds=0)


def _conll(path: Path, sents) -> Path:
    path.write_text("".join("".join(f"{c} {t}\n" for c, t in zip(*s)) + "\n" for s in sents),
                    encoding="utf-8")  # fmt: skip
    return path


def test_cli_resume_with_dev_and_patience_is_bit_exact(tmp_path, capsys):
    train = _conll(tmp_path / "train.conll", DATA * 2)
    dev = _conll(tmp_path / "dev.conll", NER)
    base = ["tag", "train", "--train", str(train), "--dev", str(dev), "--format", "conll",
            "--batch-size", "4", "--embed-dim", "8", "--hidden-dim", "8", "--num-layers", "1",
            "--lr", "0.01", "--patience", "3", "--no-progress"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "full"), "--epochs", "6"]) == 0
    assert main([*base, "--out", str(tmp_path / "part"), "--epochs", "2"]) == 0
    assert main([*base, "--out", str(tmp_path / "part"), "--epochs", "6", "--resume"]) == 0
    for f in ("model.safetensors", "train/model.safetensors", "train/best.safetensors"):
        a, b = load_safetensors(tmp_path / "full" / f), load_safetensors(tmp_path / "part" / f)
        assert all(torch.equal(a[k], b[k]) for k in a), f
    out = capsys.readouterr().out
    assert "best dev at epoch" in out and "train F1" in out


def test_held_out_dev_is_every_kth_sentence_and_never_the_test_split():
    from kexue.tagging.cli import hold_out
    from kexue.tagging.recipe import load_named

    assert hold_out(100, 0.1) == list(range(9, 100, 10))
    assert hold_out(49, 0.1) == [] and hold_out(100, 0.0) == []
    assert len(hold_out(100_000, 0.1)) == 2000
    _, dev, task = load_named("pku-cws")  # no dev split: nothing, not the test split
    assert dev == [] and task == "cws"
