"""kexue.lm: the Cramming options of PretrainConfig, the fp32 load of fp16 checkpoints, and the
hash manifest of every model directory kexue writes."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from tests.lm._texts import corpus

from kexue.core.io import verify_dir_manifest, write_dir_manifest
from kexue.lm import (
    PRESETS,
    PretrainConfig,
    build_mlm,
    build_tokenizer,
    encoder_and_head,
    export_fp16,
    load_pretrained,
    pretrain,
    save_pretrained,
)

SMALL = PretrainConfig(
    hidden_size=32, num_layers=2, num_heads=2, max_positions=64, max_len=32, min_freq=1
)


def _count_biases(model) -> int:
    return sum(
        m.bias is not None
        for m in model.base_model.encoder.modules()
        if isinstance(m, torch.nn.Linear)
    )


def test_arch_and_bias_options_build_what_they_say():
    bert = build_mlm(SMALL, 50)
    assert type(bert).__name__ == "BertForMaskedLM"
    assert _count_biases(bert) == 2 * 6  # q, k, v, attn out, ffn in, ffn out per layer
    nob = build_mlm(dataclasses.replace(SMALL, bias=False), 50)
    assert _count_biases(nob) == 0
    pre = build_mlm(dataclasses.replace(SMALL, arch="prelayernorm"), 50)
    assert type(pre).__name__ == "RobertaPreLayerNormForMaskedLM"
    # pre-LN: each block normalises its input, so the embedding output has no LayerNorm of its
    # own applied after the residual; the block's first op is a LayerNorm
    layer = pre.roberta_prelayernorm.encoder.layer[0]
    assert hasattr(layer.attention, "LayerNorm")
    for m in (bert, nob, pre):  # tied input / output embeddings
        enc, head = encoder_and_head(m)
        assert m.get_output_embeddings().weight is m.get_input_embeddings().weight
        h = enc(input_ids=torch.tensor([[2, 7, 9, 3]])).last_hidden_state
        assert head(h[0, 1:3]).shape == (2, 50)


def test_masked_only_projection_equals_the_full_head_at_those_positions():
    torch.manual_seed(0)
    for cfg in (SMALL, dataclasses.replace(SMALL, arch="prelayernorm")):
        m = build_mlm(cfg, 40).eval()
        ids = torch.randint(5, 40, (2, 9))
        sel = torch.zeros(2, 9, dtype=torch.bool)
        sel[0, 3] = sel[1, 5] = sel[1, 6] = True
        enc, head = encoder_and_head(m)
        part = head(enc(input_ids=ids).last_hidden_state[sel])
        full = m(input_ids=ids).logits[sel]
        torch.testing.assert_close(part, full)


def test_new_fields_validate_and_old_keys_stay():
    with pytest.raises(ValueError, match="arch"):
        PretrainConfig(arch="gpt")
    with pytest.raises(ValueError, match="bias"):
        PretrainConfig(bias=1)
    # a config at the new fields' defaults hashes as one written before they existed
    d = PretrainConfig().to_dict()
    del d["arch"], d["bias"], d["pos_init"], d["pos_offset"]
    import hashlib

    old = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
    assert PretrainConfig().key() == old
    assert PretrainConfig(arch="prelayernorm").key() != old
    assert PRESETS["zh-char-bert"].dropout == 0.0 and PRESETS["zh-char-bert"].arch == "bert"
    assert PretrainConfig(pos_offset=True).key() != old


@pytest.mark.parametrize("arch", ["bert", "prelayernorm"])
def test_pretrain_runs_and_reloads_for_each_arch(tmp_path, arch):
    cfg = dataclasses.replace(SMALL, steps=6, batch_size=8, warmup=2, arch=arch, lr=2e-3)
    res = pretrain(cfg, tmp_path / arch, progress=False, texts=(corpus(60), corpus(10)))
    assert res["final_loss"] == res["final_loss"]  # finite
    model, _ = load_pretrained(tmp_path / arch)
    assert type(model).__name__.endswith("ForMaskedLM")


def test_fp16_checkpoint_loads_in_float32_and_fine_tunes(tmp_path):
    tok = build_tokenizer(corpus(40))
    torch.manual_seed(0)
    model = build_mlm(SMALL, len(tok))
    save_pretrained(model.half(), tok, tmp_path / "fp16")
    cfg = json.loads((tmp_path / "fp16" / "config.json").read_text())
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "float16"
    back, _ = load_pretrained(tmp_path / "fp16")
    assert {p.dtype for p in back.parameters()} == {torch.float32}
    kept, _ = load_pretrained(tmp_path / "fp16", dtype=None)
    assert {p.dtype for p in kept.parameters()} == {torch.float16}
    # a few fine-tuning steps at a reader's learning rate stay finite
    from kexue.mrc.reader import MLMReader
    from kexue.mrc.recipe import Example, fit

    reader = MLMReader(back, tok, max_answer_len=4, max_question_len=8, max_passage_len=24)
    text = corpus(1)[0][:20]
    ex = [Example("q", text[:4], [text], [text[5:8]], [text[5:8]])] * 4
    hist = fit(reader, ex, steps=4, batch_size=4, lr=3e-4, warmup=1, progress=False)
    assert all(loss == loss and abs(loss) < 1e4 for loss in hist["losses"])


def test_export_fp16_is_exact_in_float32_and_hashed(tmp_path):
    tok = build_tokenizer(corpus(40))
    torch.manual_seed(1)
    model = build_mlm(SMALL, len(tok))
    save_pretrained(model, tok, tmp_path / "src")
    out = export_fp16(tmp_path / "src", tmp_path / "ship", info={"name": "x"})
    man = verify_dir_manifest(out, required=True)
    assert man["name"] == "x" and "model.safetensors" in man["files"]
    back, _ = load_pretrained(out)
    for (n, p), q in zip(model.state_dict().items(), back.state_dict().values(), strict=True):
        torch.testing.assert_close(q, p.half().float(), rtol=0, atol=0, msg=n)
    # no kexue code needed to read it
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    hf = AutoModelForMaskedLM.from_pretrained(str(out), local_files_only=True)
    assert AutoTokenizer.from_pretrained(str(out)).vocab_size == len(tok)
    assert type(hf).__name__ == "BertForMaskedLM"


def test_manifest_names_a_flipped_byte_a_truncation_and_a_missing_file(tmp_path):
    tok = build_tokenizer(corpus(20))
    torch.manual_seed(0)
    d = save_pretrained(build_mlm(SMALL, len(tok)), tok, tmp_path / "m")
    assert verify_dir_manifest(d)["files"]["model.safetensors"]["size"] > 0
    w = d / "model.safetensors"
    blob = bytearray(w.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    w.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"model\.safetensors: corrupt \(sha256") as e:
        load_pretrained(d)
    assert "\n" not in str(e.value)
    w.write_bytes(bytes(blob[:-10]))
    with pytest.raises(ValueError, match="truncated"):
        load_pretrained(d)
    (d / "vocab.txt").unlink()
    write_dir_manifest(d)  # re-record, then lose a tokenizer file
    (d / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match=r"tokenizer\.json: missing"):
        load_pretrained(d)
    (d / "kexue_manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt manifest"):
        load_pretrained(d)


def test_broken_config_is_named(tmp_path):
    tok = build_tokenizer(corpus(20))
    torch.manual_seed(0)
    d = save_pretrained(build_mlm(SMALL, len(tok)), tok, tmp_path / "m", manifest=False)
    (d / "config.json").write_text("{")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        load_pretrained(d)


def test_sinusoidal_position_init_and_random_offsets():
    from kexue.lm.pretraining import sinusoids

    t = sinusoids(50, 8)
    p, i = 7, 1  # dims 2i, 2i+1 at position p
    f = 10000.0 ** (-2 * i / 8)
    assert float(t[p, 2 * i]) == pytest.approx(math.sin(p * f), abs=1e-6)
    assert float(t[p, 2 * i + 1]) == pytest.approx(math.cos(p * f), abs=1e-6)
    cfg = dataclasses.replace(SMALL, pos_init="sinusoidal")
    m = build_mlm(cfg, 30)
    table = m.bert.embeddings.position_embeddings.weight
    torch.testing.assert_close(table, sinusoids(64, 32) * (0.02 / 0.5**0.5))
    with pytest.raises(ValueError, match="pos_init"):
        PretrainConfig(pos_init="rope")
    with pytest.raises(ValueError, match="pos_offset"):
        PretrainConfig(pos_offset="yes")


def test_random_offsets_train_rows_past_max_len(tmp_path):
    """Chunks of 16 tokens ([CLS]/[SEP] included) in a 64-row table whose init is known exactly
    (sinusoids): without offsets rows >= 16 never move; with them they do."""
    from kexue.lm.pretraining import sinusoids

    init = sinusoids(64, 32) * (0.02 / 0.5**0.5)
    moved = {}
    for off in (False, True):
        cfg = dataclasses.replace(
            SMALL, max_len=16, steps=8, batch_size=8, warmup=1, lr=1e-2, pos_offset=off,
            pos_init="sinusoidal", weight_decay=0.0,
        )  # fmt: skip
        pretrain(cfg, tmp_path / str(off), progress=False, texts=(corpus(80), corpus(10)))
        m, _ = load_pretrained(tmp_path / str(off))
        table = m.bert.embeddings.position_embeddings.weight.detach()
        moved[off] = (table - init).abs().amax(1) > 1e-7
    assert bool(moved[False][:16].all()) and not bool(moved[False][16:].any())
    assert bool(moved[True][40:].all())


def test_the_pretraining_loss_equals_hf_labels_loss():
    """mlm_loss (projection at the masked positions only) == HF's labels= loss, which projects
    every position; a wrong selection index in the fast path breaks the equality."""
    from kexue.lm.pretraining import mlm_loss

    torch.manual_seed(0)
    m = build_mlm(SMALL, 40).eval()
    ids = torch.randint(5, 40, (3, 11))
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 7], labels[2, 0], labels[2, 9] = 9, 12, 30, 5
    valid = torch.ones_like(ids, dtype=torch.bool)
    batch = {"input_ids": ids, "attention_mask": valid, "labels": labels}
    loss, _ = mlm_loss(m, batch)
    want = m(input_ids=ids, attention_mask=valid, labels=labels).loss
    torch.testing.assert_close(loss, want)
