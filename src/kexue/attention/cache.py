r"""Key/value caches for causal incremental decoding: every key, or only the keys still needed.

At decoding step :math:`T` the new query attends :math:`\{j \le T : j \in S(T)\}` under the causal
pattern :math:`S` (Su Jianlin, 《为节约而生：从标准Attention到稀疏Attention》, 2019; Child et
al. 2019). A past key :math:`j` is worth keeping only if a later query can still attend it,

.. math:: j \ \text{kept after step}\ T \iff j > T - W \ \lor\ \mathrm{keep}(j),

with the window :math:`W` and the predicate of :func:`kexue.attention.patterns.decode_retention`
(local(w): :math:`W = w`, nothing beyond it; fixed(l, c): the current block and the summary
columns; full/atrous/sparse/strided: every key, since :math:`t' = j + m r` sweeps every residue
class).

* :class:`KVCache` keeps every key: memory :math:`O(n)` (also the cross-attention memory cache).
* :class:`BoundedKVCache` keeps a ring buffer of the last :math:`W + 1` keys (the window plus the
  current token, written in place at slot :math:`j \bmod (W+1)`) and a growing store (capacity
  doubling) for keys evicted from the ring with :math:`\mathrm{keep}(j)`. Memory is
  :math:`O(w)` for local(w), :math:`O(l + n c / l)` for fixed(l, c), :math:`O(n)` otherwise.

Both return their keys as *parts* ``(k, v, valid, pos)`` with the absolute position of every key,
so the attention over them needs no particular order (the ring is not in position order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Part = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
Retention = tuple[int, Callable[[torch.Tensor], torch.Tensor]]


@dataclass
class KVCache:
    """Keys/values (and key validity) of every token seen so far.

    Attributes:
        k: ``(b, h, t, e)`` or None before the first call.
        v: ``(b, h, t, e)`` or None.
        mask: ``(b, t)`` bool, True = valid key, or None.
    """

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    keeps_all = True  # every key stays: new queries may be answered after pushing all of them

    @property
    def length(self) -> int:
        """Number of positions seen ``t``."""
        return 0 if self.k is None else self.k.shape[2]

    @property
    def size(self) -> int:
        """Number of keys stored (``t``: all of them)."""
        return self.length

    def append(
        self, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Append ``k, v (b, h, t_new, e)`` and ``mask (b, t_new)``; return the full tensors."""
        if self.k is None:
            self.k, self.v, self.mask = k, v, mask
        else:
            self.k = torch.cat([self.k, k], 2)
            self.v = torch.cat([self.v, v], 2)
            self.mask = torch.cat([self.mask, mask], 1)
        return self.k, self.v, self.mask

    def push(
        self, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, retention: Retention
    ) -> None:
        """:meth:`append` (``retention`` is ignored: every key is kept)."""
        self.append(k, v, mask)

    def parts(self) -> list[Part]:
        """``[(k (b, h, t, e), v, valid (b, t), pos (t,))]``: the keys and their positions."""
        if self.k is None:
            return []
        return [(self.k, self.v, self.mask, torch.arange(self.length, device=self.k.device))]

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows ``index (b',)`` in place (beam search)."""
        if self.k is not None:
            self.k, self.v, self.mask = self.k[index], self.v[index], self.mask[index]


class _Store:
    """``k, v (b, h, cap, e)``, ``valid (b, cap)``, ``pos (cap,)`` (-1 = empty slot)."""

    def __init__(self, like_k: torch.Tensor, like_v: torch.Tensor, cap: int) -> None:
        b, h, _, e = like_k.shape
        self.k = like_k.new_zeros(b, h, cap, e)
        self.v = like_v.new_zeros(b, h, cap, like_v.shape[-1])
        self.valid = torch.zeros(b, cap, dtype=torch.bool, device=like_k.device)
        self.pos = torch.full((cap,), -1, dtype=torch.long, device=like_k.device)
        self.count = 0  # used slots (the growing store fills 0 .. count-1)

    def write(self, slots, k, v, valid, pos) -> None:
        self.k[:, :, slots] = k
        self.v[:, :, slots] = v
        self.valid[:, slots] = valid
        self.pos[slots] = pos

    def grow(self, need: int) -> None:
        """Double the capacity until ``need`` slots fit (amortised O(1) per appended key)."""
        cap = self.pos.shape[0]
        if need <= cap:
            return
        new = max(need, 2 * cap)
        old, count = (self.k, self.v, self.valid, self.pos), self.count
        self.__init__(self.k, self.v, new)
        self.write(slice(0, cap), *old)
        self.count = count

    def reorder(self, index: torch.Tensor) -> None:
        self.k, self.v, self.valid = self.k[index], self.v[index], self.valid[index]


class BoundedKVCache:
    """A KV cache that keeps only the keys a later causal query can attend (module docstring).

    Same use as :class:`KVCache` (``length``, ``reorder``, pass it as ``cache=``); the layer
    supplies the pattern's retention on the first :meth:`push` and must not change it. Memory:
    ``W + 1`` ring slots plus the kept store (:attr:`size` keys in all).
    """

    keeps_all = False  # answer new queries one at a time: the ring drops what they no longer need

    def __init__(self) -> None:
        self.seen = 0
        self.window: int | None = None
        self._keep: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._ring: _Store | None = None
        self._kept: _Store | None = None

    @property
    def length(self) -> int:
        """Number of positions seen."""
        return self.seen

    @property
    def size(self) -> int:
        """Number of keys stored (ring slots in use plus kept keys)."""
        if self._ring is None:
            return 0
        return int((self._ring.pos >= 0).sum()) + self._kept.count

    def _bind(self, k: torch.Tensor, v: torch.Tensor, retention: Retention) -> None:
        window, keep = retention
        if self._ring is None:
            self.window, self._keep = window, keep
            self._ring = _Store(k, v, window + 1)
            self._kept = _Store(k, v, 16)
        elif window != self.window:
            raise ValueError(
                f"this BoundedKVCache was filled with window {self.window}, got {window}: use "
                "one cache per attention layer"
            )

    def push(
        self, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, retention: Retention
    ) -> None:
        """Add the next ``t`` positions: ``k, v (b, h, t, e)``, ``mask (b, t)`` True = valid.

        Keys that fall out of the ring go to the kept store if ``keep(pos)``, else are dropped.
        ``retention = (window, keep)`` as :func:`kexue.attention.patterns.decode_retention`.
        """
        self._bind(k, v, retention)
        ring, cap, t = self._ring, self.window + 1, k.shape[2]
        pos = torch.arange(self.seen, self.seen + t, device=k.device)
        first = self.seen + t - cap  # positions >= first stay in the ring
        old = (ring.pos >= 0) & (ring.pos < first)  # ring entries about to be overwritten
        self._keep_some(ring.k[:, :, old], ring.v[:, :, old], ring.valid[:, old], ring.pos[old])
        out = pos < first
        self._keep_some(k[:, :, out], v[:, :, out], mask[:, out], pos[out])
        inn = ~out
        ring.write(pos[inn].remainder(cap), k[:, :, inn], v[:, :, inn], mask[:, inn], pos[inn])
        self.seen += t

    def _keep_some(self, k, v, valid, pos) -> None:
        sel = self._keep(pos)
        if not bool(sel.any()):
            return
        st, c = self._kept, int(sel.sum())
        st.grow(st.count + c)
        st.write(slice(st.count, st.count + c), k[:, :, sel], v[:, :, sel], valid[:, sel], pos[sel])
        st.count += c

    def parts(self) -> list[Part]:
        """``[(k (b, h, s, e), v, valid (b, s), pos (s,))]`` of the ring and the kept store
        (empty ring slots have ``valid`` False)."""
        if self._ring is None:
            return []
        r, kp = self._ring, self._kept
        out = [(r.k, r.v, r.valid, r.pos)]
        if kp.count:
            n = kp.count
            out.append((kp.k[:, :, :n], kp.v[:, :, :n], kp.valid[:, :n], kp.pos[:n]))
        return out

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows ``index (b',)`` in place (beam search)."""
        if self._ring is not None:
            self._ring.reorder(index)
            self._kept.reorder(index)
