"""``kexue vq train | reconstruct | sample`` through the real entry point."""

from __future__ import annotations

import json

import pytest
import torch

from kexue.cli import main

PIL = pytest.importorskip("PIL.Image")


def _folder(path, n=12, size=20):
    path.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        arr = (torch.rand(size, size + 3 * (i % 3), generator=g) * 255).to(torch.uint8).numpy()
        PIL.fromarray(arr).save(path / f"img{i}.png" if i % 2 else path / f"img{i}.jpg")
    (path / "notes.txt").write_text("not an image")
    return path


TINY = ["--size", "16", "--num-codes", "8", "--code-dim", "4", "--hidden", "8",
        "--res-blocks", "0", "--vq-steps", "3", "--prior-steps", "3", "--batch-size", "4",
        "--prior-channels", "8", "--prior-layers", "2", "--no-progress"]  # fmt: skip


def test_train_reconstruct_sample_on_an_image_folder(tmp_path, capsys):
    imgs = _folder(tmp_path / "imgs")
    out = tmp_path / "model"
    assert main(["vq", "train", "--images", str(imgs), "--out", str(out), *TINY]) == 0
    assert "saved VQ-VAE" in capsys.readouterr().out
    meta = json.loads((out / "model.json").read_text())
    assert meta["train_images"] == 12 and meta["prior"]["num_classes"] == 0
    assert (out / "vqvae" / "model.safetensors").is_file()
    assert (out / "prior" / "model.safetensors").is_file()

    grid = tmp_path / "recon.png"
    files = [str(imgs / "img0.jpg"), str(imgs / "img1.png")]
    assert main(["vq", "reconstruct", "--model", str(out), *files, "--out", str(grid)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "psnr" in lines[0]
    assert PIL.open(grid).size == (2 * 18 + 2, 2 * 18 + 2)

    sample = tmp_path / "s.png"
    assert main(["vq", "sample", "--model", str(out), "--n", "5", "--out", str(sample)]) == 0
    assert PIL.open(sample).size == (3 * 18 + 2, 2 * 18 + 2)

    # an existing --out is never overwritten silently; --resume continues, --overwrite replaces
    assert main(["vq", "train", "--images", str(imgs), "--out", str(out), *TINY]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["vq", "train", "--images", str(imgs), "--out", str(out), *TINY, "--resume"]) == 0
    more = list(TINY)
    more[more.index("--vq-steps") + 1] = more[more.index("--prior-steps") + 1] = "5"
    assert main(["vq", "train", "--images", str(imgs), "--out", str(out), *more, "--resume"]) == 0
    for stage in ("vqvae", "prior"):
        assert json.loads((out / stage / "history.json").read_text())["steps"] == 5
    capsys.readouterr()
    changed = [*TINY, "--resume", "--hidden", "16"]
    _one_line_error(capsys, ["vq", "train", "--images", str(imgs), "--out", str(out), *changed],
                    "differ")  # fmt: skip


def test_mnist_class_conditional_sampling(tmp_path, capsys):
    out = tmp_path / "m"
    args = ["vq", "train", "--data", "mnist", "--max-train", "64", "--out", str(out), *TINY[2:]]
    assert main(args) == 0
    assert json.loads((out / "model.json").read_text())["prior"]["num_classes"] == 10
    png = tmp_path / "g.png"
    assert (
        main(["vq", "sample", "--model", str(out), "--n", "4", "--out", str(png), "--class", "3"])
        == 0
    )
    capsys.readouterr()
    assert main(["vq", "sample", "--model", str(out), "--n", "4", "--out", str(png)]) == 2
    assert "--class" in capsys.readouterr().err


def _one_line_error(capsys, args, needle):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_user_errors_are_one_line_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    out = str(tmp_path / "o")
    _one_line_error(capsys, ["vq", "train", "--images", str(empty), "--out", out, *TINY], "images")
    _one_line_error(capsys, ["vq", "train", "--images", str(tmp_path / "nope"), "--out", out],
                    "images")  # fmt: skip
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not a png at all")
    _one_line_error(capsys, ["vq", "train", "--images", str(bad), "--out", out, *TINY],
                    "broken.png")  # fmt: skip
    _one_line_error(capsys, ["vq", "train", "--data", "mnist", "--out", out, "--lr", "-1"], "--lr")
    _one_line_error(capsys, ["vq", "train", "--data", "mnist", "--out", out, "--size", "30"],
                    "--size")  # fmt: skip
    _one_line_error(capsys, ["vq", "train", "--data", "mnist", "--out", out, "--num-codes", "1"],
                    "--num-codes")  # fmt: skip
    _one_line_error(capsys, ["vq", "sample", "--model", str(tmp_path / "nope"), "--out", "x.png"],
                    "--model")  # fmt: skip
    _one_line_error(capsys, ["vq", "sample", "--model", str(empty), "--out", "x.png"], "model.json")
    _one_line_error(capsys, ["vq", "sample", "--model", str(empty), "--n", "0", "--out", "x.png"],
                    "--n")  # fmt: skip
