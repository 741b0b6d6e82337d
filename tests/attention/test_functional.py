"""Fast kernels vs the dense masked reference (and a brute-force loop), outputs and gradients."""

from __future__ import annotations

import math

import pytest
import torch
from attention_oracles import dense_probs, loop_attention
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue.attention import functional as F_
from kexue.attention.functional import attention, masked_attention
from kexue.attention.patterns import head_pattern_masks

PATTERNS = [
    ("full", {}),
    ("local", {"window": 0}),
    ("local", {"window": 1}),
    ("local", {"window": 5}),
    ("local", {"window": 40}),
    ("atrous", {"rate": 1}),
    ("atrous", {"rate": 2}),
    ("atrous", {"rate": 5}),
    ("sparse", {"rate": 2}),
    ("sparse", {"rate": 3}),
    ("sparse", {"rate": 4, "window": 9}),
    ("strided", {"stride": 3}),
    ("fixed", {"stride": 4, "summary": 1}),
    ("fixed", {"stride": 3, "summary": 3}),
]


def _inputs(b, h, n, e, dtype, lengths=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, e, generator=g, dtype=dtype) for _ in range(3))
    for t in (q, k, v):
        t.requires_grad_(True)
    kpm = None
    if lengths is not None:
        kpm = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]
    return q, k, v, kpm, torch.randn(b, h, n, e, generator=g, dtype=dtype)


def _compare(kind, params, n, causal, lengths, h, e, dtype, tol, block_size=None):
    b = 1 if lengths is None else len(lengths)
    q, k, v, kpm, g = _inputs(b, h, n, e, dtype, lengths)
    kw = dict(causal=causal, key_padding_mask=kpm, **params)
    if block_size is not None:
        fast = F_.local_attention(
            q, k, v, params["window"], causal=causal, key_padding_mask=kpm, block_size=block_size
        )
    else:
        fast = attention(q, k, v, kind, **kw)
    ref = attention(q, k, v, kind, impl="dense", **kw)
    assert torch.isfinite(fast).all()
    gf = torch.autograd.grad((fast * g).sum(), (q, k, v))
    gr = torch.autograd.grad((ref * g).sum(), (q, k, v))
    torch.testing.assert_close(fast, ref, atol=tol, rtol=0)
    for a, r in zip(gf, gr, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, r, atol=tol, rtol=0)


@pytest.mark.parametrize("kind,params", PATTERNS)
@pytest.mark.parametrize("causal", [False, True])
def test_matches_dense_float64_edge_lengths(kind, params, causal):
    for n in (1, 2, 7, 13, 32, 33):
        _compare(kind, params, n, causal, [n, max(0, n - 3), 1], 3, 4, torch.float64, 1e-10)


@settings(deadline=None, max_examples=40)
@given(
    data=st.data(),
    n=st.integers(1, 70),
    causal=st.booleans(),
    h=st.integers(1, 4),
    e=st.integers(1, 8),
    pad=st.booleans(),
    dtype64=st.booleans(),
)
def test_matches_dense_property(data, n, causal, h, e, pad, dtype64):
    kind = data.draw(st.sampled_from(["local", "atrous", "sparse", "strided", "fixed", "full"]))
    if kind == "local":
        params = {"window": data.draw(st.integers(0, 80))}
    elif kind == "atrous":
        params = {"rate": data.draw(st.integers(1, 20))}
    elif kind == "sparse":
        r = data.draw(st.integers(2, 12))
        params = {"rate": r, "window": data.draw(st.one_of(st.none(), st.integers(0, 20)))}
    elif kind == "strided":
        params = {"stride": data.draw(st.integers(1, 12))}
    elif kind == "fixed":
        stride = data.draw(st.integers(1, 12))
        params = {"stride": stride, "summary": data.draw(st.integers(1, stride))}
    else:
        params = {}
    lengths = None
    if pad:
        lengths = data.draw(st.lists(st.integers(0, n), min_size=1, max_size=3))
    dtype, tol = (torch.float64, 1e-10) if dtype64 else (torch.float32, 1e-5)
    _compare(kind, params, n, causal, lengths, h, e, dtype, tol)


@pytest.mark.parametrize("block", [1, 3, 16, 64])
def test_local_any_block_size(block):
    for w in (0, 2, 7, 20):
        _compare("local", {"window": w}, 29, False, [29, 11], 2, 3, torch.float64, 1e-10, block)
        _compare("local", {"window": w}, 29, True, [29, 11], 2, 3, torch.float64, 1e-10, block)


@pytest.mark.parametrize("kind,params", PATTERNS)
def test_reference_equals_brute_force_loop(kind, params):
    """The dense reference itself: softmax over the union with every key counted once."""
    for causal in (False, True):
        q, k, v, kpm, _ = _inputs(2, 2, 11, 3, torch.float64, [11, 6], seed=1)
        ref = attention(q, k, v, kind, impl="dense", causal=causal, key_padding_mask=kpm, **params)
        loop = loop_attention(q, k, v, kind, causal=causal, key_padding_mask=kpm, **params)
        torch.testing.assert_close(ref, loop, atol=1e-12, rtol=0)


def test_sparse_counts_self_once():
    """Su's Keras layer puts j = i in both parts; with identical scores the weights expose it."""
    n, r = 12, 3
    q = torch.zeros(1, 1, n, 2, dtype=torch.float64)
    k = torch.zeros_like(q)
    v = torch.eye(n, dtype=torch.float64)[None, None]  # output row = attention weights
    w = F_.sparse_attention(q, k, v, r)[0, 0]
    allowed = head_pattern_masks("sparse", n, 1, rate=r)[0].double()
    torch.testing.assert_close(w, allowed / allowed.sum(-1, keepdim=True))


def test_local_full_window_and_atrous_rate1_equal_full():
    q, k, v, kpm, _ = _inputs(2, 3, 37, 8, torch.float64, [37, 20])
    for causal in (False, True):
        full = F_.full_attention(q, k, v, causal=causal, key_padding_mask=kpm)
        loc = F_.local_attention(q, k, v, 36, causal=causal, key_padding_mask=kpm)
        atr = F_.atrous_attention(q, k, v, 1, causal=causal, key_padding_mask=kpm)
        torch.testing.assert_close(loc, full, atol=1e-10, rtol=0)
        torch.testing.assert_close(atr, full, atol=1e-10, rtol=0)


def test_window_counts_exact():
    """Non-causal local never sees beyond +w; exactly 2w+1 keys inside, w+1 causal."""
    n, w = 40, 4
    q = torch.zeros(1, 1, n, 1)
    v = torch.eye(n)[None, None]
    weights = F_.local_attention(q, q.clone(), v, w)[0, 0]
    counts = (weights > 0).sum(-1)
    assert counts[w:-w].eq(2 * w + 1).all() and counts[0] == w + 1
    assert (weights > 0).nonzero().diff(dim=1).abs().max() <= w
    causal = (F_.local_attention(q, q.clone(), v, w, causal=True)[0, 0] > 0).sum(-1)
    assert causal[w:].eq(w + 1).all()


@pytest.mark.parametrize("kind,params", PATTERNS)
def test_empty_rows_zero_no_nan(kind, params):
    q, k, v, _, g = _inputs(2, 2, 9, 4, torch.float32)
    kpm = torch.zeros(2, 9, dtype=torch.bool)
    kpm[1, 8] = True  # sample 0: no valid key at all; sample 1: only the last one
    out = attention(q, k, v, kind, causal=True, key_padding_mask=kpm, **params)
    assert torch.isfinite(out).all() and out[0].eq(0).all()
    grads = torch.autograd.grad((out * g).sum(), (q, k, v))
    assert all(torch.isfinite(t).all() for t in grads)


def test_padding_invariance_and_causality():
    q, k, v, _, _ = _inputs(1, 2, 20, 4, torch.float64)
    for kind, params in PATTERNS:
        short = attention(q[:, :, :13], k[:, :, :13], v[:, :, :13], kind, **params)
        kpm = (torch.arange(20) < 13)[None]
        long = attention(q, k, v, kind, key_padding_mask=kpm, **params)
        torch.testing.assert_close(long[:, :, :13], short, atol=1e-12, rtol=0)
        base = attention(q, k, v, kind, causal=True, **params)
        k2 = k.detach().clone()
        k2[:, :, 10] += 1.0
        pert = attention(q, k2, v, kind, causal=True, **params)
        torch.testing.assert_close(pert[:, :, :10], base[:, :, :10], atol=0, rtol=0)


def test_batch_independence():
    q, k, v, kpm, _ = _inputs(3, 2, 25, 4, torch.float64, [25, 9, 17])
    for kind, params in PATTERNS:
        both = attention(q, k, v, kind, key_padding_mask=kpm, **params)
        one = attention(q[1:2], k[1:2], v[1:2], kind, key_padding_mask=kpm[1:2], **params)
        torch.testing.assert_close(both[1:2], one, atol=1e-12, rtol=0)


GRADCHECK_CASES = [
    ("local", {"window": 2}),
    ("sparse", {"rate": 3}),
    ("atrous", {"rate": 2}),
    ("atrous", {"rate": 3}),  # n = 10: padded residue classes
    ("strided", {"stride": 3}),  # two parts on disjoint heads
    ("fixed", {"stride": 4, "summary": 2}),  # gathered summary keys
]


@pytest.mark.parametrize(
    "fast_mode", [True, pytest.param(False, marks=pytest.mark.slow, id="full-jacobian")]
)
def test_gradcheck_float64(fast_mode):
    """float64 gradcheck of the custom autograd kernel (house rule 13). ``fast_mode`` checks
    random projections of the Jacobian (seconds); the full Jacobian (~30 s on 2 busy cores) is
    ``slow``."""
    q, k, v, kpm, _ = _inputs(1, 2, 10, 3, torch.float64, [8])
    for kind, params in GRADCHECK_CASES:
        assert torch.autograd.gradcheck(
            lambda a, b, c, kind=kind, params=params: attention(
                a, b, c, kind, key_padding_mask=kpm, **params
            ),
            (q, k, v),
            fast_mode=fast_mode,
        )


def test_dropout_path_and_eval_mode():
    q, k, v, _, g = _inputs(2, 2, 30, 4, torch.float32)
    for kind, params in PATTERNS[1:]:
        ev = attention(q, k, v, kind, dropout_p=0.5, training=False, **params)
        torch.testing.assert_close(ev, attention(q, k, v, kind, **params))
        torch.manual_seed(0)
        tr = attention(q, k, v, kind, dropout_p=0.5, **params)
        assert not torch.allclose(tr, ev)
        grads = torch.autograd.grad((tr * g).sum(), (q, k, v))
        assert all(torch.isfinite(t).all() for t in grads)


@pytest.mark.parametrize("kind,params", PATTERNS[1:])
@pytest.mark.parametrize("causal", [False, True])
def test_dropout_equals_dense_reference_under_the_same_mask(kind, params, causal):
    """Dropout acts on the normalised probabilities of S(i): out = (P * M / (1 - p)) V.

    The mask M is read off the kernel itself: with V = identity (e_v = n) the output *is* the
    dropped probability matrix, and the draws do not depend on e_v, so re-seeding and running
    with real values reuses M. Each kept entry must equal P_ij / (1 - p) of the oracle's P
    (:func:`attention_oracles.dense_probs`, which does not import the code under test), each
    disallowed entry stays 0, and outputs and gradients match the dense formula with that M.
    """
    p_drop, b, h, n, e = 0.3, 2, 2, 30, 4
    q, k, v, kpm, g = _inputs(b, h, n, e, torch.float64, [30, 19])
    kw = dict(causal=causal, key_padding_mask=kpm, dropout_p=p_drop, **params)
    eye = torch.eye(n, dtype=torch.float64).expand(b, h, n, n)
    torch.manual_seed(7)
    dropped = attention(q.detach(), k.detach(), eye, kind, **kw)  # (b, h, n, n) = P M / (1 - p)
    probs = dense_probs(q.detach(), k.detach(), kind, causal=causal, key_padding_mask=kpm, **params)
    allowed = probs > 0
    assert (dropped[~allowed] == 0).all()  # nothing leaks outside S(i)
    keep = (dropped * (1 - p_drop) / probs.clamp_min(1e-300))[allowed]
    assert ((keep - 1).abs() < 1e-9).logical_or(keep.abs() < 1e-9).all()  # each entry 0 or P/(1-p)
    mask = (dropped != 0).double()
    frac = 1 - mask[allowed].mean().item()
    assert abs(frac - p_drop) < 0.1, frac  # about p of the allowed entries dropped

    torch.manual_seed(7)
    out = attention(q, k, v, kind, **kw)
    ref = (dense_probs(q, k, kind, causal=causal, key_padding_mask=kpm, **params) * mask
           / (1 - p_drop)) @ v  # fmt: skip
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)
    for a, r in zip(torch.autograd.grad((out * g).sum(), (q, k, v)),
                    torch.autograd.grad((ref * g).sum(), (q, k, v)), strict=True):  # fmt: skip
        torch.testing.assert_close(a, r, atol=1e-10, rtol=0)


def test_custom_scale_and_value_dim():
    q, k, _, kpm, _ = _inputs(2, 2, 17, 4, torch.float64, [17, 5])
    v = torch.randn(2, 2, 17, 7, dtype=torch.float64)
    for kind, params in PATTERNS:
        fast = attention(q, k, v, kind, scale=0.3, key_padding_mask=kpm, **params)
        ref = attention(q, k, v, kind, impl="dense", scale=0.3, key_padding_mask=kpm, **params)
        assert fast.shape == (2, 2, 17, 7)
        torch.testing.assert_close(fast, ref, atol=1e-10, rtol=0)


def test_boundary_errors():
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(ValueError, match="k must have shape"):
        F_.local_attention(q, torch.randn(1, 2, 9, 4), q, 2)
    with pytest.raises(ValueError, match="q must have shape"):
        F_.local_attention(q[0], q[0], q[0], 2)
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        F_.local_attention(q, q, q, 2, key_padding_mask=torch.ones(1, 7, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_padding_mask must be bool"):
        F_.local_attention(q, q, q, 2, key_padding_mask=torch.ones(1, 8))
    with pytest.raises(ValueError, match="window"):
        F_.local_attention(q, q, q, -1)
    with pytest.raises(ValueError, match="rate"):
        F_.sparse_attention(q, q, q, 1)
    with pytest.raises(ValueError, match="summary"):
        F_.fixed_attention(q, q, q, 2, 3)
    with pytest.raises(ValueError, match="impl"):
        attention(q, q, q, "local", impl="nope", window=1)
    with pytest.raises(ValueError, match="dropout_p"):
        F_.atrous_attention(q, q, q, 2, dropout_p=1.0)


def test_masked_attention_cross_shapes():
    q = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    k = torch.randn(2, 3, 9, 4, dtype=torch.float64)
    v = torch.randn(2, 3, 9, 6, dtype=torch.float64)
    kpm = torch.arange(9)[None] < torch.tensor([9, 4])[:, None]
    ref = masked_attention(q, k, v, key_padding_mask=kpm)
    full = F_.full_attention(q, k, v, key_padding_mask=kpm)
    torch.testing.assert_close(full, ref, atol=1e-10, rtol=0)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(4)
    s = s.masked_fill(~kpm[:, None, None], -math.inf)
    torch.testing.assert_close(ref, torch.softmax(s, -1) @ v, atol=1e-12, rtol=0)


PUBLIC = {
    "masked_attention": lambda q, k, v, **kw: F_.masked_attention(q, k, v, **kw),
    "full_attention": lambda q, k, v, **kw: F_.full_attention(q, k, v, **kw),
    "local_attention": lambda q, k, v, **kw: F_.local_attention(q, k, v, 2, **kw),
    "atrous_attention": lambda q, k, v, **kw: F_.atrous_attention(q, k, v, 2, **kw),
    "sparse_attention": lambda q, k, v, **kw: F_.sparse_attention(q, k, v, 2, **kw),
    "strided_attention": lambda q, k, v, **kw: F_.strided_attention(q, k, v, 2, **kw),
    "fixed_attention": lambda q, k, v, **kw: F_.fixed_attention(q, k, v, 2, **kw),
    "attention": lambda q, k, v, **kw: attention(q, k, v, "local", window=2, **kw),
    "attention(dense)": lambda q, k, v, **kw: attention(
        q, k, v, "local", impl="dense", window=2, **kw
    ),
}


@pytest.mark.parametrize("name", list(PUBLIC))
def test_dtype_and_device_checked_at_the_boundary(name):
    """Issue 9 §4: ``local_attention(q.half(), k.float(), v.float())`` failed inside _tiles."""
    fn = PUBLIC[name]
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(TypeError, match=r"k must have q's dtype torch.float16, got torch.float32"):
        fn(q.half(), q.float(), q.float())
    with pytest.raises(TypeError, match=r"v must have q's dtype torch.float64"):
        fn(q.double(), q.double(), q.float())
    with pytest.raises(TypeError, match="q must be floating point"):
        fn(q.long(), q.long(), q.long())
    with pytest.raises(TypeError, match="k must be a torch.Tensor"):
        fn(q, q.numpy(), q)
    meta = q.to("meta")
    with pytest.raises(ValueError, match=r"v is on meta but q is on cpu"):
        fn(q, q, meta)
    with pytest.raises(ValueError, match=r"key_padding_mask is on meta"):
        fn(q, q, q, key_padding_mask=torch.ones(1, 8, dtype=torch.bool, device="meta"))
    assert fn(q, q, q).shape == (1, 2, 8, 4)


def test_masked_attention_checks_the_mask():
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(ValueError, match=r"mask must broadcast to \(b, h, t, s\)"):
        masked_attention(q, q, q, torch.ones(3, 8, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask must be a torch.Tensor"):
        masked_attention(q, q, q, [[True]])
    assert masked_attention(q, q, q, torch.ones(8, 8, dtype=torch.bool)).shape == q.shape


def test_docstrings_complete_and_the_argument_block_written_once():
    """Issue 8 §5: one shared definition of the q/k/v/options block, every docstring complete."""
    import inspect

    src = inspect.getsource(F_)
    assert src.count("key_padding_mask: ``(b,") == 1
    assert src.count("dropout_p: dropout on") == 1
    for name in F_.__all__:
        fn = getattr(F_, name)
        doc = fn.__doc__
        for section in ("Args:", "Returns:", "Raises:", "TypeError:", "ValueError:"):
            assert section in doc, (name, section)
        for param in inspect.signature(fn).parameters.values():
            label = f"**{param.name}:" if param.kind is param.VAR_KEYWORD else f"{param.name}:"
            assert f"\n        {label}" in doc, (name, param.name)
        assert "{" + "options}" not in doc and "{" + "qkv" not in doc, name


FUSED_CASES = [
    ("local", {"window": 5}, False),
    ("local", {"window": 40}, True),
    ("sparse", {"rate": 4}, False),
    ("sparse", {"rate": 8, "window": 20}, True),
    ("strided", {"stride": 40}, True),
    ("atrous", {"rate": 3}, False),  # 333 = 3 * 111: the classes are strided views
    ("atrous", {"rate": 9}, True),
    ("sparse", {"rate": 9, "window": 12}, False),
]


@pytest.mark.parametrize("kind,params,causal", FUSED_CASES)
@pytest.mark.parametrize("padded", [False, True])
def test_fused_interior_tiles_equal_generic_path_and_dense(
    monkeypatch, kind, params, causal, padded
):
    """n = 333: band tiles in the interior go through the fused forward and the GEMM backward,
    atrous classes (rate | n) through the fused kernel both ways (key padding sends both back to
    the generic path); outputs and gradients equal the generic path and the dense reference."""
    from kexue.attention import _flash

    calls = []
    for name in ("forward", "class_forward"):
        real = getattr(_flash, name)
        monkeypatch.setattr(_flash, name, lambda *a, real=real: calls.append(1) or real(*a))
    q, k, v, kpm, g = _inputs(2, 2, 333, 8, torch.float64, [333, 200] if padded else None)
    kw = dict(causal=causal, key_padding_mask=kpm, **params)
    runs = []
    for fused in (True, False):
        monkeypatch.setattr(_flash, "USE_FUSED", fused)
        out = attention(q, k, v, kind, **kw)
        runs.append((out, *torch.autograd.grad((out * g).sum(), (q, k, v))))
    ref = attention(q, k, v, kind, impl="dense", **kw)
    runs.append((ref, *torch.autograd.grad((ref * g).sum(), (q, k, v))))
    assert bool(calls) != padded  # the fused kernel ran exactly when there was no padding
    for fused, generic, dense in zip(*runs, strict=True):
        torch.testing.assert_close(fused, generic, atol=1e-12, rtol=0)
        torch.testing.assert_close(fused, dense, atol=1e-10, rtol=0)


@pytest.mark.parametrize("block", [4, 16])
def test_interior_backward_strided_heads_and_lse_gradient(monkeypatch, block):
    """The interior band backward (batched GEMMs into views of dk/dv) on q, k, v laid out
    ``(b, n, h, e)`` and transposed (rows strided by h * e), with a gradient through the
    log-normaliser too: equal to the generic tile path, and lse equal to a dense logsumexp."""
    import math

    from kexue.attention import _flash
    from kexue.attention._parts import run_parts
    from kexue.attention.functional import _all_heads, _local_part, _valid

    g = torch.Generator().manual_seed(3)
    b, n, h, e, w = 2, 150, 3, 8, 9
    base = [torch.randn(b, n, h, e, generator=g, dtype=torch.float64) for _ in range(3)]
    go, gl = torch.randn(b, h, n, e, generator=g), torch.randn(b, h, n, generator=g)
    runs = []
    for fused in (True, False):
        monkeypatch.setattr(_flash, "USE_FUSED", fused)
        leaves = [x.clone().requires_grad_(True) for x in base]
        q, k, v = (x.transpose(1, 2) for x in leaves)
        assert not q.is_contiguous()
        part = _local_part(q, w, False, _valid(None, b, n, q.device), _all_heads(q), block)
        out, lse = run_parts([part], q, k, v, e**-0.5)
        ((out * go.double()).sum() + (lse * gl.double()).sum()).backward()
        runs.append((out, lse, *(x.grad for x in leaves)))
    for a, c in zip(*runs, strict=True):
        torch.testing.assert_close(a, c, atol=1e-12, rtol=0)
    q, k = (x.transpose(1, 2) for x in base[:2])
    s = q @ k.transpose(-1, -2) * e**-0.5
    i = torch.arange(n)
    s = s.masked_fill((i[:, None] - i[None, :]).abs() > w, -math.inf)
    torch.testing.assert_close(runs[0][1], torch.logsumexp(s, -1), atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "kind,params", [("local", {"window": 3}), ("atrous", {"rate": 4}), ("atrous", {"rate": 5})]
)
def test_gradcheck_float64_fused_tiles(kind, params):
    """The interior band forward and backward (n = 100, window 3, block 32) and the fused
    atrous classes (rate 4 and 5 divide n = 100)."""
    q, k, v, _, _ = _inputs(1, 2, 100, 3, torch.float64)
    for causal in (False, True):
        assert torch.autograd.gradcheck(
            lambda a, b, c, causal=causal: attention(a, b, c, kind, causal=causal, **params),
            (q, k, v),
            fast_mode=True,
        )


def test_kernels_pinned_to_one_thread_and_restored(monkeypatch):
    """Issue 15: with set_kernel_threads(1) torch runs 1 thread inside the kernels (2 threads
    stalled the many small ops on a busy machine); the caller's setting is restored, also in
    backward."""
    from kexue.attention import _flash, _parts, set_kernel_threads

    monkeypatch.setattr(_parts, "KERNEL_THREADS", None)
    set_kernel_threads(1)
    with pytest.raises(ValueError, match="n must be"):
        set_kernel_threads(0)

    seen, real = [], _flash.backward
    monkeypatch.setattr(
        _flash, "backward", lambda *a: seen.append(torch.get_num_threads()) or real(*a)
    )
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        q, k, v, _, g = _inputs(1, 2, 200, 4, torch.float32)
        out = attention(q, k, v, "local", window=3)
        assert torch.get_num_threads() == 2
        (out * g).sum().backward()
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2
        set_kernel_threads(None)  # the default: torch's own setting inside the kernels too
        seen.clear()
        (attention(q, k, v, "local", window=3) * g).sum().backward()
        assert set(seen) == {2}
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    "kind,params",
    [("local", {"window": 5}), ("atrous", {"rate": 4}), ("sparse", {"rate": 4, "window": 3})],
)
def test_mapped_output_buffers_give_the_same_numbers(kind, params, monkeypatch):
    """With every output and gradient buffer taken from a fresh mapping (the >= 32 MiB path of
    kexue.core.buffers, forced here at n = 96), forward and gradients equal the heap path's
    bit for bit: the mapping is handed over zeroed, as the accumulating kernels need."""
    import kexue.core.buffers as buffers

    q, k, v, _, go = _inputs(2, 3, 96, 8, torch.float32)

    def run():
        out = attention(q, k, v, kind, **params)
        return (out, *torch.autograd.grad(out, (q, k, v), go))

    heap = run()
    monkeypatch.setattr(buffers, "HUGE_MIN_BYTES", 1)
    mapped = run()
    if buffers._CAN_MAP:
        assert mapped[1].data_ptr() % 2**21 == 0  # dq came from a mapping
    for a, b in zip(heap, mapped, strict=True):
        assert torch.equal(a, b)


def test_missing_or_changed_flash_ops_fall_back_to_the_generic_path(monkeypatch):
    """kexue.attention must import and compute on a torch whose private CPU flash ops are
    renamed or changed: the ops are looked up lazily, probed once, and every tile then takes
    the generic path (same values as the dense reference)."""
    import subprocess
    import sys

    from kexue.attention import _flash

    assert _flash.lookup_ops(("no_such_forward_op", "no_such_backward_op")) is None
    # an op whose outputs are not what the module expects is refused too
    wrong = ("_scaled_dot_product_flash_attention_for_cpu",) * 2  # backward with forward's op
    assert _flash.lookup_ops(wrong) is None
    assert _flash.lookup_ops() is not None  # this torch (2.13) has them

    calls = []
    monkeypatch.setattr(_flash, "_OPS", False)  # as if missing
    monkeypatch.setattr(_flash, "forward", lambda *a: calls.append(1))
    q, k, v, kpm, g = _inputs(2, 2, 160, 8, torch.float64, None)
    out = attention(q, k, v, "local", window=16)
    ref = attention(q, k, v, "local", window=16, impl="dense")
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)
    assert not calls
    # the import itself never touches the ops
    code = (
        "import torch, kexue.attention as a\n"
        "from kexue.attention import _flash\n"
        "assert _flash._OPS is None, _flash._OPS\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
