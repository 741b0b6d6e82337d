"""CRF head: brute-force oracles, fast == reference, masking, constraints, pytorch-crf, export."""

from __future__ import annotations

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from kexue.tagging import CRF, allowed_transitions, tag_set
from kexue.tagging._chain import LogPartition

from . import oracles

D = torch.float64


def make(b, t, k, seed=0, lengths=None):
    g = torch.Generator().manual_seed(seed)
    em = torch.randn(b, t, k, generator=g, dtype=D)
    tags = torch.randint(0, k, (b, t), generator=g)
    if lengths is None:
        lengths = torch.randint(1, t + 1, (b,), generator=g)
        lengths[0] = t
    return em, tags, torch.as_tensor(lengths)


def crf_with(k, seed=0, **kw):
    torch.manual_seed(seed)
    crf = CRF(k, **kw).double()
    with torch.no_grad():
        crf.transitions.normal_()
    return crf


@st.composite
def problems(draw, max_k=4, max_t=5):
    k = draw(st.integers(1, max_k))
    t = draw(st.integers(1, max_t))
    b = draw(st.integers(1, 3))
    lengths = draw(st.lists(st.integers(1, t), min_size=b, max_size=b))
    seed = draw(st.integers(0, 2**16))
    return b, t, k, lengths, seed


@given(problems())
def test_log_partition_loss_marginals_match_enumeration(p):
    b, t, k, lengths, seed = p
    em, tags, lengths = make(b, t, k, seed, lengths)
    crf = crf_with(k, seed)
    log_z = crf.log_partition(em, lengths=lengths).detach()
    nll = crf.loss(em, tags, lengths=lengths, reduction="none").detach()
    marg = crf.marginals(em, lengths=lengths)
    for i in range(b):
        n = int(lengths[i])
        table = oracles.crf_table(em[i, :n], crf.transitions.detach())
        assert math.isclose(float(log_z[i]), oracles.log_z(table), rel_tol=1e-9, abs_tol=1e-9)
        gold = tuple(int(x) for x in tags[i, :n])
        assert math.isclose(
            float(nll[i]), oracles.log_z(table) - table[gold], rel_tol=1e-9, abs_tol=1e-9
        )
        torch.testing.assert_close(
            marg[i, :n], oracles.marginals(table, n, k), rtol=1e-9, atol=1e-9
        )
        assert float(marg[i, n:].abs().sum()) == 0.0
        # probabilities over all paths sum to one
        total = sum(math.exp(s - float(log_z[i])) for s in table.values())
        assert math.isclose(total, 1.0, rel_tol=1e-9)


@given(problems())
def test_gradients_are_marginals_and_pair_counts(p):
    b, t, k, lengths, seed = p
    em, _, lengths = make(b, t, k, seed, lengths)
    em.requires_grad_(True)
    crf = crf_with(k, seed)
    crf.log_partition(em, lengths=lengths).sum().backward()
    want_tr = torch.zeros(k, k, dtype=D)
    for i in range(b):
        n = int(lengths[i])
        table = oracles.crf_table(em[i, :n].detach(), crf.transitions.detach())
        torch.testing.assert_close(
            em.grad[i, :n], oracles.marginals(table, n, k), rtol=1e-8, atol=1e-9
        )
        assert float(em.grad[i, n:].abs().sum()) == 0.0  # padded emissions get no gradient
        want_tr += oracles.pair_counts(table, k)
    torch.testing.assert_close(crf.transitions.grad, want_tr, rtol=1e-8, atol=1e-9)


@given(problems(max_k=4, max_t=5), st.integers(2, 6))
def test_viterbi_and_nbest_match_enumeration(p, nbest):
    b, t, k, lengths, seed = p
    em, _, lengths = make(b, t, k, seed, lengths)
    crf = crf_with(k, seed)
    path, score = crf.decode(em, lengths=lengths)
    paths_n, scores_n = crf.decode(em, lengths=lengths, nbest=nbest)
    assert path.shape == (b, t) and paths_n.shape == (b, nbest, t)
    for i in range(b):
        n = int(lengths[i])
        table = oracles.crf_table(em[i, :n], crf.transitions.detach())
        top = oracles.best(table, nbest)
        assert tuple(path[i, :n].tolist()) == top[0][0]
        assert (path[i, n:] == -1).all()
        assert math.isclose(float(score[i]), top[0][1], rel_tol=1e-9, abs_tol=1e-9)
        for r in range(nbest):
            if r < len(top):
                assert tuple(paths_n[i, r, :n].tolist()) == top[r][0]
                assert math.isclose(float(scores_n[i, r]), top[r][1], rel_tol=1e-9, abs_tol=1e-9)
            else:  # fewer than nbest distinct paths exist
                assert scores_n[i, r] == float("-inf") and (paths_n[i, r] == -1).all()


def test_fast_equals_reference_float32_large():
    em, tags, lengths = make(16, 40, 9, seed=3)
    em = (em * 3).float().requires_grad_(True)
    crf = CRF(9)
    with torch.no_grad():
        crf.transitions.normal_(std=2.0)
    fast = crf.loss(em, tags, lengths=lengths, reduction="sum")
    g_fast = torch.autograd.grad(fast, [em, crf.transitions])
    ref = crf.loss(em, tags, lengths=lengths, reduction="sum", reference=True)
    g_ref = torch.autograd.grad(ref, [em, crf.transitions])
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-3)
    for a, c in zip(g_fast, g_ref):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)


def test_exp_space_underflow_falls_back_to_reference():
    # emissions spread by thousands of nats: exp space underflows, the log-space path must answer
    em, tags, lengths = make(3, 6, 4, seed=5)
    em = em * 2000
    crf = crf_with(4)
    with torch.no_grad():
        crf.transitions.mul_(500)
    out = crf.log_partition(em.float(), lengths=lengths)
    ref = crf.log_partition_reference(em.float(), lengths=lengths)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref)


def test_gradcheck_custom_function():
    em, _, lengths = make(3, 5, 3, seed=1)
    mask = torch.arange(5)[None] < lengths[:, None]
    em.requires_grad_(True)
    tr = torch.randn(3, 3, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e, g: LogPartition.apply(e, g, mask), (em, tr))


def test_gradcheck_losses_with_start_end_and_constraints():
    tags_str = tag_set("BIO", ["A", "B"])
    cons = allowed_transitions("BIO", tags_str)
    crf = CRF(5, constraints=cons, start_end=True).double()
    em, tags, lengths = make(3, 4, 5, seed=2)
    em.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: crf.loss(e, tags, lengths=lengths), (em,))
    params = (crf.transitions, crf.start, crf.end)
    assert torch.autograd.gradcheck(
        lambda tr, s, e: _loss_with(crf, tr, s, e, em.detach(), tags, lengths), params
    )


def _loss_with(crf, tr, s, e, em, tags, lengths):
    """crf.loss with its parameters temporarily replaced by the given tensors."""
    old = crf.transitions, crf.start, crf.end
    try:
        del crf.transitions, crf.start, crf.end
        crf.transitions, crf.start, crf.end = tr, s, e
        return crf.loss(em, tags, lengths=lengths)
    finally:
        del crf.transitions, crf.start, crf.end
        crf.transitions, crf.start, crf.end = old
