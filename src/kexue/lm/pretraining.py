r"""MLM pretraining of a tiny Chinese BERT from scratch, and the cache that shares it.

Objective (Devlin et al. 2019): choose 15 % of the non-special positions M of a packed chunk
$x$; replace 80 % of them by ``[MASK]``, 10 % by a random token, keep 10 %; minimise

$$\mathcal L = -\frac{1}{|M|}\sum_{i\in M}\log p_\theta(x_i \mid \tilde x).$$

Held-out quality: MLM accuracy (argmax = original character) and perplexity
$\exp(\mathcal L)$ on ``chinese-text`` valid, with every chosen position replaced by ``[MASK]``
and a fixed masking seed, so numbers are comparable across runs.

Text: ``chinese-text`` (MSRA NER sentences, LCSTS texts, CSL abstracts, CLUENER texts; the
registry guarantees it holds no CMRC 2018 context), consecutive sentences packed into chunks of
at most ``max_len - 2`` characters.

Cache: :func:`cached_pretrained` keys a finished model directory by the hash of its
:class:`PretrainConfig` under ``$KEXUE_CACHE/lm`` (default ``~/.cache/kexue/lm``), so
experiments pretrain once; an interrupted pretraining resumes from its checkpoints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kexue.core.checks import check_positive_int
from kexue.core.io import atomic_write_json, write_dir_manifest
from kexue.core.seed import seed_everything
from kexue.lm.model import save_pretrained, tiny_bert_config
from kexue.lm.tokenizer import build_tokenizer, encode_chars

__all__ = [
    "PRESETS",
    "PretrainConfig",
    "cache_dir",
    "cached_pretrained",
    "chinese_texts",
    "evaluate_mlm",
    "mask_tokens",
    "pack_texts",
    "pretrain",
    "unigram_baseline",
]

CACHE_ENV = "KEXUE_CACHE"
ARCHS = ("bert", "prelayernorm")
POS_INITS = ("random", "sinusoidal")
DONE = "pretrain_done.json"


@dataclass(frozen=True)
class PretrainConfig:
    """Every knob of the tiny-BERT pretraining (its hash keys the cache).

    Attributes:
        hidden_size / num_layers / num_heads / intermediate_size: the BERT (0 = ``4 d`` FFN).
        max_positions: position table size (inputs of downstream tasks must fit).
        max_len: pretraining chunk length in tokens, ``[CLS]``/``[SEP]`` included.
        min_freq / max_vocab: character vocabulary from the training text (0 = no cap).
        max_texts: use the first N training texts (0 = all).
        valid_texts: held-out texts for accuracy / perplexity (0 = all of valid).
        steps / batch_size / lr / warmup / weight_decay / grad_clip: optimisation (AdamW,
            linear warm-up then linear decay to 0).
        mask_prob: fraction of positions predicted.
        dropout: hidden and attention dropout (Cramming: none in pretraining).
        arch: ``"bert"`` (post-LN ``BertForMaskedLM``, the shipped kind: every kexue tool and
            every HF BERT loader takes it) or ``"prelayernorm"`` (pre-LN,
            ``RobertaPreLayerNormForMaskedLM``; an ablation arm).
        bias: False removes the biases of the QKV, attention-output and FFN linears (Cramming;
            no HF class loads such a model, so it is an ablation arm only).
        pos_init: ``"random"`` (HF's N(0, 0.02) position table) or ``"sinusoidal"`` (the
            table starts as Vaswani et al.'s sinusoids scaled to the same std: nearby positions
            start similar, so attention can find a character's neighbours from the first
            steps; the model stays a plain ``BertForMaskedLM``).
        pos_offset: True places every training chunk at a random offset of the position
            table, so all ``max_positions`` rows are trained (a reader's inputs reach far past
            ``max_len``); held-out evaluation always starts at position 0.
        seed: seeds the model init and the masking.

    The defaults follow the equal-CPU-time ablation of ``benchmarks/lm_ablation.py`` (Cramming,
    Geiping & Goldstein 2022, adapted to 2 CPU cores): no dropout, a one-cycle learning rate
    (linear warm-up to ``lr`` then linear decay to 0) peaking at 1e-3, clipping at 0.5, and the
    vocabulary projection only at the masked positions.
    """

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 0
    max_positions: int = 512
    max_len: int = 128
    min_freq: int = 2
    max_vocab: int = 0
    max_texts: int = 0
    valid_texts: int = 0
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 0.5
    mask_prob: float = 0.15
    dropout: float = 0.0
    arch: str = "bert"
    bias: bool = True
    pos_init: str = "random"
    pos_offset: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("hidden_size", "num_layers", "num_heads", "max_positions", "steps")
        positive += ("batch_size", "min_freq")
        for name in positive:
            check_positive_int(getattr(self, name), f"PretrainConfig.{name}", type_error=ValueError)
        for name in ("intermediate_size", "max_vocab", "max_texts", "valid_texts", "warmup"):
            check_positive_int(
                getattr(self, name), f"PretrainConfig.{name}", 0, type_error=ValueError
            )
        check_positive_int(
            self.seed, "PretrainConfig.seed", -(2**63), type_error=ValueError
        )  # any int
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"PretrainConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_heads ({self.num_heads})"
            )
        if not isinstance(self.max_len, int) or not 3 <= self.max_len <= self.max_positions:
            raise ValueError(
                f"PretrainConfig.max_len must be in [3, max_positions={self.max_positions}], "
                f"got {self.max_len!r}"
            )
        for name in ("lr", "mask_prob"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not 0 < v < 1:
                raise ValueError(f"PretrainConfig.{name} must be in (0, 1), got {v!r}")
        d = self.dropout
        if not isinstance(d, int | float) or isinstance(d, bool) or not 0 <= d < 1:
            raise ValueError(f"PretrainConfig.dropout must be in [0, 1), got {d!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"PretrainConfig.arch must be one of {ARCHS}, got {self.arch!r}")
        if self.pos_init not in POS_INITS:
            raise ValueError(
                f"PretrainConfig.pos_init must be one of {POS_INITS}, got {self.pos_init!r}"
            )
        for name in ("bias", "pos_offset"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"PretrainConfig.{name} must be a bool, got {getattr(self, name)!r}"
                )
        for name in ("weight_decay", "grad_clip"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not v >= 0:
                raise ValueError(f"PretrainConfig.{name} must be a number >= 0, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return dataclasses.asdict(self)

    def key(self) -> str:
        """12 hex digits of the SHA-256 of the sorted-key JSON of the fields (the cache key).

        Fields at their default that older configs lacked (``arch``, ``bias``, ``pos_init``,
        ``pos_offset``) are left out, so
        a config written before they existed keeps its key.
        """
        d = self.to_dict()
        olds = (("arch", "bert"), ("bias", True), ("pos_init", "random"), ("pos_offset", False))
        for name, default in olds:
            if d[name] == default:
                del d[name]
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


#: Named pretraining recipes (``kexue lm pretrain --preset NAME``). ``zh-char-bert`` is the
#: model shipped in the package (:func:`kexue.lm.shipped_dir`): a 2 x 256 BERT, 64-token chunks
#: at random offsets of a sinusoid-initialised 512-row position table, batch 128. Measured here:
#: a 4 x 256 BERT with 128-token chunks from position 0 (batch 64) and one with this recipe's
#: chunks stayed on the unigram plateau for 9M and 4M training tokens (held-out accuracy at the
#: unigram baseline's), while this one left it after about 6M tokens
#: (``benchmarks/lm_recipes.py``). The shipped weights are the end of its 4,800-step schedule.
PRESETS: dict[str, PretrainConfig] = {
    "zh-char-bert": PretrainConfig(
        hidden_size=256,
        num_layers=2,
        num_heads=2,
        max_positions=512,
        max_len=64,
        steps=4800,
        batch_size=128,
        lr=1e-3,
        warmup=300,
        grad_clip=0.5,
        dropout=0.0,
        mask_prob=0.15,
        pos_init="sinusoidal",
        pos_offset=True,
        seed=0,
    ),
}


# -- data --------------------------------------------------------------------------------------
def pack_texts(ids: list[list[int]], chunk: int) -> list[list[int]]:
    """Pack consecutive token lists into chunks of at most ``chunk`` tokens.

    Texts are concatenated in order; a text longer than ``chunk`` is cut into pieces. Empty
    texts are skipped.

    Returns:
        The chunks (every one non-empty, ``len <= chunk``).
    """
    check_positive_int(chunk, "chunk")
    out: list[list[int]] = []
    cur: list[int] = []
    for t in ids:
        while t:
            room = chunk - len(cur)
            cur.extend(t[:room])
            t = t[room:]
            if len(cur) == chunk:
                out.append(cur)
                cur = []
    if cur:
        out.append(cur)
    return out


class _Chunks(torch.utils.data.Dataset):
    def __init__(self, chunks: list[list[int]]) -> None:
        self.chunks = chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> list[int]:
        return self.chunks[i]


def _pad_batch(chunks: list[list[int]], cls_id: int, sep_id: int) -> tuple[torch.Tensor, ...]:
    n = max(len(c) for c in chunks) + 2
    ids = torch.zeros(len(chunks), n, dtype=torch.long)  # [PAD] = 0
    for b, c in enumerate(chunks):
        ids[b, : len(c) + 2] = torch.tensor([cls_id, *c, sep_id])
    return ids, ids != 0


def mask_tokens(
    ids: torch.Tensor,
    *,
    special: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    mask_prob: float,
    generator: torch.Generator | None = None,
    keep_random: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: choose ``mask_prob`` of the non-special positions; 80/10/10 replace.

    Args:
        ids: ``(b, n)`` token ids.
        special: ``(b, n)`` bool, True where a position must never be chosen ([CLS]/[SEP]/[PAD]).
        mask_id: the ``[MASK]`` id.
        vocab_size: random replacements are drawn from ``[5, vocab_size)`` (no special tokens).
        mask_prob: selection probability per position.
        generator: RNG (``None``: the global torch RNG, which the Trainer checkpoints).
        keep_random: False: every chosen position becomes ``[MASK]`` (held-out evaluation).

    Returns:
        ``(inputs, labels)``, both ``(b, n)``; labels are -100 at positions not chosen.
    """
    u = torch.rand(ids.shape, generator=generator)
    chosen = (u < mask_prob) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    inputs = ids.clone()
    if not keep_random:
        inputs[chosen] = mask_id
        return inputs, labels
    r = torch.rand(ids.shape, generator=generator)
    inputs[chosen & (r < 0.8)] = mask_id
    rand_pos = chosen & (r >= 0.8) & (r < 0.9)
    randoms = torch.randint(5, max(vocab_size, 6), ids.shape, generator=generator)
    inputs[rand_pos] = randoms[rand_pos]
    return inputs, labels


def chinese_texts(split: str, limit: int = 0) -> list[str]:
    """``kexue.data.load("chinese-text", split)``, the first ``limit`` texts (0 = all)."""
    from kexue import data

    texts = data.load("chinese-text", split)
    return texts[:limit] if limit else texts


@torch.no_grad()
def evaluate_mlm(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    *,
    max_len: int = 128,
    mask_prob: float = 0.15,
    batch_size: int = 64,
    seed: int = 1234,
) -> dict[str, float]:
    """Held-out MLM accuracy and perplexity (every chosen position becomes ``[MASK]``).

    Args:
        model: a ``BertForMaskedLM``-like module returning ``.logits`` ``(b, n, v)``.
        tokenizer: its tokenizer.
        texts: held-out text (packed as in training).
        max_len: chunk length including ``[CLS]``/``[SEP]``.
        mask_prob: selection probability.
        batch_size: chunks per forward pass.
        seed: the masking RNG seed (fixed: same positions for every model).

    Returns:
        ``{"mlm_accuracy", "perplexity" (= exp mean CE), "masked_tokens"}``.
    """
    chunks = pack_texts([encode_chars(tokenizer, t) for t in texts], max_len - 2)
    if not chunks:
        raise ValueError("texts has no characters to evaluate on")
    g = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nll, correct, count = 0.0, 0, 0
    for i in range(0, len(chunks), batch_size):
        ids, valid = _pad_batch(
            chunks[i : i + batch_size], tokenizer.cls_token_id, tokenizer.sep_token_id
        )
        special = ~valid | (ids == tokenizer.cls_token_id) | (ids == tokenizer.sep_token_id)
        inputs, labels = mask_tokens(
            ids,
            special=special,
            mask_id=tokenizer.mask_token_id,
            vocab_size=len(tokenizer),
            mask_prob=mask_prob,
            generator=g,
            keep_random=False,
        )
        logits = model(input_ids=inputs.to(device), attention_mask=valid.to(device)).logits
        sel = labels.to(device) != -100
        lp = torch.log_softmax(logits[sel].float(), -1)
        gold = labels.to(device)[sel]
        nll += float(-lp.gather(1, gold[:, None]).sum())
        correct += int((lp.argmax(-1) == gold).sum())
        count += int(sel.sum())
    model.train(was_training)
    count = max(count, 1)
    return {
        "mlm_accuracy": correct / count,
        "perplexity": math.exp(nll / count),
        "masked_tokens": float(count),
    }


def unigram_baseline(tokenizer: Any, train: list[str], texts: list[str]) -> dict[str, float]:
    r"""The no-learning baseline of :func:`evaluate_mlm`: predict every masked character from
    training-text character frequencies alone.

    Accuracy is the held-out frequency of the most frequent training character (the expected
    accuracy of always answering it at uniformly chosen positions); perplexity is
    $\exp(-\frac1N\sum_i \log q(x_i))$ with add-one smoothed training frequencies $q$ over the
    tokenizer's vocabulary.

    Returns:
        ``{"mlm_accuracy", "perplexity", "tokens"}``.
    """
    from collections import Counter

    counts = Counter(c for t in train for c in encode_chars(tokenizer, t))
    if not counts:
        raise ValueError("train has no characters")
    ids = [c for t in texts for c in encode_chars(tokenizer, t)]
    if not ids:
        raise ValueError("texts has no characters to evaluate on")
    top = counts.most_common(1)[0][0]
    total, v = sum(counts.values()), len(tokenizer)
    nll = -sum(math.log((counts.get(c, 0) + 1) / (total + v)) for c in ids)
    return {
        "mlm_accuracy": sum(c == top for c in ids) / len(ids),
        "perplexity": math.exp(nll / len(ids)),
        "tokens": float(len(ids)),
    }


# -- training ----------------------------------------------------------------------------------
def build_mlm(cfg: PretrainConfig, vocab_size: int) -> Any:
    """A freshly initialised masked LM of ``cfg``'s shape (seed before calling it).

    ``arch="bert"``: ``BertForMaskedLM`` (post-LN). ``arch="prelayernorm"``:
    ``RobertaPreLayerNormForMaskedLM`` (pre-LN; RoBERTa positions start at ``pad + 1``, so its
    table has 2 more rows). ``bias=False`` removes every encoder ``nn.Linear`` bias (QKV,
    attention output, FFN), as Cramming does; no HF class can reload such a model.
    Input and output embeddings are tied in both.
    """
    if cfg.arch == "bert":
        from transformers import BertForMaskedLM

        bert_cfg = tiny_bert_config(
            vocab_size,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            num_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size or None,
            max_positions=cfg.max_positions,
            dropout=cfg.dropout,
        )
        model = BertForMaskedLM(bert_cfg)
    else:
        from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormForMaskedLM

        rcfg = RobertaPreLayerNormConfig(
            vocab_size=vocab_size,
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size or 4 * cfg.hidden_size,
            max_position_embeddings=cfg.max_positions + 2,
            hidden_dropout_prob=cfg.dropout,
            attention_probs_dropout_prob=cfg.dropout,
            type_vocab_size=2,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        )
        model = RobertaPreLayerNormForMaskedLM(rcfg)
    if cfg.pos_init == "sinusoidal":
        table = model.base_model.embeddings.position_embeddings.weight
        with torch.no_grad():
            table.copy_(sinusoids(table.shape[0], table.shape[1]) * (0.02 / 0.5**0.5))
    if not cfg.bias:
        for mod in model.base_model.encoder.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.register_parameter("bias", None)
    return model


def sinusoids(n: int, d: int) -> torch.Tensor:
    r"""``(n, d)`` sinusoidal position table: $P_{p,2i}=\sin(p/10000^{2i/d})$,
    $P_{p,2i+1}=\cos(p/10000^{2i/d})$ (Vaswani et al. 2017); entries have RMS $1/\sqrt2$."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    out = torch.zeros(n, d, dtype=torch.float64)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)[:, : d // 2]
    return out.float()


def mlm_loss(m: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    r"""The pretraining step's loss: mean cross-entropy over the positions whose label is not
    -100, with the vocabulary projection computed at those ``k`` positions only.

    Args:
        m: a bare HF masked LM (:func:`encoder_and_head` finds its parts) or a DDP wrapper
            (called whole, projecting every position).
        batch: ``input_ids``, ``attention_mask``, ``labels`` ``(b, n)``; optional
            ``position_ids``.

    Returns:
        ``(loss, {"mlm_acc", "tokens"})``.
    """
    sel = batch["labels"] != -100
    parts = encoder_and_head(m)
    if parts is not None:  # bare model: the vocabulary projection on chosen slots only
        enc, head = parts
        h = enc(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch.get("position_ids"),
        )
        logits = head(h.last_hidden_state[sel])
    else:  # DDP wrapper: call it whole so gradients synchronise
        out = m(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch.get("position_ids"),
        )
        logits = out.logits[sel]
    loss = torch.nn.functional.cross_entropy(logits, batch["labels"][sel])
    acc = (logits.argmax(-1) == batch["labels"][sel]).float().mean()
    return loss, {"mlm_acc": acc, "tokens": float(batch["attention_mask"].sum())}


def encoder_and_head(model: Any) -> tuple[Any, Any] | None:
    """``(encoder, MLM head)`` of a bare HF masked LM (``None`` for a wrapper such as DDP).

    The head maps ``(k, d)`` hidden states to ``(k, v)`` logits, so a caller can project only
    the ``k`` masked positions instead of all ``b n``.
    """
    if hasattr(model, "bert") and hasattr(model, "cls"):
        return model.bert, model.cls
    if hasattr(model, "roberta_prelayernorm") and hasattr(model, "lm_head"):
        return model.roberta_prelayernorm, model.lm_head
    return None


def pretrain(
    cfg: PretrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    device: str | None = None,
    texts: tuple[list[str], list[str]] | None = None,
) -> dict[str, Any]:
    """Pretrain a tiny BERT with :class:`kexue.train.Trainer` and write a HF directory.

    ``out_dir`` gets ``config.json``, ``model.safetensors``, the tokenizer files,
    ``pretrain_config.json`` and ``pretrain_eval.json``; the Trainer's ``metrics.jsonl`` and
    checkpoints sit in ``out_dir/trainer`` (``resume=True`` continues from them, bit-exactly).
    Runs unchanged under ``torchrun`` (rank 0 writes). ``texts = (train, valid)`` replaces
    ``chinese-text`` (tests; the cache never does this).

    Returns:
        A dict with the keys ``history`` (the Trainer's), ``eval`` (:func:`evaluate_mlm` on
        held-out text), ``initial_loss``, ``final_loss``, ``vocab_size`` and ``chunks``.
    """
    from kexue.train import TrainConfig, Trainer, is_main_process, unwrap

    out = Path(out_dir)
    seed_everything(cfg.seed)
    train_texts = chinese_texts("train", cfg.max_texts) if texts is None else list(texts[0])
    tokenizer = build_tokenizer(train_texts, min_freq=cfg.min_freq, max_size=cfg.max_vocab or None)
    chunks = pack_texts([encode_chars(tokenizer, t) for t in train_texts], cfg.max_len - 2)
    model = build_mlm(cfg, len(tokenizer))
    cls_id, sep_id, mask_id = (
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
        tokenizer.mask_token_id,
    )
    v = len(tokenizer)

    def collate(batch: list[list[int]]) -> dict[str, torch.Tensor]:
        ids, valid = _pad_batch(batch, cls_id, sep_id)
        special = ~valid | (ids == cls_id) | (ids == sep_id)
        inputs, labels = mask_tokens(
            ids, special=special, mask_id=mask_id, vocab_size=v, mask_prob=cfg.mask_prob
        )
        out = {"input_ids": inputs, "attention_mask": valid, "labels": labels}
        if cfg.pos_offset:  # every row at a random offset: all max_positions rows get trained
            b, n = ids.shape
            room = cfg.max_positions - n + 1
            off = torch.randint(room, (b, 1))
            out["position_ids"] = off + torch.arange(n)[None]
        return out

    loss_fn = mlm_loss

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to 0
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - cfg.warmup))

    no_decay = ("bias", "LayerNorm.weight")

    def make_opt(params: Any) -> torch.optim.Optimizer:
        named = list(model.named_parameters())
        groups = [
            {
                "params": [p for n, p in named if not n.endswith(no_decay)],
                "weight_decay": cfg.weight_decay,
            },
            {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=cfg.lr)

    tcfg = TrainConfig(
        max_steps=cfg.steps,
        batch_size=cfg.batch_size,
        log_every=20,
        ckpt_every=max(50, cfg.steps // 10),
        grad_clip=cfg.grad_clip or None,
        seed=cfg.seed,
        drop_last=len(chunks) >= cfg.batch_size,
        device=device,
    )
    trainer = Trainer(
        model,
        make_opt,
        train_data=_Chunks(chunks),
        loss_fn=loss_fn,
        collate_fn=collate,
        scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
        config=tcfg,
        out_dir=out / "trainer",
        progress=progress,
    )
    history = trainer.fit(resume=resume)
    bare = unwrap(trainer.model)
    losses = [
        json.loads(line)
        for line in (out / "trainer" / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]
    train_losses = [r["loss"] for r in losses if r.get("event") == "train"]
    valid = chinese_texts("valid", cfg.valid_texts) if texts is None else list(texts[1])
    ev = evaluate_mlm(bare, tokenizer, valid, max_len=cfg.max_len, mask_prob=cfg.mask_prob)
    result = {
        "history": {k: history[k] for k in ("steps", "wall_time", "train", "tokens_per_s")},
        "eval": ev,
        "initial_loss": train_losses[0] if train_losses else None,
        "final_loss": train_losses[-1] if train_losses else None,
        "vocab_size": v,
        "chunks": len(chunks),
    }
    if is_main_process():
        save_pretrained(bare, tokenizer, out, manifest=False)
        atomic_write_json(out / "pretrain_config.json", cfg.to_dict())
        atomic_write_json(out / "pretrain_eval.json", result)
        write_dir_manifest(out)  # last: it covers the two files above
    return result


def model_from_checkpoint(
    run_dir: str | os.PathLike, step: int | None = None
) -> tuple[Any, Any, PretrainConfig]:
    """``(model, tokenizer, config)`` of a :func:`pretrain` run at a Trainer checkpoint, e.g. an
    interrupted or still running one (its ``pretrain_config.json`` must be in ``run_dir``).

    The tokenizer is rebuilt from the training text as :func:`pretrain` builds it
    (deterministic: the same vocabulary, in the same order); the weights are verified against
    the checkpoint's manifest. ``step=None``: the newest checkpoint.

    Raises:
        FileNotFoundError: no config or no such checkpoint. ValueError: a corrupt checkpoint or
            weights that do not fit the config.
    """
    from kexue.train.checkpoint import read_checkpoint

    run = Path(run_dir)
    cf = run / "pretrain_config.json"
    if not cf.is_file():
        raise FileNotFoundError(f"{run}: no pretrain_config.json (not a `kexue lm pretrain` run)")
    cfg = PretrainConfig(**json.loads(cf.read_text()))
    ckroot = run / "trainer" / "checkpoints"
    steps = (
        sorted(int(p.name.split("_")[1]) for p in ckroot.glob("step_*")) if ckroot.is_dir() else []
    )
    if not steps:
        raise FileNotFoundError(f"{run}: no checkpoints under {ckroot}")
    step = steps[-1] if step is None else int(step)
    if step not in steps:
        raise FileNotFoundError(f"{run}: no checkpoint at step {step} (have {steps})")
    weights, _ = read_checkpoint(ckroot / f"step_{step:08d}")
    train_texts = chinese_texts("train", cfg.max_texts)
    tokenizer = build_tokenizer(train_texts, min_freq=cfg.min_freq, max_size=cfg.max_vocab or None)
    model = build_mlm(cfg, len(tokenizer))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [m for m in missing if not m.endswith("decoder.weight")]:
        raise ValueError(
            f"{ckroot}: weights do not fit the config ({missing[:3]}, {unexpected[:3]})"
        )
    model.tie_weights()
    return model.eval(), tokenizer, cfg


def cache_dir() -> Path:
    """``$KEXUE_CACHE`` if set, else ``~/.cache/kexue``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kexue"


def cached_pretrained(
    cfg: PretrainConfig, *, progress: bool = True, device: str | None = None
) -> tuple[Path, dict[str, Any]]:
    """The model directory pretrained with ``cfg``, pretraining it first if not cached.

    The directory is ``cache_dir()/lm/tiny-bert-<cfg.key()>``; it counts as finished once it
    holds ``pretrain_done.json`` (written last). An unfinished one is resumed.

    Returns:
        ``(path, pretrain summary)`` (the summary of :func:`pretrain`, plus ``"cached"``: bool).
    """
    path = cache_dir() / "lm" / f"tiny-bert-{cfg.key()}"
    done = path / DONE
    if done.is_file():
        return path, {**json.loads(done.read_text()), "cached": True}
    partial = (path / "trainer" / "checkpoints").is_dir()
    if path.exists() and not partial:
        shutil.rmtree(path)
    result = pretrain(cfg, path, resume=partial, progress=progress, device=device)
    atomic_write_json(done, result)
    return path, {**result, "cached": False}
