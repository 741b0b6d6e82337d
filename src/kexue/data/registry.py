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


def _identity(x: Any) -> Any:
    """The default ``copy``: ``data`` itself (readers that return fresh objects need no copy)."""
    return x


def _whole(data: Any, split: str) -> Any:
    """The default ``select``: the whole parse is the split."""
    return data


@dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    """Static description of one registered dataset: adding a dataset is one entry below.

    Attributes:
        name: registry name (``"msra-ner"``).
        task: short task description.
        returns: the Python type ``load`` returns.
        splits: split -> files (each a tuple of alternative relative paths) read for it.
        counts: split -> number of examples in the shipped copy (``None``: not shipped).
        licence: licence as stated by the source (see each ``SOURCE.md``).
        reader: ``reader(paths) -> parsed``, the split's resolved files to data; cached by the
            files' path, size and mtime, so splits sharing files are parsed once.
        select: ``select(parsed, split) -> data`` where one parse holds several splits.
        copy: returns a fresh copy of ``data`` for each :func:`load` (callers may modify it).
        aliases: extra split names mapped to a real split.
        notes: provenance and caveats (which files, how the split is made).
    """

    name: str
    task: str
    returns: str
    splits: dict[str, tuple[FileRef, ...]]
    counts: dict[str, int | None]
    licence: str
    reader: Callable[[list[Path]], Any]
    select: Callable[[Any, str], Any] = _whole
    copy: Callable[[Any], Any] = _identity
    aliases: dict[str, str] = field(default_factory=dict)
    notes: str = ""


def _f(*alternatives: str) -> FileRef:
    return tuple(alternatives)


def _first(read: Callable[[Path], Any]) -> Callable[[list[Path]], Any]:
    """A reader of one file as a reader of the split's file list."""

    def reader(paths: list[Path]) -> Any:
        return read(paths[0])

    reader.__name__ = read.__name__
    return reader


def _pairs(paths: list[Path]) -> list[tuple[str, str]]:
    return [pair for p in paths for pair in readers.read_pairs_tsv(p)]


def _mnist(paths: list[Path]) -> tuple[Any, Any]:
    images, labels = (readers.read_mnist_idx(p) for p in paths)
    if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
        raise ValueError(
            f"MNIST images {tuple(images.shape)} ({paths[0]}) and labels "
            f"{tuple(labels.shape)} ({paths[1]}) do not match"
        )
    return images, labels


def _msra_split(sentences: list, split: str) -> list:
    return sentences[:_MSRA_TRAIN] if split == "train" else sentences[_MSRA_TRAIN:]


def _text_bucket(sentence: str) -> str:
    """Deterministic split of a sentence: md5 bucket 0-1 -> test, 2-3 -> valid, else train."""
    b = int.from_bytes(hashlib.md5(sentence.encode("utf-8")).digest()[:4], "big") % 100
    return "test" if b < 2 else "valid" if b < 4 else "train"


def _chinese_text(paths: list[Path]) -> dict[str, list[str]]:
    msra, lcsts, *csl, cluener = paths
    texts = ["".join(tokens) for tokens, _ in _read_cached(_CONLL, _key([msra]))]
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


def _copy_words(d: list) -> list:
    return [list(x) for x in d]


def _copy_tagged(d: list) -> list:
    return [(list(a), list(b)) for a, b in d]


def _copy_mnist(d: tuple) -> tuple:
    return d[0].clone(), d[1].clone()


_SEGMENTED = _first(readers.read_segmented)
_CONLL = _first(readers.read_conll)
_TAGGED = {"returns": "list[tuple[list[str], list[str]]] (tokens, tags)", "copy": _copy_tagged}
_CWS = {"task": "Chinese word segmentation", "returns": "list[list[str]] (words per sentence)",
        "reader": _SEGMENTED, "copy": _copy_words}  # fmt: skip
_SIGHAN = "research / non-commercial (SIGHAN bakeoff)"
_SIGHAN_NOTE = (
    "SIGHAN 2005 {0}. train = last 10 % of the official training set and test = the test gold, "
    "both jcyk-normalised (digits -> 0, Latin -> X, long words -> L); gold = raw official test "
    "gold (not comparable with train)"
)
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
            name="ud-gsd-cws", **_CWS,
            splits={s: (_f(f"ud_chinese_gsd_cws/{s}.txt"),) for s in ("train", "dev", "test")},
            counts={"train": 3997, "dev": 500, "test": 500},
            licence="CC BY-SA 4.0",
            notes="UD Chinese GSD (Wikipedia), simplified script, full-width punctuation "
            "normalised; complete UD split",
        ),
        *(
            DatasetInfo(
                name=f"{corpus}-cws", **_CWS,
                splits={
                    "train": (_f(f"sighan2005_cws/jcyk_normalized/{corpus}_dev.txt"),),
                    "test": (_f(f"sighan2005_cws/jcyk_normalized/{corpus}_test.txt"),),
                    "gold": (_f(f"sighan2005_cws/{corpus}_test_gold.utf8"),),
                },
                counts=counts, licence=_SIGHAN, notes=_SIGHAN_NOTE.format(corpus.upper()),
            )
            for corpus, counts in (
                ("pku", {"train": 1906, "test": 1944, "gold": 1944}),
                ("msr", {"train": 8693, "test": 3985, "gold": 3985}),
            )
        ),
        DatasetInfo(
            name="msra-ner", task="Chinese NER, char BIO PER/LOC/ORG", **_TAGGED,
            splits={"train": (_MSRA,), "test": (_MSRA,)},
            counts={"train": _MSRA_TRAIN, "test": 4631},
            licence="not stated (research use)", reader=_CONLL, select=_msra_split,
            notes="MSRA / People's Daily (zh-NER-TF): train = first 50,658 sentences, test = "
            "last 4,631 of dh_msra.txt; no dev split",
        ),
        DatasetInfo(
            name="people-daily-ner", task="Chinese NER, char BIO PER/LOC/ORG", **_TAGGED,
            splits={s: (_f(f"people_daily_ner/example.{s}"),) for s in ("train", "dev", "test")},
            counts={"train": None, "dev": 2318, "test": 4636},
            licence="not stated (research use)", reader=_CONLL,
            notes="People's Daily (bert4keras corpus); train only with a KEXUE_DATA copy of "
            "example.train; ~92 % of its sentences occur in msra-ner train",
        ),
        DatasetInfo(
            name="cluener", task="Chinese NER, char BIO, 10 types", **_TAGGED,
            splits={s: (_f(f"cluener2020/{s}.json"),) for s in ("train", "dev")},
            counts={"train": 10748, "dev": 1343},
            licence="not stated (research use)", reader=_first(readers.read_cluener),
            notes="CLUENER2020 (THUCNews); dev = the official dev set; overlapping mentions "
            "resolved longest-first",
        ),
        DatasetInfo(
            name="conll2000", task="English chunking, BIO", **_TAGGED,
            splits={s: (_f(f"conll2000_chunking/{s}.txt"),) for s in ("train", "test")},
            counts={"train": 8936, "test": 2012},
            licence="not stated (WSJ text, research use)", reader=_CONLL,
            notes="CoNLL-2000 (WSJ); tokens + chunk tags (the POS column is dropped)",
        ),
        DatasetInfo(
            name="mnist", task="28x28 handwritten digits",
            returns="tuple[Tensor, Tensor] = (uint8 (N, 28, 28), int64 (N,))",
            splits={
                "train": (_f("mnist/train-images-idx3-ubyte"), _f("mnist/train-labels-idx1-ubyte")),
                "test": (_f("mnist/t10k-images-idx3-ubyte"), _f("mnist/t10k-labels-idx1-ubyte")),
            },
            counts={"train": 60000, "test": 10000},
            licence="commonly CC BY-SA 3.0 (not stated by source)", reader=_mnist,
            copy=_copy_mnist, notes="original IDX files (train images rebuilt losslessly, MD5-verified)",
        ),
        DatasetInfo(
            name="chinese-text", task="raw Chinese text (char LM / MLM)", returns="list[str]",
            splits={s: _TEXT_SOURCES for s in ("train", "valid", "test")},
            counts={"train": 75235, "valid": 1585, "test": 1606},
            licence="mixed; research use (see the four SOURCE.md)", reader=_chinese_text,
            select=lambda d, split: d[split], copy=list,
            notes="MSRA NER sentences + LCSTS train texts + CSL abstracts + CLUENER train texts, "
            "stripped and deduplicated (first occurrence kept, source order); split by md5 of the "
            "sentence: bucket 0-1 of 100 = test, 2-3 = valid, rest = train; never CMRC contexts",
        ),
        DatasetInfo(
            name="cmrc2018", task="Chinese extractive MRC (SQuAD)",
            returns="list[dict] (id, title, context, question, answers[{text, answer_start}])",
            splits={s: (_f(f"cmrc2018/cmrc2018_{s}.json"),) for s in ("train", "dev", "trial")},
            counts={"train": None, "dev": 3219, "trial": 1002},
            licence="CC BY-SA 4.0", reader=_first(readers.read_squad), copy=copy.deepcopy,
            notes="CMRC 2018 dev and trial (train only with a KEXUE_DATA copy); answer offsets "
            "re-aligned where the file's are -1 or wrong",
        ),
        DatasetInfo(
            name="webqa-sample", task="WebQA format sample, 7 questions",
            returns="list[dict] (id, question, answer, passages[{passage, answer}])",
            splits={"sample": (_f("webqa_sample/sample.json"),)}, counts={"sample": 7},
            licence="not stated", reader=_first(readers.read_webqa), copy=copy.deepcopy,
            aliases={"train": "sample"},
            notes="format reference only, too small to train on; 'train' is an alias of 'sample'",
        ),
        DatasetInfo(
            name="lcsts", task="Chinese news text -> headline",
            returns="list[tuple[str, str]] (source text, target headline)",
            splits={s: (_f(f"lcsts_clge_subset/{s}.tsv"),) for s in ("train", "val", "test")},
            counts={"train": 8666, "val": 1000, "test": 1000},
            licence="not stated (LCSTS: research agreement)", reader=_pairs, copy=list,
            notes="LCSTS PART_II, CLGE split; (source text, target headline); a few train texts "
            "repeat in val/test",
        ),
        DatasetInfo(
            name="csl", task="paper abstract -> title",
            returns="list[tuple[str, str]] (source abstract, target title)",
            splits={
                "ts_dev": (_f("csl_title/csl_ts_dev.tsv"),),
                "ts_test": (_f("csl_title/csl_ts_test.tsv"),),
                "clge_val": (_f("csl_title/clge_csl_val.tsv"),),
                "clge_test": (_f("csl_title/clge_csl_test.tsv"),),
                "train": _CSL_TRAIN,
                "test": (_f("csl_title/csl_ts_test.tsv"),),
            },
            counts={"ts_dev": 1000, "ts_test": 1000, "clge_val": 1000, "clge_test": 1000,
                    "train": 3000, "test": 1000},
            licence="Apache-2.0 (ydli-ai/CSL); CLGE copy not stated", reader=_pairs, copy=list,
            notes="CSL; train = clge_val + clge_test + ts_dev (3,000), test = ts_test (1,000): "
            "non-standard, no official train shipped",
        ),
    ]
}  # fmt: skip


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
def _read_cached(reader: Callable[[list[Path]], Any], key: _Key) -> Any:
    return reader([Path(k[0]) for k in key])


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
    return info.copy(info.select(_read_cached(info.reader, _key(files)), split))


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
