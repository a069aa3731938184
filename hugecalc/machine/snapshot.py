"""``hugecalc host``: read the running machine (and some of its processes) into a :class:`Capture`.

Reads only; every value records its source, and whatever cannot be read goes to ``unknown``.
"""

from __future__ import annotations

import ctypes
import gzip
import os
import platform
import socket
import struct
import time
from pathlib import Path


from hugecalc.machine import kernelfs
from hugecalc.machine.capture import Capture, Pool, Process, Thp
from hugecalc.machine.processes import capture_process
from hugecalc.errors import HostError, InputError
from hugecalc.profiles import load_profile
from hugecalc.units import fmt_size

CONFIG_KEYS = (
    "CONFIG_HUGETLB_PAGE_OPTIMIZE_VMEMMAP", "CONFIG_HUGETLB_PAGE_OPTIMIZE_VMEMMAP_DEFAULT_ON", "CONFIG_PT_RECLAIM",
    "CONFIG_PGTABLE_LEVELS", "CONFIG_X86_5LEVEL", "CONFIG_X86_PAE", "CONFIG_ARM64_CONTPTE", "CONFIG_ARM64_VA_BITS",
    "CONFIG_ARM64_PA_BITS", "CONFIG_TRANSPARENT_HUGEPAGE", "CONFIG_TRANSPARENT_HUGEPAGE_ALWAYS",
    "CONFIG_TRANSPARENT_HUGEPAGE_MADVISE", "CONFIG_TRANSPARENT_HUGEPAGE_NEVER", "CONFIG_KMSAN",
    "CONFIG_SPARSEMEM_VMEMMAP", "CONFIG_NO_PAGE_MAPCOUNT", "CONFIG_ARCH_WANT_HUGE_PMD_SHARE",
    "CONFIG_MMU_GATHER_RCU_TABLE_FREE",
)
SYS_NODES = Path("/sys/devices/system/node")
BTF = Path("/sys/kernel/btf/vmlinux")


class _Reader:
    """Collects sources and unknowns while reading."""

    def __init__(self) -> None:
        self.sources: dict[str, str] = {}
        self.unknown: list[dict[str, str]] = []

    def text(self, what: str, path: Path) -> str | None:
        try:
            value = kernelfs.read(path).strip()
        except OSError as e:
            self.unknown.append({"what": what, "source": str(path), "error": e.strerror or str(e)})
            return None
        self.sources[what] = str(path)
        return value

    def number(self, what: str, path: Path) -> int | None:
        text = self.text(what, path)
        return int(text) if text is not None and text.lstrip("-").isdigit() else None


# --- the kernel -------------------------------------------------------------------------------


def kernel_config(r: _Reader) -> dict[str, str]:
    """The config options the calculators depend on, from /proc/config.gz or /boot/config-RELEASE."""
    for path in (Path("/proc/config.gz"), Path(f"/boot/config-{platform.release()}")):
        try:
            raw = kernelfs.read_bytes(path)
            raw = gzip.decompress(raw) if path.suffix == ".gz" else raw
        except OSError:
            continue
        out = {}
        for line in raw.decode(errors="replace").splitlines():
            key, sep, value = line.partition("=")
            if sep and key in CONFIG_KEYS:
                out[key] = value.strip('"')
            elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
                key = line[2:].split()[0]
                if key in CONFIG_KEYS:
                    out[key] = "n"
        r.sources["config"] = str(path)
        return out
    r.unknown.append({"what": "config", "source": "/proc/config.gz, /boot/config-" + platform.release(),
                      "error": "neither exists"})
    return {}


def struct_page_from_btf(data: bytes) -> int | None:
    """``sizeof(struct page)`` from the kernel's BTF (include/uapi/linux/btf.h): walk the type section
    to the STRUCT named "page"."""
    magic, _, _, hdr_len, type_off, type_len, str_off, _ = struct.unpack_from("<HBBIIIII", data, 0)
    if magic != 0xEB9F:
        return None
    strings = hdr_len + str_off
    name = data.find(b"\x00page\x00", strings) + 1 - strings
    if name <= 0:
        return None
    extra = {1: 4, 3: 12, 14: 4, 17: 4}  # per-kind data after the 12-byte btf_type ...
    per_member = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}  # ... and per member (vlen of them)
    pos, end = hdr_len + type_off, hdr_len + type_off + type_len
    while pos < end:
        name_off, info, size = struct.unpack_from("<III", data, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind == 4 and name_off == name:
            return size
        pos += 12 + extra.get(kind, 0) + vlen * per_member.get(kind, 0)
    return None


def struct_page_bytes(r: _Reader, page_size: int, mem_total: int | None, memmap: int | None) -> int | None:
    try:
        size = struct_page_from_btf(BTF.read_bytes())
    except (OSError, struct.error):
        size = None
    if size:
        r.sources["struct_page_bytes"] = f"{BTF} (BTF type 'struct page')"
        return size
    if memmap and mem_total:
        # Derived: the memmap describes every page, MemTotal leaves out what the kernel reserved.
        derived = round(memmap * page_size / (mem_total // page_size) / 8) * 8
        r.sources["struct_page_bytes"] = ("derived (approximate): (nr_memmap_pages + nr_memmap_boot_pages) x "
                                          "PAGE_SIZE / MemTotal pages, /proc/vmstat and /proc/meminfo")
        return derived
    r.unknown.append({"what": "struct_page_bytes", "source": str(BTF), "error": "no BTF and no memmap counters"})
    return None


def paging_levels(arch: str, config: dict[str, str], r: _Reader) -> int:
    """x86-64: 5 only when the kernel really uses LA57 (an mmap hint above 47 bits is honoured), not
    just when the CPU has the flag; elsewhere CONFIG_PGTABLE_LEVELS."""
    if arch == "x86_64":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        addr = libc.mmap(1 << 52, 4096, 0, 0x22, -1, 0)  # PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS, a hint
        if addr not in (None, ctypes.c_void_p(-1).value):
            libc.munmap(addr, 4096)
        r.sources["paging_levels"] = "mmap() hint above 47 bits honoured or not (x86-64 LA57)"
        return 5 if addr and addr >= 1 << 47 else 4
    levels = config.get("CONFIG_PGTABLE_LEVELS")
    if levels and levels.isdigit():
        r.sources["paging_levels"] = r.sources.get("config", "config") + " CONFIG_PGTABLE_LEVELS"
        return int(levels)
    r.unknown.append({"what": "paging_levels", "source": "CONFIG_PGTABLE_LEVELS", "error": "no kernel config"})
    return 4


def profile_name(arch: str, page_size: int, levels: int, config: dict[str, str]) -> str:
    """The bundled profile of this machine's geometry."""
    if arch == "x86_64":
        return "x86-64-la57" if levels == 5 else "x86-64"
    if arch in ("aarch64", "arm64"):
        return {4096: "arm64-4k", 16384: "arm64-16k", 65536: "arm64-64k"}[page_size]
    if arch == "riscv64":
        return "riscv64-sv48"
    if arch in ("i386", "i486", "i586", "i686"):
        return "i386-pae" if config.get("CONFIG_X86_PAE") == "y" or levels == 3 else "i386"
    raise HostError(f"no bundled profile for this machine ({arch}, {page_size}-byte pages): write one (see "
                    "'hugecalc profiles') and pass it with --profile")


def machine_profile_name() -> str:
    """The bundled profile of the running machine's geometry (arch, page size, paging levels)."""
    r = _Reader()
    config = kernel_config(r)
    arch = platform.machine()
    return profile_name(arch, os.sysconf("SC_PAGESIZE"), paging_levels(arch, config, r), config)


# --- hugetlb and THP ------------------------------------------------------------------------------


def pools(r: _Reader) -> list[Pool]:
    out = []
    for d in sorted(kernelfs.glob(kernelfs.SYS_HUGEPAGES, "hugepages-*kB"), key=lambda p: int(p.name[10:-2])):
        size = int(d.name[10:-2]) << 10
        values = {k: r.number(f"pools.{d.name}.{k}", d / f"{k}_hugepages") or 0 for k in ("nr", "free", "resv", "surplus")}
        nodes = {}
        for n in sorted(p / "hugepages" / d.name for p in kernelfs.glob(SYS_NODES, "node*")
                        if kernelfs.exists(p / "hugepages" / d.name)):
            nodes[n.parent.parent.name.removeprefix("node")] = {
                k: r.number(f"pools.{d.name}.{n.parent.parent.name}.{k}", n / f"{k}_hugepages") or 0
                for k in ("nr", "free", "surplus")}
        out.append(Pool(size_bytes=size, nodes=nodes, **values))
    if out:
        r.sources["pools"] = f"{kernelfs.SYS_HUGEPAGES}/hugepages-*kB, {SYS_NODES}/node*/hugepages"
    return out


#: Boot parameters that set THP switches (Documentation/admin-guide/mm/transhuge.rst; thp_anon= 6.13,
#: thp_shmem= and the shmem/tmpfs ones 6.14).
THP_BOOT_PARAMS = ("transparent_hugepage", "thp_anon", "thp_shmem", "transparent_hugepage_shmem",
                   "transparent_hugepage_tmpfs")


def thp_settings(r: _Reader) -> Thp:
    if not kernelfs.SYS_THP.is_dir():
        r.unknown.append({"what": "thp", "source": str(kernelfs.SYS_THP), "error": "missing (no THP in this kernel)"})
        return Thp()

    def selected(what: str, path: Path) -> str | None:
        text = r.text(what, path)
        return kernelfs.setting(path) if text is not None else None

    sizes = {}
    for d in sorted(kernelfs.glob(kernelfs.SYS_THP, "hugepages-*kB"), key=lambda p: int(p.name[10:-2])):
        label = fmt_size(int(d.name[10:-2]) << 10)
        sizes[label] = {k: selected(f"thp.sizes.{label}.{k}", d / k) for k in ("enabled", "shmem_enabled")
                        if kernelfs.exists(d / k)}
    khugepaged = {}
    for k in ("max_ptes_none", "max_ptes_swap", "max_ptes_shared", "pages_to_scan", "scan_sleep_millisecs",
              "alloc_sleep_millisecs", "defrag"):
        value = r.number(f"thp.khugepaged.{k}", kernelfs.SYS_THP / "khugepaged" / k)
        if value is not None:
            khugepaged[k] = value
    cmdline = r.text("thp.boot_params", kernelfs.PROC / "cmdline") or ""
    boot = {k: v for k, _, v in (t.partition("=") for t in cmdline.split()) if k in THP_BOOT_PARAMS}
    return Thp(enabled=selected("thp.enabled", kernelfs.SYS_THP / "enabled"), boot_params=boot,
               defrag=selected("thp.defrag", kernelfs.SYS_THP / "defrag"),
               shmem_enabled=selected("thp.shmem_enabled", kernelfs.SYS_THP / "shmem_enabled"),
               use_zero_page=selected("thp.use_zero_page", kernelfs.SYS_THP / "use_zero_page"),
               sizes=sizes, khugepaged=khugepaged)


# --- processes ---------------------------------------------------------------------------------------

#: VmFlags a replay needs: hg/nh (MADV_(NO)HUGEPAGE), sh (shared), um/uw/ui (userfaultfd-armed).
MEMMAP_ON_MEMORY = Path("/sys/module/memory_hotplug/parameters/memmap_on_memory")


def _memmap_on_memory(r: _Reader) -> bool | None:
    """memory_hotplug.memmap_on_memory: Y, N, or "force" (6.7+); None where hotplug is not built."""
    if not kernelfs.exists(MEMMAP_ON_MEMORY):
        return None
    text = r.text("memmap_on_memory", MEMMAP_ON_MEMORY)
    return None if text is None else text.strip().lower() in ("y", "1", "force")


def _hotplugged(r: _Reader, page: int) -> dict:
    """The capture's hot-plugged RAM and its hugepages (hugecalc.machine.hotplug), or why not read."""
    from hugecalc.machine.hotplug import hotplugged_hugepages

    found = hotplugged_hugepages(page)
    if found is None:
        r.unknown.append({"what": "hugepages in hot-plugged memory", "source": "/proc/iomem, /proc/kpageflags",
                          "error": "needs root"})
        return {}
    r.sources["hotplugged_hugepages"] = "/proc/iomem 'System RAM (driver)' ranges, their hugepages from /proc/kpageflags"
    return {"hotplugged_ram_bytes": found[0], "hotplugged_hugepages": {str(s): n for s, n in found[1].items()}}


def _processes(pids: list[int], page: int, user_va: int, option: str, every: bool, r: _Reader) -> list[Process]:
    """The processes asked for; with ``every`` (``--pids all``) one that cannot be read, or that went
    away meanwhile, is listed among the unknown and the others are captured."""
    out = []
    for pid in pids:
        try:
            out.append(capture_process(pid, page, user_va, option))
        except InputError as e:
            if not every:
                raise
            r.unknown.append({"what": f"process {pid}", "source": f"/proc/{pid}",
                              "error": str(e).removeprefix(f"{option} {pid}: ")})
    return out


def capture_machine(pids: list[int] | None = None, option: str = "--pids", every: bool = False) -> Capture:
    """Read this machine (and the processes ``pids``; ``every``: all of them, the unreadable ones
    listed among the unknown) into a capture."""
    r = _Reader()
    arch, release = platform.machine(), platform.release()
    r.sources.update({"arch": "uname -m", "kernel": "uname -r", "hostname": "gethostname()",
                      "page_size": "sysconf(_SC_PAGESIZE)"})
    page = os.sysconf("SC_PAGESIZE")
    config = kernel_config(r)
    levels = paging_levels(arch, config, r)
    meminfo = kernelfs.read_keyed(kernelfs.PROC / "meminfo")
    vmstat = kernelfs.read_keyed(kernelfs.PROC / "vmstat")
    r.sources.update({"mem_total_bytes": "/proc/meminfo MemTotal", "mem_available_bytes": "/proc/meminfo MemAvailable",
                      "nr_memmap_pages": "/proc/vmstat",
                      **({"nr_memmap_boot_pages": "/proc/vmstat"} if "nr_memmap_boot_pages" in vmstat else {})})
    mem_total = meminfo.get("MemTotal", 0) << 10 or None
    memmap = (vmstat["nr_memmap_pages"] + vmstat.get("nr_memmap_boot_pages", 0)) if "nr_memmap_pages" in vmstat else None
    if memmap is None:
        r.unknown.append({"what": "nr_memmap_pages", "source": "/proc/vmstat", "error": "no such counter (before 6.11)"})
    sp = struct_page_bytes(r, page, mem_total, memmap)
    hvo = r.number("hugetlb_optimize_vmemmap", kernelfs.HVO_SYSCTL) if kernelfs.exists(kernelfs.HVO_SYSCTL) else None
    if hvo is None:
        r.unknown.append({"what": "hugetlb_optimize_vmemmap", "source": str(kernelfs.HVO_SYSCTL),
                          "error": "missing: no HVO in this kernel (config or struct page size; before 6.1 also "
                                   "memmap_on_memory)"})
    base = load_profile(profile_name(arch, page, levels, config))
    hostname = socket.gethostname()
    profile = base.model_copy(update={
        "name": f"host:{hostname}", "description": f"{base.description}; captured from {hostname} ({release})",
        **({"struct_page_bytes": sp} if sp else {})})
    r.sources["profile"] = f"bundled profile {base.name} for {arch}, {page}-byte pages, {levels} levels"
    processes = _processes(pids or [], page, profile.user_va_bytes, option, every, r)
    return Capture(
        captured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), hostname=hostname, kernel=release,
        arch=arch, page_size=page, paging_levels=levels, user_va_bytes=profile.user_va_bytes,
        struct_page_bytes=sp, config=config, mem_total_bytes=mem_total,
        mem_available_bytes=meminfo["MemAvailable"] << 10 if "MemAvailable" in meminfo else None, hugetlb_optimize_vmemmap=hvo,
        nr_memmap_pages=vmstat.get("nr_memmap_pages"), nr_memmap_boot_pages=vmstat.get("nr_memmap_boot_pages"),
        pools=pools(r), thp=thp_settings(r), processes=processes, sources=r.sources, unknown=r.unknown,
        memmap_on_memory=_memmap_on_memory(r), **_hotplugged(r, page),
        profile=profile, inputs={"pids": pids or []})
