"""BertTagger: alignment, equivalence with heads on independently computed BertModel states,
persistence, encoder learning rate, errors, and learning on a toy task.

The oracle for every emission is ``transformers.BertModel`` loaded afresh from the same directory
and fed input ids built by hand from the vocabulary (``[CLS] pieces [SEP]``), never through
:class:`kexue.tagging.bert.BertTagger`'s own encoding.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from kexue.tagging import Tagger, tag_set, tags_to_words, words_to_tags
from kexue.tagging.bert import BertTagger, load_tagger
from kexue.tagging.recipe import cws_examples, evaluate, fit_tagger

HAN_JAMO = "\u1112\u1161\u11ab"  # NFD of "한": three pieces (ᄒ ##ᅡ ##ᆫ) for the tokenizer
TEXT = "我爱北京天安门上太阳升伟大领袖指引我们向前进abc123" + HAN_JAMO
BMES = tag_set("BMES")


@pytest.fixture(scope="module")
def bert_dir(make_tiny_bert):
    """A tiny random BERT (2 layers, hidden 32) with a character tokenizer, as an HF directory."""
    return make_tiny_bert(TEXT, hidden_size=32, num_layers=2)


@pytest.fixture(scope="module")
def vocab(bert_dir):
    lines = (bert_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return {t: i for i, t in enumerate(lines)}


def oracle_states(bert_dir, pieces: list[list[int]], vocab) -> torch.Tensor:
    """Hidden states ``(n, d)`` at each unit's first piece, by a fresh transformers BertModel."""
    from transformers import BertModel

    model = BertModel.from_pretrained(str(bert_dir), local_files_only=True, add_pooling_layer=False)
    flat = [vocab["[CLS]"]] + [p for ps in pieces for p in ps] + [vocab["[SEP]"]]
    firsts, pos = [], 1
    for ps in pieces:
        firsts.append(pos)
        pos += len(ps)
    with torch.no_grad():
        h = model.eval()(input_ids=torch.tensor([flat])).last_hidden_state[0]
    return h[firsts]


def char_pieces(s: str, vocab) -> list[list[int]]:
    """Hand alignment: one id per character; spaces and unknown characters -> [UNK]; "한"
    (three pieces) -> its first piece."""
    unk = vocab["[UNK]"]
    first = {"한": vocab[HAN_JAMO[0]]}
    return [[first.get(c, unk if c.isspace() else vocab.get(c.lower(), unk))] for c in s]


def test_alignment_hand_computed(bert_dir, vocab):
    t = BertTagger(bert=bert_dir, tags=BMES)
    ids, mask = t.encode(["我 爱X北京한", "a1"])
    unk = vocab["[UNK]"]
    want = [vocab["我"], unk, vocab["爱"], unk, vocab["北"], vocab["京"], vocab["\u1112"]]
    assert ids.shape == (2, 7, 1) and mask.sum(1).tolist() == [7, 2]
    assert ids[0, :, 0].tolist() == want
    assert ids[1, :2, 0].tolist() == [vocab["a"], vocab["1"]] and (ids[1, 2:] == -1).all()
    w = BertTagger(bert=bert_dir, tags=["O", "B-X", "I-X"], units="words")
    ids, mask = w.encode([["我爱", "abc", "zz", "한"], ["北京"]])
    assert ids.shape == (2, 4, 3)
    assert ids[0].tolist() == [[vocab["我"], vocab["爱"], -1], [vocab["a"], vocab["##b"], vocab["##c"]],
                               [unk, -1, -1], [vocab[p] for p in ("\u1112", "##\u1161", "##\u11ab")]]  # fmt: skip
    assert ids[1, 0].tolist() == [vocab["北"], vocab["京"], -1] and mask.tolist()[1] == [1, 0, 0, 0]


ALPHABET = list(TEXT) + [" ", "\t", "\u3000", "Z", "A", "狗", "😀", "é", "한"]


@given(st.lists(st.text(alphabet=ALPHABET, max_size=30), min_size=1, max_size=4))
def test_one_emission_row_per_character(bert_dir, vocab, sentences):
    t = BertTagger(bert=bert_dir, tags=BMES).eval()
    ids, mask = t.encode(sentences)
    assert mask.sum(1).tolist() == [len(s) for s in sentences]
    for i, s in enumerate(sentences):
        want = char_pieces(s.replace("é", "e"), vocab)  # lower-casing strips the accent
        assert ids[i, : len(s)].tolist() == want
    em = t.emissions(ids, mask)
    assert em.shape == (len(sentences), ids.shape[1], 4) and torch.isfinite(em).all()
    assert [len(p) for p in t.predict(sentences)] == [len(s) for s in sentences]


@pytest.mark.parametrize("head", ["softmax", "crf", "memm", "bimemm"])
def test_loss_and_decode_equal_heads_on_bertmodel_states(bert_dir, vocab, head):
    torch.manual_seed(1)
    t = BertTagger(bert=bert_dir, tags=BMES, head=head).eval()
    sents = ["我爱北京天安门", "太阳 升", "伟大领袖指引我们向前进"]
    ids, mask = t.encode(sents)
    tags = torch.randint(0, 4, mask.shape)
    em = torch.zeros(len(sents), mask.shape[1], 4)
    for i, s in enumerate(sents):
        h = oracle_states(bert_dir, char_pieces(s, vocab), vocab)
        em[i, : len(s)] = F.linear(h, t.proj.weight, t.proj.bias)
    em = em.masked_fill(~mask[..., None], 0.0)
    with torch.no_grad():
        got_em = t.emissions(ids, mask).masked_fill(~mask[..., None], 0.0)
        loss = t(ids, mask, tags, reduction="sum")
    torch.testing.assert_close(got_em, em, atol=1e-5, rtol=1e-5)
    if head == "softmax":
        want = (F.cross_entropy(em.transpose(1, 2), tags, reduction="none") * mask).sum()
        path = em.argmax(2).masked_fill(~mask, -1)
    else:
        want = t.head.loss(em, tags, mask, reduction="sum")
        path = t.head.decode(em, mask)[0]
    torch.testing.assert_close(loss, want, atol=1e-4, rtol=1e-5)
    assert torch.equal(t.decode(ids, mask), path)


def test_first_subword_alignment_for_words(bert_dir, vocab):
    t = BertTagger(bert=bert_dir, tags=["O", "B-X", "I-X"], units="words").eval()
    words = ["我爱", "abc", "zz", "北京", "1a", "한"]
    pieces = [[vocab["我"], vocab["爱"]], [vocab["a"], vocab["##b"], vocab["##c"]], [vocab["[UNK]"]],
              [vocab["北"], vocab["京"]], [vocab["1"], vocab["##a"]],
              [vocab[HAN_JAMO[0]], vocab["##" + HAN_JAMO[1]], vocab["##" + HAN_JAMO[2]]]]  # fmt: skip
    ids, mask = t.encode([words])
    want = F.linear(oracle_states(bert_dir, pieces, vocab), t.proj.weight, t.proj.bias)
    with torch.no_grad():
        torch.testing.assert_close(t.emissions(ids, mask)[0], want, atol=1e-5, rtol=1e-5)


def test_long_sentences_are_split_into_windows_or_refused(bert_dir, vocab):
    s = (TEXT[:22] * 2)[:19]
    t = BertTagger(bert=bert_dir, tags=BMES, max_length=8).eval()  # 6 characters per window
    ids, mask = t.encode([s])
    want = torch.cat([oracle_states(bert_dir, char_pieces(s[a : a + 6], vocab), vocab)
                      for a in range(0, len(s), 6)])  # fmt: skip
    with torch.no_grad():
        got = t.emissions(ids, mask)[0]
    torch.testing.assert_close(
        got, F.linear(want, t.proj.weight, t.proj.bias), atol=1e-5, rtol=1e-5
    )
    strict = BertTagger(bert=bert_dir, tags=BMES, max_length=8, overflow="error")
    with pytest.raises(ValueError, match="max_length=8"):
        strict.emissions(ids, mask)
    with pytest.raises(ValueError, match="max_length must be <= max_position_embeddings"):
        BertTagger(bert=bert_dir, tags=BMES, max_length=65)


def test_save_load_round_trip_is_bit_exact_and_self_contained(bert_dir, tmp_path):
    import shutil

    src = tmp_path / "bert"
    shutil.copytree(bert_dir, src)
    torch.manual_seed(3)
    t = BertTagger(bert=src, tags=BMES, head="bimemm", scheme="BMES", constrained=True,
                   max_length=32).eval()  # fmt: skip
    t.proj.weight.data.normal_()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "checkpoints").mkdir()  # other entries survive a save
    t.save(tmp_path / "model", extra={"note": "x"})
    shutil.rmtree(src)  # the saved directory needs nothing else
    u = load_tagger(tmp_path / "model")
    assert isinstance(u, BertTagger) and u.config == t.config and u.extra == {"note": "x"}
    a, b = t.state_dict(), u.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sents = ["我爱北京天安门", "伟大领袖 abc"]
    assert t.predict(sents) == u.predict(sents)
    ids, mask = u.encode(sents)
    assert torch.equal(t.emissions(*t.encode(sents)), u.emissions(ids, mask))
    assert (tmp_path / "model" / "checkpoints").is_dir()
    assert {"config.json", "tagger.json", "model.safetensors", "vocab.txt"} <= {
        p.name for p in (tmp_path / "model").iterdir()
    }


def test_load_tagger_dispatches_to_tagger(tmp_path):
    plain = Tagger(vocab=["<pad>", "<unk>", "a"], tags=BMES, embed_dim=4, hidden_dim=4)
    plain.save(tmp_path / "plain")
    assert type(load_tagger(tmp_path / "plain")) is Tagger
    with pytest.raises(ValueError, match="format 'kexue.tagging.Tagger/1'"):
        BertTagger.load(tmp_path / "plain")


def test_param_groups_give_the_encoder_its_own_learning_rate(bert_dir):
    t = BertTagger(bert=bert_dir, tags=BMES, head="crf")
    groups = t.param_groups(1e-12, 1e-2, trans_lr_mult=10.0)
    assert [(g["name"], g["lr"]) for g in groups] == [
        ("encoder", 1e-12),
        ("dense", 1e-2),
        ("transitions", pytest.approx(0.1)),
    ]
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in t.parameters())  # each parameter once
    before = {n: p.detach().clone() for n, p in t.named_parameters()}
    opt = torch.optim.Adam(groups)
    x, mask = t.encode(["我爱北京", "天安门"])
    t(x, mask, torch.ones_like(mask, dtype=torch.long)).backward()
    opt.step()
    moved = {n: float((p.detach() - before[n]).abs().max()) for n, p in t.named_parameters()}
    assert max(v for n, v in moved.items() if n.startswith("bert.")) < 1e-10
    assert min(v for n, v in moved.items() if n.startswith("proj.")) > 1e-3
    assert min(v for n, v in moved.items() if n.startswith("head.")) > 1e-2
    with pytest.raises(ValueError, match="encoder_lr must be a number > 0"):
        t.param_groups(0.0, 1e-3)


def _one_line(err: pytest.ExceptionInfo, needle: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg and needle in msg, msg


def test_errors_are_one_line(bert_dir, tmp_path):
    with pytest.raises(ValueError) as e:
        BertTagger(bert=tmp_path / "missing", tags=BMES)
    _one_line(e, "BERT directory not found")
    with pytest.raises(ValueError) as e:
        BertTagger(bert=tmp_path, tags=BMES)
    _one_line(e, "has no config.json")
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError) as e:
        BertTagger(bert=gpt, tags=BMES)
    _one_line(e, "holds a 'gpt2' model")
    no_tok = tmp_path / "no_tok"
    no_tok.mkdir()
    (no_tok / "config.json").write_text((bert_dir / "config.json").read_text())
    with pytest.raises(ValueError) as e:
        BertTagger(bert=no_tok, tags=BMES)
    _one_line(e, "cannot load the BERT or its tokenizer")
    with pytest.raises(ValueError) as e:
        load_tagger(tmp_path / "nowhere")
    _one_line(e, "model directory not found")
    with pytest.raises(ValueError) as e:
        load_tagger(bert_dir)  # a BERT directory is not a trained tagger
    _one_line(e, "is not a saved tagger")
    with pytest.raises(ValueError, match="head must be one of"):
        BertTagger(bert=bert_dir, tags=BMES, head="lstm")
    with pytest.raises(TypeError, match="needs its tokenizer"):
        from transformers import BertModel

        BertTagger(bert=BertModel.from_pretrained(str(bert_dir)), tags=BMES)


def test_a_few_training_steps_learn_a_toy_segmentation(bert_dir):
    rng = random.Random(0)
    lexicon = ["北京", "天安门", "太阳", "升", "我", "爱", "伟大领袖", "指引", "我们", "向前进"]
    sents = [[rng.choice(lexicon) for _ in range(rng.randint(3, 7))] for _ in range(160)]
    train, test = cws_examples(sents[:128]), cws_examples(sents[128:])
    torch.manual_seed(0)
    t = BertTagger(bert=bert_dir, tags=BMES, head="crf", scheme="BMES")
    before = evaluate(t, test, "cws")["f1"]
    fit_tagger(t, train, epochs=6, batch_size=16, lr=3e-3, progress=False)
    after = evaluate(t, test, "cws")
    assert after["f1"] >= before + 0.3 and after["f1"] > 0.8, (before, after["f1"])
    chars = test[0][0]
    words = tags_to_words(chars, t.predict(["".join(chars)])[0])
    assert "".join(words) == "".join(chars) and words_to_tags(words)
