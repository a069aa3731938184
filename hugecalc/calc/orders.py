"""Which THP orders a fault in a VMA may get: the per-size switches, MADV_(NO)HUGEPAGE, the
top-level switches, and the VMA's placement and file offset.

The first stages of ``compute_mthp``: :func:`pass_settings` checks one pass's options,
:func:`allowed_orders` applies the kernel's rules to them.

Kernel reference
----------------
- ``thp_vma_allowable_orders()`` (include/linux/huge_mm.h): per-size ``always``, ``madvise``
  (needs ``MADV_HUGEPAGE``) and ``inherit`` (follows the top-level ``enabled``); ``VM_NOHUGEPAGE``
  disables all (``vma_thp_disabled()``).
- ``thp_vma_suitable_order()``: the naturally aligned range must lie inside the VMA (for files and
  shmem, the file offset must be aligned too).
- ``shmem_allowable_huge_orders()``, ``shmem_huge_global_enabled()`` (mm/shmem.c).
- THP_ORDERS_ALL_ANON excludes order 1; THP_ORDERS_ALL_FILE_DEFAULT allows orders 1 up to
  MAX_PAGECACHE_ORDER = min(MAX_XAS_ORDER = 11, PMD order).
- ``__get_unmapped_area()`` / ``thp_get_unmapped_area_vmflags()``: where mmap() places an
  anonymous mapping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hugecalc.calc.tables import check_user_span, table_aligned_start
from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.releases import (MAP_STACK_NOHUGEPAGE, MTHP_ANON, SHMEM_MTHP, THP_ALIGN_ANON, THP_ALIGN_NOT_32BIT,
                               THP_ALIGN_PMD_MULTIPLES, TMPFS_MTHP, Release, sublevel_notes)
from hugecalc.units import fmt_bytes, fmt_size

ANON_MODES = ("always", "inherit", "madvise", "never")
SHMEM_MODES = ("always", "inherit", "within_size", "advise", "never")
HUGE_MODES = ("always", "within_size", "advise", "never")
#: anon; shmem: anonymous shmem (memfd, MAP_SHARED|MAP_ANONYMOUS); sysv: SysV SHM (shmget), a file of
#: the internal shm mount; tmpfs: a file on a tmpfs mount.
MEMORY_KINDS = ("anon", "shmem", "sysv", "tmpfs")
MAX_XAS_ORDER = 11  # XA_CHUNK_SHIFT * 2 - 1 (include/linux/xarray.h)


def kernel_pmd_aligns_anon_mmap(profile: Profile, release: Release, length: int) -> bool:
    """Whether ``mmap(NULL, length, ..., MAP_ANONYMOUS)`` gets a PMD-aligned address.

    ``__get_unmapped_area()`` uses ``thp_get_unmapped_area_vmflags()`` for anonymous mappings since
    v6.7 (6.6.18), not on 32-bit from v6.8 (6.7.y, 6.6.18), and since v6.12 (6.11.7) only when
    ``IS_ALIGNED(len, PMD_SIZE)``; with no hint address (a hint is respected from v6.13).
    """
    if not release.has(THP_ALIGN_ANON) or length < profile.pmd_size:
        return False
    if profile.bits != 64 and release.has(THP_ALIGN_NOT_32BIT):
        return False
    return length % profile.pmd_size == 0 or not release.has(THP_ALIGN_PMD_MULTIPLES)


def max_file_bytes(profile: Profile) -> int:
    """MAX_LFS_FILESIZE (include/linux/fs.h): LLONG_MAX on 64-bit, ULONG_MAX << PAGE_SHIFT on 32-bit."""
    return (1 << 63) - 1 if profile.bits == 64 else ((1 << 32) - 1) * profile.page_size


def pmd_order(profile: Profile) -> int:
    return int(math.log2(profile.pmd_size // profile.page_size))


def anon_orders(profile: Profile) -> list[int]:
    """THP_ORDERS_ALL_ANON: orders 2..PMD_ORDER ("order 1 is a limitation of the THP implementation")."""
    return list(range(2, pmd_order(profile) + 1))


def file_orders(profile: Profile) -> list[int]:
    """THP_ORDERS_ALL_FILE_DEFAULT: orders 1..MAX_PAGECACHE_ORDER."""
    return list(range(1, min(MAX_XAS_ORDER, pmd_order(profile)) + 1))




def _order_of(profile: Profile, size: int, what: str) -> int:
    pages, rest = divmod(size, profile.page_size)
    if rest or pages & (pages - 1):
        raise InputError(f"{what} {fmt_size(size)} is not a power-of-two number of {fmt_size(profile.page_size)} pages")
    return pages.bit_length() - 1


def _allowed(modes: dict[int, str], always: tuple[str, ...], advised: str, madvise: bool,
             global_on: bool) -> set[int]:
    """Orders a per-size mode allows: ``always`` ones; the ``advised`` mode (madvise/advise) with
    MADV_HUGEPAGE; ``inherit`` when the top-level switch is on for this VMA.

    thp_vma_allowable_orders() (include/linux/huge_mm.h); shmem_allowable_huge_orders() (mm/shmem.c).
    """
    return {o for o, m in modes.items()
            if m in always or (m == advised and madvise) or (m == "inherit" and global_on)}


def _why(page: int, rule: str, madvise: bool, modes: dict[int, str]) -> str:
    return (f"{rule}, {'MADV_HUGEPAGE' if madvise else 'no MADV_HUGEPAGE'}; per size: "
            + ", ".join(f"{fmt_size(page << o)}={m}" for o, m in sorted(modes.items()) if m != "never"))


def check_order(profile: Profile, size: int, allowed_orders: list[int], what: str, rule: str) -> int:
    """The order of a THP size an option names, refused with the reason when the kernel has no such size."""
    order = _order_of(profile, size, what)
    if order not in allowed_orders:
        lo, hi = allowed_orders[0], allowed_orders[-1]
        why = ("the base page, not a THP size" if order == 0 else f"order {order}, larger than the PMD size"
               if order > hi else f"order {order} ({rule})")
        raise InputError(f"{what} {fmt_size(size)} is {why}: {profile.name} has "
                         f"{fmt_size(profile.page_size << lo)}..{fmt_size(profile.page_size << hi)}")
    return order


def parse_modes(profile: Profile, items: list[tuple[int, str]], allowed_orders: list[int], modes: tuple[str, ...],
                what: str, rule: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for size, mode in items:
        order = check_order(profile, size, allowed_orders, what, rule)
        if mode not in modes:
            raise InputError(f"{what} {fmt_size(size)}={mode}: the mode must be one of {', '.join(modes)}")
        out[order] = mode
    return out


@dataclass(frozen=True)
class Pass:
    """Stage 1, the settings of one pass: the VMA, the touches and the THP switches, checked."""

    memory: str
    start: int
    end: int
    file_offset: int
    stride: int
    pre_stride: int  # 0: nothing prepopulated
    access: str
    top_level: str
    madvise: bool
    nohugepage: bool
    stack: bool  # mmap(MAP_STACK)
    huge: str
    anon_modes: dict[int, str]  # order -> per-size enabled
    shm_modes: dict[int, str]  # order -> per-size shmem_enabled

    @property
    def shmem(self) -> bool:
        return self.memory != "anon"

    @property
    def vma_size(self) -> int:
        return self.end - self.start


def pass_settings(profile: Profile, release: Release, notes: list[str], *, enabled, top_level, madvise, nohugepage,
                  stack=False,
              memory, shmem_enabled, huge, vma_size, vma_start, file_offset, touch_stride, prepopulated_stride,
              access) -> Pass:
    page = profile.page_size
    if top_level not in ("always", "madvise", "never"):
        raise InputError(f"--top-level {top_level!r}: use always, madvise or never")
    if memory not in MEMORY_KINDS:
        raise InputError(f"--memory {memory!r}: use {', '.join(MEMORY_KINDS)}")
    if huge not in HUGE_MODES:
        raise InputError(f"--huge {huge!r}: use {', '.join(HUGE_MODES)}")
    if access not in ("write", "read-then-write"):
        raise InputError(f"--access {access!r}: use write or read-then-write")
    if stack and memory != "anon":
        raise InputError("--stack is mmap(MAP_STACK|MAP_ANONYMOUS|MAP_PRIVATE): use it with --memory anon")
    if madvise and nohugepage:
        raise InputError("--madvise and --nohugepage exclude each other (MADV_HUGEPAGE vs MADV_NOHUGEPAGE)")
    if vma_size <= 0 or vma_size % page:
        raise InputError(f"--vma-size {fmt_size(vma_size)} must be a positive multiple of the {fmt_size(page)} page")
    stride = check_user_span(profile, touch_stride or page, "--touch-stride")
    if prepopulated_stride is not None:
        check_user_span(profile, prepopulated_stride, "--prepopulated-stride")
    default_start = vma_start is None
    start = table_aligned_start(profile, vma_size, profile.pmd_size) if default_start else vma_start
    if start % page:
        raise InputError(f"--vma-start {start:#x} is not aligned to the {fmt_size(page)} page")
    if start + vma_size > profile.user_va_bytes:
        raise InputError(f"the VMA [{start:#x}, {start + vma_size:#x}) does not fit in {profile.name}'s user "
                         f"address space ({fmt_bytes(profile.user_va_bytes)})")
    if memory == "sysv" and file_offset:
        raise InputError("--file-offset: shmat() maps a SysV segment from its start (offset 0)")
    if file_offset % page:
        raise InputError(f"--file-offset {file_offset} is not a multiple of the {fmt_size(page)} page")
    if file_offset + vma_size > max_file_bytes(profile):
        raise InputError(f"--file-offset {file_offset:#x} + --vma-size {vma_size:#x} is past the largest file "
                         f"{profile.name} allows (MAX_LFS_FILESIZE {max_file_bytes(profile):#x})")
    if default_start and memory == "anon":
        notes += sublevel_notes(release, [(THP_ALIGN_ANON, None), (THP_ALIGN_PMD_MULTIPLES, None)]
                                + ([(THP_ALIGN_NOT_32BIT, None)] if profile.bits != 64 else []))
    if default_start and memory == "anon" and not kernel_pmd_aligns_anon_mmap(profile, release, vma_size):
        notes.append(f"the start here is aligned, but mmap() of {fmt_size(vma_size)} on {release} is not placed "
                     "PMD-aligned by the kernel (" + (THP_ALIGN_PMD_MULTIPLES.cite if release.has(THP_ALIGN_ANON)
                                                     else THP_ALIGN_ANON.cite)
                     + "): pass --vma-start to model the address a program really gets")
    P = pmd_order(profile)
    anon_modes = {o: "never" for o in anon_orders(profile)}
    anon_modes[P] = "inherit"  # transhuge.rst: PMD size inherits, the other sizes are off
    anon_modes.update(parse_modes(profile, list(enabled), anon_orders(profile), ANON_MODES, "--enabled",
                                  "THP_ORDERS_ALL_ANON excludes order 1"))
    shm_modes = {o: "never" for o in file_orders(profile)}
    if P in shm_modes:
        shm_modes[P] = "inherit"
    shm_modes.update(parse_modes(profile, list(shmem_enabled), file_orders(profile), SHMEM_MODES,
                                 "--shmem-enabled", "THP_ORDERS_ALL_FILE_DEFAULT: orders 1..MAX_PAGECACHE_ORDER"))
    return Pass(memory=memory, start=start, end=start + vma_size, file_offset=file_offset, stride=stride,
                pre_stride=prepopulated_stride or 0, access=access, top_level=top_level, madvise=madvise,
                nohugepage=nohugepage, stack=stack, huge=huge, anon_modes=anon_modes, shm_modes=shm_modes)


def allowed_orders(profile: Profile, release: Release, p: Pass, notes: list[str]) -> tuple[set[int], str]:
    """Stage 2: the orders a fault in this VMA may get, and why.

    ``thp_vma_allowable_orders()`` (anon) and ``shmem_allowable_huge_orders()`` (shmem, tmpfs),
    then ``thp_vma_suitable_order()``'s file-offset alignment for shmem.
    """
    page = profile.page_size
    P = pmd_order(profile)
    allowed: set[int] = set()
    # The top-level switch that per-size "inherit" follows: enabled (anon), or shmem_enabled / huge=.
    shmem_global_on = p.huge in ("always", "within_size") or (p.huge == "advise" and p.madvise)
    if p.nohugepage:
        return allowed, "MADV_NOHUGEPAGE: vma_thp_disabled() allows no THP"
    if p.stack and release.has(MAP_STACK_NOHUGEPAGE):
        return allowed, f"MAP_STACK sets VM_NOHUGEPAGE on {release}: no THP ({MAP_STACK_NOHUGEPAGE.cite})"
    if not p.shmem:
        allowed = _allowed(p.anon_modes, ("always",), "madvise", p.madvise,
                           p.top_level == "always" or (p.madvise and p.top_level != "never"))
        if not release.has(MTHP_ANON):
            allowed &= {P}
            if any(o != P and m != "never" for o, m in p.anon_modes.items()):
                notes.append(f"kernel {release} has no multi-size THP (added in 6.8): sizes below "
                             f"{fmt_size(profile.pmd_size)} do not exist there; only PMD-size THP applies")
        return allowed, _why(page, "thp_vma_allowable_orders(): top-level " + p.top_level, p.madvise, p.anon_modes)
    if p.memory in ("tmpfs", "sysv"):
        # shmem_allowable_huge_orders(): the per-size knobs apply only to anonymous shmem
        # (vma_is_anon_shmem()); a tmpfs or SysV file follows its mount's huge= (SysV: the internal
        # shm mount, whose huge= is the top-level shmem_enabled), and shmem_huge_global_enabled()
        # gives a page fault the PMD order only, in every release ("if (vma) return maybe_pmd_order").
        if shmem_global_on:
            allowed = {P} & set(file_orders(profile))
        mount = "tmpfs huge=" if p.memory == "tmpfs" else "SysV SHM: the shm mount's huge= = shmem_enabled "
        why = f"{mount}{p.huge}: a page fault gets the PMD size or base pages"
        if release.has(TMPFS_MTHP):
            notes.append(f"{'tmpfs' if p.memory == 'tmpfs' else 'SysV SHM'}: write() and fallocate() on "
                         f"{release} allocate large folios of other sizes too, page faults do not ({TMPFS_MTHP.cite})")
        if p.memory == "sysv" and any(m != "never" and o != P for o, m in p.shm_modes.items()):
            notes.append("--shmem-enabled is for anonymous shmem (memfd, MAP_SHARED|MAP_ANONYMOUS): SysV SHM "
                         "segments are files of the internal shm mount and ignore the per-size switches")
    else:
        allowed = _allowed(p.shm_modes, ("always", "within_size"), "advise", p.madvise, shmem_global_on)
        if not release.has(SHMEM_MTHP):
            allowed &= {P}
            if any(o != P and m != "never" for o, m in p.shm_modes.items()):
                notes.append(f"kernel {release} has no per-size shmem THP (added in 6.11): only PMD-size applies")
        why = _why(page, "shmem_allowable_huge_orders(): shmem_enabled " + p.huge, p.madvise, p.shm_modes)
    if p.huge == "within_size" or "within_size" in p.shm_modes.values():
        notes.append("within_size: the file is taken to end where the VMA ends, so every order that fits "
                     "the VMA also fits i_size")
    # thp_vma_suitable_order() for files: (vm_start >> PAGE_SHIFT) - vm_pgoff aligned to the order.
    misaligned = {o for o in allowed if ((p.start - p.file_offset) // page) % (1 << o)}
    if misaligned:
        notes.append("file offset and VMA start disagree in alignment for "
                     + ", ".join(fmt_size(page << o) for o in sorted(misaligned)) + ": those sizes are never used")
        allowed -= misaligned
    return allowed, why
