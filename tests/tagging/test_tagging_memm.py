"""MEMM and Bi-MEMM: normalisation, product formula, reversal, exact decoding, low rank."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kexue.tagging import CRF, MEMM, BiMEMM, allowed_transitions, tag_set

from . import oracles

D = torch.float64


def make(b, t, k, seed=0, lengths=None):
    g = torch.Generator().manual_seed(seed)
    em = torch.randn(b, t, k, generator=g, dtype=D)
    tags = torch.randint(0, k, (b, t), generator=g)
    if lengths is None:
        lengths = torch.randint(1, t + 1, (b,), generator=g)
    return em, tags, torch.as_tensor(lengths)


def head(cls, k, seed=0, **kw):
    torch.manual_seed(seed)
    m = cls(k, **kw).double()
    with torch.no_grad():
        if m.rank is None:
            m.transitions_full.normal_()
    return m


def all_tags(n, k):
    return torch.tensor(oracles.paths(k, n), dtype=torch.long)


@given(
    k=st.integers(1, 3),
    n=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    half=st.booleans(),
)
def test_each_direction_is_normalised_and_matches_product_formula(k, n, seed, half):
    m = head(BiMEMM, k, seed, half_scale=half)
    em, _, _ = make(1, n, k, seed)
    tags = all_tags(n, k)  # every path as a batch
    ems = em.expand(len(tags), n, k)
    g = m.transitions.detach()
    for direction in ("forward", "backward"):
        lp = m.log_prob(ems, tags, direction=direction).detach()
        assert math.isclose(float(lp.exp().sum()), 1.0, rel_tol=1e-9)
        want = [
            oracles.memm_log_prob(em[0], g, tuple(p.tolist()), half, direction == "backward")
            for p in tags
        ]
        torch.testing.assert_close(lp, torch.tensor(want, dtype=D))
    # Bi-MEMM loss = mean of the two directions' NLLs
    bi = m.loss(ems, tags, reduction="none").detach()
    fwd = m.log_prob(ems, tags, direction="forward").detach()
    bwd = m.log_prob(ems, tags, direction="backward").detach()
    torch.testing.assert_close(bi, -0.5 * (fwd + bwd))
    one = MEMM(k, half_scale=half).double()
    with torch.no_grad():
        one.transitions_full.copy_(g)
    torch.testing.assert_close(one.loss(ems, tags, reduction="none").detach(), -fwd)


@given(b=st.integers(1, 3), t=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_backward_is_forward_on_reversed_sequence_with_transposed_g(b, t, seed):
    k = 3
    em, tags, lengths = make(b, t, k, seed)
    m = head(MEMM, k, seed)
    mt = MEMM(k).double()
    with torch.no_grad():
        mt.transitions_full.copy_(m.transitions_full.T)
    bwd = m.log_prob(em, tags, lengths=lengths, direction="backward")
    for i in range(b):
        n = int(lengths[i])
        rev = mt.log_prob(em[i : i + 1, :n].flip(1), tags[i : i + 1, :n].flip(1))
        torch.testing.assert_close(bwd[i : i + 1], rev)


@given(
    k=st.integers(1, 3),
    t=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    bi=st.booleans(),
    half=st.booleans(),
)
def test_exact_decode_is_argmax_of_own_probability(k, t, seed, bi, half):
    cls = BiMEMM if bi else MEMM
    m = head(cls, k, seed, half_scale=half)
    em, _, lengths = make(2, t, k, seed)
    path, score = m.decode(em, lengths=lengths)
    top3, scores3 = m.decode(em, lengths=lengths, nbest=3)
    g = m.transitions.detach()
    for i in range(2):
        n = int(lengths[i])
        table = {}
        for p in oracles.paths(k, n):
            f = oracles.memm_log_prob(em[i, :n], g, p, half, False)
            if bi:
                f = 0.5 * (f + oracles.memm_log_prob(em[i, :n], g, p, half, True))
            table[p] = f
        top = oracles.best(table, 3)
        assert tuple(path[i, :n].tolist()) == top[0][0]
        assert math.isclose(float(score[i]), top[0][1], rel_tol=1e-9, abs_tol=1e-9)
        for r, (p, s) in enumerate(top):
            assert tuple(top3[i, r, :n].tolist()) == p
            assert math.isclose(float(scores3[i, r]), s, rel_tol=1e-9, abs_tol=1e-9)


def test_crf_viterbi_mode_equals_crf_decode():
    em, _, lengths = make(4, 6, 4, seed=3)
    m = head(BiMEMM, 4, 3, decode_mode="crf_viterbi")
    crf = CRF(4).double()
    with torch.no_grad():
        crf.transitions.copy_(m.transitions)
    assert torch.equal(m.decode(em, lengths=lengths)[0], crf.decode(em, lengths=lengths)[0])


def test_zero_transitions_reduce_to_softmax_and_single_tag_is_zero_loss():
    em, tags, lengths = make(3, 5, 4, seed=1)
    mask = torch.arange(5)[None] < lengths[:, None]
    ce = torch.nn.functional.cross_entropy(em.transpose(1, 2), tags, reduction="none")
    for cls in (MEMM, BiMEMM):
        m = cls(4).double()
        with torch.no_grad():
            m.transitions_full.zero_()
        torch.testing.assert_close(m.loss(em, tags, mask, reduction="none"), (ce * mask).sum(1))
        torch.testing.assert_close(
            m.loss(em, tags, mask), (ce * mask).sum() / mask.sum()
        )  # token_mean default
    em, tags, lengths = make(3, 5, 1, seed=1)
    assert float(BiMEMM(1).loss(em.float(), tags, lengths=lengths).detach()) == pytest.approx(0.0)


def test_low_rank_equals_full_rank_with_left_g_right_identity():
    k = 4
    em, tags, lengths = make(3, 5, k, seed=2)
    full = head(BiMEMM, k, 2)
    low = BiMEMM(k, rank=k).double()
    with torch.no_grad():
        low.left.copy_(full.transitions_full)
        low.right.copy_(torch.eye(k, dtype=D))
    torch.testing.assert_close(
        low.loss(em, tags, lengths=lengths), full.loss(em, tags, lengths=lengths)
    )
    assert torch.equal(low.decode(em, lengths=lengths)[0], full.decode(em, lengths=lengths)[0])
    r1 = BiMEMM(1, rank=3)  # shapes with a single tag
    assert r1.transitions.shape == (1, 1)


def test_batched_equals_one_at_a_time_with_constraints():
    tags_str = tag_set("BIOES", ["X"])
    cons = allowed_transitions("BIOES", tags_str)
    k = len(tags_str)
    for cls in (MEMM, BiMEMM):
        m = head(cls, k, 5, constraints=cons)
        em, tags, lengths = make(5, 7, k, seed=5, lengths=[7, 1, 3, 7, 2])
        loss = m.loss(em, tags, lengths=lengths, reduction="none")
        path, score = m.decode(em, lengths=lengths)
        for i in range(5):
            n = int(lengths[i])
            torch.testing.assert_close(
                loss[i : i + 1], m.loss(em[i : i + 1, :n], tags[i : i + 1, :n], reduction="none")
            )
            p1, s1 = m.decode(em[i : i + 1, :n])
            assert torch.equal(path[i, :n], p1[0])
            assert oracles.allowed_path(
                path[i, :n].tolist(), cons.transitions, cons.start, cons.end
            )
            assert math.isclose(float(score[i]), float(s1[0]), rel_tol=1e-9)


def test_gradcheck_losses():
    em, tags, lengths = make(3, 4, 3, seed=4)
    em.requires_grad_(True)
    for cls in (MEMM, BiMEMM):
        m = head(cls, 3, 4, half_scale=True)
        assert torch.autograd.gradcheck(lambda e, m=m: m.loss(e, tags, lengths=lengths), (em,))
    low = BiMEMM(3, rank=2).double()
    assert torch.autograd.gradcheck(lambda e: low.loss(e, tags, lengths=lengths), (em,))


def test_memm_decode_scripts_via_viterbi_and_rejects_bad_mode():
    with pytest.raises(ValueError, match="decode_mode"):
        MEMM(3, decode_mode="beam")
    with pytest.raises(ValueError, match="rank"):
        MEMM(3, rank=0)
    m = MEMM(3)
    with pytest.raises(ValueError, match="emissions"):
        m.loss(torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.long))


def test_fused_loss_equals_reference_and_gradchecks():
    from kexue.tagging.memm import LocalNLL

    tags_str = tag_set("BIO", ["A", "B"])
    cons = allowed_transitions("BIO", tags_str)
    em, tags, lengths = make(4, 6, 5, seed=8, lengths=[6, 1, 3, 5])
    for half in (False, True):
        for cls in (MEMM, BiMEMM):
            m = head(cls, 5, 8, constraints=cons, half_scale=half)
            e1 = em.clone().requires_grad_(True)
            fast = m.loss(e1, tags, lengths=lengths, reduction="sum")
            g1 = torch.autograd.grad(fast, [e1, m.transitions_full])
            e2 = em.clone().requires_grad_(True)
            ref = m.loss(e2, tags, lengths=lengths, reduction="sum", reference=True)
            g2 = torch.autograd.grad(ref, [e2, m.transitions_full])
            torch.testing.assert_close(fast, ref)
            for a, c in zip(g1, g2):
                torch.testing.assert_close(a, c)
    k = 3
    em, tags, lengths = make(2, 4, k, seed=9, lengths=[4, 2])
    weight = (torch.arange(4)[None] < lengths[:, None]).to(D)
    context = torch.randint(0, k + 1, (2, 4))
    table = torch.randn(k + 1, k, dtype=D, requires_grad=True)
    scale = torch.rand(2, 4, dtype=D) + 0.5
    em.requires_grad_(True)
    for sc in (None, scale):
        assert torch.autograd.gradcheck(
            lambda e, tb, sc=sc: LocalNLL.apply(e, tb, context, tags, weight, sc), (em, table)
        )
