"""``hugecalc vmemmap``: the vmemmap a hugetlb pool gives back with HVO."""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing import Any

import click

from hugecalc.cli.sweep import run_sweep, sweep_options
from hugecalc.cli.common import common_options, emit, SIZE
from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.releases import Release
from hugecalc.units import fmt_bytes, fmt_size, parse_size

if TYPE_CHECKING:
    from rich.console import Console


def _pool(text: str) -> tuple[int | None, int | None]:
    """``--pages``: a size (``1024G``) or, with no unit, a count of hugepages (``512``)."""
    stripped = text.strip()
    if stripped.isdigit() or stripped.lower().startswith("0x") and all(c in "0123456789abcdef" for c in
                                                                       stripped[2:].lower()):
        count = int(stripped, 0)  # no unit: a count, written in decimal or hex
        if count <= 0:
            raise InputError(f"--pages {text}: the number of hugepages must be greater than zero")
        return None, count
    size = parse_size(text, "--pages")
    if size <= 0:
        raise InputError(f"--pages {text}: the pool size must be greater than zero")
    return size, None


@click.command()
@click.option("--pages", "pages", default=None, metavar="SIZE|COUNT",
              help="Pool: a total size (1024G) or, without a unit, a number of hugepages (512). "
                   "With --host or --profile host: default, the machine's pools now.")
@click.option("--hugepage-size", "hugepage_sizes", type=SIZE, multiple=True,
              help="Hugepage size (repeatable). Default: every size the profile supports.")
@click.option("--struct-page-size", type=int, default=None, metavar="BYTES",
              help="sizeof(struct page) (default: the profile's, usually 64).")
@click.option("--devdax", is_flag=True, help="Device-DAX compound pages instead of hugetlb (keeps the tail page).")
@click.option("--layout", type=click.Choice(["packed", "scattered"]), default="packed", show_default=True,
              help="packed: the pool is physically contiguous; scattered: every hugepage's vmemmap "
                   "needs PMD splits of its own (worst case).")
@click.option("--zones", type=click.IntRange(1, 1 << 16), default=1, show_default=True,
              help="Memory zones the pool spans (NUMA nodes x zones): from 7.1 each keeps one shared tail page per size.")
@sweep_options
@common_options
def vmemmap(profile: Profile, release: Release, as_json: bool, explain: bool, capture: Any, pages: str,
            hugepage_sizes: tuple[int, ...], struct_page_size: int | None, devdax: bool, layout: str,
            zones: int, sweeps: tuple[str, ...], plot: str | None) -> None:
    """HugeTLB Vmemmap Optimization: the vmemmap a hugetlb pool gives back, net of page tables.

    \b
    Examples:
      hugecalc vmemmap --pages 1024G
      hugecalc vmemmap --pages 1024G --hugepage-size 2M --kernel 5.14 --explain
      hugecalc vmemmap --pages 64 --hugepage-size 1G --json | jq '.rows[0].saved_bytes'
      hugecalc vmemmap --pages 16G --profile arm64-64k --kernel 6.2
      hugecalc vmemmap --pages 1T --struct-page-size 72
      hugecalc vmemmap --profile host                # this machine's pools, now and with HVO on
      hugecalc vmemmap --pages 1T --sweep kernel=5.14,5.18,6.3,7.1 --profile arm64-4k
    """
    from hugecalc.calc.vmemmap import compute_vmemmap
    from hugecalc.render import print_header, print_wrapped, transposed_table

    if sweeps:
        return run_sweep("vmemmap", sweeps, plot, as_json, explain, lambda doc: f"HVO, profile {doc['profile']}")
    if pages is None:
        if capture is None:
            raise InputError("--pages is required (or use --host FILE or --profile host for a machine's pools)")
        return _pools_now(profile, release, as_json, explain, capture, zones)
    pool_bytes, count = _pool(pages)
    result = compute_vmemmap(
        profile, release, pool_bytes=pool_bytes, hugepage_count=count,
        hugepage_sizes=list(hugepage_sizes), struct_page_bytes=struct_page_size,
        devdax=devdax, layout=layout, zones=zones,  # type: ignore[arg-type]
    )

    def draw(out: Console) -> None:
        sizes = "each size" if len(result.rows) > 1 else fmt_size(result.rows[0].hugepage_size_bytes)
        pool = fmt_bytes(pool_bytes) if pool_bytes else f"{count} hugepage{'s' if count > 1 else ''} of {sizes}"
        print_header(out, result, f"{'device-DAX vmemmap' if devdax else 'HVO'} for a pool of {pool}")
        out.print(transposed_table(result.rows, key="hugepage_size_bytes", skip=("reason",),
                                   titles={"optimizable": "vmemmap dedup applies"} if devdax else None))
        reasons: dict[str, list[str]] = {}
        for row in result.rows:
            if row.reason:
                reasons.setdefault(row.reason, []).append(fmt_size(row.hugepage_size_bytes))
        for reason, sizes in reasons.items():
            print_wrapped(out, f"why not ({', '.join(sizes)}): {reason}", 4)

    emit(result, as_json, explain, draw)


def _pools_now(profile: Profile, release: Release, as_json: bool, explain: bool, capture: Any, zones: int) -> None:
    from hugecalc.calc.hvo_now import compute_hvo_now
    from hugecalc.render import print_header, transposed_table

    result = compute_hvo_now(profile, release, [(p.size_bytes, p.nr) for p in capture.pools],
                             capture.hugetlb_optimize_vmemmap, capture.mem_available_bytes, zones)

    def draw(out: Console) -> None:
        print_header(out, result, f"HVO on {capture.hostname}: the pools now and with HVO on")
        out.print(transposed_table(result.rows, key="hugepage_size_bytes", skip=("reason",)))

    emit(result, as_json, explain, draw)
