r"""Tagging recipe: text data -> (characters, tags) examples -> trained :class:`Tagger` -> scores.

Word segmentation uses BMES tags per character (:func:`kexue.tagging.schemes.words_to_tags`) and is
scored like the SIGHAN script; NER uses BIO tags and strict entity-level $F_1$. Training runs on
:class:`kexue.train.Trainer` with Adam; a CRF's transition matrix may get a larger learning rate
(``trans_lr_mult``, the PyTorch form of bert4keras's ``lr_multiplier``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kexue.data import Vocab
from kexue.tagging.metrics import cws_prf, entity_prf
from kexue.tagging.schemes import tag_set, tags_to_words, words_to_tags
from kexue.tagging.tagger import PAD, UNK, Tagger

Example = tuple[list[str], list[str]]  # (characters, tags)


def cws_examples(sentences: Sequence[Sequence[str]], max_len: int | None = None) -> list[Example]:
    """Segmented sentences -> BMES examples; with ``max_len``, long sentences are cut at word
    boundaries into pieces of at most ``max_len`` characters (a longer word is its own piece)."""
    out: list[Example] = []
    for words in sentences:
        words = [w for w in words if w]
        pieces: list[list[str]] = [[]]
        size = 0
        for w in words:
            if max_len is not None and pieces[-1] and size + len(w) > max_len:
                pieces.append([])
                size = 0
            pieces[-1].append(w)
            size += len(w)
        for p in pieces:
            if p:
                out.append((list("".join(p)), words_to_tags(p)))
    return out


def ner_examples(
    pairs: Sequence[tuple[Sequence[str], Sequence[str]]], max_len: int | None = None
) -> list[Example]:
    """(tokens, BIO tags) pairs -> examples, cut into chunks of ``max_len`` tokens if given."""
    out: list[Example] = []
    for toks, tags in pairs:
        if len(toks) != len(tags):
            raise ValueError(f"a sentence has {len(toks)} tokens but {len(tags)} tags")
        if not toks:
            continue
        step = max_len or len(toks)
        for s in range(0, len(toks), step):
            out.append((list(toks[s : s + step]), list(tags[s : s + step])))
    return out


def entity_labels(examples: Sequence[Example]) -> list[str]:
    """Sorted entity types found in BIO/BIOES tags."""
    return sorted({t.split("-", 1)[1] for _, tags in examples for t in tags if "-" in t})


def detect_scheme(examples: Sequence[Example]) -> str:
    """``"BIOES"`` if any tag starts with ``E-``/``S-``, else ``"BIO"``; ``ValueError`` on others."""
    prefixes = {t.split("-", 1)[0] if "-" in t else t for _, tags in examples for t in tags}
    if not prefixes <= set("BIOES"):
        bad = sorted(prefixes - set("BIOES"))[:5]
        raise ValueError(f"tags must be BIO or BIOES (O, B-X, I-X, E-X, S-X), found prefixes {bad}")
    return "BIOES" if prefixes & {"E", "S"} else "BIO"


def new_tagger(
    examples: Sequence[Example], task: str, *, min_freq: int = 1, **kwargs: Any
) -> Tagger:
    """A fresh :class:`Tagger` for ``task`` (``"cws"``: BMES; ``"ner"``: BIO or BIOES over the
    labels seen in ``examples``)."""
    if task == "cws":
        tags, scheme = tag_set("BMES"), "BMES"
    elif task == "ner":
        scheme = detect_scheme(examples)
        tags = tag_set(scheme, entity_labels(examples))
    else:
        raise ValueError(f"task must be 'cws' or 'ner', got {task!r}")
    kwargs.setdefault("scheme", scheme)
    vocab = Vocab.build((c for c, _ in examples), min_freq, pad=PAD, unk=UNK)
    return Tagger(vocab=vocab, tags=tags, **kwargs)


class _Collate:
    def __init__(self, tagger: Tagger) -> None:
        self.tagger = tagger

    def __call__(self, batch: list[Example]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        chars, mask = self.tagger.encode([c for c, _ in batch])
        tags = self.tagger.encode_tags([t for _, t in batch], chars.shape[1])
        return chars, mask, tags


def fit_tagger(
    tagger: Tagger,
    examples: Sequence[Example],
    *,
    epochs: int = 1,
    max_steps: int | None = None,
    batch_size: int = 32,
    lr: float = 1e-3,
    trans_lr_mult: float = 1.0,
    reduction: str = "token_mean",
    seed: int = 0,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``tagger`` in place with Adam on :class:`kexue.train.Trainer`.

    Args:
        tagger: the model.
        examples: ``(characters, tags)`` pairs.
        epochs: passes over ``examples`` (``max_steps`` stops earlier if set).
        batch_size: sentences per step.
        lr: Adam learning rate; head transition parameters get ``lr * trans_lr_mult``.
        reduction: loss reduction, the same for every head so losses are comparable.
        out_dir: where the Trainer writes metrics and checkpoints (``None``: nothing).

    Returns:
        The Trainer's history plus ``seconds_per_epoch`` (wall time / epochs run).
    """
    from kexue.train import TrainConfig, Trainer

    if not examples:
        raise ValueError("no training examples")
    head_params = [p for n, p in tagger.named_parameters() if n.startswith("head.")]
    other = [p for n, p in tagger.named_parameters() if not n.startswith("head.")]
    groups = [{"params": other, "lr": lr}]
    if head_params:
        groups.append({"params": head_params, "lr": lr * trans_lr_mult})
    optimizer = torch.optim.Adam(groups, lr=lr)

    def loss_fn(model, batch):
        chars, mask, tags = batch
        loss = model(chars, mask, tags, reduction=reduction)
        return loss, {"tokens": float(mask.sum())}

    cfg = TrainConfig(
        max_steps=max_steps,
        epochs=epochs,
        batch_size=batch_size,
        log_every=50,
        grad_clip=5.0,
        seed=seed,
        device="cpu",
        keep_last=1,
    )
    trainer = Trainer(
        tagger,
        optimizer,
        train_data=list(examples),
        collate_fn=_Collate(tagger),
        loss_fn=loss_fn,
        config=cfg,
        out_dir=out_dir,
        progress=progress,
    )
    t0 = time.perf_counter()
    hist = trainer.fit(resume=False)
    wall = time.perf_counter() - t0
    done_epochs = max(trainer.step / trainer.steps_per_epoch, 1e-9)
    tagger.eval()
    return {**hist, "seconds_per_epoch": wall / done_epochs, "train_seconds": wall}


def evaluate(
    tagger: Tagger, examples: Sequence[Example], task: str, batch_size: int = 64
) -> dict[str, Any]:
    """Decode ``examples`` and score them: ``{"precision", "recall", "f1", "sentences_per_s", ...}``.

    ``task="cws"``: SIGHAN-style word P/R/F1 (words from BMES tags, a word starts at B or S);
    ``task="ner"``: strict entity-level P/R/F1 (seqeval ``mode="strict"``) in the tagger's scheme.
    """
    t0 = time.perf_counter()
    pred = tagger.predict([c for c, _ in examples], batch_size=batch_size)
    secs = time.perf_counter() - t0
    gold = [t for _, t in examples]
    if task == "cws":
        chars = [c for c, _ in examples]
        scores: dict[str, Any] = cws_prf(
            [tags_to_words(c, g) for c, g in zip(chars, gold)],
            [tags_to_words(c, p) for c, p in zip(chars, pred)],
        )
    else:
        scheme = tagger.config.get("scheme") or "BIO"
        scores = entity_prf(gold, pred, scheme, strict=True)
    n_chars = sum(len(c) for c, _ in examples)
    scores.update(decode_seconds=secs, sentences_per_s=len(examples) / max(secs, 1e-9))
    scores.update(chars_per_s=n_chars / max(secs, 1e-9))
    return scores
