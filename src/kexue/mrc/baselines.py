r"""Two baselines on the same BERT: an autoregressive UniLM reader and an extractive span reader.

**ARReader** (Su, 《万能的seq2seq：基于seq2seq的阅读理解问答》, 2019-12-05; UniLM, Dong et al.
2019): ``[CLS] q [SEP] p [SEP] a_1..a_r [SEP]`` with segment 1 on the answer part and the
seq2seq attention mask: prefix positions attend to the prefix only, answer positions to the
prefix and to earlier answer positions. The MLM head at position $t$ predicts token $t+1$,
$p(y\mid x)=\prod_t p(y_t\mid x, y_{<t})$. Generation is greedy under the same passage
constraint as the MLM reader, one token per step with a key/value cache (the prefix is encoded
once; each step runs one position through the layers). Per-window scores (mean picked
probability, the ``[SEP]`` step included) are voted over windows/passages with the MLM reader's
$\sum v^2/(\sum v+1)$. (The original baseline votes at every beam step instead; see the note.)

**SpanReader** (Devlin et al. 2019, ``BertForQuestionAnswering``): ``[CLS] q [SEP] p [SEP]``,
segment 1 on the passage; start/end logits, loss $\tfrac12(\mathrm{CE}_{start}+\mathrm{CE}_{end})$,
windows without the answer point at ``[CLS]``. The best span maximises
$p_s(i)\,p_e(j)$ over $i\le j<i+L-1$ inside the passage, and beats the ``[CLS]`` null score
$p_s(0)p_e(0)$ or the window says "no answer"; windows vote like the MLM reader's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn import functional as F

from kexue.core.checks import check_positive_int
from kexue.mrc.features import answer_in_window, char_ids, collate, normalize_passage, windows
from kexue.mrc.reader import (
    PassageConstraint,
    _pick,
    best_answer,
    best_per_passage,
    check_question,
    set_reader_limits,
)

__all__ = ["ARReader", "SpanReader", "bert_incremental", "unilm_mask"]


def _find(sub: list[int], seq: list[int]) -> int:
    """First index of ``sub`` in ``seq`` (-1 if absent or empty)."""
    if not sub:
        return -1
    for i in range(len(seq) - len(sub) + 1):
        if seq[i : i + len(sub)] == sub:
            return i
    return -1


class _WindowReader:
    """Shared plumbing: lengths, window tokenisation, batched prediction with voting."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        max_answer_len: int,
        max_question_len: int,
        max_passage_len: int,
        stride: int | None,
        extra_positions: int,
        require_answer: bool = False,
    ) -> None:
        set_reader_limits(
            self, model, tokenizer, max_answer_len=max_answer_len,
            max_question_len=max_question_len, max_passage_len=max_passage_len, stride=stride,
            longest=max_question_len + max_passage_len + 2 + extra_positions,
        )  # fmt: skip
        self.require_answer = bool(require_answer)

    def _windows(self, question: str, passage: str) -> list[tuple[list[int], list[int], list[int]]]:
        """``(question ids (<= max_q - 1), window passage ids, window char offsets)``."""
        q_ids = char_ids(self.tokenizer, question)[0][: self.max_question_len - 1]
        p_ids, p_off = char_ids(self.tokenizer, normalize_passage(passage))
        return [
            (q_ids, p_ids[s:e], p_off[s:e])
            for s, e in windows(len(p_ids), self.max_passage_len, self.stride)
        ]

    def _answer_ids(self, answer: str) -> list[int]:
        return char_ids(self.tokenizer, normalize_passage(answer))[0] if answer else []

    def predict_batch(
        self, queries: Sequence[tuple[str, Sequence[str]]], batch_size: int = 32
    ) -> list[tuple[str, float]]:
        """Voted ``(answer, score)`` per ``(question, passages)`` query."""
        return [best_answer(c) for c in self.candidates_batch(queries, batch_size)]

    def predict(self, question: str, passages: str | Sequence[str]) -> tuple[str, float]:
        """Answer one question from one passage or several."""
        passages = check_question(question, passages)
        return self.predict_batch([(question, passages)])[0]

    def candidates_batch(
        self, queries: Sequence[tuple[str, Sequence[str]]], batch_size: int = 32
    ) -> list[list[tuple[str, float]]]:
        """Per query, one ``(answer, score)`` per passage: its best window's (before voting;
        see :func:`~kexue.mrc.reader.best_per_passage`)."""
        check_positive_int(batch_size, "batch_size", type_error=ValueError)
        flat = []
        for qi, (question, passages) in enumerate(queries):
            for pi, p in enumerate(check_question(question, passages)):
                flat += [(qi, pi, w, p) for w in self._windows(question, p)]
        out: list[list[tuple[int, str, float]]] = [[] for _ in queries]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for i in range(0, len(flat), batch_size):
                    chunk = flat[i : i + batch_size]
                    decoded = self._decode_windows([(qi, w, p) for qi, _, w, p in chunk])
                    for (qi, pi, _, _), cand in zip(chunk, decoded, strict=True):
                        out[qi].append((pi, *cand))
        finally:
            self.model.train(was_training)
        return [best_per_passage(w) for w in out]

    @staticmethod
    def _text(passage: str, offsets: list[int], start: int, length: int) -> str:
        if length <= 0:
            return ""
        return passage[offsets[start] : offsets[start + length - 1] + 1]


# -- the span reader ---------------------------------------------------------------------------
class SpanReader(_WindowReader):
    """Extractive start/end reader on ``BertForQuestionAnswering`` (or any model returning
    ``start_logits``/``end_logits`` ``(b, n)``). Arguments as :class:`~kexue.mrc.MLMReader`;
    ``max_answer_len - 1`` caps the span length (the MLM reader's answer cap);
    ``require_answer``: never the ``[CLS]`` null answer (the best span always wins)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_answer_len: int = 32,
        max_question_len: int = 64,
        max_passage_len: int = 256,
        stride: int | None = None,
        require_answer: bool = False,
    ) -> None:
        super().__init__(
            model,
            tokenizer,
            max_answer_len,
            max_question_len,
            max_passage_len,
            stride,
            extra_positions=1,
            require_answer=require_answer,
        )

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> SpanReader:
        """Load a local HF directory; a fresh span head is put on a masked-LM checkpoint."""
        import transformers

        from kexue.mrc.reader import _check_model_dir

        _check_model_dir(path)
        transformers.utils.logging.disable_progress_bar()
        tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # "qa_outputs newly initialised" is expected
        try:
            model = transformers.AutoModelForQuestionAnswering.from_pretrained(
                str(path), local_files_only=True
            )
        finally:
            transformers.logging.set_verbosity(verbosity)
        return cls(model.eval(), tok, **kwargs)

    def _layout(self, q: list[int], p: list[int]) -> tuple[list[int], list[int], int]:
        head = [self.ids.cls, *q, self.ids.sep]
        return head + p + [self.ids.sep], [0] * len(head) + [1] * (len(p) + 1), len(head)

    def training_features(self, question: str, passage: str, answer: str) -> list[tuple]:
        """``(input_ids, token_type_ids, start, end)`` per window (``0, 0`` = no answer)."""
        a = self._answer_ids(answer)[: self.max_answer_len - 1]
        out = []
        for q, p, _ in self._windows(question, passage):
            ids, types, p0 = self._layout(q, p)
            i = _find(a, p)
            s, e = (p0 + i, p0 + i + len(a) - 1) if i >= 0 else (0, 0)
            out.append((ids, types, s, e))
        return out

    def collate_features(self, features: Sequence[tuple]) -> dict[str, torch.Tensor]:
        """Pad a list of :meth:`training_features` items."""
        ids, mask = collate([f[0] for f in features], self.ids.pad)
        types, _ = collate([f[1] for f in features], 0)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": types,
            "start": torch.tensor([f[2] for f in features]),
            "end": torch.tensor([f[3] for f in features]),
        }

    def batch_loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(CE(start) + CE(end)) / 2`` over the valid positions."""
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
        )
        neg = torch.finfo(torch.float32).min
        mask = batch["attention_mask"]
        s = out.start_logits.float().masked_fill(~mask, neg)
        e = out.end_logits.float().masked_fill(~mask, neg)
        return (F.cross_entropy(s, batch["start"]) + F.cross_entropy(e, batch["end"])) / 2

    def _decode_windows(self, chunk: list) -> list[tuple[str, float]]:
        feats = [self._layout(q, p) for _, (q, p, _), _ in chunk]
        ids, mask = collate([f[0] for f in feats], self.ids.pad)
        types, _ = collate([f[1] for f in feats], 0)
        device = next(self.model.parameters()).device
        out = self.model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            token_type_ids=types.to(device),
        )
        neg = torch.finfo(torch.float32).min
        ps = out.start_logits.float().cpu().masked_fill(~mask, neg).softmax(-1)
        pe = out.end_logits.float().cpu().masked_fill(~mask, neg).softmax(-1)
        res = []
        span = self.max_answer_len - 1
        for b, ((_, (_, p, off), passage), (_, _, p0)) in enumerate(zip(chunk, feats, strict=True)):
            m = len(p)
            if m == 0 or span == 0:
                res.append(("", 0.0))
                continue
            # scores[i, j] = p_s(i) p_e(j) for i <= j < i + span inside the passage
            sc = ps[b, p0 : p0 + m, None] * pe[b, None, p0 : p0 + m]
            i_idx = torch.arange(m)[:, None]
            j_idx = torch.arange(m)[None, :]
            sc = sc.masked_fill((j_idx < i_idx) | (j_idx >= i_idx + span), -1.0)
            best = int(sc.argmax())
            i, j = divmod(best, m)
            v = float(sc[i, j])
            if not self.require_answer and v <= float(ps[b, 0] * pe[b, 0]):
                res.append(("", float(ps[b, 0] * pe[b, 0])))
            else:
                res.append((self._text(passage, off, i, j - i + 1), v))
        return res


# -- the autoregressive reader -----------------------------------------------------------------
def unilm_mask(valid: torch.Tensor, prefix_len: torch.Tensor) -> torch.Tensor:
    """UniLM seq2seq attention mask.

    Args:
        valid: ``(b, n)`` bool, True at real tokens.
        prefix_len: ``(b,)`` length of the bidirectional prefix ``[CLS] q [SEP] p [SEP]``.

    Returns:
        ``(b, 1, n, n)`` bool, True = query row may attend key column: key valid and
        (key < prefix, or query >= prefix and key <= query); every row sees itself.
    """
    b, n = valid.shape
    q = torch.arange(n)[None, :, None]
    k = torch.arange(n)[None, None, :]
    p = prefix_len.to(valid.device)[:, None, None]
    allowed = (k < p) | ((q >= p) & (k <= q))
    allowed = (allowed & valid[:, None, :]) | (q == k)
    return allowed[:, None]


def bert_incremental(
    bert: Any,
    input_ids: torch.Tensor,
    token_type_ids: torch.Tensor,
    position_ids: torch.Tensor,
    attend: torch.Tensor,
    cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A HF ``BertModel`` forward over new positions that attend to cached keys/values.

    Same modules and arithmetic as ``BertModel`` in eval mode (post-LN blocks), written out so
    that an encoder-only BERT can decode with a key/value cache.

    Args:
        bert: the ``BertModel`` (``model.bert``).
        input_ids / token_type_ids / position_ids: ``(b, t)`` for the new positions.
        attend: ``(b, t, s + t)`` bool: new query row -> key column (cached keys first).
        cache: per layer ``(k, v)`` of shape ``(b, h, s, e)`` (``None``: ``s = 0``).

    Returns:
        ``(hidden (b, t, d), new cache with s + t keys per layer)``.
    """
    emb = bert.embeddings
    h = emb.word_embeddings(input_ids) + emb.position_embeddings(position_ids)
    h = emb.LayerNorm(h + emb.token_type_embeddings(token_type_ids))
    bias = torch.zeros(attend.shape, dtype=h.dtype, device=h.device)
    bias = bias.masked_fill(~attend, torch.finfo(h.dtype).min)[:, None]  # (b, 1, t, s + t)
    new_cache = []
    for i, layer in enumerate(bert.encoder.layer):
        sa = layer.attention.self
        nh, e = sa.num_attention_heads, sa.attention_head_size

        def heads(x: torch.Tensor, nh: int = nh, e: int = e) -> torch.Tensor:
            return x.view(x.shape[0], x.shape[1], nh, e).transpose(1, 2)  # (b, h, t, e)

        q, k, v = heads(sa.query(h)), heads(sa.key(h)), heads(sa.value(h))
        if cache is not None:
            k = torch.cat([cache[i][0], k], 2)
            v = torch.cat([cache[i][1], v], 2)
        new_cache.append((k, v))
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        ctx = ctx.transpose(1, 2).reshape(h.shape)
        a = layer.attention.output.LayerNorm(layer.attention.output.dense(ctx) + h)
        h = layer.output.LayerNorm(layer.output.dense(layer.intermediate(a)) + a)
    return h, new_cache


class ARReader(_WindowReader):
    """UniLM-style autoregressive reader on a ``BertForMaskedLM`` (same checkpoint as the MLM
    reader). Arguments as :class:`~kexue.mrc.MLMReader`; answers keep ``max_answer_len - 1``
    tokens and generation runs at most ``max_answer_len`` steps.

    Args:
        use_cache: decode with the key/value cache (False: re-run the full sequence each step;
            same output, the reference for the tests).
        require_answer: ``[SEP]`` is banned as the first generated token (never empty).
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
        use_cache: bool = True,
        require_answer: bool = False,
    ) -> None:
        super().__init__(
            model,
            tokenizer,
            max_answer_len,
            max_question_len,
            max_passage_len,
            stride,
            extra_positions=1 + max_answer_len,
            require_answer=require_answer,
        )
        if not (hasattr(model, "bert") and hasattr(model, "cls")):
            raise TypeError("ARReader needs a HF BertForMaskedLM (attributes .bert and .cls)")
        self.use_cache = bool(use_cache)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> ARReader:
        """Load a local HF masked-LM directory."""
        from kexue.mrc.reader import MLMReader

        mlm = MLMReader.from_pretrained(path)
        return cls(mlm.model, mlm.tokenizer, **kwargs)

    def _prefix(self, q: list[int], p: list[int]) -> list[int]:
        return [self.ids.cls, *q, self.ids.sep, *p, self.ids.sep]

    def training_features(self, question: str, passage: str, answer: str) -> list[tuple]:
        """``(input_ids, prefix_len)`` per window; the answer part is ``a [SEP]`` when the
        window contains the answer, else just ``[SEP]``."""
        a = self._answer_ids(answer)[: self.max_answer_len - 1]
        out = []
        for q, p, off in self._windows(question, passage):
            prefix = self._prefix(q, p)
            text = passage[off[0] : off[-1] + 1] if off else ""
            body = a if a and answer_in_window(answer, text) else []
            out.append((prefix + body + [self.ids.sep], len(prefix)))
        return out

    def collate_features(self, features: Sequence[tuple]) -> dict[str, torch.Tensor]:
        """Pad :meth:`training_features` items; labels are next tokens of the answer part."""
        ids, valid = collate([f[0] for f in features], self.ids.pad)
        plen = torch.tensor([f[1] for f in features])
        pos = torch.arange(ids.shape[1])[None]
        types = (pos >= plen[:, None]).long() & valid.long()
        labels = torch.full_like(ids, -100)
        # position t predicts token t + 1 for t in [prefix_len - 1, last - 1]
        shifted = torch.cat([ids[:, 1:], torch.zeros_like(ids[:, :1])], 1)
        valid_next = torch.cat([valid[:, 1:], torch.zeros_like(valid[:, :1])], 1)
        sel = (pos >= plen[:, None] - 1) & valid_next
        labels[sel] = shifted[sel]
        return {
            "input_ids": ids,
            "token_type_ids": types,
            "attention_mask": unilm_mask(valid, plen),
            "labels": labels,
        }

    def batch_loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token cross-entropy over the answer part (``[SEP]`` included)."""
        sel = batch["labels"] != -100
        if hasattr(model, "bert") and hasattr(model, "cls"):
            h = model.bert(
                input_ids=batch["input_ids"],
                token_type_ids=batch["token_type_ids"],
                attention_mask=batch["attention_mask"],
            ).last_hidden_state
            logits = model.cls(h[sel])
        else:
            logits = model(
                input_ids=batch["input_ids"],
                token_type_ids=batch["token_type_ids"],
                attention_mask=batch["attention_mask"],
            ).logits[sel]
        return F.cross_entropy(logits.float(), batch["labels"][sel])

    # -- generation ----------------------------------------------------------------------------
    def step_probs_reference(self, prefix: list[int], answer: list[int]) -> torch.Tensor:
        """Next-token distribution after ``prefix + answer`` by a full HF forward pass with the
        UniLM mask (no cache): ``(v,)``. The oracle for the cached path."""
        ids = torch.tensor([prefix + answer])
        n = ids.shape[1]
        valid = torch.ones(1, n, dtype=torch.bool)
        types = (torch.arange(n) >= len(prefix)).long()[None]
        device = next(self.model.parameters()).device
        mask = unilm_mask(valid, torch.tensor([len(prefix)]))
        h = self.model.bert(
            input_ids=ids.to(device),
            token_type_ids=types.to(device),
            attention_mask=mask.to(device),
        ).last_hidden_state
        return self.model.cls(h[0, -1]).float().softmax(-1).cpu()

    def generate(
        self, prefixes: list[list[int]], constraints: list[PassageConstraint] | None
    ) -> list[tuple[list[int], float]]:
        """Greedy generation for a batch of prefixes (``[CLS] q [SEP] p [SEP]``).

        Args:
            prefixes: token lists, one per row.
            constraints: one :class:`PassageConstraint` per row (``None``: unconstrained).

        Returns:
            Per row ``(answer ids without [SEP], mean picked probability)``.
        """
        b, L, sep = len(prefixes), self.max_answer_len, self.ids.sep
        device = next(self.model.parameters()).device
        bert, head = self.model.bert, self.model.cls
        plen = torch.tensor([len(p) for p in prefixes])
        answers: list[list[int]] = [[] for _ in range(b)]
        totals, steps = [0.0] * b, [0] * b
        done = [False] * b
        cache = None
        key_valid = None
        for t in range(L):
            if self.use_cache:
                if t == 0:
                    ids, valid = collate(prefixes, self.ids.pad)
                    n = ids.shape[1]
                    pos = torch.arange(n)[None].expand(b, n)
                    attend = valid[:, None, :] | torch.eye(n, dtype=torch.bool)[None]
                    h, cache = bert_incremental(
                        bert,
                        ids.to(device),
                        torch.zeros_like(ids).to(device),
                        pos.to(device),
                        attend.to(device),
                    )
                    last = h[torch.arange(b), plen - 1]
                    key_valid = valid
                else:
                    new = torch.tensor([[a[-1] if a else sep] for a in answers])
                    pos = (plen + t - 1)[:, None]
                    key_valid = torch.cat([key_valid, torch.ones(b, 1, dtype=torch.bool)], 1)
                    h, cache = bert_incremental(
                        bert,
                        new.to(device),
                        torch.ones_like(new).to(device),
                        pos.to(device),
                        key_valid[:, None].to(device),
                        cache,
                    )
                    last = h[:, 0]
                probs = head(last).float().softmax(-1).cpu()
            else:
                probs = torch.stack(
                    [
                        self.step_probs_reference(p, a)
                        for p, a in zip(prefixes, answers, strict=True)
                    ]
                )
            for r in range(b):
                if done[r]:
                    continue
                allowed = (
                    constraints[r].allowed()
                    if constraints is not None
                    else list(range(probs.shape[1]))
                )
                tok, p = _pick(probs[r], allowed)
                totals[r] += p
                steps[r] += 1
                if tok == sep:
                    done[r] = True
                    continue
                answers[r].append(tok)
                if constraints is not None:
                    constraints[r].advance(tok)
            if all(done):
                break
        return [(a, tot / max(s, 1)) for a, tot, s in zip(answers, totals, steps, strict=True)]

    def _decode_windows(self, chunk: list) -> list[tuple[str, float]]:
        prefixes = [self._prefix(q, p) for _, (q, p, _), _ in chunk]
        min_len = int(self.require_answer)
        cons = [
            PassageConstraint(p + [self.ids.sep], self.ids.sep, min_len)
            for _, (_, p, _), _ in chunk
        ]
        res = []
        for (_, (_, _, off), passage), c, (ans, score) in zip(
            chunk, cons, self.generate(prefixes, cons), strict=True
        ):
            res.append((self._text(passage, off, c.start, len(ans)), score))
        return res
