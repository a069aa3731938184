"""A capture: one machine (and some of its processes) as ``hugecalc host`` read it, one JSON document.

Every value says where it came from (``sources``: field -> file or call), anything unreadable is
listed in ``unknown`` rather than guessed, and the document carries a full :class:`Profile`, so a
capture is also a valid ``--profile``.  Present pages are stored as compact runs (delta-encoded,
zlib, base64), which keeps a process with 10 GiB resident to a few hundred KB.

Pure: no /proc or /sys here (``hugecalc.machine.snapshot`` reads the machine); files are read and written
here, atomically.
"""

from __future__ import annotations

from dataclasses import dataclass

import base64
import json
import re
import os
import zlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.versions import parse_release

CAPTURE_KIND = "hugecalc-capture"
CAPTURE_SCHEMA_VERSION = 1
#: The kinds of mapping (``Vma.kind``) whose pages are anonymous and private.
ANON_KINDS = ("anon", "heap", "stack")
#: The kinds a replay faults in again, and the memory each one's faults follow.
REPLAYED_KINDS = {"anon": "anon", "heap": "anon", "stack": "anon", "shmem": "shmem", "sysv": "sysv"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Pool(_Model):
    """One hugetlb size: the global pool and its per-NUMA-node split."""

    size_bytes: int
    nr: int
    free: int
    resv: int
    surplus: int
    nodes: dict[str, dict[str, int]] = Field(default_factory=dict)


class Thp(_Model):
    """Transparent hugepage settings: top level, per size, khugepaged."""

    enabled: str | None = None
    defrag: str | None = None
    shmem_enabled: str | None = None
    use_zero_page: str | None = None
    sizes: dict[str, dict[str, str]] = Field(default_factory=dict)  # "64K" -> {"enabled": ..., "shmem_enabled": ...}
    khugepaged: dict[str, int] = Field(default_factory=dict)
    #: THP parameters the kernel booted with (/proc/cmdline: transparent_hugepage=, thp_anon=, thp_shmem=,
    #: transparent_hugepage_shmem=, transparent_hugepage_tmpfs=): they set the switches' boot values
    boot_params: dict[str, str] = Field(default_factory=dict)


class Vma(_Model):
    """One mapping of a process."""

    start: int
    end: int
    kind: str  # anon, shmem, file, hugetlb, stack, heap, special
    name: str = ""
    flags: list[str] = Field(default_factory=list)  # VmFlags that matter: hg, nh (MADV_(NO)HUGEPAGE), um/uw/ui (uffd)
    kernel_page_bytes: int
    present_pages: int = 0
    present_runs: str = ""  # base64(zlib(int64 [gap, length] pairs in pages, from start))
    folios: dict[str, int] | None = None  # folio size in bytes (as text) -> count, where kpageflags was readable
    unclassified_pages: int = 0
    zero_pages: int = 0  # present pages mapping the shared (huge) zero page: read, never written; no folio of theirs
    swapped_pages: int = 0  # counted in present_pages (pagemap's swap bit): no folio now


class Process(_Model):
    pid: int
    comm: str
    vm_pte_bytes: int
    vmas: list[Vma]
    thp_enabled: bool | None = None  # /proc/PID/status THP_enabled: false after prctl(PR_SET_THP_DISABLE)

    def present_vmas(self, page_size: int) -> list[PresentVma]:
        """Each mapping with its present pages as byte runs, for the calculations."""
        out = []
        for v in self.vmas:
            starts, ends = decode_runs(v.present_runs, v.start, page_size)
            out.append(PresentVma(start=v.start, end=v.end, kind=v.kind, flags=tuple(v.flags),
                                  kernel_page_bytes=v.kernel_page_bytes, starts=starts, ends=ends))
        return out


@dataclass(frozen=True)
class PresentVma:
    """A mapping and its present pages, as byte intervals ``[starts[i], ends[i])`` (numpy arrays)."""

    start: int
    end: int
    kind: str  # as Vma.kind
    flags: tuple[str, ...]  # as Vma.flags
    kernel_page_bytes: int
    starts: Any
    ends: Any


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


#: A control character of _CONTROL as json.dumps() writes it (ASCII-escaped): where none is in the
#: dump, no string of the document has one, and it is taken as it is (the walk costs ten times more).
_DUMPED_CONTROL = re.compile(r"\\(u00(0[0-8bcdef]|1[0-9a-f]|7f|[89][0-9a-f])|[bfr])")


#: A control character of _CONTROL in a JSON text as read: escaped (hex in either case) or raw.
_TEXT_CONTROL = re.compile(r"\\(u00(0[0-8bcdef]|1[0-9a-f]|7f|[89][0-9a-f])|[bfr])|[\x00-\x08\x0b-\x1f\x7f-\x9f]", re.I)


def printable(value: Any, text: str | None = None) -> Any:
    """Every string in ``value`` with its control characters written out (``\\x1b``): text from a
    machine (hostnames, kernel strings, process and file names) never reaches a terminal as escapes.
    ``text``: the JSON text ``value`` was parsed from, searched instead of a dump of ``value``."""
    if isinstance(value, dict) and text is not None:
        # A JSON text escapes with a backslash; raw, only C1 characters (C0 ones are not valid JSON
        # strings): a text with neither is clean without the (slower) search.
        if ("\\" not in text and text.isascii()) or not _TEXT_CONTROL.search(text):
            return value
    elif isinstance(value, dict):
        try:
            if not _DUMPED_CONTROL.search(json.dumps(value)):
                return value
        except (TypeError, ValueError, RecursionError):
            pass  # not JSON data: walk it
    return _printable(value)


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value) if _CONTROL.search(value) else value
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    return value


class Capture(_Model):
    kind: str = CAPTURE_KIND
    schema_version: int = CAPTURE_SCHEMA_VERSION
    command: str = "host"  # the envelope every --json document has (result.Result)
    inputs: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    captured_at: str
    hostname: str
    kernel: str  # uname -r, as given
    arch: str  # uname -m
    page_size: int
    paging_levels: int
    user_va_bytes: int
    struct_page_bytes: int | None
    config: dict[str, str] = Field(default_factory=dict)
    mem_total_bytes: int | None = None
    mem_available_bytes: int | None = None
    hugetlb_optimize_vmemmap: int | None = None  # None: the sysctl does not exist (no HVO possible)
    memmap_on_memory: bool | None = None  # memory_hotplug.memmap_on_memory (None: not read, or no hotplug)
    hotplugged_ram_bytes: int | None = None  # driver-managed hot-plugged RAM (/proc/iomem; None: not read)
    hotplugged_hugepages: dict[str, int] | None = None  # its hugetlb pages: size in bytes (as text) -> count
    nr_memmap_pages: int | None = None
    nr_memmap_boot_pages: int | None = None
    pools: list[Pool]  # required: a capture without them is damaged, not a machine without pools
    thp: Thp
    processes: list[Process] = Field(default_factory=list)
    sources: dict[str, str] = Field(default_factory=dict)
    unknown: list[dict[str, str]] = Field(default_factory=list)
    profile: Profile

    @model_validator(mode="before")
    @classmethod
    def _printable(cls, data: Any, info: ValidationInfo) -> Any:
        return printable(data, (info.context or {}).get("text"))

    def process(self, pid: int) -> Process:
        for p in self.processes:
            if p.pid == pid:
                return p
        have = ", ".join(str(p.pid) for p in self.processes) or "none"
        raise InputError(f"--pid {pid}: the capture has no such process (it has: {have}; capture it with "
                         f"'hugecalc host --pids {pid}')")


def captured_release(capture: Capture):
    """The kernel a capture was made on, as a release the rules know (parse_release keeps each: a
    fleet's hosts run a few kernels)."""
    try:
        return parse_release(capture.kernel)
    except InputError as e:
        raise InputError(f"the capture's kernel {capture.kernel}: {str(e).split(': ', 1)[-1]} (give --kernel)") from None


# --- present pages as compact runs -------------------------------------------------------------


def encode_runs(starts, ends, base: int, page: int) -> str:
    """Byte intervals (sorted, disjoint numpy arrays) -> base64(zlib(int64 [gap, length] pairs in pages))."""
    import numpy as np

    if starts.size == 0:
        return ""
    s = (starts - base) // page
    e = (ends - base) // page
    gaps = np.empty_like(s)
    gaps[0] = s[0]
    gaps[1:] = s[1:] - e[:-1]
    pairs = np.stack([gaps, e - s], axis=1).astype("<i8")
    return base64.b64encode(zlib.compress(pairs.tobytes(), 6)).decode()


def decode_runs(text: str, base: int, page: int):
    """The inverse of :func:`encode_runs`: byte intervals (two numpy arrays)."""
    import numpy as np

    if not text:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    try:
        pairs = np.frombuffer(zlib.decompress(base64.b64decode(text, validate=True)), dtype="<i8").reshape(-1, 2)
    except (ValueError, zlib.error) as e:
        raise InputError(f"a capture's present_runs cannot be decoded ({e}): the file is damaged") from None
    if (pairs < 0).any():
        raise InputError("a capture's present_runs has negative gaps or lengths: the file is damaged")
    ends_pages = np.cumsum(pairs[:, 0] + pairs[:, 1])
    starts_pages = ends_pages - pairs[:, 1]
    return (base + starts_pages * page).astype(np.int64), (base + ends_pages * page).astype(np.int64)


# --- files ---------------------------------------------------------------------------------------


def load_capture(path: str | os.PathLike) -> Capture:
    """A capture file: refused with one clear line if unreadable, of a newer schema, or damaged."""
    from hugecalc.files import read_text

    from hugecalc.machine.trace import is_record, read_meta

    path = Path(path)
    text = None
    if is_record(str(path)):  # a record holds the machine as it was when it was made
        data = read_meta(str(path), "--host").get("capture")
    else:
        text = read_text(str(path), "--host")
        try:
            data = json.loads(text)
        except ValueError as e:
            raise InputError(f"--host {path}: not a capture: not valid JSON ({e}; truncated?)") from None
    if not isinstance(data, dict) or data.get("kind") != CAPTURE_KIND:
        raise InputError(f"--host {path}: not a hugecalc capture (make one with 'hugecalc host --output FILE')")
    version = data.get("schema_version")
    if not isinstance(version, int) or version > CAPTURE_SCHEMA_VERSION:
        raise InputError(f"--host {path}: capture schema_version {version!r} is newer than this hugecalc reads "
                         f"({CAPTURE_SCHEMA_VERSION}): upgrade hugecalc")
    try:
        capture = Capture.model_validate(data, context={"text": text})
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise InputError(f"--host {path}: damaged capture: {where}: {err['msg']}") from None
    for p in capture.processes:
        for v in p.vmas:
            if v.end <= v.start or v.start % capture.page_size:
                raise InputError(f"--host {path}: damaged capture: process {p.pid} has a mapping "
                                 f"[{v.start:#x}, {v.end:#x}) that is empty or not page-aligned")
    return capture
