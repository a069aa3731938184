"""``hugecalc hgm``: the mapcount cost of HugeTLB high-granularity mapping (never merged)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from hugecalc.calc.hgm import HgmResult
from hugecalc.cli.command import Command, run
from hugecalc.cli.spec import Params, Spec
from hugecalc.cli.common import SIZE, AliasOption, Real, Text, common_options
from hugecalc.errors import InputError
from hugecalc.units import fmt_size, parse_size

if TYPE_CHECKING:
    from rich.console import Console


def _sizes(text: str, what: str) -> list[int]:
    return [parse_size(part, what) for part in text.split(",") if part.strip()] or [parse_size(text, what)]


@click.command(cls=Command)
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
@click.option("--atomic-ns", type=Real(min=0, min_open=True), default=None,
              help="Cost of an uncontended atomic (default: the profile's, 20).")
@click.option("--cache-miss-ns", type=Real(min=0), default=None,
              help="Extra cost of an atomic on a line not in cache (default: the profile's, 880).")
@click.option("--entry-ns", type=Real(min=0), default=None,
              help="Work per page-table entry mapped or unmapped (default: the profile's, 2914).")
@click.option("--notifier-invalidation-ms", "--invalidation-ms", "invalidation_ms", cls=AliasOption,
              type=Real(min=0), default=None,
              help="EPT/secondary-MMU invalidation per mmu_notifier window (default: the profile's, 20).")
@common_options
def hgm(**values: Any) -> None:
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
    run(SPEC, values)


def _path(params: Params) -> tuple[int, list[int]]:
    """The hugepage: --hugepage-size, else the end of a collapse/split --path, else the largest
    size; and the path (default: base page, hugepage)."""
    profile = params.profile
    if not profile.hugetlb:
        raise InputError(f"profile {profile.name} has no hugetlb page size")
    path = _sizes(params.path_text, "--path") if params.path_text else None
    grows = path is not None and len(path) > 1 and path[-1] == max(path)
    inferred = path[-1] if grows and params.operation in ("collapse", "split") else None
    size = params.hugepage_size or inferred or max(h.size for h in profile.hugetlb)
    return size, path or [profile.page_size, size]


def compute(params: Params) -> HgmResult:
    from hugecalc.calc.hgm import compute_hgm

    size, path = _path(params)
    profile = params.profile
    costs = {k: params.values[k] for k in ("atomic_ns", "cache_miss_ns", "entry_ns") if params.values[k] is not None}
    if params.invalidation_ms is not None:
        costs["notifier_invalidation_ms"] = params.invalidation_ms
    if costs:
        profile = profile.model_copy(update={"costs": profile.costs.model_copy(update=costs)})
    return compute_hgm(profile, params.release, hugepage_size=size, path=path, schemes=list(params.schemes),
                       operation=params.operation, guest_memory=params.guest_memory)


def _draw(out: Console, result: HgmResult, params: Params) -> None:
    from hugecalc.render import list_table, print_header, print_wrapped

    size, path = _path(params)
    steps = path[::-1] if params.operation in ("split", "unmap") else path  # in the order the steps run
    print_header(out, result, f"HGM {params.operation} {'->'.join(fmt_size(s) for s in steps)} of a {fmt_size(size)} page")
    print_wrapped(out, "never merged upstream: these are models of proposals (" + result.series + ")", 4, "bold red")
    out.print(list_table(result.schemes, skip=("steps",) + (() if params.guest_memory else ("guest_seconds",))))
    for sch in result.schemes:
        out.print(Text(f"{sch.scheme}, per hugepage:", style="bold"))
        out.print(list_table(sch.steps))


SPEC = Spec(name="hgm", rank=4, compute=compute, batch=True, documents={HgmResult: _draw})
