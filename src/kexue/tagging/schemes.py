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

from kexue.tagging._common import Constraints

SCHEMES = ("BMES", "BIO", "BIOES")
BMES_TAGS = ("S", "B", "M", "E")

Span = tuple[str, int, int]  # (label, start, end), end exclusive


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


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER" -> ("B", "PER")``; ``"O" -> ("O", "")``; BMES tags have an empty label."""
    if tag == "O":
        return "O", ""
    prefix, sep, label = tag.partition("-")
    if not sep:
        return tag, ""
    return prefix, label


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


# -- entities (BIO / BIOES) -------------------------------------------------------------------
def spans_to_tags(spans: Sequence[Span], length: int, scheme: str = "BIO") -> list[str]:
    """Entity spans ``(label, start, end)`` -> tags of a sequence of ``length`` tokens.

    Raises:
        ValueError: a span is empty, out of range or overlaps another.
    """
    s = _check_scheme(scheme)
    if s == "BMES":
        raise ValueError("spans_to_tags needs scheme BIO or BIOES; use words_to_tags for BMES")
    tags = ["O"] * length
    for label, start, end in spans:
        if not 0 <= start < end <= length:
            raise ValueError(f"span ({label!r}, {start}, {end}) out of range for length {length}")
        if any(t != "O" for t in tags[start:end]):
            raise ValueError(f"span ({label!r}, {start}, {end}) overlaps another span")
        if s == "BIOES" and end - start == 1:
            tags[start] = f"S-{label}"
            continue
        tags[start] = f"B-{label}"
        for i in range(start + 1, end):
            tags[i] = f"I-{label}"
        if s == "BIOES":
            tags[end - 1] = f"E-{label}"
    return tags


def tags_to_spans(tags: Sequence[str], scheme: str = "BIO", strict: bool = True) -> list[Span]:
    """Tags -> entity spans ``(label, start, end)``.

    ``strict=True`` (seqeval ``mode="strict"``): only well-formed entities count (BIO: ``B-X
    I-X*``; BIOES: ``B-X I-X* E-X`` or ``S-X``). ``strict=False`` follows conlleval / seqeval's
    default: an ``I-X`` after a different tag also starts an entity.
    """
    s = _check_scheme(scheme)
    if s == "BMES":
        raise ValueError("tags_to_spans needs scheme BIO or BIOES")
    parts = [split_tag(t) for t in tags]
    return _strict_spans(parts, s) if strict else _conll_spans(parts)


def _strict_spans(parts: list[tuple[str, str]], scheme: str) -> list[Span]:
    spans: list[Span] = []
    i, n = 0, len(parts)
    while i < n:
        p, lab = parts[i]
        if scheme == "BIOES" and p == "S":
            spans.append((lab, i, i + 1))
            i += 1
            continue
        if p != "B":
            i += 1
            continue
        j = i + 1
        while j < n and parts[j] == ("I", lab):
            j += 1
        if scheme == "BIO":
            spans.append((lab, i, j))
            i = j
        elif j < n and parts[j] == ("E", lab):
            spans.append((lab, i, j + 1))
            i = j + 1
        else:
            i = j  # B-X I-X* not closed by E-X: ill-formed, dropped
    return spans


def _conll_spans(parts: list[tuple[str, str]]) -> list[Span]:
    """conlleval's chunk rules (also seqeval's default mode)."""

    def ends(prev: str, prev_lab: str, cur: str, cur_lab: str) -> bool:
        return (
            prev in ("E", "S")
            or (prev in ("B", "I") and cur in ("B", "S", "O"))
            or (prev != "O" and prev_lab != cur_lab)
        )

    def starts(prev: str, prev_lab: str, cur: str, cur_lab: str) -> bool:
        return (
            cur in ("B", "S")
            or (prev in ("E", "S", "O") and cur in ("I", "E"))
            or (cur != "O" and prev_lab != cur_lab)
        )

    spans: list[Span] = []
    start, label = -1, ""
    prev, prev_lab = "O", ""
    for i, (cur, lab) in enumerate(parts + [("O", "")]):
        if start >= 0 and ends(prev, prev_lab, cur, lab):
            spans.append((label, start, i))
            start = -1
        if cur != "O" and starts(prev, prev_lab, cur, lab):
            start, label = i, lab
        prev, prev_lab = cur, lab
    return spans


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
