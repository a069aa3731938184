"""``--sweep`` and ``--plot`` on vmemmap, pgtable and mthp: one row per point, a chart under the table."""

from __future__ import annotations

from typing import Any, Callable

import click

from hugecalc.cli.common import Text, console, options
from hugecalc.errors import InputError
from hugecalc.units import fmt_bytes, fmt_size

sweep_options = options(
    click.option("--sweep", "sweeps", multiple=True, metavar="OPTION=START..STOP[:STEP|xFACTOR]|a,b,c",
                 help="Run once per value of an option (two: a grid); a table row and a chart point each."),
    click.option("--plot", type=click.Path(dir_okay=False), default=None, metavar="FILE.svg|png|pdf",
                 help="Also draw the chart to a file (matplotlib: pip install 'hugecalc[plot]')."),
)

# Per command: the options that can be swept, and the figures of one result: name -> (value, is bytes).
SWEEPABLE = {
    "vmemmap": {"pages", "struct-page-size", "zones", "kernel"},
    "pgtable": {"vma-size", "vsize", "vma-start", "touch-stride", "touch-fraction", "seed", "shared-by", "kernel"},
    "mthp": {"size", "vma-size", "vsize", "vma-start", "file-offset", "touch-stride", "prepopulated-stride", "max-ptes-none",
             "kernel"},
}


def _figures(command: str, doc: dict) -> dict[str, tuple[Any, bool]]:
    if command == "vmemmap":
        return {f"saved {fmt_size(r['hugepage_size_bytes'])}": (r["saved_bytes"], True) for r in doc["rows"]}
    if command == "pgtable":
        out = {"page tables": (doc["page_table_bytes"], True), "populated": (doc["populated_bytes"], True)}
        if doc.get("page_table_bytes_after") is not None:
            out["after madvise"] = (doc["page_table_bytes_after"], True)
        return out
    return {"faults": (doc["faults"], False), "TLB entries": (doc["tlb_entries"], False),
            "populated": (doc["populated_bytes"], True), "page tables": (doc["page_table_bytes"], True)}


CHARTED = {"vmemmap": None, "pgtable": ("page tables", "after madvise"), "mthp": ("faults", "TLB entries")}


def _raw_args() -> list[str]:
    """The command's own arguments as given, without --sweep, --plot and --json."""
    raw = click.get_current_context().find_root().meta.get("hugecalc.raw_args", [])[1:]
    out, skip = [], False
    for arg in raw:
        if skip:
            skip = False
            continue
        if arg in ("--sweep", "--plot"):
            skip = True
            continue
        if arg.startswith(("--sweep=", "--plot=")) or arg == "--json":
            continue
        out.append(arg)
    return out


def _how(command: str, base: list[str], sweeps: list) -> list:
    from hugecalc.result import Derivation

    fixed = " ".join(["hugecalc", command, *base])
    return [Derivation(scope="sweep", figure=f"each row ({s.option})",
                       formula=f"{fixed} --{s.option} V for V in {', '.join(s.label(v) for v in s.values)}"
                               + (" (a grid: every combination with the other sweep)" if len(sweeps) > 1 else ""),
                       rule="the same calculation as one run with that value; each point's derivations are in "
                            "its result (--json --explain), the first and last are shown here")
            for s in sweeps]


def run_sweep(command: str, specs: tuple[str, ...], plot: str | None, as_json: bool, explain: bool,
              header: Callable[[dict], str]) -> None:
    import json

    from hugecalc.cli.batch import run_one
    from hugecalc.plot import Chart, terminal, write
    from hugecalc.render import to_json
    from hugecalc.sweep import grid, parse_sweep

    sweeps = [parse_sweep(s, SWEEPABLE[command]) for s in specs]
    base = _raw_args()
    points = []
    for values in grid(sweeps):
        args = list(base)
        for sweep, value in zip(sweeps, values):
            args += [f"--{sweep.option}", sweep.arg(value)]
        text, ok = run_one(json.dumps({"command": command, "args": args}))
        doc = json.loads(text)
        if not ok:
            where = ", ".join(f"{s.option}={s.label(v)}" for s, v in zip(sweeps, values))
            raise InputError(f"--sweep at {where}: {doc['error']}")
        points.append({"values": {s.option: v for s, v in zip(sweeps, values)}, "result": doc})
    first = points[0]["result"]
    fixed = " ".join(base)
    kernel = "kernel swept" if any(s.option == "kernel" for s in sweeps) else f"kernel {first.get('kernel')}"
    title = f"hugecalc {command} {fixed} — profile {first.get('profile')}, {kernel}".replace("  ", " ")
    x = sweeps[0]
    names = list(_figures(command, first))
    charted = [n for n in names if CHARTED[command] is None or n in CHARTED[command]]
    y_bytes = _figures(command, first)[charted[0]][1]
    chart = Chart(title=title, x_label=x.option, y_label=" / ".join(charted) + (" (bytes)" if y_bytes else ""),
                  x_kind=x.kind, y_bytes=y_bytes, log_x=x.geometric, x_values=list(x.values))
    second = sweeps[1] if len(sweeps) > 1 else None
    for i, name in enumerate(charted):
        for j, v2 in enumerate(second.values if second else [None]):
            label = name + (f", {second.option}={second.label(v2)}" if second else "")
            step = len(second.values) if second else 1
            chart.series[label] = [_figures(command, points[k * step + j]["result"]).get(name, (None,))[0]
                                   for k in range(len(x.values))]
        if i == 0 and second:
            break  # a grid charts the first figure, one line per value of the second sweep
    if plot:
        write(chart, plot)
    if as_json:
        from hugecalc.sweep import SweepResult

        result = SweepResult[dict[str, Any]](
            command=command, profile=first.get("profile"), kernel=kernel.removeprefix("kernel "),
            inputs={"args": base},
            sweeps=[{"option": s.option, "values": list(s.values), "geometric": s.geometric} for s in sweeps],
            points=points, explain=_how(command, base, sweeps))
        click.echo(to_json(result, explain))
        return
    out = console()
    out.print(Text(header(first) + f" — swept {' x '.join(s.option for s in sweeps)}", style="bold"))
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for s in sweeps:
        table.add_column(s.option, justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for p in points:
        figures = _figures(command, p["result"])
        table.add_row(*(s.label(p["values"][s.option]) for s in sweeps),
                      *(("-" if figures.get(n, (None,))[0] is None else
                         fmt_bytes(figures[n][0]) if figures[n][1] else f"{figures[n][0]:,}") for n in names))
    out.print(table)
    out.print(Text(terminal(chart, out.width)))
    if explain:
        from hugecalc.render import print_derivations
        from hugecalc.result import Derivation

        print_derivations(out, _how(command, base, sweeps), "How the sweep was run")
        ends = [points[0], points[-1]] if len(points) > 1 else points
        for p in ends:  # the formulas with the numbers at both ends of the sweep
            at = ", ".join(f"{s.option}={s.label(p['values'][s.option])}" for s in sweeps)
            print_derivations(out, [Derivation(**d) for d in p["result"].get("explain", [])],
                              f"How each figure was derived at {at}")
