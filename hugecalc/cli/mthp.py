"""``hugecalc mthp``: which multi-size THP size each fault gets, and what follows."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.text import Text

from hugecalc.cli.common import ADDR, SIZE, common_options, emit, options
from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.releases import Release
from hugecalc.units import fmt_bytes, fmt_size, parse_size


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
    click.option("--vma-size", type=SIZE, default="1G", show_default=True, help="Size of the VMA."),
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
                prepopulated_stride: int | None, access: str) -> dict:
    """mthp_options' values as compute_mthp's keyword arguments."""
    return dict(
        enabled=[(s, "always") for s in sizes] + _size_modes(enabled, "--enabled"), top_level=top_level,
        madvise=madvise, nohugepage=nohugepage, stack=stack, memory=memory,
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


@click.command()
@mthp_options
@click.option("--khugepaged", is_flag=True,
              help="Also: which PMD ranges khugepaged's mTHP collapse (7.2, release unconfirmed) turns into which size.")
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

    kw = mthp_kwargs(**options)
    comparing = not (kw["enabled"] or (kw["memory"] != "anon" and (kw["shmem_enabled"] or kw["huge"] != "never"))
                     or kw["memory"] in ("tmpfs", "sysv"))
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
            out.print(Text("khugepaged mTHP collapse, by design (see the note for this release):", style="bold"))
            for d in result.khugepaged:
                collapsed = ", ".join(f"{c.count:,} x {fmt_size(c.size_bytes)}" for c in d.collapses) or "nothing"
                out.print(Text(f"  {d.design}: of {d.pmd_ranges:,} PMD ranges, {collapsed}; "
                               f"{d.untouched_ranges:,} left as they are" + (f" ({d.note})" if d.note else "")))

    emit(result, as_json, explain, draw)
