"""``kexue lm pretrain`` and ``kexue lm eval``: tiny Chinese BERT pretraining and held-out scores.

``pretrain`` writes a standard HF directory (``config.json``, ``model.safetensors``, tokenizer
files) that ``transformers`` ``from_pretrained`` and ``kexue mrc train --model DIR`` read; it runs
under ``torchrun`` unchanged and continues an interrupted run with ``--resume``. User errors raise
``ValueError`` / ``FileNotFoundError``: the main CLI prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from typing import Any

from kexue.core.io import check_out_dir
from kexue.lm.pretraining import PRESETS, PretrainConfig, chinese_texts, evaluate_mlm, pretrain

_FIELDS = {  # flag -> PretrainConfig field
    "hidden_size": "hidden", "num_layers": "layers", "num_heads": "heads", "max_len": "max_len",
    "steps": "steps", "batch_size": "batch_size", "lr": "lr", "warmup": "warmup",
    "min_freq": "min_freq", "max_vocab": "max_vocab", "max_texts": "max_texts",
    "max_positions": "max_positions", "seed": "seed",
}  # fmt: skip


class _Fmt(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except ``None`` ones (those say their default in the text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None:
            return action.help or ""
        return super()._get_help_string(action)


def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``lm pretrain``, ``lm export`` and ``lm eval`` on the main CLI; returns ``lm``."""
    fmt = _Fmt
    lm = subparsers.add_parser("lm", help="pretrain / score a tiny Chinese BERT (MLM)")
    sub = lm.add_subparsers(dest="lm_command", metavar="SUBCOMMAND", parser_class=type(lm))
    d = PretrainConfig()
    p = sub.add_parser("pretrain", help="MLM pretraining on chinese-text", formatter_class=fmt)
    p.add_argument("--out", required=True, metavar="DIR", help="output HF model directory")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="a named recipe (zh-char-bert rebuilds the shipped model); the flags given "
        "override it",
    )
    p.add_argument(
        "--hidden",
        type=int,
        default=None,
        help=f"hidden size  (default: {d.hidden_size}; with --preset: the preset's)",
    )
    p.add_argument(
        "--layers",
        type=int,
        default=None,
        help=f"Transformer blocks  (default: {d.num_layers}; with --preset: the preset's)",
    )
    p.add_argument(
        "--heads",
        type=int,
        default=None,
        help=f"attention heads  (default: {d.num_heads}; with --preset: the preset's)",
    )
    p.add_argument(
        "--max-len",
        type=int,
        default=None,
        help=f"chunk length in tokens  (default: {d.max_len}; with --preset: the preset's)",
    )
    p.add_argument(
        "--max-positions",
        type=int,
        default=None,
        help=f"position table  (default: {d.max_positions}; with --preset: the preset's)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"optimizer steps  (default: {d.steps}; with --preset: the preset's)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"chunks per step  (default: {d.batch_size}; with --preset: the preset's)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"peak learning rate (one-cycle)  (default: {d.lr}; with --preset: the preset's)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help=f"linear warm-up steps  (default: {d.warmup}; with --preset: the preset's)",
    )
    p.add_argument(
        "--min-freq",
        type=int,
        default=None,
        help=f"vocabulary: min count  (default: {d.min_freq}; with --preset: the preset's)",
    )
    p.add_argument(
        "--max-vocab",
        type=int,
        default=None,
        help=f"0: no cap  (default: {d.max_vocab}; with --preset: the preset's)",
    )
    p.add_argument(
        "--max-texts",
        type=int,
        default=None,
        help=f"0: all training texts  (default: {d.max_texts}; with --preset: the preset's)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"model init and masking seed  (default: {d.seed}; with --preset: the preset's)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/trainer checkpoints")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)

    x = sub.add_parser(
        "export",
        help="write an fp16 copy of a pretrained BERT with a manifest (hashes, recipe, scores)",
        formatter_class=fmt,
    )
    x.add_argument("--model", required=True, metavar="DIR", help="a `lm pretrain` directory")
    x.add_argument(
        "--step",
        type=int,
        default=None,
        help="export the run's Trainer checkpoint at this step (an unfinished run) instead of "
        "its final weights",
    )
    x.add_argument("--out", required=True, metavar="DIR", help="the fp16 HF directory to write")
    x.add_argument("--name", default="zh-char-bert", help="the model's name in its manifest")
    x.add_argument("--check-texts", type=int, default=200, help="held-out texts of the check")
    x.add_argument(
        "--train-threads",
        type=int,
        default=None,
        help="torch threads the pretraining ran with (for the manifest's CPU hours)",
    )
    x.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    x.set_defaults(func=cmd_export)

    e = sub.add_parser("eval", help="held-out MLM accuracy / perplexity", formatter_class=fmt)
    e.add_argument("--model", required=True, metavar="DIR", help="a HF masked-LM directory")
    e.add_argument(
        "--max-len",
        type=int,
        default=None,
        help="chunk length (default: the model's pretraining max_len, else 128)",
    )
    e.add_argument("--max-texts", type=int, default=0, help="0: all of chinese-text valid")
    e.set_defaults(func=cmd_eval)
    return lm


def check_device(device: str | None) -> None:
    """Refuse a ``--device`` torch cannot use here, in one line (before any work)."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"--device {device!r}: not a torch device (cpu, cuda, cuda:1, mps)"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine (use cpu)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine (use cpu)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device}: only cpu, cuda and mps are supported")


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Handler of ``kexue lm pretrain``."""
    given = {f: getattr(args, a) for f, a in _FIELDS.items() if getattr(args, a) is not None}
    base = PRESETS[args.preset] if args.preset else PretrainConfig()
    cfg = dataclasses.replace(base, **given)  # only the flags given override the base
    if cfg.warmup > cfg.steps:
        raise ValueError(f"--warmup ({cfg.warmup}) must not exceed --steps ({cfg.steps})")
    check_device(args.device)
    out = check_out_dir(args.out, resume=args.resume, overwrite=args.overwrite)
    if args.resume and not (out / "trainer" / "checkpoints").is_dir():
        raise FileNotFoundError(f"--resume: no checkpoints under {out / 'trainer'}")
    if args.overwrite and out.is_dir():
        shutil.rmtree(out)
    res = pretrain(cfg, out, resume=args.resume, progress=not args.no_progress, device=args.device)
    ev = res["eval"]
    print(
        f"saved tiny BERT ({res['vocab_size']} tokens) to {out}; held-out MLM accuracy "
        f"{ev['mlm_accuracy']:.4f}, perplexity {ev['perplexity']:.2f}"
    )
    return 0


def cmrc_passages() -> list[str]:
    """The distinct CMRC 2018 trial passages, in order (text the pretraining never saw)."""
    from kexue import data

    seen: dict[str, None] = {}
    for r in data.load("cmrc2018", "trial"):
        seen.setdefault(r["context"], None)
    return list(seen)


def export_report(model_dir: Any, *, check_texts: int = 200) -> dict[str, Any]:
    """The scores a shipped model's manifest records, computed on ``model_dir`` as loaded.

    ``eval.chinese_text_valid`` / ``eval.cmrc2018_trial_passages``: :func:`evaluate_mlm` at
    ``max_len`` 128 and 15 % masking (fixed seed), with :func:`unigram_baseline` beside each;
    ``check``: the same on the first ``check_texts`` valid texts (the test suite reproduces it).
    """
    from kexue.lm.model import load_pretrained
    from kexue.lm.pretraining import unigram_baseline

    model, tok = load_pretrained(model_dir)
    train = chinese_texts("train")
    valid = chinese_texts("valid")
    cmrc = cmrc_passages()
    out: dict[str, Any] = {"eval": {}, "vocab_size": len(tok)}
    for key, texts in (("chinese_text_valid", valid), ("cmrc2018_trial_passages", cmrc)):
        ev = evaluate_mlm(model, tok, texts, max_len=128)
        out["eval"][key] = {**ev, "unigram": unigram_baseline(tok, train, texts)}
    out["check"] = {
        "texts": f"chinese-text valid, first {check_texts}",
        "max_len": 128,
        "mask_prob": 0.15,
        "seed": 1234,
        **evaluate_mlm(model, tok, valid[:check_texts], max_len=128),
    }
    return out


def cmd_export(args: argparse.Namespace) -> int:
    """Handler of ``kexue lm export``."""
    from pathlib import Path

    from kexue.core.io import write_dir_manifest
    from kexue.lm.shipped import export_fp16

    src = Path(args.model)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise ValueError(f"--out {out} is not empty: pass --overwrite to replace it")
    if args.check_texts < 1:
        raise ValueError(f"--check-texts must be >= 1, got {args.check_texts}")
    info: dict[str, Any] = {"name": args.name, "format": "HF BertForMaskedLM, fp16 safetensors"}
    if (src / "pretrain_config.json").is_file():
        info["config"] = json.loads((src / "pretrain_config.json").read_text())
    pre: dict[str, Any] = {}
    if args.step is None:
        if not (src / "config.json").is_file():
            raise FileNotFoundError(f"--model {src}: not a HF model directory (no config.json)")
        if (src / "pretrain_eval.json").is_file():
            pre = json.loads((src / "pretrain_eval.json").read_text())
        hist = pre.get("history", {})
        steps, wall = hist.get("steps"), hist.get("wall_time")
        model_dir = src
    else:
        from kexue.lm.model import save_pretrained
        from kexue.lm.pretraining import model_from_checkpoint

        model, tok, cfg = model_from_checkpoint(src, args.step)
        records = [
            json.loads(line)
            for line in (src / "trainer" / "metrics.jsonl").read_text().splitlines()
            if line.strip()
        ]
        at = [r for r in records if r.get("event") == "train" and r.get("step") == args.step]
        steps, wall = args.step, (at[-1]["time"] if at else None)
        pre = {"final_loss": at[-1]["loss"] if at else None}
        info["schedule"] = (
            f"checkpoint at step {args.step} of the {cfg.steps}-step schedule (linear warm-up "
            f"over {cfg.warmup}, linear decay to 0 at {cfg.steps}); `--resume` continues "
            "that run, and the preset runs the same schedule from scratch"
        )
        model_dir = out.parent / f".{out.name}.checkpoint"
        save_pretrained(model, tok, model_dir)
    cfgd = info.get("config", {})
    info["pretraining"] = {
        "corpus": "kexue.data chinese-text train (MSRA NER sentences, LCSTS texts, CSL "
        "abstracts, CLUENER texts; no CMRC text), packed into "
        f"{cfgd.get('max_len', 128) - 2}-character chunks",
        "steps": steps,
        "tokens": steps * cfgd["batch_size"] * cfgd["max_len"] if steps and cfgd else None,
        "wall_seconds": wall,
        "threads": args.train_threads,
        "cpu_hours_estimate": (
            wall * args.train_threads / 3600 if wall and args.train_threads else None
        ),
        "final_train_loss": pre.get("final_loss"),
    }
    export_fp16(model_dir, out, info=info)
    if model_dir != src:
        shutil.rmtree(model_dir, ignore_errors=True)
    # scores of the fp16 weights as they load (in float32), not of the float32 original
    rep = export_report(out, check_texts=args.check_texts)
    info.update(rep)
    write_dir_manifest(out, extra=info)
    ev = rep["eval"]
    print(
        f"wrote {out}: held-out MLM accuracy {ev['chinese_text_valid']['mlm_accuracy']:.4f} "
        f"(unigram {ev['chinese_text_valid']['unigram']['mlm_accuracy']:.4f}), CMRC trial "
        f"passages {ev['cmrc2018_trial_passages']['mlm_accuracy']:.4f} "
        f"(unigram {ev['cmrc2018_trial_passages']['unigram']['mlm_accuracy']:.4f})"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Handler of ``kexue lm eval``."""
    from pathlib import Path

    from kexue.lm.model import load_pretrained
    from kexue.lm.shipped import resolve_model_dir

    path = resolve_model_dir(args.model)
    max_len = args.max_len
    if max_len is None:  # the same chunks as pretraining printed, so the numbers agree
        pc = Path(path) / "pretrain_config.json"
        max_len = json.loads(pc.read_text()).get("max_len", 128) if pc.is_file() else 128
    if max_len < 3 or args.max_texts < 0:
        raise ValueError("--max-len must be >= 3 and --max-texts >= 0")
    model, tok = load_pretrained(path)
    texts = chinese_texts("valid", args.max_texts)
    res = {**evaluate_mlm(model, tok, texts, max_len=max_len), "max_len": max_len}
    print(json.dumps(res))
    return 0
