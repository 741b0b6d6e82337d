r"""Pretrained-BERT tagger: a local HF BERT -> first-piece states -> emissions $f$ -> head.

The article's setting (Su, 《CRF用过了，不妨再了解下更快的MEMM？》, 2020; bert4keras examples): a
pretrained BERT encodes ``[CLS] x [SEP]`` and a dense layer gives per-position emissions,

$$f_j = W\,h_{\pi(j)} + b\in\mathbb R^{k},\qquad h=\mathrm{BERT}([\mathrm{CLS}],p_1,\dots,p_m,[\mathrm{SEP}]),$$

where $p_1..p_m$ are the word pieces of the sentence's units and $\pi(j)$ is the position of the
**first piece** of unit $j$. The emissions go to the same heads as :class:`kexue.tagging.Tagger`
(softmax, CRF, MEMM, Bi-MEMM); unlike Su's scripts, ``[CLS]``/``[SEP]`` get no tag.

Alignment (one emission row per unit, always):

* ``units="chars"`` (Chinese): each character is tokenised **alone** and contributes exactly one
  token, its first piece (a Latin letter or digit is therefore its word-initial piece, never
  ``##x``, as in :func:`kexue.lm.encode_chars`); a character the tokenizer drops (white space,
  control characters) or does not know becomes ``[UNK]``.
* ``units="words"``: each word contributes all its pieces (``[UNK]`` if it has none); its
  emission is read at its first piece.

Length: BERT has ``max_position_embeddings`` absolute positions. A sentence whose pieces do not
fit in ``max_length - 2`` is cut, at unit boundaries, into consecutive windows that each fit
(``overflow="split"``, the default; each window is encoded as its own ``[CLS] .. [SEP]`` with no
context from its neighbours, and a single word longer than a window keeps its first pieces),
or refused with ``ValueError`` (``overflow="error"``).

Ids: :meth:`BertTagger.encode` returns ``(b, t, P)`` int64 piece ids per unit, ``-1`` where a unit
has fewer than ``P`` pieces (``P = 1`` for characters), so ``ids.shape[1]`` is the number of
units, as :func:`kexue.tagging.recipe.fit_tagger` / ``evaluate`` / ``predict`` expect of a
:class:`Tagger`. A saved model is a self-contained directory: ``model.safetensors`` (BERT, dense
and head weights), ``tagger.json``, and the HF ``config.json`` and tokenizer files; nothing is
ever fetched from a hub (``local_files_only=True``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kexue.core.checks import check_positive_int
from kexue.core.io import (
    atomic_write_json,
    load_safetensors,
    save_safetensors,
    staged_dir,
)
from kexue.tagging.crf import CRF
from kexue.tagging.memm import MEMM, BiMEMM
from kexue.tagging.schemes import allowed_transitions
from kexue.tagging.tagger import HEADS, UNITS, Tagger, _check_state

__all__ = ["BERT_FORMAT", "BertTagger", "load_tagger"]

BERT_FORMAT = "kexue.tagging.BertTagger/1"
OVERFLOW = ("split", "error")
MODEL_TYPES = ("bert",)  # BertModel checkpoints: bert-base-chinese, RoBERTa-wwm-ext, MacBERT ...


def _quiet_transformers() -> Any:
    """``transformers`` with its progress bars off (its warnings stay)."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    return transformers


def _read_bert_dir(path: str | os.PathLike) -> tuple[nn.Module, Any]:
    """``(BertModel without pooler, tokenizer)`` from a local HF directory, one-line errors."""
    transformers = _quiet_transformers()
    d = Path(path)
    if not d.is_dir():
        raise ValueError(f"BERT directory not found: {d}")
    if not (d / "config.json").is_file():
        raise ValueError(f"{d} has no config.json: not a HF BERT directory")
    try:
        cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{d / 'config.json'}: not valid JSON ({str(err).splitlines()[0]})"
        ) from None
    kind = cfg.get("model_type") if isinstance(cfg, dict) else None
    if kind not in MODEL_TYPES:
        raise ValueError(f"{d} holds a {kind!r} model, expected a BERT (model_type 'bert')")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "cls.* weights not used": expected for MLM dirs
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(d), local_files_only=True)
        bert = transformers.BertModel.from_pretrained(
            str(d), local_files_only=True, add_pooling_layer=False
        )
    except (OSError, ValueError, KeyError) as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{d}: cannot load the BERT or its tokenizer ({msg})") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    # fp16 on disk (the shipped zh-char-bert, many users' checkpoints) loads as fp16 under
    # transformers 5: fine-tuning in fp16 on a CPU overflows, so train in float32
    return bert.float(), tokenizer


def _make_head(head: str, k: int, constraints: Any, kwargs: dict[str, Any]) -> nn.Module | None:
    """The tagging head module of ``head`` over ``k`` tags (``None`` for ``"softmax"``)."""
    if head == "softmax":
        return None
    return {"crf": CRF, "memm": MEMM, "bimemm": BiMEMM}[head](k, constraints=constraints, **kwargs)


class BertTagger(nn.Module):
    """A pretrained BERT + dense emissions + tagging head; duck-type compatible with :class:`Tagger`.

    Args:
        bert: a local HF BERT directory (``config.json``, weights, tokenizer files; e.g. a
            user's Chinese BERT or one written by :func:`kexue.lm.save_pretrained`), or a
            ``transformers.BertModel`` (then ``tokenizer`` is required).
        tags: id -> tag table (``k`` tags).
        tokenizer: the BERT's tokenizer when ``bert`` is a module (read from the directory
            otherwise).
        head: ``"softmax"``, ``"crf"``, ``"memm"`` or ``"bimemm"``.
        dropout: dropout on the BERT output before the dense layer.
        scheme: tag scheme (``"BMES"``, ``"BIO"``, ``"BIOES"``) or ``None``.
        constrained: forbid the scheme's illegal transitions in the head (needs ``scheme``).
        units: ``"chars"`` or ``"words"`` (see the module docstring for the alignment).
        head_kwargs: extra keyword arguments of the head.
        max_length: longest window in tokens, ``[CLS]``/``[SEP]`` included (default: the
            BERT's ``max_position_embeddings``; smaller is faster).
        overflow: ``"split"`` long sentences into windows, or ``"error"``.

    Raises:
        ValueError: a missing / non-BERT directory (one line naming it), an unknown head / units
            / overflow, empty tags, ``constrained`` without a scheme, dropout outside [0, 1),
            ``max_length`` outside ``[3, max_position_embeddings]``.
        TypeError: ``bert`` is neither a path nor a module, or a module without ``tokenizer``.
    """

    def __init__(
        self,
        *,
        bert: str | os.PathLike | nn.Module,
        tags: Sequence[str],
        tokenizer: Any = None,
        head: str = "crf",
        dropout: float = 0.1,
        scheme: str | None = None,
        constrained: bool = False,
        units: str = "chars",
        head_kwargs: dict[str, Any] | None = None,
        max_length: int | None = None,
        overflow: str = "split",
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        if units not in UNITS:
            raise ValueError(f"units must be one of {', '.join(UNITS)}, got {units!r}")
        if overflow not in OVERFLOW:
            raise ValueError(f"overflow must be one of {', '.join(OVERFLOW)}, got {overflow!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise TypeError(f"dropout must be a float, got {type(dropout).__name__}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if len(tags) < 1:
            raise ValueError("tags must not be empty")
        if constrained and scheme is None:
            raise ValueError("constrained=True needs a scheme")
        if isinstance(bert, str | os.PathLike):
            bert, tokenizer = _read_bert_dir(bert)
        elif not isinstance(bert, nn.Module):
            raise TypeError(f"bert must be a directory or a BertModel, got {type(bert).__name__}")
        elif tokenizer is None:
            raise TypeError("a BertModel needs its tokenizer (tokenizer=...)")
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise ValueError("the tokenizer has no [CLS]/[SEP] tokens: not a BERT tokenizer")
        limit = int(bert.config.max_position_embeddings)
        max_length = limit if max_length is None else max_length
        check_positive_int(max_length, "max_length", 3)
        if max_length > limit:
            raise ValueError(
                f"max_length must be <= max_position_embeddings ({limit}), got {max_length}"
            )
        self.bert, self.tokenizer, self.tags = bert, tokenizer, list(tags)
        self.config = dict(
            head=head, encoder="bert", dropout=dropout, scheme=scheme, constrained=constrained,
            units=units, head_kwargs=dict(head_kwargs or {}), max_length=max_length,
            overflow=overflow,
        )  # fmt: skip
        self.extra: dict[str, Any] = {}
        self._pieces: dict[str, list[int]] = {}  # unit -> piece ids (cache)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(int(bert.config.hidden_size), len(self.tags))
        cons = allowed_transitions(scheme, self.tags) if constrained else None
        self.head = _make_head(head, len(self.tags), cons, dict(head_kwargs or {}))

    # the text-side and head-side behaviour is the Tagger's, shared rather than copied
    head_name = Tagger.head_name
    units = Tagger.units
    encode_tags = Tagger.encode_tags
    loss_from_emissions = Tagger.loss_from_emissions
    forward = Tagger.forward
    decode = Tagger.decode
    predict = Tagger.predict

    # -- text <-> tensors ---------------------------------------------------------------------
    def _unit_pieces(self, units: Sequence[str]) -> list[list[int]]:
        """Piece ids of each unit (chars: exactly one; words: >= 1), ``[UNK]`` if none."""
        new = sorted({u for u in units if u not in self._pieces})
        if new:
            enc = self.tokenizer(new, add_special_tokens=False)["input_ids"]
            unk = self.tokenizer.unk_token_id
            for u, ids in zip(new, enc):
                ids = list(ids) or [unk]
                self._pieces[u] = ids[:1] if self.units == "chars" else ids
        return [self._pieces[u] for u in units]

    def encode(self, sentences: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor]:
        """Units -> ``(ids (b, t, P) int64, mask (b, t) bool)``.

        ``ids[i, j, :]`` are the piece ids of unit ``j`` of sentence ``i``, ``-1`` past its last
        piece and at padded units; ``P`` = 1 for characters, the most pieces of any word else.
        """
        per = [self._unit_pieces(list(s)) for s in sentences]
        t = max([len(p) for p in per] + [1])
        width = max([len(x) for p in per for x in p] + [1])
        ids = torch.full((len(sentences), t, width), -1, dtype=torch.long)
        for i, pieces in enumerate(per):
            for j, x in enumerate(pieces):
                ids[i, j, : len(x)] = torch.tensor(x, dtype=torch.long)
        lengths = torch.tensor([len(p) for p in per], dtype=torch.long)
        return ids, torch.arange(t)[None, :] < lengths[:, None]

    def _windows(self, ids: Tensor, mask: Tensor) -> list[tuple[int, int, list[int], list[int]]]:
        """``(sentence, first unit, piece ids, first-piece offsets)`` of every window."""
        budget = self.config["max_length"] - 2
        out = []
        for i, (row, n) in enumerate(zip(ids.tolist(), mask.sum(1).tolist())):
            start, toks, firsts = 0, [], []
            for j in range(n):
                pieces = [p for p in row[j] if p >= 0][:budget] or [self.tokenizer.unk_token_id]
                if toks and len(toks) + len(pieces) > budget:
                    if self.config["overflow"] == "error":
                        raise ValueError(
                            f"sentence {i} needs more than max_length={budget + 2} tokens "
                            "(overflow='error'; use overflow='split' to cut it into windows)"
                        )
                    out.append((i, start, toks, firsts))
                    start, toks, firsts = j, [], []
                firsts.append(len(toks) + 1)  # + 1: [CLS]
                toks.extend(pieces)
            if n:
                out.append((i, start, toks, firsts))
        return out

    # -- model --------------------------------------------------------------------------------
    def emissions(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Emission scores at each unit's first piece.

        Args:
            ids: ``(b, t, P)`` piece ids from :meth:`encode`.
            mask: ``(b, t)`` bool prefix mask of valid units.

        Returns:
            ``(b, t, k)``; rows at padded units are the dense layer's bias.
        """
        if ids.dim() != 3 or mask.shape != ids.shape[:2]:
            raise ValueError(
                f"ids must be (b, t, P) and mask (b, t), got {tuple(ids.shape)} and "
                f"{tuple(mask.shape)}"
            )
        b, t = mask.shape
        hidden = self.proj.in_features
        states = self.proj.weight.new_zeros(b, t, hidden)  # (b, t, d)
        wins = self._windows(ids, mask)
        if wins:
            n = max(len(w[2]) for w in wins) + 2
            pad = self.tokenizer.pad_token_id or 0
            tok = torch.full((len(wins), n), pad, dtype=torch.long)
            att = torch.zeros(len(wins), n, dtype=torch.long)
            rows, units, pos = [], [], []
            for r, (i, start, toks, firsts) in enumerate(wins):
                seq = [self.tokenizer.cls_token_id, *toks, self.tokenizer.sep_token_id]
                tok[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                att[r, : len(seq)] = 1
                rows += [r] * len(firsts)
                units += [(i, start + j) for j in range(len(firsts))]
                pos += firsts
            dev = states.device
            h = self.bert(input_ids=tok.to(dev), attention_mask=att.to(dev)).last_hidden_state
            bi, ti = torch.tensor(units, dtype=torch.long, device=dev).unbind(1)
            states = states.index_put(
                (bi, ti), h[torch.tensor(rows, device=dev), torch.tensor(pos, device=dev)]
            )
        return self.proj(self.drop(states))

    def param_groups(
        self, encoder_lr: float, head_lr: float, trans_lr_mult: float = 1.0
    ) -> list[dict[str, Any]]:
        """Optimizer parameter groups: the BERT at ``encoder_lr``, the dense layer at ``head_lr``,
        the head's transition parameters at ``head_lr * trans_lr_mult``.

        Returns:
            ``[{"name", "params", "lr"}, ...]`` (empty groups left out), for ``torch.optim``.

        Raises:
            ValueError: a learning rate that is not a number > 0.
        """
        for name, v in (
            ("encoder_lr", encoder_lr),
            ("head_lr", head_lr),
            ("trans_lr_mult", trans_lr_mult),
        ):
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
                raise ValueError(f"{name} must be a number > 0, got {v!r}")
        named = {
            "encoder": (list(self.bert.parameters()), encoder_lr),
            "dense": (list(self.proj.parameters()), head_lr),
            "transitions": (
                list(self.head.parameters()) if self.head else [],
                head_lr * trans_lr_mult,
            ),
        }
        return [{"name": k, "params": p, "lr": lr} for k, (p, lr) in named.items() if p]

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write a self-contained model directory atomically (see the module docstring).

        Everything is written into a temporary sibling directory that is then renamed to
        ``directory``; other entries of an existing ``directory`` (e.g. checkpoints) are moved
        over first, so a reader sees the old model or the new one, never a mix. Returns it.
        """
        d = Path(directory)
        meta = {"format": BERT_FORMAT, "tags": self.tags, "config": self.config}
        meta["extra"] = extra or {}
        with staged_dir(d) as tmp:
            save_safetensors(self.state_dict(), tmp / "model.safetensors")
            self.bert.config.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
            if not (tmp / "vocab.txt").exists():  # a fast tokenizer built from a dict has none
                pieces = sorted(self.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
                (tmp / "vocab.txt").write_text("".join(p + "\n" for p, _ in pieces), "utf-8")
            atomic_write_json(tmp / "tagger.json", meta)
        return d

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> BertTagger:
        """Inverse of :meth:`save` (bit-exact weights).

        Raises:
            ValueError: one line naming the file: missing files, a ``tagger.json`` that is not
                a BertTagger description, unreadable HF files, weights of another model or
                NaN/inf weights.
        """
        transformers = _quiet_transformers()
        d = Path(directory)
        meta = _read_meta(d)
        if meta.get("format") != BERT_FORMAT:
            raise ValueError(
                f"{d / 'tagger.json'}: format {meta.get('format')!r}, expected {BERT_FORMAT!r}"
            )
        config = dict(meta["config"]) if isinstance(meta.get("config"), dict) else {}
        config.pop("encoder", None)
        try:
            hf_config = transformers.AutoConfig.from_pretrained(str(d), local_files_only=True)
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(d), local_files_only=True)
            bert = transformers.BertModel(hf_config, add_pooling_layer=False)
            model = cls(bert=bert, tokenizer=tokenizer, tags=meta.get("tags") or [], **config)
        except (OSError, TypeError, ValueError, KeyError) as err:
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{d}: not a loadable BertTagger ({msg})") from None
        weights = d / "model.safetensors"
        try:
            state = load_safetensors(weights, device)
        except Exception as err:  # safetensors raises its own error type on garbage
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"{weights}: not a readable safetensors file ({msg})") from None
        _check_state(model, state, weights)
        model.load_state_dict(state)
        model.extra = meta.get("extra") or {}
        return model.to(device).eval()


def _read_meta(d: Path) -> dict[str, Any]:
    """``tagger.json`` of a saved model directory, checked (one-line ``ValueError``)."""
    meta_path = d / "tagger.json"
    if not meta_path.is_file() or not (d / "model.safetensors").is_file():
        raise ValueError(f"{d} is not a saved tagger (needs tagger.json and model.safetensors)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{meta_path}: not valid JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(meta, dict) or "tags" not in meta or "config" not in meta:
        raise ValueError(f"{meta_path}: not a kexue tagger description (needs tags, config)")
    return meta


def load_tagger(directory: str | Path, device: str = "cpu") -> Tagger | BertTagger:
    """Load a saved tagger directory: a :class:`Tagger` or a :class:`BertTagger`, by the
    ``format`` in its ``tagger.json``.

    Raises:
        ValueError: one line naming the directory or file (missing, not a tagger, unknown
            format, corrupt weights).
    """
    d = Path(directory)
    if not d.is_dir():
        raise ValueError(f"model directory not found: {d}")
    fmt = _read_meta(d).get("format")
    if fmt == BERT_FORMAT:
        return BertTagger.load(d, device)
    return Tagger.load(d, device)
