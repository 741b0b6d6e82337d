"""Recipe: vocabulary/encoding errors, training through the Trainer (resume), save/load, scores."""

from __future__ import annotations

import pytest
import torch

from kexue.seq2seq import recipe

PAIRS = [
    ("今天北京天气很好", "北京晴"),
    ("上海股市大涨三成", "股市涨"),
    ("研究发现喝茶有益", "喝茶好"),
    ("北京上海高铁提速", "高铁提速"),
] * 4


def test_vocab_and_encoding() -> None:
    v = recipe.build_vocab(PAIRS)
    assert v.tokens[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    ids = recipe.encode_text(v, "北 京x", 10)
    assert ids[-1] == v.unk_id and len(ids) == 3  # whitespace dropped, unknown -> <unk>
    with pytest.raises(ValueError, match="not in the vocabulary"):
        recipe.encode_text(v, "北京x", 10, closed=True)
    with pytest.raises(ValueError, match="empty text"):
        recipe.encode_text(v, "  ", 10)
    with pytest.raises(ValueError, match="pair 1: empty"):
        recipe.encode_pairs(v, [("北京", "晴"), ("", "晴")], max_src_len=8, max_tgt_len=4)
    data = recipe.encode_pairs(v, PAIRS, max_src_len=5, max_tgt_len=2)
    assert all(len(s) <= 5 and len(t) <= 2 for s, t in data.items)
    src, tgt = recipe.collate([data[0], data[1]])
    assert src.shape == (2, 5) and tgt.shape == (2, 2)
    with pytest.raises(ValueError, match="kind"):
        recipe.new_model("r2l", v)


def test_position_accuracy_and_lead() -> None:
    first, last = recipe.position_accuracy(["abcdxyz", "ab"], ["abcdefgh", "abzz"])
    assert first == pytest.approx((4 + 2) / 8)  # second hyp: a, b right; c, d missing
    assert last == pytest.approx((0 + 0) / 8)
    _, last = recipe.position_accuracy(["zzzfgh"], ["abcdefgh"])
    assert last == pytest.approx(3 / 4)
    assert recipe.lead_baseline([("一二三四", "x")], 2) == ["一二"]
    curve = recipe.position_curve(["abcdxyz", "ab"], ["abcdefgh", "abzz"], [0, 1], n=2)
    assert curve == [1.0, 1.0, 0.0, 0.0]
    assert recipe.position_curve(["zzzfgh"], ["abcdefgh"], [0]) == [0, 0, 0, 0, 0, 1, 1, 1]
    buckets = recipe.length_buckets(["a", "ab", "abc", "abcd", "abcde", "abcdef"])
    assert [b for _, b in buckets] == [[0, 1, 2], [3, 4], [5]]
    assert [name for name, _ in buckets] == ["<= 3", "4-5", "> 5"]


@pytest.mark.parametrize("kind", ["l2r", "bidirectional"])
def test_fit_learns_saves_loads_and_resumes(kind, tmp_path) -> None:
    torch.manual_seed(0)
    v = recipe.build_vocab(PAIRS)
    data = recipe.encode_pairs(v, PAIRS, max_src_len=16, max_tgt_len=8)
    model = recipe.new_model(kind, v, embed_dim=32, num_heads=2, encoder_layers=1,
                             decoder_layers=1, dropout=0.0, copy_prior=True)  # fmt: skip
    src, tgt = recipe.collate(data.items[:4])
    before = model.loss(src, tgt).item()
    hist = recipe.fit(model, data, steps=60, batch_size=8, lr=5e-3, warmup=5, out_dir=tmp_path)
    after = model.loss(src, tgt).item()
    assert after < 0.3 * before
    ev = recipe.evaluate(model, v, PAIRS[:4], beam_size=2, max_len=6)
    assert ev["rougeL"] > 0.8  # memorised the four titles
    recipe.save_model(tmp_path / "m", model, v, {"max_src_len": 16})
    loaded, v2, meta = recipe.load_model(tmp_path / "m")
    assert v2 == v and meta["kind"] == kind and meta["max_src_len"] == 16
    assert (
        recipe.generate(loaded, v2, [s for s, _ in PAIRS[:4]], beam_size=2, max_len=6) == ev["hyps"]
    )
    assert hist["steps"] == 60 and (tmp_path / "train" / "metrics.jsonl").is_file()


def test_resume_is_bit_exact(tmp_path) -> None:
    import shutil

    v = recipe.build_vocab(PAIRS)
    data = recipe.encode_pairs(v, PAIRS, max_src_len=16, max_tgt_len=8)

    def run(out, resume=False):
        torch.manual_seed(0)
        m = recipe.new_model("bidirectional", v, embed_dim=16, num_heads=2, encoder_layers=1,
                             decoder_layers=1, dropout=0.1)  # fmt: skip
        recipe.fit(m, data, steps=8, batch_size=4, lr=1e-3, warmup=2, out_dir=out, ckpt_every=4,
                   resume=resume)  # fmt: skip
        return m

    full = run(tmp_path / "a")
    run(tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "train" / "checkpoints" / "step_00000008")  # "crashed" at 4
    resumed = run(tmp_path / "b", resume=True)
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_load_model_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a seq2seq model directory"):
        recipe.load_model(tmp_path)
    (tmp_path / "seq2seq.json").write_text("{broken")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="malformed"):
        recipe.load_model(tmp_path)


def test_a_corrupted_model_file_is_named_in_one_line(tmp_path) -> None:
    v = recipe.build_vocab(PAIRS)
    model = recipe.new_model("l2r", v, embed_dim=16, num_heads=2, encoder_layers=1,
                             decoder_layers=1, pointer=True, copy_continuation=True)  # fmt: skip
    d = recipe.save_model(tmp_path / "m", model, v)
    assert (d / "kexue_manifest.json").is_file()
    recipe.load_model(d)
    weights = d / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0xFF  # one flipped byte in the tensor data: safetensors would still load it
    weights.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="model.safetensors") as err:
        recipe.load_model(d)
    assert "\n" not in str(err.value)


def test_dev_selection_keeps_the_best_evaluation_weights(tmp_path, monkeypatch) -> None:
    """Scripted dev scores (best in the middle, a tie later): the model ends with the weights
    of the first best evaluation, also after a resume that reads ``best.safetensors``."""
    torch.manual_seed(0)
    v = recipe.build_vocab(PAIRS)
    data = recipe.encode_pairs(v, PAIRS, max_src_len=16, max_tgt_len=8)
    model = recipe.new_model("l2r", v, embed_dim=32, num_heads=2, encoder_layers=1,
                             decoder_layers=1, dropout=0.0, pointer=True)  # fmt: skip
    script = iter([0.1, 0.5, 0.3, 0.5, 0.2])
    seen: list[dict] = []

    def fake_evaluate(m, *a, **k):
        seen.append({n: p.detach().clone() for n, p in m.state_dict().items()})
        return {"rougeL": next(script)}

    monkeypatch.setattr(recipe, "evaluate", fake_evaluate)
    kw = dict(batch_size=8, lr=5e-3, warmup=2, dev=(v, PAIRS[:4]), eval_every=4,
              dev_src_len=16, dev_tgt_len=8)  # fmt: skip
    hist = recipe.fit(model, data, steps=20, out_dir=tmp_path, ckpt_every=4, **kw)
    assert len(seen) == 5 and hist["best"] == {"step": 8, "dev_rougeL": 0.5}
    for n, p in model.state_dict().items():
        assert torch.equal(p, seen[1][n]), n
    assert not all(torch.equal(p, seen[-1][n]) for n, p in model.state_dict().items())
    # a fresh process resuming the finished run knows the best weights only from disk
    fresh = recipe.new_model("l2r", v, embed_dim=32, num_heads=2, encoder_layers=1,
                             decoder_layers=1, dropout=0.0, pointer=True)  # fmt: skip
    hist2 = recipe.fit(fresh, data, steps=20, out_dir=tmp_path, resume=True, **kw)
    assert hist2["best"]["step"] == 8
    for n, p in fresh.state_dict().items():
        assert torch.equal(p, seen[1][n]), n
    with pytest.raises(ValueError, match="dev"):
        recipe.fit(model, data, steps=1, dev=(v, []))
    with pytest.raises(ValueError, match="max_seconds"):
        recipe.fit(model, data, steps=1, max_seconds=0)


def test_pseudo_target_data_holds_the_models_greedy_titles() -> None:
    torch.manual_seed(0)
    v = recipe.build_vocab(PAIRS)
    data = recipe.encode_pairs(v, PAIRS, max_src_len=16, max_tgt_len=8)
    model = recipe.new_model("l2r", v, embed_dim=16, num_heads=2, encoder_layers=1,
                             decoder_layers=1, pointer=True).eval()  # fmt: skip
    got = recipe.pseudo_target_data(model, data, max_len=6)
    greedy = recipe.generate_ids(model, [it[0] for it in data.items], beam_size=1, max_len=6)
    for (s, t, p), (s0, t0), g in zip(got.items, data.items, greedy, strict=True):
        assert (s, t) == (s0, t0)
        assert p == (g["tokens"] or s[:1])
