"""``hugecalc profiles``: the bundled machine profiles, listed or shown in full."""

from __future__ import annotations

from typing import Any

import click

from hugecalc.cli.common import common_options, console, given, Table, Text
from hugecalc.profiles import Profile, bundled_profiles, load_profile
from hugecalc.releases import Release
from hugecalc.units import fmt_bytes, fmt_size


@click.command()
@click.argument("name", required=False)
@common_options
def profiles(profile: Profile, release: Release, as_json: bool, explain: bool, capture: Any, name: str | None) -> None:
    """List the bundled machine profiles, or show one (NAME, or --profile PATH) in full.

    \b
    Examples:
      hugecalc profiles
      hugecalc profiles arm64-16k
      hugecalc profiles --profile ./my-machine.yaml --json
    """
    import json

    explicit = name is not None or given("profile_name") or capture is not None
    if name is not None:
        profile = load_profile(name)
    if not explicit:
        loaded = [load_profile(n) for n in sorted(bundled_profiles())]
        if as_json:
            click.echo(json.dumps({**_envelope(profile, release, {"list": True}),
                                   "profiles": [p.model_dump(mode="json") for p in loaded]}, indent=2))
            return
        table = Table(title="Bundled profiles (hugecalc profiles NAME for details)", title_justify="left")
        for col in ("name", "arch", "page", "levels", "hugetlb sizes", "description"):
            table.add_column(col, overflow="fold")  # wrap, never cut
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
        click.echo(json.dumps({**_envelope(profile, release, {"name": profile.name}),
                               "definition": profile.model_dump(mode="json"), "geometry": geometry}, indent=2))
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
    cont = (f"{profile.cont_pte_entries} PTEs ({fmt_bytes(profile.cont_pte_entries * profile.page_size)})"
            if profile.cont_pte_entries > 1 else "none")
    cont_pmd = f"{profile.cont_pmd_entries} PMDs" if profile.cont_pmd_entries > 1 else "none"
    out.print(f"contiguous PTE block: {cont}; contiguous PMD block: {cont_pmd}; vmemmap PMD-mapped: "
              f"{'yes' if profile.vmemmap_pmd_mapped else 'no'}")


def _envelope(profile: Profile, release: Release, inputs: dict) -> dict:
    from hugecalc.result import SCHEMA_VERSION

    return {"schema_version": SCHEMA_VERSION, "command": "profiles", "profile": profile.name,
            "kernel": str(release), "inputs": inputs}

