"""``hugecalc vmemmap``: the vmemmap a hugetlb pool gives back with HVO."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from hugecalc.calc.hvo_now import HostVmemmapResult, hvo_now_figures
from hugecalc.calc.vmemmap import VmemmapResult
from hugecalc.cli.command import Command, run
from hugecalc.cli.spec import Fleet, Params, Spec
from hugecalc.cli.common import SIZE, common_options
from hugecalc.cli.sweep import sweep_options
from hugecalc.errors import InputError
from hugecalc.units import fmt_bytes, fmt_size, parse_size

if TYPE_CHECKING:
    from rich.console import Console


@dataclass(frozen=True)
class Pool:
    """``--pages``: the pool as a size in bytes (``1024G``), or a count of hugepages (``512``)."""

    size_bytes: int | None = None
    hugepages: int | None = None

    def __str__(self) -> str:
        return fmt_size(self.size_bytes) if self.size_bytes else f"{self.hugepages}"


class PoolType(click.ParamType):
    """A size with a unit, or with none a count of hugepages, in decimal or hex (0x200)."""

    name = "SIZE|COUNT"
    sweep_kind = "pool"

    def convert(self, value: Any, param: Any, ctx: Any) -> Pool:
        if isinstance(value, Pool):
            return value
        text = str(value).strip()
        try:
            if re.fullmatch(r"[0-9]+|0[xX][0-9a-fA-F]+", text):  # no unit: a count
                pool = Pool(hugepages=int(text, 0))
            else:
                pool = Pool(size_bytes=parse_size(text, "--pages"))
        except InputError as e:
            raise click.UsageError(str(e), ctx) from None
        if not (pool.hugepages or pool.size_bytes):
            what = "the number of hugepages" if pool.hugepages == 0 else "the pool size"
            raise click.UsageError(f"--pages {value}: {what} must be greater than zero", ctx)
        return pool


ZONES = click.option("--zones", type=click.IntRange(1, 1 << 16), default=1, show_default=True,
                     help="Memory zones the pool spans (NUMA nodes x zones): from 7.1 each keeps one shared tail "
                          "page per size.")


@click.command(cls=Command)
@click.option("--pages", "pool", type=PoolType(), default=None, metavar="SIZE|COUNT",
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
@ZONES
@sweep_options
@common_options
def vmemmap(**values: Any) -> None:
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
    if values["plot"] and not values["sweeps"]:
        raise InputError("--plot draws the chart of a --sweep: give --sweep too")
    run(SPEC, values)


def compute(params: Params) -> VmemmapResult | HostVmemmapResult:
    """A pool (--pages), or with --host/--profile host and no --pages the machine's pools now."""
    from hugecalc.calc.vmemmap import compute_vmemmap

    pool: Pool | None = params.pool
    if pool is None:
        if params.capture is None:
            raise InputError("--pages is required (or use --host FILE or --profile host for a machine's pools)")
        return _pools_now(params.capture, params.profile, params.release, {"zones": params.zones})
    return compute_vmemmap(
        params.profile, params.release, pool_bytes=pool.size_bytes, hugepage_count=pool.hugepages,
        hugepage_sizes=list(params.hugepage_sizes), struct_page_bytes=params.struct_page_size,
        devdax=params.devdax, layout=params.layout, zones=params.zones,
    )


def _hvo_now_args(capture: Any, what_if: dict) -> tuple:
    """What of a capture HVO now depends on: pools, the sysctl, zones, memmap_on_memory, hot-plugged hugepages."""
    return ([(p.size_bytes, p.nr) for p in capture.pools], capture.hugetlb_optimize_vmemmap, what_if.get("zones", 1),
            capture.memmap_on_memory,
            None if capture.hotplugged_hugepages is None else
            (capture.hotplugged_ram_bytes or 0, {int(s): n for s, n in capture.hotplugged_hugepages.items()}))


def _pools_now(capture: Any, profile: Any, release: Any, what_if: dict) -> HostVmemmapResult:
    from hugecalc.calc.hvo_now import compute_hvo_now

    pools, hvo_now, zones, memmap_on_memory, hotplugged = _hvo_now_args(capture, what_if)
    return compute_hvo_now(profile, release, pools, hvo_now, capture.mem_available_bytes, zones, memmap_on_memory,
                           hotplugged)


def _draw_pool(out: Console, result: VmemmapResult, params: Params) -> None:
    from hugecalc.render import print_header, print_wrapped, transposed_table

    pool: Pool = params.pool
    sizes = "each size" if len(result.rows) > 1 else fmt_size(result.rows[0].hugepage_size_bytes)
    shown = (fmt_bytes(pool.size_bytes) if pool.size_bytes else
             f"{pool.hugepages} hugepage{'s' if pool.hugepages > 1 else ''} of {sizes}")
    print_header(out, result, f"{'device-DAX vmemmap' if params.devdax else 'HVO'} for a pool of {shown}")
    out.print(transposed_table(result.rows, key="hugepage_size_bytes", skip=("reason",),
                               titles={"optimizable": "vmemmap dedup applies"} if params.devdax else None))
    reasons: dict[str, list[str]] = {}
    for row in result.rows:
        if row.reason:
            reasons.setdefault(row.reason, []).append(fmt_size(row.hugepage_size_bytes))
    for reason, sizes in reasons.items():
        print_wrapped(out, f"why not ({', '.join(sizes)}): {reason}", 4)


def _draw_pools_now(out: Console, result: HostVmemmapResult, params: Params) -> None:
    from hugecalc.render import print_header, transposed_table

    print_header(out, result, f"HVO on {params.capture.hostname}: the pools now and with HVO on")
    out.print(transposed_table(result.rows, key="hugepage_size_bytes", skip=("reason",)))


def _fleet_row(capture: Any, profile: Any, release: Any, what_if: dict) -> dict:
    return hvo_now_figures(profile, release, *_hvo_now_args(capture, what_if))


SPEC = Spec(
    name="vmemmap", rank=1, compute=compute, batch=True,
    documents={VmemmapResult: _draw_pool, HostVmemmapResult: _draw_pools_now},
    sweep=("pool", "struct_page_size", "zones", "kernel"), sweep_title="HVO",
    fleet=Fleet(
        help="HVO across the fleet: each host's pools now and with HVO on (as 'vmemmap --host FILE').\n\n"
             "\b\nExample:\n  hugecalc fleet vmemmap fleet/ --by arch --kernel 7.1",
        row=_fleet_row, what_if=lambda params: {"zones": params.zones}, options=ZONES,
        rule="compute_hvo_now() (calc/hvo_now.py), as `hugecalc vmemmap --host FILE`: the capture's pools "
             "with its vm.hugetlb_optimize_vmemmap now, and with HVO on as the what-if",
        figures={"pool_bytes": "sum over pools of hugepage size x nr_hugepages", "hugepages": "sum of nr_hugepages",
                 "saved_now_bytes": "sum over pools of the net saving with the sysctl as captured",
                 "saved_what_if_bytes": "sum over pools of the net saving with HVO on",
                 "gain_bytes": "saved_what_if_bytes - saved_now_bytes"},
        labels={"pool_bytes": "Pool size", "hugepages": "Hugepages in the pool now", "saved_now_bytes": "Net saving now",
                "saved_what_if_bytes": "Net saving with HVO on", "gain_bytes": "Gain"}),
)
