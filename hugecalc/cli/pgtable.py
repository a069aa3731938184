"""``hugecalc pgtable``: the page tables a mapping costs, level by level."""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing import Any

import click

from hugecalc.cli.sweep import run_sweep, sweep_options
from hugecalc.cli.common import ADDR, AliasOption, common_options, complete_backing, emit, options, PID_MAX_LIMIT, process_from, Real, SIZE, Text
from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.releases import Release
from hugecalc.units import fmt_bytes

if TYPE_CHECKING:
    from rich.console import Console


#: The mapping and touch options ``pgtable`` and ``verify pgtable`` share.
pgtable_options = options(
    click.option("--vma-size", "--vsize", "vsize", cls=AliasOption, type=SIZE, default=None,
                 help="Size of the mapping."),
    click.option("--vma-start", type=ADDR, default=None,
                 help="Start address (default: aligned to the span of the smallest table holding it)."),
    click.option("--touch-stride", type=SIZE, default=None,
                 help="Touch one byte every SIZE bytes (default: every base page)."),
    click.option("--touch-fraction", type=Real(0, 1), default=None,
                 help="Touch a random fraction F of the base pages (each page independently)."),
    click.option("--seed", type=click.IntRange(0, (1 << 32) - 1), default=0, show_default=True, help="Seed for --touch-fraction."),
    click.option("--touch-file", type=click.File("r"), default=None,
                 help="Touch the addresses or ranges (ADDR or ADDR-END) listed, one per line; - for stdin."),
    click.option("--backing", default="anon", show_default=True, shell_complete=complete_backing,
                 help="anon, thp (PMD-mapped THP), or hugetlb-SIZE (hugetlb-2M, hugetlb-1G, ...)."),
    click.option("--after", type=click.Choice(["dontneed", "free"]), default=None,
                 help="Also give what remains after madvise(MADV_DONTNEED|MADV_FREE) of the whole mapping."),
)


def touches_from_options(profile: Profile, vsize: int | None, vma_start: int | None, backing: str,
                         touch_stride: int | None, touch_fraction: float | None, seed: int, touch_file: Any) -> tuple[Any, int | None]:
    """The touch pattern, and the mapping's start (a touch file's addresses are absolute)."""
    from hugecalc.calc.pgtable import Backing, mapping_bounds
    from hugecalc.calc.touches import Touches, parse_touch_file

    if sum(x is not None for x in (touch_stride, touch_fraction, touch_file)) > 1:
        raise InputError("use one of --touch-stride, --touch-fraction and --touch-file")
    if vsize is None:
        raise InputError("--vma-size is required (or use --worst-case or --pid)")
    if touch_file is None:
        return Touches(stride=touch_stride, fraction=touch_fraction, seed=seed), vma_start
    start = mapping_bounds(profile, vsize, vma_start, Backing(profile, backing))
    return Touches(intervals=parse_touch_file(touch_file.read(), start, start + vsize)), start


@click.command()
@pgtable_options
@click.option("--shared-by", type=click.IntRange(1, PID_MAX_LIMIT), default=1, show_default=True,
              help="MAP_SHARED hugetlb: number of processes mapping it (PMD-table sharing).")
@click.option("--worst-case", is_flag=True, help="The per-process maximum: all user address space populated.")
@click.option("--pid", type=click.IntRange(1, PID_MAX_LIMIT), default=None, help="A live process: its present pages' tables beside its VmPTE.")
@sweep_options
@common_options
def pgtable(profile: Profile, release: Release, as_json: bool, explain: bool, capture: Any, vsize: int | None,
            vma_start: int | None, touch_stride: int | None, touch_fraction: float | None, seed: int,
            touch_file: Any, backing: str, after: str | None, shared_by: int, worst_case: bool,
            pid: int | None, sweeps: tuple[str, ...], plot: str | None) -> None:
    """Page tables a mapping costs, level by level, and what madvise() leaves behind.

    Counts what /proc/PID/status VmPTE counts: PTE, PMD and PUD tables (not the PGD, nor LA57 P4D tables).

    \b
    Examples:
      hugecalc pgtable --vma-size 64G --touch-stride 2M
      hugecalc pgtable --vma-size 1T --touch-fraction 0.1 --seed 1 --after dontneed
      hugecalc pgtable --vma-size 4G --backing thp --after dontneed --explain
      hugecalc pgtable --vma-size 16G --backing hugetlb-2M --shared-by 100
      hugecalc pgtable --worst-case --profile i386
      hugecalc pgtable --pid $$
      printf '0x8000000000\\n0x8000200000-0x8000400000\\n' | hugecalc pgtable --vma-size 2G --vma-start 0x8000000000 --touch-file -
      hugecalc pgtable --vma-size 1T --sweep touch-fraction=1e-6..1x10
    """
    if sweeps:
        if worst_case or pid is not None or touch_file is not None:
            raise InputError("--sweep runs one mapping: not with --worst-case, --pid or --touch-file")
        return run_sweep("pgtable", sweeps, plot, as_json, explain, lambda doc: f"page tables, profile {doc['profile']}")
    if worst_case and pid is not None:
        raise InputError("use either --worst-case or --pid")
    if worst_case and (vsize is not None or vma_start is not None or after or backing != "anon" or shared_by != 1
                       or touch_stride or touch_fraction is not None or touch_file is not None):
        raise InputError("--worst-case is the whole address space, fully populated: it takes no mapping, touch, "
                         "--backing, --after or --shared-by option")
    if worst_case:
        return _worst_case(profile, release, as_json, explain)
    if pid is not None:
        if shared_by != 1 or vsize is not None or touch_stride or touch_fraction is not None or touch_file:
            raise InputError("--pid takes the process's own mappings and present pages: --vma-size, --touch-* and "
                             "--shared-by do not apply")
        return _process(profile, release, as_json, explain, capture, pid, after, backing)
    from hugecalc.calc.pgtable import compute_pgtable
    from hugecalc.render import list_table, print_header

    touches, vma_start = touches_from_options(profile, vsize, vma_start, backing, touch_stride, touch_fraction,
                                              seed, touch_file)
    result = compute_pgtable(profile, release, vsize=vsize, vma_start=vma_start, touches=touches,
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


def _worst_case(profile: Profile, release: Release, as_json: bool, explain: bool) -> None:
    from hugecalc.calc.tables import compute_worst_case
    from hugecalc.render import list_table, print_header

    result = compute_worst_case(profile, release)

    def draw(out: Console) -> None:
        print_header(out, result, f"worst case: all {fmt_bytes(profile.user_va_bytes)} of user space")
        out.print(list_table(result.levels, skip=("tables_after",) + (
            ("in_vmpte",) if "p4d" not in [r.level for r in result.levels] else ())))
        out.print(f"total as VmPTE counts {fmt_bytes(result.page_table_bytes)}")
        out.print(Text("Documentation/mm/pte_ref.rst (2022 RFC) figures, for comparison:"))
        for ref in result.pte_ref:
            out.print(Text(f"  {ref['case']}: PTE {fmt_bytes(ref['pte_bytes'])}, "
                           f"PMD {fmt_bytes(ref['pmd_bytes'])}"))

    emit(result, as_json, explain, draw)


def _process(profile: Profile, release: Release, as_json: bool, explain: bool, capture: Any, pid: int,
             after: str | None, backing: str) -> None:
    from hugecalc.calc.process import compute_process
    from hugecalc.capture import decode_runs
    from hugecalc.render import list_table, print_header

    capture, proc, profile, release = process_from(capture, pid, profile, release)
    page = capture.page_size
    vmas = []
    for v in proc.vmas:
        starts, ends = decode_runs(v.present_runs, v.start, page)
        vmas.append({"start": v.start, "end": v.end, "kind": v.kind, "kernel_page_bytes": v.kernel_page_bytes,
                     "starts": starts, "ends": ends})
    result = compute_process(profile, release, pid, vmas, proc.vm_pte_bytes, after=after, backing=backing)

    def draw(out: Console) -> None:
        print_header(out, result, f"process {pid} ({proc.comm}): {result.vmas} mappings, "
                                  f"{fmt_bytes(result.present_bytes)} present")
        out.print(list_table(result.levels, skip=("in_vmpte",) + (() if after else ("tables_after",))))
        out.print(f"predicted {fmt_bytes(result.page_table_bytes)}; VmPTE {fmt_bytes(result.vm_pte_bytes)}"
                  + (f"; after MADV_{after.upper()} {fmt_bytes(result.page_table_bytes_after)}" if after else ""))
        if result.page_table_bytes_backing is not None:
            out.print(f"with --backing {backing}: page tables {fmt_bytes(result.page_table_bytes_backing)}, "
                      f"memory populated {fmt_bytes(result.populated_bytes_backing)} "
                      f"(now {fmt_bytes(result.present_bytes)})")

    emit(result, as_json, explain, draw)
