"""Unknown-word features: word dropout, lowercasing with a case feature, the char CNN."""

from __future__ import annotations

import pytest
import torch

from kexue.tagging.features import case_class, drop_words
from kexue.tagging.recipe import new_tagger
from kexue.tagging.tagger import Tagger

EN = [
    (["John", "lives", "in", "Paris"], ["B-PER", "O", "O", "B-LOC"]),
    (["Mary", "visited", "NASA", "today"], ["B-PER", "O", "B-ORG", "O"]),
]


@pytest.mark.parametrize(
    ("token", "cls"),
    [("的", 1), ("1999", 1), (",", 1), ("paris", 2), ("NASA", 3), ("Paris", 4), ("A", 3),
     ("McDonald", 5), ("iPhone", 5), ("U.S.", 3), ("Mr.", 4)],
)  # fmt: skip
def test_case_classes(token, cls):
    assert case_class(token) == cls


def test_word_dropout_rate_and_what_it_never_touches():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50, (64, 200), generator=g)
    mask = torch.rand(64, 200, generator=g) < 0.8
    torch.manual_seed(1)
    out = drop_words(ids, mask, 0.3)
    eligible = mask & (ids > 1)
    assert torch.equal(out[~eligible], ids[~eligible])  # padding, <pad>, <unk> untouched
    changed = out[eligible] != ids[eligible]
    assert bool((out[eligible][changed] == 1).all())
    n, k = int(eligible.sum()), int(changed.sum())
    sd = (n * 0.3 * 0.7) ** 0.5
    assert abs(k - 0.3 * n) < 5 * sd  # Binomial(n, 0.3)
    assert drop_words(ids, mask, 0.0) is ids


def test_word_dropout_only_in_training():
    torch.manual_seed(0)
    tg = new_tagger(EN, "ner", units="words", dropout=0.0, embed_dim=8, hidden_dim=8,
                    num_layers=1, features={"word_dropout": 0.9})  # fmt: skip
    ids, mask = tg.encode([c for c, _ in EN])
    tg.eval()
    ref = tg.emissions(ids, mask)
    assert torch.equal(ref, tg.emissions(ids, mask))
    tg.train()
    torch.manual_seed(3)
    assert not torch.allclose(ref, tg.emissions(ids, mask))


def test_lowercase_shares_the_word_vector_and_keeps_the_case():
    tg = new_tagger(EN, "ner", units="words", embed_dim=8, hidden_dim=8, num_layers=1,
                    features={"lowercase": True})  # fmt: skip
    assert "paris" in tg.vocab and "Paris" not in tg.vocab
    ids, _ = tg.encode([["Paris", "paris", "PARIS"]])
    assert ids.shape == (1, 3, 2)
    assert ids[0, :, 0].unique().numel() == 1 and ids[0, 0, 0] != 1
    assert ids[0, :, 1].tolist() == [4, 2, 3]


def test_char_cnn_gives_unseen_words_distinct_vectors_batched_equals_single(tmp_path):
    torch.manual_seed(0)
    tg = new_tagger(EN, "ner", units="words", embed_dim=8, hidden_dim=8, num_layers=1,
                    features={"char_filters": 6, "max_word_chars": 5})  # fmt: skip
    tg.eval()
    sents = [["Zorglub", "lives"], ["Quux", "in", "Paris", "today"]]
    ids, mask = tg.encode(sents)
    assert ids.shape == (2, 4, 2 + 5)
    assert int(ids[0, 0, 0]) == int(ids[1, 0, 0]) == 1  # both unseen words map to <unk> ...
    em = tg.emissions(ids, mask)
    assert not torch.allclose(em[0, 0], em[1, 0])  # ... but their spelling differs
    for i, s in enumerate(sents):
        one = tg.emissions(*tg.encode([s]))
        torch.testing.assert_close(em[i, : len(s)], one[0], rtol=1e-5, atol=1e-6)
    tg.save(tmp_path / "m")
    back = Tagger.load(tmp_path / "m")
    assert back.config["features"]["char_filters"] == 6
    torch.testing.assert_close(back.emissions(ids, mask), em)


@pytest.mark.parametrize(
    ("features", "units", "err", "needle"),
    [({"char_filters": 4}, "chars", ValueError, "units='words'"),
     ({"word_dropout": 1.0}, "words", ValueError, "word_dropout must be in"),
     ({"word_dropout": "x"}, "words", TypeError, "word_dropout must be a float"),
     ({"colour": 1}, "words", ValueError, "unknown features"),
     ({"char_filters": -1}, "words", ValueError, "char_filters must be >= 0")],
)  # fmt: skip
def test_bad_features_are_refused(features, units, err, needle):
    with pytest.raises(err, match=needle):
        Tagger(vocab=["<pad>", "<unk>"], tags=["O"], units=units, features=features)
