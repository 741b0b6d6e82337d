"""Data, training and evaluation of the three readers (the only mrc module that touches
``kexue.data``, ``kexue.train`` and ``kexue.lm``).

* :func:`load_examples`: CMRC 2018 / WebQA sample by name, or a user's SQuAD-style or
  WebQA-style JSON file, as :class:`Example` (question, passages, per-passage answers).
* :class:`TrainSet`: per step, one passage of a question uniformly at random (as the original
  code), then one of its windows (one containing the answer with probability
  ``answer_window_prob``); RNG = the global torch RNG, which the Trainer checkpoints.
* :func:`fit`: AdamW with linear warm-up and decay through :class:`kexue.train.Trainer`.
* :func:`evaluate`: predictions, CMRC EM/F1, Sogou Accuracy/F1/Final and questions/s.
* :func:`make_reader` / :func:`save_reader` / :func:`load_reader`: readers on a local
  pretrained BERT directory (``kexue.lm``), saved as HF directories plus ``reader.json``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kexue.core.io import atomic_write_json, verify_dir_manifest, write_dir_manifest
from kexue.mrc.baselines import ARReader, SpanReader
from kexue.mrc.metrics import evaluate_predictions
from kexue.mrc.reader import MLMReader

__all__ = [
    "KINDS",
    "Example",
    "TrainSet",
    "evaluate",
    "fit",
    "lead_baseline",
    "load_examples",
    "load_reader",
    "make_reader",
    "save_reader",
]

KINDS = {"mlm": MLMReader, "ar": ARReader, "span": SpanReader}
READER_FILE = "reader.json"


@dataclass
class Example:
    """One question.

    Attributes:
        id: question id.
        question: the question.
        passages: one or more passages.
        passage_answers: per passage, its answer (``''``: none), used for training.
        answers: accepted answers for evaluation.
    """

    id: str
    question: str
    passages: list[str]
    passage_answers: list[str]
    answers: list[str] = field(default_factory=list)


def _from_squad(records: list[dict]) -> list[Example]:
    out = []
    for r in records:
        texts = [a["text"] for a in r["answers"] if a["text"].strip()]
        out.append(
            Example(r["id"], r["question"], [r["context"]], [texts[0] if texts else ""], texts)
        )
    return out


def _from_webqa(records: list[dict]) -> list[Example]:
    out = []
    for r in records:
        ps = [p["passage"] for p in r["passages"]]
        pa = [p["answer"] for p in r["passages"]]
        accepted = sorted({a for a in pa if a}, key=pa.index)
        out.append(Example(r["id"], r["question"], ps, pa, accepted))
    return out


def load_examples(
    source: str, split: str | None = None, *, fmt: str | None = None, limit: int = 0
) -> list[Example]:
    """Questions from a registered dataset or a JSON file.

    Args:
        source: ``"cmrc2018"`` (splits ``dev``, ``trial``; ``train`` with ``$KEXUE_DATA``),
            ``"webqa-sample"``, or a path to a SQuAD-style / WebQA-style JSON file.
        split: the dataset split (ignored for files).
        fmt: ``"squad"`` or ``"webqa"`` for files (default: guessed from the top level:
            ``{"data": [...]}`` is SQuAD, a list or id-keyed object is WebQA).
        limit: keep the first N questions (0 = all).

    Raises:
        FileNotFoundError: no such file. ValueError: unknown name/format or malformed JSON.
    """
    from kexue import data

    if source == "cmrc2018":
        ex = _from_squad(data.load("cmrc2018", split or "dev"))
    elif source == "webqa-sample":
        ex = _from_webqa(data.load("webqa-sample", split or "sample"))
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"no such data file or dataset: {source} (datasets: cmrc2018, webqa-sample)"
            )
        if fmt is None:
            try:
                top = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
            fmt = "squad" if isinstance(top, dict) and "data" in top else "webqa"
        if fmt == "squad":
            ex = _from_squad(data.read_squad(path))
        elif fmt == "webqa":
            ex = _from_webqa(data.read_webqa(path))
        else:
            raise ValueError(f"fmt must be 'squad' or 'webqa', got {fmt!r}")
    if not ex:
        raise ValueError(f"{source}: no questions")
    return ex[:limit] if limit else ex


class TrainSet(torch.utils.data.Dataset):
    """Training features of ``reader`` for ``examples``, sampled afresh at every access.

    Args:
        reader: an MLM, AR or span reader (``training_features``).
        examples: the questions.
        answer_window_prob: probability of drawing a window that contains the answer (when the
            drawn passage has one); otherwise any window uniformly.
        generator: RNG (``None``: the global torch RNG, checkpointed by the Trainer).
    """

    def __init__(
        self,
        reader: Any,
        examples: Sequence[Example],
        *,
        answer_window_prob: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        if not 0.0 <= answer_window_prob <= 1.0:
            raise ValueError(f"answer_window_prob must be in [0, 1], got {answer_window_prob}")
        self.p, self.g = answer_window_prob, generator
        self.items = []  # per example, per passage: (features, indices of answer windows)
        for ex in examples:
            per = []
            for passage, answer in zip(ex.passages, ex.passage_answers, strict=True):
                feats = reader.training_features(ex.question, passage, answer)
                pos = [i for i, f in enumerate(feats) if self._has_answer(reader, f)]
                per.append((feats, pos))
            self.items.append(per)

    @staticmethod
    def _has_answer(reader: Any, f: tuple) -> bool:
        if isinstance(reader, MLMReader):
            return f[1][0] != reader.ids.sep
        if isinstance(reader, SpanReader):
            return f[2] != 0
        return len(f[0]) - f[1] > 1  # AR: more than the [SEP] after the prefix

    def __len__(self) -> int:
        return len(self.items)

    def _randint(self, n: int) -> int:
        return int(torch.randint(n, (1,), generator=self.g))

    def __getitem__(self, i: int) -> tuple:
        per = self.items[i]
        feats, pos = per[self._randint(len(per))]
        if pos and float(torch.rand((), generator=self.g)) < self.p:
            return feats[pos[self._randint(len(pos))]]
        return feats[self._randint(len(feats))]


def fit(
    reader: Any,
    examples: Sequence[Example],
    *,
    steps: int,
    batch_size: int = 16,
    lr: float = 1e-4,
    warmup: int = 50,
    weight_decay: float = 0.01,
    grad_clip: float = 1.0,
    answer_window_prob: float = 0.5,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Fine-tune ``reader.model`` on ``examples`` with the reader's own loss.

    Returns:
        The Trainer history plus ``"losses"``: the logged training losses (every 10 steps).
    """
    from kexue.train import TrainConfig, Trainer

    data = TrainSet(reader, examples, answer_window_prob=answer_window_prob)
    model = reader.model

    def make_opt(params: Any) -> torch.optim.Optimizer:
        named = list(model.named_parameters())
        no_decay = ("bias", "LayerNorm.weight")
        return torch.optim.AdamW(
            [
                {
                    "params": [p for n, p in named if not n.endswith(no_decay)],
                    "weight_decay": weight_decay,
                },
                {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
            ],
            lr=lr,
        )

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))

    losses: list[float] = []

    def loss_fn(m: Any, batch: dict) -> torch.Tensor:
        loss = reader.batch_loss(m, batch)
        losses.append(float(loss.detach()))
        return loss

    cfg = TrainConfig(
        max_steps=steps,
        batch_size=batch_size,
        log_every=10,
        ckpt_every=max(100, steps // 5) if out_dir else None,
        grad_clip=grad_clip or None,
        seed=seed,
        device=device,
    )
    trainer = Trainer(
        model,
        make_opt,
        train_data=data,
        loss_fn=loss_fn,
        collate_fn=reader.collate_features,
        scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
        config=cfg,
        out_dir=out_dir,
        progress=progress,
    )
    history = trainer.fit(resume=resume)
    model.eval()
    return {**history, "losses": losses}


def evaluate(
    reader: Any, examples: Sequence[Example], *, batch_size: int = 32, progress: bool = False
) -> dict[str, Any]:
    """Predict every question and score it, as the official CMRC script does: every labelled
    question counts.

    A question whose text is empty (CMRC 2018 trial has two) cannot be asked; it gets the empty
    answer, which scores 0, and is counted in ``"empty_questions"``.

    Returns:
        :func:`~kexue.mrc.metrics.evaluate_predictions` keys plus ``"questions_per_s"``,
        ``"seconds"``, ``"n"``, ``"empty_questions"`` and ``"predictions"`` (``{id: answer}``).
    """
    labelled = [ex for ex in examples if ex.answers]
    if not labelled:
        raise ValueError("no example has an accepted answer to evaluate against")
    asked = [ex for ex in labelled if isinstance(ex.question, str) and ex.question.strip()]
    t0 = time.perf_counter()
    got: list[tuple[str, float]] = []
    step = max(batch_size * 8, 256) if progress else max(len(asked), 1)
    bar = None
    if progress and len(asked) > step:
        from tqdm import tqdm

        bar = tqdm(total=len(asked), desc="questions", unit="q", leave=False)
    for i in range(0, len(asked), step):
        chunk = asked[i : i + step]
        got += reader.predict_batch([(ex.question, ex.passages) for ex in chunk], batch_size)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    by_id = {id(ex): a for ex, (a, _) in zip(asked, got, strict=True)}
    answers = [by_id.get(id(ex), "") for ex in labelled]
    scores = evaluate_predictions(answers, [ex.answers for ex in labelled])
    if scores["empty"] > 0.9 and len(labelled) >= 50:
        # bert4keras issue 284: almost only empty answers usually means a data/format mismatch
        warnings.warn(
            f"{scores['empty']:.0%} of the predictions are empty: check the data format "
            "(field names, passage lists) and that the model was trained on this layout",
            stacklevel=2,
        )
    return {
        **scores,
        "questions_per_s": len(asked) / max(seconds, 1e-9),
        "seconds": seconds,
        "n": len(labelled),
        "empty_questions": len(labelled) - len(asked),
        "predictions": {ex.id: a for ex, a in zip(labelled, answers, strict=True)},
    }


def make_reader(kind: str, model_dir: str | os.PathLike, **kwargs: Any) -> Any:
    """A fresh reader of ``kind`` (``mlm``, ``ar``, ``span``) on the BERT in ``model_dir``.

    The span reader gets a new ``BertForQuestionAnswering`` head on the same encoder.
    """
    from kexue.lm import load_pretrained

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    model, tok = load_pretrained(model_dir, head="qa" if kind == "span" else "mlm")
    return KINDS[kind](model, tok, **kwargs)


def _reader_config(reader: Any) -> dict[str, Any]:
    kind = next(k for k, c in KINDS.items() if type(reader) is c)
    cfg = {
        "kind": kind,
        "max_answer_len": reader.max_answer_len,
        "max_question_len": reader.max_question_len,
        "max_passage_len": reader.max_passage_len,
        "stride": reader.stride,
        "require_answer": reader.require_answer,
    }
    if kind == "mlm":
        cfg["constrained"] = reader.constrained
    return cfg


def save_reader(reader: Any, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write the reader's model + tokenizer (HF directory) and ``reader.json``."""
    from kexue.lm import save_pretrained

    path = save_pretrained(reader.model, reader.tokenizer, path, manifest=False)
    atomic_write_json(path / READER_FILE, {**_reader_config(reader), **(extra or {})})
    write_dir_manifest(path)  # last: it covers reader.json too
    return path


def load_reader(path: str | os.PathLike, **overrides: Any) -> Any:
    """Load a directory written by :func:`save_reader` (``overrides``: e.g. ``constrained``).

    Raises:
        FileNotFoundError: no ``reader.json`` (not a trained reader) or no model/tokenizer.
    """
    from kexue.lm import load_pretrained

    path = Path(path)
    meta_file = path / READER_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} has no {READER_FILE}: not a directory from `mrc train`")
    verify_dir_manifest(path)
    try:
        meta = json.loads(meta_file.read_text())
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{meta_file}: not valid JSON (corrupt reader config)") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_file}: expected a JSON object")
    kind = meta.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{meta_file}: unknown reader kind {kind!r}")
    keys = ("max_answer_len", "max_question_len", "max_passage_len", "stride", "require_answer")
    keys += ("constrained",) if kind == "mlm" else ()
    kwargs = {k: meta[k] for k in keys if k in meta}
    kwargs.update(overrides)
    model, tok = load_pretrained(path, head="qa" if kind == "span" else "mlm")
    return KINDS[kind](model, tok, **kwargs)


def lead_baseline(train: list, test: list) -> dict[str, float]:
    """Scores of answering with the first k characters of the first passage, k = the median
    length of the training answers (no learning; chosen on training data only)."""
    lengths = sorted(len(ex.answers[0]) for ex in train if ex.answers)
    k = lengths[len(lengths) // 2] if lengths else 1
    labelled = [ex for ex in test if ex.answers]
    preds = ["".join(ex.passages[0].split())[:k] for ex in labelled]
    return {**evaluate_predictions(preds, [ex.answers for ex in labelled]), "k": float(k)}


def resolve_bert(
    bert: str, pretrain: Any = None, progress: bool = True
) -> tuple[Path, dict[str, Any]]:
    """``(directory, summary)`` of a BERT: a shipped model's name or a directory (``summary``
    from its manifest: held-out ``eval``, ``vocab_size``, ``manifest``), or for ``bert=""`` the
    one that :func:`kexue.lm.cached_pretrained` pretrains from ``pretrain`` (a
    :class:`kexue.lm.PretrainConfig`).

    Raises:
        FileNotFoundError: ``bert`` is neither a shipped model nor a directory.
        ValueError: a file differs from the directory's manifest.
    """
    from kexue.lm import cached_pretrained, resolve_model_dir

    if not bert:
        return cached_pretrained(pretrain, progress=progress)
    path = resolve_model_dir(bert)
    if not path.is_dir():
        raise FileNotFoundError(f"bert={bert!r}: neither a shipped model nor a directory")
    man = verify_dir_manifest(path) or {}
    ev = man.get("eval", {}).get("chinese_text_valid", {})
    return path, {
        "eval": {"mlm_accuracy": ev.get("mlm_accuracy", float("nan")),
                 "perplexity": ev.get("perplexity", float("nan"))},
        "vocab_size": man.get("vocab_size", 0),
        "cached": True,
        "manifest": man,
    }  # fmt: skip


def questions_per_second(reader: Any, examples: Sequence[Example], batch: int) -> float:
    """Questions/s of ``reader.predict_batch`` on ``examples`` at ``batch`` (after a warm-up)."""
    queries = [(ex.question, ex.passages) for ex in examples]
    reader.predict_batch(queries[:2], batch)
    t0 = time.perf_counter()
    reader.predict_batch(queries, batch)
    return len(queries) / (time.perf_counter() - t0)


def train_and_score(
    kind: str,
    model_dir: str | os.PathLike,
    train: Sequence[Example],
    test: Sequence[Example],
    held: Sequence[Example] = (),
    *,
    reader_kw: dict[str, Any],
    fit_kw: dict[str, Any],
    seed: int = 0,
    eval_batch: int = 32,
    speed_questions: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """A fresh ``kind`` reader on ``model_dir``, fine-tuned on ``train`` (:func:`fit` with
    ``fit_kw``), scored on ``test`` and on the held-out ``held`` (model selection), timed at
    batch 1 and 32 on the first ``speed_questions`` test questions.

    Returns:
        ``em f1 accuracy sogou_f1 final empty empty_questions`` (test), ``holdout_f1`` (NaN
        without ``held``), ``qps_1``, ``qps_32``, ``loss_start``/``loss_end`` (means of the
        first/last logged losses), ``train_s``, ``seed`` and ``losses`` (every logged loss).
    """
    from kexue.core.seed import seed_everything

    seed_everything(seed)
    reader = make_reader(kind, model_dir, **reader_kw)
    t0 = time.perf_counter()
    hist = fit(reader, train, seed=seed, progress=progress, **fit_kw)
    train_s = time.perf_counter() - t0
    ev = evaluate(reader, test, batch_size=eval_batch)
    hv = evaluate(reader, held, batch_size=eval_batch) if held else None
    timed = list(test[:speed_questions])
    losses = hist["losses"]
    k = max(1, min(20, len(losses) // 5))
    keys = ("em", "f1", "accuracy", "sogou_f1", "final", "empty", "empty_questions")
    return {
        **{m: ev[m] for m in keys},
        "holdout_f1": hv["f1"] if hv else float("nan"),
        "qps_1": questions_per_second(reader, timed, 1),
        "qps_32": questions_per_second(reader, timed, 32),
        "loss_start": sum(losses[:k]) / k,
        "loss_end": sum(losses[-k:]) / k,
        "train_s": train_s,
        "seed": seed,
        "losses": losses,
    }
