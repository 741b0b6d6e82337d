r"""Test-set scores with unknown-word breakdowns: SIGHAN OOV recall and F1 on OOV entities.

* :func:`segmentation_scores`: the SIGHAN Bakeoff ``score`` script's numbers. Words are compared
  as character spans; $P$, $R$, $F_1$ as in :func:`kexue.tagging.metrics.cws_prf`; the **OOV
  rate** is the share of gold word tokens not in the training word list $D$, the **OOV recall**
  $R_{\rm oov}=\#\{\text{correct gold words}\notin D\}/\#\{\text{gold words}\notin D\}$ and the
  IV recall the same over words in $D$.
* :func:`entity_scores`: strict entity P/R/F1 per type and overall (seqeval ``mode="strict"``),
  plus two unknown-word views. An entity is **OOV** when one of its tokens is not in the
  training token set $V$; $P_{\rm oov}$ is computed over predicted OOV entities, $R_{\rm oov}$
  over gold OOV entities, $F_1^{\rm oov}=2P_{\rm oov}R_{\rm oov}/(P_{\rm oov}+R_{\rm oov})$.
  An entity is **unseen** when its (label, text) pair never occurs as an entity in training
  (the view that matters for Chinese character models, where unknown characters are rare).
  The token OOV rate (all test tokens, and tokens inside gold entities) is reported too.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from kexue.tagging.metrics import cws_prf, entity_prf, prf
from kexue.tagging.schemes import tags_to_spans, words_to_spans


def segmentation_scores(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    train_words: Collection[str] | None = None,
) -> dict[str, Any]:
    """SIGHAN word P/R/F1, with OOV rate and OOV / IV recall when ``train_words`` is given.

    Args:
        gold: per sentence, the gold words.
        pred: per sentence, the predicted words (same characters).
        train_words: the training word list $D$.

    Returns:
        ``{"precision", "recall", "f1", "n_gold", "n_pred", "correct"}`` and, with
        ``train_words``, ``"oov_rate", "oov_recall", "iv_recall"`` (0 when there are none).
    """
    out: dict[str, Any] = cws_prf(gold, pred)
    if train_words is None:
        return out
    oov = oov_hit = iv = iv_hit = 0
    for g, p in zip(gold, pred):
        ps = set(words_to_spans(p))
        for w, span in zip(g, words_to_spans(g)):
            hit = span in ps
            if w in train_words:
                iv, iv_hit = iv + 1, iv_hit + hit
            else:
                oov, oov_hit = oov + 1, oov_hit + hit
    out["oov_rate"] = oov / max(oov + iv, 1)
    out["oov_recall"] = oov_hit / oov if oov else 0.0
    out["iv_recall"] = iv_hit / iv if iv else 0.0
    return out


def entity_scores(
    tokens: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    scheme: str = "BIO",
    train_tokens: Collection[str] | None = None,
    train_entities: Collection[tuple[str, str]] | None = None,
    sep: str = "",
) -> dict[str, Any]:
    """Strict entity P/R/F1 (overall and ``per_label``) with OOV / unseen-entity breakdowns.

    Args:
        tokens: per sentence, the tokens.
        gold: per sentence, gold tags; ``pred`` the predicted tags (same lengths).
        scheme: ``"BIO"`` or ``"BIOES"``.
        train_tokens: the training token set $V$ (adds ``oov_token_rate``,
            ``oov_entity_token_rate`` and ``oov``: P/R/F1 over OOV entities plus ``n_gold``).
        train_entities: ``(label, text)`` pairs of training entities (adds ``unseen``).
        sep: joins tokens into an entity's text (``" "`` for words).

    Returns:
        The :func:`kexue.tagging.metrics.entity_prf` dict plus the keys above.
    """
    out: dict[str, Any] = entity_prf(gold, pred, scheme, strict=True)
    views: dict[str, list[int]] = {}  # name -> [correct, n_pred, n_gold]
    n_tok = n_oov = n_ent_tok = n_ent_oov = 0
    for toks, g, p in zip(tokens, gold, pred):
        gs = set(tags_to_spans(g, scheme, strict=True))
        ps = set(tags_to_spans(p, scheme, strict=True))
        if train_tokens is not None:
            n_tok += len(toks)
            n_oov += sum(t not in train_tokens for t in toks)
            for _, s, e in gs:
                n_ent_tok += e - s
                n_ent_oov += sum(t not in train_tokens for t in toks[s:e])
        tests = {}
        if train_tokens is not None:
            tests["oov"] = lambda lab, s, e, toks=toks: any(
                t not in train_tokens for t in toks[s:e]
            )
        if train_entities is not None:
            tests["unseen"] = lambda lab, s, e, toks=toks: (
                (lab, sep.join(toks[s:e])) not in train_entities
            )
        for name, is_in in tests.items():
            c = views.setdefault(name, [0, 0, 0])
            c[0] += sum(1 for sp in gs & ps if is_in(*sp))
            c[1] += sum(1 for sp in ps if is_in(*sp))
            c[2] += sum(1 for sp in gs if is_in(*sp))
    if train_tokens is not None:
        out["oov_token_rate"] = n_oov / max(n_tok, 1)
        out["oov_entity_token_rate"] = n_ent_oov / max(n_ent_tok, 1)
    for name, (c, n_pred, n_gold) in views.items():
        out[name] = {**prf(c, n_pred, n_gold), "n_gold": n_gold, "n_pred": n_pred}
    return out
