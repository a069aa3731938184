"""``hugecalc profiles``: the bundled machine profiles, listed or shown in full."""

from __future__ import annotations

from typing import Any

import click

from hugecalc.cli.command import Command, run
from hugecalc.cli.spec import Params, Spec
from hugecalc.cli.common import Table, Text, common_options
from hugecalc.errors import InputError
from hugecalc.profiles import ProfileList, ProfileShow, bundled_profiles, geometry, load_profile
from hugecalc.units import fmt_bytes, fmt_size


@click.command(cls=Command)
@click.argument("name", required=False)
@common_options
def profiles(**values: Any) -> None:
    """List the bundled machine profiles, or show one (NAME: a bundled name, host, a YAML file or a
    capture; or --profile, --host) in full.

    \b
    Examples:
      hugecalc profiles
      hugecalc profiles arm64-16k
      hugecalc profiles --profile ./my-machine.yaml --json
    """
    run(SPEC, values)


def compute(params: Params) -> ProfileList | ProfileShow:
    profile, name = params.profile, params.name
    if params.explain or "kernel" in params.given:
        raise InputError("profiles shows machine geometry: --kernel and --explain do not apply to it")
    if name is not None and ("profile_name" in params.given or params.capture is not None):
        raise InputError(f"profiles {name} names the profile to show: not with --profile or --host too")
    if name == "host":  # the running machine's profile, as --profile host reads it
        from hugecalc.machine.snapshot import capture_machine

        profile = capture_machine().profile
    elif name is not None:
        profile = load_profile(name)
    if name is None and "profile_name" not in params.given and params.capture is None:
        loaded = [load_profile(n) for n in sorted(bundled_profiles())]
        return ProfileList(command="profiles", profile=profile.name, kernel=str(params.release),
                           inputs={"list": True}, profiles=loaded)
    return ProfileShow(command="profiles", profile=profile.name, kernel=str(params.release),
                       inputs={"name": profile.name}, definition=profile, geometry=geometry(profile))


def _draw_list(out: Any, result: ProfileList, params: Params) -> None:
    loaded = result.profiles
    table = Table(title="Bundled profiles (hugecalc profiles NAME for details)", title_justify="left")
    for col in ("name", "arch", "page", "levels", "hugetlb sizes", "description"):
        table.add_column(col, overflow="fold")  # wrap, never cut
    for p in loaded:
        table.add_row(p.name, p.arch.value, fmt_size(p.page_size), str(len(p.levels)),
                      " ".join(fmt_size(h.size) + (f" ({h.requires})" if h.requires else "") for h in p.hugetlb),
                      p.description)
    out.print(table)


def _draw_one(out: Any, result: ProfileShow, params: Params) -> None:
    profile = result.definition
    out.print(Text(f"{profile.name}: {profile.description}", style="bold"))
    out.print(f"arch {profile.arch.value}, {profile.bits}-bit, PAGE_SIZE {fmt_size(profile.page_size)}, "
              f"sizeof(struct page) {profile.struct_page_bytes}, user address space "
              f"{fmt_bytes(profile.user_va_bytes)} ({profile.user_va_bytes:#x})")
    t = Table(title="Page-table levels", title_justify="left")
    for col in ("level", "entries", "entry bytes", "table bytes", "one entry maps", "one table maps"):
        t.add_column(col, justify="right")
    for g in result.geometry:
        t.add_row(g.level, f"{g.entries:,}", str(g.entry_bytes), fmt_bytes(g.table_bytes),
                  fmt_bytes(g.entry_span_bytes), fmt_bytes(g.table_span_bytes))
    out.print(t)
    t = Table(title="Hugetlb sizes", title_justify="left")
    for col in ("size", "mapped by", "entries"):
        t.add_column(col)
    for h in profile.hugetlb:
        t.add_row(fmt_size(h.size), h.mapping, str(h.contig))
    out.print(t)
    cont = (f"{profile.cont_pte_entries} PTEs ({fmt_bytes(profile.cont_pte_entries * profile.page_size)})"
            if profile.cont_pte_entries > 1 else "none")
    cont_pmd = f"{profile.cont_pmd_entries} PMDs" if profile.cont_pmd_entries > 1 else "none"
    out.print(f"contiguous PTE block: {cont}; contiguous PMD block: {cont_pmd}; vmemmap PMD-mapped: "
              f"{'yes' if profile.vmemmap_pmd_mapped else 'no'}")



SPEC = Spec(name="profiles", rank=8, compute=compute, batch=True,
            documents={ProfileList: _draw_list, ProfileShow: _draw_one})
