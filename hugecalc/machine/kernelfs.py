"""The running kernel: the one seam through which hugecalc reads and writes /proc and /sys.

Every read and write goes through :data:`BACKEND` (``read``, ``read_bytes``, ``write``,
``exists``, ``glob``, ``open_fd``): the real files, or a :class:`Recording` of them, a fake kernel
whose files are a dict and whose writes are recorded in order, so a sequence of sysfs writes can be
tested without root (as damo's dry run does).  Every setting ``verify`` changes goes through
:class:`hugecalc.machine.restore.Restorer`, which puts it back on exit, on errors, on Ctrl-C and on
SIGTERM, and after a SIGKILL through its journal.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from hugecalc.errors import HostError, InputError
from hugecalc.units import fmt_size

PROC = Path("/proc")
SYS_HUGEPAGES = Path("/sys/kernel/mm/hugepages")
SYS_THP = Path("/sys/kernel/mm/transparent_hugepage")
HVO_SYSCTL = PROC / "sys/vm/hugetlb_optimize_vmemmap"


class Files:
    """The real /proc and /sys (and any file a path names)."""

    def read(self, path: Path) -> str:
        return Path(path).read_text()

    def read_bytes(self, path: Path) -> bytes:
        return Path(path).read_bytes()

    def write(self, path: Path, value: str) -> None:
        Path(path).write_text(value)

    def exists(self, path: Path) -> bool:
        return Path(path).exists()

    def glob(self, directory: Path, pattern: str) -> list[Path]:
        return sorted(Path(directory).glob(pattern))

    def open_fd(self, path: Path) -> int:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


class Recording(Files):
    """A fake kernel: its files are ``files`` (path -> text), every write is recorded in ``writes``
    and changes the file.  ``with Recording({...}) as kernel:`` puts it in place of the real one."""

    def __init__(self, files: dict) -> None:
        self.files = {str(k): v for k, v in files.items()}
        self.writes: list[tuple[str, str]] = []
        self._real: Files | None = None

    def read(self, path: Path) -> str:
        try:
            return self.files[str(path)]
        except KeyError:
            raise FileNotFoundError(2, "No such file or directory", str(path)) from None

    def read_bytes(self, path: Path) -> bytes:
        return self.read(path).encode()

    def write(self, path: Path, value: str) -> None:
        """As sysfs does: a selector file (``always [madvise] never``) moves its brackets to the
        token written, and refuses a token it does not have; any other file takes the value."""
        old = self.files.get(str(path))
        if old is None:
            raise FileNotFoundError(2, "No such file or directory", str(path))
        self.writes.append((str(path), value))
        if "[" in old:
            tokens = old.replace("[", "").replace("]", "").split()
            if value.strip() not in tokens:
                raise OSError(22, "Invalid argument", str(path))
            value = " ".join(f"[{t}]" if t == value.strip() else t for t in tokens)
        self.files[str(path)] = value.strip() + "\n"  # read back as sysfs shows it, with a newline

    def exists(self, path: Path) -> bool:
        key = str(path)
        return key in self.files or any(f.startswith(key.rstrip("/") + "/") for f in self.files)

    def glob(self, directory: Path, pattern: str) -> list[Path]:
        import fnmatch

        base = str(directory).rstrip("/") + "/"
        names = {f[len(base):].split("/")[0] for f in self.files if f.startswith(base)}
        return sorted(Path(base + n) for n in names if fnmatch.fnmatch(n, pattern))

    def open_fd(self, path: Path) -> int:
        raise PermissionError(1, "Operation not permitted", str(path))

    def __enter__(self) -> Recording:
        global BACKEND
        self._real, BACKEND = BACKEND, self
        return self

    def __exit__(self, *exc: object) -> None:
        global BACKEND
        BACKEND = self._real


BACKEND: Files = Files()


def read(path: Path) -> str:
    """A file's text; OSError as the file system raises it (the caller says what it means)."""
    return BACKEND.read(path)


def read_bytes(path: Path) -> bytes:
    return BACKEND.read_bytes(path)


def exists(path: Path) -> bool:
    return BACKEND.exists(path)


def glob(directory: Path, pattern: str) -> list[Path]:
    """The entries of ``directory`` matching ``pattern``, sorted."""
    return BACKEND.glob(directory, pattern)


def open_fd(path: Path) -> int:
    """A read-only descriptor (for pread() of /proc/kpageflags); the caller closes it."""
    return BACKEND.open_fd(path)


def read_text(path: Path) -> str:
    try:
        return BACKEND.read(path)
    except OSError as e:
        raise HostError(f"cannot read {path}: {e.strerror}") from e


def write_text(path: Path, value: str) -> None:
    try:
        BACKEND.write(path, value)
    except OSError as e:
        raise HostError(f"cannot write {value.strip()!r} to {path}: {e.strerror}") from e


def read_keyed(path: Path) -> dict[str, int]:
    """``/proc/vmstat`` and ``/proc/meminfo``: name -> integer (meminfo's kB left as kB)."""
    out = {}
    for line in read_text(path).splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def setting(path: Path) -> str:
    """A setting as it can be written back: sysfs selector files (``always [madvise] never``)
    give their ``[selected]`` token; other files their stripped text."""
    text = read_text(path).strip()
    if "[" in text and "]" in text:
        return text[text.index("[") + 1 : text.index("]")]
    return text


def is_root() -> bool:
    return os.geteuid() == 0


def running_release() -> str:
    return platform.release()


def thp_size_bytes(name: str) -> int:
    """The folio size a ``hugepages-<size>kB`` directory is named after, in bytes."""
    return int(name.removeprefix("hugepages-").removesuffix("kB")) << 10


def thp_dir(size: int) -> Path:
    """transparent_hugepage/hugepages-<size>kB."""
    return SYS_THP / f"hugepages-{size >> 10}kB"


def hugepage_dir(size: int) -> Path:
    path = SYS_HUGEPAGES / f"hugepages-{size >> 10}kB"
    if not exists(path):
        have = [p.name for p in glob(SYS_HUGEPAGES, "hugepages-*")] if exists(SYS_HUGEPAGES) else []
        raise InputError(
            f"hugepage size {fmt_size(size)} is not supported by the running kernel "
            f"(it has {', '.join(have) or 'no hugetlb sizes'})"
        )
    return path


def memmap_pages() -> int:
    """``nr_memmap_pages + nr_memmap_boot_pages``: pages holding struct pages right now."""
    vmstat = read_keyed(PROC / "vmstat")
    if "nr_memmap_pages" not in vmstat:
        raise HostError("/proc/vmstat has no nr_memmap_pages counter (it arrived around 6.11)")
    return vmstat["nr_memmap_pages"] + vmstat.get("nr_memmap_boot_pages", 0)


# --- page tables of a live process (hugecalc pgtable --pid) ----------------------------------

PAGEMAP_PRESENT = 1 << 63
PAGEMAP_SWAPPED = 1 << 62
_PAGEMAP_CHUNK_PAGES = 1 << 18  # 2 MiB of pagemap per read


def vm_pte_bytes(pid: int | str = "self") -> int:
    for line in read_text(PROC / str(pid) / "status").splitlines():
        if line.startswith("VmPTE:"):
            return int(line.split()[1]) << 10
    raise HostError(f"/proc/{pid}/status has no VmPTE line (a kernel thread?)")


def pagemap_chunks(pid: int, start: int, end: int, page_size: int):
    """``(first page number, entries)`` chunks of ``/proc/PID/pagemap`` for ``[start, end)``, in order;
    stops early where the file ends."""
    import numpy as np

    path = PROC / str(pid) / "pagemap"
    try:
        f = open(path, "rb")
    except OSError as e:
        raise HostError(f"cannot read {path}: {e.strerror}") from e
    with f:
        page, last = start // page_size, end // page_size
        while page < last:
            n = min(_PAGEMAP_CHUNK_PAGES, last - page)
            f.seek(page * 8)
            raw = f.read(n * 8)
            if len(raw) < n * 8:
                return
            yield page, np.frombuffer(raw, dtype=np.uint64)
            page += n


def pagemap(pid: int, start: int, end: int, page_size: int):
    """The /proc/PID/pagemap entries of ``[start, end)``, one per page (fewer where the file ends)."""
    import numpy as np

    chunks = [entries for _, entries in pagemap_chunks(pid, start, end, page_size)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint64)


# --- page flags, for the folio sizes of a mapping (hugecalc.machine.snapshot) -------------------------

KPF_COMPOUND_HEAD = 1 << 15  # include/uapi/linux/kernel-page-flags.h
KPF_COMPOUND_TAIL = 1 << 16
KPF_ZERO_PAGE = 1 << 24
PAGEMAP_PFN_MASK = (1 << 55) - 1
