"""BidirectionalSeq2Seq: lists, loss = two masked CEs, step masks by perturbation, cache == forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kexue.seq2seq import BidirectionalSeq2Seq, Seq2SeqConfig
from kexue.seq2seq.bidirectional import reverse_padded

V = 9
BOS, EOS, PAD = 2, 3, 0


def tiny(
    seed: int = 0, layers: int = 2, copy: bool = False, pointer: bool = False, cont: bool = False
) -> BidirectionalSeq2Seq:
    torch.manual_seed(seed)
    cfg = Seq2SeqConfig(vocab_size=V, embed_dim=16, num_heads=2, encoder_layers=1,
                        decoder_layers=layers, dropout=0.0, copy_prior=copy, pointer=pointer,
                        copy_continuation=cont)  # fmt: skip
    model = BidirectionalSeq2Seq(cfg).eval()
    with torch.no_grad():
        if copy:
            model.base.copy_log_scale.normal_()
            model.base.copy_shift.normal_()
        if pointer:  # a gate away from 1/2 and peaked copy attention
            model.base.copy_gate.bias.normal_()
            model.base.copy_query.weight.mul_(4.0)
            if cont:
                model.base.copy_cont.fill_(2.5)
    return model


def data(b=3, s=5, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, V, (b, s), generator=g)
    tgt = torch.randint(4, V, (b, t), generator=g)
    tl = torch.tensor([t, t - 2, 1])[:b]
    tgt[torch.arange(t)[None] >= tl[:, None]] = PAD
    src[1, 3:] = PAD
    return src, tgt, tl


def test_reverse_padded_and_lists() -> None:
    x = torch.tensor([[4, 5, 6, 0], [7, 8, 0, 0], [0, 0, 0, 0]])
    assert reverse_padded(x, x != 0).tolist() == [[6, 5, 4, 0], [8, 7, 0, 0], [0, 0, 0, 0]]
    model = tiny()
    inp_l, out_l, inp_r, out_r, mask = model.lists(x, x != 0)
    assert inp_l[0].tolist() == [BOS, 4, 5, 6, 0] and out_l[0].tolist() == [4, 5, 6, EOS, 0]
    assert inp_r[0].tolist() == [EOS, 6, 5, 4, 0] and out_r[0].tolist() == [6, 5, 4, BOS, 0]
    assert inp_r[2].tolist() == [EOS, 0, 0, 0, 0] and out_r[2].tolist() == [BOS, 0, 0, 0, 0]
    assert mask.sum(-1).tolist() == [4, 3, 1]


def test_loss_is_the_mean_of_two_independent_masked_ces() -> None:
    model = tiny()
    src, tgt, tl = data()
    total_l = total_r = 0.0
    n = 0
    for i in range(3):
        y = tgt[i, : tl[i]].tolist()
        il, ol = [BOS, *y], [*y, EOS]
        ir, orr = [EOS, *y[::-1]], [*y[::-1], BOS]
        row = src[i : i + 1, : int((src[i] > 0).sum())]
        lg_l, lg_r = model(row, torch.tensor([il]), torch.tensor([ir]))
        total_l += F.cross_entropy(lg_l[0], torch.tensor(ol), reduction="sum")
        total_r += F.cross_entropy(lg_r[0], torch.tensor(orr), reduction="sum")
        n += len(ol)
    torch.testing.assert_close(model.loss(src, tgt), 0.5 * (total_l / n + total_r / n))


def _changes(a: torch.Tensor, b: torch.Tensor) -> list[bool]:
    """Per step: did the (b, t, v) logits change?"""
    return [(a[:, i] - b[:, i]).abs().max().item() > 1e-6 for i in range(a.shape[1])]


def test_step_masks_by_perturbation_at_every_position() -> None:
    model = tiny(seed=1)
    src, _, _ = data(b=2)
    g = torch.Generator().manual_seed(3)
    t = 6
    inp_l, inp_r = (
        torch.randint(4, V, (2, t), generator=g),
        torch.randint(4, V, (2, t), generator=g),
    )
    base_l, base_r = model(src[:2], inp_l, inp_r)
    for j in range(t):
        for which in ("l2r", "r2l"):
            pl, pr = inp_l.clone(), inp_r.clone()
            target = pl if which == "l2r" else pr
            target[:, j] = 4 + (target[:, j] - 3) % (V - 4)  # a different real token
            out_l, out_r = model(src[:2], pl, pr)
            # Both directions: step i sees inputs <= i of either direction, never later ones.
            expect = [i >= j for i in range(t)]
            assert _changes(out_l, base_l) == expect, (which, j)
            assert _changes(out_r, base_r) == expect, (which, j)


def test_gold_token_perturbation_shows_exactly_the_documented_leak() -> None:
    model = tiny(seed=2)
    src, _, _ = data(b=2)
    T = 6
    tgt = torch.randint(4, V, (2, T), generator=torch.Generator().manual_seed(5))
    nll_l, nll_r = model.loss(src[:2], tgt, reduction="none")  # (2, T+1)
    for j in range(1, T + 1):  # gold y_j, 1-indexed
        p = tgt.clone()
        p[:, j - 1] = 4 + (p[:, j - 1] - 3) % (V - 4)
        ql, qr = model.loss(src[:2], p, reduction="none")
        for i in range(T + 1):
            # L2R term i predicts y_{i+1} from y_1..y_i and sees R2L inputs y_T..y_{T-i+1}.
            may_l = j <= i + 1 or j >= T - i + 1
            # R2L term i predicts y_{T-i} from y_T..y_{T-i+1} and sees L2R inputs y_1..y_i.
            may_r = j >= T - i or j <= i
            if not may_l:
                assert (ql[:, i] - nll_l[:, i]).abs().max() < 1e-6, (j, i)
            if not may_r:
                assert (qr[:, i] - nll_r[:, i]).abs().max() < 1e-6, (j, i)
        # the leak: the last L2R term sees y_j through the R2L context even though j > i + 1
    q = tgt.clone()
    q[:, T - 1] = 4 + (q[:, T - 1] - 3) % (V - 4)
    ql, _ = model.loss(src[:2], q, reduction="none")
    assert (ql[:, 1] - nll_l[:, 1]).abs().max() > 1e-6  # L2R step 1 already sees y_T


def test_pseudo_targets_remove_the_leak() -> None:
    model = tiny(seed=3)
    src, _, _ = data(b=2)
    T = 6
    g = torch.Generator().manual_seed(6)
    tgt = torch.randint(4, V, (2, T), generator=g)
    pseudo = torch.randint(4, V, (2, T - 2), generator=g)
    nll_l, nll_r = model.loss(src[:2], tgt, pseudo=pseudo, reduction="none")
    for j in range(1, T + 1):
        p = tgt.clone()
        p[:, j - 1] = 4 + (p[:, j - 1] - 3) % (V - 4)
        ql, qr = model.loss(src[:2], p, pseudo=pseudo, reduction="none")
        for i in range(T + 1):
            if j > i + 1:  # L2R term i may only see y_1..y_{i+1} now
                assert (ql[:, i] - nll_l[:, i]).abs().max() < 1e-6, (j, i)
            if j < T - i:  # R2L term i only y_{T-i}..y_T
                assert (qr[:, i] - nll_r[:, i]).abs().max() < 1e-6, (j, i)
    other = pseudo.clone()
    other[:, 0] = 4 + (other[:, 0] - 3) % (V - 4)
    ql, _ = model.loss(src[:2], tgt, pseudo=other, reduction="none")
    assert (ql - nll_l).abs().max() > 1e-6  # the context really is the pseudo sequence


@pytest.mark.parametrize(
    "layers,copy,pointer,cont",
    [
        (1, False, False, False),
        (2, True, False, False),
        (2, False, True, False),
        (2, False, True, True),
    ],
)
def test_cached_pair_step_equals_full_forward(layers, copy, pointer, cont) -> None:
    model = tiny(seed=4, layers=layers, copy=copy, pointer=pointer, cont=cont)
    src, _, _ = data(b=2)
    B, n = 3, 5
    g = torch.Generator().manual_seed(7)
    pre_l = torch.randint(4, V, (2, B, n), generator=g)
    pre_r = torch.randint(4, V, (2, B, n), generator=g)
    pre_l[..., 0], pre_r[..., 0] = BOS, EOS
    state = model.bi_init(src[:2], None, B)
    perm_l = torch.tensor([[2, 0, 0], [1, 2, 0]])  # a beam reorder half way
    perm_r = torch.tensor([[1, 1, 2], [0, 2, 1]])
    for i in range(n):
        if i == 3:
            rows = lambda p: (p + torch.arange(2)[:, None] * B).reshape(-1)  # noqa: E731
            state.reorder(rows(perm_l), rows(perm_r))
            pre_l = pre_l.gather(1, perm_l[:, :, None].expand(-1, -1, n)).clone()
            pre_r = pre_r.gather(1, perm_r[:, :, None].expand(-1, -1, n)).clone()
            pre_l[..., 3:] = torch.randint(4, V, (2, B, n - 3), generator=g)
            pre_r[..., 3:] = torch.randint(4, V, (2, B, n - 3), generator=g)
        lp_l, lp_r = model.bi_step(state, pre_l[:, :, i].reshape(-1), pre_r[:, :, i].reshape(-1))
        for e in range(2):
            for a in range(B):
                for gg in range(B):
                    fl, fr = model(
                        src[e : e + 1], pre_l[e, a, None, : i + 1], pre_r[e, gg, None, : i + 1]
                    )
                    torch.testing.assert_close(
                        lp_l[e, a, gg], fl[0, i].log_softmax(-1), atol=1e-5, rtol=1e-5
                    )
                    torch.testing.assert_close(
                        lp_r[e, gg, a], fr[0, i].log_softmax(-1), atol=1e-5, rtol=1e-5
                    )


def test_bad_inputs() -> None:
    model = tiny()
    src, tgt, _ = data()
    with pytest.raises(ValueError, match="reduction"):
        model.loss(src, tgt, reduction="sum")
    with pytest.raises(ValueError, match="inp_r2l"):
        model(src, tgt, tgt[:, :2])
    with pytest.raises(ValueError, match="empty source"):
        model.loss(torch.zeros_like(src), tgt)
    with pytest.raises(TypeError, match="config"):
        BidirectionalSeq2Seq(None)


def test_copy_continuation_points_right_for_l2r_and_left_for_r2l() -> None:
    """All copy, flat copy scores: the bonus alone picks the source neighbour of the fed token
    (L2R: the token after it in the source; R2L: the one before)."""
    model = tiny(pointer=True, cont=True)
    with torch.no_grad():
        model.base.copy_query.weight.zero_()
        model.base.copy_gate.bias.fill_(-30.0)
        model.base.copy_gate.weight.zero_()
        model.base.copy_cont.fill_(30.0)
    src = torch.tensor([[4, 5, 6, 7]])
    inp_l = torch.tensor([[BOS, 5]])  # after 5, L2R continues with 6
    inp_r = torch.tensor([[EOS, 6]])  # after 6, R2L continues with 5
    zl, zr = model(src, inp_l, inp_r)
    assert int(zl[0, 1].argmax()) == 6 and zl[0, 1].exp()[6] > 0.99
    assert int(zr[0, 1].argmax()) == 5 and zr[0, 1].exp()[5] > 0.99
