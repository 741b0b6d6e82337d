r"""Batched beam search (and greedy decoding) for :class:`kexue.seq2seq.Seq2Seq`.

Each example keeps ``k`` alive prefixes and a pool of its ``k`` best finished hypotheses, ranked by

.. math::

    \mathrm{rank}(y) = \frac{\log p(y_1..y_L, \mathrm{EOS}\mid x)}{(L+1)^{\alpha}}

(``alpha = length_penalty``; ``L + 1`` counts EOS; ``alpha = 0`` ranks by raw log-probability).
Every step runs **one** decoder forward pass for all alive rows of all unfinished examples (finished
examples are dropped from the batch), takes the ``2k`` best extensions per example, moves those
ending in EOS into the pool (frozen: never extended again) and keeps the ``k`` best others.

Stopping (exact, per example): the pool holds ``k`` hypotheses and no alive prefix can still beat
the worst of them. Log-probabilities only fall as a prefix grows, so an alive prefix with sum
:math:`s \le 0` after ``L`` tokens can reach at most :math:`s / (L_{\max}+1)^{\alpha}` for
``alpha > 0`` and :math:`s / (L+1)^{\alpha}` for ``alpha <= 0`` (stopping when the top hypothesis
ends is wrong under a length penalty: joeynmt #148). With ``k >= |V|^{max_len}`` nothing is
ever pruned and the result is the exhaustive optimum (tested).

``max_len`` caps the output tokens (EOS excluded): at step ``max_len`` only EOS is allowed, so every
hypothesis ends with EOS and its score equals :meth:`Seq2Seq.score`. ``min_len`` bans EOS before
``min_len`` tokens. PAD and BOS are never generated. ``beam_size=1`` is greedy decoding.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from kexue.core.checks import check_positive_int

__all__ = ["ban_repeated_ngrams", "beam_search", "greedy_search"]


def _check_common(model: Any, src: torch.Tensor, max_len: int, min_len: int) -> None:
    if not hasattr(model, "init_state") or not hasattr(model, "step"):
        raise TypeError(f"model must provide init_state/step, got {type(model).__name__}")
    if not isinstance(src, torch.Tensor):
        raise TypeError(f"src must be a torch.Tensor, got {type(src).__name__}")
    check_positive_int(max_len, "max_len")
    check_positive_int(min_len, "min_len", 0)
    if min_len > max_len:
        raise ValueError(f"min_len={min_len} must be <= max_len={max_len}")


def _restrict(logp: torch.Tensor, t: int, cfg: Any, min_len: int, max_len: int) -> torch.Tensor:
    """Ban PAD/BOS always, EOS before ``min_len`` tokens, everything but EOS at ``max_len``."""
    logp = logp.clone()
    logp[:, [cfg.pad_id, cfg.bos_id]] = -math.inf
    if t < min_len:
        logp[:, cfg.eos_id] = -math.inf
    if t >= max_len:
        eos = logp[:, cfg.eos_id].clone()
        logp.fill_(-math.inf)
        logp[:, cfg.eos_id] = eos
    return logp


def ban_repeated_ngrams(logp: torch.Tensor, prefix: torch.Tensor, n: int) -> torch.Tensor:
    """Set to ``-inf`` every next token that would repeat an ``n``-gram of its row's prefix.

    Args:
        logp: ``(r, v)`` next-token log-probabilities, one row per prefix.
        prefix: ``(r, t)`` tokens generated so far (no BOS).
        n: n-gram size (0: nothing banned).

    Returns:
        ``logp`` with :math:`y` banned in row ``i`` when ``prefix[i, -(n-1):] + [y]`` already
        occurs in ``prefix[i]`` (as HF ``no_repeat_ngram_size``).
    """
    t = prefix.shape[1]
    if n <= 0 or t < n:
        return logp
    if n == 1:
        return logp.scatter(1, prefix, -math.inf)
    grams = prefix.unfold(1, n - 1, 1)[:, : t - n + 1]  # (r, t-n+1, n-1): heads of past n-grams
    hit = (grams == prefix[:, None, t - n + 1 :]).all(-1)  # (r, t-n+1)
    if not bool(hit.any()):
        return logp
    nxt = prefix[:, n - 1 :]  # the token that followed each head
    rows, cols = hit.nonzero(as_tuple=True)
    logp = logp.clone()
    logp[rows, nxt[rows, cols]] = -math.inf
    return logp


def _pad_output(rows: list[torch.Tensor], device) -> torch.Tensor:
    n = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), n), -1, dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


@torch.no_grad()
def greedy_search(
    model: Any,
    src: torch.Tensor,
    src_mask: torch.Tensor | None = None,
    *,
    max_len: int,
    min_len: int = 0,
    no_repeat_ngram: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding: the arg-max token at every step, one forward per step for the batch.

    Args:
        model: a :class:`Seq2Seq` (anything with ``config``, ``init_state``, ``step``).
        src: ``(b, s)`` source ids.
        src_mask: ``(b, s)`` bool (default ``src != pad_id``).
        max_len: most output tokens (EOS excluded).
        min_len: fewest output tokens.
        no_repeat_ngram: ban tokens that would repeat an n-gram of this size (0: off); see
            :func:`ban_repeated_ngrams`.

    Returns:
        ``tokens (b, n)`` int64 without BOS/EOS, padded with -1; ``scores (b,)`` summed
        log-probabilities including EOS.
    """
    _check_common(model, src, max_len, min_len)
    check_positive_int(no_repeat_ngram, "no_repeat_ngram", 0)
    cfg = model.config
    state = model.init_state(src, src_mask)
    b = src.shape[0]
    alive = torch.arange(b, device=src.device)  # example id of every batch row
    tokens = torch.full((b, max_len + 1), -1, dtype=torch.long, device=src.device)
    scores = torch.zeros(b, device=src.device)
    last = torch.full((b,), cfg.bos_id, dtype=torch.long, device=src.device)
    for t in range(max_len + 1):
        logp = _restrict(model.step(state, last), t, cfg, min_len, max_len)
        logp = ban_repeated_ngrams(logp, tokens[alive, :t], no_repeat_ngram)
        best, tok = logp.max(-1)
        scores[alive] += best
        tokens[alive, t] = tok
        keep = tok != cfg.eos_id
        if not bool(keep.any()):
            break
        if not bool(keep.all()):
            idx = keep.nonzero()[:, 0]
            state.reorder(idx)
            alive, tok = alive[idx], tok[idx]
        last = tok
    rows = [r[(r >= 0) & (r != cfg.eos_id)] for r in tokens]
    return _pad_output(rows, src.device), scores


@torch.no_grad()
def beam_search(
    model: Any,
    src: torch.Tensor,
    src_mask: torch.Tensor | None = None,
    *,
    beam_size: int,
    max_len: int,
    length_penalty: float = 1.0,
    min_len: int = 0,
    no_repeat_ngram: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Batched beam search over examples and beams (see the module docstring for the rules).

    Args:
        model: a :class:`Seq2Seq` (``config`` with ``pad_id/bos_id/eos_id``, ``init_state``,
            ``step``) in eval mode. Its state's ``reorder(rows)`` keeps batch rows; a state may
            also offer ``reorder_beams(rows)``, called when rows only move among the beams of
            each example, which may leave the per-source rows (all copies) where they are.
        src: ``(b, s)`` source ids.
        src_mask: ``(b, s)`` bool (default ``src != pad_id``).
        beam_size: ``k`` (1: greedy).
        max_len: most output tokens, EOS excluded.
        length_penalty: ``alpha`` in :math:`\log p / (L+1)^\alpha` (0: raw log-probability).
        min_len: fewest output tokens.
        no_repeat_ngram: ban tokens that would repeat an n-gram of this size in their beam
            (0: off); see :func:`ban_repeated_ngrams`. Scores stay model log-probabilities.

    Returns:
        ``tokens (b, n)`` int64 best hypothesis per example without BOS/EOS, padded with -1 (an
        empty row is an empty output); ``scores (b,)`` its summed log-probability (EOS included,
        not length-normalised: equals ``model.score``).

    Raises:
        ValueError / TypeError: bad sizes or arguments.
    """
    check_positive_int(beam_size, "beam_size")
    _check_common(model, src, max_len, min_len)
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, int | float):
        raise TypeError(f"length_penalty must be a number, got {length_penalty!r}")
    check_positive_int(no_repeat_ngram, "no_repeat_ngram", 0)
    if beam_size == 1:
        return greedy_search(
            model, src, src_mask, max_len=max_len, min_len=min_len, no_repeat_ngram=no_repeat_ngram
        )
    cfg, k, dev = model.config, beam_size, src.device
    b, n_max = src.shape[0], max_len + 1
    state = model.init_state(src, src_mask, repeat=k)
    neg = -math.inf

    # Alive prefixes of the unfinished examples ``ex`` (b_a of them): tokens, summed log-probs.
    ex = torch.arange(b, device=dev)
    alive_tok = torch.empty(b, k, 0, dtype=torch.long, device=dev)
    alive_sc = torch.full((b, k), neg, device=dev)
    alive_sc[:, 0] = 0.0  # all beams start identical: only one may expand at step 0
    # Finished pool per example: ranking key, raw score, tokens (EOS included), -1 padded.
    pool_key = torch.full((b, k), neg, device=dev)
    pool_sc = torch.full((b, k), neg, device=dev)
    pool_tok = torch.full((b, k, n_max), -1, dtype=torch.long, device=dev)
    last = torch.full((b * k,), cfg.bos_id, dtype=torch.long, device=dev)

    def norm(x: torch.Tensor, length: int | float) -> torch.Tensor:
        return x / float(length) ** length_penalty

    for t in range(n_max):
        ba = ex.shape[0]
        logp = _restrict(model.step(state, last), t, cfg, min_len, max_len)  # (ba*k, v)
        logp = ban_repeated_ngrams(logp, alive_tok.reshape(ba * k, t), no_repeat_ngram)
        v = logp.shape[-1]
        cand = (alive_sc[:, :, None] + logp.view(ba, k, v)).view(ba, k * v)
        top_sc, top_ix = cand.topk(min(2 * k, k * v), dim=-1, sorted=True)  # (ba, 2k)
        beam_ix, tok_ix = top_ix // v, top_ix % v
        is_eos = (tok_ix == cfg.eos_id) & torch.isfinite(top_sc)

        # Finished candidates join the pool (frozen); keep the k best by ranking key.
        new_key = torch.where(is_eos, norm(top_sc, t + 1), torch.full_like(top_sc, neg))
        prefix = alive_tok.gather(1, beam_ix[:, :, None].expand(-1, -1, t))  # (ba, 2k, t)
        new_tok = torch.cat(
            [prefix, tok_ix[:, :, None], torch.full((ba, top_sc.shape[1], n_max - t - 1), -1,
             dtype=torch.long, device=dev)], 2,
        )  # fmt: skip
        all_key = torch.cat([pool_key[ex], new_key], 1)
        all_sc = torch.cat([pool_sc[ex], top_sc], 1)
        all_tok = torch.cat([pool_tok[ex], new_tok], 1)
        pk, pi = all_key.topk(k, dim=-1, sorted=True)
        pool_key[ex] = pk
        pool_sc[ex] = all_sc.gather(1, pi)
        pool_tok[ex] = all_tok.gather(1, pi[:, :, None].expand(-1, -1, n_max))

        # The k best non-EOS candidates stay alive (at most k of the 2k end in EOS).
        cont_sc = top_sc.masked_fill(is_eos, neg)
        cs, ci = cont_sc.topk(k, dim=-1, sorted=True)
        src_beam = beam_ix.gather(1, ci)  # (ba, k)
        alive_sc = cs
        alive_tok = torch.cat([prefix.gather(1, ci[:, :, None].expand(-1, -1, t)),
                               tok_ix.gather(1, ci)[:, :, None]], 2)  # fmt: skip

        # Exact per-example stop: k finished and no alive prefix can still overtake the worst.
        bound_len = n_max if length_penalty > 0 else t + 2
        bound = norm(alive_sc.max(-1).values, bound_len)
        full = torch.isfinite(pk[:, -1])
        done = (full & (bound <= pk[:, -1])) | ~torch.isfinite(alive_sc).any(-1)
        if t == n_max - 1 or bool(done.all()):
            break
        keep = (~done).nonzero()[:, 0]
        rows = (keep[:, None] * k + src_beam[keep]).reshape(-1)  # batch rows to carry on
        if len(keep) == ba and hasattr(state, "reorder_beams"):  # optional in the protocol
            state.reorder_beams(rows)  # beams of one example share their source-side rows
        else:
            state.reorder(rows)
        ex, alive_sc, alive_tok = ex[keep], alive_sc[keep], alive_tok[keep]
        last = alive_tok[:, :, -1].reshape(-1)

    best = pool_tok[:, 0]
    rows = [r[(r >= 0) & (r != cfg.eos_id)] for r in best]
    return _pad_output(rows, dev), pool_sc[:, 0]
