"""Character-level title generation: vocabulary, data, training (shared Trainer), decoding, scores.

The glue between :mod:`kexue.seq2seq` and the plumbing (:mod:`kexue.data`, :mod:`kexue.train`):
``build_vocab`` -> ``encode_pairs`` -> ``new_model`` -> ``fit`` -> ``generate`` / ``evaluate``;
``save_model`` / ``load_model`` keep a model directory (``model.safetensors`` +
``seq2seq.json`` with the config and vocabulary; training checkpoints under ``train/``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from kexue.core.io import (
    atomic_write_json,
    load_safetensors,
    save_safetensors,
    verify_dir_manifest,
    write_dir_manifest,
)
from kexue.data import Vocab
from kexue.seq2seq.beam import beam_search
from kexue.seq2seq.bidirectional import BidirectionalSeq2Seq
from kexue.seq2seq.bisearch import bidirectional_beam_search
from kexue.seq2seq.metrics import char_tokens, title_scores
from kexue.seq2seq.model import Seq2Seq, Seq2SeqConfig
from kexue.train import TrainConfig, Trainer

SPECIALS = ("<bos>", "<eos>")  # ids 2, 3 after <pad> 0 and <unk> 1
KINDS = ("l2r", "bidirectional")
META = "seq2seq.json"


# ---------------------------------------------------------------- vocabulary and data
def build_vocab(
    pairs: Sequence[tuple[str, str]], *, min_freq: int = 1, max_size: int | None = None
) -> Vocab:
    """Character vocabulary over sources and targets: ``<pad> <unk> <bos> <eos>`` then by count."""
    corpus = [char_tokens(s) + char_tokens(t) for s, t in pairs]
    return Vocab.build(corpus, min_freq=min_freq, max_size=max_size, specials=SPECIALS)


def encode_text(vocab: Vocab, text: str, max_len: int, *, closed: bool = False) -> list[int]:
    """Ids of the first ``max_len`` characters of ``text`` (whitespace dropped).

    Raises:
        ValueError: empty text; with ``closed``, a character missing from the vocabulary.
    """
    chars = char_tokens(text)[:max_len]
    if not chars:
        raise ValueError(f"empty text: {text!r}")
    if closed:
        missing = sorted({c for c in chars if c not in vocab})
        if missing:
            raise ValueError(
                f"characters not in the vocabulary (closed): {''.join(missing[:10])!r}"
            )
    return vocab.encode(chars)


class PairData(Dataset):
    """Encoded (source ids, target ids[, pseudo target ids]) examples."""

    def __init__(self, items: list[tuple[list[int], ...]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[list[int], ...]:
        return self.items[i]


def encode_pairs(
    vocab: Vocab, pairs: Sequence[tuple[str, str]], *, max_src_len: int, max_tgt_len: int
) -> PairData:
    """Encode ``(source, target)`` strings, truncating to the maximum lengths."""
    items = []
    for k, (s, t) in enumerate(pairs):
        try:
            items.append((encode_text(vocab, s, max_src_len), encode_text(vocab, t, max_tgt_len)))
        except ValueError as e:
            raise ValueError(f"pair {k}: {e}") from None
    return PairData(items)


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int = 0) -> torch.Tensor:
    """Right-pad id lists into a ``(b, n)`` int64 tensor."""
    n = max(1, max(len(s) for s in seqs))
    out = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate(batch: list[tuple[list[int], ...]]) -> tuple[torch.Tensor, ...]:
    """``[(src, tgt[, pseudo])]`` -> padded ``src (b, s)``, ``tgt (b, t)`` [, ``pseudo (b, t')``]."""
    return tuple(pad_batch([ex[j] for ex in batch]) for j in range(len(batch[0])))


# ---------------------------------------------------------------- models
def new_model(kind: str, vocab: Vocab, **sizes: Any) -> Seq2Seq | BidirectionalSeq2Seq:
    """A fresh ``"l2r"`` (:class:`Seq2Seq`) or ``"bidirectional"`` model over ``vocab``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    cfg = Seq2SeqConfig(
        vocab_size=len(vocab), pad_id=vocab.pad_id, bos_id=vocab[SPECIALS[0]],
        eos_id=vocab[SPECIALS[1]], **sizes,
    )  # fmt: skip
    return Seq2Seq(cfg) if kind == "l2r" else BidirectionalSeq2Seq(cfg)


def kind_of(model: nn.Module) -> str:
    """``"bidirectional"`` or ``"l2r"``."""
    return "bidirectional" if isinstance(model, BidirectionalSeq2Seq) else "l2r"


class _Loss(nn.Module):
    """Forward = the model's training loss, so DDP (torchrun) synchronises its gradients."""

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, pseudo: torch.Tensor | None = None):
        ls = {"label_smoothing": self.label_smoothing}
        if pseudo is None:
            return self.model.loss(src, tgt, **ls)
        return self.model.loss(src, tgt, pseudo=pseudo, **ls)


def fit(
    model: nn.Module,
    train: PairData,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    warmup: int = 100,
    seed: int = 0,
    label_smoothing: float = 0.0,
    out_dir: str | os.PathLike | None = None,
    eval_fn: Any = None,
    eval_every: int | None = None,
    ckpt_every: int = 0,
    resume: bool = False,
    progress: bool = False,
    overwrite: bool = False,
    dev: tuple[Vocab, Sequence[tuple[str, str]]] | None = None,
    dev_src_len: int = 256,
    dev_tgt_len: int = 32,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Train with :class:`kexue.train.Trainer` (Adam, linear warm-up then cosine decay, clip 1).

    Model selection: with ``dev = (vocab, pairs)`` (held-out *training* pairs, never the test
    set), the greedy character ROUGE-L of ``pairs`` is computed every ``eval_every`` steps
    (default: 10 times per run) and at the end, and the model ends with the weights of the best
    evaluation (the first of equal scores; kept in ``out_dir/best.safetensors`` so a resumed run
    knows them); ``history["best"] = {"step", "dev_rougeL"}``. ``max_seconds`` stops cleanly
    once training (evaluations included; a resumed run counts the interrupted one's time) has
    taken that long; ``history["stopped"]`` says so. The schedule still follows ``steps``.

    ``overwrite=True`` discards checkpoints an earlier run left in ``out_dir/train``.
    ``label_smoothing`` is that of ``F.cross_entropy`` (on the pointer's mixture when the model
    has one).

    ``out_dir/train`` receives the Trainer's metrics and checkpoints (``resume=True`` continues
    bit-exactly). ``eval_fn(model) -> dict`` gets the bare seq2seq model. Returns the Trainer's
    history; the model is trained in place.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds!r}")
    if dev is not None and eval_fn is not None:
        raise ValueError("give dev or eval_fn, not both")
    wrapper = _Loss(model, label_smoothing)
    sel = None
    if dev is not None:
        sel = _Selection(model, *dev, dev_src_len, dev_tgt_len, out_dir)
        eval_fn = sel.eval_fn
        eval_every = eval_every or max(1, steps // 10)

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict]:
        loss = m(*batch)
        return loss, {"tokens": float((batch[1] != 0).sum() + batch[1].shape[0])}

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    cfg = TrainConfig(
        max_steps=steps, batch_size=batch_size, log_every=max(1, min(50, steps // 10)),
        ckpt_every=ckpt_every, grad_clip=1.0, seed=seed, eval_every=eval_every, keep_last=2,
    )  # fmt: skip
    trainer = Trainer(
        wrapper,
        lambda ps: torch.optim.Adam(ps, lr=lr),
        train_data=train,
        loss_fn=loss_fn,
        collate_fn=collate,
        eval_fn=None if eval_fn is None else (lambda w: eval_fn(w.model)),
        scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
        config=cfg,
        out_dir=None if out_dir is None else Path(out_dir) / "train",
        progress=progress,
        should_stop=None if max_seconds is None else (lambda tr: tr.wall_time >= max_seconds),
    )
    if sel is not None:
        sel.trainer = trainer
    history = trainer.fit(resume=resume, overwrite=overwrite)
    if sel is not None and trainer.evals:
        sel.restore_best()
        best = max(range(len(trainer.evals)), key=lambda i: (trainer.evals[i]["dev_rougeL"], -i))
        history["best"] = {k: trainer.evals[best][k] for k in ("step", "dev_rougeL")}
    model.eval()
    return history


class _Selection:
    """Dev ROUGE-L (greedy) as the Trainer's eval; keeps the best weights (memory and disk)."""

    def __init__(self, model, vocab, pairs, src_len, tgt_len, out_dir) -> None:
        if not pairs:
            raise ValueError("dev: no pairs")
        self.model, self.vocab, self.pairs = model, vocab, list(pairs)
        self.src_len, self.tgt_len = src_len, tgt_len
        self.path = None if out_dir is None else Path(out_dir) / "best.safetensors"
        self.best: dict[str, torch.Tensor] | None = None
        self.trainer: Any = None

    def eval_fn(self, model: nn.Module) -> dict[str, float]:
        ev = evaluate(model, self.vocab, self.pairs, max_src_len=self.src_len, beam_size=1,
                      max_len=self.tgt_len)  # fmt: skip
        prev = [e["dev_rougeL"] for e in self.trainer.evals if "dev_rougeL" in e]
        if not prev or ev["rougeL"] > max(prev):
            self.best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if self.path is not None:
                save_safetensors(self.best, self.path)
        return {"dev_rougeL": float(ev["rougeL"])}

    def restore_best(self) -> None:
        if self.best is None and self.path is not None and self.path.is_file():
            self.best = load_safetensors(self.path)
        if self.best is not None:
            self.model.load_state_dict(self.best)


# ---------------------------------------------------------------- decoding and scores
@torch.no_grad()
def generate_ids(
    model: nn.Module,
    sources: Sequence[Sequence[int]],
    *,
    beam_size: int = 3,
    max_len: int = 32,
    length_penalty: float = 0.0,
    batch_size: int = 32,
    stop: str = "best_overall",
    no_repeat_ngram: int = 0,
) -> list[dict[str, Any]]:
    """Decode encoded sources in length-sorted batches; results in input order.

    ``no_repeat_ngram`` (L2R models only) bans repeating an n-gram of that size within an output.

    Returns one dict per source: ``tokens`` (ids), and for bidirectional models also
    ``direction`` (0 L2R, 1 R2L), ``l2r`` and ``r2l`` (each direction's best ids).
    """
    model.eval()
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[dict[str, Any]] = [{} for _ in sources]
    bi = isinstance(model, BidirectionalSeq2Seq)
    if bi and no_repeat_ngram:
        raise ValueError("no_repeat_ngram is not supported by the bidirectional search (use 0)")
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        src = pad_batch([sources[i] for i in idx], model.config.pad_id).to(device)
        if bi:
            res = bidirectional_beam_search(
                model, src, beam_size=beam_size, max_len=max_len, stop=stop, banned=(1,)
            )
            for j, i in enumerate(idx):
                out[i] = {
                    "tokens": _row(res.tokens[j]), "direction": int(res.direction[j]),
                    "l2r": _row(res.l2r_tokens[j]), "r2l": _row(res.r2l_tokens[j]),
                }  # fmt: skip
        else:
            toks, _ = beam_search(
                model, src, beam_size=beam_size, max_len=max_len, length_penalty=length_penalty,
                no_repeat_ngram=no_repeat_ngram,
            )  # fmt: skip
            for j, i in enumerate(idx):
                out[i] = {"tokens": _row(toks[j])}
    return out


def _row(x: torch.Tensor) -> list[int]:
    return x[x >= 0].tolist()


def detok(vocab: Vocab, ids: Sequence[int]) -> str:
    """Ids -> string (special tokens dropped)."""
    return "".join(t for t in vocab.decode(list(ids)) if t not in (vocab.unk, *SPECIALS))


def generate(
    model: nn.Module, vocab: Vocab, texts: Sequence[str], *, max_src_len: int = 256, **kw: Any
) -> list[str]:
    """Titles for raw ``texts`` (see :func:`generate_ids` for the keyword arguments)."""
    ids = [encode_text(vocab, t, max_src_len) for t in texts]
    return [detok(vocab, r["tokens"]) for r in generate_ids(model, ids, **kw)]


def position_accuracy(hyps: Sequence[str], refs: Sequence[str], n: int = 4) -> tuple[float, float]:
    """Accuracy of the first ``n`` and of the last ``n`` characters (the paper's table).

    Position ``i`` of the first block is right when ``hyp[i] == ref[i]``; position ``j`` from the
    end when ``hyp[-j] == ref[-j]`` (missing characters count as wrong). Over references with at
    least ``n`` characters.
    """
    first = last = total = 0
    for h, r in zip(hyps, refs, strict=True):
        h, r = char_tokens(h), char_tokens(r)
        if len(r) < n:
            continue
        total += n
        first += sum(i < len(h) and h[i] == r[i] for i in range(n))
        last += sum(j <= len(h) and h[-j] == r[-j] for j in range(1, n + 1))
    return (first / total, last / total) if total else (float("nan"), float("nan"))


def position_curve(
    hyps: Sequence[str], refs: Sequence[str], idx: Sequence[int], n: int = 4
) -> list[float]:
    """Accuracy at positions ``1..n`` from the start, then ``n..1`` from the end, over pairs ``idx``."""
    pts = []
    for p in list(range(n)) + list(range(-n, 0)):
        ok = []
        for i in idx:
            h, r = char_tokens(hyps[i]), char_tokens(refs[i])
            ok.append((len(h) > p if p >= 0 else len(h) >= -p) and h[p] == r[p])
        pts.append(sum(ok) / len(ok) if ok else float("nan"))
    return pts


def length_buckets(refs: Sequence[str]) -> list[tuple[str, list[int]]]:
    """Reference-length terciles: ``[(label, indices), ...]`` (empty buckets dropped)."""
    lens = [len(char_tokens(r)) for r in refs]
    srt = sorted(lens)
    a, b = srt[len(srt) // 3], srt[2 * len(srt) // 3]
    out = [
        (f"<= {a}", [i for i, n in enumerate(lens) if n <= a]),
        (f"{a + 1}-{b}", [i for i, n in enumerate(lens) if a < n <= b]),
        (f"> {b}", [i for i, n in enumerate(lens) if n > b]),
    ]
    return [(name, idx) for name, idx in out if idx]


def lead_baseline(pairs: Sequence[tuple[str, str]], n: int) -> list[str]:
    """The first ``n`` characters of every source (the copy-the-lead baseline)."""
    return ["".join(char_tokens(s)[:n]) for s, _ in pairs]


def evaluate(
    model: nn.Module,
    vocab: Vocab,
    pairs: Sequence[tuple[str, str]],
    *,
    max_src_len: int = 256,
    **kw: Any,
) -> dict[str, Any]:
    """ROUGE-1/2/L, BLEU (character level) and the generated titles for ``(source, ref)`` pairs."""
    hyps = generate(model, vocab, [s for s, _ in pairs], max_src_len=max_src_len, **kw)
    return {**title_scores(hyps, [t for _, t in pairs]), "hyps": hyps}


# ---------------------------------------------------------------- model directories
def save_model(
    out_dir: str | os.PathLike, model: nn.Module, vocab: Vocab, extra: dict | None = None
) -> Path:
    """Write ``model.safetensors``, ``seq2seq.json`` (kind, config, vocabulary, ``extra``) and
    ``kexue_manifest.json`` (size and sha256 of every file, checked by :func:`load_model`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(model.state_dict(), out / "model.safetensors", metadata={"format": "pt"})
    meta = {
        "kind": kind_of(model),
        "config": model.config.to_dict(),
        "vocab": vocab.to_dict(),
        **(extra or {}),
    }
    atomic_write_json(out / META, meta)
    write_dir_manifest(out)  # last: it covers both files
    return out


def load_model(model_dir: str | os.PathLike) -> tuple[nn.Module, Vocab, dict[str, Any]]:
    """Inverse of :func:`save_model`: ``(model in eval mode, vocab, metadata)``.

    Raises:
        FileNotFoundError: not a model directory.
        ValueError: unreadable or inconsistent files, or a file that differs from the
            directory's manifest (a flipped byte, a truncation; named in one line).
    """
    import json

    d = Path(model_dir)
    if not (d / META).is_file() or not (d / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{d} is not a seq2seq model directory (needs {META} and model.safetensors)"
        )
    verify_dir_manifest(d)  # directories written before manifests load without one
    try:
        meta = json.loads((d / META).read_text(encoding="utf-8"))
        cfg = Seq2SeqConfig(**meta["config"])
        vocab = Vocab.from_dict(meta["vocab"])
        kind = meta["kind"]
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{d / META}: malformed ({e})") from None
    if kind not in KINDS:
        raise ValueError(f"{d / META}: kind must be one of {KINDS}, got {kind!r}")
    model = Seq2Seq(cfg) if kind == "l2r" else BidirectionalSeq2Seq(cfg)
    weights = load_safetensors(d / "model.safetensors")
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ValueError(
            f"{d / 'model.safetensors'}: does not match {META} ({str(e).splitlines()[0]})"
        ) from None
    return model.eval(), vocab, meta


def pseudo_target_data(model: nn.Module, data: PairData, max_len: int) -> PairData:
    """Items ``(src, tgt, pseudo)`` for :meth:`BidirectionalSeq2Seq.loss`'s ``pseudo=``: each
    source's greedy title by ``model`` (its first source token when it writes nothing)."""
    outs = generate_ids(model, [it[0] for it in data.items], beam_size=1, max_len=max_len)
    return PairData(
        [(s, t, o["tokens"] or s[:1]) for (s, t, *_), o in zip(data.items, outs, strict=True)]
    )


def train_and_decode(
    kind: str,
    vocab: Vocab,
    train: PairData,
    test: Sequence[tuple[str, str]],
    *,
    model_kw: dict[str, Any],
    fit_kw: dict[str, Any],
    dev: Sequence[tuple[str, str]] = (),
    max_src_len: int = 128,
    max_tgt_len: int = 32,
    beam_size: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """A fresh ``kind`` model (:func:`new_model` with ``model_kw``) trained by :func:`fit`
    (``fit_kw``; the kept step selected on ``dev``, held-out *training* pairs), then ``test``
    decoded with beam ``beam_size``.

    Returns:
        ``hyps`` (test titles), ``loss0``/``loss1`` (teacher-forced loss of the first 64
        training pairs before/after), ``test_loss`` (of the first 64 test pairs), ``train_s``,
        ``decode_s``, ``r2l_share`` (share of bidirectional outputs won by R2L), ``kept_step``,
        ``params`` and ``model``.
    """
    from kexue.core.seed import seed_everything

    seed_everything(seed)
    model = new_model(kind, vocab, **model_kw)
    device = next(model.parameters()).device
    lim = {"max_src_len": max_src_len, "max_tgt_len": max_tgt_len}
    probe = tuple(x.to(device) for x in collate([it[:2] for it in train.items[:64]]))
    tprobe = tuple(x.to(device) for x in collate(encode_pairs(vocab, test[:64], **lim).items))
    with torch.no_grad():
        model.eval()
        loss0 = model.loss(*probe).item()
    t0 = time.perf_counter()
    hist = fit(model, train, seed=seed, dev=(vocab, dev) if dev else None,
               dev_src_len=max_src_len, dev_tgt_len=max_tgt_len, **fit_kw)  # fmt: skip
    train_s = time.perf_counter() - t0
    with torch.no_grad():
        loss1, test_loss = model.loss(*probe).item(), model.loss(*tprobe).item()
    t0 = time.perf_counter()
    sources = [encode_text(vocab, s, max_src_len) for s, _ in test]
    outs = generate_ids(model, sources, beam_size=beam_size, max_len=max_tgt_len)
    return {
        "hyps": [detok(vocab, o["tokens"]) for o in outs], "loss0": loss0, "loss1": loss1,
        "test_loss": test_loss, "train_s": train_s, "decode_s": time.perf_counter() - t0,
        "r2l_share": sum(o.get("direction", 0) for o in outs) / len(outs),
        "kept_step": hist.get("best", {}).get("step", fit_kw.get("steps")),
        "params": sum(p.numel() for p in model.parameters()), "model": model,
    }  # fmt: skip
