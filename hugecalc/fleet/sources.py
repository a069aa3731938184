"""Where a fleet's captures come from: files, folders, globs, JSON Lines and Parquet tables of
captures, cut into partitions of a few hundred hosts (one Dask task each) and read lazily."""

from __future__ import annotations

import glob
import os
from itertools import chain
from pathlib import Path

from hugecalc.errors import InputError

PARTITION_HOSTS = 2000


def partitions(sources: list[str], size: int = PARTITION_HOSTS) -> list[list[tuple[str, str, int, int]]]:
    """Cut the sources into partitions of at most ``size`` hosts: items ``(kind, path, a, b)``:
    a JSON file (``file``), a byte range of a JSON Lines file holding ``b`` lines from offset ``a``
    (``jsonl``), or rows ``[a, b)`` of a Parquet table (``parquet``)."""
    items: list[tuple[str, str, int, int]] = []
    for source in sources:
        if any(c in source for c in "*?["):
            paths = sorted(glob.glob(source))
            if not paths:
                raise InputError(f"{source}: the pattern matches no file")
        elif os.path.isdir(source):
            paths = [str(p) for p in sorted(Path(source).glob("*.json*")) + sorted(Path(source).glob("*.parquet"))
                     if is_capture_name(p.name) and (p.suffix != ".parquet" or _holds_captures(str(p)))]
            if not paths:
                raise InputError(f"{source}: the directory holds no capture (*.json, *.jsonl, *.parquet)")
        elif os.path.exists(source):
            paths = [source]
        else:
            raise InputError(f"{source}: no such file, directory or pattern")
        for path in paths:
            items += _items(path, size)
    out, current, hosts = [], [], 0
    for item in items:
        n = 1 if item[0] == "file" else item[3] if item[0] == "jsonl" else item[3] - item[2]
        if current and hosts + n > size:
            out.append(current)
            current, hosts = [], 0
        current.append(item)
        hosts += n
    if current:
        out.append(current)
    return out


def is_capture_name(name: str) -> bool:
    """A file a folder of captures holds as a host: not hidden, not a backup or an editor's copy."""
    return not name.startswith(".") and not name.endswith(("~", ".bak", ".orig", ".swp", ".tmp"))


def _holds_captures(path: str) -> bool:
    """A Parquet table of captures (a 'capture' column), not hugecalc's own per-host results."""
    import pyarrow.parquet as pq

    try:
        return "capture" in pq.read_schema(path).names
    except Exception:  # noqa: BLE001 - not Parquet at all: read it as a host, which fails on its own
        return True


def _items(path: str, size: int) -> list[tuple[str, str, int, int]]:
    if path.endswith((".jsonl", ".ndjson")):
        return _jsonl_items(path, size)
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(path).metadata.num_rows
        return [("parquet", path, a, min(a + size, rows)) for a in range(0, rows, size)]
    return [("file", path, 0, 1)]


def _jsonl_items(path: str, size: int) -> list[tuple[str, str, int, int]]:
    """A JSON Lines file cut every ``size`` non-blank lines, found by its newlines alone (memchr over
    1 MiB blocks): a capture's line is never short, so only a short line is looked at for blanks."""
    items: list[tuple[str, str, int, int]] = []
    lines = start = offset = length = 0  # hosts in the item, where it starts; the line's start, its length
    head = b""  # the line's first bytes while it is short
    with open(path, "rb") as f:
        # A last line without its newline ends where the file does: a newline is read after the file.
        for block in chain(iter(lambda: f.read(1 << 20), b""), [b"\n"]):
            pos = 0
            while pos < len(block):
                nl = block.find(b"\n", pos)
                end = len(block) if nl < 0 else nl + 1
                if length <= 64:
                    head += block[pos:end]
                length += end - pos
                pos = end
                if nl >= 0:
                    if lines == size:
                        items.append(("jsonl", path, start, lines))
                        start, lines = offset, 0
                    lines += length > 64 or bool(head.strip())
                    offset, length, head = offset + length, 0, b""
    if lines:
        items.append(("jsonl", path, start, lines))
    return items


def captures(item: tuple[str, str, int, int]):
    """(locator, capture text) for each host of an item; unreadable ones give (locator, None, error)."""
    from hugecalc.files import read_text

    kind, path, a, b = item
    if kind == "file":
        try:
            yield path, read_text(path, "source"), None
        except InputError as e:
            yield path, None, str(e).removeprefix(f"source {path}").lstrip(": ")
    elif kind == "jsonl":
        with open(path, "rb") as f:
            f.seek(a)
            n = 0
            for number, line in enumerate(f):
                if n == b:
                    break
                if line.strip():
                    n += 1
                    yield f"{path}:{a}+{number}", line.decode(errors="replace"), None
    else:
        import pyarrow.parquet as pq

        column = pq.read_table(path, columns=["capture"]).column("capture").slice(a, b - a).to_pylist()
        for i, text in enumerate(column):
            yield f"{path}[{a + i}]", text, None


def locators(item: tuple[str, str, int, int]) -> list[str]:
    """Each host's name in an item as :func:`captures` gives it (a host the cluster lost is named as
    one it read); a JSON Lines item's lines are read for it (its blank lines count)."""
    kind, path, a, b = item
    if kind == "file":
        return [path]
    if kind == "parquet":
        return [f"{path}[{k}]" for k in range(a, b)]
    try:
        return [source for source, _, _ in captures(item)]
    except OSError:  # the file is gone from here: its lines numbered as if none were blank
        return [f"{path}:{a}+{k}" for k in range(b)]
