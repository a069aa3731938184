"""Which THP orders a fault in a VMA may get: the per-size switches, MADV_(NO)HUGEPAGE, the
top-level switches, and the VMA's placement and file offset.

The THP settings (:class:`ThpSettings`) and the shape of a pass (:class:`PassShape`) as types;
the first stages of ``compute_mthp``: :func:`pass_settings` checks one pass against the profile,
:func:`allowed_orders` applies the kernel's rules to it.

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
from typing import Literal

from pydantic import ValidationError, model_validator

from hugecalc.calc import per_profile
from hugecalc.calc.tables import check_user_span, table_aligned_start
from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.result import Model
from hugecalc.releases import (MAP_STACK_NOHUGEPAGE, MTHP_ANON, SHMEM_MTHP, THP_ALIGN_ANON, THP_ALIGN_NOT_32BIT,
                               THP_ALIGN_PMD_MULTIPLES, TMPFS_MTHP, Release, sublevel_notes, unconfirmed_notes)
from hugecalc.units import fmt_bytes, fmt_size

MAX_XAS_ORDER = 11  # XA_CHUNK_SHIFT * 2 - 1 (include/linux/xarray.h)


def kernel_pmd_aligns_anon_mmap(profile: Profile, release: Release, length: int) -> bool:
    """Whether ``mmap(NULL, length, ..., MAP_ANONYMOUS)`` gets a PMD-aligned address.

    ``__get_unmapped_area()`` uses ``thp_get_unmapped_area_vmflags()`` for anonymous mappings since
    v6.7, not on x86-32 from v6.11 (6.10.3), and since v6.12 (6.11.7) only when
    ``IS_ALIGNED(len, PMD_SIZE)``; with no hint address (a hint is respected from v6.13).
    """
    if not release.has(THP_ALIGN_ANON) or length < profile.pmd_size:
        return False
    if profile.bits != 64 and release.has(THP_ALIGN_NOT_32BIT, profile.arch.value):
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


def _order_of(profile: Profile, size: int, field: str) -> int:
    pages, rest = divmod(size, profile.page_size)
    if rest or pages & (pages - 1):
        raise InputError(f"{fmt_size(size)} is not a power-of-two number of {fmt_size(profile.page_size)} pages",
                         field=field)
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


def check_order(profile: Profile, size: int, allowed_orders: list[int], field: str, rule: str) -> int:
    """The order of a THP size an input names, refused with the reason when the kernel has no such size."""
    order = _order_of(profile, size, field)
    if order not in allowed_orders:
        lo, hi = allowed_orders[0], allowed_orders[-1]
        why = ("the base page, not a THP size" if order == 0 else f"order {order}, larger than the PMD size"
               if order > hi else f"order {order} ({rule})")
        raise InputError(f"{fmt_size(size)} is {why}: {profile.name} has "
                         f"{fmt_size(profile.page_size << lo)}..{fmt_size(profile.page_size << hi)}", field=field)
    return order


TopLevel = Literal["always", "madvise", "never"]
AnonMode = Literal["always", "inherit", "madvise", "never"]
ShmemMode = Literal["always", "inherit", "within_size", "advise", "never"]
HugeMode = Literal["always", "within_size", "advise", "never", "deny", "force"]  # deny/force: the testing modes
#: anon; shmem: anonymous shmem (memfd, MAP_SHARED|MAP_ANONYMOUS); sysv: SysV SHM (shmget), a file of
#: the internal shm mount; tmpfs: a file on a tmpfs mount.
Memory = Literal["anon", "shmem", "sysv", "tmpfs"]
Access = Literal["write", "read-then-write"]


class Checked(Model):
    """A model whose bad values are InputErrors naming their field, like every value the
    calculations refuse (pydantic's own error is for programming errors)."""

    def __init__(self, **data: object) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise _input_error(e) from None


def _input_error(e: ValidationError) -> InputError:
    error = e.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, InputError):
        return cause
    loc = error["loc"]
    what = f"{fmt_size(int(loc[1]))}={error['input']}" if len(loc) > 1 else repr(error["input"])
    expected = (error.get("ctx") or {}).get("expected")
    return InputError(f"{what}: " + (f"the mode must be one of {expected}" if expected else error["msg"]),
                      field=str(loc[0]) if loc else None)


class ThpSettings(Checked):
    """The THP switches a fault follows, named after their files in /sys/kernel/mm/transparent_hugepage.

    A switch left at None (a size left out) is as the kernel boots it: ``enabled`` madvise,
    ``shmem_enabled`` never, the PMD size ``inherit`` and every other size ``never``.  Used as a
    what-if, the switches given replace those of the settings now (:meth:`with_overrides`).
    """

    top_level: TopLevel | None = None  # enabled (per-size "inherit" follows it)
    huge: HugeMode | None = None  # shmem_enabled; a tmpfs file: its mount's huge=
    enabled: dict[int, AnonMode] = {}  # hugepages-<size>kB/enabled, by folio size in bytes
    shmem_enabled: dict[int, ShmemMode] = {}  # hugepages-<size>kB/shmem_enabled

    def with_overrides(self, what_if: ThpSettings) -> ThpSettings:
        """These settings with the switches ``what_if`` sets replacing theirs (both valid: so is the merge)."""
        return ThpSettings.model_construct(top_level=what_if.top_level or self.top_level, huge=what_if.huge or self.huge,
                                           enabled={**self.enabled, **what_if.enabled},
                                           shmem_enabled={**self.shmem_enabled, **what_if.shmem_enabled})

    def shown(self) -> dict:
        """As the JSON shows them: sizes as labels (64K)."""
        return {"top_level": self.top_level or "madvise", "huge": self.huge or "never",
                "enabled": {fmt_size(s): m for s, m in sorted(self.enabled.items())},
                "shmem_enabled": {fmt_size(s): m for s, m in sorted(self.shmem_enabled.items())}}


class PassShape(Checked):
    """The VMA a pass runs over and how it touches it (madvise(), mmap() flags, the touches)."""

    memory: Memory = "anon"
    vma_size: int = 1 << 30
    vma_start: int | None = None  # None: table-aligned (table_aligned_start())
    file_offset: int = 0
    touch_stride: int | None = None  # None: every page
    prepopulated_stride: int | None = None  # one base page every this many bytes was already faulted in
    access: Access = "write"
    madvise: bool = False  # MADV_HUGEPAGE
    nohugepage: bool = False  # MADV_NOHUGEPAGE
    stack: bool = False  # mmap(MAP_STACK)

    @model_validator(mode="after")
    def _consistent(self) -> PassShape:
        if self.stack and self.memory != "anon":
            raise InputError(f"is mmap(MAP_STACK|MAP_ANONYMOUS|MAP_PRIVATE): anonymous memory, not {self.memory}",
                             field="stack")
        if self.madvise and self.nohugepage:
            raise InputError("(MADV_HUGEPAGE) and MADV_NOHUGEPAGE exclude each other", field="madvise")
        if self.file_offset and self.memory == "anon":
            raise InputError("is for shmem and tmpfs mappings, not anonymous memory", field="file_offset")
        if self.memory == "sysv" and self.file_offset:
            raise InputError("must be 0 for SysV SHM: shmat() maps a segment from its start", field="file_offset")
        return self


@dataclass(frozen=True)
class Pass:
    """Stage 1, one pass checked against the profile: the VMA, the touches and the THP switches."""

    memory: str
    start: int
    end: int
    file_offset: int
    touch_stride: int
    prepopulated_stride: int  # 0: nothing prepopulated
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


def _check_vma(profile: Profile, shape: PassShape) -> int:
    """The start of the pass's VMA, checked against the profile's page and address space."""
    page = profile.page_size
    if shape.vma_size <= 0 or shape.vma_size % page:
        raise InputError(f"{fmt_size(shape.vma_size)} must be a positive multiple of the {fmt_size(page)} page",
                         field="vma_size")
    check_user_span(profile, shape.touch_stride or page, "touch_stride")
    if shape.prepopulated_stride is not None:
        check_user_span(profile, shape.prepopulated_stride, "prepopulated_stride")
    start = (table_aligned_start(profile, shape.vma_size, profile.pmd_size) if shape.vma_start is None
             else shape.vma_start)
    if start % page:
        raise InputError(f"{start:#x} is not aligned to the {fmt_size(page)} page", field="vma_start")
    if start + shape.vma_size > profile.user_va_bytes:
        raise InputError(f"the VMA [{start:#x}, {start + shape.vma_size:#x}) does not fit in {profile.name}'s user "
                         f"address space ({fmt_bytes(profile.user_va_bytes)})", field="vma_size")
    if shape.file_offset % page:
        raise InputError(f"{shape.file_offset} is not a multiple of the {fmt_size(page)} page", field="file_offset")
    if shape.file_offset + shape.vma_size > max_file_bytes(profile):
        raise InputError(f"file offset {shape.file_offset:#x} + VMA size {shape.vma_size:#x} is past the largest "
                         f"file {profile.name} allows (MAX_LFS_FILESIZE {max_file_bytes(profile):#x})",
                         field="file_offset")
    return start


def _placement_notes(profile: Profile, release: Release, shape: PassShape) -> list[str]:
    """Where mmap() would really place the default-placed anonymous VMA (__get_unmapped_area())."""
    if shape.vma_start is not None or shape.memory != "anon":
        return []
    notes = sublevel_notes(release, [(THP_ALIGN_ANON, None), (THP_ALIGN_PMD_MULTIPLES, None)]
                           + ([(THP_ALIGN_NOT_32BIT, profile.arch.value)] if profile.bits != 64 else []))
    if not kernel_pmd_aligns_anon_mmap(profile, release, shape.vma_size):
        notes.append(f"the start here is aligned, but mmap() of {fmt_size(shape.vma_size)} on {release} is not placed "
                     "PMD-aligned by the kernel (" + (THP_ALIGN_PMD_MULTIPLES.cite if release.has(THP_ALIGN_ANON)
                                                     else THP_ALIGN_ANON.cite)
                     + "): pass --vma-start to model the address a program really gets")
    return notes


def per_size_modes(profile: Profile, settings: ThpSettings) -> tuple[dict[int, str], dict[int, str]]:
    """Every anon and shmem order's mode: as booted (the PMD size inherit, the others never), then the sizes ``settings`` names."""
    anon, files, anon_of, files_of, booted_anon, booted_shm = per_profile(profile, per_size_modes, lambda: _orders(profile))
    anon_modes = dict(booted_anon)
    for size, mode in settings.enabled.items():  # a size not in the map: check_order() says why
        anon_modes[anon_of.get(size) or check_order(profile, size, anon, "enabled",
                                                    "THP_ORDERS_ALL_ANON excludes order 1")] = mode
    shm_modes = dict(booted_shm)
    for size, mode in settings.shmem_enabled.items():
        shm_modes[files_of.get(size) or check_order(profile, size, files, "shmem_enabled",
                                                    "THP_ORDERS_ALL_FILE_DEFAULT: orders 1..MAX_PAGECACHE_ORDER")] = mode
    return anon_modes, shm_modes


def _orders(profile: Profile) -> tuple:
    """A profile's anon and file orders, each size's order, and every order's mode as booted."""
    P, page, anon, files = pmd_order(profile), profile.page_size, anon_orders(profile), file_orders(profile)
    return anon, files, {page << o: o for o in anon}, {page << o: o for o in files}, *(
        {o: "inherit" if o == P else "never" for o in orders} for orders in (anon, files))


def pass_settings(profile: Profile, release: Release, shape: PassShape, settings: ThpSettings,
                  notes: list[str]) -> Pass:
    """Stage 1: the pass's shape and THP settings, checked against the profile (the shape once per profile and release)."""
    start, placement = per_profile(profile, (pass_settings, release, shape),
                                   lambda: (_check_vma(profile, shape), _placement_notes(profile, release, shape)))
    notes += placement
    anon_modes, shm_modes = per_size_modes(profile, settings)
    return Pass(memory=shape.memory, start=start, end=start + shape.vma_size, file_offset=shape.file_offset,
                touch_stride=shape.touch_stride or profile.page_size,
                prepopulated_stride=shape.prepopulated_stride or 0, access=shape.access,
                top_level=settings.top_level or "madvise", madvise=shape.madvise, nohugepage=shape.nohugepage,
                stack=shape.stack, huge=settings.huge or "never", anon_modes=anon_modes, shm_modes=shm_modes)


def _file_fault_orders(profile: Profile, release: Release, p: Pass, global_on: bool,
                       notes: list[str]) -> tuple[set[int], str]:
    """A tmpfs or SysV SHM file's page fault: the PMD order or base pages."""
    P = pmd_order(profile)
    # shmem_allowable_huge_orders(): the per-size knobs apply only to anonymous shmem
    # (vma_is_anon_shmem()); a tmpfs or SysV file follows its mount's huge= (SysV: the internal
    # shm mount, whose huge= is the top-level shmem_enabled), and shmem_huge_global_enabled()
    # gives a page fault the PMD order only, in every release ("if (vma) return maybe_pmd_order").
    allowed = {P} & set(file_orders(profile)) if global_on else set()
    mount = "tmpfs huge=" if p.memory == "tmpfs" else "SysV SHM: the shm mount's huge= = shmem_enabled "
    notes += unconfirmed_notes(release, [(TMPFS_MTHP, None)])
    if release.has(TMPFS_MTHP):
        notes.append(f"{'tmpfs' if p.memory == 'tmpfs' else 'SysV SHM'}: write() and fallocate() on "
                     f"{release} allocate large folios of other sizes too, page faults do not ({TMPFS_MTHP.cite})")
    if p.memory == "sysv" and any(m != "never" and o != P for o, m in p.shm_modes.items()):
        notes.append("--shmem-enabled is for anonymous shmem (memfd, MAP_SHARED|MAP_ANONYMOUS): SysV SHM "
                     "segments are files of the internal shm mount and ignore the per-size switches")
    return allowed, f"{mount}{p.huge}: a page fault gets the PMD size or base pages"


def _anon_shmem_orders(profile: Profile, release: Release, p: Pass, global_on: bool,
                       notes: list[str], reason: bool = True) -> tuple[set[int], str]:
    """Anonymous shmem's page fault: ``shmem_allowable_huge_orders()`` (6.11+), ``shmem_is_huge()`` before."""
    page, P = profile.page_size, pmd_order(profile)
    notes += unconfirmed_notes(release, [(SHMEM_MTHP, None)])
    if release.has(SHMEM_MTHP) and p.huge in ("deny", "force"):
        # shmem_allowable_huge_orders(): "if (shmem_huge == SHMEM_HUGE_DENY) return 0;
        # if (shmem_huge == SHMEM_HUGE_FORCE) return READ_ONCE(huge_shmem_orders_inherit);"
        allowed = {o for o, m in p.shm_modes.items() if m == "inherit"} if p.huge == "force" else set()
        if p.huge == "force" and allowed - {P}:  # shmem_valid_huge(): -EINVAL
            raise InputError("force takes no per-size inherit but the PMD size's (shmem_valid_huge() refuses "
                             "it with EINVAL: 'Do not override huge allocation policy with non-PMD sized mTHP')",
                             field="huge")
        why = (f"shmem_allowable_huge_orders(): shmem_enabled {p.huge}: "
               + ("only the sizes set to inherit, the per-size always/within_size/advise ignored"
                  if p.huge == "force" else "no THP for any shmem"))
    elif release.has(SHMEM_MTHP):
        allowed = _allowed(p.shm_modes, ("always", "within_size"), "advise", p.madvise, global_on)
        why = _why(page, "shmem_allowable_huge_orders(): shmem_enabled " + p.huge, p.madvise, p.shm_modes) if reason else ""
    else:  # shmem_is_huge() before 6.11: shmem_enabled alone
        if any(m != ("inherit" if o == P else "never") for o, m in p.shm_modes.items()):
            notes.append(f"kernel {release} has no per-size shmem_enabled (it came in 6.11): the per-size "
                         "modes are ignored, shmem_enabled decides")
        allowed = {P} & set(file_orders(profile)) if global_on else set()
        why = f"shmem_is_huge(): shmem_enabled {p.huge}"
    return allowed, why


def allowed_orders(profile: Profile, release: Release, p: Pass, notes: list[str], reason: bool = True) -> tuple[set[int], str]:
    """Stage 2: the orders a fault in this VMA may get, and why (the per-size part of why only with
    ``reason``: most callers want the orders alone, and that text is most of a call's cost).

    ``thp_vma_allowable_orders()`` (anon) and ``shmem_allowable_huge_orders()`` (shmem, tmpfs),
    then ``thp_vma_suitable_order()``'s file-offset alignment for shmem.
    """
    page = profile.page_size
    P = pmd_order(profile)
    allowed: set[int] = set()
    # The top-level switch that per-size "inherit" follows: enabled (anon), or shmem_enabled / huge=.
    # deny/force (shmem_enabled's testing modes) override every mount (shmem_huge_global_enabled()).
    shmem_global_on = p.huge in ("always", "within_size", "force") or (p.huge == "advise" and p.madvise)
    if p.nohugepage:
        return allowed, "MADV_NOHUGEPAGE: vma_thp_disabled() allows no THP"
    if p.stack and release.has(MAP_STACK_NOHUGEPAGE):
        return allowed, f"MAP_STACK sets VM_NOHUGEPAGE on {release}: no THP ({MAP_STACK_NOHUGEPAGE.cite})"
    anon_global_on = p.top_level == "always" or (p.madvise and p.top_level != "never")
    if not p.shmem and not release.has(MTHP_ANON):
        # hugepage_vma_check() before 6.8: no per-size switch, the top level and MADV_HUGEPAGE alone.
        if any(m != ("inherit" if o == P else "never") for o, m in p.anon_modes.items()):
            notes.append(f"kernel {release} has no per-size THP switch (hugepages-<size>kB/enabled came in 6.8, "
                         f"{MTHP_ANON.cite}): the per-size modes are ignored, the top-level switch decides")
        why = f"hugepage_vma_check(): top-level {p.top_level}, {'MADV_HUGEPAGE' if p.madvise else 'no MADV_HUGEPAGE'}"
        return ({P} if anon_global_on else set()), why
    if not p.shmem:
        allowed = _allowed(p.anon_modes, ("always",), "madvise", p.madvise, anon_global_on)
        why = _why(page, "thp_vma_allowable_orders(): top-level " + p.top_level, p.madvise, p.anon_modes) if reason else ""
        return allowed, why
    if p.memory in ("tmpfs", "sysv"):
        allowed, why = _file_fault_orders(profile, release, p, shmem_global_on, notes)
    else:
        allowed, why = _anon_shmem_orders(profile, release, p, shmem_global_on, notes, reason)
    if p.huge == "within_size" or "within_size" in p.shm_modes.values():
        notes.append("within_size: the file is taken to end where the VMA ends, so every order that fits the VMA also fits i_size")
    # thp_vma_suitable_order() for files: (vm_start >> PAGE_SHIFT) - vm_pgoff aligned to the order.
    misaligned = {o for o in allowed if ((p.start - p.file_offset) // page) % (1 << o)}
    if misaligned:
        notes.append("file offset and VMA start disagree in alignment for "
                     + ", ".join(fmt_size(page << o) for o in sorted(misaligned)) + ": those sizes are never used")
        allowed -= misaligned
    return allowed, why


def check_release_has_switches(release: Release, settings: ThpSettings, fields: dict[str, str]) -> None:
    """Per-size switches asked of a release without them are refused, with the way to say it there."""
    if settings.enabled and not release.has(MTHP_ANON):
        raise InputError(f"is a per-size switch, and kernel {release} has none (hugepages-<size>kB/enabled came in "
                         "6.8): there the top-level switch decides, say --top-level always, or --top-level madvise "
                         "with --madvise", field=fields["enabled"])
    if settings.shmem_enabled and not release.has(SHMEM_MTHP):
        raise InputError(f"is a per-size switch, and kernel {release} has none (per-size shmem_enabled came in "
                         "6.11): there shmem_enabled decides, say --huge always", field=fields["shmem_enabled"])
