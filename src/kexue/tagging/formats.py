"""Text in and out of ``kexue tag predict`` / ``evaluate``: raw, segmented and CoNLL input;
CoNLL, JSON-span, segmented and plain-text output.

Input (:func:`iter_sentences`, streaming, one token list per sentence):

* ``raw``: one sentence per line; a word segmenter tags its characters (white space dropped),
  a character NER model every character (white space kept), a word model the white-space
  separated words;
* ``segmented``: words separated by spaces (the words are re-joined for a segmenter, so its
  characters are tagged; a word model tags the words);
* ``conll``: one token per line in column ``token_col``, a blank line between sentences, any
  other columns (e.g. gold tags) ignored, ``-DOCSTART-`` lines skipped.

Output (:func:`format_sentence`): ``conll`` (``token<TAB>tag`` lines and a blank line: readable
again by ``--format conll``), ``json`` (``{"text", "entities": [{"text", "label", "start",
"end"}]}`` or ``{"words": [...]}``), ``segmented`` (words separated by spaces, segmenters only)
or ``text`` (segmented words, or the sentence, a tab and ``LABEL:text`` entities).
Entities are read from the tags by the evaluation rule (strict spans in the model's scheme).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence

from kexue.tagging.schemes import tags_to_spans, tags_to_words

INPUT_FORMATS = ("raw", "segmented", "conll")
OUTPUT_FORMATS = ("text", "conll", "json", "segmented")


def split_units(line: str, task: str, units: str) -> list[str]:
    """Tokens of one raw input line: CWS drops white space and tags characters; NER splits into
    characters (``units="chars"``, white space kept as text) or on white space (``"words"``)."""
    if task == "cws":
        return list("".join(line.split()))
    return line.split() if units == "words" else list(line)


def iter_sentences(
    lines: Iterable[str], fmt: str, task: str, units: str, token_col: int = 0
) -> Iterator[list[str]]:
    """Token lists from input ``lines`` (see the module docstring).

    Raises:
        ValueError: an unknown ``fmt``; a CoNLL line without column ``token_col`` (line named).
    """
    if fmt not in INPUT_FORMATS:
        raise ValueError(f"input format must be one of {', '.join(INPUT_FORMATS)}, got {fmt!r}")
    if fmt == "raw":
        for line in lines:
            yield split_units(line.rstrip("\r\n"), task, units)
        return
    if fmt == "segmented":
        for line in lines:
            words = line.split()
            yield list("".join(words)) if task == "cws" or units == "chars" else words
        return
    sent: list[str] = []
    for n, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if line.startswith("-DOCSTART-"):
            continue
        if not line.strip():
            if sent:
                yield sent
                sent = []
            continue
        cols = line.split()
        if not -len(cols) <= token_col < len(cols):
            raise ValueError(f"CoNLL input, line {n}: no column {token_col} in {line!r}")
        sent.append(cols[token_col])
    if sent:
        yield sent


def entity_spans(tags: Sequence[str], scheme: str) -> list[tuple[str, int, int]]:
    """Strict spans of ``tags`` (the evaluation rule)."""
    return tags_to_spans(tags, scheme, strict=True)


def format_prediction(
    chars: list[str], tags: list[str], task: str, as_json: bool, sep: str = "", scheme: str = "BIO"
) -> str:
    """One ``text`` or ``json`` output line: segmented words (CWS) or entities ``LABEL:text``
    (NER). ``sep`` joins tokens back into text (``" "`` for word-level models)."""
    if task == "cws":
        words = tags_to_words(chars, tags) if chars else []
        return json.dumps({"words": words}, ensure_ascii=False) if as_json else " ".join(words)
    spans = entity_spans(tags, scheme)
    if as_json:
        ents = [
            {"text": sep.join(chars[s:e]), "label": lab, "start": s, "end": e}
            for lab, s, e in spans
        ]
        return json.dumps({"text": sep.join(chars), "entities": ents}, ensure_ascii=False)
    ents = " ".join(f"{lab}:{sep.join(chars[s:e])}" for lab, s, e in spans)
    return sep.join(chars) + "\t" + ents


def format_sentence(
    tokens: list[str], tags: list[str], task: str, fmt: str, sep: str = "", scheme: str = "BIO"
) -> str:
    """One sentence in output format ``fmt`` (no trailing newline; ``conll`` ends with a blank
    line's newline so sentences can be joined with ``"\\n"``).

    Raises:
        ValueError: an unknown ``fmt``, or ``segmented`` for an entity model.
    """
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
    if fmt == "conll":
        return "".join(f"{t}\t{g}\n" for t, g in zip(tokens, tags))
    if fmt == "segmented":
        if task != "cws":
            raise ValueError("--output-format segmented is for word segmenters; use conll or json")
        return " ".join(tags_to_words(tokens, tags) if tokens else [])
    return format_prediction(tokens, tags, task, fmt == "json", sep, scheme)


def cluener_line(tokens: Sequence[str], tags: Sequence[str], scheme: str) -> str:
    """A CLUENER json line (``{"text", "label": {type: {mention: [[start, end_inclusive]]}}}``)."""
    text = "".join(tokens)
    label: dict[str, dict[str, list[list[int]]]] = {}
    for lab, s, e in entity_spans(tags, scheme):
        label.setdefault(lab, {}).setdefault("".join(tokens[s:e]), []).append([s, e - 1])
    return json.dumps({"text": text, "label": label}, ensure_ascii=False)
