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

import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from kexue.core.io import atomic_write_json
from kexue.core.seed import seed_everything
from kexue.train import distributed as dist
from kexue.train.checkpoint import (
    CorruptCheckpointError,
    apply_weights,
    checkpoint_dirs,
    checkpoint_problem,
    read_checkpoint,
    save_checkpoint,
    save_model,
)
from kexue.train.config import TrainConfig
from kexue.train.data import epoch_batches, make_loader, move_to_device
from kexue.train.metrics import MetricsLog, RunningMeans, to_float
from kexue.train.rng import get_rng_state, preserved_rng, set_rng_state

LossOutput = torch.Tensor | tuple[torch.Tensor, Mapping[str, Any]]
LossFn = Callable[[nn.Module, Any], LossOutput]
EvalFn = Callable[[nn.Module], Mapping[str, Any]]
StopFn = Callable[["Trainer"], bool]

__all__ = ["Trainer", "move_to_device"]


def _check_optimizer_params(optimizer: Any, model: nn.Module) -> None:
    """Every parameter the optimizer updates must be one of the model's (checked by identity).

    Otherwise training is a silent no-op (an optimizer built on another model's parameters) or
    silently incomplete on resume (checkpoints hold only the model's weights).
    """
    own = {id(p) for p in model.parameters()}
    held = [p for group in optimizer.param_groups for p in group["params"]]
    if not held:
        raise ValueError("optimizer holds no parameters; build it on model.parameters()")
    foreign = [p for p in held if id(p) not in own]
    if foreign:
        shapes = ", ".join(str(tuple(p.shape)) for p in foreign[:3])
        raise ValueError(
            f"optimizer holds {len(foreign)} of {len(held)} parameter(s) that are not the "
            f"model's (shapes {shapes}{', ...' if len(foreign) > 3 else ''}): they would be "
            "trained without being checkpointed, or the model would not train at all; build "
            "the optimizer on this model's parameters (or pass params -> optimizer)"
        )


def _clip_mixed_(params: list[nn.Parameter], max_norm: float | None) -> torch.Tensor:
    """Global L2 gradient norm (and optional clipping) when some gradients are sparse.

    ``torch.nn.utils`` norms reject sparse COO gradients (``nn.Embedding(sparse=True)``); the norm
    of a sparse gradient is that of its coalesced values (duplicate indices summed first).
    """
    norms = []
    for p in params:
        g = p.grad
        if g.is_sparse:
            g = p.grad = g.coalesce()
            norms.append(torch.linalg.vector_norm(g.values().float()))
        else:
            norms.append(torch.linalg.vector_norm(g.float()))
    total = torch.linalg.vector_norm(torch.stack(norms))
    if max_norm:
        scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for p in params:
            p.grad.mul_(scale.to(p.grad.dtype))
    return total


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
        should_stop: ``should_stop(trainer) -> bool``, asked after every step (after that step's
            eval and checkpoint); True ends training cleanly there (a final eval and checkpoint
            are written as at the normal end, and ``fit`` returns ``"stopped": True``). Use it
            for early stopping (read ``trainer.evals``) or a time budget
            (:attr:`wall_time`). Under DDP rank 0's answer is broadcast, so all ranks stop
            together. ``None`` (default): train for ``max_steps``/``epochs``.

    Raises:
        TypeError: ``train_data`` has no ``__len__`` or ``config`` is not a TrainConfig.
        ValueError: the data yields no batch per epoch; the optimizer holds no parameters or
            parameters that are not the model's.
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
        should_stop: StopFn | None = None,
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
        if should_stop is not None and not callable(should_stop):
            raise TypeError("should_stop must be callable: should_stop(trainer) -> bool")
        self.should_stop = should_stop
        self.stopped = False
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.progress = progress

        # Device + process group, then the model, then the optimizer built on moved parameters.
        self.device = torch.device(config.device) if config.device else dist.default_device()
        self.distributed = dist.setup(self.device)
        self.rank, self.world_size = dist.rank(), dist.world_size()
        self.log = MetricsLog(self.metrics_path if self._writes() else None)
        model.to(self.device)
        if not hasattr(optimizer, "step") and callable(optimizer):
            optimizer = optimizer(model.parameters())
        for attr in ("zero_grad", "step", "state_dict", "load_state_dict", "param_groups"):
            if not hasattr(optimizer, attr):
                raise TypeError(
                    f"optimizer has no {attr!r}; pass an Optimizer or params -> Optimizer"
                )
        _check_optimizer_params(optimizer, model)
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

    # ------------------------------------------------------------------ helpers
    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        cfg = self.config
        return epoch_batches(
            self.train_data,
            epoch=epoch,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            shuffle=cfg.shuffle,
            drop_last=cfg.drop_last,
            rank=self.rank,
            world_size=self.world_size,
        )

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

    def _autocast(self) -> AbstractContextManager:
        if self.config.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _now(self) -> float:
        return self._wall_offset + time.perf_counter() - self._t0

    @property
    def wall_time(self) -> float:
        """Seconds of training so far, resumed runs included (the interrupted run's time counts)."""
        return self._now()

    def _ask_stop(self) -> bool:
        """``should_stop(self)``, rank 0's answer on every rank."""
        if self.should_stop is None:
            return False
        answer = bool(self.should_stop(self)) if dist.is_main_process() else False
        return bool(dist.broadcast_object(answer)) if self.distributed else answer

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _epoch_float(self) -> float:
        return self.epoch + self.batch_in_epoch / self.steps_per_epoch

    def _stamp(self, event: str) -> dict[str, Any]:
        return {
            "event": event,
            "step": self.step,
            "epoch": self._epoch_float(),
            "time": self._now(),
            "lr": self._lr(),
        }

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0 writes; every rank must call).

        Returns:
            The checkpoint directory on rank 0, None elsewhere or without ``out_dir``.
        """
        rngs = dist.all_gather_object(get_rng_state())  # every rank's streams, for exact resume
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
                "n_examples": len(self.train_data),
            }
            path = save_checkpoint(
                self.ckpt_root, self.step, self.model, state, self.config.keep_last
            )
        dist.barrier()
        return path

    def _find_resumable(self) -> tuple[Path, dict[str, Any], dict[str, Any]] | None:
        """Newest checkpoint in ``ckpt_root`` that verifies and parses; set the others aside.

        Corrupt newer checkpoints are renamed ``corrupt_step_*`` (kept for inspection, never
        loaded, counted by ``keep_last`` or deleted) and named in a warning.
        """
        assert self.ckpt_root is not None
        skipped: list[str] = []
        corrupt: list[Path] = []
        found = None
        for path in reversed(checkpoint_dirs(self.ckpt_root)):
            problem = checkpoint_problem(path)
            if problem is None:
                try:
                    weights, state = read_checkpoint(path)
                except (CorruptCheckpointError, OSError) as err:
                    problem = str(err)
                else:
                    found = (path, weights, state)
                    break
            skipped.append(f"{path.name} ({problem})")
            corrupt.append(path)
        dist.barrier()  # every rank has chosen before rank 0 moves anything
        if self._writes():
            for path in corrupt:
                aside = path.with_name(f"corrupt_{path.name}")
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(path, aside)
        listing = "; ".join(skipped)
        if found is None:
            if skipped:
                warnings.warn(
                    f"resume=True but no valid checkpoint in {self.ckpt_root}: skipped corrupt "
                    f"checkpoint(s) {listing} (kept as corrupt_step_*); starting from scratch",
                    stacklevel=4,
                )
            else:
                warnings.warn(
                    f"resume=True but no checkpoint in {self.ckpt_root}; starting from scratch",
                    stacklevel=4,
                )
        elif skipped:
            warnings.warn(
                f"skipped corrupt checkpoint(s) in {self.ckpt_root}: {listing} (kept as "
                f"corrupt_step_*); resuming from {found[0].name} instead",
                stacklevel=4,
            )
        return found

    def _resume(self, resume: bool | str | os.PathLike) -> bool:
        if resume is True:
            if self.ckpt_root is None:
                raise ValueError("resume=True needs an out_dir")
            found = self._find_resumable()
            if found is None:
                return False
            path, weights, state = found
        else:
            path = Path(resume)
            weights, state = read_checkpoint(path)  # raises one line naming what is wrong
        apply_weights(self.model, weights, path / "model.safetensors")
        if (
            state["config"].get("batch_size") != self.config.batch_size
            or state["config"].get("seed") != self.config.seed
            or state["world_size"] != self.world_size
        ):
            warnings.warn(
                "resuming with a different batch_size, seed or world size: the data order will "
                "not match an uninterrupted run",
                stacklevel=3,
            )
        then, now = state.get("n_examples"), len(self.train_data)
        if then is not None and int(then) != now:
            # the saved position in the epoch means nothing on other data (and an empty rest
            # of the epoch once looped forever)
            raise ValueError(
                f"checkpoint {path} was written for {then} training examples, the data now has "
                f"{now}: the training data changed; restore it, or start again with --overwrite"
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
            set_rng_state(rngs[self.rank])
        else:  # a different world size: fresh but reproducible per-rank streams
            seed_everything(self.config.seed + self.rank + 7919 * self.step)
        self.log.truncate_after(self.step)  # drop what a crashed run logged after this point
        return True

    def _refuse_to_discard(self, overwrite: bool) -> None:
        """``fit(resume=False)`` in an ``out_dir`` that holds checkpoints: refuse unless told."""
        if self.ckpt_root is None or overwrite:
            return
        old = checkpoint_dirs(self.ckpt_root)
        if old:
            raise ValueError(
                f"{self.ckpt_root} already holds {len(old)} checkpoint(s) (newest {old[-1].name}); "
                "a fresh fit() would replace that run's checkpoints and metrics.jsonl: pass "
                "resume=True to continue it, overwrite=True to start over, or another out_dir"
            )

    def _start_fresh(self) -> None:
        """Seed, zero the counters; in a used ``out_dir`` (``overwrite=True``) drop the old log
        and checkpoints, so a later ``resume=True`` cannot pick up the previous run's.
        """
        seed_everything(self.config.seed + self.rank)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.tokens_total, self.evals, self._wall_offset = 0.0, [], 0.0
        if not self._writes():
            return
        assert self.ckpt_root is not None
        stale = checkpoint_dirs(self.ckpt_root)
        if stale:
            warnings.warn(
                f"fresh start (overwrite=True) in {self.out_dir}: deleting {len(stale)} old "
                "checkpoint(s)",
                stacklevel=3,
            )
            for path in stale:
                shutil.rmtree(path, ignore_errors=True)
        self.log.clear()

    # ------------------------------------------------------------------ one step, one eval
    def _train_step(
        self, batch: Any, need_norm: bool
    ) -> tuple[torch.Tensor, Mapping[str, Any], torch.Tensor | None]:
        """One optimizer step; the gradient norm only when clipping or logging needs it."""
        batch = move_to_device(batch, self.device)
        self.optimizer.zero_grad()
        with self._autocast():
            out = self.loss_fn(self.model, batch)
        loss, metrics = out if isinstance(out, tuple) else (out, None)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor loss (or (loss, metrics))")
        loss = loss.reshape(())
        value = loss.item()  # one host read per step (cheaper than an isfinite kernel + read)
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite loss {value} at step {self.step + 1}")
        loss.backward()
        grad_norm = None
        if need_norm or self.config.grad_clip:
            # g <- g * min(1, c / ||g||); the pre-clip norm ||g|| is logged as grad_norm
            params = [p for p in dist.unwrap(self.model).parameters() if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                grad_norm = _clip_mixed_(params, self.config.grad_clip)
            elif self.config.grad_clip:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
            else:
                grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
            grad_norm = grad_norm.detach()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach(), metrics or {}, grad_norm

    def evaluate(self) -> dict[str, Any]:
        """Call ``eval_fn`` now (rank 0), log an ``eval`` record and return it (every rank)."""
        metrics: dict[str, float] | None = None
        if dist.is_main_process():
            bare = dist.unwrap(self.model)
            was_training = bare.training
            bare.eval()
            try:
                with preserved_rng(), torch.no_grad(), self._autocast():
                    raw = self.eval_fn(bare) if self.eval_fn is not None else {}
            finally:
                bare.train(was_training)
            if not isinstance(raw, Mapping):
                raise ValueError(f"eval_fn must return a dict of floats, got {type(raw).__name__}")
            metrics = {k: to_float(v, k) for k, v in raw.items()}
        metrics = dist.broadcast_object(metrics)
        record = {**self._stamp("eval"), **metrics}
        self.evals.append(record)
        self.log.append(record)
        return record

    # ------------------------------------------------------------------ main loop
    def fit(
        self, resume: bool | str | os.PathLike = False, *, overwrite: bool = False
    ) -> dict[str, Any]:
        """Train until ``max_steps``/``epochs``; checkpoint, log and evaluate along the way.

        Args:
            resume: False: start fresh (seeding with ``config.seed``). True: continue from the
                newest checkpoint in ``out_dir/checkpoints`` whose files match their manifest
                hashes; corrupt newer ones are skipped with a warning naming them (fresh start,
                with a warning, if none is valid). A path: continue from that checkpoint
                directory (an error if it is corrupt).
            overwrite: with ``resume=False`` in an ``out_dir`` that already holds checkpoints,
                delete them (and ``metrics.jsonl``) and start over; without it such a call
                raises ``ValueError`` so a finished or interrupted run is never lost by accident.

        Returns:
            A dict, identical on every rank, with the keys ``steps``, ``epochs``, ``wall_time``,
            ``train`` (the last train record's values: loss, lr, grad_norm, loss_fn metrics,
            steps_per_s, tokens_per_s), ``eval`` (the last eval metrics, or ``{}``), ``evals``
            (all eval records), ``tokens_per_s`` (float or None), ``checkpoint`` (the last
            checkpoint path or None), ``out_dir`` and ``stopped`` (True if ``should_stop``
            ended the run).

        Raises:
            ValueError: ``resume=False`` in an ``out_dir`` holding checkpoints without
                ``overwrite=True``; ``resume`` is a path to a corrupt checkpoint
                (:class:`~kexue.train.checkpoint.CorruptCheckpointError`) or to another model's.
        """
        if not isinstance(overwrite, bool):
            raise TypeError(f"overwrite must be a bool, got {type(overwrite).__name__}")
        cfg = self.config
        if not resume:
            self._refuse_to_discard(overwrite)
        self._t0 = time.perf_counter()
        self.stopped = False
        resumed = bool(resume) and self._resume(resume)
        if not resumed:
            self._start_fresh()
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
        window, window_tokens, t_window = RunningMeans(), 0.0, time.perf_counter()
        norms = RunningMeans()  # grad norms: every step when clipping, else at log steps only
        last_train: dict[str, Any] = {}
        last_eval_step = self.evals[-1]["step"] if self.evals else -1
        last_ckpt_step = self.step if resumed else -1
        ckpt_path: Path | None = None
        has_eval = self.eval_fn is not None

        def flush() -> None:  # one "train" record: means over the window, all-reduced
            nonlocal window_tokens, t_window, last_train
            if window.count == 0:
                return
            means = window.means()
            if norms.count:
                means["grad_norm"] = norms.means()["grad_norm"]
            means = dist.all_reduce_mean(means, self.device)
            tokens = dist.all_reduce_sum(window_tokens, self.device)
            elapsed = max(time.perf_counter() - t_window, 1e-12)
            record = {**self._stamp("train"), **means, "steps_per_s": window.count / elapsed}
            if "tokens" in means:
                record["tokens_per_s"] = tokens / elapsed
            self.log.append(record)
            bar.set_postfix(loss=f"{means['loss']:.4g}", lr=f"{record['lr']:.3g}", refresh=False)
            last_train = record
            window.reset()
            norms.reset()
            window_tokens, t_window = 0.0, time.perf_counter()

        try:
            while self.step < self.max_steps:
                batches = self._epoch_batches(self.epoch)
                if not batches:
                    raise ValueError("the training data gives no batch (empty data set?)")
                if self.batch_in_epoch >= len(batches):  # never loop on an empty remainder
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    continue
                loader = make_loader(
                    self.train_data,
                    batches[self.batch_in_epoch :],
                    seed=cfg.seed * 1_000_003 + self.epoch,
                    collate_fn=self.collate_fn,
                    num_workers=cfg.num_workers,
                    pin_memory=self.device.type == "cuda",
                )
                for batch in loader:
                    step = self.step + 1
                    logs = step % cfg.log_every == 0 or step >= self.max_steps
                    loss, metrics, grad_norm = self._train_step(batch, need_norm=logs)
                    self.step = step
                    self.batch_in_epoch += 1
                    if self.batch_in_epoch >= len(batches):
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    window.add({"loss": loss, **metrics} if metrics else {"loss": loss})
                    if grad_norm is not None:
                        norms.add({"grad_norm": grad_norm})
                    if "tokens" in metrics:
                        n_tok = to_float(metrics["tokens"], "tokens")
                        window_tokens += n_tok
                        self.tokens_total += n_tok
                    bar.update(1)
                    if self.step % cfg.log_every == 0:
                        flush()
                    if has_eval and cfg.eval_every and self.step % cfg.eval_every == 0:
                        self.evaluate()
                        last_eval_step = self.step
                    if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and self.out_dir:
                        ckpt_path = self.save_checkpoint()
                        last_ckpt_step = self.step
                    if self.step >= self.max_steps:
                        break
                    if self._ask_stop():
                        self.stopped = True
                        break
                if self.stopped:
                    break
            flush()
            if has_eval and last_eval_step != self.step:
                self.evaluate()
            if self.out_dir is not None and last_ckpt_step != self.step:
                ckpt_path = self.save_checkpoint()
        finally:
            bar.close()
        if self.distributed:
            self._check_replicas_in_sync()
        wall = self._now()
        total_tokens = dist.all_reduce_sum(self.tokens_total, self.device)
        skip = ("event", "step", "epoch", "time")
        history = {
            "steps": self.step,
            "epochs": self._epoch_float(),
            "wall_time": wall,
            "train": {k: v for k, v in last_train.items() if k not in skip},
            "eval": {
                k: v
                for k, v in (self.evals[-1] if self.evals else {}).items()
                if k not in (*skip, "lr")
            },
            "evals": list(self.evals),
            "tokens_per_s": total_tokens / wall if self.tokens_total else None,
            "checkpoint": None if ckpt_path is None else str(ckpt_path),
            "out_dir": None if self.out_dir is None else str(self.out_dir),
            "stopped": self.stopped,
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
        if any(x != prints[0] and not (x != x and prints[0] != prints[0]) for x in prints):
            raise RuntimeError(
                f"DDP replicas diverged (parameter fingerprints {prints}); loss_fn must call "
                "model(...) on the DDP-wrapped model so gradients are synchronised"
            )
