r"""Character-level ROUGE-1/2/L and BLEU for Chinese titles (tokens = non-space characters).

ROUGE-N (Lin 2004), per pair, with :math:`C_n` the multiset of n-grams:

.. math::

    P = \frac{|C_n(\hat y)\cap C_n(y)|}{|C_n(\hat y)|},\quad
    R = \frac{|C_n(\hat y)\cap C_n(y)|}{|C_n(y)|},\quad F = \frac{2PR}{P+R}

ROUGE-L: the same F with the longest common subsequence in place of the overlap. Reported values
are means over pairs (as ``rouge-score`` and the CLGE/bert4keras title scripts do).

BLEU (Papineni et al. 2002), corpus level, one reference:
:math:`\mathrm{BP}\cdot\exp\big(\tfrac14\sum_{n=1}^4 \log p_n\big)`,
:math:`\mathrm{BP} = \min(1, e^{1 - r/c})`, :math:`p_n` clipped n-gram precision summed over the
corpus; ``smooth="exp"`` replaces a zero count by :math:`1/2^k` (sacrebleu's default). All
scores are fractions in [0, 1]; tests compare with ``rouge-score`` and ``sacrebleu``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

__all__ = ["bleu", "char_tokens", "lcs_length", "rouge", "rouge_n", "rouge_l", "title_scores"]


def char_tokens(text: str) -> list[str]:
    """Characters of ``text`` without whitespace (the token unit of every metric here)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return [c for c in text if not c.isspace()]


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _f1(overlap: int, n_hyp: int, n_ref: int) -> float:
    p = overlap / n_hyp if n_hyp else 0.0
    r = overlap / n_ref if n_ref else 0.0
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def rouge_n(hyp: Sequence[str], ref: Sequence[str], n: int) -> float:
    """ROUGE-N F1 of one pair of token lists (0 when either has no n-gram)."""
    h, r = _ngrams(hyp, n), _ngrams(ref, n)
    return _f1(sum((h & r).values()), sum(h.values()), sum(r.values()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(|a| |b|) dynamic program, two rows)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hyp: Sequence[str], ref: Sequence[str]) -> float:
    """ROUGE-L F1 (LCS) of one pair of token lists."""
    return _f1(lcs_length(hyp, ref), len(hyp), len(ref))


def _check_pairs(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if isinstance(hyps, str) or isinstance(refs, str):
        raise TypeError("hyps and refs must be sequences of str, not a single str")
    if len(hyps) != len(refs):
        raise ValueError(
            f"hyps and refs must have the same length, got {len(hyps)} and {len(refs)}"
        )
    if not hyps:
        raise ValueError("hyps and refs must not be empty")


def rouge(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """Mean character ROUGE-1/2/L F1 over pairs.

    Args:
        hyps: ``m`` generated strings.
        refs: ``m`` reference strings.

    Returns:
        ``{"rouge1", "rouge2", "rougeL"}`` in [0, 1].
    """
    _check_pairs(hyps, refs)
    tot = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for h, r in zip(hyps, refs, strict=True):
        ht, rt = char_tokens(h), char_tokens(r)
        tot["rouge1"] += rouge_n(ht, rt, 1)
        tot["rouge2"] += rouge_n(ht, rt, 2)
        tot["rougeL"] += rouge_l(ht, rt)
    return {k: v / len(hyps) for k, v in tot.items()}


def bleu(
    hyps: Sequence[str], refs: Sequence[str], *, max_order: int = 4, smooth: str = "exp"
) -> float:
    """Corpus character BLEU with one reference per hypothesis (sacrebleu's formula).

    Args:
        hyps: ``m`` generated strings.
        refs: ``m`` references.
        max_order: largest n-gram order.
        smooth: ``"exp"`` (sacrebleu's default) or ``"none"``.

    Returns:
        BLEU in [0, 1].
    """
    _check_pairs(hyps, refs)
    if smooth not in ("exp", "none"):
        raise ValueError(f"smooth must be 'exp' or 'none', got {smooth!r}")
    correct, total = [0] * max_order, [0] * max_order
    c_len = r_len = 0
    for h, r in zip(hyps, refs, strict=True):
        ht, rt = char_tokens(h), char_tokens(r)
        c_len, r_len = c_len + len(ht), r_len + len(rt)
        for n in range(1, max_order + 1):
            hn, rn = _ngrams(ht, n), _ngrams(rt, n)
            correct[n - 1] += sum((hn & rn).values())
            total[n - 1] += sum(hn.values())
    if not any(correct):
        return 0.0  # no match of any order (sacrebleu #141: no smoothing credit either)
    logs, k = [], 1.0
    for n in range(max_order):
        if total[n] == 0:
            return 0.0  # no n-grams of this order at all: sacrebleu's log(0) -> 0
        if correct[n] == 0:
            if smooth == "none":
                return 0.0
            k *= 2
            logs.append(math.log(1.0 / (k * total[n])))
        else:
            logs.append(math.log(correct[n] / total[n]))
    bp = 1.0 if c_len >= r_len else math.exp(1 - r_len / c_len)
    return bp * math.exp(sum(logs) / max_order)


def title_scores(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """``rouge(hyps, refs)`` plus ``"bleu"``: the four numbers the experiment reports."""
    return {**rouge(hyps, refs), "bleu": bleu(hyps, refs)}
