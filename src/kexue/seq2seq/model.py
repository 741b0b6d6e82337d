r"""A Transformer encoder-decoder over token ids, with a KV cache for incremental decoding.

.. math::

    M = \mathrm{Enc}(E[x] + P),\qquad
    p(y_i \mid y_{<i}, x) = \mathrm{softmax}\big(W\,\mathrm{Dec}(E[y_{<i}] + P,\ M)_i\big),

    \mathcal L = -\frac{1}{\sum_i m_i}\sum_{i} m_i \log p(y_i \mid y_{<i}, x),

with decoder input ``[BOS, y_1..y_T]`` and targets ``[y_1..y_T, EOS]`` (``m`` = non-pad target
positions), sinusoidal positions ``P`` and the output projection ``W`` tied to the embedding
``E`` by default. Blocks are :mod:`kexue.attention`'s pre-norm encoder/decoder blocks. This is the
base model of Su Jianlin's 《seq2seq之双向解码》 (2019), with a Transformer instead of his LSTMs.

:meth:`Seq2Seq.score` is :math:`\log p(y, \mathrm{EOS} \mid x)`, the quantity beam search
maximises. Incremental decoding: :meth:`Seq2Seq.init_state` encodes the source once, and
:meth:`Seq2Seq.step` feeds one token per row, reusing the cached keys/values
(:class:`kexue.attention.DecoderCache`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from kexue.attention import DecoderCache, TransformerDecoderBlock, TransformerEncoderBlock
from kexue.core.checks import check_dtype, check_positive_int, check_shape

__all__ = ["DecodeState", "Seq2Seq", "Seq2SeqConfig", "sinusoidal_positions"]


@dataclass(frozen=True)
class Seq2SeqConfig:
    r"""Sizes and special ids of a :class:`Seq2Seq` (source and target share one vocabulary).

    Attributes:
        vocab_size: ``v``.
        embed_dim: model width ``d``.
        num_heads: attention heads (``d`` divisible by it).
        encoder_layers: encoder blocks.
        decoder_layers: decoder blocks.
        ffn_dim: feed-forward width (``None``: ``4 d``).
        dropout: dropout on attention and residual branches.
        pad_id: padding id (never generated).
        bos_id: decoder start id (never generated).
        eos_id: end id.
        tie_embeddings: output projection = embedding matrix.
        copy_prior: Su's copy prior: logits averaged with a learned per-token scale-shift of the
            0/1 vector of tokens present in the source,
            :math:`\tfrac12(z + e^{\sigma}\odot\mathbb 1_{\text{in src}} + \beta)`.
        pointer: a pointer-generator output (See, Liu & Manning 2017): the next-token
            distribution mixes generation and copying a source position,
            :math:`p(w) = g\,\mathrm{softmax}(z)_w + (1-g)\sum_{j:\,x_j=w} a_j` with
            :math:`a = \mathrm{softmax}_j(q(h)\cdot k(m_j)/\sqrt d)` over valid source positions
            and :math:`g = \sigma(w_g\cdot h + b_g)`. Titles reuse most of their characters from
            the source (91% on CSL, 63% on LCSTS), which this models directly.
        copy_continuation: with ``pointer``, a learned bonus :math:`w_c` on the copy score of
            every source position that *continues* the previous output token,
            :math:`q(h_t)\cdot k(m_j)/\sqrt d + w_c\,[x_{j-1} = y_{t-1}]` (R2L decoders:
            :math:`x_{j+1}`), so that copying a span is one decision instead of one per
            character. A position bias in the spirit of the copy mechanisms of CopyNet (Gu et
            al. 2016); here an exact 0/1 feature of the ids.
    """

    vocab_size: int
    embed_dim: int = 256
    num_heads: int = 4
    encoder_layers: int = 3
    decoder_layers: int = 3
    ffn_dim: int | None = None
    dropout: float = 0.1
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3
    tie_embeddings: bool = True
    copy_prior: bool = False
    pointer: bool = False
    copy_continuation: bool = False

    def __post_init__(self) -> None:
        check_positive_int(self.vocab_size, "vocab_size", 2)
        check_positive_int(self.embed_dim, "embed_dim")
        check_positive_int(self.num_heads, "num_heads")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads}"
            )
        check_positive_int(self.encoder_layers, "encoder_layers")
        check_positive_int(self.decoder_layers, "decoder_layers")
        if self.ffn_dim is not None:
            check_positive_int(self.ffn_dim, "ffn_dim")
        if not isinstance(self.dropout, int | float) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("pad_id", "bos_id", "eos_id"):
            i = getattr(self, name)
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.vocab_size:
                raise ValueError(f"{name} must be an int in [0, {self.vocab_size}), got {i!r}")
        if self.copy_continuation and not self.pointer:
            raise ValueError("copy_continuation needs pointer=True")
        if len({self.pad_id, self.bos_id, self.eos_id}) != 3:
            raise ValueError("pad_id, bos_id and eos_id must be distinct")
        for flag in ("tie_embeddings", "copy_prior", "pointer", "copy_continuation"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be a bool, got {getattr(self, flag)!r}")

    def to_dict(self) -> dict:
        """JSON-ready dict of the fields."""
        return asdict(self)


def sinusoidal_positions(n: int, d: int, offset: int = 0, device=None) -> torch.Tensor:
    r"""``(n, d)`` table :math:`P_{p,2i} = \sin(p/10000^{2i/d}),\ P_{p,2i+1} = \cos(\cdot)`
    for positions ``p = offset .. offset + n - 1`` (Vaswani et al. 2017)."""
    pos = torch.arange(offset, offset + n, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(
        torch.arange(0, d, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / d)
    )
    table = torch.zeros(n, d, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : d // 2]
    return table


@dataclass
class DecodeState:
    """Incremental decoding state of a batch of ``b`` rows (beams count as rows).

    Attributes:
        memory: ``(b, s, d)`` encoder output.
        memory_mask: ``(b, s)`` bool, True = valid source position.
        caches: one :class:`DecoderCache` per decoder block.
        length: tokens fed so far (the next token's position).
        bag: ``(b, v)`` 0/1 source-token indicator (copy prior) or None.
        pointer: ``(keys (b, s, d), source ids (b, s), mask (b, s))`` of the pointer output,
            or None.
    """

    memory: torch.Tensor
    memory_mask: torch.Tensor
    caches: list[DecoderCache] = field(default_factory=list)
    length: int = 0
    bag: torch.Tensor | None = None
    pointer: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def reorder(self, index: torch.Tensor, *, source: bool = True) -> None:
        """Keep rows ``index (b',)`` (beam reordering, dropping finished examples) in place.

        ``source=False`` moves only the target side (self-attention keys and values): for a
        reordering among the beams of each example, whose source-side rows (encoder memory, its
        mask, the copy bag, cross-attention keys and values) are copies of one another, so that
        moving them changes no value. Copying them anyway was a third of beam search's time
        (the whole memory and every layer's cross-attention keys, at every step).
        """
        if source:
            self.memory, self.memory_mask = self.memory[index], self.memory_mask[index]
            if self.bag is not None:
                self.bag = self.bag[index]
            if self.pointer is not None:
                self.pointer = tuple(x[index] for x in self.pointer)
        for c in self.caches:
            c.reorder(index, source=source)

    def reorder_beams(self, index: torch.Tensor) -> None:
        """:meth:`reorder` for moves among the beams of each example, none dropped (the optional
        fast path of the decoding-state protocol that beam search uses): target side only."""
        self.reorder(index, source=False)


def _source_mask(src: torch.Tensor, src_mask: torch.Tensor | None, pad_id: int) -> torch.Tensor:
    sizes = check_shape(src, "src", ("b", "s"))
    check_dtype(src, "src", "int")
    if src.shape[1] == 0:
        raise ValueError("src must have at least one position, got shape (b, 0)")
    if src_mask is None:
        src_mask = src != pad_id
    else:
        check_shape(src_mask, "src_mask", ("b", "s"), sizes)
        check_dtype(src_mask, "src_mask", "bool")
    if not bool(src_mask.any(-1).all()):
        raise ValueError("every source row needs at least one valid token (empty source)")
    return src_mask


def _check_ids(x: torch.Tensor, name: str, v: int) -> None:
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= v):
        raise ValueError(f"{name} ids must be in [0, {v}), got [{int(x.min())}, {int(x.max())}]")


def target_io(
    tgt: torch.Tensor, tgt_mask: torch.Tensor, bos: int, eos: int, pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher-forcing lists of right-padded targets ``tgt (b, t)`` with mask ``(b, t)``.

    Returns:
        ``inp (b, t+1) = [bos, y..]``, ``out (b, t+1) = [y.., eos]`` (pad after), and the
        ``(b, t+1)`` mask of ``out`` (``length + 1`` valid positions per row).
    """
    b = tgt.shape[0]
    lengths = tgt_mask.long().sum(-1)
    y = tgt.masked_fill(~tgt_mask, pad)
    inp = torch.cat([torch.full((b, 1), bos, dtype=tgt.dtype, device=tgt.device), y], 1)
    out = torch.cat([y, torch.full((b, 1), pad, dtype=tgt.dtype, device=tgt.device)], 1)
    out[torch.arange(b, device=tgt.device), lengths] = eos
    mask = torch.arange(out.shape[1], device=tgt.device)[None] <= lengths[:, None]
    return inp.masked_fill(~mask, pad), out, mask


def resolve_target_mask(
    tgt: torch.Tensor, tgt_mask: torch.Tensor | None, pad_id: int, sizes: dict
) -> torch.Tensor:
    """Validate ``tgt (b, t)``; default mask ``tgt != pad``; the mask must be a right-padding."""
    check_shape(tgt, "tgt", ("b", "t"), sizes)
    check_dtype(tgt, "tgt", "int")
    if tgt_mask is None:
        tgt_mask = tgt != pad_id
    else:
        check_shape(tgt_mask, "tgt_mask", ("b", "t"), sizes)
        check_dtype(tgt_mask, "tgt_mask", "bool")
    if tgt_mask.shape[1] > 1 and bool((tgt_mask[:, 1:] & ~tgt_mask[:, :-1]).any()):
        raise ValueError("tgt_mask must be right-padded (True then False in every row)")
    return tgt_mask


class Seq2Seq(nn.Module):
    """Transformer encoder-decoder (pre-norm blocks from :mod:`kexue.attention`).

    Args:
        config: a :class:`Seq2SeqConfig`.
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        if not isinstance(config, Seq2SeqConfig):
            raise TypeError(f"config must be a Seq2SeqConfig, got {type(config).__name__}")
        self.config = c = config
        d = c.embed_dim
        self.embed = nn.Embedding(c.vocab_size, d, padding_idx=c.pad_id)
        nn.init.normal_(self.embed.weight, std=d**-0.5)
        self.encoder = nn.ModuleList(
            TransformerEncoderBlock(d, c.num_heads, ffn_dim=c.ffn_dim, dropout=c.dropout)
            for _ in range(c.encoder_layers)
        )
        self.enc_norm = nn.LayerNorm(d)
        self.decoder = nn.ModuleList(
            TransformerDecoderBlock(d, c.num_heads, ffn_dim=c.ffn_dim, dropout=c.dropout)
            for _ in range(c.decoder_layers)
        )
        self.dec_norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(d, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.out.weight = self.embed.weight
        if c.copy_prior:
            self.copy_log_scale = nn.Parameter(torch.zeros(c.vocab_size))
            self.copy_shift = nn.Parameter(torch.zeros(c.vocab_size))
        if c.pointer:
            self.copy_query = nn.Linear(d, d, bias=False)
            self.copy_key = nn.Linear(d, d, bias=False)
            self.copy_gate = nn.Linear(d, 1)
            if c.copy_continuation:
                self.copy_cont = nn.Parameter(torch.tensor(2.0))

    def source_bag(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor | None:
        """``(b, v)`` float 0/1: which tokens occur in each source (None without copy prior)."""
        if not self.config.copy_prior:
            return None
        bag = torch.zeros(src.shape[0], self.config.vocab_size, device=src.device)
        bag.scatter_(1, src.masked_fill(~src_mask, self.config.pad_id), 1.0)
        bag[:, self.config.pad_id] = 0.0  # padding must not count as a source token
        return bag

    def pointer_context(
        self, src: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """``(copy keys (b, s, d), src (b, s), src_mask (b, s))`` (None without the pointer)."""
        if not self.config.pointer:
            return None
        return self.copy_key(memory), src, src_mask

    def project(
        self,
        h: torch.Tensor,
        bag: torch.Tensor | None,
        pointer: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        prev: torch.Tensor | None = None,
        direction: int = 1,
    ) -> torch.Tensor:
        r"""Logits ``(b, ..., v)`` of states ``h (b, ..., d)``, with the copy prior if enabled.

        With ``pointer`` (from :meth:`pointer_context`, one source per row of ``h``), the result
        is the pointer-generator's normalised log-probabilities (a valid logit vector):
        :math:`\log\big(g\,\mathrm{softmax}(z) + (1-g)\,A\big)` where
        :math:`A_{w} = \sum_{j: x_j = w} a_j` (see :class:`Seq2SeqConfig`). ``prev (b, ...)``:
        the token fed at each state (the continuation bonus needs it); ``direction`` 1 for an
        L2R decoder, -1 for R2L (which continues to the left).
        """
        z = self.out(h)
        if bag is not None:
            bag = bag.reshape(bag.shape[0], *([1] * (z.dim() - 2)), bag.shape[1])
            z = 0.5 * (z + bag * self.copy_log_scale.exp() + self.copy_shift)
        if pointer is None:
            return z
        keys, ids, mask = pointer
        b, d, v = h.shape[0], h.shape[-1], z.shape[-1]
        acc = torch.promote_types(h.dtype, torch.float32)  # float32 at least (fp16/bf16 models)
        hf = h.reshape(b, -1, d)
        scores = torch.einsum("bnd,bsd->bns", self.copy_query(hf), keys).to(acc) / math.sqrt(d)
        if self.config.copy_continuation:
            if prev is None:
                raise ValueError("copy_continuation needs prev (the token fed at each state)")
            # neighbour[j] = the source token a copy of position j would continue
            fill = torch.full_like(ids[:, :1], -1)
            if direction == 1:
                neighbour = torch.cat([fill, ids[:, :-1]], 1)
            else:
                neighbour = torch.cat([ids[:, 1:], fill], 1)
            hit = neighbour[:, None, :] == prev.reshape(b, -1)[:, :, None]  # (b, n, s)
            scores = scores + self.copy_cont.to(acc) * hit
        att = scores.masked_fill(~mask[:, None], float("-inf")).softmax(-1)
        copy = torch.zeros(b, hf.shape[1], v, device=h.device, dtype=att.dtype)
        copy.scatter_add_(2, ids[:, None].expand(-1, hf.shape[1], -1), att)
        gate = self.copy_gate(hf).to(acc)
        # clamp: a token absent from the source has copy mass 0; log(0) would make the
        # (zero-weighted) gradient of logaddexp NaN.
        logp = torch.logaddexp(
            F.logsigmoid(gate) + torch.log_softmax(z.reshape(b, -1, v).to(acc), -1),
            F.logsigmoid(-gate) + torch.log(copy.clamp_min(1e-30)),
        )
        return logp.reshape(*h.shape[:-1], v)

    # ------------------------------------------------------------------ pieces
    def _embed(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        d = self.config.embed_dim
        pos = sinusoidal_positions(ids.shape[1], d, offset, ids.device)
        return self.drop(self.embed(ids) * math.sqrt(d) + pos)

    def encode(
        self, src: torch.Tensor, src_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a right- or left-padded source.

        Args:
            src: ``(b, s)`` ids.
            src_mask: ``(b, s)`` bool, True = real token (default ``src != pad_id``).

        Returns:
            ``memory (b, s, d)`` and the ``(b, s)`` mask.

        Raises:
            ValueError: bad shapes, ids out of range, or a row without any valid token.
        """
        src_mask = _source_mask(src, src_mask, self.config.pad_id)
        _check_ids(src, "src", self.config.vocab_size)
        x = self._embed(src)
        for blk in self.encoder:
            x = blk(x, src_mask)
        return self.enc_norm(x), src_mask

    def decode(
        self,
        inp: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        inp_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced decoder states (before the output projection).

        Args:
            inp: ``(b, t)`` decoder input ids ``[BOS, y_1, ..]``.
            memory: ``(b, s, d)``.
            memory_mask: ``(b, s)`` bool.
            inp_mask: ``(b, t)`` bool, True = real input token.

        Returns:
            ``(b, t, d)`` final-normalised decoder states.
        """
        x = self._embed(inp)
        for blk in self.decoder:
            x = blk(x, memory, key_padding_mask=inp_mask, memory_padding_mask=memory_mask)
        return self.dec_norm(x)

    def forward(
        self,
        src: torch.Tensor,
        inp: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        inp_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of every next token.

        Args:
            src: ``(b, s)`` source ids.
            inp: ``(b, t)`` decoder input ids (starting with ``bos_id``).
            src_mask: ``(b, s)`` bool (default ``src != pad_id``).
            inp_mask: ``(b, t)`` bool (default all valid).

        Returns:
            ``(b, t, v)`` logits: row ``i`` predicts the token after ``inp[:, i]``.
        """
        memory, src_mask = self.encode(src, src_mask)
        check_shape(inp, "inp", (src.shape[0], "t"))
        _check_ids(inp, "inp", self.config.vocab_size)
        return self.project(
            self.decode(inp, memory, src_mask, inp_mask),
            self.source_bag(src, src_mask),
            self.pointer_context(src, memory, src_mask),
            prev=inp,
        )

    def _token_logprobs(self, src, tgt, src_mask, tgt_mask) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        sizes = check_shape(src, "src", ("b", "s"))
        tgt_mask = resolve_target_mask(tgt, tgt_mask, c.pad_id, sizes)
        _check_ids(tgt.masked_fill(~tgt_mask, 0), "tgt", c.vocab_size)
        inp, out, mask = target_io(tgt, tgt_mask, c.bos_id, c.eos_id, c.pad_id)
        logits = self.forward(src, inp, src_mask, mask)
        logp = torch.log_softmax(logits.float(), -1).gather(-1, out[..., None])[..., 0]
        return logp * mask, mask

    def loss(
        self,
        src: torch.Tensor,
        tgt: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        tgt_mask: torch.Tensor | None = None,
        *,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        r"""Teacher-forced cross-entropy, :math:`-\sum m_i \log p(y_i\mid\cdot)/\sum m_i` (``mean``).

        Args:
            src: ``(b, s)`` source ids.
            tgt: ``(b, t)`` right-padded target ids, **without** BOS/EOS (EOS is appended).
            src_mask: ``(b, s)`` bool (default ``src != pad_id``).
            tgt_mask: ``(b, t)`` bool (default ``tgt != pad_id``).
            reduction: ``"mean"`` over target tokens (EOS included), ``"sum"``, or ``"none"``
                (``(b, t+1)``, zeros at padding).
            label_smoothing: as in ``F.cross_entropy``.

        Returns:
            The loss (a scalar, or ``(b, t+1)``).
        """
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        c = self.config
        sizes = check_shape(src, "src", ("b", "s"))
        tgt_mask = resolve_target_mask(tgt, tgt_mask, c.pad_id, sizes)
        _check_ids(tgt.masked_fill(~tgt_mask, 0), "tgt", c.vocab_size)
        inp, out, mask = target_io(tgt, tgt_mask, c.bos_id, c.eos_id, c.pad_id)
        logits = self.forward(src, inp, src_mask, mask).float()
        nll = (
            F.cross_entropy(
                logits.transpose(1, 2), out, reduction="none", label_smoothing=label_smoothing
            )
            * mask
        )  # (b, t+1)
        if reduction == "none":
            return nll
        if reduction == "sum":
            return nll.sum()
        return nll.sum() / mask.sum()

    @torch.no_grad()
    def score(
        self,
        src: torch.Tensor,
        tgt: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        tgt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""Summed log-probability :math:`\log p(y_1..y_T, \mathrm{EOS}\mid x)` per row.

        Args:
            src: ``(b, s)`` source ids.
            tgt: ``(b, t)`` right-padded targets without BOS/EOS (``t`` may be 0).
            src_mask: ``(b, s)`` bool.
            tgt_mask: ``(b, t)`` bool (default ``tgt != pad_id``).

        Returns:
            ``(b,)`` float32 log-probabilities (eval mode is the caller's business).
        """
        logp, _ = self._token_logprobs(src, tgt, src_mask, tgt_mask)
        return logp.sum(-1)

    # ------------------------------------------------------------------ incremental decoding
    @torch.no_grad()
    def init_state(
        self, src: torch.Tensor, src_mask: torch.Tensor | None = None, repeat: int = 1
    ) -> DecodeState:
        """Encode ``src (b, s)`` once; each row repeated ``repeat`` times (beams) -> ``b*repeat`` rows."""
        memory, mask = self.encode(src, src_mask)
        if repeat > 1:
            memory = memory.repeat_interleave(repeat, 0)
            mask = mask.repeat_interleave(repeat, 0)
        bag = self.source_bag(src, self.encode_mask(src, src_mask))
        if bag is not None and repeat > 1:
            bag = bag.repeat_interleave(repeat, 0)
        ptr = self.pointer_context(src.repeat_interleave(repeat, 0), memory, mask)
        return DecodeState(memory, mask, [DecoderCache() for _ in self.decoder], 0, bag, ptr)

    def encode_mask(self, src: torch.Tensor, src_mask: torch.Tensor | None) -> torch.Tensor:
        """The validated ``(b, s)`` source mask (default ``src != pad_id``)."""
        return _source_mask(src, src_mask, self.config.pad_id)

    @torch.no_grad()
    def step(self, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row; return the next-token log-probabilities.

        Args:
            state: from :meth:`init_state`; updated in place.
            tokens: ``(b,)`` ids (``bos_id`` on the first step).

        Returns:
            ``(b, v)`` float32 log-probabilities.
        """
        check_shape(tokens, "tokens", (state.memory.shape[0],))
        x = self._embed(tokens[:, None], state.length)
        first = state.length == 0
        for blk, cache in zip(self.decoder, state.caches, strict=True):
            x = blk(
                x,
                state.memory if first else None,
                memory_padding_mask=state.memory_mask if first else None,
                cache=cache,
            )
        state.length += 1
        z = self.project(self.dec_norm(x[:, 0]), state.bag, state.pointer, prev=tokens)
        return torch.log_softmax(z.float(), -1)
