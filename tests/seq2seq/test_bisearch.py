"""Bidirectional beam search vs an explicit-loop re-implementation of Su's algorithm on a toy
lookup-table model; real-model checks (greedy at beam 1, batched == one at a time, winner rule)."""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from kexue.seq2seq import BidirectionalSeq2Seq, Seq2SeqConfig, bidirectional_beam_search

PAD, UNK, BOS, EOS = 0, 1, 2, 3
START, END = (BOS, EOS), (EOS, BOS)


class Toy:
    """Fixed step distributions indexed by (example, L2R prefix, R2L prefix)."""

    def __init__(self, v: int = 7, seed: int = 0, sharp: float = 2.0, end_bias: float = 0.0):
        self.v, self.seed, self.sharp, self.end_bias = v, seed, sharp, end_bias
        self.config = SimpleNamespace(pad_id=PAD, bos_id=BOS, eos_id=EOS)

    def dist(self, e: int, pl: tuple, pr: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        h = hashlib.sha256(repr((self.seed, e, pl, pr)).encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(h[:8], "little"))
        z = torch.randn(2, self.v, generator=g) * self.sharp
        z[0, EOS] += self.end_bias * len(pl)
        z[1, BOS] += self.end_bias * len(pr)
        p = z.softmax(-1)
        return p[0], p[1]

    def bi_init(self, src, src_mask, beam):
        return ToyState([int(x) for x in src[:, 0]], beam)

    def bi_step(self, state, tok_l, tok_r):
        state.feed(tok_l.tolist(), tok_r.tolist())
        k, b = state.beam, len(state.ex)
        lp_l = torch.empty(b, k, k, self.v)
        lp_r = torch.empty(b, k, k, self.v)
        for j, e in enumerate(state.ex):
            for a in range(k):
                for g in range(k):
                    pl, pr = self.dist(e, tuple(state.l[j * k + a]), tuple(state.r[j * k + g]))
                    lp_l[j, a, g], lp_r[j, g, a] = pl.log(), pr.log()
        return lp_l, lp_r


@dataclass
class ToyState:
    ex: list
    beam: int

    def __post_init__(self):
        self.l = [[] for _ in range(len(self.ex) * self.beam)]
        self.r = [[] for _ in range(len(self.ex) * self.beam)]

    def feed(self, tl, tr):
        self.l = [p + [t] for p, t in zip(self.l, tl, strict=True)]
        self.r = [p + [t] for p, t in zip(self.r, tr, strict=True)]

    def reorder(self, il, ir):
        self.l = [list(self.l[i]) for i in il.tolist()]
        self.r = [list(self.r[i]) for i in ir.tolist()]
        self.ex = [self.ex[i // self.beam] for i in il.tolist()[:: self.beam]]


def reference(toy: Toy, e: int, B: int, max_len: int, stop: str, average: str, banned=()):
    """Su's algorithm with explicit Python loops (freeze ended hypotheses, stable tie-break)."""
    inf = math.inf
    fed = [[[START[d]] for _ in range(B)] for d in range(2)]
    hyp = [[[] for _ in range(B)] for d in range(2)]
    sc = [[0.0] + [-inf] * (B - 1) for d in range(2)]
    fin = [[False] * B for d in range(2)]
    for i in range(max_len + 1):
        new = []
        for d in range(2):
            cands = []
            for a in range(B):
                ps = []
                for g in range(B):
                    pl, pr = toy.dist(e, tuple(fed[0][a] if d == 0 else fed[0][g]),
                                      tuple(fed[1][g] if d == 0 else fed[1][a]))  # fmt: skip
                    ps.append(pl if d == 0 else pr)
                ps = torch.stack(ps).double()
                ell = (ps.mean(0) + 1e-6).log() if average == "prob" else ps.log().mean(0)
                for t in range(toy.v):
                    ok = t not in (PAD, START[d], *banned) and (i < max_len or t == END[d])
                    if fin[d][a]:
                        ok = False
                    cands.append(
                        (sc[d][a] + float(ell[t]) if ok else -inf, a * (toy.v + 1) + t, a, t)
                    )
                cands.append((sc[d][a] if fin[d][a] else -inf, a * (toy.v + 1) + toy.v, a, None))
            cands.sort(key=lambda c: (-c[0], c[1]))
            kept = cands[:B]
            nf, nh, ns, nfin = [], [], [], []
            for s_, _, a, t in kept:
                ns.append(s_)
                nh.append(hyp[d][a] + ([] if t is None else [t]))
                nf.append(fed[d][a] + [END[d] if t is None else t])
                nfin.append(fin[d][a] or t == END[d])
            new.append((nf, nh, ns, nfin))
        for d in range(2):
            fed[d], hyp[d], sc[d], fin[d] = new[d]

        def txt(d, h):
            r = [t for t in h if t != END[d]]
            return r if d == 0 else r[::-1]

        if stop == "best_overall":
            if fin[0][0] and sc[0][0] >= sc[1][0]:
                return txt(0, hyp[0][0]), sc[0][0], 0
            if fin[1][0] and sc[1][0] >= sc[0][0]:
                return txt(1, hyp[1][0]), sc[1][0], 1
        else:
            f = [[a for a in range(B) if fin[d][a]] for d in range(2)]
            if f[0] or f[1]:
                if f[1] and (not f[0] or sc[1][f[1][0]] >= sc[0][f[0][0]]):
                    return txt(1, hyp[1][f[1][0]]), sc[1][f[1][0]], 1
                return txt(0, hyp[0][f[0][0]]), sc[0][f[0][0]], 0
    raise AssertionError("unreachable: all hypotheses end at max_len")


def row(x: torch.Tensor) -> list[int]:
    return x[x >= 0].tolist()


@pytest.mark.parametrize("stop", ["best_overall", "best_finished"])
@pytest.mark.parametrize("average", ["prob", "logprob"])
@pytest.mark.parametrize("B", [1, 2, 3])
@pytest.mark.parametrize("end_bias", [0.6, -0.3])
def test_matches_the_explicit_loop_reference(stop, average, B, end_bias) -> None:
    toy = Toy(seed=B, end_bias=end_bias)
    src = torch.arange(5)[:, None].repeat(1, 3) + 4  # example ids 4..8 in column 0
    out = bidirectional_beam_search(toy, src, beam_size=B, max_len=5, stop=stop, average=average,
                                    banned=(UNK,))  # fmt: skip
    for j in range(5):
        tok, sc, d = reference(toy, j + 4, B, 5, stop, average, banned=(UNK,))
        assert row(out.tokens[j]) == tok, j
        assert out.scores[j].item() == pytest.approx(sc, abs=1e-4)
        assert int(out.direction[j]) == d
        assert UNK not in tok


def test_max_len_cap_and_empty_output() -> None:
    toy = Toy(seed=9, end_bias=-5.0)  # the end tokens are very unlikely: the cap decides
    out = bidirectional_beam_search(toy, torch.full((2, 1), 4), beam_size=2, max_len=3)
    assert ((out.tokens >= 0).sum(-1) == 3).all()
    toy = Toy(seed=9, sharp=0.0, end_bias=0.0)
    toy.dist = lambda e, pl, pr: (torch.eye(7)[EOS], torch.eye(7)[BOS])  # end at step 0
    out = bidirectional_beam_search(toy, torch.full((2, 1), 4), beam_size=2, max_len=3)
    assert out.tokens.shape == (2, 0)
    assert torch.allclose(out.scores, torch.zeros(2), atol=1e-6)  # log(1 + 1e-6)
    assert (out.direction == 0).all()  # tie: L2R wins under best_overall
    out = bidirectional_beam_search(toy, torch.full((2, 1), 4), beam_size=2, max_len=3,
                                    stop="best_finished")  # fmt: skip
    assert (out.direction == 1).all()  # tie: R2L wins under best_finished


def test_min_len_bans_the_end_tokens() -> None:
    toy = Toy(seed=3, end_bias=2.0)  # would end almost at once
    out = bidirectional_beam_search(toy, torch.full((3, 1), 4), beam_size=2, max_len=6, min_len=4)
    assert ((out.tokens >= 0).sum(-1) >= 4).all()
    with pytest.raises(ValueError, match="min_len"):
        bidirectional_beam_search(toy, torch.full((1, 1), 4), max_len=3, min_len=4)


def test_zero_probability_token_never_chosen() -> None:
    toy = Toy(seed=1)
    base = toy.dist

    def dist(e, pl, pr):
        a, b = base(e, pl, pr)
        a, b = a.clone(), b.clone()
        a[5], b[5] = 0.0, 0.0
        return a / a.sum(), b / b.sum()

    toy.dist = dist
    out = bidirectional_beam_search(toy, torch.full((3, 1), 4), beam_size=3, max_len=6)
    assert not (out.tokens == 5).any() and not (out.l2r_tokens == 5).any()


@functools.cache
def real(seed=0) -> BidirectionalSeq2Seq:
    """A tiny model trained 80 steps to reverse-copy random sources: input-dependent outputs."""
    torch.manual_seed(seed)
    cfg = Seq2SeqConfig(vocab_size=10, embed_dim=16, num_heads=2, encoder_layers=1,
                        decoder_layers=1, dropout=0.0)  # fmt: skip
    model = BidirectionalSeq2Seq(cfg)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(80):
        src = torch.randint(4, 10, (16, 5), generator=g)
        loss = model.loss(src, src.flip(1)[:, : 1 + seed % 4])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def naive_greedy(model, src_row, max_len):
    """Beam 1: one pair, full recomputation; an ended direction is frozen (feeds its end token)."""
    fed, sc, fin, hyp = [[BOS], [EOS]], [0.0, 0.0], [False, False], [[], []]
    for i in range(max_len + 1):
        logits = model(src_row, torch.tensor([fed[0]]), torch.tensor([fed[1]]))
        for d in range(2):
            if fin[d]:
                fed[d] = fed[d] + [END[d]]
                continue
            ell = (logits[d][0, -1].softmax(-1).double() + 1e-6).log()
            ell[[PAD, START[d]]] = -math.inf
            if i == max_len:
                ell[[t for t in range(len(ell)) if t != END[d]]] = -math.inf
            t = int(ell.argmax())
            sc[d] += float(ell[t])
            fed[d] = fed[d] + [t]
            fin[d] = t == END[d]
            if not fin[d]:
                hyp[d].append(t)
        if fin[0] and sc[0] >= sc[1]:
            return hyp[0], sc[0]
        if fin[1] and sc[1] >= sc[0]:
            return hyp[1][::-1], sc[1]


def test_beam_one_is_greedy_bidirectional_decoding() -> None:
    model = real(1)
    src = torch.randint(4, 10, (4, 6), generator=torch.Generator().manual_seed(0))
    out = bidirectional_beam_search(model, src, beam_size=1, max_len=7)
    for j in range(4):
        tok, sc = naive_greedy(model, src[j : j + 1], 7)
        assert row(out.tokens[j]) == tok
        assert out.scores[j].item() == pytest.approx(sc, abs=1e-4)


@pytest.mark.parametrize("stop", ["best_overall", "best_finished"])
def test_real_model_batched_equals_one_at_a_time_and_winner_rule(stop) -> None:
    model = real(2)
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 10, (5, 7), generator=g)
    src[1, 4:] = PAD
    src[3, 2:] = PAD
    out = bidirectional_beam_search(model, src, beam_size=3, max_len=8, stop=stop)
    for j in range(5):
        one = bidirectional_beam_search(model, src[j : j + 1, : int((src[j] > 0).sum())],
                                        beam_size=3, max_len=8, stop=stop)  # fmt: skip
        assert row(out.tokens[j]) == row(one.tokens[0])
        assert out.scores[j].item() == pytest.approx(one.scores[0].item(), abs=1e-4)
        if stop == "best_overall":  # the returned direction is the higher-scoring best one
            d = int(out.direction[j])
            mine = (out.l2r_scores, out.r2l_scores)[d][j]
            other = (out.l2r_scores, out.r2l_scores)[1 - d][j]
            assert mine >= other and out.scores[j] == mine
            assert row(out.tokens[j]) == row((out.l2r_tokens, out.r2l_tokens)[d][j])


def test_bad_arguments() -> None:
    toy = Toy()
    src = torch.full((1, 1), 4)
    with pytest.raises(ValueError, match="stop"):
        bidirectional_beam_search(toy, src, stop="first")
    with pytest.raises(ValueError, match="average"):
        bidirectional_beam_search(toy, src, average="max")
    with pytest.raises(ValueError, match="beam_size"):
        bidirectional_beam_search(toy, src, beam_size=0)
    with pytest.raises(TypeError, match="bi_init"):
        bidirectional_beam_search(object(), src)
