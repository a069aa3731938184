"""``hugecalc fleet``: one what-if asked of many hosts' captures, on Dask."""

from __future__ import annotations

import sys
from typing import Any, Callable

import click

from hugecalc.cli.common import console, emit, given, Group, options, Table, Text
from hugecalc.cli.mthp import mthp_kwargs, mthp_options
from hugecalc.cli.pgtable import pgtable_options
from hugecalc.errors import InputError
from hugecalc.units import fmt_bytes

BYTES = ("_bytes",)


@click.group(cls=Group)
def fleet() -> None:
    """Ask one what-if of many hosts' captures: per host the same result as --host FILE, in total
    sums, means and percentiles, grouped --by any capture field. Runs in-process on Dask, or on an
    existing dask.distributed cluster (--scheduler). Exit 1 if any host's capture failed.

    \b
    Examples:
      hugecalc fleet synth --hosts 1000 --seed 1 --output fleet/
      hugecalc fleet vmemmap fleet/ --by arch --by kernel
      hugecalc fleet mthp fleet/ --size 64k --by profile --output results.parquet
      hugecalc fleet pgtable 'captures/*.json' --vma-size 64G --after dontneed --scheduler tcp://10.0.0.5:8786
    """


def fleet_options(fn: Callable) -> Callable:
    return options(
        click.argument("sources", nargs=-1, required=True),
        click.option("--by", "by", multiple=True, metavar="KEY",
                     help="Group by a capture field: arch, kernel, profile, thp.enabled, config.CONFIG_PT_RECLAIM, ..."),
        click.option("--kernel", default=None, metavar="X.Y[.Z]", help="What-if: every host on this release."),
        click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="A dask.distributed scheduler (tcp://host:8786); default: in-process."),
        click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
                     help="Also write one row per host to a Parquet file (pyarrow)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout."),
        click.option("--explain", is_flag=True, help="Show how each figure was derived: per host, then over hosts."),
    )(fn)


def _run(command: str, sources: tuple[str, ...], by: tuple[str, ...], kernel: str | None, scheduler: str | None,
         output: str | None, as_json: bool, explain: bool, what_if: dict) -> None:
    from hugecalc import fleet as engine

    if kernel is not None:
        from hugecalc.releases import parse_release

        parse_release(kernel)  # a bad release is bad input before any host is read
    if output and not output.endswith(".parquet"):
        raise InputError(f"--output {output}: write one row per host to a .parquet file")
    options = {**what_if, "kernel": kernel}
    progress = None
    if sys.stderr.isatty():
        from rich.progress import Progress

        bar = Progress(console=console().__class__(stderr=True), transient=True)
        task = bar.add_task(f"fleet {command}", total=None)
        bar.start()
        progress = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
    try:
        rows = engine.run(command, list(sources), options, list(by), scheduler, progress)
    finally:
        if progress:
            bar.stop()
    groups = engine.aggregate(command, rows, list(by))
    failed = [{"source": r["source"], "error": r["error"]} for r in rows if r["error"] is not None]
    skipped = [{"source": r["source"], "reason": r["skipped"]} for r in rows if r["skipped"] is not None]
    if output:
        engine.write_parquet(output, rows)
    from hugecalc.fleet import FleetResult

    result = FleetResult(command=f"fleet {command}", profile="per host (captured)",
                         kernel=kernel or "per host (captured)",
                         inputs={"sources": list(sources), "by": list(by), "kernel": kernel, "scheduler": scheduler,
                                 "what_if": {k: v for k, v in what_if.items()}},
                         hosts=len(rows) - len(failed) - len(skipped), hosts_failed=len(failed), failed=failed,
                         hosts_skipped=len(skipped), skipped=skipped, groups=groups,
                         explain=engine.explain(command, groups))
    emit(result, as_json, explain, lambda out: _draw(out, command, result.model_dump(), by))
    if failed:
        raise click.exceptions.Exit(1)


def _draw(out: Any, command: str, doc: dict, by: tuple[str, ...]) -> None:
    from hugecalc.fleet import METRICS, STATS
    from hugecalc.render import print_wrapped

    out.print(Text(f"fleet {command}: {doc['hosts']:,} hosts"
                   + (f", {doc['hosts_skipped']:,} not applicable" if doc["skipped"] else "")
                   + (f", {doc['hosts_failed']:,} failed" if doc["failed"] else ""), style="bold"))
    columns = [*by, "hosts", "figure", *STATS]
    rows = []
    for g in doc["groups"]:
        label = [str(g["group"].get(k, "all")) for k in by]
        for i, metric in enumerate(METRICS[command]):
            if metric not in g["metrics"]:
                continue
            m = g["metrics"][metric]
            cell = (lambda v: fmt_bytes(v)) if metric.endswith(BYTES) else (lambda v: f"{v:,.0f}")
            rows.append([*(label if i == 0 else [""] * len(label)), f"{g['hosts']:,}" if i == 0 else "",
                         metric.removesuffix("_bytes"), *(cell(m[s]) for s in STATS)])
    from rich import box

    widths = [max([len(col)] + [len(r[k]) for r in rows]) for k, col in enumerate(columns)]
    keep = len(by) + 2  # group, hosts, figure: repeated when the table is cut in two
    parts = [list(range(len(columns)))]
    if sum(widths) + 2 * len(columns) > out.width:  # too wide: the sums and means, then the percentiles
        parts = [list(range(keep + 2)), list(range(keep)) + list(range(keep + 2, len(columns)))]
    for part in parts:
        t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for k in part:
            text = columns[k] in by or columns[k] == "figure"
            t.add_column(columns[k], justify="left" if text else "right", overflow="fold", min_width=widths[k])
        for r in rows:
            t.add_row(*(r[k] for k in part))
        out.print(t)
    reasons: dict[str, int] = {}
    for x in doc["skipped"]:
        reasons[x["reason"]] = reasons.get(x["reason"], 0) + 1
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:5]:
        print_wrapped(out, f"not applicable to {n:,} host{'s' if n > 1 else ''}: {reason}", 4, "yellow")
    for f in doc["failed"][:10]:
        print_wrapped(out, f"failed: {f['source']}: {f['error']}", 4, "yellow")
    if len(doc["failed"]) > 10:
        out.print(Text(f"... and {len(doc['failed']) - 10} more (see --json)", style="yellow"))


@fleet.command("vmemmap")
@fleet_options
@click.option("--zones", type=click.IntRange(1, 1 << 16), default=1, show_default=True,
              help="Zones each pool spans (7.1 and later: one shared tail page per zone and size).")
def fleet_vmemmap(sources: tuple[str, ...], by: tuple[str, ...], kernel: str | None, scheduler: str | None,
                  output: str | None, as_json: bool, explain: bool, zones: int) -> None:
    """HVO across the fleet: each host's pools now and with HVO on (as 'vmemmap --host FILE').

    \b
    Example:
      hugecalc fleet vmemmap fleet/ --by arch --kernel 7.1
    """
    _run("vmemmap", sources, by, kernel, scheduler, output, as_json, explain, {"zones": zones})


@fleet.command("mthp")
@fleet_options
@mthp_options
def fleet_mthp(sources: tuple[str, ...], by: tuple[str, ...], kernel: str | None, scheduler: str | None,
               output: str | None, as_json: bool, explain: bool, **mthp: Any) -> None:
    """mTHP across the fleet: each host's THP settings now beside the what-if (as 'mthp --host FILE').

    \b
    Example:
      hugecalc fleet mthp fleet/ --size 64k --by profile
    """
    kw = mthp_kwargs(**mthp)
    settings = {k: kw[k] for k in ("enabled", "shmem_enabled") if kw[k]}
    settings.update({k: kw[k] for k in ("top_level", "huge") if given(k)})
    passed = {k: v for k, v in kw.items() if k not in ("enabled", "shmem_enabled", "top_level", "huge")}
    _run("mthp", sources, by, kernel, scheduler, output, as_json, explain, {"pass": passed, "what_if": settings})


@fleet.command("pgtable")
@fleet_options
@pgtable_options
def fleet_pgtable(sources: tuple[str, ...], by: tuple[str, ...], kernel: str | None, scheduler: str | None,
                  output: str | None, as_json: bool, explain: bool, touch_file: Any, **mapping: Any) -> None:
    """Page tables of one mapping on every host's profile and kernel (as 'pgtable --host FILE').

    \b
    Example:
      hugecalc fleet pgtable fleet/ --vma-size 64G --after dontneed --by arch
    """
    if mapping["vsize"] is None:
        raise InputError("--vma-size is required")
    if touch_file is not None:
        raise InputError("--touch-file: addresses are per host; use --touch-stride or --touch-fraction")
    _run("pgtable", sources, by, kernel, scheduler, output, as_json, explain, {"mapping": mapping})


@fleet.command("synth")
@click.option("--hosts", type=click.IntRange(1, 10_000_000), required=True, help="How many hosts.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Same seed, same captures.")
@click.option("--output", "-o", required=True, help="A directory (a file per host) or a .jsonl file.")
def fleet_synth(hosts: int, seed: int, output: str) -> None:
    """Write realistic synthetic captures: varied arch, release, memory, pools, THP settings, a few
    processes each.

    \b
    Example:
      hugecalc fleet synth --hosts 100000 --seed 1 --output fleet.jsonl
    """
    from hugecalc.synth import write_synthetic

    n = write_synthetic(hosts, seed, output)
    click.echo(f"hugecalc: wrote {n:,} synthetic captures to {output}", err=True)
