"""The command line: parses options, calls one ``compute_*``, renders its result.

The only module that touches stdout, stderr and exit codes.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hugecalc import __version__
from hugecalc.errors import HugecalcError, InputError, VerifyMismatch
from hugecalc.profiles import DEFAULT_PROFILE, Profile, bundled_profiles, load_profile
from hugecalc.releases import NEWEST, Release, parse_release
from hugecalc.units import fmt_bytes, fmt_size, parse_size


class _UserError(click.ClickException):
    """A HugecalcError on its way out: message to stderr, its own exit code."""

    def __init__(self, error: HugecalcError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HugecalcError as e:
            raise _UserError(e) from e


class Size(click.ParamType):
    """A size spelled like the kernel's memparse (4096, 0x1000, 64K, 2M, 1G, 2MiB); as an
    address (``positive=False``) zero is allowed too."""

    def __init__(self, name: str = "SIZE", positive: bool = True) -> None:
        self.name, self.positive = name, positive

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        try:
            n = parse_size(value, param.opts[0] if param else self.name.lower())
        except InputError as e:
            self.fail(str(e), param, ctx)
        if self.positive and n <= 0:
            self.fail(f"{value!r} must be greater than zero", param, ctx)
        return n


SIZE = Size()
ADDR = Size("ADDR", positive=False)  # hex (0x7f0000000000), decimal, or a size spelling (1G)


def console() -> Console:
    """stdout: Rich on a terminal, plain text elsewhere (and with NO_COLOR)."""
    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 120))
    return Console(width=width, highlight=False)


def common_options(fn: Callable) -> Callable:
    """--profile, --kernel, --json, --explain: every command takes them."""

    @click.option("--profile", "profile_name", metavar="NAME|PATH", default=None,
                  help=f"Machine profile: a bundled name (default {DEFAULT_PROFILE}) or a YAML file.")
    @click.option("--kernel", "kernel", metavar="X.Y", default=None,
                  help=f"Kernel release whose rules apply (default {NEWEST[0]}.{NEWEST[1]}, the newest modelled).")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
    @click.option("--explain", is_flag=True, help="Show how each figure was derived and the kernel rule.")
    @functools.wraps(fn)
    def wrapper(profile_name: str | None, kernel: str | None, as_json: bool, explain: bool, **kw: Any) -> Any:
        profile = load_profile(profile_name)
        release = parse_release(kernel)
        return fn(profile=profile, release=release, as_json=as_json, explain=explain, **kw)

    return wrapper


def emit(result: Any, as_json: bool, explain: bool, draw: Callable[[Console], None]) -> None:
    from hugecalc.render import print_explain, print_notes, to_json

    if as_json:
        click.echo(to_json(result, explain))
        return
    out = console()
    draw(out)
    print_notes(out, result)
    if explain:
        print_explain(out, result)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="hugecalc")
def cli() -> None:
    """A what-if calculator for Linux kernel memory: the numbers the kernel would produce.

    \b
    Examples:
      hugecalc vmemmap --pages 1024G               # HVO savings for a 1 TiB pool, 2M vs 1G
      hugecalc vmemmap --pages 512 --hugepage-size 1G --kernel 5.15 --explain
      hugecalc pgtable --vsize 64G --touch-stride 2M --after dontneed
      hugecalc mthp --size 64k                     # what 64K mTHP does to a 1 GiB memset
      hugecalc hgm --hugepage-size 1G --path 4K,2M,1G
      hugecalc profiles arm64-4k
      sudo hugecalc verify mthp --size 64k         # predicted beside the running kernel
    """


# --- vmemmap ---------------------------------------------------------------------------------


def _pool(text: str) -> tuple[int | None, int | None]:
    """``--pages``: a size (``1024G``) or, with no unit, a count of hugepages (``512``)."""
    stripped = text.strip()
    if stripped.isdigit():
        count = int(stripped)
        if count <= 0:
            raise InputError(f"--pages {text}: the number of hugepages must be greater than zero")
        return None, count
    size = parse_size(text, "--pages")
    if size <= 0:
        raise InputError(f"--pages {text}: the pool size must be greater than zero")
    return size, None


@cli.command()
@click.option("--pages", "pages", required=True, metavar="SIZE|COUNT",
              help="Pool: a total size (1024G) or, without a unit, a number of hugepages (512).")
@click.option("--hugepage-size", "hugepage_sizes", type=SIZE, multiple=True,
              help="Hugepage size (repeatable). Default: every size the profile supports.")
@click.option("--struct-page-size", type=int, default=None, metavar="BYTES",
              help="sizeof(struct page) (default: the profile's, usually 64).")
@click.option("--devdax", is_flag=True, help="Device-DAX compound pages instead of hugetlb (keeps the tail page).")
@click.option("--layout", type=click.Choice(["packed", "scattered"]), default="packed", show_default=True,
              help="packed: the pool is physically contiguous; scattered: every hugepage's vmemmap "
                   "needs PMD splits of its own (worst case).")
@common_options
def vmemmap(profile: Profile, release: Release, as_json: bool, explain: bool, pages: str,
            hugepage_sizes: tuple[int, ...], struct_page_size: int | None, devdax: bool, layout: str) -> None:
    """HugeTLB Vmemmap Optimization: the vmemmap a hugetlb pool gives back, net of page tables.

    \b
    Examples:
      hugecalc vmemmap --pages 1024G
      hugecalc vmemmap --pages 1024G --hugepage-size 2M --kernel 5.14 --explain
      hugecalc vmemmap --pages 64 --hugepage-size 1G --json | jq '.rows[0].saved_bytes'
      hugecalc vmemmap --pages 16G --profile arm64-64k --kernel 6.2
      hugecalc vmemmap --pages 1T --struct-page-size 72
    """
    from hugecalc.calc.vmemmap import compute_vmemmap
    from hugecalc.render import print_header, transposed_table

    pool_bytes, count = _pool(pages)
    result = compute_vmemmap(
        profile, release, pool_bytes=pool_bytes, hugepage_count=count,
        hugepage_sizes=list(hugepage_sizes), struct_page_bytes=struct_page_size,
        devdax=devdax, layout=layout,  # type: ignore[arg-type]
    )

    def draw(out: Console) -> None:
        pool = fmt_bytes(pool_bytes) if pool_bytes else f"{count} hugepages of each size"
        print_header(out, result, f"{'device-DAX vmemmap' if devdax else 'HVO'} for a pool of {pool}")
        out.print(transposed_table(result.rows, key="hugepage_size_bytes", skip=("reason",)))
        reasons: dict[str, list[str]] = {}
        for row in result.rows:
            if row.reason:
                reasons.setdefault(row.reason, []).append(fmt_size(row.hugepage_size_bytes))
        for reason, sizes in reasons.items():
            out.print(Text(f"why not ({', '.join(sizes)}): {reason}"))

    emit(result, as_json, explain, draw)


# --- pgtable ---------------------------------------------------------------------------------




def pgtable_options(fn: Callable) -> Callable:
    """The mapping and touch options `pgtable` and `verify pgtable` share."""
    for decorator in reversed((
        click.option("--vsize", type=SIZE, default=None, help="Size of the mapping."),
        click.option("--vma-start", type=ADDR, default=None,
                     help="Start address (default: aligned to the span of the smallest table holding it)."),
        click.option("--touch-stride", type=SIZE, default=None,
                     help="Touch one byte every SIZE bytes (default: every base page)."),
        click.option("--touch-fraction", type=click.FloatRange(0, 1), default=None,
                     help="Touch a random fraction F of the base pages (each page independently)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for --touch-fraction."),
        click.option("--touch-file", type=click.File("r"), default=None,
                     help="Touch the addresses or ranges (ADDR or ADDR-END) listed, one per line; - for stdin."),
        click.option("--backing", default="anon", show_default=True,
                     help="anon, thp (PMD-mapped THP), or hugetlb-SIZE (hugetlb-2M, hugetlb-1G, ...)."),
        click.option("--after", type=click.Choice(["dontneed", "free"]), default=None,
                     help="Also give what remains after madvise(MADV_DONTNEED|MADV_FREE) of the whole mapping."),
    )):
        fn = decorator(fn)
    return fn


def _touches(profile: Profile, vsize: int | None, vma_start: int | None, backing: str,
             touch_stride: int | None, touch_fraction: float | None, seed: int, touch_file: Any) -> tuple[Any, int | None]:
    """The touch pattern, and the mapping's start (a touch file's addresses are absolute)."""
    from hugecalc.calc.pgtable import Backing, Touches, _mapping_bounds, parse_touch_file

    if sum(x is not None for x in (touch_stride, touch_fraction, touch_file)) > 1:
        raise InputError("use one of --touch-stride, --touch-fraction and --touch-file")
    if vsize is None:
        raise InputError("--vsize is required (or use --worst-case or --pid)")
    if touch_file is None:
        return Touches(stride=touch_stride, fraction=touch_fraction, seed=seed), vma_start
    start = _mapping_bounds(profile, vsize, vma_start, Backing(profile, backing))
    return Touches(intervals=parse_touch_file(touch_file.read(), start, start + vsize)), start


@cli.command()
@pgtable_options
@click.option("--shared-by", type=int, default=1, show_default=True,
              help="MAP_SHARED hugetlb: number of processes mapping it (PMD-table sharing).")
@click.option("--worst-case", is_flag=True, help="The per-process maximum: all user address space populated.")
@click.option("--pid", type=int, default=None, help="A live process: its present pages' tables beside its VmPTE.")
@common_options
def pgtable(profile: Profile, release: Release, as_json: bool, explain: bool, vsize: int | None,
            vma_start: int | None, touch_stride: int | None, touch_fraction: float | None, seed: int,
            touch_file: Any, backing: str, after: str | None, shared_by: int, worst_case: bool,
            pid: int | None) -> None:
    """Page tables a mapping costs, level by level, and what madvise() leaves behind.

    Counts what /proc/PID/status VmPTE counts: PTE, PMD and PUD tables (not the PGD, nor LA57 P4D tables).

    \b
    Examples:
      hugecalc pgtable --vsize 64G --touch-stride 2M
      hugecalc pgtable --vsize 1T --touch-fraction 0.1 --seed 1 --after dontneed
      hugecalc pgtable --vsize 4G --backing thp --after dontneed --explain
      hugecalc pgtable --vsize 16G --backing hugetlb-2M --shared-by 100
      hugecalc pgtable --worst-case --profile i386
      hugecalc pgtable --pid $$
      printf '0x8000000000\n0x8000200000-0x8000400000\n' | hugecalc pgtable --vsize 2G --vma-start 0x8000000000 --touch-file -
    """
    from hugecalc.calc import pgtable as calc
    from hugecalc.render import list_table, print_header

    if worst_case or pid is not None:
        if worst_case and pid is not None:
            raise InputError("use either --worst-case or --pid")
        if worst_case:
            result = calc.compute_worst_case(profile, release)

            def draw(out: Console) -> None:
                print_header(out, result, f"worst case: all {fmt_bytes(profile.user_va_bytes)} of user space")
                out.print(list_table(result.levels, skip=("tables_after",) + (
                    ("in_vmpte",) if "p4d" not in [r.level for r in result.levels] else ())))
                out.print(f"total as VmPTE counts {fmt_bytes(result.page_table_bytes)}")
                out.print(Text("Documentation/mm/pte_ref.rst (2022 RFC) figures, for comparison:"))
                for ref in result.pte_ref:
                    out.print(Text(f"  {ref['case']}: PTE {fmt_bytes(ref['pte_bytes'])}, "
                                   f"PMD {fmt_bytes(ref['pmd_bytes'])}"))

            return emit(result, as_json, explain, draw)
        from hugecalc import host

        vmas = []
        for lo, hi, kps, name in host.process_mappings(pid, profile.page_size):
            if lo >= profile.user_va_bytes:
                continue  # [vsyscall]: kernel address space, no user page tables
            s, e = host.present_intervals(pid, lo, hi, profile.page_size)
            vmas.append((lo, hi, kps, name, s, e))
        result = calc.compute_process(profile, release, pid, vmas, host.vm_pte_bytes(pid))

        def draw(out: Console) -> None:
            print_header(out, result, f"process {pid}: {result.vmas} mappings, "
                                      f"{fmt_bytes(result.present_bytes)} present")
            out.print(list_table(result.levels, skip=("tables_after", "in_vmpte")))
            out.print(f"predicted {fmt_bytes(result.page_table_bytes)}; VmPTE {fmt_bytes(result.vm_pte_bytes)}")

        return emit(result, as_json, explain, draw)

    touches, vma_start = _touches(profile, vsize, vma_start, backing, touch_stride, touch_fraction, seed, touch_file)
    result = calc.compute_pgtable(profile, release, vsize=vsize, vma_start=vma_start, touches=touches,
                                  backing=backing, after=after, shared_by=shared_by)

    def draw(out: Console) -> None:
        i = result.inputs
        print_header(out, result, f"{fmt_bytes(vsize)} {backing} mapping at {i['vma_start']:#x}")
        skip = (("in_vmpte",) if "p4d" not in result.tables else ()) + (("tables_after",) if after is None else ())
        out.print(list_table(result.levels, skip=skip))
        out.print(f"page tables {fmt_bytes(result.page_table_bytes)} (as VmPTE counts; the top-level "
                  f"{profile.levels[0].name} is not counted) for {fmt_bytes(result.populated_bytes)} populated: "
                  f"{result.overhead_share * 100:.3f}%")
        if result.page_table_bytes_after is not None:
            out.print(f"after MADV_{after.upper()}: {fmt_bytes(result.page_table_bytes_after)}")
        if result.shared_page_table_bytes is not None:
            out.print(f"{shared_by} processes together: {fmt_bytes(result.shared_page_table_bytes)} of page tables")
        if result.compare:
            out.print(Text("Same mapping and touches, other backings:"))
            out.print(list_table(result.compare))

    emit(result, as_json, explain, draw)


# --- hgm -------------------------------------------------------------------------------------


def _sizes(text: str, what: str) -> list[int]:
    return [parse_size(part, what) for part in text.split(",") if part.strip()] or [parse_size(text, what)]


@cli.command()
@click.option("--hugepage-size", type=SIZE, default=None,
              help="Hugetlb page size (default: the profile's largest, 1G on x86-64).")
@click.option("--path", "path_text", default=None, metavar="SIZE,SIZE[,...]",
              help="Mapping sizes from small to large: 4K,1G collapses 4K straight to 1G; 4K,2M,1G goes "
                   "through 2M (default: base page, hugepage). For map/unmap: one size.")
@click.option("--scheme", "schemes", multiple=True,
              help="thp-like, head-only, hstate-level, folio, folio-no-page-mapcount (repeatable; "
                   "default: the three HGM proposals).")
@click.option("--operation", type=click.Choice(["collapse", "split", "map", "unmap"]), default="collapse",
              show_default=True, help="split walks --path from large to small (MADV_SPLIT).")
@click.option("--guest-memory", type=SIZE, default=None, help="Whole guest: how many hugepages go through it.")
@click.option("--atomic-ns", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Cost of an uncontended atomic (default: the profile's, 20).")
@click.option("--cache-miss-ns", type=click.FloatRange(min=0), default=None,
              help="Extra cost of an atomic on a line not in cache (default: the profile's, 880).")
@click.option("--entry-ns", type=click.FloatRange(min=0), default=None,
              help="Work per page-table entry mapped or unmapped (default: the profile's, 2914).")
@click.option("--invalidation-ms", type=click.FloatRange(min=0), default=None,
              help="EPT/secondary-MMU invalidation per mmu_notifier window (default: the profile's, 20).")
@common_options
def hgm(profile: Profile, release: Release, as_json: bool, explain: bool, hugepage_size: int | None,
        path_text: str | None, schemes: tuple[str, ...], operation: str, guest_memory: int | None,
        atomic_ns: float | None, cache_miss_ns: float | None, entry_ns: float | None,
        invalidation_ms: float | None) -> None:
    """HugeTLB high-granularity mapping (never merged): mapcount cost of each scheme.

    Models the HGM v2 series (James Houghton, 2023) and its review thread: the atomic operations
    each mapcount scheme needs to collapse, split, map or unmap a hugepage, which counters they
    hit, and how long vCPUs stay blocked inside the mmu_notifier window.

    \b
    Examples:
      hugecalc hgm --hugepage-size 1G --path 4K,1G
      hugecalc hgm --hugepage-size 1G --path 4K,2M,1G --guest-memory 1T
      hugecalc hgm --path 4K,2M,1G --scheme thp-like --scheme folio --explain
      hugecalc hgm --operation map --path 4K --json | jq '.schemes[].atomic_ops'
    """
    from hugecalc.calc.hgm import compute_hgm
    from hugecalc.render import list_table, print_header

    if not profile.hugetlb:
        raise InputError(f"profile {profile.name} has no hugetlb page size")
    size = hugepage_size or max(h.size for h in profile.hugetlb)
    path = _sizes(path_text, "--path") if path_text else [profile.page_size, size]
    costs = {k: v for k, v in (("atomic_ns", atomic_ns), ("cache_miss_ns", cache_miss_ns), ("entry_ns", entry_ns),
                               ("notifier_invalidation_ms", invalidation_ms)) if v is not None}
    if costs:
        profile = profile.model_copy(update={"costs": profile.costs.model_copy(update=costs)})
    result = compute_hgm(profile, release, hugepage_size=size, path=path, schemes=list(schemes),
                         operation=operation, guest_memory=guest_memory)

    def draw(out: Console) -> None:
        what = f"HGM {operation} {'->'.join(fmt_size(s) for s in path)} of a {fmt_size(size)} page"
        print_header(out, result, what)
        out.print(Text("HGM was never merged upstream: a model of " + result.series + ".", style="bold red"))
        out.print(list_table(result.schemes, skip=("steps",) + (() if guest_memory else ("guest_seconds",))))
        for sch in result.schemes:
            out.print(Text(f"{sch.scheme}, per hugepage:", style="bold"))
            out.print(list_table(sch.steps))

    emit(result, as_json, explain, draw)


# --- mthp ------------------------------------------------------------------------------------


def _size_modes(items: tuple[str, ...], option: str) -> list[tuple[int, str]]:
    out = []
    for item in items:
        size, sep, mode = item.partition("=")
        if not sep:
            raise InputError(f"{option} {item!r}: use SIZE=MODE, e.g. 64K=always")
        out.append((parse_size(size, option), mode.strip()))
    return out


def mthp_options(fn: Callable) -> Callable:
    """The configuration and pass options `mthp` and `verify mthp` share."""
    for decorator in reversed((
        click.option("--size", "sizes", type=SIZE, multiple=True, help="Shorthand for --enabled SIZE=always."),
        click.option("--enabled", "enabled", multiple=True, metavar="SIZE=MODE",
                     help="Per-size anon mode: always|inherit|madvise|never (hugepages-<size>kB/enabled)."),
        click.option("--top-level", type=click.Choice(["always", "madvise", "never"]), default="madvise",
                     show_default=True, help="transparent_hugepage/enabled, which inherit follows."),
        click.option("--madvise", is_flag=True, help="The VMA had MADV_HUGEPAGE."),
        click.option("--nohugepage", is_flag=True, help="The VMA had MADV_NOHUGEPAGE."),
        click.option("--memory", type=click.Choice(["anon", "shmem", "tmpfs"]), default="anon", show_default=True,
                     help="anon; shmem (memfd, MAP_SHARED|MAP_ANONYMOUS, SysV); tmpfs (a file on a huge= mount)."),
        click.option("--shmem-enabled", "shmem_enabled", multiple=True, metavar="SIZE=MODE",
                     help="Per-size anon shmem mode: always|inherit|within_size|advise|never."),
        click.option("--huge", type=click.Choice(["always", "within_size", "advise", "never"]), default="never",
                     show_default=True, help="shmem: the top-level shmem_enabled; tmpfs: the mount's huge=."),
        click.option("--vma-size", type=SIZE, default="1G", show_default=True, help="Size of the VMA."),
        click.option("--vma-start", type=ADDR, default=None, help="Start of the VMA (default: table-aligned)."),
        click.option("--file-offset", type=SIZE, default=None, help="shmem/tmpfs: file offset of the VMA (default 0)."),
        click.option("--touch-stride", type=SIZE, default=None, help="Touch one byte every SIZE (default: every page)."),
        click.option("--prepopulated-stride", type=SIZE, default=None,
                     help="Before the pass, one base page every SIZE was already faulted in."),
        click.option("--access", type=click.Choice(["write", "read-then-write"]), default="write", show_default=True,
                     help="Every touched page is written, or read first and then written."),
    )):
        fn = decorator(fn)
    return fn


def _mthp_kwargs(sizes: tuple[int, ...], enabled: tuple[str, ...], top_level: str, madvise: bool,
                 nohugepage: bool, memory: str, shmem_enabled: tuple[str, ...], huge: str, vma_size: int,
                 vma_start: int | None, file_offset: int | None, touch_stride: int | None,
                 prepopulated_stride: int | None, access: str) -> dict:
    return dict(
        enabled=[(s, "always") for s in sizes] + _size_modes(enabled, "--enabled"), top_level=top_level,
        madvise=madvise, nohugepage=nohugepage, memory=memory,
        shmem_enabled=_size_modes(shmem_enabled, "--shmem-enabled"), huge=huge, vma_size=vma_size,
        vma_start=vma_start, file_offset=file_offset or 0, touch_stride=touch_stride,
        prepopulated_stride=prepopulated_stride, access=access,
    )


def _bar(value: int, top: int, width: int = 24) -> str:
    """A log-scale bar: values here span many orders of magnitude."""
    import math

    if value <= 0:
        return ""
    return "█" * max(1, round(width * math.log10(value + 1) / math.log10(top + 1)))


@cli.command()
@mthp_options
@click.option("--khugepaged", is_flag=True,
              help="Also: which PMD ranges khugepaged's mTHP collapse (not in a released kernel) turns into which size.")
@click.option("--max-ptes-none", type=int, default=511, show_default=True, help="khugepaged/max_ptes_none.")
@click.option("--occupancy-file", type=click.File("r"), default=None,
              help="khugepaged occupancy: lines 'ADDR: PTE indexes' (e.g. '0x40000000: 0-15,64'); - for stdin.")
@common_options
def mthp(profile: Profile, release: Release, as_json: bool, explain: bool, khugepaged: bool, max_ptes_none: int,
         occupancy_file: Any, **options: Any) -> None:
    """Multi-size THP: which size each page fault gets, and the faults, folios, TLB entries and
    page tables that follow.

    The pass touches one byte every --touch-stride from the start of the VMA to its end, like
    memset. With no --size/--enabled, every size the profile supports is shown side by side.

    \b
    Examples:
      hugecalc mthp --size 64k                       # what 64K mTHP does to a 1 GiB memset
      hugecalc mthp                                  # every size side by side
      hugecalc mthp --size 64k --madvise             # PMD (inherit) wins on an aligned VMA
      hugecalc mthp --memory shmem --shmem-enabled 64K=always
      hugecalc mthp --memory tmpfs --huge always
      hugecalc mthp --size 64k --prepopulated-stride 1M --khugepaged --profile arm64-4k
      hugecalc mthp --vma-size 1T --size 64k --prepopulated-stride 1M --json | jq .faults
    """
    from hugecalc.calc.khugepaged import parse_occupancy
    from hugecalc.calc.mthp import compare_sizes, compute_mthp
    from hugecalc.render import list_table, print_header, transposed_summary

    kw = _mthp_kwargs(**options)
    comparing = not (kw["enabled"] or (kw["memory"] != "anon" and (kw["shmem_enabled"] or kw["huge"] != "never"))
                     or kw["memory"] == "tmpfs")
    if comparing and not khugepaged:
        result = compare_sizes(profile, release, **kw)

        def draw(out: Console) -> None:
            print_header(out, result, f"{kw['memory']} {fmt_bytes(kw['vma_size'])} pass, every size alone")
            top = max(r.faults for r in result.sizes)
            bars = [_bar(r.faults, top) for r in result.sizes]
            out.print(list_table(result.sizes, extra_columns=[("faults (log scale)", bars)]))

        return emit(result, as_json, explain, draw)
    occupancy = parse_occupancy(occupancy_file.read(), profile) if occupancy_file else None
    result = compute_mthp(profile, release, khugepaged=khugepaged, max_ptes_none=max_ptes_none,
                          occupancy=occupancy, **kw)

    def draw(out: Console) -> None:
        i = result.inputs
        print_header(out, result, f"{i['memory']} {fmt_bytes(i['vma_size_bytes'])} VMA at {i['vma_start']:#x}, "
                                  f"{i['access']} every {fmt_bytes(i['touch_stride_bytes'])}")
        sizes = ", ".join(fmt_size(b) for b in result.fault_orders_bytes) or "base pages only"
        out.print(Text(f"a fault may get: {sizes}"))
        out.print(transposed_summary(result))
        out.print(list_table(result.folios))
        if result.khugepaged:
            out.print(Text("khugepaged mTHP collapse (not in a released kernel):", style="bold"))
            for d in result.khugepaged:
                collapsed = ", ".join(f"{c.count:,} x {fmt_size(c.size_bytes)}" for c in d.collapses) or "nothing"
                out.print(Text(f"  {d.design}: of {d.pmd_ranges:,} PMD ranges, {collapsed}; "
                               f"{d.untouched_ranges:,} left as they are" + (f" ({d.note})" if d.note else "")))

    emit(result, as_json, explain, draw)


# --- profiles --------------------------------------------------------------------------------


@cli.command()
@click.argument("name", required=False)
@common_options
def profiles(profile: Profile, release: Release, as_json: bool, explain: bool, name: str | None) -> None:
    """List the bundled machine profiles, or show one (NAME, or --profile PATH) in full.

    \b
    Examples:
      hugecalc profiles
      hugecalc profiles arm64-16k
      hugecalc profiles --profile ./my-machine.yaml --json
    """
    import json

    explicit = name is not None or _given("profile_name")
    if name is not None:
        profile = load_profile(name)
    if not explicit:
        loaded = [load_profile(n) for n in sorted(bundled_profiles())]
        if as_json:
            click.echo(json.dumps({**_envelope(profile, release, {"list": True}),
                                   "profiles": [p.model_dump(mode="json") for p in loaded]}, indent=2))
            return
        table = Table(title="Bundled profiles (hugecalc profiles NAME for details)", title_justify="left")
        for col in ("name", "arch", "page", "levels", "hugetlb sizes", "description"):
            table.add_column(col)
        for p in loaded:
            table.add_row(p.name, p.arch.value, fmt_size(p.page_size), str(len(p.levels)),
                          " ".join(fmt_size(h.size) for h in p.hugetlb), p.description)
        console().print(table)
        return
    geometry = [
        {"level": lvl.name, "entries": lvl.entries, "entry_bytes": lvl.entry_bytes,
         "table_bytes": lvl.bytes_per_table, "entry_span_bytes": profile.span_bytes(lvl.name),
         "table_span_bytes": profile.table_span_bytes(lvl.name)}
        for lvl in profile.levels
    ]
    if as_json:
        click.echo(json.dumps({**_envelope(profile, release, {"name": profile.name}),
                               "definition": profile.model_dump(mode="json"), "geometry": geometry}, indent=2))
        return
    out = console()
    out.print(Text(f"{profile.name}: {profile.description}", style="bold"))
    out.print(f"arch {profile.arch.value}, {profile.bits}-bit, PAGE_SIZE {fmt_size(profile.page_size)}, "
              f"sizeof(struct page) {profile.struct_page_bytes}, user address space "
              f"{fmt_bytes(profile.user_va_bytes)} ({profile.user_va_bytes:#x})")
    t = Table(title="Page-table levels", title_justify="left")
    for col in ("level", "entries", "entry bytes", "table bytes", "one entry maps", "one table maps"):
        t.add_column(col, justify="right")
    for g in geometry:
        t.add_row(g["level"], f"{g['entries']:,}", str(g["entry_bytes"]), fmt_bytes(g["table_bytes"]),
                  fmt_bytes(g["entry_span_bytes"]), fmt_bytes(g["table_span_bytes"]))
    out.print(t)
    t = Table(title="Hugetlb sizes", title_justify="left")
    for col in ("size", "mapped by", "entries"):
        t.add_column(col)
    for h in profile.hugetlb:
        t.add_row(fmt_size(h.size), h.mapping, str(h.contig))
    out.print(t)
    out.print(f"contiguous PTE block: {profile.cont_pte_entries} entries "
              f"({fmt_bytes(profile.cont_pte_entries * profile.page_size)}); contiguous PMD block: "
              f"{profile.cont_pmd_entries} entries; vmemmap PMD-mapped: {'yes' if profile.vmemmap_pmd_mapped else 'no'}")


def _given(param: str) -> bool:
    """Whether the user gave this option (rather than its default)."""
    source = click.get_current_context().get_parameter_source(param)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _envelope(profile: Profile, release: Release, inputs: dict) -> dict:
    from hugecalc.result import SCHEMA_VERSION

    return {"schema_version": SCHEMA_VERSION, "command": "profiles", "profile": profile.name,
            "kernel": str(release), "inputs": inputs}


# --- verify ----------------------------------------------------------------------------------


@cli.group(cls=_Group)
def verify() -> None:
    """Run a real experiment on the running kernel (root) and print predicted beside measured.

    Every setting changed is restored, also on errors and Ctrl-C; no hugepage is left allocated.
    Exit 1 when a measurement differs from the prediction.
    """


@verify.command("vmemmap")
@click.option("--hugepage-size", type=SIZE, default="2M", show_default=True, help="Hugepage size to allocate.")
@click.option("--count", type=click.IntRange(min=1), default=16, show_default=True,
              help="Number of hugepages to allocate.")
@common_options
def verify_vmemmap_cmd(profile: Profile, release: Release, as_json: bool, explain: bool,
                       hugepage_size: int, count: int) -> None:
    """Allocate hugepages with HVO on and check the vmemmap freed against nr_memmap_pages.

    \b
    Example:
      sudo hugecalc verify vmemmap --hugepage-size 2M --count 64
    """
    from hugecalc.verify import verify_vmemmap

    notes: list[str] = []
    release = _running_release(release, notes)
    result = verify_vmemmap(profile, release, hugepage_size, count, notes)
    _emit_verify(result, as_json, explain, "vmemmap", "vmemmap differs")


@verify.command("pgtable")
@pgtable_options
@common_options
def verify_pgtable_cmd(profile: Profile, release: Release, as_json: bool, explain: bool, vsize: int | None,
                       vma_start: int | None, touch_stride: int | None, touch_fraction: float | None, seed: int,
                       touch_file: Any, backing: str, after: str | None) -> None:
    """Map and touch in a child process, and check its VmPTE against the prediction.

    \b
    Examples:
      sudo hugecalc verify pgtable --vsize 64G --touch-stride 2M --after dontneed
      sudo hugecalc verify pgtable --vsize 1G --touch-fraction 0.01 --seed 7
      sudo hugecalc verify pgtable --vsize 256M --backing thp --after dontneed
      sudo hugecalc verify pgtable --vsize 4G --backing hugetlb-2M
    """
    from hugecalc.verify import verify_pgtable

    notes: list[str] = []
    release = _running_release(release, notes)
    touches, vma_start = _touches(profile, vsize, vma_start, backing, touch_stride, touch_fraction, seed, touch_file)
    result = verify_pgtable(profile, release, vsize=vsize, vma_start=vma_start, touches=touches,
                            backing=backing, after=after, notes=notes)
    _emit_verify(result, as_json, explain, "pgtable", "page tables differ")


@verify.command("mthp")
@mthp_options
@common_options
def verify_mthp_cmd(profile: Profile, release: Release, as_json: bool, explain: bool, **options: Any) -> None:
    """Run the pass on the running kernel: faults (getrusage) and folios by size (stats/).

    Sets the per-size sysfs switches for the pass and restores every one of them, also on
    errors and Ctrl-C; prepopulated pages are faulted with THP off, so they are base pages.

    \b
    Examples:
      sudo hugecalc verify mthp --size 64k
      sudo hugecalc verify mthp --size 64k --prepopulated-stride 1M --vma-size 256M
      sudo hugecalc verify mthp --madvise --access read-then-write
      sudo hugecalc verify mthp --memory shmem --shmem-enabled 64K=always
      sudo hugecalc verify mthp --memory tmpfs --huge always
    """
    from hugecalc.verify import verify_mthp

    notes: list[str] = []
    release = _running_release(release, notes)
    result = verify_mthp(profile, release, _mthp_kwargs(**options), notes)
    _emit_verify(result, as_json, explain, "mthp", "faults or folios differ")


def _emit_verify(result: Any, as_json: bool, explain: bool, what: str, mismatch: str) -> None:
    """Predicted beside measured; exit 1 (VerifyMismatch) when any check differs."""
    from hugecalc.render import list_table, print_header

    def draw(out: Console) -> None:
        print_header(out, result, f"verify {what} on {result.inputs['running_kernel']}")
        out.print(list_table(result.checks))

    emit(result, as_json, explain, draw)
    if not result.ok:
        raise VerifyMismatch(f"measured {mismatch} from the prediction")


def _running_release(release: Release, notes: list[str]) -> Release:
    """verify predicts for the running kernel unless --kernel says otherwise."""
    from hugecalc import host

    if _given("kernel"):
        return release
    running = host.running_release()
    try:
        return parse_release(running)
    except InputError:
        notes.append(f"the running kernel {running} is outside the modelled releases; using {release}")
        return release


def main() -> None:
    from hugecalc import calc

    calc.on_slow_compile = lambda msg: click.echo(f"hugecalc: {msg}", err=True)
    try:
        cli(prog_name="hugecalc", standalone_mode=True)
    except Exception as e:  # a bug, not bad input: one line, the traceback only on request
        if os.environ.get("HUGECALC_DEBUG"):
            raise
        click.echo(f"hugecalc: internal error: {type(e).__name__}: {e} "
                   "(set HUGECALC_DEBUG=1 for the traceback, and please report it)", err=True)
        sys.exit(1)
