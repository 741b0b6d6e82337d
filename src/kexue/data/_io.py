"""Byte-level file access shared by the readers: transparent decompression and error messages.

A path may name a plain file or a ``.gz`` / ``.xz`` / ``.zip`` compressed one (a zip must hold
exactly one file member unless ``member=`` names one). Text is decoded as UTF-8 in one go
(fast); on a decoding error the line number is recovered from the byte offset, so every
malformed-input error names the file and the line: ``"<path>, line <n>: <what is wrong>"``.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

PathLike = str | os.PathLike


class DataFormatError(ValueError):
    """A malformed data file; the message reads ``"<path>, line <n>: <what is wrong>"``.

    Attributes:
        path: the file that failed to parse.
        line: 1-based line number (``None`` for binary files or whole-file errors).
    """

    def __init__(self, path: PathLike, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


def read_bytes(path: PathLike, member: str | None = None) -> bytes:
    """Return the (decompressed) bytes of a plain, ``.gz``, ``.xz`` or ``.zip`` file.

    Args:
        path: file path; the compression is chosen from the suffix.
        member: for a zip archive, the member to read; default: its only file member.

    Returns:
        The uncompressed content.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: corrupt archive, or a zip with zero / several members and no ``member``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        if suffix == ".xz":
            with lzma.open(path, "rb") as f:
                return f.read()
        if suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if not n.endswith("/")]
                if member is None:
                    if len(names) != 1:
                        raise DataFormatError(
                            path, None, f"zip archive must hold exactly one file, found {names}"
                        )
                    member = names[0]
                return z.read(member)
    except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile, KeyError) as err:
        raise DataFormatError(path, None, f"cannot decompress: {err}") from err
    return path.read_bytes()


def read_text(path: PathLike) -> str:
    """Return the file decoded as UTF-8 (a leading BOM is dropped).

    Raises:
        ValueError: invalid UTF-8; the message names the file and the line.
    """
    data = read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataFormatError(path, line, f"invalid UTF-8 ({err.reason})") from err
    return text.removeprefix("\ufeff")


def iter_lines(path: PathLike) -> Iterator[str]:
    """Yield the lines of a UTF-8 text file, without ``\\n`` / ``\\r\\n`` endings.

    Only ``\\n`` separates lines (unlike ``str.splitlines``, which would also split on U+2028
    etc. and shift line numbers); a final newline does not create an extra empty line, so the
    ``i``-th item (from 1) is line ``i`` of the file. The whole file is decoded first (so a
    decoding error is raised before the first line), but no list of lines is built.
    """
    text = read_text(path)
    for line in io.StringIO(text, newline="\n"):
        line = line[:-1] if line.endswith("\n") else line
        yield line[:-1] if line.endswith("\r") else line
