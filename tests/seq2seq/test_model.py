"""Seq2Seq: loss = an independent masked CE, score = summed log-probs, cached == recomputed."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kexue.seq2seq import Seq2Seq, Seq2SeqConfig

V = 9


def tiny(seed: int = 0, **kw) -> Seq2Seq:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, embed_dim=16, num_heads=2, encoder_layers=1, decoder_layers=2)
    cfg.update(kw)
    model = Seq2Seq(Seq2SeqConfig(dropout=0.0, **cfg)).eval()
    if model.config.copy_prior:  # non-trivial copy prior parameters
        with torch.no_grad():
            model.copy_log_scale.normal_()
            model.copy_shift.normal_()
    if model.config.pointer:  # a gate away from 1/2 and peaked copy attention
        with torch.no_grad():
            model.copy_gate.bias.normal_()
            model.copy_query.weight.mul_(4.0)
            if model.config.copy_continuation:
                model.copy_cont.fill_(1.7)
    return model


def batch(b=3, s=6, t=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, V, (b, s), generator=g)
    tgt = torch.randint(4, V, (b, t), generator=g)
    src_len = torch.randint(1, s + 1, (b,), generator=g)
    tgt_len = torch.randint(0, t + 1, (b,), generator=g)
    src[torch.arange(s)[None] >= src_len[:, None]] = 0
    tgt[torch.arange(t)[None] >= tgt_len[:, None]] = 0
    return src, tgt, src_len, tgt_len


def reference_logprob(model, src_row, tgt_row):
    """Unpadded, one row at a time, full forward on [BOS, y] -> sum log p([y, EOS])."""
    c = model.config
    inp = torch.tensor([[c.bos_id, *tgt_row]])
    out = torch.tensor([*tgt_row, c.eos_id])
    logits = model(torch.tensor([src_row]), inp)[0]
    return torch.log_softmax(logits, -1)[torch.arange(len(out)), out].sum()


@given(seed=st.integers(0, 10_000), copy=st.booleans(), pointer=st.booleans())
def test_score_and_loss_equal_unpadded_reference(seed, copy, pointer) -> None:
    model = tiny(copy_prior=copy, pointer=pointer)
    src, tgt, sl, tl = batch(seed=seed)
    ref = torch.stack(
        [reference_logprob(model, src[i, : sl[i]].tolist(), tgt[i, : tl[i]].tolist())
         for i in range(3)]
    )  # fmt: skip
    torch.testing.assert_close(model.score(src, tgt), ref, atol=1e-5, rtol=1e-5)
    loss = model.loss(src, tgt)
    torch.testing.assert_close(loss, -ref.sum() / (tl + 1).sum(), atol=1e-5, rtol=1e-5)
    none = model.loss(src, tgt, reduction="none")
    assert none.shape == (3, tgt.shape[1] + 1)
    torch.testing.assert_close(none.sum(-1), -ref, atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_the_loss() -> None:
    model = tiny()
    src, tgt, _, _ = batch()
    wide_src = torch.cat([src, torch.zeros(3, 4, dtype=torch.long)], 1)
    wide_tgt = torch.cat([tgt, torch.zeros(3, 3, dtype=torch.long)], 1)
    torch.testing.assert_close(model.loss(wide_src, wide_tgt), model.loss(src, tgt))


def test_explicit_masks_match_pad_derived_masks() -> None:
    model = tiny()
    src, tgt, _, _ = batch()
    garbage_src = src.masked_fill(src == 0, 5)  # pad ids replaced, masks say what is valid
    garbage_tgt = tgt.masked_fill(tgt == 0, 6)
    got = model.score(garbage_src, garbage_tgt, src != 0, tgt != 0)
    torch.testing.assert_close(got, model.score(src, tgt))


@pytest.mark.parametrize(
    "layers,copy,pointer,cont", [(1, False, False, False), (3, False, False, False),
                                 (2, True, False, False), (2, False, True, False),
                                 (1, True, True, False), (2, False, True, True)]
)  # fmt: skip
def test_cached_decoding_equals_recomputation(layers, copy, pointer, cont) -> None:
    model = tiny(decoder_layers=layers, copy_prior=copy, pointer=pointer, copy_continuation=cont)
    src, _, _, _ = batch(b=4, seed=3)
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(4, V, (4, 7), generator=g)
    inp = torch.cat([torch.full((4, 1), model.config.bos_id), seq], 1)
    full = torch.log_softmax(model(src, inp), -1)  # (b, 8, v)
    state = model.init_state(src)
    for t in range(inp.shape[1]):
        step = model.step(state, inp[:, t])
        torch.testing.assert_close(step, full[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pointer,cont", [(False, False), (True, False), (True, True)])
def test_cache_reorder_equals_recomputation_of_reordered_rows(pointer, cont) -> None:
    model = tiny(copy_prior=True, pointer=pointer, copy_continuation=cont)
    src, _, _, _ = batch(b=3, seed=4)
    inp = torch.tensor([[2, 5, 6, 7], [2, 4, 4, 8], [2, 8, 7, 6]])
    state = model.init_state(src)
    for t in range(2):
        model.step(state, inp[:, t])
    index = torch.tensor([2, 0, 0, 1])
    state.reorder(index)
    got = [model.step(state, inp[index, t]) for t in (2, 3)]
    full = torch.log_softmax(model(src[index], inp[index]), -1)
    torch.testing.assert_close(got[0], full[:, 2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], full[:, 3], atol=1e-5, rtol=1e-5)


def train_copy_task(model: Seq2Seq, steps: int) -> list[float]:
    """Adam on "output = source" batches; every gradient must be finite. Returns the losses."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        src = torch.randint(4, V, (16, 4), generator=g)
        loss = model.loss(src, src)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    return losses


def test_loss_trains_a_copy_task() -> None:
    losses = train_copy_task(tiny(embed_dim=32), 150)
    assert sum(losses[-10:]) / 10 < 0.3 * losses[0]


def test_bad_inputs_raise_clear_errors() -> None:
    model = tiny()
    src, tgt, _, _ = batch()
    with pytest.raises(ValueError, match="empty source"):
        model.loss(torch.zeros(2, 3, dtype=torch.long), tgt[:2])
    with pytest.raises(ValueError, match="src"):
        model.loss(torch.zeros(2, 0, dtype=torch.long), tgt[:2])
    with pytest.raises(ValueError, match="src ids"):
        model.loss(src + V, tgt)
    with pytest.raises(TypeError, match="src"):
        model.loss(src.float(), tgt)
    with pytest.raises(ValueError, match="tgt"):
        model.loss(src, tgt[:2])
    with pytest.raises(ValueError, match="right-padded"):
        model.loss(src, tgt, tgt_mask=torch.tensor([[False, True, True, True, True]] * 3))
    with pytest.raises(ValueError, match="reduction"):
        model.loss(src, tgt, reduction="avg")
    with pytest.raises(ValueError, match="embed_dim"):
        Seq2SeqConfig(vocab_size=V, embed_dim=10, num_heads=3)
    with pytest.raises(ValueError, match="eos_id"):
        Seq2SeqConfig(vocab_size=V, eos_id=V)
    with pytest.raises(ValueError, match="distinct"):
        Seq2SeqConfig(vocab_size=V, bos_id=0)
    with pytest.raises(TypeError, match="config"):
        Seq2Seq({"vocab_size": V})


def test_copy_prior_raises_source_tokens() -> None:
    model = tiny(copy_prior=True)
    src = torch.tensor([[4, 5, 0]])
    inp = torch.tensor([[2]])
    with torch.no_grad():
        model.copy_log_scale.fill_(3.0)
        model.copy_shift.zero_()
    z = model(src, inp)[0, 0]
    plain = 0.5 * model.out(model.decode(inp, *model.encode(src)))[0, 0]
    torch.testing.assert_close(
        z - plain, torch.tensor([0, 0, 0, 0, 1, 1, 0, 0, 0.0]) * 0.5 * 3.0**0 * torch.e**3
    )


def pointer_oracle(model, src_row, inp_row):
    """Float64, one row, loops: log(g softmax(z) + (1 - g) sum_{j: x_j = w} a_j) at every step,
    a_j over scores q.k_j / sqrt(d) + w_c [x_{j-1} = y_{i-1}] (the bonus with copy_continuation).

    Only the decoder states come from the model; the mixture is written out here."""
    src, inp = torch.tensor([src_row]), torch.tensor([inp_row])
    with torch.no_grad():
        memory, mask = model.encode(src)
        h = model.decode(inp, memory, mask)[0].double()
        keys = memory[0].double() @ model.copy_key.weight.double().T
        wq = model.copy_query.weight.double()
        w_out = model.out.weight.double()
        wg, bg = model.copy_gate.weight.double()[0], model.copy_gate.bias.double()[0]
    d, v = h.shape[1], w_out.shape[0]
    rows = []
    for i in range(h.shape[0]):
        p_gen = torch.softmax(w_out @ h[i], 0)
        scores = torch.tensor([float((wq @ h[i]) @ keys[j]) / d**0.5 for j in range(len(src_row))])
        if model.config.copy_continuation:
            w_c = float(model.copy_cont)
            for j in range(1, len(src_row)):
                if src_row[j - 1] == inp_row[i]:
                    scores[j] += w_c
        a = torch.softmax(scores.double(), 0)
        g = torch.sigmoid(wg @ h[i] + bg)
        p = g * p_gen
        for w in range(v):
            p[w] = p[w] + (1 - g) * sum(float(a[j]) for j in range(len(src_row)) if src_row[j] == w)
        rows.append(torch.log(p))
    return torch.stack(rows)


@pytest.mark.parametrize("seed,cont", [(0, False), (1, False), (2, False), (0, True), (3, True)])
def test_pointer_output_equals_the_written_out_mixture(seed, cont) -> None:
    model = tiny(seed=seed, pointer=True, copy_continuation=cont)
    src_row, inp_row = [4, 5, 5, 8, 4, 6][: 3 + seed % 3], [2, 5, 7, 4, 5]
    got = torch.log_softmax(model(torch.tensor([src_row]), torch.tensor([inp_row]))[0], -1)
    ref = pointer_oracle(model, src_row, inp_row)
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.exp().sum(-1), torch.ones(len(inp_row)))


def test_pointer_ignores_padded_source_positions_and_trains_a_copy_task() -> None:
    model = tiny(pointer=True, embed_dim=32)
    src = torch.tensor([[4, 5, 6, 0, 0]])
    inp = torch.tensor([[2, 4]])
    narrow = model(src[:, :3], inp)
    torch.testing.assert_close(model(src, inp), narrow)
    garbage = model(src.masked_fill(src == 0, 7), inp, src_mask=src != 0)
    torch.testing.assert_close(garbage, narrow)
    losses = train_copy_task(model, 100)
    assert sum(losses[-10:]) / 10 < 0.3 * losses[0]


def test_pointer_gradcheck_float64() -> None:
    model = tiny(pointer=True).double()
    src = torch.tensor([[4, 5, 4, 0]])
    tgt = torch.tensor([[5, 4]])
    memory, mask = model.encode(src)
    inp = torch.tensor([[2, 5, 4]])
    h = model.decode(inp, memory, mask).detach().requires_grad_(True)
    keys = model.copy_key(memory).detach().requires_grad_(True)

    def f(h, keys):
        return model.project(h, None, (keys, src, mask))

    assert torch.autograd.gradcheck(f, (h, keys))
    assert tgt.shape == (1, 2)
