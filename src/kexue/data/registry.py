"""One registry for every dataset: ``load(name, split)``, ``list_datasets()``, ``DATASETS``.

File resolution. Each split names files relative to a data root laid out like the project's
``shared/data`` folder (``<folder>/<file>``, e.g. ``msra_ner/dh_msra.zip``). A file is looked for

1. under ``$KEXUE_DATA`` (if set) — users' full or updated copies take precedence, file by file;
2. in the package's own ``kexue/data/shipped/`` copy (xz-compressed; MNIST's original ``.gz``),

trying the name itself, then ``<name>.xz`` and ``<name>.gz`` (and listed alternatives, e.g. the
shipped ``dh_msra.txt.xz`` for ``dh_msra.zip``). Nothing is ever downloaded.

Caching and mutability. Parsed splits are cached in memory (keyed by resolved path, size and
mtime, so a changed ``$KEXUE_DATA`` is picked up); ``load`` returns a fresh copy of the
containers each call (lists / tuples / dicts are new; strings are immutable; MNIST tensors are
cloned), so callers may modify what they get.

Splits that exist only with a user copy under ``$KEXUE_DATA`` (``people-daily-ner`` train,
``cmrc2018`` train) are listed with count ``None`` and raise ``FileNotFoundError`` otherwise.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kexue.data import readers

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "clear_cache",
    "data_path",
    "list_datasets",
    "load",
    "shipped_root",
]

ENV_VAR = "KEXUE_DATA"
_SHIPPED = Path(__file__).resolve().parent / "shipped"

FileRef = tuple[str, ...]  # alternatives relative to the data root, first found wins


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of one registered dataset.

    Attributes:
        name: registry name (``"msra-ner"``).
        task: short task description.
        returns: the Python type ``load`` returns.
        splits: split -> files (each a tuple of alternative relative paths) read for it.
        counts: split -> number of examples in the shipped copy (``None``: not shipped).
        licence: licence as stated by the source (see each ``SOURCE.md``).
        kind: parser key (private).
        aliases: extra split names mapped to a real split.
        notes: provenance and caveats (which files, how the split is made).
    """

    name: str
    task: str
    returns: str
    splits: dict[str, tuple[FileRef, ...]]
    counts: dict[str, int | None]
    licence: str
    kind: str
    aliases: dict[str, str] = field(default_factory=dict)
    notes: str = ""


def _f(*alternatives: str) -> FileRef:
    return tuple(alternatives)


_CWS = "list[list[str]] (words per sentence)"
_TAG = "list[tuple[list[str], list[str]]] (tokens, tags)"
_MSRA = _f("msra_ner/dh_msra.zip", "msra_ner/dh_msra.txt")
_MSRA_TRAIN = 50_658  # SOURCE.md: zh-NER-TF train_data = the first 50,658 sentences

_TEXT_SOURCES: tuple[FileRef, ...] = (
    _MSRA,
    _f("lcsts_clge_subset/train.tsv"),
    _f("csl_title/csl_ts_dev.tsv"),
    _f("csl_title/csl_ts_test.tsv"),
    _f("csl_title/clge_csl_val.tsv"),
    _f("csl_title/clge_csl_test.tsv"),
    _f("cluener2020/train.json"),
)
_CSL_TRAIN = (
    _f("csl_title/clge_csl_val.tsv"),
    _f("csl_title/clge_csl_test.tsv"),
    _f("csl_title/csl_ts_dev.tsv"),
)

DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo(
            "ud-gsd-cws",
            "Chinese word segmentation",
            _CWS,
            {s: (_f(f"ud_chinese_gsd_cws/{s}.txt"),) for s in ("train", "dev", "test")},
            {"train": 3997, "dev": 500, "test": 500},
            "CC BY-SA 4.0",
            "segmented",
            notes=(
                "UD Chinese GSD (Wikipedia), simplified script, full-width punctuation "
                "normalised; complete UD split"
            ),
        ),
        DatasetInfo(
            "pku-cws",
            "Chinese word segmentation",
            _CWS,
            {
                "train": (_f("sighan2005_cws/jcyk_normalized/pku_dev.txt"),),
                "test": (_f("sighan2005_cws/jcyk_normalized/pku_test.txt"),),
                "gold": (_f("sighan2005_cws/pku_test_gold.utf8"),),
            },
            {"train": 1906, "test": 1944, "gold": 1944},
            "research / non-commercial (SIGHAN bakeoff)",
            "segmented",
            notes=(
                "SIGHAN 2005 PKU. train = last 10 % of the official training set and test = the "
                "test gold, both jcyk-normalised (digits -> 0, Latin -> X, long words -> L); gold"
                " = raw official test gold (not comparable with train)"
            ),
        ),
        DatasetInfo(
            "msr-cws",
            "Chinese word segmentation",
            _CWS,
            {
                "train": (_f("sighan2005_cws/jcyk_normalized/msr_dev.txt"),),
                "test": (_f("sighan2005_cws/jcyk_normalized/msr_test.txt"),),
                "gold": (_f("sighan2005_cws/msr_test_gold.utf8"),),
            },
            {"train": 8693, "test": 3985, "gold": 3985},
            "research / non-commercial (SIGHAN bakeoff)",
            "segmented",
            notes=(
                "SIGHAN 2005 MSR. train = last 10 % of the official training set and test = the "
                "test gold, both jcyk-normalised (digits -> 0, Latin -> X, long words -> L); gold"
                " = raw official test gold (not comparable with train)"
            ),
        ),
        DatasetInfo(
            "msra-ner",
            "Chinese NER, char BIO PER/LOC/ORG",
            _TAG,
            {"train": (_MSRA,), "test": (_MSRA,)},
            {"train": _MSRA_TRAIN, "test": 4631},
            "not stated (research use)",
            "msra",
            notes=(
                "MSRA / People's Daily (zh-NER-TF): train = first 50,658 sentences, test = last "
                "4,631 of dh_msra.txt; no dev split"
            ),
        ),
        DatasetInfo(
            "people-daily-ner",
            "Chinese NER, char BIO PER/LOC/ORG",
            _TAG,
            {s: (_f(f"people_daily_ner/example.{s}"),) for s in ("train", "dev", "test")},
            {"train": None, "dev": 2318, "test": 4636},
            "not stated (research use)",
            "conll",
            notes=(
                "People's Daily (bert4keras corpus); train only with a KEXUE_DATA copy of "
                "example.train; ~92 % of its sentences occur in msra-ner train"
            ),
        ),
        DatasetInfo(
            "cluener",
            "Chinese NER, char BIO, 10 types",
            _TAG,
            {s: (_f(f"cluener2020/{s}.json"),) for s in ("train", "dev")},
            {"train": 10748, "dev": 1343},
            "not stated (research use)",
            "cluener",
            notes=(
                "CLUENER2020 (THUCNews); dev = the official dev set; overlapping mentions "
                "resolved longest-first"
            ),
        ),
        DatasetInfo(
            "conll2000",
            "English chunking, BIO",
            _TAG,
            {s: (_f(f"conll2000_chunking/{s}.txt"),) for s in ("train", "test")},
            {"train": 8936, "test": 2012},
            "not stated (WSJ text, research use)",
            "conll",
            notes="CoNLL-2000 (WSJ); tokens + chunk tags (the POS column is dropped)",
        ),
        DatasetInfo(
            "mnist",
            "28x28 handwritten digits",
            "tuple[Tensor, Tensor] = (uint8 (N, 28, 28), int64 (N,))",
            {
                "train": (_f("mnist/train-images-idx3-ubyte"), _f("mnist/train-labels-idx1-ubyte")),
                "test": (_f("mnist/t10k-images-idx3-ubyte"), _f("mnist/t10k-labels-idx1-ubyte")),
            },
            {"train": 60000, "test": 10000},
            "commonly CC BY-SA 3.0 (not stated by source)",
            "mnist",
            notes="original IDX files (train images rebuilt losslessly, MD5-verified)",
        ),
        DatasetInfo(
            "chinese-text",
            "raw Chinese text (char LM / MLM)",
            "list[str]",
            {s: _TEXT_SOURCES for s in ("train", "valid", "test")},
            {"train": 75235, "valid": 1585, "test": 1606},
            "mixed; research use (see the four SOURCE.md)",
            "text",
            notes=(
                "MSRA NER sentences + LCSTS train texts + CSL abstracts + CLUENER train texts, "
                "stripped and deduplicated (first occurrence kept, source order); split by md5 of"
                " the sentence: bucket 0-1 of 100 = test, 2-3 = valid, rest = train; never CMRC "
                "contexts"
            ),
        ),
        DatasetInfo(
            "cmrc2018",
            "Chinese extractive MRC (SQuAD)",
            "list[dict] (id, title, context, question, answers[{text, answer_start}])",
            {s: (_f(f"cmrc2018/cmrc2018_{s}.json"),) for s in ("train", "dev", "trial")},
            {"train": None, "dev": 3219, "trial": 1002},
            "CC BY-SA 4.0",
            "squad",
            notes=(
                "CMRC 2018 dev and trial (train only with a KEXUE_DATA copy); answer offsets re-"
                "aligned where the file's are -1 or wrong"
            ),
        ),
        DatasetInfo(
            "webqa-sample",
            "WebQA format sample, 7 questions",
            "list[dict] (id, question, answer, passages[{passage, answer}])",
            {"sample": (_f("webqa_sample/sample.json"),)},
            {"sample": 7},
            "not stated",
            "webqa",
            aliases={"train": "sample"},
            notes="format reference only, too small to train on; 'train' is an alias of 'sample'",
        ),
        DatasetInfo(
            "lcsts",
            "Chinese news text -> headline",
            "list[tuple[str, str]] (source text, target headline)",
            {s: (_f(f"lcsts_clge_subset/{s}.tsv"),) for s in ("train", "val", "test")},
            {"train": 8666, "val": 1000, "test": 1000},
            "not stated (LCSTS: research agreement)",
            "pairs",
            notes=(
                "LCSTS PART_II, CLGE split; (source text, target headline); a few train texts "
                "repeat in val/test"
            ),
        ),
        DatasetInfo(
            "csl",
            "paper abstract -> title",
            "list[tuple[str, str]] (source abstract, target title)",
            {
                "ts_dev": (_f("csl_title/csl_ts_dev.tsv"),),
                "ts_test": (_f("csl_title/csl_ts_test.tsv"),),
                "clge_val": (_f("csl_title/clge_csl_val.tsv"),),
                "clge_test": (_f("csl_title/clge_csl_test.tsv"),),
                "train": _CSL_TRAIN,
                "test": (_f("csl_title/csl_ts_test.tsv"),),
            },
            {
                "ts_dev": 1000,
                "ts_test": 1000,
                "clge_val": 1000,
                "clge_test": 1000,
                "train": 3000,
                "test": 1000,
            },
            "Apache-2.0 (ydli-ai/CSL); CLGE copy not stated",
            "pairs",
            notes=(
                "CSL; train = clge_val + clge_test + ts_dev (3,000), test = ts_test (1,000): non-"
                "standard, no official train shipped"
            ),
        ),
    ]
}


# ---------------------------------------------------------------------------------------------
# file resolution
# ---------------------------------------------------------------------------------------------


def shipped_root() -> Path:
    """Directory of the copies shipped inside the package (``kexue/data/shipped``)."""
    return _SHIPPED


def _roots() -> list[tuple[str, Path]]:
    roots = []
    env = os.environ.get(ENV_VAR)
    if env:
        roots.append((ENV_VAR, Path(env).expanduser()))
    roots.append(("shipped", _SHIPPED))
    return roots


def _resolve(ref: FileRef) -> tuple[str, Path] | None:
    for origin, root in _roots():
        for rel in ref:
            for suffix in ("", ".xz", ".gz"):
                p = root / (rel + suffix)
                if p.is_file():
                    return origin, p
    return None


def data_path(relpath: str) -> Path:
    """Resolve a data file by its path relative to a data root (``"mnist/t10k-labels-idx1-ubyte"``).

    Looks under ``$KEXUE_DATA`` first, then the shipped copy; tries ``relpath``, ``.xz``, ``.gz``
    and the registered alternatives (``msra_ner/dh_msra.zip`` -> shipped ``dh_msra.txt.xz``).

    Args:
        relpath: ``"<folder>/<file>"`` as in the project's ``shared/data`` layout.

    Returns:
        Path of the (possibly compressed) file; read it with the functions in
        :mod:`kexue.data.readers`.

    Raises:
        FileNotFoundError: not found in any root.
    """
    ref: FileRef = (relpath,)
    for info in DATASETS.values():  # registered alternatives, e.g. the shipped dh_msra.txt.xz
        for refs in info.splits.values():
            ref = next((r for r in refs if r[0] == relpath), ref)
    found = _resolve(ref)
    if found is None:
        where = ", ".join(f"{o}={r}" for o, r in _roots())
        raise FileNotFoundError(f"data file {relpath!r} not found under {where}")
    return found[1]


def _info_and_split(name: str, split: str) -> tuple[DatasetInfo, str]:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    info = DATASETS[name]
    split = info.aliases.get(split, split)
    if split not in info.splits:
        raise ValueError(
            f"unknown split {split!r} for dataset {name!r}; known: {list(info.splits)}"
        )
    return info, split


def _split_files(info: DatasetInfo, split: str) -> list[tuple[str, Path]]:
    out = []
    for ref in info.splits[split]:
        found = _resolve(ref)
        if found is None:
            where = ", ".join(f"{o}={r}" for o, r in _roots())
            raise FileNotFoundError(
                f"dataset {info.name!r} split {split!r} needs {ref[0]!r}, not found under {where};"
                f" put a copy under ${ENV_VAR}/{ref[0]}"
            )
        out.append(found)
    return out


# ---------------------------------------------------------------------------------------------
# parsing (cached)
# ---------------------------------------------------------------------------------------------

_Key = tuple[tuple[str, int, int], ...]


def _key(paths: list[Path]) -> _Key:
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


@functools.lru_cache(maxsize=64)
def _read_cached(kind: str, key: _Key) -> Any:
    paths = [Path(k[0]) for k in key]
    if kind == "segmented":
        return readers.read_segmented(paths[0])
    if kind == "conll":
        return readers.read_conll(paths[0])
    if kind == "cluener":
        return readers.read_cluener(paths[0])
    if kind == "squad":
        return readers.read_squad(paths[0])
    if kind == "webqa":
        return readers.read_webqa(paths[0])
    if kind == "pairs":
        return [pair for p in paths for pair in readers.read_pairs_tsv(p)]
    if kind == "mnist":
        images, labels = (readers.read_mnist_idx(p) for p in paths)
        if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
            raise ValueError(
                f"MNIST images {tuple(images.shape)} ({paths[0]}) and labels "
                f"{tuple(labels.shape)} ({paths[1]}) do not match"
            )
        return images, labels
    if kind == "text":
        return _chinese_text(paths)
    raise AssertionError(kind)


def _msra(sentences: list, split: str) -> list:
    return sentences[:_MSRA_TRAIN] if split == "train" else sentences[_MSRA_TRAIN:]


def _text_bucket(sentence: str) -> str:
    """Deterministic split of a sentence: md5 bucket 0-1 -> test, 2-3 -> valid, else train."""
    b = int.from_bytes(hashlib.md5(sentence.encode("utf-8")).digest()[:4], "big") % 100
    return "test" if b < 2 else "valid" if b < 4 else "train"


def _chinese_text(paths: list[Path]) -> dict[str, list[str]]:
    msra, lcsts, *csl, cluener = paths
    texts = ["".join(tokens) for tokens, _ in _read_cached("conll", _key([msra]))]
    texts += [src for src, _ in readers.read_pairs_tsv(lcsts)]
    texts += [src for p in csl for src, _ in readers.read_pairs_tsv(p)]
    texts += [r["text"] for r in readers.read_cluener_spans(cluener)]
    out: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    seen: set[str] = set()
    for t in texts:
        t = t.strip()
        if t and t not in seen:
            seen.add(t)
            out[_text_bucket(t)].append(t)
    return out


_COPY: dict[str, Callable[[Any], Any]] = {
    "segmented": lambda d: [list(s) for s in d],
    "conll": lambda d: [(list(a), list(b)) for a, b in d],
    "msra": lambda d: [(list(a), list(b)) for a, b in d],
    "cluener": lambda d: [(list(a), list(b)) for a, b in d],
    "pairs": list,
    "text": list,
    "squad": copy.deepcopy,
    "webqa": copy.deepcopy,
    "mnist": lambda d: (d[0].clone(), d[1].clone()),
}


def clear_cache() -> None:
    """Drop every parsed split held in memory (the next :func:`load` re-reads the files)."""
    _read_cached.cache_clear()


def load(name: str, split: str = "train") -> Any:
    """Load one split of a registered dataset.

    Args:
        name: one of ``DATASETS`` (see :func:`list_datasets`): ``"ud-gsd-cws"``, ``"pku-cws"``,
            ``"msr-cws"`` -> ``list[list[str]]``; ``"msra-ner"``, ``"people-daily-ner"``,
            ``"cluener"``, ``"conll2000"`` -> ``list[tuple[list[str], list[str]]]``;
            ``"mnist"`` -> ``(uint8 (N, 28, 28), int64 (N,))``; ``"chinese-text"`` ->
            ``list[str]``; ``"cmrc2018"``, ``"webqa-sample"`` -> ``list[dict]``; ``"lcsts"``,
            ``"csl"`` -> ``list[tuple[str, str]]`` (source, target).
        split: split name (``"train"`` is accepted for ``webqa-sample``'s only split).

    Returns:
        A fresh copy of the parsed split (safe to modify).

    Raises:
        ValueError: unknown name or split (the message lists the known ones), or a malformed file.
        FileNotFoundError: a split whose files are neither under ``$KEXUE_DATA`` nor shipped.
    """
    info, split = _info_and_split(name, split)
    files = [p for _, p in _split_files(info, split)]
    if info.kind == "msra":
        data = _msra(_read_cached("conll", _key(files)), split)
        return _COPY["msra"](data)
    data = _read_cached(info.kind, _key(files))
    if info.kind == "text":
        data = data[split]
    return _COPY[info.kind](data)


def list_datasets(count: bool = False, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Describe every registered dataset and where its files are.

    Args:
        names: only these datasets (default: all); unknown names raise ``ValueError``.
        count: parse every available split to count its examples (slow the first time,
            then cached); by default counts are the static counts of the shipped copies, and
            ``None`` for splits read from ``$KEXUE_DATA`` or unavailable.

    Returns:
        One dict per dataset, sorted by name, with keys ``name``, ``task`` (short), ``notes``
        (provenance, split rule), ``returns`` (what ``load`` gives), ``splits`` (split -> count or
        ``None``), ``files`` (split -> resolved paths; missing ones omitted), ``size_bytes``
        (on-disk bytes of the distinct files found), ``licence``, ``location`` (``"shipped"``,
        ``"KEXUE_DATA"``, ``"mixed"`` or ``"missing"``) and ``root`` (sorted list of the root
        directories the files come from).
    """
    wanted = sorted(DATASETS) if names is None else sorted(set(names))
    for name in wanted:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    out = []
    for name in wanted:
        info = DATASETS[name]
        splits: dict[str, int | None] = {}
        files: dict[str, list[str]] = {}
        origins: set[str] = set()
        roots: set[str] = set()
        distinct: dict[str, int] = {}
        for split, refs in info.splits.items():
            found = [_resolve(r) for r in refs]
            available = all(f is not None for f in found)
            files[split] = [str(f[1]) for f in found if f is not None]
            split_origins = {f[0] for f in found if f is not None}
            origins |= split_origins
            for f in found:
                if f is not None:
                    distinct[str(f[1])] = f[1].stat().st_size
                    roots.add(str(dict(_roots())[f[0]]))
            if not available:
                splits[split] = None
            elif count:
                data = load(name, split)
                splits[split] = len(data[0]) if name == "mnist" else len(data)
            else:
                splits[split] = info.counts.get(split) if split_origins == {"shipped"} else None
        location = "missing" if not origins else origins.pop() if len(origins) == 1 else "mixed"
        out.append(
            {
                "name": name,
                "task": info.task,
                "notes": info.notes,
                "returns": info.returns,
                "splits": splits,
                "files": files,
                "size_bytes": sum(distinct.values()),
                "licence": info.licence,
                "location": location,
                "root": sorted(roots),
            }
        )
    return out
