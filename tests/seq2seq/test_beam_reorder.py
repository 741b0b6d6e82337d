"""Beam search on trained models: the reorder fast path == the plain reorder path == a state that
recomputes every step from its full prefix (no cache, so nothing to reorder wrongly).

Two planted bugs once passed every seq2seq test: ``DecodeState.reorder_beams`` as a no-op, and
``BiDecodeState.reorder_beams`` moving the decoder caches but not the cross-direction keys and
values. Each test here fails on them: the models are trained (peaked, input-dependent outputs),
beams are >= 3, and the oracle states share no code with the cached ones.
"""

from __future__ import annotations

import functools

import pytest
import torch

from kexue.seq2seq import BidirectionalSeq2Seq, Seq2Seq, Seq2SeqConfig, beam_search
from kexue.seq2seq.bisearch import bidirectional_beam_search

V, PAD, BOS, EOS = 12, 0, 2, 3


def _task(g: torch.Generator, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Sources of 4-7 tokens; target = the source's tokens >= 7 then those < 7, in order
    (ambiguous early on, so beams disagree and move)."""
    src = torch.randint(4, V, (n, 7), generator=g)
    lengths = torch.randint(4, 8, (n,), generator=g)
    src = src.masked_fill(torch.arange(7)[None] >= lengths[:, None], PAD)
    tgt = torch.full_like(src, PAD)
    for i in range(n):
        row = [t for t in src[i].tolist() if t]
        out = [t for t in row if t >= 7] + [t for t in row if t < 7]
        tgt[i, : len(out)] = torch.tensor(out)
    return src, tgt


@functools.cache
def trained(kind: str, pointer: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(vocab_size=V, embed_dim=32, num_heads=2, encoder_layers=1,
                        decoder_layers=2, dropout=0.0, pointer=pointer, copy_prior=not pointer)  # fmt: skip
    model = Seq2Seq(cfg) if kind == "l2r" else BidirectionalSeq2Seq(cfg)
    opt = torch.optim.Adam(model.parameters(), 5e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(120):  # partly trained: peaked but still uncertain distributions
        loss = model.loss(*_task(g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def sources(n: int = 12, seed: int = 5) -> torch.Tensor:
    return _task(torch.Generator().manual_seed(seed), n)[0]


class _NoFastPath:
    """The model, but its states lack ``reorder_beams``: beam search takes the plain path."""

    class _State:
        def __init__(self, inner) -> None:
            self._inner = inner

        def reorder(self, *idx, **kw) -> None:
            self._inner.reorder(*idx, **kw)

    def __init__(self, model) -> None:
        self.model, self.config = model, model.config

    def init_state(self, src, src_mask=None, repeat=1):
        return self._State(self.model.init_state(src, src_mask, repeat))

    def step(self, state, tokens):
        return self.model.step(state._inner, tokens)

    def bi_init(self, src, src_mask=None, beam=1):
        return self._State(self.model.bi_init(src, src_mask, beam))

    def bi_step(self, state, a, b):
        return self.model.bi_step(state._inner, a, b)


class _Recompute:
    """Oracle decoding states: each row's source and fed tokens, and a full forward per step."""

    class _State:
        def __init__(self, src, beam) -> None:
            self.src = src.repeat_interleave(beam, 0)  # (rows, s)
            self.fed: list[list[int]] = [[] for _ in range(self.src.shape[0])]  # L2R rows
            self.fed_r: list[list[int]] = [[] for _ in range(self.src.shape[0])]  # R2L rows
            self.beam = beam

        def reorder(self, idx, idx_r=None, *, source: bool = True) -> None:
            rows = idx.tolist()
            self.src = self.src[idx]  # source rows follow the L2R rows (same example)
            self.fed = [list(self.fed[i]) for i in rows]
            if idx_r is not None:
                self.fed_r = [list(self.fed_r[i]) for i in idx_r.tolist()]

        reorder_beams = reorder

    def __init__(self, model) -> None:
        self.model, self.config = model, model.config

    def init_state(self, src, src_mask=None, repeat=1):
        return self._State(src, repeat)

    @torch.no_grad()
    def step(self, state, tokens):
        for row, t in zip(state.fed, tokens.tolist(), strict=True):
            row.append(t)
        inp = torch.tensor(state.fed)
        return torch.log_softmax(self.model(state.src, inp)[:, -1].float(), -1)

    def bi_init(self, src, src_mask=None, beam=1):
        return self._State(src, beam)

    @torch.no_grad()
    def bi_step(self, state, tok_l, tok_r):
        for rows, toks in ((state.fed, tok_l), (state.fed_r, tok_r)):
            for row, t in zip(rows, toks.tolist(), strict=True):
                row.append(t)
        k = state.beam
        b = len(state.fed) // k
        out_l = torch.empty(b, k, k, V)
        out_r = torch.empty(b, k, k, V)
        for e in range(b):
            src = state.src[e * k : e * k + 1]
            for a in range(k):
                for g in range(k):
                    zl, zr = self.model(src, torch.tensor([state.fed[e * k + a]]),
                                        torch.tensor([state.fed_r[e * k + g]]))  # fmt: skip
                    out_l[e, a, g] = torch.log_softmax(zl[0, -1].float(), -1)
                    out_r[e, g, a] = torch.log_softmax(zr[0, -1].float(), -1)
        return out_l, out_r


def _rows(t: torch.Tensor) -> list[list[int]]:
    return [r[r >= 0].tolist() for r in t]


@pytest.mark.parametrize("pointer", [False, True])
@pytest.mark.parametrize("beam", [3, 5])
def test_l2r_fast_path_equals_plain_reorder_and_full_recomputation(pointer, beam) -> None:
    model = trained("l2r", pointer)
    src = sources()
    kw = {"beam_size": beam, "max_len": 9, "length_penalty": 0.6}
    fast = beam_search(model, src, **kw)
    plain = beam_search(_NoFastPath(model), src, **kw)
    oracle = beam_search(_Recompute(model), src, **kw)
    assert _rows(fast[0]) == _rows(plain[0]) == _rows(oracle[0])
    torch.testing.assert_close(fast[1], oracle[1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast[1], plain[1])
    greedy = beam_search(model, src, beam_size=1, max_len=9)
    assert _rows(greedy[0]) != _rows(fast[0])  # beams matter here, so the check has teeth


@pytest.mark.parametrize("pointer", [False, True])
@pytest.mark.parametrize("stop", ["best_overall", "best_finished"])
def test_bidirectional_fast_path_equals_plain_reorder_and_full_recomputation(pointer, stop) -> None:
    model = trained("bidirectional", pointer)
    src = sources(n=6)
    kw = {"beam_size": 3, "max_len": 8, "stop": stop}
    fast = bidirectional_beam_search(model, src, **kw)
    plain = bidirectional_beam_search(_NoFastPath(model), src, **kw)
    oracle = bidirectional_beam_search(_Recompute(model), src, **kw)
    for name in ("tokens", "l2r_tokens", "r2l_tokens"):
        assert _rows(getattr(fast, name)) == _rows(getattr(plain, name)), name
        assert _rows(getattr(fast, name)) == _rows(getattr(oracle, name)), name
    torch.testing.assert_close(fast.scores, oracle.scores, atol=1e-4, rtol=1e-4)
