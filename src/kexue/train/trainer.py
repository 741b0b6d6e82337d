"""The one training loop every kexue experiment uses.

One optimizer step per batch:

.. math::
    g_t = \\nabla_\\theta \\mathcal{L}(\\theta_t; B_t), \\quad
    \\hat g_t = g_t \\min\\left(1, \\frac{c}{\\lVert g_t \\rVert_2}\\right), \\quad
    \\theta_{t+1} = \\mathrm{opt}(\\theta_t, \\hat g_t; \\eta_t)

with gradient-norm clipping at ``c = grad_clip`` and the learning rate ``eta_t`` from the
scheduler (stepped once per optimizer step). Around it: a tqdm bar, ``metrics.jsonl`` records,
periodic ``eval_fn`` calls, atomic checkpoints and bit-exact resume (see :mod:`.checkpoint`), and
``torchrun`` support (DDP + a ``DistributedSampler``).

Determinism: the data order of epoch ``e`` is a permutation seeded by ``seed + e`` (shared by all
ranks, then split by ``DistributedSampler``); the position inside the epoch is part of the
checkpoint, so a resumed run skips exactly the batches already seen. Dropout and other model
randomness use the global RNGs (seeded with ``seed + rank``), whose states are saved per rank.
``eval_fn`` runs with the RNG states saved and restored, so evaluating never changes training.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from kexue.core.io import atomic_write_json, atomic_write_text
from kexue.core.seed import seed_everything
from kexue.train import distributed as dist
from kexue.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    save_model,
)
from kexue.train.config import TrainConfig

LossOutput = torch.Tensor | tuple[torch.Tensor, Mapping[str, Any]]
LossFn = Callable[[nn.Module, Any], LossOutput]
EvalFn = Callable[[nn.Module], Mapping[str, Any]]


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside nested dicts/lists/tuples to ``device`` (other leaves untouched)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        moved = {k: move_to_device(v, device) for k, v in batch.items()}
        try:
            return type(batch)(moved)  # type: ignore[call-arg]
        except TypeError:  # mappings without a dict constructor (e.g. defaultdict)
            return moved
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 - the global state seed_everything seeds
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


@contextmanager
def _preserved_rng() -> Iterator[None]:
    saved = _rng_state()
    try:
        yield
    finally:
        _set_rng_state(saved)


def _to_float(value: Any, name: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"metric {name!r} must be a scalar, got shape {tuple(value.shape)}")
        return float(value.detach().item())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric {name!r} must be a number, got {type(value).__name__}") from None


class Trainer:
    """Train ``model`` with ``optimizer`` on ``train_data`` for ``config`` steps/epochs.

    Args:
        model: the module to train; moved to the configured device and wrapped in
            ``DistributedDataParallel`` when launched with ``torchrun`` (see :attr:`model`).
        optimizer: an optimizer (anything with ``zero_grad/step/state_dict/load_state_dict`` and
            ``param_groups``, wrappers such as Lookahead included) or a callable
            ``params -> optimizer`` called with the model's parameters after the device move.
        train_data: a map-style dataset (``__len__`` and ``__getitem__``).
        loss_fn: ``loss_fn(model, batch) -> loss`` or ``-> (loss, metrics)``: a scalar loss to
            minimise and a dict of floats (averaged between log events; a ``"tokens"`` entry is
            summed and reported as ``tokens_per_s``). Under DDP ``model`` is the DDP wrapper: call
            ``model(...)`` so gradients are synchronised (use :func:`unwrap` only for attributes;
            a run whose replicas diverge raises ``RuntimeError`` at the end of ``fit``). Every rank
            must report the same metric keys (they are all-reduced at log events).
        collate_fn: DataLoader ``collate_fn`` (default: PyTorch's default collation).
        eval_fn: ``eval_fn(model) -> dict of floats``, called with the bare model in ``eval()``
            mode under ``torch.no_grad()`` every ``eval_every`` steps and at the end, on rank 0
            only (other ranks wait; the metrics are broadcast, so ``eval_fn`` must not itself
            call collectives). RNG states are restored after it, so evaluation never changes
            the training trajectory.
        scheduler: an LR scheduler stepped after every optimizer step, or a callable
            ``optimizer -> scheduler``.
        config: the :class:`TrainConfig`.
        out_dir: run directory for ``metrics.jsonl``, ``checkpoints/``, ``model.safetensors``,
            ``train_config.json`` and ``history.json`` (``None``: write nothing, no resume).
        progress: show a tqdm bar (rank 0 only).

    Raises:
        TypeError: ``train_data`` has no ``__len__`` or ``config`` is not a TrainConfig.
        ValueError: the data yields no batch per epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Any,
        *,
        train_data: Dataset,
        loss_fn: LossFn,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        eval_fn: EvalFn | None = None,
        scheduler: Any = None,
        config: TrainConfig,
        out_dir: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not hasattr(train_data, "__len__") or not hasattr(train_data, "__getitem__"):
            raise TypeError("train_data must be a map-style Dataset (with __len__ and __getitem__)")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable: loss_fn(model, batch) -> (loss, metrics)")
        self.config = config
        self.train_data = train_data
        self.loss_fn = loss_fn
        self.collate_fn = collate_fn
        self.eval_fn = eval_fn
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.progress = progress

        # Device + process group, then the model, then the optimizer built on moved parameters.
        self.device = torch.device(config.device) if config.device else dist.default_device()
        self.distributed = dist.setup(self.device)
        self.rank, self.world_size = dist.rank(), dist.world_size()
        model.to(self.device)
        if not hasattr(optimizer, "step") and callable(optimizer):
            optimizer = optimizer(model.parameters())
        for attr in ("zero_grad", "step", "state_dict", "load_state_dict", "param_groups"):
            if not hasattr(optimizer, attr):
                raise TypeError(
                    f"optimizer has no {attr!r}; pass an Optimizer or params -> Optimizer"
                )
        self.optimizer = optimizer
        if scheduler is not None and not hasattr(scheduler, "state_dict") and callable(scheduler):
            scheduler = scheduler(optimizer)
        self.scheduler = scheduler
        self.model: nn.Module = model
        if self.distributed and any(p.requires_grad for p in model.parameters()):
            self.model = nn.parallel.DistributedDataParallel(
                model,
                device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=config.find_unused_parameters,
            )

        n = len(self._epoch_batches(0))
        if n == 0:
            raise ValueError(
                f"train_data ({len(train_data)} examples) yields no batch of size {config.batch_size} "
                f"per process (world size {self.world_size}, drop_last={config.drop_last})"
            )
        self.steps_per_epoch = n
        limits = [config.max_steps] if config.max_steps else []
        if config.epochs:
            limits.append(config.epochs * n)
        self.max_steps = min(limits)

        # Loop state (saved in checkpoints).
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.tokens_total = 0.0
        self.evals: list[dict[str, Any]] = []
        self._wall_offset = 0.0
        self._t0 = time.perf_counter()

    # ------------------------------------------------------------------ data order
    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """Index batches of ``epoch`` for this rank: a seeded permutation, split, chunked."""
        sampler = DistributedSampler(
            self.train_data,
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=self.config.shuffle,
            seed=self.config.seed,
        )
        sampler.set_epoch(epoch)
        idx = list(sampler)
        bs = self.config.batch_size
        batches = [idx[i : i + bs] for i in range(0, len(idx), bs)]
        if self.config.drop_last and batches and len(batches[-1]) < bs:
            batches.pop()
        return batches

    def _loader(self, batches: Sequence[list[int]], epoch: int) -> DataLoader:
        # A private generator: creating the iterator must not consume the global torch RNG
        # (that would make a resumed run's dropout masks differ from a straight run's).
        g = torch.Generator()
        g.manual_seed(self.config.seed * 1_000_003 + epoch)
        return DataLoader(
            self.train_data,
            batch_sampler=list(batches),
            collate_fn=self.collate_fn,
            num_workers=self.config.num_workers,
            generator=g,
            pin_memory=self.device.type == "cuda",
        )

    # ------------------------------------------------------------------ files
    @property
    def ckpt_root(self) -> Path | None:
        """``out_dir/checkpoints`` (None without ``out_dir``)."""
        return None if self.out_dir is None else self.out_dir / "checkpoints"

    @property
    def metrics_path(self) -> Path | None:
        """``out_dir/metrics.jsonl`` (None without ``out_dir``)."""
        return None if self.out_dir is None else self.out_dir / "metrics.jsonl"

    def _writes(self) -> bool:
        return self.out_dir is not None and dist.is_main_process()

    def _record(self, record: dict[str, Any]) -> None:
        if not self._writes():
            return
        assert self.metrics_path is not None
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, allow_nan=True)
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()

    def _truncate_metrics(self, step: int) -> None:
        """On resume, drop records the crashed run wrote after the checkpoint it resumes from."""
        if not self._writes() or self.metrics_path is None or not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except ValueError:
                continue  # a torn last line from a crash
        atomic_write_text(self.metrics_path, "".join(k + "\n" for k in kept))

    def _clear_stale_run(self) -> None:
        """A fresh start in a used ``out_dir``: drop the old log and checkpoints.

        Otherwise a later ``resume=True`` could pick up the previous run's (later) checkpoint.
        """
        if not self._writes():
            return
        assert self.metrics_path is not None and self.ckpt_root is not None
        stale = list_checkpoints(self.ckpt_root)
        if stale:
            warnings.warn(
                f"fresh start (resume=False) in {self.out_dir}: deleting {len(stale)} old checkpoint(s)",
                stacklevel=4,
            )
            for path in stale:
                shutil.rmtree(path, ignore_errors=True)
        if self.metrics_path.exists():
            self.metrics_path.unlink()

    def _now(self) -> float:
        return self._wall_offset + time.perf_counter() - self._t0

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0 writes; all ranks must call)."""
        rngs = dist.all_gather_object(_rng_state())
        path = None
        if self._writes():
            assert self.ckpt_root is not None
            state = {
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "wall_time": self._now(),
                "tokens_total": self.tokens_total,
                "world_size": self.world_size,
                "config": self.config.to_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "rng": rngs,
                "evals": self.evals,
            }
            path = save_checkpoint(
                self.ckpt_root, self.step, self.model, state, self.config.keep_last
            )
        dist.barrier()
        return path

    def _resume(self, resume: bool | str | os.PathLike) -> bool:
        if resume is True:
            if self.ckpt_root is None:
                raise ValueError("resume=True needs an out_dir")
            path = latest_checkpoint(self.ckpt_root)
            if path is None:
                warnings.warn(
                    f"resume=True but no checkpoint in {self.ckpt_root}; starting from scratch",
                    stacklevel=3,
                )
                return False
        else:
            path = Path(resume)
        state = load_checkpoint(path, model=dist.unwrap(self.model))
        if (
            state["config"].get("batch_size") != self.config.batch_size
            or state["world_size"] != self.world_size
        ):
            warnings.warn(
                "resuming with a different batch_size or world size: the data order will not "
                "match an uninterrupted run",
                stacklevel=3,
            )
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            if state["scheduler"] is None:
                raise ValueError(
                    f"checkpoint {path} has no scheduler state but a scheduler was given"
                )
            self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.tokens_total = float(state["tokens_total"])
        self.evals = list(state["evals"])
        self._wall_offset = float(state["wall_time"])
        rngs = state["rng"]
        if len(rngs) == self.world_size:
            _set_rng_state(rngs[self.rank])
        else:  # a different world size: fresh but reproducible per-rank streams
            seed_everything(self.config.seed + self.rank + 7919 * self.step)
        self._truncate_metrics(self.step)
        return True

    # ------------------------------------------------------------------ steps
    def _train_step(self, batch: Any) -> tuple[torch.Tensor, dict[str, Any], torch.Tensor]:
        batch = move_to_device(batch, self.device)
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if self.config.bf16
            else nullcontext()
        )
        self.optimizer.zero_grad()
        with autocast:
            out = self.loss_fn(self.model, batch)
        loss, metrics = out if isinstance(out, tuple) else (out, {})
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor loss (or (loss, metrics))")
        if not torch.isfinite(loss.detach()).item():
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.step + 1}")
        loss.backward()
        params = [p for p in dist.unwrap(self.model).parameters() if p.grad is not None]
        if self.config.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach().float(), dict(metrics), grad_norm.detach()

    def _evaluate(self) -> dict[str, Any]:
        metrics: dict[str, float] | None = None
        if dist.is_main_process():
            bare = dist.unwrap(self.model)
            was_training = bare.training
            bare.eval()
            autocast = (
                torch.autocast(self.device.type, dtype=torch.bfloat16)
                if self.config.bf16
                else nullcontext()
            )
            try:
                with _preserved_rng(), torch.no_grad(), autocast:
                    raw = self.eval_fn(bare) if self.eval_fn is not None else {}
            finally:
                bare.train(was_training)
            if not isinstance(raw, Mapping):
                raise ValueError(f"eval_fn must return a dict of floats, got {type(raw).__name__}")
            metrics = {k: _to_float(v, k) for k, v in raw.items()}
        metrics = dist.broadcast_object(metrics)
        record = {
            "event": "eval",
            "step": self.step,
            "epoch": self._epoch_float(),
            "time": self._now(),
            "lr": self._lr(),
            **metrics,
        }
        self.evals.append(record)
        self._record(record)
        return record

    def _epoch_float(self) -> float:
        return self.epoch + self.batch_in_epoch / self.steps_per_epoch

    # ------------------------------------------------------------------ main loop
    def fit(self, resume: bool | str | os.PathLike = False) -> dict[str, Any]:
        """Train until ``max_steps``/``epochs``; checkpoint, log and evaluate along the way.

        Args:
            resume: False: start fresh (seeding with ``config.seed``). True: continue from the
                newest valid checkpoint in ``out_dir/checkpoints`` (fresh start, with a warning,
                if there is none). A path: continue from that checkpoint directory.

        Returns:
            ``{"steps", "epochs", "wall_time", "train": last train record's metrics (loss, lr,
            grad_norm, loss_fn metrics), "eval": last eval metrics (or {}), "evals": all eval
            records, "tokens_per_s": float or None, "checkpoint": last checkpoint path or None,
            "out_dir"}``. Identical on every rank.
        """
        cfg = self.config
        self._t0 = time.perf_counter()
        resumed = bool(resume) and self._resume(resume)
        if not resumed:
            seed_everything(cfg.seed + self.rank)
            self.step = self.epoch = self.batch_in_epoch = 0
            self.tokens_total, self.evals, self._wall_offset = 0.0, [], 0.0
            self._clear_stale_run()
        if self._writes():
            assert self.out_dir is not None
            atomic_write_json(
                self.out_dir / "train_config.json",
                {
                    **cfg.to_dict(),
                    "world_size": self.world_size,
                    "steps_per_epoch": self.steps_per_epoch,
                    "max_steps_resolved": self.max_steps,
                },
            )
        self.model.train()
        bar = tqdm(
            total=self.max_steps,
            initial=self.step,
            disable=not (self.progress and dist.is_main_process()),
            dynamic_ncols=True,
            desc=self.out_dir.name if self.out_dir is not None else "train",
        )
        sums: dict[str, Any] = {}
        count = 0
        window_tokens = 0.0
        t_window = time.perf_counter()
        last_train: dict[str, Any] = {}
        last_eval_step = self.evals[-1]["step"] if self.evals else -1
        last_ckpt_step = self.step if resumed else -1
        ckpt_path: Path | None = None

        def flush() -> None:
            nonlocal sums, count, window_tokens, t_window, last_train
            if count == 0:
                return
            means = {
                k: (float(v) if not isinstance(v, torch.Tensor) else v.item()) / count
                for k, v in sums.items()
            }
            means = dist.all_reduce_mean(means, self.device)
            tokens = dist.all_reduce_sum(window_tokens, self.device)
            elapsed = max(time.perf_counter() - t_window, 1e-12)
            record = {
                "event": "train",
                "step": self.step,
                "epoch": self._epoch_float(),
                "time": self._now(),
                "lr": self._lr(),
                **means,
                "steps_per_s": count / elapsed,
            }
            if "tokens" in sums:
                record["tokens_per_s"] = tokens / elapsed
            self._record(record)
            bar.set_postfix(loss=f"{means['loss']:.4g}", lr=f"{record['lr']:.3g}", refresh=False)
            last_train = record
            sums, count, window_tokens, t_window = {}, 0, 0.0, time.perf_counter()

        try:
            while self.step < self.max_steps:
                batches = self._epoch_batches(self.epoch)
                for batch in self._loader(batches[self.batch_in_epoch :], self.epoch):
                    loss, metrics, grad_norm = self._train_step(batch)
                    self.step += 1
                    self.batch_in_epoch += 1
                    if self.batch_in_epoch >= len(batches):
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    # running sums for the next train record
                    sums["loss"] = sums.get("loss", 0.0) + loss
                    sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm
                    for k, v in metrics.items():
                        val = _to_float(v, k)
                        if k == "tokens":
                            window_tokens += val
                            self.tokens_total += val
                        sums[k] = sums.get(k, 0.0) + val
                    count += 1
                    bar.update(1)
                    if self.step % cfg.log_every == 0:
                        flush()
                    if cfg.eval_every and self.step % cfg.eval_every == 0:
                        self._evaluate()
                        last_eval_step = self.step
                    if (
                        cfg.ckpt_every
                        and self.step % cfg.ckpt_every == 0
                        and self.out_dir is not None
                    ):
                        ckpt_path = self.save_checkpoint()
                        last_ckpt_step = self.step
                    if self.step >= self.max_steps:
                        break
            flush()
            if last_eval_step != self.step:
                self._evaluate()
            if self.out_dir is not None and last_ckpt_step != self.step:
                ckpt_path = self.save_checkpoint()
        finally:
            bar.close()
        if self.distributed:
            self._check_replicas_in_sync()
        train_time = self._now()
        total_tokens = dist.all_reduce_sum(self.tokens_total, self.device)
        history = {
            "steps": self.step,
            "epochs": self._epoch_float(),
            "wall_time": train_time,
            "train": {
                k: v for k, v in last_train.items() if k not in ("event", "step", "epoch", "time")
            },
            "eval": {
                k: v
                for k, v in (self.evals[-1] if self.evals else {}).items()
                if k not in ("event", "step", "epoch", "time", "lr")
            },
            "evals": list(self.evals),
            "tokens_per_s": total_tokens / train_time if self.tokens_total else None,
            "checkpoint": None if ckpt_path is None else str(ckpt_path),
            "out_dir": None if self.out_dir is None else str(self.out_dir),
        }
        if self._writes():
            assert self.out_dir is not None
            save_model(self.model, self.out_dir / "model.safetensors")
            atomic_write_json(self.out_dir / "history.json", history)
        dist.barrier()
        return history

    def _check_replicas_in_sync(self) -> None:
        """Raise if DDP replicas diverged (e.g. ``loss_fn`` bypassed ``model(...)``)."""
        with torch.no_grad():
            fp = sum(
                float(p.double().sum()) + float(p.double().square().sum())
                for p in dist.unwrap(self.model).parameters()
            )
        prints = dist.all_gather_object(fp)
        if any(x != prints[0] and not (math.isnan(x) and math.isnan(prints[0])) for x in prints):
            raise RuntimeError(
                f"DDP replicas diverged (parameter fingerprints {prints}); loss_fn must call "
                "model(...) on the DDP-wrapped model so gradients are synchronised"
            )
