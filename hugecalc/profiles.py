"""Machine/arch profiles: YAML in ``configs/`` read into validated pydantic models.

This is the only module that reads YAML.  Everything after :func:`load_profile` is typed.
"""

from __future__ import annotations

import functools

from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from hugecalc.errors import ProfileError
from hugecalc.result import Model, Result, field
from hugecalc.units import fmt_size, is_power_of_2, parse_size

DEFAULT_PROFILE = "x86-64"
LEVEL_ORDER = ("pgd", "p4d", "pud", "pmd", "pte")


class Arch(str, Enum):
    """Kernel architecture names, as the release rules know them."""

    x86_64 = "x86_64"
    i386 = "i386"
    arm64 = "arm64"
    riscv64 = "riscv64"
    s390 = "s390"
    loongarch64 = "loongarch64"
    ppc64 = "ppc64"


def _size(value: object) -> object:
    """YAML sizes may be written like memparse (``4K``, ``2M``) or as integers."""
    return parse_size(value, "size") if isinstance(value, str) else value


class Level(Model):
    """One page-table level.  Spans are derived from the levels below it."""

    name: Literal["pgd", "p4d", "pud", "pmd", "pte"]
    entries: int = Field(gt=0, description="entries per table (PTRS_PER_*)")
    entry_bytes: int = Field(gt=0, description="bytes per entry (sizeof(pte_t) etc.)")
    table_bytes: int | None = Field(
        default=None, description="bytes one table occupies; default entries * entry_bytes"
    )

    @model_validator(mode="after")
    def _table_holds_entries(self) -> Level:
        if self.table_bytes is not None and self.table_bytes < self.entries * self.entry_bytes:
            raise ValueError(
                f"table_bytes {self.table_bytes} is smaller than entries * entry_bytes "
                f"= {self.entries * self.entry_bytes}"
            )
        return self

    @property
    def bytes_per_table(self) -> int:
        return self.table_bytes if self.table_bytes is not None else self.entries * self.entry_bytes


class HugetlbSize(Model):
    """A hugetlb page size and how the architecture maps it."""

    size: int = Field(gt=0, description="hugepage size in bytes")
    level: Literal["pgd", "p4d", "pud", "pmd", "pte"] = Field(
        description="page-table level whose entry maps it (the kernel's PMD/PUD, or PTE for cont-PTE)"
    )
    contig: int = Field(default=1, gt=0, description="entries with the contiguous bit (1 = plain leaf)")
    requires: str | None = Field(default=None, description="a CPU extension the size needs (riscv: Svnapot)")

    _parse_size = field_validator("size", mode="before")(_size)

    @property
    def mapping(self) -> str:
        """``pmd``, ``pud``, ``cont-pte``, ``cont-pmd``: the arm64 hugetlbpage.rst vocabulary."""
        return self.level if self.contig == 1 else f"cont-{self.level}"


class Costs(Model):
    """CPU cost parameters for time estimates (``hugecalc hgm``).

    Defaults are calibrated to the HGM thread (James Houghton, "[PATCH 21/46] hugetlb: use struct
    hugetlb_pte for walk_hugetlb_range", linux-mm, 2023-01-26): a THP-like 4K->1G collapse took
    "~1 second for each 1G" on an x86 server, and was "about 30% slower overall" than head-only.
    With a 20 ns uncontended atomic, those two figures fix the per-entry work at 2914 ns and the
    extra cost of an atomic on a struct page not in cache at 880 ns (see hugecalc/calc/hgm.py).
    """

    atomic_ns: float = Field(default=20.0, gt=0, description="an uncontended atomic on a cached line")
    cache_miss_ns: float = Field(default=880.0, ge=0, description="extra cost when the line is not cached")
    entry_ns: float = Field(default=2914.0, ge=0, description="work per page-table entry mapped or unmapped")
    notifier_invalidation_ms: float = Field(
        default=20.0, ge=0, description="secondary-MMU (EPT) invalidation per mmu_notifier window (thread: 10-30 ms)"
    )
    clear_gib_per_s: float = Field(
        default=10.0, gt=0, description="one core zeroing a new folio (clear_page/folio_zero_user), GiB/s"
    )


class Profile(Model):
    """A machine: base page, page-table geometry, hugetlb sizes, struct page."""

    name: str
    description: str
    arch: Arch
    bits: Literal[32, 64]
    page_size: int = Field(description="base page size in bytes (PAGE_SIZE)")
    struct_page_bytes: int = Field(gt=0, description="sizeof(struct page)")
    levels: list[Level] = Field(min_length=2, description="page-table levels, top (pgd) to pte")
    user_va_bytes: int = Field(gt=0, description="user address space (TASK_SIZE)")
    phys_bits: int | None = Field(
        default=None, gt=0, le=64,
        description="MAX_PHYSMEM_BITS, the most physical memory the kernel can address (default: bits)",
    )
    hugetlb: list[HugetlbSize] = Field(default_factory=list, description="supported hugetlb sizes")
    preallocated_levels: list[Literal["pmd", "pud"]] = Field(
        default_factory=list,
        description="levels whose user tables every process has from the start and VmPTE counts "
                    "(i386 PAE: pgd_alloc() preallocates the PMDs), so a mapping adds none",
    )
    cont_pte_entries: int = Field(default=1, gt=0, description="PTEs per contiguous block (1 = none)")
    cont_pmd_entries: int = Field(default=1, gt=0, description="PMDs per contiguous block (1 = none)")
    tlb_coalesce_pages: int = Field(
        default=1, gt=0,
        description="hardware PTE coalescing without a kernel-managed bit (AMD: 4 or 8 pages); 1 = none",
    )
    vmemmap_pmd_mapped: bool = Field(
        description="the vmemmap is mapped with PMD leaves, so HVO must split them into PTE tables"
    )
    costs: Costs = Field(default_factory=Costs, description="CPU cost parameters for time estimates")

    _parse_sizes = field_validator("page_size", "user_va_bytes", mode="before")(_size)

    @field_validator("page_size")
    @classmethod
    def _page_size_power_of_2(cls, v: int) -> int:
        if not is_power_of_2(v) or v < 4096:
            raise ValueError(f"page_size {v} must be a power of two of at least 4096")
        return v

    @model_validator(mode="after")
    def _geometry(self) -> Profile:
        names = [lvl.name for lvl in self.levels]
        if names[0] != "pgd" or names[-1] != "pte":
            raise ValueError(f"levels must run from pgd down to pte, got {names}")
        if [n for n in LEVEL_ORDER if n in names] != names or len(set(names)) != len(names):
            raise ValueError(f"levels must be a subsequence of {list(LEVEL_ORDER)}, got {names}")
        for lvl in self.levels:
            if not is_power_of_2(lvl.entries):
                raise ValueError(f"levels.{lvl.name}.entries {lvl.entries} must be a power of two")
        if self.user_va_bytes > self.span_bytes("pgd") * self.level("pgd").entries:
            raise ValueError(
                f"user_va_bytes {self.user_va_bytes:#x} exceeds what the pgd can map "
                f"({self.span_bytes('pgd') * self.level('pgd').entries:#x})"
            )
        seen = set()
        for h in self.hugetlb:
            if h.level not in names:
                raise ValueError(f"hugetlb size {fmt_size(h.size)}: level {h.level} is not in levels {names}")
            mapped = self.span_bytes(h.level) * h.contig
            if mapped != h.size:
                raise ValueError(
                    f"hugetlb size {fmt_size(h.size)}: {h.contig} {h.level} entries map "
                    f"{fmt_size(mapped)}, not {fmt_size(h.size)}"
                )
            if h.size in seen:
                raise ValueError(f"hugetlb size {fmt_size(h.size)} is listed twice")
            seen.add(h.size)
        return self

    # Derived geometry -------------------------------------------------------------------

    def level(self, name: str) -> Level:
        for lvl in self.levels:
            if lvl.name == name:
                return lvl
        raise KeyError(name)

    def span_bytes(self, name: str) -> int:
        """Bytes of address space one *entry* at level ``name`` maps."""
        return self._spans[name]

    @functools.cached_property
    def _spans(self) -> dict[str, int]:
        """Each level's entry span, computed once (a frozen profile: the calculations ask it often)."""
        spans, span = {}, self.page_size
        for lvl in reversed(self.levels):
            spans[lvl.name] = span
            span *= lvl.entries
        return spans

    def table_span_bytes(self, name: str) -> int:
        """Bytes of address space one *table* at level ``name`` maps."""
        return self.span_bytes(name) * self.level(name).entries

    @property
    def max_phys_bytes(self) -> int:
        """The most physical memory this machine can have: 2^MAX_PHYSMEM_BITS."""
        return 1 << (self.phys_bits or self.bits)

    @functools.cached_property
    def pmd_size(self) -> int:
        """The kernel's PMD_SIZE: what one entry of the level above the PTE maps."""
        return self.span_bytes(self.levels[-2].name)

    def hugetlb_size(self, size: int) -> HugetlbSize:
        for h in self.hugetlb:
            if h.size == size:
                return h
        supported = ", ".join(fmt_size(h.size) for h in self.hugetlb) or "none"
        raise ProfileError(
            f"hugepage size {fmt_size(size)} is not supported by profile {self.name} "
            f"(supported: {supported})"
        )


@functools.lru_cache(maxsize=None)
def bundled_profiles() -> dict[str, Path]:
    """Profile name -> bundled YAML file."""
    # A source checkout (and an editable install) reads the top-level configs/ folder; a wheel
    # carries the same files as the package data hugecalc/configs (see pyproject.toml).
    folder = Path(__file__).resolve().parent.parent / "configs"
    if not folder.is_dir():
        folder = resources.files("hugecalc.configs")
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def load_profile(name_or_path: str | None = None) -> Profile:
    """A bundled profile by name (parsed once per process), or a user's YAML file (or a capture)
    by path; raises :class:`ProfileError`."""
    name = canonical_name(name_or_path or DEFAULT_PROFILE)
    if name in bundled_profiles():
        return _bundled(name)
    return _load(name)


#: Spellings users type for a bundled profile: ``uname -m`` names and the architecture alone
#: (its default page size).
ALIASES = {"x86_64": "x86-64", "amd64": "x86-64", "arm64": "arm64-4k", "aarch64": "arm64-4k",
           "riscv64": "riscv64-sv48", "i686": "i386"}


def canonical_name(name: str) -> str:
    """The bundled profile a name means (``x86_64``, ``arm64``, ``ARM64-4K``), or ``name`` unchanged
    when it names none (a path)."""
    key = name.lower()
    if key in ALIASES:
        return ALIASES[key]
    return key if key in bundled_profiles() else name


@functools.lru_cache(maxsize=None)
def _bundled(name: str) -> Profile:
    return _load(name)


def _load(name_or_path: str) -> Profile:
    import yaml  # here, not at the top: the calculations import this module for its models only

    from hugecalc.machine.trace import is_record, read_meta

    name_or_path = name_or_path or DEFAULT_PROFILE
    bundled = bundled_profiles()
    record = False  # a record file: its machine's capture is read from its footer
    if name_or_path in bundled:
        path = bundled[name_or_path]
    else:
        path = Path(name_or_path)
        record = is_record(name_or_path)
        if not (path.suffix in (".yaml", ".yml", ".json") or "/" in name_or_path or record):
            raise ProfileError(
                f"profile {name_or_path!r} is neither a bundled profile "
                f"({', '.join(sorted(bundled))}), nor 'host' (this machine), nor a path to a .yaml profile, a "
                "capture or a record"
            )
    from hugecalc.errors import InputError
    from hugecalc.files import read_text

    try:
        if record:
            data = read_meta(str(path), "--profile").get("capture")
        else:
            text = path.read_text() if name_or_path in bundled else read_text(str(path), "--profile", 1 << 20)
            data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except OSError as e:
        raise ProfileError(f"{path}: cannot read profile: {e.strerror}") from e
    except InputError as e:
        raise ProfileError(str(e).replace(f"--profile {path}: cannot read it", f"{path}: cannot read profile")) from e
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        raise ProfileError(f"{path}: invalid profile: not valid YAML: {str(e)[:200]}") from e
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: invalid profile: expected a mapping of fields at the top level")
    if data.get("kind") == "hugecalc-capture":  # a capture (hugecalc host) carries its profile
        data = data.get("profile")
        if not isinstance(data, dict):
            raise ProfileError(f"{path}: a capture without a profile")
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(part) for part in err["loc"]) or "(profile)"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {loc}: {msg}")
        raise ProfileError(f"{path}: invalid profile:\n" + "\n".join(lines)) from e


class LevelGeometry(Model):
    """One page-table level of a profile, in bytes."""

    level: str = field("Level")
    entries: int = field("Entries", "count")
    entry_bytes: int = field("Entry bytes", "bytes")
    table_bytes: int = field("Table bytes", "bytes")
    entry_span_bytes: int = field("One entry maps", "bytes")
    table_span_bytes: int = field("One table maps", "bytes")


class ProfileList(Result):
    """``hugecalc profiles``: every bundled profile."""

    profiles: list[Profile]


class ProfileShow(Result):
    """``hugecalc profiles NAME``: one profile's definition and its derived geometry."""

    definition: Profile
    geometry: list[LevelGeometry]


def geometry(profile: Profile) -> list[LevelGeometry]:
    return [LevelGeometry(level=lvl.name, entries=lvl.entries, entry_bytes=lvl.entry_bytes,
                          table_bytes=lvl.bytes_per_table, entry_span_bytes=profile.span_bytes(lvl.name),
                          table_span_bytes=profile.table_span_bytes(lvl.name))
            for lvl in profile.levels]
