"""A record of a program's true fault sequence (``hugecalc record``): one compact, versioned file.

Columnar (Parquet through pyarrow, zstd-compressed): one row per event, in the order the kernel
traced them, with the columns ``t_ns`` (trace clock), ``tgid``, ``tid``, ``kind`` and five values
``a``..``e`` whose meaning is the kind's (:data:`KINDS`).  The file's metadata holds what the
replay needs beside the events: the kernel, the machine's page size and THP settings at the time
(a capture without processes), the command, its exit status, and whether every fault is a
base-page fault (the command ran with ``PR_SET_THP_DISABLE``).

It is written under a temporary name and renamed into place when complete, so a record that was
interrupted never sits under its final name; a file that is not a whole record is refused on read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from hugecalc.errors import InputError

RECORD_KIND = "hugecalc-record"
USER_TOP = 1 << 56  # above every user address (TASK_SIZE with 5-level paging is 1 << 56)
RECORD_SCHEMA_VERSION = 1

#: Event kinds and the meaning of their values a..e.
(FAULT, MMAP, MUNMAP, BRK, MREMAP, MPROTECT, MADVISE, NEWTASK, EXEC, EXIT_MMAP, IMAGE_BSS, THP_DISABLE,
 ATTACH_VMA, UFFD) = range(14)
#: ATTACH_VMA's kinds (d) and flags (e)
ATTACH_KINDS = ("anon", "heap", "shmem", "file", "hugetlb")
ATTACH_HUGEPAGE, ATTACH_NOHUGEPAGE = 1, 2
KINDS = {
    FAULT: "page_fault_user: a=address, b=error_code (bit 0 present, bit 1 write)",
    MMAP: "mmap: a=address returned, b=length, c=prot, d=flags, e=fd",
    MUNMAP: "munmap: a=address, b=length",
    BRK: "brk: a=the break after the call, b=the break asked for",
    MREMAP: "mremap: a=old address, b=old length, c=new length, d=flags, e=address returned",
    MPROTECT: "mprotect: a=address, b=length, c=prot",
    MADVISE: "madvise: a=address, b=length, c=advice",
    NEWTASK: "task_newtask: a=the new task's pid, b=clone_flags (CLONE_VM: a thread)",
    EXEC: "sched_process_exec: the process's address space was replaced",
    EXIT_MMAP: "exit_mmap: the process's address space was torn down",
    IMAGE_BSS: "an anonymous mapping execve() made (a program's or its interpreter's bss): a=start, b=end, c=prot",
    THP_DISABLE: "prctl(PR_SET_THP_DISABLE): a=1 to disable THP for the process, 0 to allow it again",
    UFFD: "the userfaultfd-registered ranges after an UFFDIO_(UN)REGISTER: c=0 none from now on, c=1 [a, b) is one",
    ATTACH_VMA: "a mapping the process had when the record attached to it (record --pid): a=start, b=end, c=prot, "
                "d=its kind (ATTACH_KINDS), e=flags (1 MADV_HUGEPAGE, 2 MADV_NOHUGEPAGE)",
}
COLUMNS = ("t_ns", "tgid", "tid", "kind", "a", "b", "c", "d", "e")


@dataclass
class Record:
    """The events as columns (numpy arrays) and the record's metadata."""

    columns: dict[str, Any]
    meta: dict[str, Any]

    @property
    def events(self) -> int:
        return int(self.columns["kind"].shape[0])

    @property
    def faults(self) -> int:
        return int((self.columns["kind"] == FAULT).sum())


def write_record(path: str, columns: dict[str, Any], meta: dict[str, Any], force: bool = False) -> None:
    """The record, complete or not at all: written beside ``path`` under an unpredictable
    temporary name, then renamed into place (hugecalc.files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hugecalc.files import write_whole

    table = pa.table({name: columns[name] for name in COLUMNS})
    table = table.replace_schema_metadata({"hugecalc": json.dumps(
        {"kind": RECORD_KIND, "schema_version": RECORD_SCHEMA_VERSION, "events": len(table), **meta})})
    write_whole(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"), "--output", force)


def read_meta(path: str, option: str = "--trace") -> dict[str, Any]:
    """A record file's metadata (its footer only), refused with the reason when the file is not a
    hugecalc record of a version this hugecalc reads."""
    import stat

    import pyarrow as pa
    import pyarrow.parquet as pq

    field = option.lstrip("-")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise InputError(f"{path}: no such record file", field=field) from None
    if not stat.S_ISREG(mode):
        raise InputError(f"{path} is not a regular file: give a record file", field=field)
    try:
        raw = (pq.read_schema(path).metadata or {}).get(b"hugecalc")
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"{path}: not a whole hugecalc record (truncated or damaged: {e})", field=field) from None
    try:
        meta = json.loads(raw) if raw else {}
    except ValueError:
        meta = {}
    if not isinstance(meta, dict) or meta.get("kind") != RECORD_KIND:
        raise InputError(f"{path}: not a hugecalc record (made by 'hugecalc record')", field=field)
    version = meta.get("schema_version")
    if not isinstance(version, int) or version > RECORD_SCHEMA_VERSION:
        raise InputError(f"{path}: record schema_version {version!r} is newer than this hugecalc reads "
                         f"({RECORD_SCHEMA_VERSION}): upgrade hugecalc", field=field)
    return meta


def is_record(path: str) -> bool:
    """Whether ``path`` is a regular file that starts as a Parquet file does (a record, not a JSON
    capture); anything else is left to the reader that refuses it (a FIFO is never opened here)."""
    import stat

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return os.read(fd, 4) == b"PAR1"
    except OSError:
        return False
    finally:
        os.close(fd)


def read_record(path: str) -> Record:
    """A record file, refused with the reason when it is not a whole record of a known version."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = read_meta(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"{path}: not a whole hugecalc record (truncated or damaged: {e})", field="trace") from None
    if meta.get("events") != len(table) or any(c not in table.column_names for c in COLUMNS):
        raise InputError(f"{path}: the record is incomplete ({len(table)} of {meta.get('events')} events)",
                         field="trace")
    return Record(columns={c: table.column(c).to_numpy() for c in COLUMNS}, meta=meta)
