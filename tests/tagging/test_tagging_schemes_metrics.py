"""Tag schemes (BMES/BIO/BIOES) and segmentation / entity metrics on hand-computed cases."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kexue.tagging import (
    allowed_transitions,
    cws_prf,
    entity_prf,
    entity_set_f1,
    spans_to_tags,
    tag_set,
    tags_to_spans,
    tags_to_words,
    words_to_tags,
)


def test_tag_sets_follow_su_order():
    assert tag_set("BMES") == ["S", "B", "M", "E"]
    assert tag_set("BIO", ["PER", "LOC"]) == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    assert tag_set("bioes", ["X"]) == ["O", "B-X", "I-X", "E-X", "S-X"]
    with pytest.raises(ValueError, match="scheme"):
        tag_set("IOB1")


words_st = st.lists(st.text(alphabet="abcde", min_size=1, max_size=4), max_size=8)


@given(words_st)
def test_bmes_round_trip(words):
    tags = words_to_tags(words)
    assert len(tags) == len("".join(words))
    assert tags_to_words(list("".join(words)), tags) == words


def test_bmes_decoding_rule_on_invalid_tags():
    # a new word starts at B or S; anything else continues the current word
    assert tags_to_words(list("abcd"), ["M", "E", "E", "B"]) == ["abc", "d"]
    assert words_to_tags(["我", "爱", "北京"]) == ["S", "S", "B", "E"]


@st.composite
def span_sets(draw):
    n = draw(st.integers(0, 12))
    cuts = sorted(draw(st.sets(st.integers(0, n), max_size=8)))
    spans = []
    for s, e in zip(cuts[:-1], cuts[1:]):
        if draw(st.booleans()):
            spans.append((draw(st.sampled_from(["PER", "LOC"])), s, e))
    return n, spans


@given(span_sets(), st.sampled_from(["BIO", "BIOES"]), st.booleans())
def test_spans_round_trip(case, scheme, strict):
    n, spans = case
    tags = spans_to_tags(spans, n, scheme)
    assert tags_to_spans(tags, scheme, strict=strict) == spans


def test_strict_and_conll_chunking_on_ill_formed_tags():
    tags = ["I-PER", "I-PER", "O", "B-LOC", "I-PER", "B-ORG", "I-ORG"]
    assert tags_to_spans(tags, strict=True) == [("LOC", 3, 4), ("ORG", 5, 7)]
    assert tags_to_spans(tags, strict=False) == [
        ("PER", 0, 2),
        ("LOC", 3, 4),
        ("PER", 4, 5),
        ("ORG", 5, 7),
    ]
    bioes = ["B-X", "I-X", "O", "S-Y", "B-X", "E-X", "I-X"]
    assert tags_to_spans(bioes, "BIOES", strict=True) == [("Y", 3, 4), ("X", 4, 6)]


def test_allowed_transitions():
    tags = tag_set("BIO", ["PER", "LOC"])
    c = allowed_transitions("BIO", tags)
    ix = {t: i for i, t in enumerate(tags)}
    assert c.transitions[ix["B-PER"], ix["I-PER"]] and c.transitions[ix["I-PER"], ix["I-PER"]]
    assert not c.transitions[ix["O"], ix["I-PER"]] and not c.transitions[ix["B-LOC"], ix["I-PER"]]
    assert not c.start[ix["I-LOC"]] and c.start[ix["B-LOC"]] and c.end.all()
    b = allowed_transitions("BMES", tag_set("BMES"))
    S, B, M, E = range(4)
    assert b.transitions[B, M] and b.transitions[M, E] and b.transitions[E, S]
    assert not b.transitions[S, M] and not b.transitions[B, S] and not b.transitions[E, E]
    assert b.start.tolist() == [True, True, False, False] and b.end.tolist() == [
        True,
        False,
        False,
        True,
    ]
    e = allowed_transitions("BIOES", tag_set("BIOES", ["X"]))
    assert e.end.tolist() == [True, False, False, True, True]
    with pytest.raises(ValueError, match="not a BIO tag"):
        allowed_transitions("BIO", ["O", "E-PER"])


def test_cws_prf_hand_computed():
    gold = [["我", "爱", "北京"], ["天安门"]]
    pred = [["我爱", "北京"], ["天", "安门"]]
    # gold 4 words, pred 4 words, correct: 北京 only
    out = cws_prf(gold, pred)
    assert (out["correct"], out["n_gold"], out["n_pred"]) == (1, 4, 4)
    assert out["precision"] == pytest.approx(0.25) and out["f1"] == pytest.approx(0.25)
    assert cws_prf(gold, gold)["f1"] == 1.0
    with pytest.raises(ValueError, match="characters differ"):
        cws_prf([["ab"]], [["ac"]])


def test_entity_prf_hand_computed_like_seqeval():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-PER"], ["B-ORG", "I-ORG", "O"]]
    out = entity_prf(gold, pred)
    # gold: PER(0,2) LOC(3,4) ORG(0,3); pred: PER(0,2) PER(3,4) ORG(0,2); correct 1
    assert (out["correct"], out["n_gold"], out["n_pred"]) == (1, 3, 3)
    assert out["f1"] == pytest.approx(1 / 3)
    assert out["per_label"]["PER"]["precision"] == pytest.approx(0.5)
    assert out["per_label"]["PER"]["recall"] == pytest.approx(1.0)
    # seqeval strict vs default on an I- start: strict drops it, default counts it
    g, p = [["B-PER", "I-PER"]], [["I-PER", "I-PER"]]
    assert entity_prf(g, p, strict=True)["f1"] == 0.0
    assert entity_prf(g, p, strict=False)["f1"] == 1.0


def test_entity_set_f1_su():
    toks = [list("张三在北京"), list("张三")]
    gold = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"], ["B-PER", "I-PER"]]
    pred = [["B-PER", "I-PER", "O", "O", "O"], ["B-PER", "I-PER"]]
    # X = 2, Y = 2, Z = 3
    assert entity_set_f1(toks, gold, pred) == pytest.approx(4 / 5)


def test_one_span_converter_and_unknown_prefixes_raise():
    # issue 8: one converter (kexue.core.spans) for data readers and tagging alike
    import kexue.core.spans as core_spans
    import kexue.tagging.schemes as schemes

    assert schemes.spans_to_tags is core_spans.spans_to_tags
    assert schemes.tags_to_spans is core_spans.tags_to_spans
    # issue 9: tags_to_spans(["X-PER", "O"], "BIO") returned [] without a word
    with pytest.raises(ValueError, match="'X-PER' is not a BIO tag"):
        tags_to_spans(["X-PER", "O"], "BIO")
    with pytest.raises(ValueError, match="position 1: tag 'E-LOC' is not a BIO tag"):
        tags_to_spans(["O", "E-LOC"], "BIO")
    with pytest.raises(ValueError, match="'B' is not a BIOES tag"):
        tags_to_spans(["B"], "BIOES", strict=False)


def test_one_vocab_class():
    from kexue.data import Vocab
    from kexue.tagging import Tagger

    tg = Tagger(vocab=Vocab(["<pad>", "<unk>", "a"]), tags=["O"], embed_dim=4, hidden_dim=4)
    assert isinstance(tg.vocabulary, Vocab) and tg.vocab == ["<pad>", "<unk>", "a"]
    assert tg.encode([["a", "z"]])[0].tolist() == [[2, 1]]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"embed_dim": 0}, ValueError, "embed_dim must be >= 1"),
        ({"hidden_dim": -4}, ValueError, "hidden_dim must be >= 1"),
        ({"num_layers": 0}, ValueError, "num_layers must be >= 1"),
        ({"embed_dim": 2.5}, TypeError, "embed_dim must be an int"),
        ({"dropout": 1.0}, ValueError, "dropout must be in"),
        ({"units": "bytes"}, ValueError, "units must be one of"),
    ],
)
def test_tagger_sizes_are_validated(kwargs, exc, match):
    from kexue.tagging import Tagger

    with pytest.raises(exc, match=match):
        Tagger(vocab=["<pad>", "<unk>"], tags=["O"], **kwargs)
