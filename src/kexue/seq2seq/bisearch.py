r"""Bidirectional beam search (Su Jianlin's algorithm in 《seq2seq之双向解码》, cached and batched).

State per example: ``B`` L2R prefixes with summed scores :math:`s^l_a` and ``B`` R2L prefixes with
:math:`s^r_g`, all starting from the start token of their direction. At step ``i``:

1. every pair ``(a, g)`` gives next-token distributions :math:`p^l_{a,g}` and :math:`p^r_{g,a}`
   (one decoder pass per direction and prefix, the ``B^2`` pairs only in the small
   cross-direction attention and output layer; Su re-runs the full model on ``B^2`` pairs);
2. averaging over the *other* direction's current prefixes, uniformly:
   :math:`\ell^l_a = \log(\tfrac1B\sum_g p^l_{a,g} + 10^{-6})` (``average="prob"``, Su's) or
   :math:`\tfrac1B\sum_g \log p^l_{a,g}` (``"logprob"``);
3. tokens never generated: PAD, the direction's own start token and ``banned`` (e.g. UNK);
   at step ``max_len`` only the end token (so every output has at most ``max_len`` tokens);
4. each direction keeps its best ``B`` extensions :math:`s + \ell` (stable sort: ties go to the
   lower beam, then the lower token id). Hypotheses that ended are **frozen** (one candidate:
   themselves, same score; Su's current code keeps extending them). A frozen hypothesis keeps
   feeding its end token, so it still serves as context for the other direction.
5. stop rule ``"best_overall"`` (Su's current code): if the best L2R hypothesis has ended and
   :math:`s^l \ge s^r` of the best R2L one, return it; else if the best R2L one has ended and
   :math:`s^r \ge s^l`, return it reversed. ``"best_finished"`` (the 2019-08-08 version): as soon
   as either direction has an ended hypothesis return the best ended one; if both do, the higher
   score, **R2L winning ties**. Scores are raw sums (both directions always took the same number
   of steps).

``beam=1`` is greedy bidirectional decoding (a single pair).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from kexue.core.checks import check_positive_int

__all__ = ["BidirectionalOutput", "bidirectional_beam_search"]

FLOOR = 1e-6


@dataclass
class BidirectionalOutput:
    """Result of :func:`bidirectional_beam_search` (token rows in reading order, padded with -1).

    Attributes:
        tokens: ``(b, n)`` the returned hypothesis (R2L ones reversed), no start/end tokens.
        scores: ``(b,)`` its summed (averaged-distribution) log-score.
        direction: ``(b,)`` int64, 0 = L2R won, 1 = R2L won.
        l2r_tokens: ``(b, n1)`` best L2R hypothesis when the search stopped.
        l2r_scores: ``(b,)``.
        r2l_tokens: ``(b, n2)`` best R2L hypothesis, reversed into reading order.
        r2l_scores: ``(b,)``.
    """

    tokens: torch.Tensor
    scores: torch.Tensor
    direction: torch.Tensor
    l2r_tokens: torch.Tensor
    l2r_scores: torch.Tensor
    r2l_tokens: torch.Tensor
    r2l_scores: torch.Tensor


def _pad_rows(rows: list[list[int]], device) -> torch.Tensor:
    n = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), n), -1, dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def _expand(s, fin, ell, beam):
    """Best ``beam`` of the extensions of every prefix, frozen ones as a single candidate.

    ``s, fin (b, B)``, ``ell (b, B, v)`` -> (scores, source beam, token or v for "stay").
    """
    b, k, v = ell.shape
    cand = (s[:, :, None] + ell).masked_fill(fin[:, :, None], -math.inf)
    stay = torch.where(fin, s, torch.full_like(s, -math.inf))[:, :, None]
    flat = torch.cat([cand, stay], -1).reshape(b, k * (v + 1))
    sc, ix = torch.sort(flat, dim=-1, descending=True, stable=True)
    ix = ix[:, :beam]
    return sc[:, :beam], ix // (v + 1), ix % (v + 1)


@torch.no_grad()
def bidirectional_beam_search(
    model: Any,
    src: torch.Tensor,
    src_mask: torch.Tensor | None = None,
    *,
    beam_size: int = 3,
    max_len: int = 64,
    stop: str = "best_overall",
    average: str = "prob",
    banned: tuple[int, ...] = (),
    min_len: int = 0,
) -> BidirectionalOutput:
    """Su's synchronous bidirectional beam search, batched over examples.

    Args:
        model: a :class:`kexue.seq2seq.BidirectionalSeq2Seq` in eval mode (anything with
            ``config`` (``pad_id/bos_id/eos_id``), ``bi_init(src, src_mask, beam)``,
            ``bi_step(state, tok_l2r, tok_r2l)`` and ``state.reorder(idx_l2r, idx_r2l)``; a state
            may also offer ``reorder_beams`` with the same arguments, called when no example
            was dropped, which may leave the per-source rows where they are).
        src: ``(b, s)`` source ids.
        src_mask: ``(b, s)`` bool (default ``src != pad_id``).
        beam_size: ``B`` prefixes per direction.
        max_len: most output tokens.
        stop: ``"best_overall"`` or ``"best_finished"`` (see the module docstring).
        average: ``"prob"`` (Su's) or ``"logprob"``.
        banned: further ids never generated by either direction (e.g. the UNK id).
        min_len: the end tokens are banned for the first ``min_len`` steps (not in Su's code;
            used to compare decoding cost at a fixed output length).

    Returns:
        A :class:`BidirectionalOutput`.
    """
    check_positive_int(beam_size, "beam_size")
    check_positive_int(max_len, "max_len")
    check_positive_int(min_len, "min_len", 0)
    if min_len > max_len:
        raise ValueError(f"min_len={min_len} must be <= max_len={max_len}")
    if stop not in ("best_overall", "best_finished"):
        raise ValueError(f"stop must be 'best_overall' or 'best_finished', got {stop!r}")
    if average not in ("prob", "logprob"):
        raise ValueError(f"average must be 'prob' or 'logprob', got {average!r}")
    for name in ("bi_init", "bi_step"):
        if not hasattr(model, name):
            raise TypeError(f"model must provide {name}, got {type(model).__name__}")
    if not isinstance(src, torch.Tensor):
        raise TypeError(f"src must be a torch.Tensor, got {type(src).__name__}")
    c, k, dev = model.config, beam_size, src.device
    start = (c.bos_id, c.eos_id)  # L2R starts with BOS and ends with EOS; R2L mirrored
    end = (c.eos_id, c.bos_id)
    b, n_steps = src.shape[0], max_len + 1
    state = model.bi_init(src, src_mask, k)
    ex = torch.arange(b, device=dev)
    s = [torch.full((b, k), -math.inf, device=dev) for _ in range(2)]
    for d in range(2):
        s[d][:, 0] = 0.0  # identical start prefixes: only row 0 expands at step 0
    fin = [torch.zeros(b, k, dtype=torch.bool, device=dev) for _ in range(2)]
    hyp = [torch.full((b, k, n_steps), -1, dtype=torch.long, device=dev) for _ in range(2)]
    last = [torch.full((b * k,), start[d], dtype=torch.long, device=dev) for d in range(2)]
    out: dict[str, list] = {key: [None] * b for key in ("tok", "sc", "dir", "l", "ls", "r", "rs")}

    def text(d: int, row: torch.Tensor) -> list[int]:
        r = [t for t in row.tolist() if t >= 0 and t != end[d]]
        return r if d == 0 else r[::-1]

    for i in range(n_steps):
        logp = model.bi_step(state, last[0], last[1])  # (ba, A, G, v) and (ba, G, A, v)
        v = logp[0].shape[-1]
        rows = []
        for d in range(2):
            if average == "prob":
                ell = torch.log(logp[d].exp().mean(2) + FLOOR)
            else:
                ell = logp[d].mean(2)
            ell[..., [c.pad_id, start[d], *banned]] = -math.inf
            if i < min_len:
                ell[..., end[d]] = -math.inf
            if i == max_len:
                keep = ell[..., end[d]].clone()
                ell = torch.full_like(ell, -math.inf)
                ell[..., end[d]] = keep
            sc, beam_ix, tok = _expand(s[d], fin[d], ell, k)
            stay = tok == v
            tok = torch.where(stay, torch.full_like(tok, end[d]), tok)
            h = hyp[d].gather(1, beam_ix[:, :, None].expand(-1, -1, n_steps)).clone()
            h[:, :, i] = torch.where(stay, h[:, :, i], tok)
            hyp[d], s[d] = h, sc
            fin[d] = fin[d].gather(1, beam_ix) | (tok == end[d])
            last[d] = tok.reshape(-1)
            rows.append(beam_ix + torch.arange(ex.shape[0], device=dev)[:, None] * k)

        # Termination, per example (beam 0 is the best: stable descending sort).
        sl, sr = s[0][:, 0], s[1][:, 0]
        if stop == "best_overall":
            win_l = fin[0][:, 0] & (sl >= sr)
            win_r = ~win_l & fin[1][:, 0] & (sr >= sl)
            pick = [torch.zeros_like(ex), torch.zeros_like(ex)]
        else:  # best_finished: best ended hypothesis of each direction (first in sorted order)
            any_l, any_r = fin[0].any(-1), fin[1].any(-1)
            pick = [fin[0].long().argmax(-1), fin[1].long().argmax(-1)]
            fl = s[0].gather(1, pick[0][:, None])[:, 0]
            fr = s[1].gather(1, pick[1][:, None])[:, 0]
            win_r = any_r & (~any_l | (fr >= fl))
            win_l = any_l & ~win_r
        done = win_l | win_r
        for j in done.nonzero()[:, 0].tolist():
            e, d = int(ex[j]), 0 if bool(win_l[j]) else 1
            out["tok"][e] = text(d, hyp[d][j, pick[d][j]])
            out["sc"][e] = float(s[d][j, pick[d][j]])
            out["dir"][e] = d
            out["l"][e], out["ls"][e] = text(0, hyp[0][j, 0]), float(sl[j])
            out["r"][e], out["rs"][e] = text(1, hyp[1][j, 0]), float(sr[j])
        if bool(done.all()):
            break
        assert i < max_len, "every hypothesis ends at step max_len"
        keep = (~done).nonzero()[:, 0]
        idx = (rows[0][keep].reshape(-1), rows[1][keep].reshape(-1))
        if len(keep) == len(done) and hasattr(state, "reorder_beams"):  # optional in the protocol
            state.reorder_beams(*idx)  # beams of one example share their source-side rows
        else:
            state.reorder(*idx)
        ex = ex[keep]
        for d in range(2):
            s[d], fin[d], hyp[d] = s[d][keep], fin[d][keep], hyp[d][keep]
            last[d] = last[d].view(-1, k)[keep].reshape(-1)

    f = torch.tensor
    return BidirectionalOutput(
        tokens=_pad_rows(out["tok"], dev),
        scores=f(out["sc"], device=dev),
        direction=f(out["dir"], dtype=torch.long, device=dev),
        l2r_tokens=_pad_rows(out["l"], dev),
        l2r_scores=f(out["ls"], device=dev),
        r2l_tokens=_pad_rows(out["r"], dev),
        r2l_scores=f(out["rs"], device=dev),
    )
