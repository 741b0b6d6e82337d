r"""The one converter between entity spans and BIO / BIOES tags (used by data readers and tagging).

An entity is a typed span ``(label, start, end)`` of token positions, ``end`` exclusive. BIO
(IOB2) marks **B**-X at an entity's first token and **I**-X inside it; BIOES adds **E**-X (last
token) and **S**-X (single-token entity); ``O`` is outside.

Decoding rule (:func:`tags_to_spans`): ``strict=True`` is seqeval's ``mode="strict"`` (only
well-formed entities count: BIO ``B-X I-X*``, BIOES ``B-X I-X* E-X`` or ``S-X``), the rule used
for evaluation *and* for tagging output, so printed scores can be reproduced from predictions.
``strict=False`` follows conlleval (an ``I-X`` after a different tag also starts an entity).
"""

from __future__ import annotations

from collections.abc import Sequence

ENTITY_SCHEMES = ("BIO", "BIOES")
OVERLAPS = ("error", "drop")

Span = tuple[str, int, int]  # (label, start, end), end exclusive


def _check_scheme(scheme: str) -> str:
    s = scheme.upper() if isinstance(scheme, str) else scheme
    if s not in ENTITY_SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(ENTITY_SCHEMES)}, got {scheme!r}")
    return s


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER" -> ("B", "PER")``; ``"O" -> ("O", "")``; a tag without ``-`` has no label."""
    if tag == "O":
        return "O", ""
    prefix, sep, label = tag.partition("-")
    if not sep:
        return tag, ""
    return prefix, label


def check_tag(tag: str, scheme: str, where: str = "") -> tuple[str, str]:
    """Split ``tag`` and check that it belongs to ``scheme`` (``O`` or ``P-label``).

    Raises:
        ValueError: naming the tag (and ``where``, e.g. ``"file.conll, line 7"``).
    """
    s = _check_scheme(scheme)
    p, lab = split_tag(tag) if isinstance(tag, str) else ("", "")
    if p != "O" and (p not in s or not lab):
        at = f"{where}: " if where else ""
        raise ValueError(
            f"{at}tag {tag!r} is not a {s} tag (expected O or {'/'.join(s.replace('O', ''))}-LABEL)"
        )
    return p, lab


def spans_to_tags(
    spans: Sequence[Span], length: int, scheme: str = "BIO", overlap: str = "error"
) -> list[str]:
    """Entity spans ``(label, start, end)`` -> ``length`` tags of ``scheme``.

    Args:
        spans: typed spans with ``0 <= start < end <= length``.
        length: number of tokens ``n``.
        scheme: ``"BIO"`` or ``"BIOES"``.
        overlap: ``"error"`` raises on overlapping spans; ``"drop"`` resolves them greedily
            (spans taken by start, longer first; a span overlapping a tagged one is dropped).

    Raises:
        ValueError: a span is empty or out of range, or overlaps another with ``"error"``.
    """
    s = _check_scheme(scheme)
    if overlap not in OVERLAPS:
        raise ValueError(f"overlap must be one of {', '.join(OVERLAPS)}, got {overlap!r}")
    ordered = spans
    if overlap == "drop":
        ordered = sorted(spans, key=lambda sp: (sp[1], sp[1] - sp[2], sp[0]))
    tags = ["O"] * length
    for label, start, end in ordered:
        if not 0 <= start < end <= length:
            raise ValueError(f"span ({label!r}, {start}, {end}) out of range for length {length}")
        if any(t != "O" for t in tags[start:end]):
            if overlap == "drop":
                continue
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
    """Tags -> entity spans ``(label, start, end)`` (see the module docstring for the rules).

    Raises:
        ValueError: a tag that is not ``O`` or ``P-LABEL`` with a prefix of ``scheme``.
    """
    s = _check_scheme(scheme)
    parts = [check_tag(t, s, f"position {i}") for i, t in enumerate(tags)]
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
