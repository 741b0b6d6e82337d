"""Character ROUGE/BLEU against rouge-score and sacrebleu (peers) on random pairs."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kexue.seq2seq.metrics import bleu, char_tokens, lcs_length, rouge, title_scores

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
sacrebleu = pytest.importorskip("sacrebleu")

ALPHABET = "的是标题新闻中国发展研究ab"


class _Spaces:
    def tokenize(self, text):
        return text.split()


def spaced(s: str) -> str:
    return " ".join(char_tokens(s))


texts = st.text(alphabet=ALPHABET, min_size=0, max_size=14)


@given(pairs=st.lists(st.tuples(texts, texts), min_size=1, max_size=8))
def test_rouge_matches_rouge_score(pairs) -> None:
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_Spaces())
    hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
    ours = rouge(hyps, refs)
    for key in ours:
        theirs = [scorer.score(spaced(r), spaced(h))[key].fmeasure for h, r in pairs]
        assert ours[key] == pytest.approx(sum(theirs) / len(theirs), abs=1e-9)


@given(pairs=st.lists(st.tuples(texts, texts), min_size=1, max_size=8))
def test_bleu_matches_sacrebleu(pairs) -> None:
    hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
    for smooth in ("exp", "none"):
        ref = sacrebleu.corpus_bleu(
            [spaced(h) for h in hyps], [[spaced(r) for r in refs]], tokenize="none",
            smooth_method=smooth,
        ).score  # fmt: skip
        assert bleu(hyps, refs, smooth=smooth) * 100 == pytest.approx(ref, abs=1e-6)


def test_random_realistic_pairs_both_peers() -> None:
    rng = random.Random(0)
    refs = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(5, 25))) for _ in range(50)]
    hyps = ["".join(c for c in r if rng.random() > 0.3) + rng.choice(ALPHABET) for r in refs]
    s = title_scores(hyps, refs)
    assert set(s) == {"rouge1", "rouge2", "rougeL", "bleu"}
    ref_bleu = sacrebleu.corpus_bleu([spaced(h) for h in hyps], [[spaced(r) for r in refs]],
                                     tokenize="none").score  # fmt: skip
    assert s["bleu"] * 100 == pytest.approx(ref_bleu, abs=1e-6)
    assert 0.3 < s["rougeL"] < 1.0


def test_edge_cases() -> None:
    assert rouge(["标题"], ["标题"]) == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    assert rouge([""], ["标题"])["rougeL"] == 0.0
    assert bleu(["一二三四五"], ["一二三四五"]) == pytest.approx(1.0)
    assert lcs_length("abcbdab", "bdcaba") == 4
    assert char_tokens(" a b\t") == ["a", "b"]
    with pytest.raises(ValueError, match="same length"):
        rouge(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        bleu([], [])
    with pytest.raises(TypeError, match="single str"):
        rouge("ab", "ab")
    with pytest.raises(ValueError, match="smooth"):
        bleu(["a"], ["a"], smooth="add-k")
