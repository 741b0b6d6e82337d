r"""Segmentation and entity scores: precision, recall and $F_1=2PR/(P+R)$, micro-averaged.

* :func:`cws_prf`: word segmentation scored like the SIGHAN Bakeoff ``score`` script: a predicted
  word is correct when its character span $[s,e)$ equals a gold word's span;
  $P=\text{correct}/\#\text{pred words}$, $R=\text{correct}/\#\text{gold words}$.
* :func:`entity_prf`: entity-level scores over spans ``(sentence, label, start, end)``; with
  ``strict=True`` it matches ``seqeval`` ``mode="strict"`` (IOB2 / IOBES), with ``strict=False``
  seqeval's default (conlleval) chunking.
* :func:`entity_set_f1`: Su's NER metric, $F_1=2X/(Y+Z)$ over per-sentence *sets* of entities.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from kexue.tagging.schemes import tags_to_spans, words_to_spans


def prf(correct: int, n_pred: int, n_gold: int) -> dict[str, float]:
    """``{"precision", "recall", "f1"}`` from counts (0 when a denominator is 0)."""
    p = correct / n_pred if n_pred else 0.0
    r = correct / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


def cws_prf(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """SIGHAN-style word segmentation P/R/F1.

    Args:
        gold: per sentence, the gold words.
        pred: per sentence, the predicted words (same characters as the gold sentence).

    Returns:
        ``{"precision", "recall", "f1", "n_gold", "n_pred", "correct"}``.

    Raises:
        ValueError: different numbers of sentences or a sentence whose characters differ.
    """
    if len(gold) != len(pred):
        raise ValueError(
            f"gold and pred must have the same number of sentences, got {len(gold)} and {len(pred)}"
        )
    correct = n_gold = n_pred = 0
    for i, (g, p) in enumerate(zip(gold, pred)):
        if "".join(g) != "".join(p):
            raise ValueError(f"sentence {i}: gold and pred characters differ")
        gs, ps = set(words_to_spans(g)), set(words_to_spans(p))
        correct += len(gs & ps)
        n_gold += len(gs)
        n_pred += len(ps)
    out: dict[str, float] = prf(correct, n_pred, n_gold)
    out.update(n_gold=n_gold, n_pred=n_pred, correct=correct)
    return out


def entity_prf(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    scheme: str = "BIO",
    strict: bool = True,
) -> dict[str, object]:
    """Micro entity-level P/R/F1 plus per-label scores.

    Args:
        gold: per sentence, gold tags (``"O"``, ``"B-PER"``, ...).
        pred: per sentence, predicted tags, same lengths.
        scheme: ``"BIO"`` or ``"BIOES"``.
        strict: seqeval strict mode (ill-formed entities never count) or conlleval chunking.

    Returns:
        ``{"precision", "recall", "f1", "n_gold", "n_pred", "correct", "per_label": {label: prf}}``.
    """
    if len(gold) != len(pred):
        raise ValueError(
            f"gold and pred must have the same number of sentences, got {len(gold)} and {len(pred)}"
        )
    correct: Counter[str] = Counter()
    n_gold: Counter[str] = Counter()
    n_pred: Counter[str] = Counter()
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: gold has {len(g)} tags, pred has {len(p)}")
        gs = set(tags_to_spans(g, scheme, strict))
        ps = set(tags_to_spans(p, scheme, strict))
        for lab, *_ in gs:
            n_gold[lab] += 1
        for lab, *_ in ps:
            n_pred[lab] += 1
        for lab, *_ in gs & ps:
            correct[lab] += 1
    out: dict[str, object] = dict(
        prf(sum(correct.values()), sum(n_pred.values()), sum(n_gold.values()))
    )
    out.update(
        n_gold=sum(n_gold.values()), n_pred=sum(n_pred.values()), correct=sum(correct.values())
    )
    labels = sorted(set(n_gold) | set(n_pred))
    out["per_label"] = {lab: prf(correct[lab], n_pred[lab], n_gold[lab]) for lab in labels}
    return out


def entity_set_f1(
    tokens: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    scheme: str = "BIO",
) -> float:
    """Su's NER F1 $2X/(Y+Z)$ over per-sentence sets of ``(entity text, label)`` pairs."""
    x = y = z = 0
    for toks, g, p in zip(tokens, gold, pred):
        gs = {("".join(toks[s:e]), lab) for lab, s, e in tags_to_spans(g, scheme, strict=False)}
        ps = {("".join(toks[s:e]), lab) for lab, s, e in tags_to_spans(p, scheme, strict=False)}
        x += len(gs & ps)
        y += len(ps)
        z += len(gs)
    return 2 * x / (y + z) if y + z else 0.0
