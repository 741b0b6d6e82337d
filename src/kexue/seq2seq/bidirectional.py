r"""Synchronous bidirectional decoding: an L2R and an R2L decoder that attend to each other.

Su Jianlin, 《seq2seq之双向解码》 (kexue.fm, 2019-08-09), after Zhou, Zhang & Zong, "Synchronous
Bidirectional Neural Machine Translation" (TACL 2019). One shared encoder; two Transformer decoder
stacks produce :math:`H^{l2r} = [h^{l2r}_1..h^{l2r}_n]` and :math:`H^{r2l}` (index = step, so
:math:`h^{r2l}_j` belongs to the j-th token *from the end*), and at every step each direction
attends to the other direction's states **up to the same step**:

.. math::

    c^{l2r}_n = \mathrm{Attn}(h^{l2r}_n;\ H^{r2l}_{1..n}),\qquad
    c^{r2l}_n = \mathrm{Attn}(h^{r2l}_n;\ H^{l2r}_{1..n}),\qquad
    p(\cdot) = \mathrm{softmax}\big(W\,\mathrm{LN}(h_n + c_n)\big)

(multi-head, causal over step indices; encoder attention is inside the decoder blocks).
Deviations from Su's Keras model: Transformer decoder stacks instead of his LSTMs, and the output
feature is :math:`\mathrm{LN}(h_n + c_n)` instead of a dense layer over :math:`[h_n; c_n;
\mathrm{Attn}(h_n, X)]` (the same information, in residual form). Training
is teacher-forced in both directions: L2R input ``[S, y_1..y_T]`` -> ``[y_1..y_T, E]``, R2L input
``[E, y_T..y_1]`` -> ``[y_T..y_1, S]`` (Su's mirrored start/end ids), and
:math:`\mathcal L = \tfrac12(\mathrm{CE}_{l2r} + \mathrm{CE}_{r2l})`.

**The leak.** In training, L2R step n attends to R2L states that consumed the gold tokens
:math:`y_T..y_{T-n+2}`; from about the middle on, the token L2R must predict is already inside
the other direction's input, so the joint training loss ends below a unidirectional model's. At
test time the other direction feeds its own predictions instead. Mitigation (the paper's, as Su
describes it; he did not implement it): pass ``pseudo=`` (targets decoded by a first model) to
:meth:`BidirectionalSeq2Seq.loss`: each direction then predicts the gold tokens while attending to
the other direction's states over the *pseudo* sequence. The search is
:func:`kexue.seq2seq.bidirectional_beam_search` (:mod:`kexue.seq2seq.bisearch`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from kexue.attention import DecoderCache, TransformerDecoderBlock
from kexue.core.checks import check_shape
from kexue.seq2seq.model import (
    DecodeState,
    Seq2Seq,
    Seq2SeqConfig,
    _check_ids,
    resolve_target_mask,
    target_io,
)

__all__ = ["BiDecodeState", "BidirectionalSeq2Seq", "reverse_padded"]


def reverse_padded(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reverse the valid (left) part of every right-padded row of ``x (b, t)``; padding stays."""
    t = x.shape[1]
    lengths = mask.long().sum(-1, keepdim=True)
    pos = torch.arange(t, device=x.device)[None]
    idx = torch.where(pos < lengths, lengths - 1 - pos, pos)
    return x.gather(1, idx)


class _CrossDirection(nn.Module):
    """Multi-head attention of one direction's states over the other's, then LN(h + c)."""

    def __init__(self, d: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(d, d)
        self.kv_proj = nn.Linear(d, 2 * d)
        self.out_proj = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)
        self.p = dropout

    def forward(self, h: torch.Tensor, other: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        """``h (b, t, d)``, ``other (b, s, d)``, ``ok (b, t, s)`` bool -> ``(b, t, d)``."""
        q = rearrange(self.q_proj(h), "b t (h e) -> b h t e", h=self.num_heads)
        k, v = rearrange(
            self.kv_proj(other), "b s (two h e) -> two b h s e", two=2, h=self.num_heads
        )
        p = self.p if self.training else 0.0
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=ok[:, None], dropout_p=p)
        return self.norm(h + self.drop(self.out_proj(rearrange(o, "b h t e -> b t (h e)"))))


@dataclass
class BiDecodeState:
    """Incremental state of a bidirectional search: ``b`` examples x ``beam`` rows per direction.

    Attributes:
        l2r: decoder state of the ``b*beam`` L2R rows.
        r2l: decoder state of the ``b*beam`` R2L rows.
        beam: rows per example and direction.
        kv_l2r: projected keys/values of the L2R top states for the R2L queries,
            ``(b, beam, h, n, e)`` each, or None before the first step.
        kv_r2l: the same for the R2L states (read by the L2R queries).
    """

    l2r: DecodeState
    r2l: DecodeState
    beam: int
    kv_l2r: list[torch.Tensor] = field(default_factory=list)
    kv_r2l: list[torch.Tensor] = field(default_factory=list)

    def reorder(self, idx_l2r: torch.Tensor, idx_r2l: torch.Tensor, *, source: bool = True) -> None:
        """Keep flat rows ``idx_* (b' * beam,)`` of each direction (beam moves, dropped examples;
        ``source=False``: beam moves only, see :meth:`DecodeState.reorder`)."""
        self.l2r.reorder(idx_l2r, source=source)
        self.r2l.reorder(idx_r2l, source=source)
        for kv, idx in ((self.kv_l2r, idx_l2r), (self.kv_r2l, idx_r2l)):
            for j, x in enumerate(kv):
                flat = rearrange(x, "b k h n e -> (b k) h n e")[idx]
                kv[j] = rearrange(flat, "(b k) h n e -> b k h n e", k=self.beam)

    def reorder_beams(self, idx_l2r: torch.Tensor, idx_r2l: torch.Tensor) -> None:
        """:meth:`reorder` for moves among the beams of each example, none dropped: the
        source-side rows stay (:meth:`DecodeState.reorder_beams`)."""
        self.reorder(idx_l2r, idx_r2l, source=False)


class BidirectionalSeq2Seq(nn.Module):
    """Shared encoder, L2R and R2L Transformer decoders with step-synchronous cross attention.

    Args:
        config: a :class:`Seq2SeqConfig`; R2L starts with ``eos_id`` and ends with ``bos_id``.
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        if not isinstance(config, Seq2SeqConfig):
            raise TypeError(f"config must be a Seq2SeqConfig, got {type(config).__name__}")
        self.config = c = config
        # The L2R half is a plain Seq2Seq (embedding, encoder, decoder, tied output layer).
        self.base = Seq2Seq(config)
        d = c.embed_dim
        self.decoder_r2l = nn.ModuleList(
            TransformerDecoderBlock(d, c.num_heads, ffn_dim=c.ffn_dim, dropout=c.dropout)
            for _ in range(c.decoder_layers)
        )
        self.dec_norm_r2l = nn.LayerNorm(d)
        self.cross_l2r = _CrossDirection(d, c.num_heads, c.dropout)  # L2R queries, R2L keys
        self.cross_r2l = _CrossDirection(d, c.num_heads, c.dropout)

    # ------------------------------------------------------------------ teacher forcing
    def _stack(self, direction: int, inp, memory, memory_mask, inp_mask) -> torch.Tensor:
        base = self.base
        blocks = base.decoder if direction == 0 else self.decoder_r2l
        norm = base.dec_norm if direction == 0 else self.dec_norm_r2l
        x = base._embed(inp)
        for blk in blocks:
            x = blk(x, memory, key_padding_mask=inp_mask, memory_padding_mask=memory_mask)
        return norm(x)

    @staticmethod
    def _step_mask(t: int, ctx_mask: torch.Tensor) -> torch.Tensor:
        """``(b, t, s)``: step ``i`` sees other-direction steps ``j <= i`` that are valid."""
        s = ctx_mask.shape[1]
        causal = torch.ones(t, s, dtype=torch.bool, device=ctx_mask.device).tril()
        return causal[None] & ctx_mask[:, None, :]

    def forward(
        self,
        src: torch.Tensor,
        inp_l2r: torch.Tensor,
        inp_r2l: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        l2r_mask: torch.Tensor | None = None,
        r2l_mask: torch.Tensor | None = None,
        *,
        context: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits of both directions.

        Args:
            src: ``(b, s)`` source ids.
            inp_l2r: ``(b, t)`` L2R inputs ``[S, y_1..]``.
            inp_r2l: ``(b, t)`` R2L inputs ``[E, y_T..]``.
            src_mask: ``(b, s)`` bool (default ``src != pad_id``).
            l2r_mask: ``(b, t)`` bool, True = real input (default all).
            r2l_mask: ``(b, t)`` bool.
            context: ``(ctx_l2r, ctx_r2l, ctx_l2r_mask, ctx_r2l_mask)``, ``(b, t')`` inputs whose
                states serve as the *other* direction's context (pseudo targets); default: the
                inputs themselves.

        Returns:
            ``logits_l2r (b, t, v)``, ``logits_r2l (b, t, v)``; step ``i`` of either sees its own
            inputs ``<= i`` and the other direction's (context) inputs ``<= i`` only.
        """
        memory, src_mask = self.base.encode(src, src_mask)
        sizes = check_shape(inp_l2r, "inp_l2r", (src.shape[0], "t"))
        check_shape(inp_r2l, "inp_r2l", (src.shape[0], "t"), sizes)
        for name, x in (("inp_l2r", inp_l2r), ("inp_r2l", inp_r2l)):
            _check_ids(x, name, self.config.vocab_size)
        ones = torch.ones_like(inp_l2r, dtype=torch.bool)
        l2r_mask = ones if l2r_mask is None else l2r_mask
        r2l_mask = ones if r2l_mask is None else r2l_mask
        h_l = self._stack(0, inp_l2r, memory, src_mask, l2r_mask)
        h_r = self._stack(1, inp_r2l, memory, src_mask, r2l_mask)
        if context is None:
            c_l, c_r, cm_l, cm_r = h_l, h_r, l2r_mask, r2l_mask
        else:
            ctx_l, ctx_r, cm_l, cm_r = context
            c_l = self._stack(0, ctx_l, memory, src_mask, cm_l)
            c_r = self._stack(1, ctx_r, memory, src_mask, cm_r)
        t = inp_l2r.shape[1]
        z_l = self.cross_l2r(h_l, c_r, self._step_mask(t, cm_r))
        z_r = self.cross_r2l(h_r, c_l, self._step_mask(t, cm_l))
        bag = self.base.source_bag(src, src_mask)
        ptr = self.base.pointer_context(src, memory, src_mask)
        return (
            self.base.project(z_l, bag, ptr, prev=inp_l2r, direction=1),
            self.base.project(z_r, bag, ptr, prev=inp_r2l, direction=-1),
        )

    def lists(
        self, tgt: torch.Tensor, tgt_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forcing lists ``inp_l2r, out_l2r, inp_r2l, out_r2l, mask``, each ``(b, t+1)``."""
        c = self.config
        inp_l, out_l, mask = target_io(tgt, tgt_mask, c.bos_id, c.eos_id, c.pad_id)
        rev = reverse_padded(tgt, tgt_mask)
        inp_r, out_r, _ = target_io(rev, tgt_mask, c.eos_id, c.bos_id, c.pad_id)
        return inp_l, out_l, inp_r, out_r, mask

    def loss(
        self,
        src: torch.Tensor,
        tgt: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        tgt_mask: torch.Tensor | None = None,
        *,
        pseudo: torch.Tensor | None = None,
        pseudo_mask: torch.Tensor | None = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        r"""Joint loss :math:`\tfrac12(\mathrm{CE}_{l2r} + \mathrm{CE}_{r2l})` (token means).

        Args:
            src: ``(b, s)`` source ids.
            tgt: ``(b, t)`` right-padded targets without start/end tokens.
            src_mask: ``(b, s)`` bool (default ``src != pad_id``).
            tgt_mask: ``(b, t)`` bool (default ``tgt != pad_id``).
            pseudo: ``(b, t')`` right-padded pseudo targets: the other direction's context is
                computed on these (leak mitigation); gold tokens are still the labels.
            pseudo_mask: ``(b, t')`` bool (default ``pseudo != pad_id``).
            reduction: ``"mean"`` (scalar), or ``"none"``: ``(nll_l2r, nll_r2l)``, each
                ``(b, t+1)`` with zeros at padding (R2L position ``i`` predicts the ``i``-th token
                from the end).
            label_smoothing: as in ``F.cross_entropy``, in both directions.

        Returns:
            The loss, or the two per-position NLL tensors.
        """
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        c = self.config
        sizes = check_shape(src, "src", ("b", "s"))
        tgt_mask = resolve_target_mask(tgt, tgt_mask, c.pad_id, sizes)
        _check_ids(tgt.masked_fill(~tgt_mask, 0), "tgt", c.vocab_size)
        inp_l, out_l, inp_r, out_r, mask = self.lists(tgt, tgt_mask)
        context = None
        if pseudo is not None:
            pm = resolve_target_mask(pseudo, pseudo_mask, c.pad_id, {"b": sizes["b"]})
            pl, _, pr, _, pmask = self.lists(pseudo, pm)
            context = (pl, pr, pmask, pmask)
        logit_l, logit_r = self.forward(src, inp_l, inp_r, src_mask, mask, mask, context=context)
        ls = label_smoothing
        nll_l = F.cross_entropy(
            logit_l.float().transpose(1, 2), out_l, reduction="none", label_smoothing=ls
        )
        nll_r = F.cross_entropy(
            logit_r.float().transpose(1, 2), out_r, reduction="none", label_smoothing=ls
        )
        nll_l, nll_r = nll_l * mask, nll_r * mask
        if reduction == "none":
            return nll_l, nll_r
        n = mask.sum()
        return 0.5 * (nll_l.sum() / n + nll_r.sum() / n)

    # ------------------------------------------------------------------ incremental decoding
    @torch.no_grad()
    def bi_init(
        self, src: torch.Tensor, src_mask: torch.Tensor | None = None, beam: int = 1
    ) -> BiDecodeState:
        """Encode ``src (b, s)`` once; ``beam`` rows per example and direction."""
        memory, mask = self.base.encode(src, src_mask)
        memory, mask = memory.repeat_interleave(beam, 0), mask.repeat_interleave(beam, 0)
        bag = self.base.source_bag(src, self.base.encode_mask(src, src_mask))
        if bag is not None:
            bag = bag.repeat_interleave(beam, 0)
        ptr = self.base.pointer_context(src.repeat_interleave(beam, 0), memory, mask)
        l2r = DecodeState(memory, mask, [DecoderCache() for _ in self.base.decoder], 0, bag, ptr)
        r2l = DecodeState(memory, mask, [DecoderCache() for _ in self.decoder_r2l], 0, bag, ptr)
        return BiDecodeState(l2r, r2l, beam)

    def _top_step(self, direction: int, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        base = self.base
        blocks = base.decoder if direction == 0 else self.decoder_r2l
        norm = base.dec_norm if direction == 0 else self.dec_norm_r2l
        x = base._embed(tokens[:, None], state.length)
        first = state.length == 0
        for blk, cache in zip(blocks, state.caches, strict=True):
            x = blk(
                x,
                state.memory if first else None,
                memory_padding_mask=state.memory_mask if first else None,
                cache=cache,
            )
        state.length += 1
        return norm(x[:, 0])

    @staticmethod
    def _pairs(mod: _CrossDirection, h: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Queries ``h (b, A, d)`` over every other-direction row ``k, v (b, G, h, n, e)``.

        Returns ``(b, A, G, d)`` = LN(h_a + Attn(h_a; H_g)) for all pairs (a, g).
        """
        q = rearrange(mod.q_proj(h), "b a (h e) -> b a h e", h=mod.num_heads)
        s = torch.einsum("bahe,bghne->baghn", q, k) / math.sqrt(q.shape[-1])
        o = torch.einsum("baghn,bghne->baghe", s.softmax(-1), v)
        c = mod.out_proj(rearrange(o, "b a g h e -> b a g (h e)"))
        return mod.norm(h[:, :, None] + c)

    @torch.no_grad()
    def bi_step(
        self, state: BiDecodeState, tok_l2r: torch.Tensor, tok_r2l: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed one token per row and direction; log-probabilities for every prefix pair.

        Args:
            state: from :meth:`bi_init`; updated in place.
            tok_l2r: ``(b*beam,)`` L2R tokens (start id first).
            tok_r2l: ``(b*beam,)`` R2L tokens.

        Returns:
            ``logp_l2r (b, A, G, v)``: L2R row ``a`` given R2L row ``g``; ``logp_r2l (b, G, A, v)``.
        """
        k = state.beam
        h_l = rearrange(self._top_step(0, state.l2r, tok_l2r), "(b k) d -> b k d", k=k)
        h_r = rearrange(self._top_step(1, state.r2l, tok_r2l), "(b k) d -> b k d", k=k)
        for h, mod, kv in (
            (h_l, self.cross_r2l, state.kv_l2r),
            (h_r, self.cross_l2r, state.kv_r2l),
        ):
            new = rearrange(
                mod.kv_proj(h), "b g (two h e) -> two b g h 1 e", two=2, h=mod.num_heads
            )
            if kv:
                kv[0], kv[1] = torch.cat([kv[0], new[0]], 3), torch.cat([kv[1], new[1]], 3)
            else:
                kv.extend([new[0], new[1]])
        z_l = self._pairs(self.cross_l2r, h_l, *state.kv_r2l)
        z_r = self._pairs(self.cross_r2l, h_r, *state.kv_l2r)
        bag, ptr = state.l2r.bag, state.l2r.pointer
        if bag is not None:
            bag = bag.view(-1, k, bag.shape[-1])[:, 0]  # (b, v): one source per example
        if ptr is not None:  # likewise one source per example: (b, s, ...)
            ptr = tuple(x.view(-1, k, *x.shape[1:])[:, 0] for x in ptr)
        proj = self.base.project
        # the token fed to L2R row a (R2L row g) this step, for every pair it appears in
        prev_l = rearrange(tok_l2r, "(b k) -> b k", k=k)[:, :, None].expand(-1, -1, k)
        prev_r = rearrange(tok_r2l, "(b k) -> b k", k=k)[:, :, None].expand(-1, -1, k)
        return torch.log_softmax(proj(z_l, bag, ptr, prev_l, 1).float(), -1), torch.log_softmax(
            proj(z_r, bag, ptr, prev_r, -1).float(), -1
        )
