"""Tagger with the Transformer encoder (kexue.attention blocks): padding invariance, locality of the
local window, save/load, learning, CLI flag."""

from __future__ import annotations

import json

import pytest
import torch

from kexue.tagging.encoders import TransformerEncoder, sinusoidal_positions
from kexue.tagging.recipe import fit_tagger, new_tagger
from kexue.tagging.tagger import Tagger

VOCAB = ["<pad>", "<unk>"] + [chr(ord("a") + i) for i in range(20)]
TAGS = ["O", "B-X", "I-X"]


def _tagger(pattern: str = "full", positions: str = "sinusoidal", head: str = "crf", **kw):
    enc = {"num_heads": 2, "pattern": pattern, "positions": positions, "max_positions": 128}
    if pattern == "local":
        enc["window"] = 3
    torch.manual_seed(0)
    return Tagger(
        vocab=VOCAB, tags=TAGS, head=head, encoder="transformer", embed_dim=12, hidden_dim=16,
        num_layers=2, encoder_kwargs=enc, **kw,
    ).eval()  # fmt: skip


@pytest.mark.parametrize(
    "pattern,positions", [("full", "sinusoidal"), ("local", "sinusoidal"), ("local", "learned")]
)
def test_valid_outputs_do_not_depend_on_padding(pattern, positions):
    tg = _tagger(pattern, positions)
    g = torch.Generator().manual_seed(1)
    lengths = [1, 7, 33, 70]  # crosses the 32-query blocks of the local kernel
    sents = [
        [VOCAB[int(i)] for i in torch.randint(2, len(VOCAB), (n,), generator=g)] for n in lengths
    ]
    ids, mask = tg.encode(sents)
    em = tg.emissions(ids, mask)
    assert em.shape == (4, 70, len(TAGS))
    for extra in (0, 5, 40):  # more right padding, same valid outputs
        pad_ids = torch.nn.functional.pad(ids, (0, extra))
        pad_mask = torch.nn.functional.pad(mask, (0, extra))
        em2 = tg.emissions(pad_ids, pad_mask)
        assert em2.shape == (4, 70 + extra, len(TAGS))
        for i, n in enumerate(lengths):
            torch.testing.assert_close(em2[i, :n], em[i, :n], rtol=1e-5, atol=1e-5)
    for i, s in enumerate(sents):  # batched == alone
        one = tg.emissions(*tg.encode([s]))
        torch.testing.assert_close(em[i, : len(s)], one[0], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(tg(ids, mask, tg.encode_tags([["O"] * n for n in lengths], 70)))


def test_local_window_limits_the_receptive_field():
    # 2 blocks of half-width 3: position 0 sees characters 0..6 only
    tg = _tagger("local")
    ids = torch.randint(2, len(VOCAB), (1, 40), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids, dtype=torch.bool)
    em = tg.emissions(ids, mask)
    far, near = ids.clone(), ids.clone()
    far[0, 7:] = 2 + (far[0, 7:] - 1) % (len(VOCAB) - 2)
    near[0, 6] = 2 + (near[0, 6] - 1) % (len(VOCAB) - 2)
    torch.testing.assert_close(tg.emissions(far, mask)[0, 0], em[0, 0])
    assert not torch.allclose(tg.emissions(near, mask)[0, 0], em[0, 0])
    full = _tagger("full")  # the full pattern sees everything
    assert not torch.allclose(full.emissions(far, mask)[0, 0], full.emissions(ids, mask)[0, 0])


@pytest.mark.parametrize("head", ["softmax", "bimemm"])
def test_save_load_round_trip(tmp_path, head):
    tg = _tagger("local", "learned", head=head)
    sents = [list("abcabd"), list("ee"), list("fghijklmnop")]
    ids, mask = tg.encode(sents)
    tg.save(tmp_path / "m")
    back = Tagger.load(tmp_path / "m")
    assert back.config == tg.config and back.config["encoder_kwargs"]["window"] == 3
    torch.testing.assert_close(back.emissions(ids, mask), tg.emissions(ids, mask))
    assert back.predict(sents) == tg.predict(sents)
    meta = json.loads((tmp_path / "m" / "tagger.json").read_text(encoding="utf-8"))
    assert meta["config"]["encoder"] == "transformer"


def test_tiny_fit_reduces_the_loss():
    data = [(list("abcde"), ["B-X", "I-X", "O", "B-X", "I-X"]), (list("cab"), ["O", "B-X", "I-X"])]
    data = data * 8
    torch.manual_seed(0)
    tg = new_tagger(
        data, "ner", head="crf", encoder="transformer", embed_dim=16, hidden_dim=16,
        num_layers=1, dropout=0.0, encoder_kwargs={"num_heads": 2, "pattern": "local", "window": 2},
    )  # fmt: skip
    ids, mask = tg.encode([c for c, _ in data])
    tags = tg.encode_tags([t for _, t in data], ids.shape[1])
    with torch.no_grad():
        before = float(tg.eval()(ids, mask, tags))
    fit_tagger(tg, data, epochs=10, batch_size=8, lr=1e-2, progress=False)
    with torch.no_grad():
        after = float(tg.eval()(ids, mask, tags))
    assert after < 0.5 * before
    assert tg.predict([c for c, _ in data[:2]]) == [t for _, t in data[:2]]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown encoder_kwargs"):
        Tagger(vocab=VOCAB, tags=TAGS, encoder="transformer", encoder_kwargs={"heads": 2})
    with pytest.raises(ValueError, match="encoder='transformer'"):
        Tagger(vocab=VOCAB, tags=TAGS, encoder="cnn", encoder_kwargs={"num_heads": 2})
    with pytest.raises(ValueError, match="positions"):
        TransformerEncoder(8, 8, positions="rotary")
    tg = _tagger("full", "learned")
    ids = torch.full((1, 129), 2)
    with pytest.raises(ValueError, match="max_positions"):
        tg.emissions(ids, torch.ones_like(ids, dtype=torch.bool))
    p = sinusoidal_positions(5, 7)
    assert p.shape == (5, 7) and torch.equal(p[0, 1::2], torch.ones(3))


def test_cli_transformer_encoder(tmp_path, capsys):
    from kexue.cli import main

    seg = tmp_path / "seg.txt"
    seg.write_text("我 爱 北京\n北京 很 大\n我 爱 你\n" * 4, encoding="utf-8")
    out = tmp_path / "cws"
    rc = main(
        ["tag", "train", "--train", str(seg), "--format", "segmented", "--head", "crf",
         "--encoder", "transformer", "--num-heads", "2", "--pattern", "local", "--window", "2",
         "--positions", "learned", "--num-layers", "1", "--out", str(out), "--epochs", "30",
         "--batch-size", "4", "--lr", "0.01", "--embed-dim", "16", "--hidden-dim", "16",
         "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    capsys.readouterr()
    cfg = json.loads((out / "tagger.json").read_text(encoding="utf-8"))["config"]
    assert cfg["encoder"] == "transformer"
    assert cfg["encoder_kwargs"] == {
        "num_heads": 2, "pattern": "local", "window": 2, "positions": "learned"
    }  # fmt: skip
    text = tmp_path / "in.txt"
    text.write_text("我爱北京\n", encoding="utf-8")
    assert main(["tag", "predict", "--model", str(out), "--input", str(text)]) == 0
    assert capsys.readouterr().out.strip() == "我 爱 北京"
