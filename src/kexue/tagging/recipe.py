r"""Tagging recipe: text data -> (characters, tags) examples -> trained :class:`Tagger` -> scores.

Word segmentation uses BMES tags per character (:func:`kexue.tagging.schemes.words_to_tags`) and is
scored like the SIGHAN script; NER uses BIO tags and strict entity-level $F_1$. Training runs on
:class:`kexue.train.Trainer` with Adam; a CRF's transition matrix may get a larger learning rate
(``trans_lr_mult``, the PyTorch form of bert4keras's ``lr_multiplier``).

Entity data is checked before training (:func:`prepare_ner`, in
:mod:`kexue.tagging.entity_data`, re-exported here), with every problem named by file and line.
:func:`fit_tagger` selects the model on dev data (best dev $F_1$, patience, time budget);
:func:`evaluate` adds the unknown-word scores of :mod:`kexue.tagging.scoring`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kexue.core.checks import check_positive_int
from kexue.core.io import load_safetensors, save_safetensors
from kexue.data import Vocab
from kexue.tagging.entity_data import (  # re-exported: the checks live in entity_data
    Prepared,
    detect_scheme,
    entity_labels,
    iob1_to_bio,
    nearest_legal,
    prepare_ner,
)
from kexue.tagging.formats import entity_spans
from kexue.tagging.schemes import (
    tag_set,
    tags_to_words,
    words_to_tags,
)
from kexue.tagging.tagger import PAD, UNK, Tagger

__all__ = [
    "FORMATS", "Example", "Prepared", "chunk_origins", "cws_examples", "detect_scheme",
    "entity_labels", "evaluate", "fit_tagger", "head_loss_ms", "iob1_to_bio", "load_named", "load_split", "ner_examples",
    "nearest_legal", "new_bert_tagger", "new_tagger", "task_tags", "output_spans", "prepare_ner", "read_tagged_file",
    "train_and_score", "training_lexicon",
]  # fmt: skip
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


def chunk_origins(
    pairs: Sequence[tuple[Sequence[str], Sequence[str]]],
    origins: Sequence[str],
    max_len: int | None = None,
) -> list[str]:
    """Origins of the examples :func:`ner_examples` makes from ``pairs`` (same cutting)."""
    out: list[str] = []
    for (toks, _), o in zip(pairs, origins):
        if not toks:
            continue
        step = max_len or len(toks)
        for s in range(0, len(toks), step):
            if s and o.endswith(" +tok"):
                path, line = o[: -len(" +tok")].rsplit(", line ", 1)
                out.append(f"{path}, line {int(line) + s} +tok")
            else:
                out.append(o)
    return out


FORMATS = ("segmented", "conll", "cluener")


def read_tagged_file(
    path: str | Path, fmt: str, token_col: int = 0, tag_col: int = -1
) -> tuple[list, str, list[str]]:
    """Read a user's training / evaluation file.

    Args:
        path: the file.
        fmt: ``"segmented"`` (CWS), ``"conll"`` or ``"cluener"`` (NER).
        token_col: CoNLL token column.
        tag_col: CoNLL tag column.

    Returns:
        ``(sentences, task, origins)``: what the :mod:`kexue.data` reader returns, ``"cws"`` or
        ``"ner"``, and per sentence ``"file, line N"`` (CoNLL: ``"file, line N +tok"``, token
        ``j`` on line ``N + j``).

    Raises:
        FileNotFoundError: no such file. ValueError: malformed content (file and line).
    """
    from kexue.data import read_cluener, read_conll, read_segmented
    from kexue.data._io import iter_lines

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    starts: list[int] = []
    if fmt == "conll":
        data, task = read_conll(path, token_col=token_col, tag_col=tag_col), "ner"
        inside = False
        for n, line in enumerate(iter_lines(path), start=1):
            token = bool(line.strip()) and not line.startswith("-DOCSTART-")
            if token and not inside:
                starts.append(n)
            inside = token or (inside and line.startswith("-DOCSTART-"))
        return data, task, [f"{path}, line {n} +tok" for n in starts]
    starts = [n for n, line in enumerate(iter_lines(path), start=1) if line.strip()]
    if fmt == "segmented":
        return read_segmented(path), "cws", [f"{path}, line {n}" for n in starts]
    return read_cluener(path), "ner", [f"{path}, line {n}" for n in starts]


def load_named(name: str) -> tuple[list, list, str]:
    """A registered dataset's ``(train, dev, task)``; ``dev`` is its dev split or ``[]`` (the
    test split is never used for model selection); ``task`` is ``"cws"`` or ``"ner"``.

    Raises:
        ValueError: an unknown dataset name.
    """
    from kexue import data

    if name not in data.DATASETS:
        raise ValueError(f"unknown dataset {name!r}; see `kexue data list`")
    train = data.load(name, "train")
    try:
        dev = data.load(name, "dev")
    except (ValueError, KeyError, FileNotFoundError):
        dev = []
    sample = train[0] if train else None
    task = "ner" if isinstance(sample, tuple) else "cws"
    return train, dev, task


def load_split(name: str, split: str) -> list:
    """One split of a registered dataset (``kexue.data.load``)."""
    from kexue import data

    return data.load(name, split)


output_spans = entity_spans  # the one decoding-to-spans rule (evaluation and predict output)


def task_tags(examples: Sequence[Example], task: str) -> tuple[list[str], str]:
    """``(tags, scheme)`` for ``task``: BMES for ``"cws"``, BIO or BIOES over the labels seen in
    ``examples`` for ``"ner"``."""
    if task == "cws":
        return tag_set("BMES"), "BMES"
    if task == "ner":
        scheme = detect_scheme(examples)
        return tag_set(scheme, entity_labels(examples)), scheme
    raise ValueError(f"task must be 'cws' or 'ner', got {task!r}")


def new_bert_tagger(examples: Sequence[Example], task: str, bert: str | Path, **kwargs: Any) -> Any:
    """A fresh :class:`kexue.tagging.bert.BertTagger` on the local HF BERT directory ``bert``,
    with the tags of :func:`task_tags`; ``kwargs`` go to its constructor."""
    from kexue.tagging.bert import BertTagger

    tags, scheme = task_tags(examples, task)
    kwargs.setdefault("scheme", scheme)
    return BertTagger(bert=bert, tags=tags, **kwargs)


def new_tagger(
    examples: Sequence[Example], task: str, *, min_freq: int = 1, **kwargs: Any
) -> Tagger:
    """A fresh :class:`Tagger` for ``task`` (``"cws"``: BMES; ``"ner"``: BIO or BIOES over the
    labels seen in ``examples``).

    The vocabulary holds the tokens seen at least ``min_freq`` times (lowercased with
    ``features={"lowercase": True}``); with ``features={"char_filters": n}`` the char CNN's
    character vocabulary is built from the same tokens (unless ``char_vocab`` is given)."""
    tags, scheme = task_tags(examples, task)
    kwargs.setdefault("scheme", scheme)
    feats = dict(kwargs.pop("features", None) or {}) or None
    lower = bool(feats and feats.get("lowercase"))
    toks = ([w.lower() for w in c] if lower else c for c, _ in examples)
    vocab = Vocab.build(toks, min_freq, pad=PAD, unk=UNK)
    if feats and feats.get("char_filters") and feats.get("char_vocab") is None:
        chars = Vocab.build(("".join(c) for c, _ in examples), 1, pad=PAD, unk=UNK)
        feats["char_vocab"] = list(chars.tokens)
    return Tagger(vocab=vocab, tags=tags, features=feats, **kwargs)


class _Collate:
    def __init__(self, tagger: Tagger) -> None:
        self.tagger = tagger

    def __call__(self, batch: list[Example]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        chars, mask = self.tagger.encode([c for c, _ in batch])
        tags = self.tagger.encode_tags([t for _, t in batch], chars.shape[1])
        return chars, mask, tags


def _best_index(evals: Sequence[dict[str, Any]]) -> int:
    """Index of the first eval with the highest ``dev_f1`` (-1 if none)."""
    scores = [e.get("dev_f1", float("-inf")) for e in evals]
    return max(range(len(scores)), key=lambda i: (scores[i], -i)) if scores else -1


class _Selection:
    """Dev evaluation, best weights (memory and ``out_dir/best.safetensors``), stop rules."""

    def __init__(
        self, tagger: Tagger, dev: Sequence[Example], task: str, out_dir: Path | None,
        patience: int | None, max_seconds: float | None,
    ) -> None:  # fmt: skip
        self.tagger, self.dev, self.task = tagger, list(dev), task
        self.path = None if out_dir is None else Path(out_dir) / "best.safetensors"
        self.patience, self.max_seconds = patience, max_seconds
        self.best: dict[str, torch.Tensor] | None = None
        self.trainer: Any = None
        self.reason: str | None = None

    def eval_fn(self, model: Tagger) -> dict[str, float]:
        f1 = float(evaluate(model, self.dev, self.task)["f1"])
        prev = [e.get("dev_f1", float("-inf")) for e in self.trainer.evals]
        if not prev or f1 > max(prev):  # strictly better: the first of equal scores is kept
            self.best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if self.path is not None:
                save_safetensors(self.best, self.path)
        return {"dev_f1": f1}

    def should_stop(self, trainer: Any) -> bool:
        if self.max_seconds is not None and trainer.wall_time >= self.max_seconds:
            self.reason = "time"
        elif self.patience and self.dev and trainer.evals:
            since = len(trainer.evals) - 1 - _best_index(trainer.evals)
            if since >= self.patience:
                self.reason = "patience"
        return self.reason is not None

    def restore_best(self) -> None:
        if self.best is None and self.path is not None and self.path.is_file():
            self.best = load_safetensors(self.path)
        if self.best is not None:
            self.tagger.load_state_dict(self.best)


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
    resume: bool = False,
    overwrite: bool = False,
    ckpt_every: int | None = None,
    dev: Sequence[Example] | None = None,
    task: str | None = None,
    eval_every: int | None = None,
    patience: int | None = None,
    max_seconds: float | None = None,
    encoder_lr: float | None = None,
) -> dict[str, Any]:
    """Train ``tagger`` in place with Adam on :class:`kexue.train.Trainer`.

    With ``dev``, the dev score ($F_1$ of :func:`evaluate`) is computed every ``eval_every``
    steps (default: once per epoch) and at the end, and the tagger ends with the weights of the
    best dev evaluation (first of equal scores; also kept in ``out_dir/best.safetensors`` so a
    resumed run knows them). ``patience``: stop after that many evaluations without a better
    dev $F_1$. ``max_seconds``: stop cleanly once training (evaluations included; a resumed run
    counts the interrupted one's time) has taken that long.

    Args:
        tagger: the model.
        examples: ``(characters, tags)`` pairs.
        epochs: passes over ``examples`` (``max_steps`` stops earlier if set).
        batch_size: sentences per step.
        lr: Adam learning rate; head transition parameters get ``lr * trans_lr_mult``.
        reduction: loss reduction, the same for every head so losses are comparable.
        out_dir: where the Trainer writes metrics and checkpoints (``None``: nothing).
        resume: continue from the newest valid checkpoint in ``out_dir`` (the tagger must be
            built exactly as for the interrupted run).
        overwrite: start over in an ``out_dir`` that holds checkpoints (else the Trainer refuses).
        ckpt_every: checkpoint every this many steps (default with ``out_dir``: once per epoch).
        dev: ``(tokens, tags)`` evaluation examples for model selection (``None``: keep the last
            weights).
        task: ``"cws"`` or ``"ner"`` for scoring ``dev`` (default: ``"cws"`` for a BMES tagger).
        eval_every: steps between dev evaluations (default: one epoch).
        patience: evaluations without improvement before stopping (``None``/0: never).
        max_seconds: time budget in seconds (``None``: none).
        encoder_lr: learning rate of a pretrained encoder (a tagger with ``param_groups``, e.g.
            :class:`kexue.tagging.bert.BertTagger`; ``lr`` is then the head's). ``None``: ``lr``.

    Returns:
        The Trainer's history plus ``seconds_per_epoch`` (wall time / epochs run),
        ``train_seconds``, ``stopped_by`` (``"patience"``, ``"time"`` or ``None``) and, with
        ``dev``, ``best`` = ``{"step", "epoch", "dev_f1"}`` of the kept weights.
    """
    from kexue.train import TrainConfig, Trainer

    if not examples:
        raise ValueError("no training examples")
    if patience is not None:
        check_positive_int(patience, "patience", 0)
    if max_seconds is not None and not (max_seconds > 0):
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
    task = task or ("cws" if tagger.config.get("scheme") == "BMES" else "ner")
    head_params = [p for n, p in tagger.named_parameters() if n.startswith("head.")]
    other = [p for n, p in tagger.named_parameters() if not n.startswith("head.")]
    groups = [{"params": other, "lr": lr}]
    if head_params:
        groups.append({"params": head_params, "lr": lr * trans_lr_mult})
    if encoder_lr is not None:
        if not hasattr(tagger, "param_groups"):
            raise ValueError("encoder_lr needs a tagger with a pretrained encoder (BertTagger)")
        groups = tagger.param_groups(encoder_lr, lr, trans_lr_mult)
    optimizer = torch.optim.Adam(groups, lr=lr)

    def loss_fn(model, batch):
        chars, mask, tags = batch
        loss = model(chars, mask, tags, reduction=reduction)
        return loss, {"tokens": float(mask.sum())}

    steps_per_epoch = -(-len(examples) // batch_size)
    sel = _Selection(tagger, dev or [], task, None if out_dir is None else Path(out_dir),
                     patience, max_seconds)  # fmt: skip
    cfg = TrainConfig(
        max_steps=max_steps,
        epochs=epochs,
        batch_size=batch_size,
        eval_every=(eval_every or steps_per_epoch) if dev else None,
        log_every=50,
        grad_clip=5.0,
        seed=seed,
        device="cpu",
        keep_last=1,
        # with an out_dir, a checkpoint per epoch by default, so an interrupted run can resume
        ckpt_every=ckpt_every if ckpt_every is not None or out_dir is None else steps_per_epoch,
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
        eval_fn=sel.eval_fn if dev else None,
        should_stop=sel.should_stop if (dev and patience) or max_seconds else None,
    )
    sel.trainer = trainer
    t0 = time.perf_counter()
    hist = trainer.fit(resume=resume, overwrite=overwrite)
    wall = time.perf_counter() - t0
    done_epochs = max(trainer.step / trainer.steps_per_epoch, 1e-9)
    out = {**hist, "seconds_per_epoch": wall / done_epochs, "train_seconds": wall}
    out["stopped_by"] = sel.reason if hist.get("stopped") else None
    if dev:
        sel.restore_best()
        b = trainer.evals[_best_index(trainer.evals)]
        out["best"] = {"step": b["step"], "epoch": b["epoch"], "dev_f1": b["dev_f1"]}
    tagger.eval()
    return out


def training_lexicon(examples: Sequence[Example], task: str, sep: str = "") -> dict[str, list]:
    """What the unknown-word scores compare against: ``{"words": sorted training words}``
    (``task="cws"``) or ``{"tokens": ..., "entities": [[label, text], ...]}`` (``"ner"``)."""
    if task == "cws":
        return {"words": sorted({w for c, t in examples for w in tags_to_words(c, t)})}
    ents = {
        (lab, sep.join(c[s:e])) for c, t in examples for lab, s, e in output_spans(t, _scheme_of(t))
    }
    return {"tokens": sorted({w for c, _ in examples for w in c}), "entities": sorted(ents)}


def _scheme_of(tags: Sequence[str]) -> str:
    return "BIOES" if any(t[:2] in ("E-", "S-") for t in tags) else "BIO"


def evaluate(
    tagger: Tagger,
    examples: Sequence[Example],
    task: str,
    batch_size: int = 64,
    *,
    lexicon: dict[str, list] | None = None,
    predictions: list[list[str]] | None = None,
) -> dict[str, Any]:
    """Decode ``examples`` and score them: ``{"precision", "recall", "f1", "sentences_per_s", ...}``.

    ``task="cws"``: SIGHAN-style word P/R/F1 (words from BMES tags, a word starts at B or S);
    ``task="ner"``: strict entity-level P/R/F1 (seqeval ``mode="strict"``) in the tagger's scheme,
    with ``per_label`` scores. With ``lexicon`` (:func:`training_lexicon` of the training data)
    the unknown-word scores of :mod:`kexue.tagging.scoring` are added (OOV rate and recall;
    F1 on OOV and unseen entities). A list passed as ``predictions`` receives the predicted tags.
    """
    from kexue.tagging.scoring import entity_scores, segmentation_scores

    t0 = time.perf_counter()
    pred = tagger.predict([c for c, _ in examples], batch_size=batch_size)
    secs = time.perf_counter() - t0
    if predictions is not None:
        predictions.extend(pred)
    gold = [t for _, t in examples]
    lex = lexicon or {}
    if task == "cws":
        chars = [c for c, _ in examples]
        words = set(lex["words"]) if "words" in lex else None
        scores: dict[str, Any] = segmentation_scores(
            [tags_to_words(c, g) for c, g in zip(chars, gold)],
            [tags_to_words(c, p) for c, p in zip(chars, pred)],
            words,
        )
    else:
        scheme = tagger.config.get("scheme") or "BIO"
        toks = set(lex["tokens"]) if "tokens" in lex else None
        ents = {tuple(e) for e in lex["entities"]} if "entities" in lex else None
        sep = " " if tagger.units == "words" else ""
        tokens = [c for c, _ in examples]
        scores = entity_scores(tokens, gold, pred, scheme, toks, ents, sep)
    n_chars = sum(len(c) for c, _ in examples)
    scores.update(decode_seconds=secs, sentences_per_s=len(examples) / max(secs, 1e-9))
    scores.update(chars_per_s=n_chars / max(secs, 1e-9))
    return scores


def train_and_score(
    train: Sequence[Example],
    test: Sequence[Example],
    task: str,
    head: str,
    *,
    seed: int,
    min_freq: int = 1,
    tagger_kwargs: dict[str, Any] | None = None,
    fit_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Seed, build a tagger with ``head``, score it untrained, train it, score it again.

    Returns:
        ``{"f1", "precision", "recall", "f1_untrained", "sec_per_epoch", "chars_per_s",
        "final_loss"}`` and, for MEMM heads, ``"f1_crf_viterbi"`` (Su's practice: decode with
        the CRF-style Viterbi on emissions + transitions).
    """
    from kexue.core.seed import seed_everything

    seed_everything(seed, deterministic=False)  # before the model is built
    tagger = new_tagger(train, task, min_freq=min_freq, head=head, **(tagger_kwargs or {}))
    untrained = evaluate(tagger, test, task)["f1"]  # eval mode: uses no random numbers
    hist = fit_tagger(tagger, train, seed=seed, progress=progress, **(fit_kwargs or {}))
    ev = evaluate(tagger, test, task)
    row = {k: ev[k] for k in ("f1", "precision", "recall", "chars_per_s")}
    row.update(f1_untrained=untrained, sec_per_epoch=hist["seconds_per_epoch"])
    row["final_loss"] = float(hist["train"].get("loss", float("nan")))
    if head in ("memm", "bimemm"):
        tagger.head.decode_mode = "crf_viterbi"
        row["f1_crf_viterbi"] = evaluate(tagger, test, task)["f1"]
        tagger.head.decode_mode = "memm_exact"
    return row


def head_loss_ms(
    lengths: Sequence[int],
    k: int,
    heads: Sequence[str],
    *,
    reduction: str = "token_mean",
    seed: int = 0,
    repeats: int = 5,
) -> dict[str, float]:
    """Best-of-``repeats`` ms of one head loss forward+backward on random emissions of a batch
    with the given sentence ``lengths`` (``k`` tags; the encoder excluded), interleaved."""
    from kexue.core.timing import time_calls
    from kexue.tagging.crf import CRF
    from kexue.tagging.memm import MEMM, BiMEMM

    lens = torch.tensor(list(lengths))
    mask = torch.arange(int(lens.max()))[None, :] < lens[:, None]
    g = torch.Generator().manual_seed(seed)
    em = torch.randn(*mask.shape, k, generator=g, requires_grad=True)
    tags = torch.randint(0, k, mask.shape, generator=g)
    modules = {"crf": CRF(k), "memm": MEMM(k), "bimemm": BiMEMM(k)}
    ce = torch.nn.functional.cross_entropy

    def loss(h: str) -> torch.Tensor:
        if h == "softmax":
            return (ce(em.transpose(1, 2), tags, reduction="none") * mask).sum() / mask.sum()
        return modules[h].loss(em, tags, mask, reduction=reduction)

    best = {h: float("inf") for h in heads}
    for _ in range(repeats + 1):  # the first round warms up
        for h in heads:
            ms = time_calls(lambda h=h: loss(h).backward(), warmup=0, repeats=1).best_ms
            best[h] = min(best[h], ms)
    return best
