"""``hugecalc verify``: the predictions checked against the running kernel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing import Any

import click

from hugecalc.cli.common import SIZE, Group, common_options, emit, given
from hugecalc.cli.mthp import mthp_kwargs, mthp_options
from hugecalc.cli.pgtable import pgtable_options, touches_from_options
from hugecalc.errors import HostError, InputError, VerifyMismatch
from hugecalc.profiles import Profile
from hugecalc.releases import Release, parse_release
from hugecalc.units import fmt_size

if TYPE_CHECKING:
    from rich.console import Console


@click.group(cls=Group, invoke_without_command=True)
@click.option("--restore", is_flag=True,
              help="Only put back the settings of a verify run that was killed before it could (its journal).")
@click.pass_context
def verify(ctx: click.Context, restore: bool) -> None:
    """Run a real experiment on the running kernel (root) and print predicted beside measured.

    Every setting changed is restored, also on errors, Ctrl-C and SIGTERM; no hugepage is left
    allocated.  A run killed with SIGKILL (or by the OOM killer) leaves a journal of the original
    values, which the next verify run, or 'hugecalc verify --restore', puts back first.
    Exit 1 when a measurement differs from the prediction.

    \b
    Example:
      sudo hugecalc verify --restore
    """
    from hugecalc import host, restore as journal

    journal.on_notice = lambda message: click.echo(f"hugecalc: {message}", err=True)
    if ctx.invoked_subcommand is None and not restore:
        click.echo(ctx.get_help())
        return
    if not host.is_root():
        if restore:
            raise HostError("verify --restore writes kernel settings: run it as root")
        return  # each experiment refuses on its own, naming itself
    restored = journal.recover_abandoned()
    if restore and not restored:
        click.echo(f"hugecalc: nothing to restore (no journal of an unfinished verify run in "
                   f"{journal.state_dir()})", err=True)


@verify.command("vmemmap")
@click.option("--hugepage-size", type=SIZE, default="2M", show_default=True, help="Hugepage size to allocate.")
@click.option("--count", type=click.IntRange(min=1), default=16, show_default=True,
              help="Number of hugepages to allocate.")
@common_options
def verify_vmemmap_cmd(profile: Profile, release: Release, as_json: bool, explain: bool, capture: Any,
                       hugepage_size: int, count: int) -> None:
    """Allocate hugepages with HVO on and check the vmemmap freed against nr_memmap_pages.

    \b
    Example:
      sudo hugecalc verify vmemmap --hugepage-size 2M --count 64
    """
    from hugecalc.verify.vmemmap import verify_vmemmap

    notes: list[str] = []
    release = _running_release(release, notes)
    profile = _running_profile(profile)
    result = verify_vmemmap(profile, release, hugepage_size, count, notes)
    _emit_verify(result, as_json, explain, "vmemmap", "vmemmap differs")


DEFAULT_VERIFY_VMA_BYTES = 1 << 30


@verify.command("pgtable")
@pgtable_options
@common_options
def verify_pgtable_cmd(profile: Profile, release: Release, as_json: bool, explain: bool, capture: Any, vsize: int | None,
                       vma_start: int | None, touch_stride: int | None, touch_fraction: float | None, seed: int,
                       touch_file: Any, backing: str, after: str | None) -> None:
    """Map and touch in a child process, and check its VmPTE against the prediction.

    Without --vma-size: a 1 GiB anonymous mapping, every base page touched.

    \b
    Examples:
      sudo hugecalc verify pgtable
      sudo hugecalc verify pgtable --vma-size 64G --touch-stride 2M --after dontneed
      sudo hugecalc verify pgtable --vma-size 1G --touch-fraction 0.01 --seed 7
      sudo hugecalc verify pgtable --vma-size 256M --backing thp --after dontneed
      sudo hugecalc verify pgtable --vma-size 4G --backing hugetlb-2M
    """
    from hugecalc.verify.pgtable import verify_pgtable

    notes: list[str] = []
    release = _running_release(release, notes)
    profile = _running_profile(profile)
    vsize = DEFAULT_VERIFY_VMA_BYTES if vsize is None else vsize
    touches, vma_start = touches_from_options(profile, vsize, vma_start, backing, touch_stride, touch_fraction, seed, touch_file)
    result = verify_pgtable(profile, release, vsize=vsize, vma_start=vma_start, touches=touches,
                            backing=backing, after=after, notes=notes)
    _emit_verify(result, as_json, explain, "pgtable", "page tables differ")


@verify.command("mthp")
@mthp_options
@common_options
def verify_mthp_cmd(profile: Profile, release: Release, as_json: bool, explain: bool, capture: Any, **options: Any) -> None:
    """Run the pass on the running kernel: faults (getrusage) and folios by size (stats/).

    Sets the per-size sysfs switches for the pass and restores every one of them, also on
    errors and Ctrl-C; prepopulated pages are faulted with THP off, so they are base pages.
    Without any THP option it verifies the classic question, 16-page mTHP (64K on 4K pages).

    \b
    Examples:
      sudo hugecalc verify mthp
      sudo hugecalc verify mthp --size 64k
      sudo hugecalc verify mthp --size 64k --prepopulated-stride 1M --vma-size 256M
      sudo hugecalc verify mthp --madvise --access read-then-write
      sudo hugecalc verify mthp --memory shmem --shmem-enabled 64K=always
      sudo hugecalc verify mthp --memory tmpfs --huge always
    """
    from hugecalc.verify.mthp import verify_mthp

    notes: list[str] = []
    release = _running_release(release, notes)
    profile = _running_profile(profile)
    switches = ("sizes", "enabled", "top_level", "madvise", "nohugepage", "shmem_enabled", "huge")
    if options["memory"] == "anon" and not any(given(k) for k in switches):
        options["sizes"] = (profile.page_size * 16,)  # base pages only would be the least telling run
        notes.append(f"no THP option given: verifying --size {fmt_size(profile.page_size * 16)}")
    result = verify_mthp(profile, release, mthp_kwargs(**options, profile=profile), notes)
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


def _running_profile(profile: Profile) -> Profile:
    """verify predicts for this machine's geometry (its bundled profile) unless --profile says otherwise."""
    if given("profile_name"):
        return profile
    from hugecalc.profiles import load_profile
    from hugecalc.snapshot import machine_profile_name

    return load_profile(machine_profile_name())


def _running_release(release: Release, notes: list[str]) -> Release:
    """verify predicts for the running kernel unless --kernel says otherwise."""
    from hugecalc import host

    if given("host_file"):
        raise InputError("--host FILE: verify runs its experiment on this machine; a capture cannot be verified")
    if given("kernel"):
        return release
    running = host.running_release()
    try:
        return parse_release(running)
    except InputError:
        notes.append(f"the running kernel {running} is outside the modelled releases; using {release}")
        return release
