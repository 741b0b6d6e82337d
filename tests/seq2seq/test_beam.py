"""Beam search: exhaustive oracle, batched == one at a time, beam 1 == a naive greedy loop."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kexue.seq2seq import Seq2Seq, Seq2SeqConfig, beam_search, greedy_search

V = 6  # 0 pad, 1 unk, 2 bos, 3 eos, 4, 5: generatable tokens are 1, 4, 5 (+ EOS)
WORDS = (1, 4, 5)


def tiny(seed: int = 0, vocab: int = V) -> Seq2Seq:
    torch.manual_seed(seed)
    cfg = Seq2SeqConfig(vocab_size=vocab, embed_dim=16, num_heads=2, encoder_layers=1,
                        decoder_layers=2, dropout=0.0, copy_prior=seed % 2 == 1,
                        pointer=seed % 3 == 2)  # fmt: skip
    model = Seq2Seq(cfg).eval()
    with torch.no_grad():  # sharper distributions than the init: searches differ from greedy
        model.out.weight.mul_(3.0)
    return model


def sources(b: int, s: int = 5, seed: int = 0, vocab: int = V) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (b, s), generator=g)
    lengths = torch.randint(1, s + 1, (b,), generator=g)
    return src.masked_fill(torch.arange(s)[None] >= lengths[:, None], 0)


def exhaustive(model, src_row, max_len, min_len, alpha):
    """Score every output of length min_len..max_len with model.score; return the best."""
    best = None
    for n in range(min_len, max_len + 1):
        seqs = list(itertools.product(WORDS, repeat=n))
        tgt = torch.tensor(seqs, dtype=torch.long).reshape(len(seqs), n)
        sc = model.score(
            src_row.expand(len(seqs), -1), tgt, tgt_mask=torch.ones_like(tgt, dtype=torch.bool)
        )
        key = sc / float(n + 1) ** alpha
        i = int(key.argmax())
        if best is None or key[i] > best[0]:
            best = (float(key[i]), list(seqs[i]), float(sc[i]))
    return best


def row(tokens: torch.Tensor) -> list[int]:
    return tokens[tokens >= 0].tolist()


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.5])
@pytest.mark.parametrize("min_len", [0, 2])
def test_huge_beam_equals_exhaustive_search(alpha, min_len) -> None:
    max_len = 3
    model = tiny(seed=int(alpha * 10) + min_len)
    src = sources(3, seed=min_len)
    toks, scores = beam_search(model, src, beam_size=V**max_len, max_len=max_len,
                               length_penalty=alpha, min_len=min_len)  # fmt: skip
    for i in range(3):
        _, seq, sc = exhaustive(
            model, src[i : i + 1, : int((src[i] > 0).sum())], max_len, min_len, alpha
        )
        assert row(toks[i]) == seq
        assert scores[i].item() == pytest.approx(sc, abs=1e-4)


def test_small_beams_never_beat_the_optimum_and_scores_are_model_scores() -> None:
    model = tiny(seed=5)
    src = sources(4, seed=5)
    for k in (1, 2, 3, 5):
        toks, scores = beam_search(model, src, beam_size=k, max_len=3, length_penalty=0.0)
        mask = toks >= 0
        torch.testing.assert_close(scores, model.score(src, toks.clamp(min=0), tgt_mask=mask),
                                   atol=1e-4, rtol=1e-4)  # fmt: skip
        for i in range(4):
            opt, _, _ = exhaustive(model, src[i : i + 1, : int((src[i] > 0).sum())], 3, 0, 0.0)
            assert scores[i].item() <= opt + 1e-4


@settings(max_examples=10)
@given(seed=st.integers(0, 1000), k=st.integers(1, 5), alpha=st.sampled_from([0.0, 0.6, 1.0]))
def test_batched_equals_one_example_at_a_time(seed, k, alpha) -> None:
    model = tiny(seed=seed % 7, vocab=10)
    src = sources(4, s=6, seed=seed, vocab=10)
    toks, scores = beam_search(model, src, beam_size=k, max_len=6, length_penalty=alpha)
    for i in range(4):
        one = src[i : i + 1, : int((src[i] > 0).sum())]  # unpadded
        t1, s1 = beam_search(model, one, beam_size=k, max_len=6, length_penalty=alpha)
        assert row(toks[i]) == row(t1[0])
        assert scores[i].item() == pytest.approx(s1.item(), abs=1e-4)


def naive_greedy(model, src_row, max_len, min_len):
    c = model.config
    out = [c.bos_id]
    total = 0.0
    for t in range(max_len + 1):
        logp = torch.log_softmax(model(src_row, torch.tensor([out]))[0, -1], -1)
        logp[[c.pad_id, c.bos_id]] = -float("inf")
        if t < min_len:
            logp[c.eos_id] = -float("inf")
        if t == max_len:
            return out[1:], total + logp[c.eos_id].item()
        tok = int(logp.argmax())
        total += logp[tok].item()
        if tok == c.eos_id:
            return out[1:], total
        out.append(tok)


@pytest.mark.parametrize("min_len", [0, 3])
def test_beam_one_is_a_naive_greedy_loop(min_len) -> None:
    model = tiny(seed=2, vocab=10)
    src = sources(5, s=6, seed=2, vocab=10)
    toks, scores = beam_search(model, src, beam_size=1, max_len=8, min_len=min_len)
    g_toks, g_scores = greedy_search(model, src, max_len=8, min_len=min_len)
    assert torch.equal(toks, g_toks)
    for i in range(5):
        seq, sc = naive_greedy(model, src[i : i + 1, : int((src[i] > 0).sum())], 8, min_len)
        assert row(toks[i]) == seq
        assert scores[i].item() == pytest.approx(sc, abs=1e-4)
        assert len(seq) >= min_len


def test_min_and_max_len_and_no_eos_inside_outputs() -> None:
    model = tiny(seed=3, vocab=10)
    src = sources(6, seed=3, vocab=10)
    for k in (1, 3):
        toks, _ = beam_search(model, src, beam_size=k, max_len=4, min_len=2)
        lengths = (toks >= 0).sum(-1)
        assert bool((lengths >= 2).all()) and bool((lengths <= 4).all())
        assert not bool((toks == model.config.eos_id).any())
        assert not bool((toks == model.config.bos_id).any() | (toks == model.config.pad_id).any())


def test_eos_first_gives_an_empty_output() -> None:
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(vocab_size=V, embed_dim=16, num_heads=2, encoder_layers=1,
                        decoder_layers=1, dropout=0.0, tie_embeddings=False)  # fmt: skip
    model = Seq2Seq(cfg).eval()
    with torch.no_grad():  # constant decoder output h = beta, and the EOS row aligned with it
        model.dec_norm.weight.zero_()
        model.dec_norm.bias.normal_()
        model.out.weight[cfg.eos_id] = 10.0 * model.dec_norm.bias
    src = sources(2, seed=0)
    for k in (1, 2):
        toks, scores = beam_search(model, src, beam_size=k, max_len=5)
        assert toks.shape[0] == 2 and (toks < 0).all()
        torch.testing.assert_close(scores, model.score(src, torch.zeros(2, 0, dtype=torch.long)))


def test_bad_arguments() -> None:
    model = tiny()
    src = sources(2)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, src, beam_size=0, max_len=3)
    with pytest.raises(TypeError, match="max_len"):
        beam_search(model, src, beam_size=2, max_len=3.0)
    with pytest.raises(ValueError, match="min_len"):
        beam_search(model, src, beam_size=2, max_len=3, min_len=4)
    with pytest.raises(TypeError, match="length_penalty"):
        beam_search(model, src, beam_size=2, max_len=3, length_penalty="1")
    with pytest.raises(ValueError, match="empty source"):
        beam_search(model, torch.zeros(1, 3, dtype=torch.long), beam_size=2, max_len=3)
    with pytest.raises(TypeError, match="model"):
        beam_search(object(), src, beam_size=2, max_len=3)


def _brute_ban(prefix: list[int], n: int, v: int) -> set[int]:
    """Tokens y such that prefix + [y] ends with an n-gram already in prefix (loops)."""
    out = set()
    for y in range(v):
        seq = prefix + [y]
        last = tuple(seq[-n:])
        if len(seq) >= n and any(tuple(seq[i : i + n]) == last for i in range(len(seq) - n)):
            out.add(y)
    return out


@given(prefix=st.lists(st.integers(0, 4), min_size=0, max_size=10), n=st.integers(0, 4))
@example(prefix=[1, 2, 3, 1, 2], n=3)
@example(prefix=[1, 2, 1], n=2)
def test_ban_repeated_ngrams_equals_brute_force(prefix, n) -> None:
    from kexue.seq2seq import ban_repeated_ngrams

    rows = [prefix, prefix[::-1], [(x + 1) % 5 for x in prefix]]
    t = len(prefix)
    prefix = torch.tensor(rows, dtype=torch.long).reshape(len(rows), t)
    logp = torch.zeros(len(rows), 5)
    got = ban_repeated_ngrams(logp, prefix, n)
    for i, row in enumerate(rows):
        want = _brute_ban(row, n, 5) if n > 0 else set()
        assert {y for y in range(5) if got[i, y] == -float("inf")} == want, (row, n)


@pytest.mark.parametrize("k", [1, 3])
def test_no_repeat_ngram_outputs_never_repeat_and_scores_stay_model_scores(k) -> None:
    model = tiny(seed=2, vocab=10)
    src = sources(6, s=6, seed=4, vocab=10)
    toks, scores = beam_search(model, src, beam_size=k, max_len=12, length_penalty=0.0,
                               no_repeat_ngram=2)  # fmt: skip
    for r in toks:
        r = r[r >= 0].tolist()
        grams = [tuple(r[i : i + 2]) for i in range(len(r) - 1)]
        assert len(grams) == len(set(grams)), r
    ref = model.score(src, toks.clamp(min=0), tgt_mask=toks >= 0)
    torch.testing.assert_close(scores, ref, atol=1e-4, rtol=1e-4)
    plain, _ = beam_search(model, src, beam_size=k, max_len=12, length_penalty=0.0)
    assert not torch.equal(plain, toks)  # the test model repeats itself without the ban
    with pytest.raises(ValueError, match="no_repeat_ngram"):
        beam_search(model, src, beam_size=k, max_len=4, no_repeat_ngram=-1)
