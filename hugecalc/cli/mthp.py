"""``hugecalc mthp``: which multi-size THP size each fault gets, and what follows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing import Any

import click

from hugecalc.cli.sweep import run_sweep, sweep_options
from hugecalc.cli.common import ADDR, AliasOption, common_options, emit, given, options, PID_MAX_LIMIT, process_from, SIZE, Text
from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.releases import Release
from hugecalc.units import fmt_bytes, fmt_size, parse_size

if TYPE_CHECKING:
    from rich.console import Console


def _size_modes(items: tuple[str, ...], option: str) -> list[tuple[int, str]]:
    out = []
    for item in items:
        size, sep, mode = item.partition("=")
        if not sep:
            raise InputError(f"{option} {item!r}: use SIZE=MODE, e.g. 64K=always")
        out.append((parse_size(size, option), mode.strip()))
    return out


#: The configuration and pass options ``mthp`` and ``verify mthp`` share.
mthp_options = options(
    click.option("--size", "sizes", type=SIZE, multiple=True, help="Shorthand for --enabled SIZE=always."),
    click.option("--enabled", "enabled", multiple=True, metavar="SIZE=MODE",
                 help="Per-size anon mode: always|inherit|madvise|never (hugepages-<size>kB/enabled)."),
    click.option("--top-level", type=click.Choice(["always", "madvise", "never"]), default="madvise",
                 show_default=True, help="transparent_hugepage/enabled, which inherit follows."),
    click.option("--madvise", is_flag=True, help="The VMA had MADV_HUGEPAGE."),
    click.option("--nohugepage", is_flag=True, help="The VMA had MADV_NOHUGEPAGE."),
    click.option("--stack", is_flag=True, help="The VMA was mapped with MAP_STACK (no THP from 6.8)."),
    click.option("--memory", type=click.Choice(["anon", "shmem", "sysv", "tmpfs"]), default="anon", show_default=True,
                 help="anon; shmem (memfd, MAP_SHARED|MAP_ANONYMOUS); sysv (shmget); tmpfs (a file on a huge= mount)."),
    click.option("--shmem-enabled", "shmem_enabled", multiple=True, metavar="SIZE=MODE",
                 help="Per-size anon shmem mode: always|inherit|within_size|advise|never."),
    click.option("--huge", type=click.Choice(["always", "within_size", "advise", "never"]), default="never",
                 show_default=True, help="shmem, sysv: the top-level shmem_enabled; tmpfs: the mount's huge=."),
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


def mthp_kwargs(sizes: tuple[int, ...], enabled: tuple[str, ...], top_level: str, madvise: bool,
                nohugepage: bool, stack: bool, memory: str, shmem_enabled: tuple[str, ...], huge: str, vma_size: int,
                vma_start: int | None, file_offset: int | None, touch_stride: int | None,
                prepopulated_stride: int | None, access: str, profile: Profile | None = None) -> dict:
    """mthp_options' values as compute_mthp's keyword arguments; options that would be ignored or
    contradict each other are refused, and with the ``profile``, --size values it has no THP size for."""
    from hugecalc.units import fmt_size

    if profile is not None:
        from hugecalc.calc.orders import anon_orders, check_order

        for size in sizes:
            check_order(profile, size, anon_orders(profile), "--size", "THP_ORDERS_ALL_ANON excludes order 1")

    if (sizes or enabled) and memory != "anon":
        raise InputError(f"--size/--enabled set anonymous sizes, which --memory {memory} does not use: "
                         + ("use --shmem-enabled SIZE=always" if memory == "shmem" else "use --huge"))
    if shmem_enabled and memory == "anon":
        raise InputError("--shmem-enabled is for shmem (--memory shmem, or sysv/tmpfs to see them ignore it), "
                         "not --memory anon")
    if file_offset and memory == "anon":
        raise InputError("--file-offset is for shmem and tmpfs mappings, not --memory anon")
    modes = _size_modes(enabled, "--enabled")
    for size in sizes:
        clash = [m for s, m in modes if s == size and m != "always"]
        if clash:
            raise InputError(f"--size {fmt_size(size)} and --enabled {fmt_size(size)}={clash[0]} contradict each other")
    return dict(
        enabled=[(s, "always") for s in sizes] + modes, top_level=top_level,
        madvise=madvise, nohugepage=nohugepage, stack=stack, memory=memory,
        shmem_enabled=_size_modes(shmem_enabled, "--shmem-enabled"), huge=huge, vma_size=vma_size,
        vma_start=vma_start, file_offset=file_offset or 0, touch_stride=touch_stride,
        prepopulated_stride=prepopulated_stride, access=access,
    )


@click.command()
@mthp_options
@click.option("--khugepaged", is_flag=True,
              help="Also: which PMD ranges khugepaged's mTHP collapse (7.2, release unconfirmed) turns into which size.")
@click.option("--max-ptes-none", type=int, default=511, show_default=True, help="khugepaged/max_ptes_none.")
@click.option("--occupancy-file", type=click.File("r"), default=None,
              help="khugepaged occupancy: lines 'ADDR: PTE indexes' (e.g. '0x40000000: 0-15,64'); - for stdin.")
@click.option("--pid", type=click.IntRange(1, PID_MAX_LIMIT), default=None,
              help="Replay this process (live, or from --host FILE): its present pages under the settings now "
                   "and under the what-if.")
@sweep_options
@common_options
def mthp(profile: Profile, release: Release, as_json: bool, explain: bool, capture: Any, khugepaged: bool,
         max_ptes_none: int, occupancy_file: Any, pid: int | None, sweeps: tuple[str, ...], plot: str | None,
         **options: Any) -> None:
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
      hugecalc mthp --sweep size=16k,32k,64k,128k,2M --vma-size 64M
    """
    from hugecalc.calc.khugepaged import parse_occupancy
    from hugecalc.calc.mthp import compare_sizes, compute_mthp
    from hugecalc.render import list_table, print_header, print_wrapped, transposed_summary

    if sweeps:
        return run_sweep("mthp", sweeps, plot, as_json, explain, lambda doc: f"mTHP, profile {doc['profile']}")
    kw = mthp_kwargs(**options, profile=profile)
    if pid is not None:
        return _replay(profile, release, as_json, explain, capture, pid, kw)
    if capture is not None and not khugepaged:
        return _now_and_what_if(profile, release, as_json, explain, capture, kw)
    comparing = not (kw["enabled"] or (kw["memory"] != "anon" and (kw["shmem_enabled"] or kw["huge"] != "never"))
                     or kw["memory"] in ("tmpfs", "sysv"))
    if comparing and not khugepaged:
        result = compare_sizes(profile, release, **kw)

        def draw(out: Console) -> None:
            print_header(out, result, f"{kw['memory']} {fmt_bytes(kw['vma_size'])} pass, every size alone")
            out.print(list_table(result.sizes, skip=("largest_fault_clear_bytes", "tables")))
            out.print(Text(terminal(chart, out.width)))

        from hugecalc.plot import Chart, terminal, write

        chart = Chart(title=f"hugecalc mthp: every size alone — profile {profile.name}, kernel {release}",
                      x_label="size", y_label="faults / TLB entries", x_kind="size", y_bytes=False, log_x=True,
                      x_values=[r.size_bytes for r in result.sizes],
                      series={"faults": [r.faults for r in result.sizes],
                              "TLB entries": [r.tlb_entries for r in result.sizes]})
        if plot:
            write(chart, plot)
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
            out.print(Text("khugepaged mTHP collapse, by design (see the note for this release):", style="bold"))
            for d in result.khugepaged:
                collapsed = ", ".join(f"{c.count:,} x {fmt_size(c.size_bytes)}" for c in d.collapses) or "nothing"
                print_wrapped(out, f"  {d.design}: of {d.pmd_ranges:,} PMD ranges, {collapsed}; "
                                   f"{d.untouched_ranges:,} left as they are" + (f" ({d.note})" if d.note else ""), 4)

    emit(result, as_json, explain, draw)


_SETTINGS = ("enabled", "top_level", "huge", "shmem_enabled")


def _overrides(kw: dict) -> dict:
    """The THP switches given on the command line: the what-if."""
    out = {key: kw[key] for key in ("enabled", "shmem_enabled") if kw[key]}
    for key in ("top_level", "huge"):
        if given(key):
            out[key] = kw[key]
    return out


def _now_and_what_if(profile: Profile, release: Release, as_json: bool, explain: bool, capture: Any, kw: dict) -> None:
    from hugecalc.calc.replay import compute_now_and_what_if
    from hugecalc.render import folio_table, print_header, side_by_side

    base = {k: v for k, v in kw.items() if k not in _SETTINGS}
    result = compute_now_and_what_if(profile, release, capture, base, _overrides(kw))
    now = result.now

    def draw(out: Console) -> None:
        i = now.inputs
        print_header(out, result, f"{capture.hostname}: {i['memory']} {fmt_bytes(i['vma_size_bytes'])} VMA, "
                                  "THP settings now" + (" and the what-if" if result.what_if else ""))
        columns = [("now", now)] + ([("what-if", result.what_if)] if result.what_if else [])
        for label, r in columns:
            out.print(Text(f"{label}: a fault may get " + (", ".join(fmt_size(b) for b in r.fault_orders_bytes)
                                                          or "base pages only")))
        out.print(side_by_side(columns))
        out.print(folio_table([(label, r.folios) for label, r in columns]))

    emit(result, as_json, explain, draw)


def _replay(profile: Profile, release: Release, as_json: bool, explain: bool, capture: Any, pid: int, kw: dict) -> None:
    from hugecalc.calc.replay import compute_replay, settings_from_capture, what_if
    from hugecalc.capture import decode_runs
    from hugecalc.render import folio_table, list_table, print_header, side_by_side

    capture, proc, profile, release = process_from(capture, pid, profile, release)
    now_settings, notes = settings_from_capture(capture)
    later = what_if(now_settings, _overrides(kw))
    runs = {"now": now_settings} | ({"what-if": later} if later != now_settings else {})
    vmas = []
    for v in proc.vmas:
        starts, ends = decode_runs(v.present_runs, v.start, capture.page_size)
        vmas.append({"start": v.start, "end": v.end, "kind": v.kind, "flags": v.flags,
                     "kernel_page_bytes": v.kernel_page_bytes, "starts": starts, "ends": ends})
    captured = None
    if all(v.folios is not None for v in proc.vmas if v.kind in ("anon", "heap", "stack", "shmem", "sysv")):
        captured = {}
        for v in proc.vmas:
            if v.kind in ("anon", "heap", "stack", "shmem", "sysv"):
                for size, n in (v.folios or {}).items():
                    captured[size] = captured.get(size, 0) + n
    result = compute_replay(profile, release, pid, proc.comm, proc.vm_pte_bytes, vmas, runs, captured)
    result.notes[:0] = notes

    def draw(out: Console) -> None:
        print_header(out, result, f"process {pid} ({proc.comm}) replayed: {len(proc.vmas)} mappings")
        columns = [(r.label, r) for r in result.runs]
        out.print(side_by_side(columns))
        out.print(f"VmPTE now {fmt_bytes(result.vm_pte_bytes)}")
        folios = [(r.label, r.folios) for r in result.runs]
        if result.captured_folios is not None:
            from hugecalc.calc.mthp import FolioCount

            folios.insert(0, ("present now", [FolioCount(size_bytes=int(s), count=n)
                                              for s, n in result.captured_folios.items()]))
        out.print(folio_table(folios))
        last = result.runs[-1]
        busiest = sorted(last.vmas, key=lambda v: -v.touched_bytes)[:8]
        if busiest:
            out.print(Text(f"largest replayed mappings ({last.label}):"))
            out.print(list_table(busiest, skip=("folios",)))

    emit(result, as_json, explain, draw)
