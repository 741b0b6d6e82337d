r"""Reading-comprehension metrics: CMRC 2018 EM / F1 and the Sogou script's Accuracy / F1 / Final.

**CMRC 2018** (port of ``cmrc2018_evaluate.py``): strings are lower-cased and split into
"mixed segments" (every CJK character and listed punctuation mark is a segment; runs of other
characters are split into words; the original calls ``nltk.word_tokenize`` there, we split on
``\w+`` / single symbols), punctuation dropped. F1 uses the *longest common contiguous
run* of segments, $P=\mathrm{lcs}/|pred|$, $R=\mathrm{lcs}/|ref|$, $F1=2PR/(P+R)$, maximised
over the accepted answers; EM compares the punctuation-free strings.

**Sogou** (the article's numbers, ``dgcnn_for_reading_comprehension/evaluate_tool``): answers are
normalised (full-width -> half-width, lower case, punctuation and blanks removed); Accuracy is
exact match with an accepted answer (or, for space-separated answers, the same set of parts);
F1 is character-bag F1, maximised over accepted answers. Empty predictions score 0.
$\mathrm{Final}=(\mathrm{Accuracy}+F1)/2$.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

__all__ = [
    "cmrc_em",
    "cmrc_f1",
    "evaluate_predictions",
    "mixed_segmentation",
    "sogou_accuracy",
    "sogou_f1",
    "sogou_normalize",
]

# the punctuation list of cmrc2018_evaluate.py
_CMRC_PUNCT = set("-:_*^/\\~`+=，。：？！“”；’《》·、「」（）－～『』") | {"……"}
_CJK = re.compile(r"[\u4e00-\u9fa5]")
_WORD = re.compile(r"\w+|[^\w\s]")


def _check(prediction: object, answers: object) -> list[str]:
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a str, got {type(prediction).__name__}")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list | tuple) or not answers:
        raise ValueError("answers must be a non-empty list of accepted answer strings")
    if not all(isinstance(a, str) for a in answers):
        raise TypeError("answers must hold str")
    return list(answers)


def mixed_segmentation(text: str, rm_punc: bool = False) -> list[str]:
    """CMRC segments: CJK characters and listed punctuation one by one, other runs by word."""
    text = text.lower().strip()
    out: list[str] = []
    run = ""
    for ch in text:
        if rm_punc and ch in _CMRC_PUNCT:
            continue
        if _CJK.match(ch) or ch in _CMRC_PUNCT:
            if run:
                out += _WORD.findall(run)
                run = ""
            out.append(ch)
        else:
            run += ch
    if run:
        out += _WORD.findall(run)
    return out


def _remove_punct(text: str) -> str:
    return "".join(c for c in text.lower().strip() if c not in _CMRC_PUNCT)


def _lcs_len(a: list[str], b: list[str]) -> int:
    """Length of the longest common contiguous run (dynamic programming, O(|a| |b|))."""
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                cur[j + 1] = prev[j] + 1
                best = max(best, cur[j + 1])
        prev = cur
    return best


def cmrc_f1(prediction: str, answers: Sequence[str]) -> float:
    """CMRC 2018 F1 in [0, 1] (max over accepted ``answers``)."""
    answers = _check(prediction, answers)
    pred = mixed_segmentation(prediction, rm_punc=True)
    best = 0.0
    for ans in answers:
        ref = mixed_segmentation(ans, rm_punc=True)
        lcs = _lcs_len(ref, pred)
        if lcs:
            p, r = lcs / len(pred), lcs / len(ref)
            best = max(best, 2 * p * r / (p + r))
    return best


def cmrc_em(prediction: str, answers: Sequence[str]) -> float:
    """CMRC 2018 exact match (1.0 or 0.0) after punctuation removal."""
    answers = _check(prediction, answers)
    pred = _remove_punct(prediction)
    return float(any(_remove_punct(a) == pred for a in answers))


def sogou_normalize(text: str) -> str:
    """Full-width -> half-width, lower case, punctuation / symbols and blanks removed."""
    chars = []
    for ch in text:
        cp = ord(ch)
        if cp == 0x3000:
            cp = 0x20
        elif 0xFF01 <= cp <= 0xFF5E:
            cp -= 0xFEE0
        c = chr(cp).lower()
        if c.isspace() or unicodedata.category(c)[0] in "PS":
            continue
        chars.append(c)
    return "".join(chars)


def sogou_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals a normalised accepted answer, or its
    space-separated parts equal an answer's parts as a set; 0.0 otherwise (and when empty)."""
    answers = _check(prediction, answers)
    pred = sogou_normalize(prediction)
    if not pred:
        return 0.0
    parts = {sogou_normalize(p) for p in re.split(r"[\s,，]+", prediction) if p} - {""}
    for a in answers:
        if sogou_normalize(a) == pred:
            return 1.0
        a_parts = {sogou_normalize(p) for p in re.split(r"[\s,，]+", a) if p} - {""}
        if len(a_parts) > 1 and a_parts == parts:
            return 1.0
    return 0.0


def sogou_f1(prediction: str, answers: Sequence[str]) -> float:
    """Character-bag F1 of the normalised strings, max over accepted answers (0 if empty)."""
    answers = _check(prediction, answers)
    pred = Counter(sogou_normalize(prediction))
    if not pred:
        return 0.0
    best = 0.0
    for a in answers:
        ref = Counter(sogou_normalize(a))
        common = sum((pred & ref).values())
        if common:
            p, r = common / sum(pred.values()), common / sum(ref.values())
            best = max(best, 2 * p * r / (p + r))
    return best


def evaluate_predictions(
    predictions: Sequence[str], answers: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Corpus means of every metric.

    Args:
        predictions: one predicted answer per question.
        answers: the accepted answers of each question.

    Returns:
        ``{"em", "f1"}`` (CMRC, in [0, 1]), ``{"accuracy", "sogou_f1", "final"}`` (Sogou) and
        ``"empty"`` (fraction of empty predictions).

    Raises:
        ValueError: different lengths or no question.
    """
    if len(predictions) != len(answers):
        raise ValueError(
            f"predictions ({len(predictions)}) and answers ({len(answers)}) differ in length"
        )
    if not predictions:
        raise ValueError("no predictions to evaluate")
    n = len(predictions)
    sums = Counter()
    for p, a in zip(predictions, answers, strict=True):
        sums["em"] += cmrc_em(p, a)
        sums["f1"] += cmrc_f1(p, a)
        sums["accuracy"] += sogou_accuracy(p, a)
        sums["sogou_f1"] += sogou_f1(p, a)
        sums["empty"] += float(not p.strip())
    out = {k: sums[k] / n for k in ("em", "f1", "accuracy", "sogou_f1", "empty")}
    out["final"] = (out["accuracy"] + out["sogou_f1"]) / 2
    return out
