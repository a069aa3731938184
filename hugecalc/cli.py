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
    """A size spelled like the kernel's memparse: 4096, 0x1000, 64K, 2M, 1G, 2MiB."""

    name = "SIZE"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        try:
            n = parse_size(value, param.opts[0] if param else "size")
        except InputError as e:
            self.fail(str(e), param, ctx)
        if n <= 0:
            self.fail(f"{value!r} must be greater than zero", param, ctx)
        return n


SIZE = Size()


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
      hugecalc profiles arm64-4k
      sudo hugecalc verify vmemmap --hugepage-size 2M --count 64
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

    explicit = name is not None or any(a.startswith("--profile") for a in sys.argv[1:])
    if name is not None:
        profile = load_profile(name)
    if not explicit:
        loaded = [load_profile(n) for n in sorted(bundled_profiles())]
        if as_json:
            click.echo(json.dumps({"profiles": [p.model_dump(mode="json") for p in loaded]}, indent=2))
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
        click.echo(json.dumps({"profile": profile.model_dump(mode="json"), "geometry": geometry}, indent=2))
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
    from hugecalc import host
    from hugecalc.render import list_table, print_header
    from hugecalc.verify import verify_vmemmap

    notes: list[str] = []
    ctx = click.get_current_context()
    if ctx.params.get("kernel") is None and "--kernel" not in " ".join(sys.argv):
        running = host.running_release()
        try:
            release = parse_release(running)
        except InputError:
            notes.append(f"the running kernel {running} is outside the modelled releases; using {release}")
    result = verify_vmemmap(profile, release, hugepage_size, count, notes)

    def draw(out: Console) -> None:
        print_header(out, result, f"verify vmemmap on {result.inputs['running_kernel']}")
        out.print(list_table(result.checks))

    emit(result, as_json, explain, draw)
    if not result.ok:
        raise VerifyMismatch("measured vmemmap differs from the prediction")


def main() -> None:
    cli(prog_name="hugecalc")
