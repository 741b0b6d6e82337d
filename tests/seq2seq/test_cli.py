"""``kexue seq2seq train/generate/evaluate`` through the real CLI entry point."""

from __future__ import annotations

import io
import json

import pytest

from kexue.cli import main

PAIRS = [("今天北京天气很好", "北京晴"), ("上海股市大涨三成", "股市涨"),
         ("研究发现喝茶有益", "喝茶好"), ("北京上海高铁提速", "高铁提速")]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("s2s_cli")
    tsv = d / "train.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS * 4), encoding="utf-8")
    models = {}
    for kind in ("l2r", "bidirectional"):
        out = d / kind
        argv = ["seq2seq", "train", "--train", str(tsv), "--holdout", "0", "--out", str(out),
                "--steps", "60", "--batch-size", "8", "--lr", "0.005", "--embed-dim", "32",
                "--num-heads", "2", "--layers", "1", "--no-progress"]  # fmt: skip
        if kind == "bidirectional":
            argv.append("--bidirectional")
        assert main(argv) == 0
        models[kind] = out
    return d, tsv, models


@pytest.mark.parametrize("kind", ["l2r", "bidirectional"])
def test_train_generate_evaluate(trained, kind, capsys, monkeypatch) -> None:
    d, tsv, models = trained
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(s + "\n" for s, _ in PAIRS)))
    argv = ["seq2seq", "generate", "--model", str(models[kind]), "--beam", "2"]
    assert main(argv + (["--bidirectional"] if kind == "bidirectional" else [])) == 0
    assert capsys.readouterr().out.splitlines() == [t for _, t in PAIRS]
    assert main(["seq2seq", "evaluate", "--model", str(models[kind]), "--test", str(tsv)]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["rougeL"] > 0.9 and scores["pairs"] == 16
    out = d / f"{kind}.txt"
    src = d / "src.txt"
    src.write_text(PAIRS[0][0] + "\n", encoding="utf-8")
    assert main(["seq2seq", "generate", "--model", str(models[kind]), "--input", str(src),
                 "--output", str(out), "--beam", "1"]) == 0  # fmt: skip
    assert out.read_text(encoding="utf-8") == PAIRS[0][1] + "\n"


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_user_errors_are_one_line_exit_2(trained, tmp_path, capsys, monkeypatch) -> None:
    d, tsv, models = trained
    bad = tmp_path / "bad.tsv"
    bad.write_text("源文本\t标题\n只有一列\n", encoding="utf-8")
    base = ["seq2seq", "train", "--out", str(tmp_path / "m"), "--steps", "2", "--no-progress"]
    assert main(base + ["--train", str(bad)]) == 2
    assert "line 2" in _err(capsys)
    assert main(base + ["--train", str(tmp_path / "missing.tsv")]) == 2
    assert "no such file" in _err(capsys)
    assert main(["seq2seq", "train", "--train", str(tsv), "--out", str(models["l2r"])]) == 2
    assert "--overwrite" in _err(capsys)
    assert main(base + ["--train", str(tsv), "--steps", "0"]) == 2
    assert "--steps" in _err(capsys)
    assert main(base + ["--train", str(tsv), "--lr", "nan"]) == 2
    assert "--lr" in _err(capsys)
    assert main(["seq2seq", "generate", "--model", str(tmp_path)]) == 2
    assert "not a seq2seq model directory" in _err(capsys)
    assert main(["seq2seq", "generate", "--model", str(models["l2r"]), "--bidirectional"]) == 2
    assert "L2R model" in _err(capsys)
    monkeypatch.setattr("sys.stdin", io.StringIO("北京\n\n"))
    assert main(["seq2seq", "generate", "--model", str(models["l2r"])]) == 2
    assert "line 2 is empty" in _err(capsys)
    assert main(["seq2seq", "evaluate", "--model", str(models["l2r"]), "--test", str(bad)]) == 2
    assert "line 2" in _err(capsys)
    assert main(["seq2seq", "generate", "--model", str(models["l2r"]), "--beam", "0"]) == 2
    assert "--beam" in _err(capsys)


def test_overwrite_replaces_a_run_and_resuming_a_finished_run_says_so(tmp_path, capsys):
    tsv = tmp_path / "t.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS), encoding="utf-8")
    base = ["seq2seq", "train", "--train", str(tsv), "--out", str(tmp_path / "m"),
            "--steps", "4", "--batch-size", "2", "--embed-dim", "16", "--num-heads", "2",
            "--layers", "1", "--ckpt-every", "2", "--no-progress"]  # fmt: skip
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "--overwrite"]) == 0  # once always failed: the flag was not passed on
    assert "loss" in capsys.readouterr().err
    assert main([*base, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "nan" not in err and "already finished" in err


def test_holdout_selection_and_time_budget(tmp_path, capsys) -> None:
    tsv = tmp_path / "t.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS * 5), encoding="utf-8")
    base = ["seq2seq", "train", "--train", str(tsv), "--steps", "12", "--batch-size", "4",
            "--embed-dim", "16", "--num-heads", "2", "--layers", "1", "--no-progress"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "a"), "--eval-every", "4"]) == 0
    err = capsys.readouterr().err
    assert "kept step" in err and "dev ROUGE-L" in err  # 10% of 20 pairs held out
    meta = json.loads((tmp_path / "a" / "seq2seq.json").read_text(encoding="utf-8"))
    assert meta["selected"]["step"] in (4, 8, 12)
    assert main([*base, "--out", str(tmp_path / "b"), "--holdout", "0", "--no-pointer"]) == 0
    assert "kept step" not in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "c"), "--max-minutes", "0.00001"]) == 0
    assert "stopped by --max-minutes" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "d"), "--holdout", "20"]) == 2
    assert "--holdout 20 leaves no training pairs" in _err(capsys)
    assert main([*base, "--out", str(tmp_path / "d"), "--label-smoothing", "1.5"]) == 2
    assert "--label-smoothing" in _err(capsys)
