r"""Entity data checks before training: scheme detection, IOB1 -> BIO, repair to legal tags.

Tags must be ``O`` or ``B/I/E/S-LABEL``; a file mixing BIO and BIOES entities is refused
(:func:`detect_scheme`); IOB1 data (entities starting with ``I-``) is converted to BIO
(:func:`iob1_to_bio`); dev labels unseen in training are refused. With ``constrained=True``,
training sentences whose gold tags break the scheme's constraints are repaired to the nearest
legal sequence (:func:`nearest_legal`: fewest changed tags, by a Viterbi pass over Hamming costs).
Every problem is named by file and line (``origins``). :func:`prepare_ner` runs all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from kexue.tagging.schemes import allowed_transitions, split_tag, tag_set
from kexue.tagging.viterbi import viterbi_decode

Example = tuple[list[str], list[str]]  # (tokens, tags)


def entity_labels(examples: Sequence[Example]) -> list[str]:
    """Sorted entity types found in BIO/BIOES tags."""
    return sorted({t.split("-", 1)[1] for _, tags in examples for t in tags if "-" in t})


def _where(origins: Sequence[str] | None, i: int, pos: int | None = None) -> str:
    """``"file, line N"`` of example ``i`` (token ``pos``), or ``"example i"`` (1-based) without origins."""
    if origins is None:
        return f"example {i + 1}" if pos is None else f"example {i + 1}, token {pos + 1}"
    o = origins[i]
    if pos is not None and ", line " in o and o.endswith(" +tok"):
        path, line = o[: -len(" +tok")].rsplit(", line ", 1)
        return f"{path}, line {int(line) + pos}"
    return o.removesuffix(" +tok")


def _check_tags(examples: Sequence[Example], origins: Sequence[str] | None) -> None:
    for i, (_, tags) in enumerate(examples):
        for j, t in enumerate(tags):
            p, lab = split_tag(t)
            if p != "O" and (p not in ("B", "I", "E", "S") or not lab):
                raise ValueError(
                    f"{_where(origins, i, j)}: tag {t!r} is not BIO or BIOES "
                    "(expected O, B-X, I-X, E-X or S-X)"
                )


def detect_scheme(examples: Sequence[Example], origins: Sequence[str] | None = None) -> str:
    """The entity scheme of ``examples``: ``"BIO"`` or ``"BIOES"`` (IOB1 data reads as BIO).

    A file uses BIOES if any tag is ``E-``/``S-``. It *mixes* the schemes if it also has
    sentences written purely in BIO (an entity closed without ``E-``/``S-`` in a sentence that
    has no ``E-``/``S-`` tag at all); such a file is refused. (A BIOES sentence with a broken
    entity is a constraint violation instead, see :func:`prepare_ner`.)

    Raises:
        ValueError: a tag that is not ``O``/``B-X``/``I-X``/``E-X``/``S-X``, or mixed schemes;
            the message names the file and line (``origins``) or the sentence.
    """
    _check_tags(examples, origins)
    has_es = [any(t[:2] in ("E-", "S-") for t in tags) for _, tags in examples]
    if not any(has_es):
        return "BIO"
    for i, (_, tags) in enumerate(examples):
        if has_es[i]:
            continue
        parts = [split_tag(t) for t in tags] + [("O", "")]
        for j in range(len(tags)):
            (p, lab), (q, nlab) = parts[j], parts[j + 1]
            if p in ("B", "I") and not (q in ("I", "E") and nlab == lab):
                raise ValueError(
                    f"{_where(origins, i, j)}: the data mixes BIO and BIOES: this sentence "
                    f"closes entity {lab!r} at {tags[j]!r} without E-/S-, other sentences use them"
                )
    return "BIOES"


def _entity_starts(examples: Sequence[Example]) -> tuple[int, int]:
    """``(entities starting with B-/S-, entities starting with I-)`` under BIO reading."""
    b_starts = i_starts = 0
    for _, tags in examples:
        prev = ("O", "")
        for t in tags:
            p, lab = split_tag(t)
            if p in ("B", "S"):
                b_starts += 1
            elif p == "I" and not (prev[0] in ("B", "I") and prev[1] == lab):
                i_starts += 1
            prev = (p, lab)
    return b_starts, i_starts


def iob1_to_bio(tags: Sequence[str]) -> tuple[list[str], int]:
    """IOB1 -> BIO (IOB2): an ``I-X`` that starts an entity becomes ``B-X``.

    Returns:
        ``(bio_tags, number_of_changed_tags)``.
    """
    out, changed = list(tags), 0
    prev = ("O", "")
    for j, t in enumerate(tags):
        p, lab = split_tag(t)
        if p == "I" and not (prev[0] in ("B", "I") and prev[1] == lab):
            out[j] = f"B-{lab}"
            changed += 1
        prev = (p, lab)
    return out, changed


def nearest_legal(tags: Sequence[str], tag_list: Sequence[str], scheme: str) -> list[str]:
    r"""The legal tag sequence of ``scheme`` closest to ``tags``.

    Cost of a position: 0 for the gold tag, 1/2 for another prefix of the same entity label
    (``I-PER`` -> ``B-PER`` keeps the entity), 1 otherwise; minimised by a Viterbi pass over
    emissions $-\text{cost}_s(y)$ with transitions 0 if allowed else $-\infty$ and forbidden
    first/last tags excluded. Ties go to the lowest tag index.
    """
    cons = allowed_transitions(scheme, tag_list)
    parts = [split_tag(t) for t in tag_list]
    n, k = len(tags), len(tag_list)
    em = torch.empty(n, k, dtype=torch.float64)  # (t, k): minus the cost of tag j at step s
    for step, t in enumerate(tags):
        lab = split_tag(t)[1]
        for j, (_, jl) in enumerate(parts):
            em[step, j] = 0.0 if tag_list[j] == t else (-0.5 if lab and jl == lab else -1.0)
    em[0] = em[0].masked_fill(~cons.start, float("-inf"))
    em[-1] = em[-1].masked_fill(~cons.end, float("-inf"))
    trans = torch.zeros(k, k, dtype=torch.float64).masked_fill(~cons.transitions, float("-inf"))
    path, _ = viterbi_decode(em[None], trans, torch.ones(1, n, dtype=torch.bool))
    return [tag_list[int(i)] for i in path[0]]


@dataclass
class Prepared:
    """Checked entity data: ``train``/``dev`` examples, the scheme, labels and what was done."""

    train: list[Example]
    dev: list[Example]
    scheme: str
    labels: list[str]
    messages: list[str] = field(default_factory=list)
    repaired: int = 0
    converted_iob1: int = 0


def prepare_ner(
    train: Sequence[Example],
    dev: Sequence[Example] = (),
    *,
    train_origins: Sequence[str] | None = None,
    dev_origins: Sequence[str] | None = None,
    constrained: bool = False,
    show: int = 3,
) -> Prepared:
    """Check and normalise entity data before training (see the module docstring).

    Args:
        train: ``(tokens, tags)`` training examples.
        dev: evaluation examples.
        train_origins: per training example ``"file, line N"`` (``" +tok"`` suffix: token ``j``
            is on line ``N + j``), for messages.
        dev_origins: the same for ``dev``.
        constrained: repair training gold sequences that break the scheme's constraints.
        show: how many file:line locations a message lists.

    Returns:
        A :class:`Prepared` with the (converted / repaired) examples and messages to print.

    Raises:
        ValueError: unknown tags, mixed BIO/BIOES, or dev labels unseen in training.
    """
    msgs: list[str] = []
    scheme = detect_scheme(train, train_origins)
    dev_scheme = detect_scheme(dev, dev_origins) if dev else scheme
    if dev and dev_scheme != scheme:
        raise ValueError(f"the training data is {scheme} but the dev data is {dev_scheme}")
    out = {"train": list(train), "dev": list(dev)}
    converted = 0
    b_starts, i_starts = _entity_starts(out["train"])
    if scheme == "BIO" and i_starts > b_starts:
        # IOB1: B- only separates adjacent entities of one type, most entities start with I-
        for name, origins in (("train", train_origins), ("dev", dev_origins)):
            where: list[str] = []
            for i, (toks, tags) in enumerate(out[name]):
                new, changed = iob1_to_bio(tags)
                if changed:
                    converted += changed if name == "train" else 0
                    if len(where) < show:
                        where.append(_where(origins, i))
                    out[name][i] = (toks, new)
            if where:
                msgs.append(
                    f"{name} data is IOB1 (entities start with I-, e.g. {'; '.join(where)}): "
                    "converted to BIO (B- at every entity start)"
                )
    labels = entity_labels(out["train"])
    seen = set(labels)
    for i, (_, tags) in enumerate(out["dev"]):
        for j, t in enumerate(tags):
            lab = split_tag(t)[1]
            if lab and lab not in seen:
                raise ValueError(
                    f"{_where(dev_origins, i, j)}: dev label {lab!r} does not occur in the "
                    f"training data (training labels: {', '.join(labels) or 'none'})"
                )
    tag_list = tag_set(scheme, labels)
    cons = allowed_transitions(scheme, tag_list)
    index = {t: i for i, t in enumerate(tag_list)}
    illegal: list[int] = []
    where = []
    for i, (_, tags) in enumerate(out["train"]):
        bad = _first_violation([index[t] for t in tags], cons) if tags else None
        if bad is not None:
            illegal.append(i)
            if len(where) < show:
                where.append(_where(train_origins, i, bad))
    if illegal:
        what = "repaired to the nearest legal sequence" if constrained else "kept as they are"
        msgs.append(
            f"{len(illegal)} training sentence(s) have gold tags that break the {scheme} "
            f"constraints (e.g. {'; '.join(where)}); {what}"
            + ("" if constrained else " (only --constrained training is affected)")
        )
        if constrained:
            for i in illegal:
                toks, tags = out["train"][i]
                out["train"][i] = (toks, nearest_legal(tags, tag_list, scheme))
    repaired = len(illegal) if constrained else 0
    return Prepared(out["train"], out["dev"], scheme, labels, msgs, repaired, converted)


def _first_violation(ids: Sequence[int], cons: Any) -> int | None:
    """Position of the first tag of the first illegal start / move / end, or None if legal."""
    if not bool(cons.start[ids[0]]):
        return 0
    for j, (a, b) in enumerate(zip(ids[:-1], ids[1:])):
        if not bool(cons.transitions[a, b]):
            return j
    return None if bool(cons.end[ids[-1]]) else len(ids) - 1
