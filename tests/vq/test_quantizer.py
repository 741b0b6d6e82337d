"""VectorQuantizer: search vs brute force, straight-through and loss gradients, EMA, restarts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kexue.core.io import load_safetensors
from kexue.core.timing import peak_extra_mib
from kexue.vq import VectorQuantizer, code_statistics, nearest_code

from .oracles import brute_nearest, ema_reference


# ---------------------------------------------------------------- nearest-code search
@given(
    n=st.integers(1, 40),
    m=st.integers(1, 30),
    d=st.integers(1, 9),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    chunk=st.sampled_from([1, 7, 64, 1 << 22]),
    seed=st.integers(0, 2**16),
)
def test_nearest_code_equals_brute_force(n, m, d, scale, chunk, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    e = torch.randn(m, d, generator=g, dtype=torch.float64) * scale
    codes, dist = nearest_code(z, e, chunk_elems=chunk)
    ref_idx, ref_d = brute_nearest(z, e)
    assert torch.equal(codes, ref_idx)  # float64: random distances never tie to rounding
    torch.testing.assert_close(dist, ref_d, rtol=1e-7, atol=1e-9 * scale**2)


@given(
    lead=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    d=st.integers(1, 6),
    m=st.integers(1, 12),
    scale=st.sampled_from([1e-2, 1.0, 1e2]),
    seed=st.integers(0, 2**16),
)
def test_forward_on_any_leading_shape(lead, d, m, scale, seed):
    g = torch.Generator().manual_seed(seed)
    vq = VectorQuantizer(m, d, init_range=scale).double()
    z = torch.randn(*lead, d, generator=g, dtype=torch.float64) * scale
    z_q, codes, losses = vq(z)
    assert codes.shape == tuple(lead) and z_q.shape == z.shape
    assert torch.equal(codes.reshape(-1), brute_nearest(z.reshape(-1, d), vq.codebook.detach())[0])
    assert torch.equal(z_q, vq.lookup(codes))
    torch.testing.assert_close(losses["codebook"], (z - z_q).square().mean())
    assert 1 - 1e-9 <= float(vq.perplexity) <= m + 1e-9


def test_ties_go_to_the_lowest_index():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # rows 2, 3 duplicate 0, 1
    z = torch.tensor([[2.0, 0.1], [0.1, 3.0], [0.5, 0.5]])  # last one: all four at equal distance
    codes, _ = nearest_code(z, e, chunk_elems=1)
    assert codes.tolist() == [0, 1, 0]
    assert codes.tolist() == brute_nearest(z, e)[0].tolist()


def test_quantising_the_codebook_is_idempotent():
    torch.manual_seed(0)
    vq = VectorQuantizer(32, 5, init_range=1.0)
    z_q, codes, _ = vq(vq.codebook.detach().clone().unsqueeze(0))
    assert codes[0].tolist() == list(range(32))
    assert torch.equal(z_q[0], vq.codebook.detach())


def test_forward_codes_match_brute_force_and_lookup():
    torch.manual_seed(1)
    vq = VectorQuantizer(17, 6, init_range=1.0).double()
    z = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    z_q, codes, _ = vq(z)
    assert codes.shape == (3, 4, 5) and codes.dtype == torch.long
    ref, _ = brute_nearest(z.reshape(-1, 6), vq.codebook.detach())
    assert torch.equal(codes.reshape(-1), ref)
    assert torch.equal(z_q, vq.lookup(codes))
    assert torch.equal(vq.quantize(z), codes)


def test_search_stays_fp32_under_bf16_autocast():
    torch.manual_seed(2)
    vq = VectorQuantizer(64, 16, init_range=1.0)
    z = torch.randn(512, 16) * 30  # large norms: bf16 expanded distances would mis-rank
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, codes_ac, _ = vq(z)
    _, codes, _ = vq(z)
    assert torch.equal(codes_ac, codes)


# ---------------------------------------------------------------- gradients
def _fixed_case(seed=0, m=6, d=4, shape=(2, 5)):
    g = torch.Generator().manual_seed(seed)
    vq = VectorQuantizer(m, d, init_range=1.0).double()
    with torch.no_grad():
        vq.weight.copy_(torch.randn(m, d, generator=g, dtype=torch.float64) * 2)
    z = torch.randn(*shape, d, generator=g, dtype=torch.float64).requires_grad_()
    return vq, z


def test_straight_through_gradient_reaches_the_encoder_unchanged():
    vq, z = _fixed_case()
    z_q, codes, _ = vq(z)
    assert torch.equal(z_q.detach(), vq.codebook.detach()[codes])  # forward value = the codes
    w = torch.randn_like(z)
    gz, ge = torch.autograd.grad((w * z_q).sum(), [z, vq.weight], allow_unused=True)
    assert torch.equal(gz, w)  # d z_q / d z = I
    assert ge is None or torch.count_nonzero(ge) == 0  # the decoder's gradient skips the codebook


def test_codebook_loss_moves_only_the_codebook_and_commitment_only_the_encoder():
    vq, z = _fixed_case(seed=3)
    _, codes, losses = vq(z)
    e = vq.codebook.detach()
    zd, flat = z.detach(), codes.reshape(-1)
    numel = z.numel()
    gz, ge = torch.autograd.grad(
        losses["codebook"], [z, vq.weight], allow_unused=True, retain_graph=True
    )
    assert gz is None or torch.count_nonzero(gz) == 0
    expected = torch.zeros_like(e)  # 2 (e_k - z_i) / numel summed over cells assigned to k
    for zi, k in zip(zd.reshape(-1, e.shape[1]), flat):
        expected[k] += 2 * (e[k] - zi) / numel
    torch.testing.assert_close(ge, expected)
    unused = torch.ones(e.shape[0], dtype=torch.bool)
    unused[flat] = False
    assert unused.any() and torch.count_nonzero(ge[unused]) == 0  # exactly zero

    gz, ge = torch.autograd.grad(
        losses["commitment"], [z, vq.weight], allow_unused=True, retain_graph=True
    )
    assert ge is None or torch.count_nonzero(ge) == 0
    torch.testing.assert_close(gz, 2 * (zd - e[codes]) / numel)
    # the weighted total: beta * commitment + codebook
    total = torch.autograd.grad(losses["loss"], z)[0]
    torch.testing.assert_close(total, 0.25 * 2 * (zd - e[codes]) / numel)


def test_sg_split_identity():
    """beta*|sg z - e|^2 + beta*|z - sg e|^2 has the gradient of beta*|z - e|^2, twice its value."""
    vq, z = _fixed_case(seed=4)
    vq.commitment = vq.codebook_weight = 1.0
    _, codes, losses = vq(z)
    direct = (z - vq.weight[codes]).square().mean()
    g1 = torch.autograd.grad(losses["loss"], [z, vq.weight], retain_graph=True)
    g2 = torch.autograd.grad(direct, [z, vq.weight])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(losses["loss"], 2 * direct)


# ---------------------------------------------------------------- EMA
def test_ema_matches_the_formula_on_a_hand_computed_case():
    vq = VectorQuantizer(3, 2, ema_decay=0.5, eps=0.0).double()
    with torch.no_grad():
        vq.weight.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
        vq.ema_sum.copy_(vq.weight)
    z = torch.tensor([[1.0, 1.0], [3.0, -1.0], [9.0, 1.0]], dtype=torch.float64)
    vq(z)
    # codes 0, 0, 1: n = (2, 1, 0), s = ((4, 0), (9, 1), (0, 0)); N = (1.5, 1, 0.5)
    # M = ((2, 0), (9.5, 0.5), (0, 5)); e = M / N
    torch.testing.assert_close(vq.ema_count, torch.tensor([1.5, 1.0, 0.5], dtype=torch.float64))
    expected = torch.tensor([[2 / 1.5, 0.0], [9.5, 0.5], [0.0, 10.0]], dtype=torch.float64)
    torch.testing.assert_close(vq.codebook, expected)


@pytest.mark.parametrize("decay", [0.0, 0.9])
def test_ema_matches_reference_loop_and_never_nan(decay):
    torch.manual_seed(6)
    vq = VectorQuantizer(10, 3, ema_decay=decay, eps=1e-5, init_range=1.0).double()
    e0, n0, m0 = vq.codebook.clone(), vq.ema_count.clone(), vq.ema_sum.clone()
    batches = [torch.randn(20, 3, dtype=torch.float64) for _ in range(5)]
    for z in batches:
        vq(z)
    e, N, M = ema_reference(e0, n0, m0, batches, decay, 1e-5)
    torch.testing.assert_close(vq.codebook, e)
    torch.testing.assert_close(vq.ema_count, N)
    assert torch.isfinite(vq.codebook).all()
    assert not vq.weight.requires_grad and "ema_sum" in vq.state_dict()


def test_ema_decay_zero_sets_used_codes_to_their_means():
    vq = VectorQuantizer(4, 2, ema_decay=0.0, eps=1e-9).double()
    with torch.no_grad():
        vq.weight.copy_(torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0], [50.0, 50.0]]))
    z = torch.tensor([[0.5, 0.0], [-0.5, 1.0], [5.0, 4.0], [-4.0, 6.0]], dtype=torch.float64)
    vq(z)
    torch.testing.assert_close(
        vq.codebook[:3], torch.tensor([[0.0, 0.5], [5, 4], [-4, 6.0]]).double()
    )
    assert torch.isfinite(vq.codebook).all()  # the unused code: 0 (smoothing), not NaN
    assert vq.codebook[3].abs().max() < 1e-6


def test_eval_mode_never_updates():
    vq = VectorQuantizer(8, 3, ema_decay=0.9, dead_code_threshold=1.0).eval()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.randn(50, 3))
    for k, v in vq.state_dict().items():
        assert torch.equal(v, before[k]), k


# ---------------------------------------------------------------- dead codes, usage
@pytest.mark.parametrize("ema", [None, 0.9])
def test_dead_codes_are_restarted_from_the_batch(ema):
    torch.manual_seed(7)
    vq = VectorQuantizer(16, 4, ema_decay=ema, dead_code_threshold=1.0, init_range=0.05)
    z = torch.randn(256, 4) + 20.0  # far from every code: one code takes all, 15 are dead
    vq(z)
    cb = vq.codebook.detach()
    in_batch = (cb[:, None, :] == z[None]).all(-1).any(1)
    assert in_batch.sum() >= 15  # restarted codes are batch vectors
    _, codes, _ = vq(z)
    assert code_statistics(codes, 16)["usage"] > 0.5


def test_fresh_codebook_on_clustered_data_reaches_full_usage():
    torch.manual_seed(8)
    centres = torch.randn(16, 8) * 10
    vq = VectorQuantizer(16, 8, ema_decay=0.8, dead_code_threshold=1.0, usage_decay=0.8)
    for _ in range(60):
        z = centres[torch.randint(16, (512,))] + 0.1 * torch.randn(512, 8)
        vq(z)
    vq.eval()
    z = centres.repeat_interleave(10, 0) + 0.1 * torch.randn(160, 8)
    _, codes, _ = vq(z)
    assert vq.stats["usage"] == 1.0 and vq.usage == 1.0
    assert (
        vq.stats["perplexity"] > 12 and vq.perplexity == vq.stats["perplexity"]
    )  # near 16: at most a cluster or two shared or split
    assert len(set(codes.tolist())) == 16


def test_kmeans_init_uses_every_code_on_clustered_data():
    torch.manual_seed(9)
    centres = torch.randn(8, 3) * 10
    z = centres.repeat_interleave(32, 0) + 0.05 * torch.randn(256, 3)
    vq = VectorQuantizer(8, 3, init="kmeans", kmeans_iters=20)
    vq(z[torch.randperm(256)])
    assert bool(vq.initialised)
    assert vq.stats["usage"] == 1.0


def test_statistics_formula():
    s = code_statistics(torch.tensor([0, 0, 1, 3]), 4)
    p = torch.tensor([0.5, 0.25, 0.25])
    torch.testing.assert_close(s["perplexity"], torch.exp(-(p * p.log()).sum()))
    assert float(s["usage"]) == 0.75


# ---------------------------------------------------------------- memory bound
def test_search_never_materialises_the_full_distance_matrix():
    torch.manual_seed(10)
    n, m, d = 32768, 4096, 32  # the full (n, m) fp32 matrix alone would be 512 MiB
    vq = VectorQuantizer(m, d, chunk_elems=1 << 21)  # 8 MiB of distances per chunk
    z = torch.randn(n, d, requires_grad=True)

    def step():
        z_q, _, losses = vq(z)
        (z_q.sum() + losses["loss"]).backward()

    peak = peak_extra_mib(step)
    if peak is None:
        pytest.skip("no /proc or glibc: cannot measure resident memory")
    # z_q, gradients and temporaries are ~4 MiB each; 512 MiB would mean the full matrix
    assert peak < 128, f"peak extra memory {peak:.0f} MiB"


# ---------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    vq = VectorQuantizer(8, 4)
    with pytest.raises(ValueError, match="z"):
        vq(torch.randn(2, 3, 5))
    with pytest.raises(TypeError, match="z"):
        vq(torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="z"):
        vq([[0.0] * 4])
    with pytest.raises(ValueError, match="codes"):
        vq.lookup(torch.tensor([0, 8]))
    with pytest.raises(ValueError, match="codes"):
        vq.lookup(torch.tensor([-1]))
    with pytest.raises(TypeError, match="codes"):
        vq.lookup(torch.tensor([0.0]))
    for kwargs, name in [
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"commitment": -1}, "commitment"),
        ({"init": "normal"}, "init"),
        ({"dead_code_threshold": 0}, "dead_code_threshold"),
    ]:
        with pytest.raises(ValueError, match=name):
            VectorQuantizer(8, 4, **kwargs)
    with pytest.raises(TypeError, match="num_codes"):
        VectorQuantizer(8.0, 4)
    with pytest.raises(ValueError, match="codebook"):
        nearest_code(torch.randn(3, 4), torch.randn(5, 3))


def test_matches_vector_quantize_pytorch_codes():
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(11)
    peer = vqp.VectorQuantize(dim=8, codebook_size=32, decay=0.99)
    peer.eval()
    z = torch.randn(2, 50, 8)
    _, idx, _ = peer(z)
    ours = VectorQuantizer(32, 8)
    with torch.no_grad():
        ours.weight.copy_(peer.codebook)
    assert torch.equal(ours.quantize(z), idx)


# ---------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_keep_identical_codebooks(tmp_path):
    script = Path(__file__).with_name("ddp_vq_script.py")
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        str(torchrun),
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "--master_addr=127.0.0.1",
        str(script),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = load_safetensors(tmp_path / "rank0.safetensors")
    r1 = load_safetensors(tmp_path / "rank1.safetensors")
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    # the EMA codebook equals one process seeing both ranks' batches
    from .ddp_vq_script import STEPS, D, M, batch

    torch.manual_seed(0)
    e0 = torch.empty(M, D).uniform_(-1.0, 1.0)
    batches = [torch.cat([batch(0, t), batch(1, t)]) for t in range(STEPS)]
    e, n, _ = ema_reference(e0, torch.ones(M), e0, batches, 0.8, 1e-5)
    torch.testing.assert_close(r0["ema"].double(), e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r0["ema_count"].double(), n, rtol=1e-5, atol=1e-6)
    torch.empty(M, D).uniform_(-5.0, 5.0)  # the second quantiser's draw ...
    restart0 = torch.empty(M, D).uniform_(-5.0, 5.0)  # ... and the third's (the same law)
    assert not torch.allclose(r0["grad"], restart0)  # dead codes were restarted (data ~ N(0, .25))


def test_restarted_codes_follow_the_ema_formula_one_step_later():
    """After a restart the EMA state of a restarted code is (count 1, sum = its new value), so
    the next EMA step moves it from there: w = (0.99 s + 0.01 S) / smoothed(0.99 + 0.01 n).
    A restart that forgets the EMA sum pulls the code back towards its stale sum; a grace value
    of 0 restarts it again at once. Both break this equality (decay 0.99, as users run it)."""
    torch.manual_seed(0)
    k, d, thr = 8, 2, 0.5
    vq = VectorQuantizer(k, d, ema_decay=0.99, dead_code_threshold=thr, init_range=0.05)
    vq.train()
    # every point sits near code 0's side: most codes are unused and restarted in step 1
    x1 = torch.randn(64, d, dtype=torch.float32) * 0.1 + 3.0
    w0 = vq.weight.detach().clone()
    vq(x1)
    w1 = vq.weight.detach().clone()
    restarted = ~torch.isclose(w1, w0).all(1)
    restarted &= torch.isin(w1, x1).all(1)  # moved onto a batch point
    assert int(restarted.sum()) >= 3
    sum1, cnt1 = vq.ema_sum.detach().clone(), vq.ema_count.detach().clone()
    assert torch.equal(sum1[restarted], w1[restarted]) and bool((cnt1[restarted] == 1).all())
    # step 2: points exactly at every code, so every code is used (no restart in step 2)
    x2 = torch.cat([w1, w1[restarted] + 1e-3])
    codes = torch.cdist(x2.double(), w1.double()).argmin(1)
    n = torch.bincount(codes, minlength=k).double()
    s = torch.zeros(k, d, dtype=torch.float64).index_add_(0, codes, x2.double())
    cnt2 = 0.99 * cnt1.double() + 0.01 * n
    sum2 = 0.99 * sum1.double() + 0.01 * s
    total = cnt2.sum()
    smoothed = (cnt2 + vq.eps) / (total + k * vq.eps) * total
    want = sum2 / smoothed[:, None]
    vq(x2)
    torch.testing.assert_close(vq.weight.detach().double(), want, rtol=1e-5, atol=1e-6)
    # the restarted codes stayed where their data is (near 3), not back near the origin
    assert bool((vq.weight.detach()[restarted] > 2).all())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_is_refused_before_the_codebook_changes(bad):
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 3, ema_decay=0.99, dead_code_threshold=1.0).train()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    z = torch.randn(4, 5, 3)
    z[1, 2, 0] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        vq(z)
    for k, v in vq.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="meta"):
        vq(torch.empty(2, 3, device="meta"))
