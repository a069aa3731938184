"""``hugecalc host``: read the running machine (and processes) into one capture."""

from __future__ import annotations

from typing import Any

import click

from hugecalc.machine.capture import Capture
from hugecalc.cli.command import Command
from hugecalc.cli.spec import Params, Spec
from hugecalc.cli.common import Table, Text, console
from hugecalc.errors import InputError
from hugecalc.units import fmt_bytes, fmt_size


def _pids(text: str | None) -> list[int] | None:
    if text is None:
        return None
    from hugecalc.machine.processes import all_pids

    if text.strip() == "all":
        return all_pids()
    try:
        pids = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise InputError(f"--pids {text!r}: use PID,PID,... or all") from None
    if not pids or any(p <= 0 for p in pids):
        raise InputError(f"--pids {text!r}: use PID,PID,... (positive) or all")
    return pids


@click.command(cls=Command)
@click.option("--pids", "pids_text", metavar="PID,...|all", default=None,
              help="Also capture these processes' mappings and present pages (root for folio sizes).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write the capture to FILE (atomically) instead of showing it.")
@click.option("--force", is_flag=True, help="Write --output over a symbolic link or another user's file.")
@click.option("--json", "as_json", is_flag=True, help="Print the capture, one JSON document, on stdout.")
@click.option("--explain", is_flag=True, help="Show where each value was read (the capture's 'sources').")
def host(pids_text: str | None, output: str | None, force: bool, as_json: bool, explain: bool) -> None:
    """Read this machine into a capture: kernel, profile, hugetlb pools, HVO, THP settings, and
    optionally processes. Every value names its source; what cannot be read is listed as unknown.

    A capture is one JSON document (schema_version 1) and a valid --profile; every calculator
    takes it with --host FILE, or reads the machine live with --profile host.

    \b
    Examples:
      hugecalc host
      hugecalc host --output capture.json
      sudo hugecalc host --pids $(pgrep -d, postgres) --output db1.json
      hugecalc vmemmap --host capture.json
      hugecalc mthp --host capture.json --size 64k
    """
    from hugecalc.files import check_output, write_whole
    from hugecalc.machine.snapshot import capture_machine

    if output:
        check_output(output, "--output", force)  # before the work
    capture = capture_machine(_pids(pids_text), every=(pids_text or "").strip() == "all")
    text = capture.model_dump_json(indent=1)
    if output:
        data = (text + "\n").encode()
        write_whole(output, data, "--output", force)
        n = len(capture.processes)
        click.echo(f"hugecalc: wrote {output} ({len(data):,} bytes, {n} process{'' if n == 1 else 'es'})", err=True)
        return
    if as_json:
        click.echo(text)
        return
    _draw(console(), capture, explain)


def compute(params: Params) -> Capture:
    """A batch line: the capture of this machine (and of --pids)."""
    from hugecalc.machine.snapshot import capture_machine

    if params.output:
        raise InputError("--output: a batch line prints its capture")
    return capture_machine(_pids(params.pids_text), every=(params.pids_text or "").strip() == "all")


def _draw(out: Any, capture: Capture, explain: bool) -> None:
    from hugecalc.render import print_wrapped

    out.print(Text(f"{capture.hostname}: Linux {capture.kernel} on {capture.arch} — profile {capture.profile.name} "
                   f"({capture.paging_levels} levels, {fmt_size(capture.page_size)} pages, "
                   f"struct page {capture.struct_page_bytes or '?'} B)", style="bold"))
    hvo = {None: "not available", 0: "off", 1: "on"}.get(capture.hugetlb_optimize_vmemmap, "?")
    out.print(f"memory {fmt_bytes(capture.mem_total_bytes or 0)}; vm.hugetlb_optimize_vmemmap {hvo}; "
              f"memmap pages {(capture.nr_memmap_pages or 0) + (capture.nr_memmap_boot_pages or 0):,}")
    t = Table(title="hugetlb pools", title_justify="left")
    for col in ("size", "nr", "free", "resv", "surplus", "per node (nr)"):
        t.add_column(col, justify="right")
    for p in capture.pools:
        t.add_row(fmt_size(p.size_bytes), f"{p.nr:,}", f"{p.free:,}", f"{p.resv:,}", f"{p.surplus:,}",
                  " ".join(f"{n}:{v['nr']}" for n, v in p.nodes.items()))
    out.print(t)
    th = capture.thp
    out.print(f"THP enabled {th.enabled}, defrag {th.defrag}, shmem_enabled {th.shmem_enabled}; per size, "
              "anon enabled/shmem_enabled ('-': the kernel has no such switch): "
              + ", ".join(f"{k} {v.get('enabled', '-')}/{v.get('shmem_enabled', '-')}" for k, v in th.sizes.items()))
    if th.boot_params:
        out.print("booted with " + " ".join(f"{k}={v}" for k, v in th.boot_params.items())
                  + ": the switches started from these, and read as above now")
    for p in capture.processes:
        out.print(f"process {p.pid} ({p.comm}): {len(p.vmas)} mappings, "
                  f"{fmt_bytes(sum(v.present_pages for v in p.vmas) * capture.page_size)} present, "
                  f"VmPTE {fmt_bytes(p.vm_pte_bytes)}")
    for u in capture.unknown:
        print_wrapped(out, f"unknown: {u['what']} ({u['source']}: {u['error']})", 4, "yellow")
    if explain:
        from hugecalc.render import print_derivations

        print_derivations(out, _derivations(capture), "Where each value was read", "read from")


def _derivations(capture: Any) -> list[Any]:
    """The capture's sources as derivations: the value (where it is one field) and where it was read."""
    from hugecalc.result import Derivation

    data = capture.model_dump(mode="json")
    # the pools are a list: reach one by its sysfs name, hugepages-<size>kB, and its nodes by node<N>
    data["pools"] = {f"hugepages-{p['size_bytes'] >> 10}kB": {**p, **{f"node{n}".replace("nodenode", "node"): v
                                                                   for n, v in p["nodes"].items()}}
                     for p in data["pools"]}
    out = []
    for key, source in capture.sources.items():
        value: Any = data
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        shown = (f"{len(value)} entries" if isinstance(value, (dict, list)) else "see the capture" if value is None
                 else str(value))
        scope = key.split(".")[0] if "." in key else "machine"
        out.append(Derivation(scope=scope, figure=key, formula=shown, rule=source))
    first = {d.scope: i for i, d in reversed(list(enumerate(out)))}  # each scope once, where it first appears
    return sorted(out, key=lambda d: first[d.scope])


SPEC = Spec(name="host", rank=5, compute=compute, batch=True,
            documents={Capture: lambda out, capture, params: _draw(out, capture, params.explain)})
