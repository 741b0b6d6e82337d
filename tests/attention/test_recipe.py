"""The equal-time char-LM recipe: budget, stopping, curves, determinism, bad input."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from kexue.attention.lm import CharLM
from kexue.attention.recipe import BudgetSetup, CharCorpus, equal_time_runs, train_char_lm_budget
from kexue.data import Vocab


def _corpus(n: int = 6000) -> CharCorpus:
    # a period-7 stream over 8 symbols: learnable from context, uniform bpc log2(8 + 2) otherwise
    text = "".join("abcdefgh"[i % 7 if i % 13 else 7] for i in range(n))
    vocab = Vocab.build([text])
    ids = torch.tensor([vocab.index[c] for c in text])
    return CharCorpus(vocab, ids[: n // 2], ids[n // 2 : 3 * n // 4], ids[3 * n // 4 :])


SETUP = BudgetSetup(
    seq_len=32, dim=16, heads=2, layers=1, window=4, rate=4, batch_size=4, lr=3e-3,
    budget_s=0.3, eval_every_s=0.1, eval_windows=4, clock="cpu", warmup_steps=5,
)  # fmt: skip


def test_budget_run_stops_at_the_budget():
    r = train_char_lm_budget(_corpus(), "local", SETUP, progress=False)
    assert r.train_s >= SETUP.budget_s
    # the loop stops at the first step past the budget: the overshoot is under one step
    assert r.train_s - SETUP.budget_s < max(
        t1 - t0 for (t0, _, _), (t1, _, _) in zip(r.curve, r.curve[1:])
    )
    assert r.tokens == r.steps * SETUP.batch_size * SETUP.seq_len
    secs, toks, _ = zip(*r.curve, strict=True)
    assert secs[0] == 0 and toks[0] == 0 and toks[-1] == r.tokens
    assert list(secs) == sorted(secs) and list(toks) == sorted(toks)


def test_budget_run_learns():
    c = _corpus()
    r = train_char_lm_budget(
        c, "sparse", replace(SETUP, budget_s=1e9, max_steps=80), progress=False
    )
    assert r.steps == 80
    # untrained ~ log2(vocab); 80 steps on the periodic stream get far below it
    assert r.curve[0][2] > math.log2(len(c.vocab)) - 1.0
    assert r.test_bpc < r.curve[0][2] - 1.5


def test_step_cap_gives_bit_identical_runs_and_same_start_across_patterns():
    c = _corpus()
    capped = replace(SETUP, budget_s=1e9, max_steps=5)
    a = train_char_lm_budget(c, "sparse", capped, progress=False)
    b = train_char_lm_budget(c, "sparse", capped, progress=False)
    assert a.steps == b.steps == 5 and a.test_bpc == b.test_bpc and a.curve[-1][2] == b.curve[-1][2]
    runs = equal_time_runs(c, ("full", "local"), (0, 1), capped, progress=False)
    assert [r.seed for r in runs["full"]] == [0, 1]
    assert runs["full"][0].curve[0][2] != runs["full"][1].curve[0][2]  # seeds differ


@pytest.mark.parametrize(
    "field, value, match",
    [("budget_s", 0.0, "budget_s"), ("clock", "gpu", "clock"), ("seq_len", 10_000, "seq_len")],
)
def test_bad_setup_is_named(field, value, match):
    bad = replace(SETUP, **{field: value})
    with pytest.raises(ValueError, match=match):
        train_char_lm_budget(_corpus(), "full", bad, progress=False)


@pytest.mark.parametrize("pattern", ["strided", "fixed"])
def test_char_lm_takes_sparse_transformer_patterns_and_stays_causal(pattern):
    torch.manual_seed(0)
    m = CharLM(
        vocab_size=11, max_len=24, dim=16, num_heads=2, num_layers=2, pattern=pattern, rate=4
    )
    m.eval()
    x = torch.randint(0, 11, (2, 24))
    y = x.clone()
    y[:, 15:] = (y[:, 15:] + 1) % 11  # change the future only
    with torch.no_grad():
        assert torch.allclose(m(x)[:, :15], m(y)[:, :15], atol=1e-6)
        assert not torch.allclose(m(x)[:, 15:], m(y)[:, 15:])
