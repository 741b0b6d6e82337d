"""Dense pattern masks: counts, symmetry, causality, unions (design note §7.1)."""

from __future__ import annotations

import pytest
import torch

from kexue.attention.patterns import head_pattern_masks, pattern_mask, resolve_params


def test_counts_interior_rows():
    n = 64
    assert pattern_mask("local", n, window=3)[20].sum() == 7
    assert pattern_mask("local", n, window=3, causal=True)[20].sum() == 4
    assert pattern_mask("atrous", n, rate=4)[20].sum() == n // 4
    sp = pattern_mask("sparse", n, rate=4)[30]
    assert sp.sum() == (2 * 4 - 1) + n // 4 - 1  # |d| <= 3 plus multiples of 4, self once
    assert pattern_mask("full", n).all()


def test_symmetry_and_causal():
    for kind, p in [("local", {"window": 2}), ("atrous", {"rate": 3}), ("sparse", {"rate": 3})]:
        m = pattern_mask(kind, 30, **p)
        assert torch.equal(m, m.T)
        c = pattern_mask(kind, 30, causal=True, **p)
        assert torch.equal(c, m & torch.ones(30, 30, dtype=torch.bool).tril())
        assert c.diagonal().all()


def test_sparse_is_union():
    for r in (2, 3, 5):
        u = pattern_mask("local", 40, window=r - 1) | pattern_mask("atrous", 40, rate=r)
        assert torch.equal(pattern_mask("sparse", 40, rate=r), u)


def test_two_layers_connect_everything():
    m = pattern_mask("sparse", 50, rate=5).float()
    assert ((m @ m) > 0).all()


def test_limits_equal_full():
    assert pattern_mask("local", 17, window=16).all()
    assert pattern_mask("atrous", 17, rate=1).all()


def test_strided_fixed_heads():
    hm = head_pattern_masks("strided", 20, 4, stride=4, causal=True)
    assert torch.equal(hm[0], pattern_mask("local", 20, window=3, causal=True))
    assert torch.equal(hm[3], pattern_mask("atrous", 20, rate=4, causal=True))
    fx = head_pattern_masks("fixed", 12, 3, stride=4, summary=1)
    assert fx[0][5].nonzero().flatten().tolist() == [4, 5, 6, 7]  # same block
    assert fx[2][0].nonzero().flatten().tolist() == [3, 7, 11]  # summary columns


def test_bad_params():
    with pytest.raises(ValueError, match="kind"):
        resolve_params("dilated")
    with pytest.raises(ValueError, match="window"):
        resolve_params("local")
    with pytest.raises(ValueError, match="rate"):
        resolve_params("sparse", rate=1)
    with pytest.raises(ValueError, match="summary"):
        resolve_params("fixed", stride=2, summary=3)


def test_pattern_picture_marks_both_parts_and_draws(tmp_path):
    from kexue.attention.patterns import pattern_mask, pattern_picture
    from kexue.report.plots import mask_images

    img = pattern_picture("fixed", 12, stride=4, summary=1, causal=True)
    a1 = pattern_mask("fixed", 12, stride=4, summary=1, causal=True, part=0)
    a2 = pattern_mask("fixed", 12, stride=4, summary=1, causal=True, part=1)
    assert torch.equal(img == 1, a1) and torch.equal(img == 2, a2 & ~a1)
    assert torch.equal(img == 0, ~(a1 | a2))
    mask_images([(img, "fixed")], tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0
