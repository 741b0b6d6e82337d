r"""Tag schemes: BMES for word segmentation, BIO (IOB2) and BIOES for entities.

A word / entity is a span $[s, e)$ of character positions. BMES tags each character as the
**S**ingle-character word, or the **B**egin, **M**iddle or **E**nd of a longer word; BIO marks
**B**-X at an entity's first token and **I**-X inside it; BIOES adds **E**-X (last) and **S**-X
(single-token entity). Su's CWS script numbers BMES as S=0, B=1, M=2, E=3 and BIO as O=0,
B-c=2c+1, I-c=2c+2; :func:`tag_set` follows these orders.

:func:`allowed_transitions` turns a scheme into the :class:`Constraints` the CRF/MEMM heads accept
(row = previous tag, column = next tag, plus allowed first and last tags).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kexue.core.spans import Span, check_tag, spans_to_tags, split_tag, tags_to_spans
from kexue.tagging._common import Constraints

__all__ = [
    "SCHEMES",
    "Span",
    "allowed_transitions",
    "check_tag",
    "spans_to_tags",
    "split_tag",
    "tag_set",
    "tags_to_spans",
    "tags_to_words",
    "words_to_spans",
    "words_to_tags",
]

SCHEMES = ("BMES", "BIO", "BIOES")
BMES_TAGS = ("S", "B", "M", "E")


def _check_scheme(scheme: str) -> str:
    s = scheme.upper() if isinstance(scheme, str) else scheme
    if s not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    return s


def tag_set(scheme: str, labels: Sequence[str] = ()) -> list[str]:
    """All tags of ``scheme`` for entity ``labels`` in the canonical order.

    ``tag_set("BMES") == ["S", "B", "M", "E"]``; ``tag_set("BIO", ["PER", "LOC"]) ==
    ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]``; BIOES gives O then B, I, E, S per label.
    """
    s = _check_scheme(scheme)
    if s == "BMES":
        return list(BMES_TAGS)
    prefixes = "BI" if s == "BIO" else "BIES"
    return ["O"] + [f"{p}-{lab}" for lab in labels for p in prefixes]


# -- word segmentation (BMES) -----------------------------------------------------------------
def words_to_tags(words: Sequence[str]) -> list[str]:
    """Segmented words -> one BMES tag per character."""
    tags: list[str] = []
    for w in words:
        if len(w) == 1:
            tags.append("S")
        elif len(w) > 1:
            tags.extend(["B"] + ["M"] * (len(w) - 2) + ["E"])
    return tags


def tags_to_words(chars: Sequence[str], tags: Sequence[str]) -> list[str]:
    """Characters + BMES tags -> words. A new word starts at ``B`` or ``S`` (Su's rule), so
    any tag sequence (also an invalid one) gives a segmentation of exactly ``chars``."""
    if len(chars) != len(tags):
        raise ValueError(
            f"chars and tags must have the same length, got {len(chars)} and {len(tags)}"
        )
    words: list[str] = []
    for i, (c, t) in enumerate(zip(chars, tags)):
        if i == 0 or t in ("B", "S"):
            words.append(c)
        else:
            words[-1] += c
    return words


def words_to_spans(words: Sequence[str]) -> list[tuple[int, int]]:
    """Words -> ``[(start, end), ...]`` character spans (end exclusive)."""
    spans, pos = [], 0
    for w in words:
        spans.append((pos, pos + len(w)))
        pos += len(w)
    return spans


# -- entities (BIO / BIOES): the one converter lives in kexue.core.spans ---------------------


def allowed_transitions(scheme: str, tags: Sequence[str]) -> Constraints:
    """Allowed moves of ``scheme`` over the model's tag list (any order).

    Args:
        scheme: ``"BMES"``, ``"BIO"`` or ``"BIOES"``.
        tags: the ``k`` tag strings in the model's index order, e.g. ``tag_set("BIO", labels)``.

    Returns:
        :class:`Constraints` with ``transitions (k, k)``, ``start (k,)``, ``end (k,)`` bool.

    Raises:
        ValueError: unknown scheme or a tag that does not belong to it.
    """
    s = _check_scheme(scheme)
    parts = [split_tag(t) for t in tags]
    valid = {"BMES": set("BMES"), "BIO": set("BIO"), "BIOES": set("BIOES")}[s]
    for t, (p, lab) in zip(tags, parts):
        if p not in valid or (s == "BMES" and lab) or (s != "BMES" and p != "O" and not lab):
            raise ValueError(f"tag {t!r} is not a {s} tag")

    def can_start(p: str) -> bool:
        return p in ("B", "S", "O")

    def can_end(p: str) -> bool:
        return p in ("O", "E", "S") if s in ("BMES", "BIOES") else True

    def follows(p1: str, l1: str, p2: str, l2: str) -> bool:
        if s == "BMES":
            return p2 in ("M", "E") if p1 in ("B", "M") else p2 in ("B", "S")
        if s == "BIO":
            return p2 in ("O", "B") or (p1 in ("B", "I") and l1 == l2)
        if p1 in ("B", "I"):  # BIOES inside an entity: continue or close it
            return p2 in ("I", "E") and l1 == l2
        return p2 in ("O", "B", "S")

    k = len(tags)
    trans = torch.zeros(k, k, dtype=torch.bool)
    for i, (p1, l1) in enumerate(parts):
        for j, (p2, l2) in enumerate(parts):
            trans[i, j] = follows(p1, l1, p2, l2)
    start = torch.tensor([can_start(p) for p, _ in parts], dtype=torch.bool)
    end = torch.tensor([can_end(p) for p, _ in parts], dtype=torch.bool)
    return Constraints(trans, start, end)
