r"""The MLM reader: all answer slots predicted in one forward pass, decoded inside the passage.

Su Jianlin, 《"非自回归"也不差：基于MLM的阅读理解问答》 (kexue.fm, 2019-12-26). With
$l_{\max}=L$ ``[MASK]`` slots in front of question and passage, the answer is modelled as
conditionally independent characters, $p(y\mid x)=\prod_t p(y_t\mid x)$.

Decoding (one passage, token list $t$ *including* its final ``[SEP]``): greedy over the slots,
at slot $i$ only tokens that continue the current prefix $a$ somewhere in $t$ (plus ``[SEP]``)
are allowed; the raw (not renormalised) slot probability of the pick is kept, and the score is
their mean, the ``[SEP]`` step included:

$$a_{i}=\arg\max_{y\in N(a)\cup\{\mathrm{[SEP]}\}} P_i(y),\qquad
  v=\tfrac{1}{k}\textstyle\sum_{i\le k} P_i(a_i).$$

Several passages (or windows of one long passage) vote: for every non-empty answer string
$a$ with per-passage scores $v_1..v_c$, $s(a)=\sum_j v_j^2/(\sum_j v_j+1)$; the answer is
$\arg\max_a s(a)$, or ``''`` when no passage produced one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn import functional as F

from kexue.core.checks import check_positive_int
from kexue.mrc.features import (
    Encoded,
    answer_in_window,
    build_inputs,
    build_target,
    char_ids,
    collate,
    normalize_passage,
    special_ids,
    windows,
)

__all__ = [
    "MLMReader",
    "PassageConstraint",
    "aggregate_answers",
    "best_answer",
    "best_per_passage",
    "check_question",
    "constrained_greedy_decode",
    "masked_slot_loss",
    "unconstrained_decode",
]


# -- pure functions ----------------------------------------------------------------------------
def _pick(probs: torch.Tensor, allowed: list[int]) -> tuple[int, float]:
    """Argmax of ``probs`` over ``allowed`` (sorted ids); ties -> the lowest id."""
    vals = probs[allowed]
    best = float(vals.max())
    return allowed[int((vals == best).nonzero()[0, 0])], best


class PassageConstraint:
    """Incremental form of the passage constraint: which tokens may extend the answer so far.

    Keeps the occurrences ``s`` with ``t[s:s+k] == a`` of the current prefix ``a`` (``k``
    tokens); :meth:`allowed` is ``{t[s+k]} ∪ {[SEP]}`` (a scan, not an n-gram table).

    Args:
        passage_ids: passage tokens *including* the final ``[SEP]``.
        end_id: the ``[SEP]`` id (allowed once the answer has ``min_len`` tokens).
        min_len: fewest answer tokens before ``[SEP]`` may end it (1: never an empty answer,
            for data whose every question is answered in the passage, as CMRC and SQuAD 1).
    """

    def __init__(self, passage_ids: Sequence[int], end_id: int, min_len: int = 0) -> None:
        self.t = list(passage_ids)
        self.end_id = end_id
        self.min_len = min_len
        self.starts = list(range(len(self.t)))
        self.answer: list[int] = []

    def allowed(self) -> list[int]:
        """Sorted allowed next ids (never empty: ``[SEP]`` is in once ``min_len`` is reached,
        and whenever no passage token can continue the answer)."""
        k, t = len(self.answer), self.t
        nxt = {t[s + k] for s in self.starts if s + k < len(t)} - {self.end_id}
        if k >= self.min_len or not nxt:
            nxt.add(self.end_id)
        return sorted(nxt)

    def advance(self, tok: int) -> None:
        """Append ``tok`` (an allowed id other than ``[SEP]``) to the answer."""
        k, t = len(self.answer), self.t
        self.starts = [s for s in self.starts if s + k < len(t) and t[s + k] == tok]
        self.answer.append(tok)

    @property
    def start(self) -> int:
        """Index in ``passage_ids`` of the answer's first occurrence (0 while empty)."""
        return self.starts[0] if self.answer else 0


def constrained_greedy_decode(
    slot_probs: torch.Tensor, passage_ids: Sequence[int], end_id: int, min_len: int = 0
) -> tuple[list[int], float, int]:
    """Greedy decoding restricted to continuations that occur in the passage.

    Args:
        slot_probs: ``(L, v)`` slot distributions (softmax outputs; not renormalised here).
        passage_ids: passage tokens ``t_1..t_m`` *including* the final ``[SEP]``.
        end_id: the ``[SEP]`` id (decoding stops on it).
        min_len: ``[SEP]`` is banned until the answer has this many tokens (1: never empty).

    Returns:
        ``(answer_ids, score, start)``: the answer tokens (without ``[SEP]``; a contiguous
        sub-list of ``passage_ids``), the mean picked probability over the steps taken and
        the index in ``passage_ids`` of the answer's first occurrence (0 for ``[]``).

    Raises:
        ValueError: ``slot_probs`` is not 2-D.
    """
    if slot_probs.dim() != 2:
        raise ValueError(f"slot_probs must be (L, v), got shape {tuple(slot_probs.shape)}")
    probs = slot_probs.detach().float().cpu()
    state = PassageConstraint(passage_ids, end_id, min_len)
    total, steps = 0.0, 0
    for i in range(probs.shape[0]):
        tok, p = _pick(probs[i], state.allowed())
        total, steps = total + p, steps + 1
        if tok == end_id:
            break
        state.advance(tok)
    return state.answer, total / max(steps, 1), state.start


def unconstrained_decode(
    slot_probs: torch.Tensor, end_id: int, min_len: int = 0
) -> tuple[list[int], float]:
    """Slot-by-slot argmax until the first ``end_id``; score = mean picked probability.

    Args:
        slot_probs: ``(L, v)``.
        end_id: the ``[SEP]`` id.
        min_len: ``end_id`` is banned in the first ``min_len`` slots.

    Returns:
        ``(answer_ids without [SEP], score)``.
    """
    if slot_probs.dim() != 2:
        raise ValueError(f"slot_probs must be (L, v), got shape {tuple(slot_probs.shape)}")
    probs = slot_probs.detach().float().cpu()
    answer, total, steps = [], 0.0, 0
    every = list(range(probs.shape[1]))
    no_end = [t for t in every if t != end_id]
    for i in range(probs.shape[0]):
        tok, p = _pick(probs[i], no_end if i < min_len else every)
        total, steps = total + p, steps + 1
        if tok == end_id:
            break
        answer.append(tok)
    return answer, total / max(steps, 1)


def aggregate_answers(candidates: Sequence[tuple[str, float]]) -> dict[str, float]:
    r"""Vote over passages: $s(a)=\sum_j v_j^2 / (\sum_j v_j + 1)$ per non-empty answer ``a``.

    Args:
        candidates: ``(answer text, per-passage score v)`` pairs; empty answers are ignored.

    Returns:
        ``{answer: s(answer)}`` (empty when no candidate has a non-empty answer).
    """
    sums: dict[str, list[float]] = {}
    for text, v in candidates:
        if text:
            acc = sums.setdefault(text, [0.0, 0.0])
            acc[0] += v * v
            acc[1] += v
    return {a: sq / (s + 1.0) for a, (sq, s) in sums.items()}


def best_per_passage(windows: Sequence[tuple[int, str, float]]) -> list[tuple[str, float]]:
    """One ``(answer, score)`` per passage from ``(passage index, answer, score)`` windows.

    A passage's candidate is its highest-scoring window with a non-empty answer (ties: the
    first); a passage whose every window says "no answer" gives ``('', best score)``. Passages
    come out in order of first appearance.
    """
    best: dict[int, tuple[str, float]] = {}
    for pi, text, v in windows:
        cur = best.get(pi)
        if cur is None or (text and not cur[0]) or (bool(text) == bool(cur[0]) and v > cur[1]):
            best[pi] = (text, v)
    return list(best.values())


def best_answer(candidates: Sequence[tuple[str, float]]) -> tuple[str, float]:
    """``argmax_a s(a)`` of :func:`aggregate_answers` (ties: first seen), or ``('', 0.0)``."""
    scores = aggregate_answers(candidates)
    if not scores:
        return "", 0.0
    best = max(scores.items(), key=lambda kv: kv[1])  # max keeps the first of equal scores
    return best


def masked_slot_loss(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    r"""Cross-entropy over the non-pad slots: $\sum m\,(-\log p(y)) / \sum m$, $m=[y\ne 0]$.

    Args:
        logits: ``(b, L, v)`` slot logits.
        targets: ``(b, L)`` slot targets, 0 = ``[PAD]`` (ignored).
        reduction: ``"mean"`` (over non-pad slots of the batch), ``"sum"`` or ``"none"``
            (``(b, L)``, zeros at pads).
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be (b, L, v) and targets (b, L); got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}"
        )
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    m = targets != 0
    if logits.dtype in (torch.float16, torch.bfloat16):  # the softmax in fp32 under autocast
        logits = logits.float()
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none") * m
    if reduction == "none":
        return nll
    if reduction == "sum":
        return nll.sum()
    return nll.sum() / m.sum().clamp_min(1)


def check_question(question: object, passages: object) -> list[str]:
    """Validate one ``(question, passages)`` query; returns the passages as a list.

    Raises:
        TypeError: question not a str, passages not a str / list of str.
        ValueError: empty question or no passage.
    """
    if not isinstance(question, str):
        raise TypeError(f"question must be a str, got {type(question).__name__}")
    if not question.strip():
        raise ValueError("question is empty")
    if isinstance(passages, str):
        passages = [passages]
    if not isinstance(passages, list | tuple):
        raise TypeError(f"passages must be a str or a list of str, got {type(passages).__name__}")
    if not passages:
        raise ValueError("passages is empty: give at least one passage")
    for i, p in enumerate(passages):
        if not isinstance(p, str):
            raise TypeError(f"passages[{i}] must be a str, got {type(p).__name__}")
    return list(passages)


def set_reader_limits(
    reader: Any, model: Any, tokenizer: Any, *, max_answer_len: int, max_question_len: int,
    max_passage_len: int, stride: int | None, longest: int,
) -> None:  # fmt: skip
    """Validate and store what every reader shares: model, tokenizer, special ids, length caps,
    window stride (default half a window); ``longest`` (the longest input the reader builds, in
    tokens) must fit the model's position embeddings."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    reader.model, reader.tokenizer = model, tokenizer
    reader.ids = special_ids(tokenizer)
    reader.max_answer_len = check_positive_int(
        max_answer_len, "max_answer_len", type_error=ValueError
    )
    reader.max_question_len = check_positive_int(
        max_question_len, "max_question_len", type_error=ValueError
    )
    reader.max_passage_len = check_positive_int(
        max_passage_len, "max_passage_len", type_error=ValueError
    )
    stride = max(1, max_passage_len // 2) if stride is None else stride
    reader.stride = check_positive_int(stride, "stride", type_error=ValueError)
    if stride > max_passage_len:
        raise ValueError(f"stride ({stride}) must be <= max_passage_len ({max_passage_len})")
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if positions is not None and longest > positions:
        raise ValueError(
            f"inputs of up to {longest} tokens do not fit the model's {positions} positions;"
            " lower max_passage_len / max_question_len / max_answer_len"
        )


def _check_model_dir(path: str | os.PathLike) -> None:
    """Raise ``FileNotFoundError`` unless ``path`` holds ``config.json`` and tokenizer files."""
    from pathlib import Path

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a HF model directory")
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
        raise FileNotFoundError(f"{path} has no tokenizer (tokenizer.json or vocab.txt)")


# -- the reader --------------------------------------------------------------------------------
class MLMReader:
    """Extractive QA with a masked LM (``BertForMaskedLM`` or any model returning ``.logits``).

    Args:
        model: the masked LM; ``model(input_ids=, attention_mask=, token_type_ids=).logits`` is
            ``(b, n, v)``. HF BERT models use a faster path (MLM head on the slots only).
        tokenizer: its tokenizer (special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]``).
        max_answer_len: ``L``, the number of answer slots (answers keep ``L - 1`` tokens).
        max_question_len: question tokens kept, its ``[SEP]`` included.
        max_passage_len: passage window in tokens (without its ``[SEP]``).
        stride: step between windows of a long passage (default ``max_passage_len // 2``).
        constrained: decode inside the passage (False: slot-by-slot argmax).
        require_answer: never answer empty (every question is answered in its passages, as in
            CMRC 2018 and SQuAD 1): ``[SEP]`` is banned in the first slot, so every window gives
            its best non-empty answer and the best one wins. False: a window may say "no answer".

    Raises:
        ValueError: bad lengths, ``stride > max_passage_len``, or a position table shorter than
            the longest input ``1 + L + 1 + max_question_len + max_passage_len + 1``.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_answer_len: int = 32,
        max_question_len: int = 64,
        max_passage_len: int = 256,
        stride: int | None = None,
        constrained: bool = True,
        require_answer: bool = False,
    ) -> None:
        set_reader_limits(
            self, model, tokenizer, max_answer_len=max_answer_len,
            max_question_len=max_question_len, max_passage_len=max_passage_len, stride=stride,
            longest=max_answer_len + max_question_len + max_passage_len + 3,
        )  # fmt: skip
        self.constrained = bool(constrained)
        self.require_answer = bool(require_answer)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> MLMReader:
        """Load a local HF masked-LM directory (``config.json``, weights, tokenizer files).

        Raises:
            FileNotFoundError: no directory, no ``config.json`` or no tokenizer in it.
        """
        import transformers

        _check_model_dir(path)
        transformers.utils.logging.disable_progress_bar()
        tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = transformers.AutoModelForMaskedLM.from_pretrained(str(path), local_files_only=True)
        return cls(model.eval(), tok, **kwargs)

    # -- features ------------------------------------------------------------------------------
    def encode(self, question: str, passage: str) -> list[tuple[Encoded, str]]:
        """Inputs for one question and one passage: one per window, with the window's text.

        Returns:
            ``[(Encoded, window text)]``; the text is the (un-normalised) passage slice the
            window covers, and ``Encoded.passage_offsets`` index the full passage.
        """
        q_ids, _ = char_ids(self.tokenizer, question)
        p_ids, p_off = char_ids(self.tokenizer, normalize_passage(passage))
        out = []
        for s, e in windows(len(p_ids), self.max_passage_len, self.stride):
            enc = build_inputs(
                q_ids,
                p_ids[s:e],
                p_off[s:e],
                self.ids,
                max_answer_len=self.max_answer_len,
                max_question_len=self.max_question_len,
            )
            text = passage[p_off[s] : p_off[e - 1] + 1] if e > s else ""
            out.append((enc, text))
        return out

    def training_features(
        self, question: str, passage: str, answer: str
    ) -> list[tuple[list[int], list[int]]]:
        """``(input_ids, slot targets)`` per window. The target is the normalised answer (spaces
        become commas) in a window that holds every whitespace-separated part of it
        (:func:`~kexue.mrc.features.answer_in_window`); any other window is labelled "no
        answer" (target ``[SEP]`` first)."""
        ans = normalize_passage(answer) if answer else ""
        a_ids, _ = char_ids(self.tokenizer, ans)
        out = []
        for enc, text in self.encode(question, passage):
            present = bool(ans) and answer_in_window(answer, text)
            target = build_target(a_ids if present else [], self.max_answer_len, self.ids.sep)
            out.append((enc.input_ids, target))
        return out

    # -- model ---------------------------------------------------------------------------------
    def slot_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, model: Any = None
    ) -> torch.Tensor:
        """Slot logits ``(b, L, v)`` at positions ``1..L`` of ``input_ids (b, n)``.

        ``model`` defaults to ``self.model``; a wrapper (DDP) is called as a whole so that its
        gradient hooks run, a bare HF BERT gets the MLM head on the ``L`` slots only.
        """
        L = self.max_answer_len
        types = torch.zeros_like(input_ids)
        m = self.model if model is None else model
        if hasattr(m, "bert") and hasattr(m, "cls"):  # HF BERT: MLM head on the L slots only
            h = m.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=types
            ).last_hidden_state
            return m.cls(h[:, 1 : L + 1])
        out = m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=types)
        return out.logits[:, 1 : L + 1]

    def loss(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Masked slot cross-entropy (:func:`masked_slot_loss`) of a padded batch."""
        return masked_slot_loss(self.slot_logits(input_ids, attention_mask), targets)

    def collate_features(
        self, features: Sequence[tuple[list[int], list[int]]]
    ) -> dict[str, torch.Tensor]:
        """Batch :meth:`training_features` items: ``input_ids``/``attention_mask`` ``(b, n)``,
        ``targets`` ``(b, L)``."""
        ids, mask = collate([f[0] for f in features], self.ids.pad)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "targets": torch.tensor([f[1] for f in features], dtype=torch.long),
        }

    def batch_loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Training loss of a :meth:`collate_features` batch through ``model`` (Trainer's)."""
        logits = self.slot_logits(batch["input_ids"], batch["attention_mask"], model)
        return masked_slot_loss(logits, batch["targets"])

    # -- prediction ----------------------------------------------------------------------------
    def _decode(self, probs: torch.Tensor, enc: Encoded, passage: str) -> tuple[str, float]:
        min_len = int(self.require_answer)
        if not self.constrained:
            ids, score = unconstrained_decode(probs, self.ids.sep, min_len)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            return text.replace(" ", "").replace("##", ""), score
        ids, score, start = constrained_greedy_decode(probs, enc.passage_ids, self.ids.sep, min_len)
        if not ids:
            return "", score
        off = enc.passage_offsets
        return passage[off[start] : off[start + len(ids) - 1] + 1], score

    @torch.no_grad()
    def candidates_batch(
        self, queries: Sequence[tuple[str, Sequence[str]]], batch_size: int = 32
    ) -> list[list[tuple[str, float]]]:
        """Per query, one ``(answer, score)`` per passage (before voting).

        A passage longer than one window is read window by window, but votes once: its
        candidate is its best window's (the highest-scoring non-empty answer, else ``''``), as
        Su's truncation to one window gives one vote per passage. Without this, one answer in
        the overlap of two windows would count as two passages agreeing.
        """
        flat: list[tuple[int, int, Encoded, str]] = []
        for qi, (question, passages) in enumerate(queries):
            for pi, p in enumerate(check_question(question, passages)):
                flat += [(qi, pi, enc, p) for enc, _ in self.encode(question, p)]
        check_positive_int(batch_size, "batch_size", type_error=ValueError)
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        per_window: list[list[tuple[int, str, float]]] = [[] for _ in queries]
        try:
            for i in range(0, len(flat), batch_size):
                chunk = flat[i : i + batch_size]
                ids, mask = collate([enc.input_ids for _, _, enc, _ in chunk], self.ids.pad)
                probs = self.slot_logits(ids.to(device), mask.to(device)).float().softmax(-1)
                for (qi, pi, enc, p), pr in zip(chunk, probs.cpu(), strict=True):
                    per_window[qi].append((pi, *self._decode(pr, enc, p)))
        finally:
            self.model.train(was_training)
        return [best_per_passage(w) for w in per_window]

    def predict_batch(
        self, queries: Sequence[tuple[str, Sequence[str]]], batch_size: int = 32
    ) -> list[tuple[str, float]]:
        """:meth:`predict` for many ``(question, passages)`` queries, ``batch_size`` windows
        per forward pass."""
        return [best_answer(c) for c in self.candidates_batch(queries, batch_size)]

    def predict(self, question: str, passages: str | Sequence[str]) -> tuple[str, float]:
        """Answer ``question`` from one passage or several (voting as in the module docstring).

        Returns:
            ``(answer, s(answer))``; ``('', 0.0)`` when every passage says "no answer".

        Raises:
            TypeError / ValueError: see :func:`check_question`.
        """
        passages = check_question(question, passages)
        return self.predict_batch([(question, passages)])[0]
