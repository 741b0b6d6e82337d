r"""Character tagger: embedding -> encoder (BiLSTM, CNN or Transformer) -> emissions $f$ -> head.

$$f=W\,\mathrm{Enc}(\mathrm{Emb}(x))+b\in\mathbb R^{t\times k},$$

followed by one of the heads of 《CRF用过了，不妨再了解下更快的MEMM？》 (Su, 2020): ``"softmax"``
(independent per-token cross-entropy), ``"crf"``, ``"memm"`` or ``"bimemm"``. The CNN encoder is
the one of Su's 2018 Keras CRF demo (3 x Conv1D(3, ReLU)); padded positions are zeroed after every
layer so a batch gives the same result as each sentence alone. The Transformer encoder
(:class:`kexue.tagging.encoders.TransformerEncoder`) stacks pre-norm blocks of
:mod:`kexue.attention` with key padding masks, optionally with a local attention window.

A trained tagger is a directory: ``model.safetensors`` (weights) and ``tagger.json`` (vocabulary,
tag list, scheme, units and constructor arguments). :meth:`Tagger.save` writes both into a
temporary directory and renames it into place, so a reader sees the old pair or the new pair,
never a mix; :meth:`Tagger.load` checks both files and the weights' finiteness and reports any
problem in one line naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from kexue.core.checks import check_positive_int
from kexue.core.io import (
    atomic_write_json,
    load_safetensors,
    save_safetensors,
    staged_dir,
)
from kexue.core.vocab import Vocab
from kexue.tagging._common import reduce_loss
from kexue.tagging.crf import CRF
from kexue.tagging.encoders import TRANSFORMER_DEFAULTS, TransformerEncoder
from kexue.tagging.features import (
    CASE_CLASSES,
    CharCNN,
    check_features,
    drop_words,
    pack_ids,
    packed,
)
from kexue.tagging.memm import MEMM, BiMEMM
from kexue.tagging.schemes import allowed_transitions

HEADS = ("softmax", "crf", "memm", "bimemm")
ENCODERS = ("bilstm", "cnn", "transformer")
UNITS = ("chars", "words")
PAD, UNK = "<pad>", "<unk>"
MODEL_FILES = ("model.safetensors", "tagger.json")


class Tagger(nn.Module):
    """Embedding + encoder + tagging head over a character vocabulary.

    Args:
        vocab: a :class:`kexue.data.Vocab` (the project's one vocabulary class) or its id ->
            token table; id 0 must be ``"<pad>"`` and 1 ``"<unk>"``.
        tags: id -> tag table (``k`` tags), e.g. ``tag_set("BMES")``.
        head: ``"softmax"``, ``"crf"``, ``"memm"`` or ``"bimemm"``.
        encoder: ``"bilstm"``, ``"cnn"`` or ``"transformer"``.
        embed_dim: character embedding size.
        hidden_dim: encoder output size (the Transformer's width ``d``).
        num_layers: LSTM layers, conv layers or Transformer blocks.
        dropout: dropout on embeddings and encoder output.
        scheme: tag scheme (``"BMES"``, ``"BIO"``, ``"BIOES"``) or ``None``.
        constrained: forbid the scheme's illegal transitions in the head (needs ``scheme``).
        units: what one token is: ``"chars"`` (text is split into characters) or ``"words"``
            (text is split on white space); stored with the model and used by ``tag predict``.
        head_kwargs: extra keyword arguments of the head (e.g. ``{"half_scale": True}``).
        encoder_kwargs: Transformer options (``num_heads`` 4, ``pattern`` ``"full"`` or
            ``"local"``, ``window``, ``rate``, ``positions`` ``"sinusoidal"``/``"learned"``,
            ``max_positions`` 512, ``ffn_dim``); see :class:`TransformerEncoder`.
        features: unknown-word features (:mod:`kexue.tagging.features`): ``word_dropout``
            (probability of replacing a training token by ``<unk>``), ``lowercase`` (with a
            ``case_dim`` case embedding), ``char_filters`` > 0 for a char CNN over each word
            (``units="words"``; needs ``char_vocab``, ``char_dim``, ``max_word_chars``).
            ``None``: none of them (the tagger's ids are ``(b, t)``).

    Raises:
        ValueError: on an unknown head/encoder/units, a bad vocabulary, sizes < 1, dropout
            outside [0, 1) or unknown ``encoder_kwargs`` (``TypeError`` for non-int sizes).
    """

    def __init__(
        self,
        *,
        vocab: Sequence[str] | Vocab,
        tags: Sequence[str],
        head: str = "crf",
        encoder: str = "cnn",
        embed_dim: int = 128,
        hidden_dim: int = 128,
        num_layers: int = 3,
        dropout: float = 0.1,
        scheme: str | None = None,
        constrained: bool = False,
        units: str = "chars",
        head_kwargs: dict[str, Any] | None = None,
        encoder_kwargs: dict[str, Any] | None = None,
        features: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
        tokens = list(vocab.tokens if isinstance(vocab, Vocab) else vocab)
        if tokens[:2] != [PAD, UNK]:
            raise ValueError(f"vocab must start with {PAD!r}, {UNK!r}, got {tokens[:2]}")
        if units not in UNITS:
            raise ValueError(f"units must be one of {', '.join(UNITS)}, got {units!r}")
        check_positive_int(embed_dim, "embed_dim")
        check_positive_int(hidden_dim, "hidden_dim")
        check_positive_int(num_layers, "num_layers")
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise TypeError(f"dropout must be a float, got {type(dropout).__name__}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if len(tags) < 1:
            raise ValueError("tags must not be empty")
        if constrained and scheme is None:
            raise ValueError("constrained=True needs a scheme")
        enc_kw = dict(encoder_kwargs or {})
        if enc_kw and encoder != "transformer":
            raise ValueError(f"encoder_kwargs are for encoder='transformer', got {encoder!r}")
        unknown = sorted(set(enc_kw) - set(TRANSFORMER_DEFAULTS))
        if unknown:
            raise ValueError(
                f"unknown encoder_kwargs {unknown}; known: {sorted(TRANSFORMER_DEFAULTS)}"
            )
        self.vocabulary = Vocab(tokens, pad=PAD, unk=UNK)
        self.vocab = self.vocabulary.tokens
        self.tags = list(tags)
        self.config = dict(
            head=head,
            encoder=encoder,
            embed_dim=embed_dim,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            dropout=dropout,
            scheme=scheme,
            constrained=constrained,
            units=units,
            head_kwargs=dict(head_kwargs or {}),
        )
        if encoder == "transformer":
            self.config["encoder_kwargs"] = enc_kw
        self.features = check_features(features, units)
        if features is not None:
            self.config["features"] = dict(self.features)
        k = len(self.tags)
        self.embed = nn.Embedding(len(self.vocab), embed_dim, padding_idx=0)
        input_dim = embed_dim
        if self.features["lowercase"]:
            self.case_embed = nn.Embedding(CASE_CLASSES, self.features["case_dim"], padding_idx=0)
            input_dim += self.features["case_dim"]
        if self.features["char_filters"]:
            cv = self.features["char_vocab"]
            self.char_index = {c: i for i, c in enumerate(cv)}
            self.char_cnn = CharCNN(
                len(cv), self.features["char_dim"], self.features["char_filters"]
            )
            input_dim += self.features["char_filters"]
        self.drop = nn.Dropout(dropout)
        if encoder == "bilstm":
            if hidden_dim % 2:
                raise ValueError(f"hidden_dim must be even for a BiLSTM, got {hidden_dim}")
            self.lstm = nn.LSTM(
                input_dim, hidden_dim // 2, num_layers, batch_first=True, bidirectional=True
            )
        elif encoder == "transformer":
            self.transformer = TransformerEncoder(
                input_dim, hidden_dim, num_layers=num_layers, dropout=dropout,
                **{**TRANSFORMER_DEFAULTS, **enc_kw},
            )  # fmt: skip
        else:
            dims = [input_dim] + [hidden_dim] * num_layers
            self.convs = nn.ModuleList(
                nn.Conv1d(a, c, kernel_size=3, padding=1) for a, c in zip(dims[:-1], dims[1:])
            )
        self.proj = nn.Linear(hidden_dim, k)
        cons = allowed_transitions(scheme, self.tags) if constrained else None
        kw = dict(head_kwargs or {})
        if head == "crf":
            self.head: nn.Module | None = CRF(k, constraints=cons, **kw)
        elif head == "memm":
            self.head = MEMM(k, constraints=cons, **kw)
        elif head == "bimemm":
            self.head = BiMEMM(k, constraints=cons, **kw)
        else:
            self.head = None

    @property
    def head_name(self) -> str:
        """``"softmax"``, ``"crf"``, ``"memm"`` or ``"bimemm"``."""
        return self.config["head"]

    # -- text <-> tensors ---------------------------------------------------------------------
    def encode(self, sentences: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor]:
        """Tokens -> ``(ids, mask (b, t) bool)``; unknown tokens -> 1 (``<unk>``).

        ``ids`` is ``(b, t)`` int64, or ``(b, t, 2 + L)`` packed word / case / character ids
        with the case feature or the char CNN (:mod:`kexue.tagging.features`). With
        ``lowercase`` the vocabulary lookup uses the lowercased token.
        """
        lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
        n = max(int(lengths.max()) if len(sentences) else 0, 1)
        ids = torch.zeros(len(sentences), n, dtype=torch.long)
        lower = self.features["lowercase"]
        for i, s in enumerate(sentences):
            if s:
                toks = [w.lower() for w in s] if lower else s
                ids[i, : len(s)] = torch.tensor(self.vocabulary.encode(toks))
        mask = torch.arange(n)[None, :] < lengths[:, None]
        if packed(self.features):
            ids = pack_ids(sentences, ids, self.features, getattr(self, "char_index", {}))
        return ids, mask

    def encode_tags(self, tag_seqs: Sequence[Sequence[str]], t: int) -> Tensor:
        """Tag strings -> ``(b, t)`` int64 padded with 0; ``ValueError`` on unknown tags."""
        idx = {tag: i for i, tag in enumerate(self.tags)}
        out = torch.zeros(len(tag_seqs), t, dtype=torch.long)
        for i, seq in enumerate(tag_seqs):
            try:
                out[i, : len(seq)] = torch.tensor([idx[tag] for tag in seq], dtype=torch.long)
            except KeyError as e:
                raise ValueError(f"unknown tag {e.args[0]!r}; known: {self.tags}") from None
        return out

    # -- model --------------------------------------------------------------------------------
    def emissions(self, chars: Tensor, mask: Tensor) -> Tensor:
        """Emission scores.

        Args:
            chars: ``(b, t)`` character ids.
            mask: ``(b, t)`` bool prefix mask.

        Returns:
            ``(b, t, k)``.
        """
        want = 3 if packed(self.features) else 2
        if chars.dim() != want or mask.shape != chars.shape[:2]:
            need = "(b, t, f) packed ids" if want == 3 else "(b, t)"
            raise ValueError(
                f"chars must be {need} and mask (b, t), got {tuple(chars.shape)} and "
                f"{tuple(mask.shape)}"
            )
        x = self.drop(self._embed(chars, mask))  # (b, t, d_in)
        m = mask.unsqueeze(2).to(x.dtype)
        if self.config["encoder"] == "bilstm":
            lengths = mask.sum(1).clamp_min(1).cpu()
            seq = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(seq)
            h, _ = pad_packed_sequence(out, batch_first=True, total_length=chars.shape[1])
        elif self.config["encoder"] == "transformer":
            h = self.transformer(x, mask)
        else:
            h = x * m
            for conv in self.convs:
                h = F.relu(conv(h.transpose(1, 2))).transpose(1, 2) * m
        return self.proj(self.drop(h))

    def _embed(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Word embedding (with word dropout in training) [+ case embedding] [+ char CNN]."""
        words = ids[..., 0] if ids.dim() == 3 else ids
        if self.training:
            words = drop_words(words, mask, self.features["word_dropout"])
        parts = [self.embed(words)]
        if self.features["lowercase"]:
            parts.append(self.case_embed(ids[..., 1]))
        if self.features["char_filters"]:
            parts.append(self.char_cnn(ids[..., 2:]))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def forward(
        self, chars: Tensor, mask: Tensor, tags: Tensor | None = None, reduction: str = "mean"
    ) -> Tensor:
        """Emissions ``(b, t, k)`` if ``tags`` is None, else the head's training loss."""
        em = self.emissions(chars, mask)
        if tags is None:
            return em
        return self.loss_from_emissions(em, tags, mask, reduction)

    def loss_from_emissions(
        self, em: Tensor, tags: Tensor, mask: Tensor, reduction: str = "mean"
    ) -> Tensor:
        """Loss of ``tags (b, t)`` given emissions ``(b, t, k)``; ``reduction`` as in :class:`CRF`."""
        if self.head is None:
            ce = F.cross_entropy(em.transpose(1, 2), tags.masked_fill(~mask, 0), reduction="none")
            return reduce_loss((ce * mask).sum(1), mask, reduction)
        return self.head.loss(em, tags, mask, reduction=reduction)

    @torch.no_grad()
    def decode(self, chars: Tensor, mask: Tensor) -> Tensor:
        """Best tag ids ``(b, t)`` (-1 at padding); softmax head: per-token argmax.

        Raises:
            ValueError: the emissions are not finite (NaN/inf weights give no answer, not a
                confident one).
        """
        em = self.emissions(chars, mask)
        if not bool(torch.isfinite(em[mask]).all()):
            raise ValueError("the tagger's emissions contain NaN/inf (corrupt or diverged weights)")
        if self.head is None:
            return em.argmax(2).masked_fill(~mask, -1)
        return self.head.decode(em, mask)[0]

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 64) -> list[list[str]]:
        """Tag strings for each sentence (a ``str`` or a list of characters)."""
        was = self.training
        self.eval()
        out: list[list[str]] = []
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        results: dict[int, list[str]] = {}
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            batch = [list(sentences[i]) for i in idx]
            nonempty = [j for j, b in enumerate(batch) if b]
            for j, b in enumerate(batch):
                if not b:
                    results[idx[j]] = []
            if not nonempty:
                continue
            ids, mask = self.encode([batch[j] for j in nonempty])
            paths = self.decode(ids, mask)
            for row, j in enumerate(nonempty):
                n = len(batch[j])
                results[idx[j]] = [self.tags[int(t)] for t in paths[row, :n]]
        self.train(was)
        out = [results[i] for i in range(len(sentences))]
        return out

    # -- persistence --------------------------------------------------------------------------
    @property
    def units(self) -> str:
        """``"chars"`` or ``"words"``: what one token of this model is."""
        return self.config.get("units", "chars")

    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``model.safetensors`` and ``tagger.json`` into ``directory``, atomically.

        Both files are written into a temporary sibling directory which is then renamed to
        ``directory``; other entries of an existing ``directory`` (e.g. training checkpoints) are
        moved over first. Returns the directory.
        """
        meta = {"format": FORMAT, "vocab": self.vocab, "tags": self.tags}
        meta.update(config=self.config, extra=extra or {})
        with staged_dir(directory) as tmp:
            save_safetensors(self.state_dict(), tmp / "model.safetensors")
            atomic_write_json(tmp / "tagger.json", meta)
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> Tagger:
        """Inverse of :meth:`save`.

        Raises:
            ValueError: one line naming the file: missing files, ``tagger.json`` that is not
                valid JSON or not a tagger description, ``model.safetensors`` that is truncated or
                not safetensors, weights of another model (missing/unexpected names, shapes), or
                weights that are NaN/inf.
        """
        d = Path(directory)
        meta_path, weights_path = d / "tagger.json", d / "model.safetensors"
        if not meta_path.is_file() or not weights_path.is_file():
            raise ValueError(f"{d} is not a saved tagger (needs tagger.json and model.safetensors)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{meta_path}: not valid JSON ({str(err).splitlines()[0]})") from None
        keys = ("vocab", "tags", "config")
        if not isinstance(meta, dict) or any(k not in meta for k in keys):
            raise ValueError(
                f"{meta_path}: not a kexue tagger description (needs {', '.join(keys)})"
            )
        if meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        config = dict(meta["config"]) if isinstance(meta["config"], dict) else {}
        extra = meta.get("extra") or {}
        if "units" not in config and extra.get("units") in UNITS:  # taggers saved before 'units'
            config["units"] = extra["units"]
        try:
            model = cls(vocab=meta["vocab"], tags=meta["tags"], **config)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{meta_path}: invalid tagger description: {err}") from None
        try:
            state = load_safetensors(weights_path, device)
        except Exception as err:  # safetensors raises its own error type on garbage
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"{weights_path}: not a readable safetensors file ({msg})") from None
        _check_state(model, state, weights_path)
        model.load_state_dict(state)
        model.extra = extra
        return model.eval()


FORMAT = "kexue.tagging.Tagger/1"


def _check_state(model: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    """One-line errors for weights that do not belong to ``model`` or are not finite."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights of another model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, t in own.items():
        if tuple(state[name].shape) != tuple(t.shape):
            raise ValueError(
                f"{path}: weights of another model ({name} has shape "
                f"{tuple(state[name].shape)}, tagger.json implies {tuple(t.shape)})"
            )
    bad = [
        n for n, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise ValueError(f"{path}: weights contain NaN/inf ({', '.join(bad[:3])})")
