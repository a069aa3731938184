"""``hugecalc pgtable``: the page tables a mapping costs, level by level."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from hugecalc.calc.pgtable import PgtableResult
from hugecalc.calc.process import ProcessResult
from hugecalc.calc.tables import WorstCaseResult
from hugecalc.calc.tracereplay import TraceResult
from hugecalc.cli.command import Command, run
from hugecalc.cli.spec import Fleet, Params, Spec
from hugecalc.cli.common import (ADDR, PID_MAX_LIMIT, SIZE, AliasOption, Real, Text, common_options, complete_backing,
                                 options, process_from, read_input, replay_record)
from hugecalc.cli.sweep import sweep_options
from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.units import fmt_bytes

if TYPE_CHECKING:
    from rich.console import Console


#: The mapping and touch options ``pgtable`` and ``verify pgtable`` share.
pgtable_options = options(
    click.option("--vma-size", "--vsize", "vma_size", cls=AliasOption, type=SIZE, default=None,
                 help="Size of the mapping.  [default: 1G]"),
    click.option("--vma-start", type=ADDR, default=None,
                 help="Start address (default: aligned to the span of the smallest table holding it)."),
    click.option("--touch-stride", type=SIZE, default=None,
                 help="Touch one byte every SIZE bytes (default: every base page)."),
    click.option("--touch-fraction", type=Real(0, 1), default=None,
                 help="Touch a random fraction F of the base pages (each page independently)."),
    click.option("--seed", type=click.IntRange(0, (1 << 32) - 1), default=0, show_default=True, help="Seed for --touch-fraction."),
    click.option("--touch-file", type=click.Path(dir_okay=False, allow_dash=True), default=None,
                 help="Touch the addresses or ranges (ADDR or ADDR-END) listed, one per line; - for stdin."),
    click.option("--backing", default="anon", show_default=True, shell_complete=complete_backing,
                 help="anon, thp (PMD-mapped THP), or hugetlb-SIZE (hugetlb-2M, hugetlb-1G, ...)."),
    click.option("--after", type=click.Choice(["dontneed", "free"]), default=None,
                 help="Also give what remains after madvise(MADV_DONTNEED|MADV_FREE) of the whole mapping."),
)


#: The mapping ``pgtable``, ``mthp`` and ``verify pgtable`` take when ``--vma-size`` is not given.  (The option's
#: default stays None so that ``--vma-size`` given with ``--pid``/``--trace``/``--worst-case`` is refused.)
DEFAULT_VMA_BYTES = 1 << 30


def touches_from_options(profile: Profile, vma_size: int | None, vma_start: int | None, backing: str,
                         touch_stride: int | None, touch_fraction: float | None, seed: int, touch_file: Any) -> tuple[Any, int | None]:
    """The touch pattern, and the mapping's start (a touch file's addresses are absolute)."""
    from hugecalc.calc.pgtable import Backing, mapping_bounds
    from hugecalc.calc.touches import Touches, parse_touch_file

    if sum(x is not None for x in (touch_stride, touch_fraction, touch_file)) > 1:
        raise InputError("use one of --touch-stride, --touch-fraction and --touch-file")
    vma_size = DEFAULT_VMA_BYTES if vma_size is None else vma_size
    if touch_file is None:
        return Touches(stride=touch_stride, fraction=touch_fraction, seed=seed), vma_start
    start = mapping_bounds(profile, vma_size, vma_start, Backing(profile, backing))
    text = read_input(touch_file, "--touch-file")
    return Touches(intervals=parse_touch_file(text, start, start + vma_size)), start


@click.command(cls=Command)
@pgtable_options
@click.option("--shared-by", type=click.IntRange(1, PID_MAX_LIMIT), default=1, show_default=True,
              help="MAP_SHARED hugetlb: number of processes mapping it (PMD-table sharing).")
@click.option("--worst-case", is_flag=True, help="The per-process maximum: all user address space populated.")
@click.option("--pid", type=click.IntRange(1, PID_MAX_LIMIT), default=None,
              help="A live process: its present pages' tables beside its VmPTE. With --trace: which recorded process.")
@click.option("--trace", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="A record (hugecalc record): the page tables of its true fault sequence over time, peak and end.")
@sweep_options
@common_options
def pgtable(**values: Any) -> None:
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
      hugecalc pgtable --trace app.record             # a recorded program's tables over time
      printf '0x8000000000\\n0x8000200000-0x8000400000\\n' | hugecalc pgtable --vma-size 2G --vma-start 0x8000000000 --touch-file -
      hugecalc pgtable --vma-size 1T --sweep touch-fraction=1e-6..1x10
    """
    if values["sweeps"] and (values["worst_case"] or values["pid"] is not None or values["touch_file"] is not None
                             or values["trace"]):
        raise InputError("--sweep runs one mapping: not with --worst-case, --pid, --touch-file or --trace")
    if values["plot"] and not (values["sweeps"] or values["trace"]):
        raise InputError("--plot draws the chart of a --sweep or a --trace: give one of them too")
    run(SPEC, values)


def compute(params: Params) -> PgtableResult | WorstCaseResult | ProcessResult | TraceResult:
    """One mapping, --worst-case, or a process (--pid)."""
    v = params.values
    if v["trace"]:
        if (v["worst_case"] or v["vma_size"] is not None or v["touch_stride"] or v["touch_fraction"] is not None
                or v["touch_file"] or v["shared_by"] != 1 or v["backing"] != "anon"):
            raise InputError("--trace replays the record's own mappings and faults: --worst-case, --vma-size, --touch-*, "
                             "--backing and --shared-by do not apply")
        from hugecalc.calc.orders import ThpSettings

        return replay_record(params, ThpSettings(), "pgtable")
    if v["worst_case"] and v["pid"] is not None:
        raise InputError("use either --worst-case or --pid")
    if v["worst_case"]:
        if (v["vma_size"] is not None or v["vma_start"] is not None or v["after"] or v["backing"] != "anon"
                or v["shared_by"] != 1 or v["touch_stride"] or v["touch_fraction"] is not None
                or v["touch_file"] is not None):
            raise InputError("--worst-case is the whole address space, fully populated: it takes no mapping, touch, "
                             "--backing, --after or --shared-by option")
        from hugecalc.calc.tables import compute_worst_case

        return compute_worst_case(params.profile, params.release)
    if v["pid"] is not None:
        if (v["shared_by"] != 1 or v["vma_size"] is not None or v["touch_stride"] or v["touch_fraction"] is not None
                or v["touch_file"]):
            raise InputError("--pid takes the process's own mappings and present pages: --vma-size, --touch-* and "
                             "--shared-by do not apply")
        return _process(params)
    from hugecalc.calc.pgtable import compute_pgtable

    touches, vma_start = touches_from_options(params.profile, v["vma_size"], v["vma_start"], v["backing"],
                                              v["touch_stride"], v["touch_fraction"], v["seed"], v["touch_file"])
    vma_size = DEFAULT_VMA_BYTES if v["vma_size"] is None else v["vma_size"]
    return compute_pgtable(params.profile, params.release, vma_size=vma_size, vma_start=vma_start,
                           touches=touches, backing=v["backing"], after=v["after"], shared_by=v["shared_by"])


def _process(params: Params) -> ProcessResult:
    from hugecalc.calc.process import compute_process

    capture, proc, profile, release = process_from(params, params.pid)
    result = compute_process(profile, release, params.pid, proc.present_vmas(capture.page_size), proc.vm_pte_bytes,
                             after=params.after, backing=params.backing)
    return result.model_copy(update={"inputs": {**result.inputs, "comm": proc.comm}})


def _draw_mapping(out: Console, result: PgtableResult, params: Params) -> None:
    from hugecalc.render import list_table, print_header

    i, after = result.inputs, params.after
    print_header(out, result, f"{fmt_bytes(i['vma_size_bytes'])} {params.backing} mapping at {i['vma_start']:#x}")
    skip = (("in_vmpte",) if "p4d" not in result.tables else ()) + (("tables_after",) if after is None else ())
    out.print(list_table(result.levels, skip=skip))
    out.print(f"page tables {fmt_bytes(result.page_table_bytes)} (as VmPTE counts; the top-level "
              f"{params.profile.levels[0].name} is not counted) for {fmt_bytes(result.populated_bytes)} populated: "
              f"{result.overhead_share * 100:.3g}%")  # three significant digits: a tiny share is not 0.000%
    if result.page_table_bytes_after is not None:
        out.print(f"after MADV_{after.upper()}: {fmt_bytes(result.page_table_bytes_after)}")
    if result.shared_page_table_bytes is not None:
        out.print(f"{params.shared_by} processes together: {fmt_bytes(result.shared_page_table_bytes)} of page tables")
    if result.compare:
        out.print(Text("Same mapping and touches, other backings:"))
        out.print(list_table(result.compare))


def _draw_trace(out: Console, result: TraceResult, params: Params) -> None:
    from hugecalc.plot import terminal, trace_chart
    from hugecalc.render import print_header

    run = result.runs[0]
    print_header(out, result, f"process {result.pid}'s page tables, replayed from its record")
    tables = ", ".join(f"{level} {n:,}" for level, n in run.tables.items())
    out.print(f"at the end: {tables} = {fmt_bytes(run.page_table_bytes)} (as VmPTE counts); at the peak "
              f"{fmt_bytes(run.peak_page_table_bytes)}; for {fmt_bytes(run.populated_bytes)} populated")
    if run.tables_after is not None:
        after = ", ".join(f"{level} {n:,}" for level, n in run.tables_after.items())
        out.print(f"after MADV_{run.after.upper()} of every anonymous mapping: {after} = "
                  f"{fmt_bytes(run.after_page_table_bytes)}")
    chart = trace_chart(result, "page_table_bytes", "page tables")
    if chart is not None:
        out.print(Text(terminal(chart, out.width)))


def _draw_worst_case(out: Console, result: WorstCaseResult, params: Params) -> None:
    from hugecalc.render import list_table, print_header

    print_header(out, result, f"worst case: all {fmt_bytes(params.profile.user_va_bytes)} of user space")
    out.print(list_table(result.levels, skip=("tables_after",) + (
        ("in_vmpte",) if "p4d" not in [r.level for r in result.levels] else ())))
    out.print(f"total as VmPTE counts {fmt_bytes(result.page_table_bytes)}")
    out.print(Text("Documentation/mm/pte_ref.rst (2022 RFC) figures, for comparison:"))
    for ref in result.pte_ref:
        out.print(Text(f"  {ref['case']}: PTE {fmt_bytes(ref['pte_bytes'])}, "
                       f"PMD {fmt_bytes(ref['pmd_bytes'])}"))


def _draw_process(out: Console, result: ProcessResult, params: Params) -> None:
    from hugecalc.render import list_table, print_header

    after, backing = params.after, params.backing
    print_header(out, result, f"process {result.inputs['pid']} ({result.inputs.get('comm', '?')}): {result.vmas} "
                              f"mappings, {fmt_bytes(result.present_bytes)} present")
    out.print(list_table(result.levels, skip=("in_vmpte",) + (() if after else ("tables_after",))))
    out.print(f"predicted {fmt_bytes(result.page_table_bytes)}; VmPTE {fmt_bytes(result.vm_pte_bytes)}"
              + (f"; after MADV_{after.upper()} {fmt_bytes(result.page_table_bytes_after)}" if after else ""))
    if result.page_table_bytes_backing is not None:
        out.print(f"with --backing {backing}: page tables {fmt_bytes(result.page_table_bytes_backing)}, "
                  f"memory populated {fmt_bytes(result.populated_bytes_backing)} "
                  f"(now {fmt_bytes(result.present_bytes)})")


def _plot(result: Any, params: Params) -> None:
    """--plot of a record: its page tables over time, to a file."""
    if params.plot and isinstance(result, TraceResult):
        from hugecalc.plot import write_trace_chart

        write_trace_chart(result, "page_table_bytes", "page tables", params.plot, params.force)


def _fleet_row(capture: Any, profile: Profile, release: Any, o: dict) -> dict:
    from hugecalc.calc.pgtable import compute_pgtable
    from hugecalc.calc.touches import Touches

    r = compute_pgtable(profile, release, vma_size=o["vma_size"], vma_start=o["vma_start"], backing=o["backing"],
                        after=o["after"], touches=Touches(stride=o["touch_stride"], fraction=o["touch_fraction"],
                                                          seed=o["seed"]), compare=False)
    return {"page_table_bytes": r.page_table_bytes, "page_table_bytes_after": r.page_table_bytes_after,
            "populated_bytes": r.populated_bytes}


def _fleet_what_if(params: Params) -> dict:
    if params.touch_file is not None:
        raise InputError("--touch-file: addresses are per host; use --touch-stride or --touch-fraction")
    what_if = {k: params.values[k] for k in ("vma_start", "backing", "after", "touch_stride", "touch_fraction", "seed")}
    return what_if | {"vma_size": DEFAULT_VMA_BYTES if params.vma_size is None else params.vma_size}


SPEC = Spec(
    name="pgtable", rank=2, compute=compute, batch=True, after=_plot,
    documents={PgtableResult: _draw_mapping, WorstCaseResult: _draw_worst_case, ProcessResult: _draw_process,
               TraceResult: _draw_trace},
    sweep=("vma_size", "vma_start", "touch_stride", "touch_fraction", "seed", "shared_by", "kernel"),
    charted=("page tables", "after madvise"), sweep_title="page tables",
    fleet=Fleet(
        help="Page tables of one mapping on every host's profile and kernel (as 'pgtable --host FILE').\n\n"
             "\b\nExample:\n  hugecalc fleet pgtable fleet/ --vma-size 64G --after dontneed --by arch",
        row=_fleet_row, what_if=_fleet_what_if, options=pgtable_options,
        rule="compute_pgtable() (calc/pgtable.py), as `hugecalc pgtable --host FILE`: the mapping on the "
             "host's profile and release",
        figures={"page_table_bytes": "page tables of the mapping, as VmPTE counts",
                 "page_table_bytes_after": "what remains after the --after madvise",
                 "populated_bytes": "memory the touches populate"},
        labels={"page_table_bytes": "Page tables (as VmPTE counts)", "page_table_bytes_after": "Page tables after madvise",
                "populated_bytes": "Memory the touches populate"}),
)
