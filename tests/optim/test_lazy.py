"""Lazy: SparseAdam equivalence, fast == generic, untouched rows frozen, any inner optimizer."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from kexue.optim import Lazy, Lookahead
from kexue.optim.rowwise import adam_rows_, touched_rows

V, D = 30, 6


def _net(sparse: bool, seed: int = 0, v: int = V, d: int = D) -> tuple[nn.Embedding, nn.Linear]:
    torch.manual_seed(seed)
    emb = nn.Embedding(v, d, sparse=sparse).double()
    head = nn.Linear(d, 2).double()
    return emb, head


def _loss(emb: nn.Embedding, head: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return head(torch.tanh(emb(x))).pow(2).mean()


def _index_batches(
    n: int, v: int = V, seed: int = 1, size: tuple[int, int] = (4, 3)
) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, v, size, generator=g) for _ in range(n)]


def _run(emb, head, opt, batches) -> None:
    for x in batches:
        opt.zero_grad()
        _loss(emb, head, x).backward()
        opt.step()


class _Pair:
    """SparseAdam on the embedding + Adam on the head, driven like one optimizer."""

    def __init__(self, emb, head, **kw):
        self.a = torch.optim.SparseAdam(list(emb.parameters()), **kw)
        self.b = torch.optim.Adam(list(head.parameters()), **kw)

    def zero_grad(self):
        self.a.zero_grad()
        self.b.zero_grad()

    def step(self):
        self.a.step()
        self.b.step()


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("fast", [None, False])
def test_freeze_equals_sparse_adam(sparse: bool, fast: bool | None) -> None:
    # SparseAdam adds eps before bias correction, Adam after: with a negligible eps they agree.
    kw = {"lr": 0.05, "betas": (0.8, 0.95), "eps": 1e-300}
    batches = _index_batches(10)
    e1, h1 = _net(sparse=True)
    pair = _Pair(e1, h1, **kw)
    _run(e1, h1, pair, batches)
    e2, h2 = _net(sparse=sparse)
    opt = Lazy(
        torch.optim.Adam([*e2.parameters(), *h2.parameters()], **kw), params=[e2], fast_path=fast
    )
    assert opt.uses_fast_path(e2.weight) is (fast is None)
    _run(e2, h2, opt, batches)
    torch.testing.assert_close(e2.weight, e1.weight, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(h2.weight, h1.weight, rtol=1e-9, atol=1e-12)
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(
            opt.state[e2.weight][key], pair.a.state[e1.weight][key], rtol=1e-9, atol=1e-14
        )
    assert float(opt.state[e2.weight]["step"]) == float(pair.a.state[e1.weight]["step"]) == 10.0


@given(
    v=st.integers(2, 40),
    d=st.integers(1, 9),
    rows=st.lists(st.integers(0, 39), min_size=1, max_size=12),
    sparse=st.booleans(),
    wd=st.sampled_from([0.0, 0.1]),
    adamw=st.booleans(),
    moments=st.sampled_from(["freeze", "decay"]),
)
def test_fast_path_equals_generic_path(v, d, rows, sparse, wd, adamw, moments) -> None:
    rows = [r % v for r in rows]
    cls = torch.optim.AdamW if adamw else torch.optim.Adam
    out = []
    for fast in (None, False):
        emb, head = _net(sparse=sparse, v=v, d=d)
        opt = Lazy(
            cls([*emb.parameters(), *head.parameters()], lr=0.1, weight_decay=wd),
            params=[emb],
            moments=moments,
            fast_path=fast,
        )
        x = torch.tensor([rows])
        w0 = emb.weight.detach().clone()
        for step in range(3):
            opt.zero_grad()
            _loss(emb, head, x[:, : step + 1]).backward()
            opt.step()
        out.append(
            (emb.weight.detach().clone(), head.weight.detach().clone(), opt.state[emb.weight])
        )
        used = sorted(set(rows[:3]))
        untouched = [i for i in range(v) if i not in used]
        assert torch.equal(emb.weight[untouched], w0[untouched])  # bit-identical
    (w_f, h_f, s_f), (w_g, h_g, s_g) = out
    torch.testing.assert_close(w_f, w_g, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(h_f, h_g, rtol=1e-12, atol=1e-14)
    for key in ("exp_avg", "exp_avg_sq", "step"):
        torch.testing.assert_close(s_f[key], s_g[key], rtol=1e-12, atol=1e-14)
    untouched = [i for i in range(v) if i not in set(rows[:3])]
    for key in ("exp_avg", "exp_avg_sq"):  # frozen or decayed exactly as Adam does with g = 0
        assert torch.equal(s_f[key][untouched], s_g[key][untouched]), key


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: torch.optim.Adam(ps, lr=0.05),
        lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.1),
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, momentum=0.5),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda ps: torch.optim.Adagrad(ps, lr=0.1),
    ],
    ids=["adam", "adamw", "rmsprop", "sgd-momentum", "adagrad"],
)
@pytest.mark.parametrize("moments", ["freeze", "decay"])
def test_any_inner_optimizer(make, moments: str) -> None:
    """All rows used -> Lazy == inner; then a batch using rows {1, 3}: only they move."""
    emb_ref, head_ref = _net(sparse=False)
    inner_ref = make([*emb_ref.parameters(), *head_ref.parameters()])
    emb, head = _net(sparse=False)
    opt = Lazy(make([*emb.parameters(), *head.parameters()]), params=[emb], moments=moments)
    full = torch.arange(V).reshape(3, -1)
    _run(emb_ref, head_ref, inner_ref, [full, full])
    _run(emb, head, opt, [full, full])
    torch.testing.assert_close(emb.weight, emb_ref.weight, rtol=1e-12, atol=1e-14)

    state_before = {
        k: t.clone() for k, t in opt.state[emb.weight].items() if torch.is_tensor(t) and t.dim()
    }
    w_before = emb.weight.detach().clone()
    x = torch.tensor([[1, 3]])
    _run(emb, head, opt, [x])
    _run(emb_ref, head_ref, inner_ref, [x])
    others = [i for i in range(V) if i not in (1, 3)]
    assert torch.equal(emb.weight[others], w_before[others])
    assert not torch.equal(emb.weight[[1, 3]], w_before[[1, 3]])
    # touched rows and the head follow the inner optimizer exactly
    torch.testing.assert_close(emb.weight[[1, 3]], emb_ref.weight[[1, 3]], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(head.weight, head_ref.weight, rtol=1e-12, atol=1e-14)
    for key, old in state_before.items():
        new = opt.state[emb.weight][key]
        if moments == "freeze":
            assert torch.equal(new[others], old[others]), key
        else:  # Su's variant: state of unused rows evolves like the inner optimizer's
            torch.testing.assert_close(
                new, inner_ref.state[emb_ref.weight][key], rtol=1e-12, atol=1e-14
            )


def test_decay_moments_of_unused_rows_decay() -> None:
    emb, head = _net(sparse=False)
    opt = Lazy(
        torch.optim.Adam([*emb.parameters(), *head.parameters()], lr=0.1, betas=(0.5, 0.9)),
        params=[emb],
        moments="decay",
    )
    _run(emb, head, opt, [torch.tensor([[0, 5]])])
    m = opt.state[emb.weight]["exp_avg"][5].clone()
    _run(emb, head, opt, [torch.tensor([[0]])])
    torch.testing.assert_close(opt.state[emb.weight]["exp_avg"][5], 0.5 * m)


def test_zero_gradient_row_counts_as_unused() -> None:
    """Documented heuristic (design note 04 §4): a used row with an exactly-zero dense gradient
    is not updated."""
    emb, head = _net(sparse=False)
    opt = Lazy(torch.optim.Adam([*emb.parameters(), *head.parameters()], lr=0.1), params=[emb])
    w0 = emb.weight.detach().clone()
    opt.zero_grad()
    e = emb(torch.tensor([[2, 4]]))
    (head(e) * torch.tensor([[[1.0], [0.0]]], dtype=torch.float64)).sum().backward()  # row 4 masked
    opt.step()
    assert not torch.equal(emb.weight[2], w0[2])
    assert torch.equal(emb.weight[4], w0[4])


def test_padding_idx_never_updated() -> None:
    torch.manual_seed(0)
    emb = nn.Embedding(10, 4, padding_idx=0, sparse=True).double()
    opt = Lazy(torch.optim.Adam(emb.parameters(), lr=0.1), params=[emb])
    for _ in range(3):
        opt.zero_grad()
        emb(torch.tensor([[0, 1, 0]])).sum().backward()
        opt.step()
    assert torch.equal(emb.weight[0], torch.zeros(4, dtype=torch.float64))


def test_touched_rows_sparse_duplicates_and_dense() -> None:
    g = torch.sparse_coo_tensor(
        torch.tensor([[3, 1, 3]]), torch.ones(3, 2), (5, 2), check_invariants=True
    )
    idx, rows = touched_rows(g)
    assert idx.tolist() == [1, 3] and rows.tolist() == [[1, 1], [2, 2]]
    dense = torch.zeros(5, 2)
    dense[4, 1] = -1e-40  # denormal, still non-zero
    dense[2, 0] = float("nan")
    idx, _ = touched_rows(dense)
    assert idx.tolist() == [2, 4]


def test_state_dict_roundtrip_and_sparse_grad_restored() -> None:
    batches = _index_batches(8)
    emb, head = _net(sparse=True)

    def make(e, h):
        return Lazy(torch.optim.Adam([*e.parameters(), *h.parameters()], lr=0.05), params=[e])

    ref_e, ref_h = _net(sparse=True)
    _run(ref_e, ref_h, make(ref_e, ref_h), batches)
    opt = make(emb, head)
    _run(emb, head, opt, batches[:5])
    assert emb.weight.grad.is_sparse  # the user's gradient is left as it was
    buf = io.BytesIO()
    torch.save({"m": [emb.state_dict(), head.state_dict()], "o": opt.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    e2, h2 = _net(sparse=True, seed=9)
    e2.load_state_dict(ck["m"][0])
    h2.load_state_dict(ck["m"][1])
    opt2 = make(e2, h2)
    opt2.load_state_dict(ck["o"])
    _run(e2, h2, opt2, batches[5:])
    assert torch.equal(e2.weight, ref_e.weight) and torch.equal(h2.weight, ref_h.weight)


def test_scheduler_and_lookahead_composition() -> None:
    emb, head = _net(sparse=True)
    inner = torch.optim.Adam([*emb.parameters(), *head.parameters()], lr=0.1)
    opt = Lookahead(Lazy(inner, params=[emb]), k=3, alpha=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s)
    for x in _index_batches(4):
        opt.zero_grad()
        _loss(emb, head, x).backward()
        opt.step()
        sched.step()
    assert inner.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)


def test_closure() -> None:
    emb, head = _net(sparse=False)
    opt = Lazy(
        torch.optim.SGD([*emb.parameters(), *head.parameters()], lr=0.1, momentum=0.9), params=[emb]
    )
    x = torch.tensor([[1, 2]])

    def closure():
        opt.zero_grad()
        loss = _loss(emb, head, x)
        loss.backward()
        return loss

    assert torch.is_tensor(opt.step(closure))


def test_validation() -> None:
    emb, head = _net(sparse=False)
    inner = torch.optim.Adam(head.parameters())
    with pytest.raises(ValueError, match="not in the optimizer"):
        Lazy(inner, params=[emb])
    with pytest.raises(ValueError, match="moments"):
        Lazy(inner, params=[head.weight], moments="lazy")
    with pytest.raises(ValueError, match="at least one"):
        Lazy(inner, params=[])
    with pytest.raises(TypeError, match="params"):
        Lazy(inner, params=["weight"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="fast_path"):
        Lazy(torch.optim.SGD(emb.parameters(), lr=0.1), params=[emb], fast_path=True)
    with pytest.raises(ValueError, match="fast_path"):
        Lazy(
            torch.optim.Adam(emb.parameters(), weight_decay=0.1),
            params=[emb],
            moments="decay",
            fast_path=True,
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("decoupled", [False, True])
def test_rowwise_fused_equals_reference(dtype, decoupled) -> None:
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(50, 7, generator=g, dtype=dtype)
    idx = torch.tensor([0, 4, 9, 31])
    group = {"lr": 0.01, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.05}
    group |= {"maximize": False, "decoupled_weight_decay": decoupled}
    out = []
    for impl in ("fused", "reference"):
        p, state = p0.clone(), {}
        for _ in range(3):
            adam_rows_(
                p,
                idx,
                torch.randn(4, 7, generator=torch.Generator().manual_seed(1), dtype=dtype),
                state,
                group,
                impl=impl,
            )
        out.append((p, state))
    (p1, s1), (p2, s2) = out
    tol = {"rtol": 1e-6, "atol": 1e-7} if dtype == torch.float32 else {"rtol": 1e-13, "atol": 1e-15}
    torch.testing.assert_close(p1, p2, **tol)
    torch.testing.assert_close(s1["exp_avg_sq"], s2["exp_avg_sq"], **tol)
    assert float(s1["step"]) == float(s2["step"]) == 3.0
    rest = [i for i in range(50) if i not in idx.tolist()]
    assert torch.equal(p1[rest], p0[rest])
