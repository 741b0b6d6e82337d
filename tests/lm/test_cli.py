"""``kexue lm pretrain`` and ``kexue lm eval`` through the real CLI."""

from __future__ import annotations

import json

import pytest

from kexue.cli import main


def _err(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


def test_lm_pretrain_and_eval(tmp_path, capsys):
    out = tmp_path / "bert"
    argv = [
        "lm",
        "pretrain",
        "--out",
        str(out),
        "--hidden",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--max-len",
        "32",
        "--max-positions",
        "64",
        "--steps",
        "4",
        "--batch-size",
        "4",
        "--max-texts",
        "200",
        "--warmup",
        "1",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "perplexity" in capsys.readouterr().out
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert "--resume" in _err(capsys, argv)  # not empty: refuse
    assert main([*argv, "--resume"]) == 0  # all steps done: resumes and finishes
    capsys.readouterr()
    assert main(["lm", "eval", "--model", str(out), "--max-len", "32", "--max-texts", "50"]) == 0
    assert json.loads(capsys.readouterr().out)["masked_tokens"] > 0
    assert "divisible" in _err(
        capsys, ["lm", "pretrain", "--out", str(tmp_path / "b2"), "--hidden", "30", "--heads", "4"]
    )
    assert "no checkpoints" in _err(
        capsys, ["lm", "pretrain", "--out", str(tmp_path / "b3"), "--resume"]
    )


def test_preset_flags_given_override_even_at_the_plain_default(monkeypatch):
    """--hidden 128 with --preset zh-char-bert must give 128 although 128 is also the plain
    default (the flag was once ignored when it equalled the default)."""
    import kexue.lm.cli as cli

    seen = {}

    def fake_pretrain(cfg, out, **kw):
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(cli, "pretrain", fake_pretrain)
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    lm = cli.add_subparser(sub)
    args = lm.parse_args(["pretrain", "--out", "/nonexistent/x", "--preset", "zh-char-bert",
                          "--hidden", "128", "--steps", "10", "--warmup", "5"])  # fmt: skip
    with pytest.raises(SystemExit):
        cli.cmd_pretrain(args)
    cfg = seen["cfg"]
    assert cfg.hidden_size == 128 and cfg.steps == 10
    assert cfg.pos_offset is True  # the rest is the preset's
