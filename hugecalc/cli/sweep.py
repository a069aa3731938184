"""``--sweep`` and ``--plot``: one row per point, a chart under the table.

Which options sweep is each command's declaration (``Spec.sweep``); their kinds come from their
click types; every point is the command's own ``compute`` with the swept value in place, and its
figures are the result model's own (``Result.figures()``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from hugecalc.cli.common import Text, console, options
from hugecalc.cli.spec import Params, Spec
from hugecalc.errors import InputError
from hugecalc.units import fmt_bytes, fmt_size

if TYPE_CHECKING:
    from hugecalc.sweep import Sweep

sweep_options = options(
    click.option("--sweep", "sweeps", multiple=True, metavar="OPTION=START..STOP[:STEP|xFACTOR]|a,b,c",
                 help="Run once per value of an option (two: a grid); a table row and a chart point each."),
    click.option("--plot", type=click.Path(dir_okay=False), default=None, metavar="FILE.svg|png|pdf",
                 help="Also draw the chart to a file (matplotlib: pip install 'hugecalc[plot]')."),
    click.option("--force", is_flag=True,
                 help="Write --plot over a symbolic link or another user's file (refused otherwise)."),
)

def _kind(param: click.Parameter) -> str:
    """What a parameter's values are, read from its click type."""
    from hugecalc.cli.common import Size

    kind = getattr(param.type, "sweep_kind", None)
    if kind:
        return kind
    if isinstance(param.type, Size):
        return "size"
    if isinstance(param.type, click.types.IntParamType):
        return "count"
    if isinstance(param.type, click.types.FloatParamType):
        return "number"
    return "text"


def sweepable(spec: Spec, command: click.Command) -> dict[str, click.Parameter]:
    """Each option ``spec`` lets --sweep vary, by every name it is typed as (vma-size, vma_size)."""
    out = {}
    for param in command.params:
        if param.name in spec.sweep and isinstance(param, click.Option):
            for flag in param.opts:
                out[flag.lstrip("-")] = param
    return out


def point_params(params: Params, command: click.Command, swept: dict[str, click.Parameter], sweeps: list[Sweep],
                 values: tuple) -> Params:
    """The options at one point of the sweep: each swept value converted by its option's own type."""
    ctx = click.get_current_context(silent=True)
    for sweep, value in zip(sweeps, values):
        param = swept[sweep.option]
        try:
            typed = param.type.convert(sweep.arg(value), param, ctx)
        except click.UsageError as e:  # BadParameter too: the option's own type refused the value
            raise InputError(e.format_message()) from None
        params = params.with_value(param.name, (typed,) if param.multiple else typed)
    return params


def _derivations(command: str, base: list[str], sweeps: list) -> list:
    from hugecalc.result import Derivation

    fixed = " ".join(["hugecalc", command, *base])
    return [Derivation(scope="sweep", figure=f"each row ({s.option})",
                       formula=f"{fixed} --{s.option} V for V in {', '.join(s.label(v) for v in s.values)}"
                               + (" (a grid: every combination with the other sweep)" if len(sweeps) > 1 else ""),
                       rule="the same calculation as one run with that value; each point's derivations are in "
                            "its result (--json --explain), the first and last are shown here")
            for s in sweeps]


def _fixed_args(params: Params, command: click.Command, swept: set[str]) -> list[str]:
    """The options given, as typed, without the swept ones, --sweep, --plot and --json."""
    out = []
    for param in command.params:
        if param.name not in params.given or param.name in swept or param.name in ("sweeps", "plot", "as_json"):
            continue
        if not isinstance(param, click.Option):
            continue
        values = params.values[param.name]
        for value in (values if param.multiple else [values]):
            if param.is_flag:
                out.append(param.opts[0])
            else:
                out += [param.opts[0], fmt_size(value) if isinstance(value, int) and _kind(param) == "size" else str(value)]
    return out


def run_sweep(spec: Spec, command: click.Command, params: Params) -> None:
    """Compute the command at every point of the sweep; the table and chart, or one JSON document."""
    from hugecalc.plot import write
    from hugecalc.render import to_json
    from hugecalc.sweep import grid, parse_sweep

    swept = sweepable(spec, command)
    kinds = {flag: _kind(param) for flag, param in swept.items()}
    sweeps = [parse_sweep(s, kinds) for s in params.sweeps]
    explain, plot = params.values.get("explain", False), params.plot
    points, results = [], []
    for values in grid(sweeps):
        try:
            result = spec.compute(point_params(params, command, swept, sweeps, values))
        except InputError as e:
            where = ", ".join(f"{s.option}={s.label(v)}" for s, v in zip(sweeps, values))
            named = next((e.naming(p.opts[0]) for p in command.params if e.field and p.name == e.field), e)
            raise InputError(f"--sweep at {where}: {named}") from None
        results.append(result)
        points.append({"values": {s.option: v for s, v in zip(sweeps, values)},
                       "result": result.model_dump(mode="json", exclude=None if explain else {"explain"})})
    base = _fixed_args(params, command, {swept[s.option].name for s in sweeps})
    first = results[0]
    kernel = "kernel swept" if any(swept[s.option].name == "kernel" for s in sweeps) else f"kernel {first.kernel}"
    title = f"hugecalc {spec.name} {' '.join(base)} — profile {first.profile}, {kernel}".replace("  ", " ")
    chart = _chart(spec, sweeps, results, title)
    if plot:
        write(chart, plot, params.values.get("force", False))
    if params.values.get("as_json"):
        from hugecalc.sweep import SweepResult

        result = SweepResult[dict[str, Any]](
            command=spec.name, profile=first.profile, kernel=kernel.removeprefix("kernel "),
            inputs={"args": base},
            sweeps=[{"option": s.option, "values": list(s.values), "geometric": s.geometric} for s in sweeps],
            points=points, explain=_derivations(spec.name, base, sweeps))
        click.echo(to_json(result, explain))
        return
    _draw(spec, sweeps, points, results, chart, base, explain)


def _chart(spec: Spec, sweeps: list, results: list, title: str) -> Any:
    from hugecalc.plot import Chart

    x = sweeps[0]
    first = results[0].figures()
    charted = [n for n in first if spec.charted is None or n in spec.charted] or list(first)
    varies = [n for n in first if len({r.figures().get(n, (None,))[0] for r in results}) > 1]
    if varies and not set(charted) & set(varies):  # the figures charted stay flat: chart those that move
        charted = [n for n in varies if first[n].unit == first[varies[0]].unit]
    y_bytes = first[charted[0]].unit == "bytes"
    chart = Chart(title=title, x_label=x.option, y_label=" / ".join(charted) + (" (bytes)" if y_bytes else ""),
                  x_kind="size" if x.kind == "size" else "number" if x.kind in ("number", "count") else "text",
                  y_bytes=y_bytes, log_x=x.geometric, x_values=list(x.values))
    second = sweeps[1] if len(sweeps) > 1 else None
    step = len(second.values) if second else 1
    for i, name in enumerate(charted):
        for j, v2 in enumerate(second.values if second else [None]):
            label = name + (f", {second.option}={second.label(v2)}" if second else "")
            chart.series[label] = [results[k * step + j].figures().get(name, (None,))[0]
                                   for k in range(len(x.values))]
        if i == 0 and second:
            break  # a grid charts the first figure, one line per value of the second sweep
    return chart


def _draw(spec: Spec, sweeps: list, points: list, results: list, chart: Any, base: list[str], explain: bool) -> None:
    from rich import box
    from rich.table import Table

    from hugecalc.plot import terminal
    from hugecalc.render import Fitted

    out = console()
    first = results[0]
    out.print(Text(f"{spec.sweep_title}, profile {first.profile} — swept {' x '.join(s.option for s in sweeps)}",
                   style="bold"))
    names = list(first.figures())
    lines = []
    for p, result in zip(points, results):
        figures = result.figures()
        cells = []
        for n in names:
            value, unit = figures.get(n, (None, "count"))
            cells.append("-" if value is None else fmt_bytes(value) if unit == "bytes" else f"{value:,}")
        lines.append([s.label(p["values"][s.option]) for s in sweeps] + cells)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for k, title in enumerate([s.option for s in sweeps] + names):
        # every column at least its longest number and the longest word of its title: never cut
        table.add_column(title, justify="right", overflow="fold",
                         min_width=max(len(w) for w in [*title.split(), *(line[k] for line in lines)]))
    for line in lines:
        table.add_row(*line)
    out.print(Fitted(table, lines))
    out.print(Text(terminal(chart, out.width)))
    if explain:
        from hugecalc.render import print_derivations

        print_derivations(out, _derivations(spec.name, base, sweeps), "How the sweep was run")
        ends = [(points[0], results[0]), (points[-1], results[-1])] if len(points) > 1 else [(points[0], results[0])]
        for p, result in ends:  # the formulas with the numbers at both ends of the sweep
            at = ", ".join(f"{s.option}={s.label(p['values'][s.option])}" for s in sweeps)
            print_derivations(out, result.explain, f"How each figure was derived at {at}")
