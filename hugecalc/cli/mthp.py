"""``hugecalc mthp``: which multi-size THP size each fault gets, and what follows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from hugecalc.calc.mthp import MthpComparison, MthpNowWhatIf, MthpResult
from hugecalc.calc.orders import PassShape, ThpSettings
from hugecalc.calc.mthp_fleet import FIGURES
from hugecalc.calc.replay import ReplayResult
from hugecalc.calc.tracereplay import TraceResult
from hugecalc.machine.capture import REPLAYED_KINDS
from hugecalc.cli.command import Command, given_params, run
from hugecalc.cli.spec import Fleet, Params, Spec
from hugecalc.cli.common import (ADDR, PID_MAX_LIMIT, SIZE, AliasOption, Text, common_options, options,
                                 process_from, read_input, replay_record)
from hugecalc.cli.sweep import sweep_options
from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.units import fmt_bytes, fmt_size, parse_size

if TYPE_CHECKING:
    from rich.console import Console


#: The configuration and pass options ``mthp`` and ``verify mthp`` share.
mthp_options = options(
    click.option("--size", "sizes", type=SIZE, multiple=True, help="Shorthand for --enabled SIZE=always."),
    click.option("--enabled", "enabled", multiple=True, metavar="SIZE=MODE",
                 help="Per-size anon mode: always|inherit|madvise|never (hugepages-<size>kB/enabled)."),
    click.option("--top-level", type=click.Choice(["always", "madvise", "never"]), default=None,
                 help="transparent_hugepage/enabled, which inherit follows (default: madvise, or as captured)."),
    click.option("--madvise", is_flag=True, help="The VMA had MADV_HUGEPAGE."),
    click.option("--nohugepage", is_flag=True, help="The VMA had MADV_NOHUGEPAGE."),
    click.option("--stack", is_flag=True, help="The VMA was mapped with MAP_STACK (no THP from 6.8)."),
    click.option("--memory", type=click.Choice(["anon", "shmem", "sysv", "tmpfs"]), default="anon", show_default=True,
                 help="anon; shmem (memfd, MAP_SHARED|MAP_ANONYMOUS); sysv (shmget); tmpfs (a file on a huge= mount)."),
    click.option("--shmem-enabled", "shmem_enabled", multiple=True, metavar="SIZE=MODE",
                 help="Per-size anon shmem mode: always|inherit|within_size|advise|never."),
    click.option("--huge", type=click.Choice(["always", "within_size", "advise", "never", "deny", "force"]),
                 default=None,
                 help="shmem, sysv: the top-level shmem_enabled; tmpfs: the mount's huge= (default: never, or as "
                      "captured). deny/force: shmem_enabled's testing modes, over every mount."),
    click.option("--vma-size", "--vsize", "vma_size", cls=AliasOption, type=SIZE, default="1G", show_default=True,
                 help="Size of the VMA."),
    click.option("--vma-start", type=ADDR, default=None, help="Start of the VMA (default: table-aligned)."),
    click.option("--file-offset", type=SIZE, default=None, help="shmem/tmpfs: file offset of the VMA (default 0)."),
    click.option("--touch-stride", type=SIZE, default=None, help="Touch one byte every SIZE (default: every page)."),
    click.option("--prepopulated-stride", type=SIZE, default=None,
                 help="Before the pass, one base page every SIZE was already faulted in."),
    click.option("--access", type=click.Choice(["write", "read-then-write"]), default="write", show_default=True,
                 help="Every touched page is written, or read first and then written."),
)


def _size_modes(items: tuple[str, ...], field: str) -> dict[int, str]:
    out = {}
    for item in items:
        size, sep, mode = item.partition("=")
        if not sep:
            raise InputError(f"{item!r}: use SIZE=MODE, e.g. 64K=always", field=field)
        out[parse_size(size, "--" + field.replace("_", "-"))] = mode.strip()
    return out


def thp_settings(params: Params, profile: Profile | None = None) -> ThpSettings:
    """The THP switches given on the command line (those not given are None: as booted, or as
    captured), checked where they enter: with the ``profile``, sizes it has no THP size for."""
    from hugecalc.calc.orders import anon_orders, check_order, check_release_has_switches, file_orders

    v = params.values
    if (v["sizes"] or v["enabled"]) and v["memory"] != "anon":
        raise InputError(f"--size/--enabled set anonymous sizes, which --memory {v['memory']} does not use: "
                         + ("use --shmem-enabled SIZE=always" if v["memory"] == "shmem" else "use --huge"))
    if v["huge"] is not None and v["memory"] == "anon":
        raise InputError("--huge is shmem_enabled, or a tmpfs mount's huge=: use it with --memory shmem, sysv or "
                         "tmpfs (anonymous memory follows --top-level)")
    if v["shmem_enabled"] and v["memory"] == "anon":
        raise InputError("--shmem-enabled is for shmem (--memory shmem, or sysv/tmpfs to see them ignore it), "
                         "not --memory anon")
    enabled, shmem = _size_modes(v["enabled"], "enabled"), _size_modes(v["shmem_enabled"], "shmem_enabled")
    for size in v["sizes"]:
        if enabled.get(size, "always") != "always":
            raise InputError(f"--size {fmt_size(size)} and --enabled {fmt_size(size)}={enabled[size]} contradict "
                             "each other")
        enabled[size] = "always"
    if profile is not None:
        for field, sizes, orders, rule in (
                ("sizes", v["sizes"], anon_orders(profile), "THP_ORDERS_ALL_ANON excludes order 1"),
                ("enabled", [s for s in enabled if s not in v["sizes"]], anon_orders(profile), "THP_ORDERS_ALL_ANON excludes order 1"),
                ("shmem_enabled", shmem, file_orders(profile), "THP_ORDERS_ALL_FILE_DEFAULT: orders 1..MAX_PAGECACHE_ORDER")):
            for size in sizes:
                check_order(profile, size, orders, field, rule)
    settings = ThpSettings(top_level=v["top_level"], huge=v["huge"], enabled=enabled, shmem_enabled=shmem)
    if profile is not None:
        check_release_has_switches(params.release, settings,
                                   {"enabled": "sizes" if v["sizes"] else "enabled", "shmem_enabled": "shmem_enabled"})
    return settings


def pass_shape(params: Params) -> PassShape:
    """The VMA and the touches of the pass, as given."""
    v = params.values
    return PassShape(memory=v["memory"], vma_size=v["vma_size"], vma_start=v["vma_start"],
                     file_offset=v["file_offset"] or 0, touch_stride=v["touch_stride"],
                     prepopulated_stride=v["prepopulated_stride"], access=v["access"], madvise=v["madvise"],
                     nohugepage=v["nohugepage"], stack=v["stack"])


@click.command(cls=Command)
@mthp_options
@click.option("--khugepaged", is_flag=True,
              help="Also: which PMD ranges khugepaged's mTHP collapse (7.2, release unconfirmed) turns into which size "
                   "(with --trace: of the replay's end state).")
@click.option("--max-ptes-none", type=click.IntRange(0, 511), default=511, show_default=True,
              help="khugepaged/max_ptes_none.")
@click.option("--occupancy-file", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="khugepaged occupancy: lines 'ADDR: PTE indexes' (e.g. '0x40000000: 0-15,64'); - for stdin.")
@click.option("--pid", type=click.IntRange(1, PID_MAX_LIMIT), default=None,
              help="Replay this process (live, or from --host FILE): its present pages under the settings now "
                   "and under the what-if. With --trace: which recorded process (default: the command's).")
@click.option("--trace", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Replay a record (hugecalc record): its true fault sequence under the settings at the time "
                   "and under the what-if.")
@sweep_options
@common_options
def mthp(**values: Any) -> None:
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
      hugecalc mthp --host capture.json --size 64k   # the captured settings beside 64K
      sudo hugecalc mthp --pid 1234 --size 64k       # replay a process under 64K mTHP
      hugecalc mthp --trace app.record --size 64k    # a recorded program's faults under 64K mTHP
      hugecalc mthp --sweep size=16k,32k,64k,128k,2M --vma-size 64M
    """
    if values["sweeps"] and (values["pid"] is not None or values["trace"]):
        raise InputError("--sweep runs one pass: not with --pid or --trace")
    given = given_params(click.get_current_context())
    for name, flag in (("max_ptes_none", "--max-ptes-none"), ("occupancy_file", "--occupancy-file")):
        if name in given and not values["khugepaged"]:
            raise InputError(f"{flag} describes what khugepaged finds: give --khugepaged too")
    if values["khugepaged"] and values["trace"] and "occupancy_file" in given:
        raise InputError("--occupancy-file: with --trace, khugepaged finds what the replay leaves: give one of them")
    if values["khugepaged"] and values["pid"] is not None and not values["trace"]:
        raise InputError("--khugepaged with --pid: a snapshot's fault order is unknown, so what khugepaged would "
                         "find is too; record the program (hugecalc record) and give --trace FILE --khugepaged")
    run(SPEC, values)


def compute(params: Params) -> MthpResult | MthpComparison | MthpNowWhatIf | ReplayResult | TraceResult:
    """One pass; every size side by side; the captured settings now beside the what-if; or a process."""
    result = _compute(params)
    if params.plot and not params.sweeps and not isinstance(result, (MthpComparison, TraceResult)):
        raise InputError("--plot draws the chart of a --sweep, of the side-by-side view (no --size) or of a --trace")
    return result


def _compute(params: Params) -> MthpResult | MthpComparison | MthpNowWhatIf | ReplayResult | TraceResult:
    from hugecalc.calc.mthp import KhugepagedScan, compare_sizes, compute_mthp

    settings, shape = thp_settings(params, params.profile), pass_shape(params)
    if params.trace:
        return replay_record(params, settings, "mthp")
    if params.pid is not None:
        return _replay(params, settings)
    if params.capture is not None and not params.khugepaged:
        from hugecalc.calc.replay import compute_now_and_what_if

        return compute_now_and_what_if(params.profile, params.release, params.capture, shape, settings)
    shmem_set = shape.memory != "anon" and (settings.shmem_enabled or settings.huge not in (None, "never"))
    if not (settings.enabled or shmem_set or shape.memory in ("tmpfs", "sysv") or params.khugepaged):
        return compare_sizes(params.profile, params.release, shape)
    scan = None
    if params.khugepaged:
        from hugecalc.calc.khugepaged import parse_occupancy

        occupancy = (parse_occupancy(read_input(params.occupancy_file, "--occupancy-file"), params.profile)
                     if params.occupancy_file else None)
        scan = KhugepagedScan(max_ptes_none=params.max_ptes_none, occupancy=occupancy)
    return compute_mthp(params.profile, params.release, shape, settings, scan)


def _replay(params: Params, what_if: ThpSettings) -> ReplayResult:
    from hugecalc.calc.replay import compute_replay, settings_from_capture

    capture, proc, profile, release = process_from(params, params.pid)
    now, notes = settings_from_capture(capture)
    what_if = now.with_overrides(what_if)
    runs = {"now": now} | ({"what-if": what_if} if what_if != now else {})
    captured = None
    replayed = [v for v in proc.vmas if v.kind in REPLAYED_KINDS]
    if all(v.folios is not None for v in replayed):
        captured = {}
        for v in replayed:
            for size, n in (v.folios or {}).items():
                captured[size] = captured.get(size, 0) + n
    result = compute_replay(profile, release, params.pid, proc.comm, proc.vm_pte_bytes,
                            proc.present_vmas(capture.page_size), runs, captured, proc.thp_enabled is False,
                            zero_pages=sum(v.zero_pages for v in replayed),
                            swapped_pages=sum(v.swapped_pages for v in replayed),
                            unclassified_pages=sum(v.unclassified_pages for v in replayed))
    result.notes[:0] = notes
    return result


def _draw_trace(out: Console, result: TraceResult, params: Params) -> None:
    from hugecalc.plot import terminal, trace_chart
    from hugecalc.render import folio_table, print_header, side_by_side

    print_header(out, result, f"process {result.pid} replayed from its record: {result.recorded_faults:,} recorded "
                              "faults, in order")
    columns = [(r.label, r) for r in result.runs]
    out.print(side_by_side(columns))
    out.print(folio_table([(r.label, r.folios) for r in result.runs]))
    for r in result.runs:
        _print_collapses(out, r.khugepaged, f"khugepaged on the end state, {r.label}:")
    chart = trace_chart(result, "populated_bytes", "populated memory")
    if chart is not None:
        out.print(Text(terminal(chart, out.width)))


def _draw_pass(out: Console, result: MthpResult, params: Params) -> None:
    from hugecalc.render import list_table, print_header, transposed_summary

    i = result.inputs
    print_header(out, result, f"{i['memory']} {fmt_bytes(i['vma_size_bytes'])} VMA at {i['vma_start']:#x}, "
                              f"{i['access']} every {fmt_bytes(i['touch_stride_bytes'])}")
    sizes = ", ".join(fmt_size(b) for b in result.fault_orders_bytes) or "base pages only"
    out.print(Text(f"a fault may get: {sizes}"))
    out.print(transposed_summary(result))
    out.print(list_table(result.folios))
    _print_collapses(out, result.khugepaged, "khugepaged mTHP collapse, by design (see the note for this release):")


def _print_collapses(out: Console, designs: list | None, title: str) -> None:
    from hugecalc.render import print_wrapped

    if designs is None:
        return
    out.print(Text(title, style="bold"))
    for d in designs:
        collapsed = ", ".join(f"{c.count:,} x {fmt_size(c.size_bytes)}" for c in d.collapses) or "nothing"
        print_wrapped(out, f"  {d.design}: of {d.pmd_ranges:,} PMD range{'' if d.pmd_ranges == 1 else 's'}, {collapsed}; "
                           f"{d.untouched_ranges:,} left as they are" + (f" ({d.note})" if d.note else ""), 4)


def _comparison_chart(result: MthpComparison) -> Any:
    from hugecalc.plot import Chart

    return Chart(title=f"hugecalc mthp: every size alone — profile {result.profile}, kernel {result.kernel}",
                 x_label="size", y_label="faults / TLB entries", x_kind="size", y_bytes=False, log_x=True,
                 x_values=[r.size_bytes for r in result.sizes],
                 series={"faults": [r.faults for r in result.sizes],
                         "TLB entries": [r.tlb_entries for r in result.sizes]})


def _draw_comparison(out: Console, result: MthpComparison, params: Params) -> None:
    from hugecalc.plot import terminal
    from hugecalc.render import list_table, print_header

    print_header(out, result, f"{params.memory} {fmt_bytes(params.vma_size)} pass, every size alone")
    out.print(list_table(result.sizes, skip=("largest_fault_clear_bytes", "tables")))
    out.print(Text(terminal(_comparison_chart(result), out.width)))


def _draw_now_and_what_if(out: Console, result: MthpNowWhatIf, params: Params) -> None:
    from hugecalc.render import folio_table, print_header, side_by_side

    now = result.now
    i = now.inputs
    print_header(out, result, f"{params.capture.hostname}: {i['memory']} {fmt_bytes(i['vma_size_bytes'])} VMA, "
                              "THP settings now" + (" and the what-if" if result.what_if else ""))
    columns = [("now", now)] + ([("what-if", result.what_if)] if result.what_if else [])
    for label, r in columns:
        out.print(Text(f"{label}: a fault may get " + (", ".join(fmt_size(b) for b in r.fault_orders_bytes)
                                                      or "base pages only")))
    out.print(side_by_side(columns))
    out.print(folio_table([(label, r.folios) for label, r in columns]))


def _draw_replay(out: Console, result: ReplayResult, params: Params) -> None:
    from hugecalc.render import folio_table, list_table, print_header, side_by_side

    print_header(out, result, f"process {result.pid} ({result.comm}) replayed: {result.inputs['mappings']} mappings")
    columns = [(r.label, r) for r in result.runs]
    out.print(side_by_side(columns))
    out.print(f"VmPTE now {fmt_bytes(result.vm_pte_bytes)}")
    folios = [(r.label, r.folios) for r in result.runs]
    if result.present_folios is not None:
        folios.insert(0, ("present now", result.present_folios))
    out.print(folio_table(folios))
    last = result.runs[-1]
    busiest = sorted(last.vmas, key=lambda v: -v.touched_bytes)[:8]
    if busiest:
        out.print(Text(f"largest replayed mappings ({last.label}):"))
        out.print(list_table(busiest, skip=("folios",)))


def _plot(result: Any, params: Params) -> None:
    """--plot: the side-by-side comparison's chart, or a record's populated memory over time, to a file."""
    from hugecalc.plot import write, write_trace_chart

    if params.plot and isinstance(result, MthpComparison):
        write(_comparison_chart(result), params.plot, params.force)
    elif params.plot and isinstance(result, TraceResult):
        write_trace_chart(result, "populated_bytes", "populated memory", params.plot, params.force)


def _fleet_row(capture: Any, profile: Profile, release: Any, what_if: dict) -> dict | str:
    from hugecalc.calc.mthp_fleet import now_and_what_if_figures

    return now_and_what_if_figures(capture, profile, release, what_if["shape"], what_if["settings"])


#: the single-host table's label of each fleet figure
FLEET_LABELS = {"faults": "Page faults", "populated": "Memory populated", "page_table": "Page tables",
                "tlb": "Last-level TLB entries"}

SPEC = Spec(
    name="mthp", rank=3, compute=compute, batch=True, after=_plot,
    documents={MthpResult: _draw_pass, MthpComparison: _draw_comparison, MthpNowWhatIf: _draw_now_and_what_if,
               ReplayResult: _draw_replay, TraceResult: _draw_trace},
    sweep=("sizes", "vma_size", "vma_start", "file_offset", "touch_stride", "prepopulated_stride", "max_ptes_none",
           "kernel"),
    charted=("faults", "TLB entries", "faults now", "faults what-if"), sweep_title="mTHP",
    fleet=Fleet(
        walks=True,
        help="mTHP across the fleet: each host's THP settings now beside the what-if (as 'mthp --host FILE').\n\n"
             "\b\nExample:\n  hugecalc fleet mthp fleet/ --size 64k --by profile",
        row=_fleet_row, options=mthp_options,
        what_if=lambda params: {"shape": pass_shape(params), "settings": thp_settings(params)},
        rule="compute_now_and_what_if() (calc/replay.py), as `hugecalc mthp --host FILE`: the pass under the "
             "captured THP settings (now) and under the what-if",
        figures={m: f"{m.replace('_now', '').replace('_what_if', '').replace('_bytes', '')} of the pass "
                    + ("now" if "_now" in m else "under the what-if") for m in FIGURES},
        labels={m: FLEET_LABELS[m.split("_now")[0].split("_what_if")[0]] + (", now" if "_now" in m else ", what-if")
                for m in FIGURES}),
)
