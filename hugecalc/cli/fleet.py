"""``hugecalc fleet``: one what-if asked of many hosts' captures, on Dask."""

from __future__ import annotations

import sys
from typing import Any, Callable

import click

from hugecalc.cli.command import Command, given_params
from hugecalc.cli.spec import Params, Spec
from hugecalc.cli.advise import Percent
from hugecalc.cli.common import SIZE, Duration, Group, Table, Text, console, emit, options
from hugecalc.errors import InputError
from hugecalc.fleet.advise import FleetAdviseResult
from hugecalc.fleet.engine import FleetResult
from hugecalc.units import fmt_bytes

BYTES = ("_bytes",)


class FleetGroup(Group):
    """fleet's subcommands, one per command that declares what it asks of each host (Spec.fleet),
    and synth."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from hugecalc.cli import specs

        return [spec.name for spec in specs() if spec.fleet] + ["advise", "synth"]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == "synth":
            return fleet_synth
        if name == "advise":
            return fleet_advise
        from hugecalc.cli.command import load

        found = load(name)
        return fleet_command(found[0]) if found and found[0].fleet else None


@click.group(cls=FleetGroup)
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
      hugecalc fleet advise records/ --max-bloat 5%
    """


def fleet_options(fn: Callable) -> Callable:
    return options(
        click.argument("sources", nargs=-1, required=True),
        click.option("--by", "by", multiple=True, metavar="KEY",
                     help="Group by a capture field: arch, kernel, profile, thp.enabled, config.CONFIG_PT_RECLAIM, ..."),
        click.option("--kernel", default=None, metavar="X.Y[.Z]", help="What-if: every host on this release."),
        click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="A dask.distributed scheduler (tcp://host:8786); default: in-process."),
        click.option("--timeout", type=Duration(), default=None,
                     help="With --scheduler: the hosts without a result by then fail (a hung or lost worker); "
                          "default 10m."),
        click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
                     help="Also write one row per host to a Parquet file (pyarrow)."),
        click.option("--force", is_flag=True, help="Write --output over a symbolic link or another user's file."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout."),
        click.option("--explain", is_flag=True, help="Show how each figure was derived: per host, then over hosts."),
    )(fn)


def _check_timeout(timeout: float | None, scheduler: str | None) -> None:
    if timeout is not None and scheduler is None:
        raise InputError("--timeout bounds a cluster run: give --scheduler too (in-process, a run is yours to stop)")


def _run(spec: Spec, params: Params) -> None:
    from hugecalc.fleet import engine

    v = params.values
    _check_timeout(v["timeout"], v["scheduler"])
    if v["kernel"] is not None:
        from hugecalc.releases import parse_release

        parse_release(v["kernel"])  # a bad release is bad input before any host is read
    if v["output"] and not v["output"].endswith(".parquet"):
        raise InputError(f"--output {v['output']}: write one row per host to a .parquet file")
    if v["output"]:
        from hugecalc.files import check_output

        check_output(v["output"], "--output", v["force"])  # before the fleet is computed
    _check_by(v["by"])
    what_if = spec.fleet.what_if(params)
    options = {"what_if": what_if, "kernel": v["kernel"], "walks": spec.fleet.walks}
    progress = None
    if sys.stderr.isatty():
        from rich.progress import Progress

        bar = Progress(console=console().__class__(stderr=True), transient=True)
        task = bar.add_task(f"fleet {spec.name}", total=None)
        bar.start()
        progress = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
    try:
        hosts = engine.run(spec.fleet.row, list(v["sources"]), options, list(v["by"]), v["scheduler"], progress,
                           v["timeout"], figures=list(spec.fleet.figures), keep_rows=bool(v["output"]))
    finally:
        if progress:
            bar.stop()
    reasons = sorted(((n, reason) for reason, (n, _) in hosts.skipped.items()), key=lambda x: -x[0])
    if hosts.count and hosts.skipped_count == hosts.count:  # a what-if no host can take is bad input
        n, reason = reasons[0]
        raise InputError(f"the what-if applies to none of the {hosts.count:,} hosts: {reason} ({n:,} of them)")
    figures = list(spec.fleet.figures)
    groups = engine.aggregate(figures, hosts, list(v["by"]))
    failed = hosts.failed
    skipped = [{"source": source, "reason": reason} for reason, (_, sources) in hosts.skipped.items() for source in sources]
    if v["output"]:
        engine.write_parquet(v["output"], hosts.rows, v["force"])
    result = FleetResult(command=f"fleet {spec.name}", profile="per host (captured)",
                         kernel=v["kernel"] or "per host (captured)",
                         inputs={"sources": list(v["sources"]), "by": list(v["by"]), "kernel": v["kernel"],
                                 "scheduler": v["scheduler"], "what_if": _shown(what_if)},
                         hosts=hosts.count - len(failed) - hosts.skipped_count, hosts_failed=len(failed), failed=failed,
                         hosts_skipped=hosts.skipped_count, skipped=skipped,
                         skipped_reasons=[{"reason": reason, "hosts": n} for n, reason in reasons], groups=groups,
                         explain=engine.derivations(spec.fleet.figures, spec.fleet.rule, groups))
    emit(result, v["as_json"], v["explain"],
         lambda out: _draw(out, spec.name, figures, result.model_dump(), v["by"], spec.fleet.labels))
    if failed:
        raise click.exceptions.Exit(1)


def _check_by(keys: tuple[str, ...]) -> None:
    """A --by key is a capture field (arch, kernel, profile, hostname, hugetlb_optimize_vmemmap, ...) or a
    dotted path into one of its tables (thp.enabled, config.CONFIG_PT_RECLAIM)."""
    from hugecalc.machine.capture import Capture

    tables = ("thp", "config", "profile")
    fields = [f for f in Capture.model_fields if f not in ("processes", "pools", "sources", "unknown", "inputs", "notes")]
    for key in keys:
        first, dot, _ = key.partition(".")
        if first not in fields or (dot and first not in tables):
            raise InputError(f"--by {key!r} is not a capture field: use one of {', '.join(fields)}, or thp.X, config.X")


def _shown(what_if: dict) -> dict:
    """The what-if as its JSON shows it (models as their fields)."""
    return {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in what_if.items()}


def _draw(out: Any, command: str, figures: list[str], doc: dict, by: tuple[str, ...], labels: dict[str, str]) -> None:
    from hugecalc.fleet.engine import STATS
    from hugecalc.render import print_wrapped

    out.print(Text(f"fleet {command}: {doc['hosts']:,} host{'' if doc['hosts'] == 1 else 's'}"
                   + (f", {doc['hosts_skipped']:,} not applicable" if doc["hosts_skipped"] else "")
                   + (f", {doc['hosts_failed']:,} failed" if doc["failed"] else ""), style="bold"))
    columns = [*by, "hosts", "figure", *STATS]
    rows, full = [], []  # the table's rows (a group named once), and each row whole (for blocks)
    for g in doc["groups"]:
        label = [str(g["group"].get(k, "all")) for k in by]
        first = True
        for metric in figures:
            if metric not in g["metrics"]:
                continue
            m = g["metrics"][metric]
            in_bytes = metric.endswith(BYTES) or "_bytes_" in metric  # page_table_bytes_after too
            cell = (lambda v: fmt_bytes(v)) if in_bytes else (lambda v: f"{v:,.0f}")
            values = [labels.get(metric, metric), *(cell(m[s]) for s in STATS)]
            full.append([*label, f"{g['hosts']:,}", *values])
            rows.append([*(label if first else [""] * len(label)), f"{g['hosts']:,}" if first else "", *values])
            first = False
    from rich import box

    from hugecalc.render import Fitted

    # Every column at least as wide as its longest cell: no number is ever cut. Too wide for the
    # terminal: the sums and means, then the percentiles; a part that still does not fit is printed
    # a block per row (Fitted).
    widths = [max([len(col)] + [len(r[k]) for r in rows]) for k, col in enumerate(columns)]
    figure = columns.index("figure")  # a label may wrap at its spaces: its longest word is its least width
    widths[figure] = max([len("figure")] + [len(w) for r in rows for w in r[figure].split()])
    keep = len(by) + 2  # group, hosts, figure: repeated when the table is cut in two
    parts = [list(range(len(columns)))]
    if sum(widths) + 3 * (len(columns) - 1) > out.width:
        parts = [list(range(keep + 2)), list(range(keep)) + list(range(keep + 2, len(columns)))]
    for part in parts:
        t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for k in part:
            text = columns[k] in by or columns[k] == "figure"
            t.add_column(columns[k], justify="left" if text else "right", overflow="fold", min_width=widths[k],
                         no_wrap=not text)
        for r in rows:
            t.add_row(*(r[k] for k in part))
        out.print(Fitted(t, [[r[k] for k in part] for r in full]))
    for x in doc["skipped_reasons"][:5]:
        reason, n = x["reason"], x["hosts"]
        print_wrapped(out, f"not applicable to {n:,} host{'s' if n > 1 else ''}: {reason}", 4, "yellow")
    for f in doc["failed"][:10]:
        print_wrapped(out, f"failed: {f['source']}: {f['error']}", 4, "yellow")
    if len(doc["failed"]) > 10:
        out.print(Text(f"... and {len(doc['failed']) - 10} more (see --json)", style="yellow"))


def fleet_command(spec: Spec) -> click.Command:
    """``fleet COMMAND``: the command's fleet options and the sources, grouping and cluster options."""

    def callback(**values: Any) -> None:
        ctx = click.get_current_context()
        _run(spec, resolve_fleet(values, given_params(ctx)))

    callback.__doc__ = spec.fleet.help
    return click.command(spec.name, cls=Command)(fleet_options(spec.fleet.options(callback)))


def resolve_fleet(values: dict, given: frozenset[str]) -> Params:
    """A fleet command's options: the profile and release are each host's own."""
    from hugecalc.profiles import load_profile
    from hugecalc.releases import parse_release

    return Params(values=values, given=given, profile=load_profile(None), release=parse_release(None))


@click.command("synth")
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
    import os

    from hugecalc.files import check_output
    from hugecalc.fleet.synth import write_synthetic

    if output.endswith((".jsonl", ".ndjson")):
        check_output(output, "--output")
    elif output.endswith(".json"):
        raise InputError(f"--output {output}: a fleet is a folder (a file per host) or a .jsonl file, not one .json")
    elif os.path.lexists(output) and not os.path.isdir(output):
        raise InputError(f"--output {output} exists and is not a folder")
    elif os.path.isdir(output) and _has_entries(output):
        raise InputError(f"--output {output}: the folder is not empty; a fleet written there would mix with what is in it")
    n = write_synthetic(hosts, seed, output)
    click.echo(f"hugecalc: wrote {n:,} synthetic captures to {output}", err=True)


def _has_entries(folder: str) -> bool:
    import os

    with os.scandir(folder) as entries:  # closed, not left to the collector
        return any(entries)


@click.command("advise", cls=Command)
@click.argument("sources", nargs=-1, required=True)
@click.option("--max-bloat", type=Percent(), default=None, help="Budget on every host: bloat at most this (5 or 5%).")
@click.option("--max-memory", type=SIZE, default=None, help="Budget on every host: memory populated at most SIZE.")
@click.option("--profile", "profile_name", default=None, metavar="NAME", help="Every host on this profile.")
@click.option("--kernel", default=None, metavar="X.Y[.Z]", help="Every host on this release.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="A dask.distributed scheduler (tcp://host:8786); default: in-process.")
@click.option("--timeout", type=Duration(), default=None,
              help="With --scheduler: the hosts without a result by then fail (a hung or lost worker); default 10m.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def fleet_advise(sources: tuple[str, ...], max_bloat: float | None, max_memory: int | None, profile_name: str | None,
                 kernel: str | None, scheduler: str | None, timeout: float | None, as_json: bool) -> None:
    """The THP settings within a budget on every host, from each host's record.

    Each host's record is advised as 'hugecalc advise --trace FILE' advises it (one Dask task a
    host), then the settings within the budget on all of them are ranked by the TLB entries they
    leave in all, and the hosts whose own advice differs are named. Exit 1 if any host's record
    failed.

    \b
    Example:
      hugecalc fleet advise records/ --max-bloat 5% --scheduler tcp://10.0.0.5:8786
    """
    from hugecalc.fleet.advise import fleet_advice, record_sources, run as run_advice
    from hugecalc.profiles import load_profile
    from hugecalc.releases import parse_release

    if profile_name:
        load_profile(profile_name)
    if kernel:
        parse_release(kernel)
    options = {"max_bloat": max_bloat, "max_memory": max_memory, "profile": profile_name, "kernel": kernel}
    _check_timeout(timeout, scheduler)
    result = fleet_advice(run_advice(record_sources(list(sources)), options, scheduler, timeout), options)
    emit(result, as_json, False, lambda out: _draw_advice(out, result))
    if result.hosts_failed:
        raise click.exceptions.Exit(1)


def _draw_advice(out: Any, result: Any) -> None:
    from hugecalc.render import list_table

    out.print(Text(f"fleet advise: {result.hosts:,} hosts, {result.hosts_failed:,} failed", style="bold"))
    out.print(Text(f"advised for every host: {result.advised or 'none (no setting is within the budget on all)'}",
                   style="bold"))
    if result.within_budget_everywhere:
        out.print(Text("within the budget on every host, best first:"))
        out.print(list_table(result.within_budget_everywhere[:10], skip=("same_as",)))
    if result.disagree:
        out.print(Text("hosts whose own advice is another setting: " + ", ".join(
            f"{label} ({n:,})" for label, n in sorted(result.disagree.items(), key=lambda kv: -kv[1]))))
    for h in result.hosts_advice:
        if h.error:
            out.print(Text(f"failed: {h.source}: {h.error}", style="red"))


SPEC = Spec(name="fleet", rank=6, documents={FleetResult: lambda out, result, params: None,
                                             FleetAdviseResult: lambda out, result, params: None})
