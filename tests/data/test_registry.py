"""The registry: every shipped name/split against the counts and samples stated in SOURCE.md,
the KEXUE_DATA override, list_datasets, copies, and errors."""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
from collections import Counter
from pathlib import Path

import pytest
import torch

from kexue import data
from kexue.data import DATASETS, list_datasets, load, shipped_root

# Counts as stated in each shared/data/*/SOURCE.md (independent of the registry's own table).
SOURCE_COUNTS = {
    ("ud-gsd-cws", "train"): 3997,
    ("ud-gsd-cws", "dev"): 500,
    ("ud-gsd-cws", "test"): 500,
    ("pku-cws", "train"): 1906,
    ("pku-cws", "test"): 1944,
    ("pku-cws", "gold"): 1944,
    ("msr-cws", "train"): 8693,
    ("msr-cws", "test"): 3985,
    ("msr-cws", "gold"): 3985,
    ("msra-ner", "train"): 50658,
    ("msra-ner", "test"): 4631,
    ("people-daily-ner", "dev"): 2318,
    ("people-daily-ner", "test"): 4636,
    ("cluener", "train"): 10748,
    ("cluener", "dev"): 1343,
    ("conll2000", "train"): 8936,
    ("conll2000", "test"): 2012,
    ("mnist", "train"): 60000,
    ("mnist", "test"): 10000,
    ("cmrc2018", "dev"): 3219,
    ("cmrc2018", "trial"): 1002,
    ("webqa-sample", "sample"): 7,
    ("lcsts", "train"): 8666,
    ("lcsts", "val"): 1000,
    ("lcsts", "test"): 1000,
    ("csl", "ts_dev"): 1000,
    ("csl", "ts_test"): 1000,
    ("csl", "clge_val"): 1000,
    ("csl", "clge_test"): 1000,
    ("csl", "train"): 3000,
    ("csl", "test"): 1000,
}
# SOURCE.md: words / characters / tokens of some splits.
SOURCE_SIZES = {
    ("ud-gsd-cws", "train"): 98608,  # words
    ("ud-gsd-cws", "dev"): 12663,
    ("ud-gsd-cws", "test"): 12012,
    ("pku-cws", "train"): 99901,
    ("msr-cws", "train"): 246662,
    ("pku-cws", "gold"): 104372,
    ("msr-cws", "gold"): 106873,
    ("msra-ner", "train"): 2169879,  # characters
    ("msra-ner", "test"): 172601,
    ("people-daily-ner", "dev"): 109870,
    ("people-daily-ner", "test"): 219197,
    ("conll2000", "train"): 211727,  # tokens
    ("conll2000", "test"): 47377,
}


@pytest.fixture(autouse=True)
def _no_user_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEXUE_DATA", raising=False)


def _len(name: str, x: object) -> int:
    return len(x[0]) if name == "mnist" else len(x)  # type: ignore[index,arg-type]


@pytest.mark.parametrize("name, split", sorted(SOURCE_COUNTS))
def test_load_counts_match_source(name: str, split: str) -> None:
    x = load(name, split)
    assert _len(name, x) == SOURCE_COUNTS[name, split]
    if (name, split) in SOURCE_SIZES:
        if name.endswith("-cws"):
            size = sum(len(s) for s in x)
        else:
            size = sum(len(toks) for toks, tags in x)
            assert all(len(toks) == len(tags) for toks, tags in x)
        assert size == SOURCE_SIZES[name, split]


def test_every_registered_split_is_covered() -> None:
    shipped = {(d["name"], s) for d in list_datasets() for s, c in d["splits"].items() if c}
    assert shipped - {("chinese-text", s) for s in ("train", "valid", "test")} == set(SOURCE_COUNTS)


def test_samples_match_source() -> None:
    ud = load("ud-gsd-cws", "train")[0]
    assert ud[:4] == ["看似", "简单", ",", "只"]
    assert load("pku-cws", "gold")[0][:5] == ["共同", "创造", "美好", "的", "新"]
    assert load("msr-cws", "train")[0][:3] == ["学生", "们", "强烈"]
    chars, tags = load("msra-ner", "test")[0]
    assert "".join(chars) == "中共中央致中国致公党十一大的贺词"
    assert tags[:4] == ["B-ORG", "I-ORG", "I-ORG", "I-ORG"]
    assert set(t for _, ts in load("people-daily-ner", "dev") for t in ts) == {
        "O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER",
    }  # fmt: skip
    toks, tags = load("conll2000", "train")[0]
    assert (toks[:3], tags[:3]) == (["Confidence", "in", "the"], ["B-NP", "B-PP", "B-NP"])
    chars, tags = load("cluener", "train")[0]
    assert "".join(chars).startswith("浙商银行企业信贷部叶老桂博士")
    assert tags[:5] == ["B-company", "I-company", "I-company", "I-company", "O"]
    assert tags[9:13] == ["B-name", "I-name", "I-name", "O"]
    mentions = Counter(t[2:] for _, ts in load("cluener", "train") for t in ts if t[:2] == "B-")
    assert mentions["name"] >= 3700 and mentions["movie"] >= 1100  # 3,756 / 1,123 minus overlaps
    src, tgt = load("lcsts", "train")[0]
    assert tgt == "林志颖公司疑涉虚假营销无厂房无研发" and src.startswith("日前，方舟子发文")
    src, tgt = load("csl", "clge_val")[0]
    assert tgt == "超立方体网络的3路结构连通度及子结构连通度" and src.startswith("针对以超立方体")
    src, tgt = load("csl", "ts_dev")[0]
    assert tgt.startswith("一种基于平方和优化") and src.startswith("采用修正的Rodrigues")
    q = load("cmrc2018", "dev")[0]
    assert q["id"] == "DEV_0_QUERY_0" and q["answers"][0] == {
        "text": "光荣和ω-force",
        "answer_start": 11,
    }
    w = load("webqa-sample")  # "train" is an alias of the only split
    assert w[0]["question"] == "吞噬星空的作者是谁" and w[0]["answer"] == "我吃西红柿"
    assert sum(len(r["passages"]) for r in w) == 92


def test_cmrc_answers_aligned_after_fix() -> None:
    for split in ("dev", "trial"):
        for r in load("cmrc2018", split):
            for a in r["answers"]:
                s = a["answer_start"]
                assert s == -1 or r["context"][s : s + len(a["text"])] == a["text"]


def test_mnist_matches_published_statistics() -> None:
    x, y = load("mnist", "train")
    assert x.shape == (60000, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert torch.bincount(y).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    mean = x.double().div_(255).mean().item()
    assert abs(mean - 0.1306604762738429) < 1e-9
    xt, yt = load("mnist", "test")
    assert xt.shape == (10000, 28, 28) and yt[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_files_are_the_original_bytes() -> None:
    md5 = {  # SOURCE.md: uncompressed MD5 (the published MNIST checksums)
        "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
    }
    for name, want in md5.items():
        raw = gzip.decompress((shipped_root() / "mnist" / name).read_bytes())
        assert hashlib.md5(raw).hexdigest() == want, name


def test_shipped_files_match_manifest_and_budget() -> None:
    root = shipped_root()
    manifest = json.loads((root / "MANIFEST.json").read_text("utf-8"))
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix in (".xz", ".gz")]
    assert sorted(str(p.relative_to(root)) for p in files) == sorted(manifest)
    for p in files:
        if p.suffix == ".xz":  # MNIST is checked against the published MD5s above
            raw = lzma.decompress(p.read_bytes())
            entry = manifest[str(p.relative_to(root))]
            assert len(raw) == entry["uncompressed_bytes"]
            assert hashlib.sha256(raw).hexdigest() == entry["uncompressed_sha256"]
    # SOURCE.md byte counts of a few originals (independent of the manifest)
    assert manifest["ud_chinese_gsd_cws/train.txt.xz"]["uncompressed_bytes"] == 518245
    assert manifest["msra_ner/dh_msra.txt.xz"]["uncompressed_bytes"] == 15018708
    assert manifest["cmrc2018/cmrc2018_dev.json.xz"]["uncompressed_bytes"] == 3299139
    for d in {p.parent if p.parent.name != "jcyk_normalized" else p.parent.parent for p in files}:
        assert (d / "SOURCE.md").is_file(), d
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total <= 30 * 2**20


def test_chinese_text_split_is_deterministic_disjoint_and_clean() -> None:
    splits = {s: load("chinese-text", s) for s in ("train", "valid", "test")}
    sizes = {s: len(v) for s, v in splits.items()}
    total = sum(sizes.values())
    assert total == 78426  # distinct non-empty sentences of the four sources
    assert 0.015 < sizes["valid"] / total < 0.025 and 0.015 < sizes["test"] / total < 0.025
    sets = {s: set(v) for s, v in splits.items()}
    assert sum(len(v) for v in sets.values()) == total  # deduplicated and disjoint
    for s, v in splits.items():
        assert all(data.registry._text_bucket(t) == s for t in v[:200])
    # sources present: MSRA sentence, LCSTS text, CSL abstract, CLUENER text
    everything = sets["train"] | sets["valid"] | sets["test"]
    assert "中共中央致中国致公党十一大的贺词" in everything
    assert load("lcsts", "train")[0][0].strip() in everything
    assert load("csl", "ts_test")[0][0].strip() in everything
    assert "".join(load("cluener", "train")[5][0]).strip() in everything
    # never CMRC contexts, never LCSTS test texts
    contexts = {r["context"].strip() for r in load("cmrc2018", "dev") + load("cmrc2018", "trial")}
    assert not contexts & everything
    assert "".join(load("cluener", "dev")[0][0]) not in everything


def test_load_returns_copies() -> None:
    a = load("ud-gsd-cws", "dev")
    a[0].append("XXX")
    a.pop()
    b = load("ud-gsd-cws", "dev")
    assert len(b) == 500 and b[0][-1] != "XXX"
    t = load("msra-ner", "test")
    t[0][1][0] = "MUTATED"
    assert load("msra-ner", "test")[0][1][0] == "B-ORG"
    x, _ = load("mnist", "test")
    x[0, 0, 0] = 77
    assert load("mnist", "test")[0][0, 0, 0] == 0
    q = load("cmrc2018", "trial")
    q[0]["answers"].clear()
    assert load("cmrc2018", "trial")[0]["answers"]


def test_unknown_name_and_split() -> None:
    with pytest.raises(ValueError, match="known:.*mnist"):
        load("imagenet")
    with pytest.raises(ValueError, match=r"known: \['train', 'dev', 'test'\]"):
        load("ud-gsd-cws", "validation")


def test_user_only_splits_need_kexue_data() -> None:
    with pytest.raises(FileNotFoundError, match="KEXUE_DATA"):
        load("people-daily-ner", "train")
    with pytest.raises(FileNotFoundError, match="cmrc2018_train.json"):
        load("cmrc2018", "train")


def test_kexue_data_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ud_chinese_gsd_cws").mkdir()
    (tmp_path / "ud_chinese_gsd_cws" / "train.txt").write_text("我 爱 你\n你 好\n", "utf-8")
    (tmp_path / "people_daily_ner").mkdir()
    (tmp_path / "people_daily_ner" / "example.train.gz").write_bytes(
        gzip.compress("中 B-LOC\n国 I-LOC\n\n好 O\n".encode())
    )
    monkeypatch.setenv("KEXUE_DATA", str(tmp_path))
    assert load("ud-gsd-cws", "train") == [["我", "爱", "你"], ["你", "好"]]
    assert len(load("ud-gsd-cws", "dev")) == 500  # falls back to the shipped copy file by file
    assert load("people-daily-ner", "train") == [
        (["中", "国"], ["B-LOC", "I-LOC"]),
        (["好"], ["O"]),
    ]
    info = {d["name"]: d for d in list_datasets()}
    ud = info["ud-gsd-cws"]
    assert ud["location"] == "mixed"
    assert ud["splits"] == {"train": None, "dev": 500, "test": 500}
    assert ud["files"]["train"] == [str(tmp_path / "ud_chinese_gsd_cws" / "train.txt")]
    assert str(tmp_path) in ud["root"]
    (counted,) = list_datasets(count=True, names=["ud-gsd-cws"])
    assert counted["splits"] == {"train": 2, "dev": 500, "test": 500}
    # a changed user file is re-read (the cache is keyed by path, size and mtime)
    (tmp_path / "ud_chinese_gsd_cws" / "train.txt").write_text("一 二 三\n", "utf-8")
    assert load("ud-gsd-cws", "train") == [["一", "二", "三"]]
    monkeypatch.delenv("KEXUE_DATA")
    assert len(load("ud-gsd-cws", "train")) == 3997


def test_list_datasets_fields() -> None:
    rows = list_datasets()
    assert [r["name"] for r in rows] == sorted(DATASETS)
    assert {r["name"] for r in rows} >= {
        "ud-gsd-cws", "pku-cws", "msr-cws", "msra-ner", "people-daily-ner", "cluener",
        "conll2000", "mnist", "chinese-text", "cmrc2018", "webqa-sample", "lcsts", "csl",
    }  # fmt: skip
    for r in rows:
        assert set(r) == {
            "name", "task", "notes", "returns", "splits", "files", "size_bytes", "licence", "location",
            "root",
        }  # fmt: skip
        assert r["location"] == "shipped" and r["root"] == [str(shipped_root())]
        assert r["size_bytes"] > 0 and r["licence"] and r["task"]
        for split, files in r["files"].items():
            assert all(Path(f).is_file() and Path(f).is_relative_to(shipped_root()) for f in files)
            if r["splits"][split] is not None:
                assert files
    by = {r["name"]: r for r in rows}
    assert by["mnist"]["size_bytes"] == 9630634 + 28881 + 1648877 + 4542
    assert by["ud-gsd-cws"]["splits"] == {"train": 3997, "dev": 500, "test": 500}
    assert by["people-daily-ner"]["splits"]["train"] is None


def test_list_datasets_names_filter() -> None:
    assert [r["name"] for r in list_datasets(names=["mnist", "csl"])] == ["csl", "mnist"]
    with pytest.raises(ValueError, match="known"):
        list_datasets(names=["nope"])


def test_data_path() -> None:
    p = data.data_path("sighan2005_cws/pku_training_words.utf8")
    assert p.name == "pku_training_words.utf8.xz"
    assert data.data_path("msra_ner/dh_msra.zip").name == "dh_msra.txt.xz"
    with pytest.raises(FileNotFoundError):
        data.data_path("nope/nothing.txt")


SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
NO_SHARED = (
    "compares the shipped copies with the original files in ../shared/data, "
    "which sits beside the project checkout in development and CI but not in an installed copy"
)


@pytest.mark.skipif(not (SHARED / "msra_ner" / "dh_msra.zip").is_file(), reason=NO_SHARED)
@pytest.mark.parametrize(
    "name, split",
    [("people-daily-ner", "dev"), ("ud-gsd-cws", "dev"), ("cmrc2018", "trial"), ("mnist", "test")],
)
def test_shared_copy_via_kexue_data_equals_shipped(
    name: str, split: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The original files (zip, plain text, gzip) read through KEXUE_DATA give the same data."""
    shipped = load(name, split)
    monkeypatch.setenv("KEXUE_DATA", str(SHARED))
    (row,) = list_datasets(names=[name])
    assert row["location"] == "KEXUE_DATA"
    user = load(name, split)
    if name == "mnist":
        assert all(torch.equal(a, b) for a, b in zip(shipped, user, strict=True))
    else:
        assert user == shipped


@pytest.mark.skipif(not (SHARED / "msra_ner" / "dh_msra.zip").is_file(), reason=NO_SHARED)
def test_shipped_msra_equals_the_zip_member() -> None:
    from kexue.data._io import read_bytes

    shipped = read_bytes(shipped_root() / "msra_ner" / "dh_msra.txt.xz")
    assert read_bytes(SHARED / "msra_ner" / "dh_msra.zip") == shipped


def test_every_shipped_file_is_tracked_by_git() -> None:
    """A fresh clone must have every file the registry reads (catches a forgotten git add)."""
    import shutil
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    if shutil.which("git") is None or not (repo / ".git").exists():
        pytest.skip("checks what git tracks; this copy of the tests is not inside a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files", "src/kexue/data/shipped"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    needed = {
        str(Path(f).resolve().relative_to(repo))
        for row in list_datasets()
        for files in row["files"].values()
        for f in files
    }
    assert needed and needed <= set(tracked), sorted(needed - set(tracked))


def test_clear_cache_rereads() -> None:
    """Last in the file: it empties the shared cache."""
    a = load("webqa-sample")
    data.clear_cache()
    assert data.registry._read_cached.cache_info().currsize == 0
    assert load("webqa-sample") == a
