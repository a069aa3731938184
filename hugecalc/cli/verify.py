"""``hugecalc verify``: the predictions checked against the running kernel."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click

from hugecalc.cli.command import Command, given_params, resolve
from hugecalc.cli.spec import Params, Spec
from hugecalc.cli.common import SIZE, Group, common_options, emit
from hugecalc.cli.mthp import mthp_options, pass_shape, thp_settings
from hugecalc.cli.pgtable import DEFAULT_VMA_BYTES, pgtable_options, touches_from_options
from hugecalc.errors import HostError, InputError, VerifyMismatch
from hugecalc.releases import parse_release
from hugecalc.units import fmt_size
from hugecalc.verify.common import VerifyResult

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
    from hugecalc.machine import kernelfs, restore as journal

    journal.on_notice = lambda message: click.echo(f"hugecalc: {message}", err=True)
    if restore and ctx.invoked_subcommand is not None:
        raise click.UsageError("--restore only puts back a killed run's settings: run it alone, then the experiment")
    if ctx.invoked_subcommand is None and not restore:
        click.echo(ctx.get_help())
        return
    if not kernelfs.is_root():
        if restore:
            raise HostError("verify --restore writes kernel settings: run it as root")
        return  # each experiment refuses on its own, naming itself
    restored = journal.recover_abandoned()
    if restore and not restored:
        click.echo(f"hugecalc: nothing to restore (no journal of an unfinished verify run in "
                   f"{journal.state_dir()})", err=True)


@verify.command("vmemmap", cls=Command)
@click.option("--hugepage-size", type=SIZE, default="2M", show_default=True, help="Hugepage size to allocate.")
@click.option("--count", type=click.IntRange(min=1), default=16, show_default=True,
              help="Number of hugepages to allocate.")
@common_options
def verify_vmemmap_cmd(**values: Any) -> None:
    """Allocate hugepages with HVO on and check the vmemmap freed against nr_memmap_pages.

    \b
    Example:
      sudo hugecalc verify vmemmap --hugepage-size 2M --count 64
    """
    from hugecalc.verify.vmemmap import verify_vmemmap

    params, notes = _running()
    result = verify_vmemmap(params.profile, params.release, params.hugepage_size, params.count, notes)
    _emit_verify(result, params, "vmemmap", "vmemmap differs")


@verify.command("pgtable", cls=Command)
@pgtable_options
@common_options
def verify_pgtable_cmd(**values: Any) -> None:
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

    params, notes = _running()
    v = params.values
    vma_size = DEFAULT_VMA_BYTES if v["vma_size"] is None else v["vma_size"]
    touches, vma_start = touches_from_options(params.profile, vma_size, v["vma_start"], v["backing"],
                                              v["touch_stride"], v["touch_fraction"], v["seed"], v["touch_file"])
    result = verify_pgtable(params.profile, params.release, vma_size=vma_size, vma_start=vma_start, touches=touches,
                            backing=v["backing"], after=v["after"], notes=notes)
    _emit_verify(result, params, "pgtable", "page tables differ")


@verify.command("mthp", cls=Command)
@mthp_options
@common_options
def verify_mthp_cmd(**values: Any) -> None:
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

    params, notes = _running()
    switches = ("sizes", "enabled", "top_level", "madvise", "nohugepage", "shmem_enabled", "huge")
    if params.memory == "anon" and not any(k in params.given for k in switches):
        sixteen = params.profile.page_size * 16  # base pages only would be the least telling run
        params = params.with_value("sizes", (sixteen,))
        notes.append(f"no THP option given: verifying --size {fmt_size(sixteen)}")
    result = verify_mthp(params.profile, params.release, pass_shape(params), thp_settings(params, params.profile),
                         notes)
    _emit_verify(result, params, "mthp", "faults or folios differ")


def _emit_verify(result: Any, params: Params, what: str, mismatch: str) -> None:
    """Predicted beside measured; exit 1 (VerifyMismatch) when any check differs."""
    from hugecalc.render import list_table, print_header

    def draw(out: Console) -> None:
        print_header(out, result, f"verify {what} on {result.inputs['running_kernel']}")
        out.print(list_table(result.checks))

    emit(result, params.as_json, params.explain, draw)
    if not result.ok:
        raise VerifyMismatch(f"measured {mismatch} from the prediction")


def _running() -> tuple[Params, list[str]]:
    """The options of this verify command: predicting for this machine's geometry (its bundled
    profile) and its running kernel, unless --profile or --kernel say otherwise."""
    from hugecalc.machine import kernelfs
    from hugecalc.profiles import load_profile
    from hugecalc.machine.snapshot import machine_profile_name

    ctx = click.get_current_context()
    given = given_params(ctx)
    if "host_file" in given:
        raise InputError("--host FILE: verify runs its experiment on this machine; a capture cannot be verified")
    params, notes = resolve(dict(ctx.params), given), []
    if "profile_name" not in given:
        params = replace(params, profile=load_profile(machine_profile_name()))
    if "kernel" not in given:
        running = kernelfs.running_release()
        try:
            params = replace(params, release=parse_release(running))
        except InputError:
            notes.append(f"the running kernel {running} is outside the modelled releases; using {params.release}")
    return params, notes


SPEC = Spec(name="verify", rank=9, documents={VerifyResult: lambda out, result, params: None})
