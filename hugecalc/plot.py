"""Charts of curves: in the terminal (text) and to files (matplotlib, the optional ``plot`` extra).

A chart is series of (x, y) points; x is a swept option (sizes in the tool's notation, numbers, or
categories such as kernel releases), y a figure in bytes or a count.  Geometric sweeps are drawn
on log scales.  A file chart carries its data as JSON in its metadata (PNG and SVG "Description",
PDF "Subject"), so what it shows can be checked, not just that it exists.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from hugecalc.errors import InputError
from hugecalc.units import fmt_bytes, fmt_size


@dataclass
class Chart:
    title: str
    x_label: str
    y_label: str
    x_kind: str  # size, number, text
    y_bytes: bool
    log_x: bool
    x_values: list = field(default_factory=list)  # one per point, in order
    series: dict[str, list] = field(default_factory=dict)  # name -> y per point (None: no point)
    points_only: tuple[str, ...] = ()  # series drawn as points, not joined by a line

    def positions(self) -> list[float]:
        return list(range(len(self.x_values))) if self.x_kind == "text" else [float(x) for x in self.x_values]

    def x_tick_label(self, x) -> str:
        if self.x_kind == "size":
            return fmt_size(int(x))
        if self.x_kind == "number":  # three digits are enough to read a tick (a trace's 0.025151 s: 0.0252)
            return f"{x:g}" if float(x).is_integer() else f"{x:.3g}"
        return str(x)

    def log_y(self) -> bool:
        ys = [y for s in self.series.values() for y in s if y is not None]
        return bool(ys) and min(ys) > 0 and max(ys) / min(ys) >= 100

    def data(self) -> dict:
        return {"x": [self.x_tick_label(x) for x in self.x_values], "x_values": self.x_values,
                "series": self.series, "title": self.title}


def _y_ticks(chart: Chart) -> tuple[list[float], list[str]]:
    ys = [y for s in chart.series.values() for y in s if y is not None]
    if not ys:
        return [], []
    lo, hi = min(ys), max(ys)
    if chart.log_y():
        ticks = [10 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
        if chart.y_bytes:
            ticks = [1 << e for e in range(max(int(math.log2(lo)), 0), int(math.log2(hi)) + 2, 3)]
    else:
        span = (hi - lo) or max(abs(hi), 1)
        ticks = [lo + span * i / 4 for i in range(5)]
    return ticks, [fmt_bytes(t) if chart.y_bytes else f"{t:,.4g}" for t in ticks]


MARKERS = "●○×+◆▲"


def terminal(chart: Chart, width: int) -> str:
    """The chart as text for under the table, at most ``width`` columns (60 at least): one marker
    per point and series, y labels in the tool's notation, log scales where the data spans 100x."""
    rows, label_w = 12, 11
    cols = max(min(width, 100), 60) - label_w - 2
    xs = chart.positions()
    log_x = chart.log_x and chart.x_kind != "text" and min(xs) > 0
    fx = (lambda v: math.log10(v)) if log_x else float
    x_lo, x_hi = fx(min(xs)), fx(max(xs))
    ys = [y for s in chart.series.values() for y in s if y is not None]
    log_y = chart.log_y()
    fy = (lambda v: math.log10(v)) if log_y else float
    y_lo, y_hi = (fy(min(ys)), fy(max(ys))) if ys else (0.0, 1.0)
    flat = y_hi == y_lo  # every value the same: one row, one label
    if flat:
        y_lo, y_hi = y_lo - 1, y_lo + 1
    grid = [[" "] * cols for _ in range(rows)]
    owner = [[-1] * cols for _ in range(rows)]
    for k, series in enumerate(chart.series.values()):
        for x, y in zip(xs, series):
            if y is None or (log_y and y <= 0):
                continue
            c = 0 if x_hi == x_lo else round((fx(x) - x_lo) / (x_hi - x_lo) * (cols - 1))
            r = rows - 1 - round((fy(y) - y_lo) / (y_hi - y_lo) * (rows - 1))
            grid[r][c], owner[r][c] = MARKERS[k % len(MARKERS)], k
    shown = {k for row in owner for k in row}
    fmt = (lambda v: fmt_bytes(round(v))) if chart.y_bytes else (lambda v: f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}")
    import textwrap

    lines = textwrap.wrap(chart.title, label_w + 2 + cols, subsequent_indent="  ", break_on_hyphens=False,
                          break_long_words=False) or [""]  # wrapped at spaces, never cut
    for r in range(rows):
        value = y_hi - (y_hi - y_lo) * r / (rows - 1)
        middle = rows - 1 - round((rows - 1) / 2)  # where a flat series' markers are
        label = fmt(10 ** value if log_y else value) if r in ((middle,) if flat else (0, rows // 2, rows - 1)) else ""
        lines.append(f"{label:>{label_w}} │" + "".join(grid[r]))
    lines.append(" " * label_w + " └" + "─" * cols)
    ticks = [" "] * cols
    for x, label in zip(xs, (chart.x_tick_label(v) for v in chart.x_values)):
        c = 0 if x_hi == x_lo else round((fx(x) - x_lo) / (x_hi - x_lo) * (cols - 1))
        c = min(c, cols - len(label))
        if all(ch == " " for ch in ticks[max(c - 1, 0): c + len(label) + 1]):
            ticks[c: c + len(label)] = list(label)
    lines.append(" " * (label_w + 2) + "".join(ticks))
    scales = ", ".join(n for n, on in (("x log", log_x), ("y log", log_y)) if on)
    last = max(shown, default=0)  # a series every point of which another drew over
    legend = "   ".join(f"{MARKERS[k % len(MARKERS)]} {name}" + ("" if k in shown else f" (under {MARKERS[last]})")
                       for k, name in enumerate(chart.series))
    lines += textwrap.wrap(f"{chart.x_label}" + (f" ({scales})" if scales else "") + "   " + legend, cols,
                           initial_indent=" " * (label_w + 2), subsequent_indent=" " * (label_w + 2),
                           break_on_hyphens=False, break_long_words=False)
    return "\n".join(line.rstrip() for line in lines)


def write(chart: Chart, path: str, force: bool = False) -> None:
    """The chart to an SVG, PNG or PDF file, with its data in the file's metadata."""
    suffix = path.rsplit(".", 1)[-1].lower()
    if suffix not in ("svg", "png", "pdf"):
        raise InputError(f"--plot {path}: write a .svg, .png or .pdf file")
    try:
        import matplotlib
    except ImportError:
        raise InputError("--plot needs matplotlib: pip install 'hugecalc[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    xs = chart.positions()
    for name, ys in chart.series.items():
        points = [(x, y) for x, y in zip(xs, ys) if y is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name,
                linestyle="none" if name in chart.points_only else "-")
    if chart.log_x and chart.x_kind != "text":
        ax.set_xscale("log")
    if chart.log_y():
        ax.set_yscale("log")
    ax.set_xticks(xs, [chart.x_tick_label(x) for x in chart.x_values], rotation=30 if len(xs) > 8 else 0)
    ax.minorticks_off()
    ticks, labels = _y_ticks(chart)
    if ticks:
        ax.set_yticks(ticks, labels)
    ax.set_title(chart.title, fontsize=10)
    ax.set_xlabel(chart.x_label)
    ax.set_ylabel(chart.y_label)
    ax.grid(True, alpha=0.3)
    if len(chart.series) > 1:
        ax.legend()
    fig.tight_layout()
    text = json.dumps(chart.data())
    metadata = {"pdf": {"Subject": text}}.get(suffix, {"Description": text})
    from hugecalc.files import write_whole

    try:
        # the format from the final name's suffix: the temporary file has another
        write_whole(path, lambda tmp: fig.savefig(tmp, metadata=metadata, format=suffix), "--plot", force)
    finally:
        plt.close(fig)


def trace_chart(result: Any, figure: str, what: str) -> Chart | None:
    """A record's ``figure`` (populated_bytes, page_table_bytes) over time, one line per run."""
    first = result.runs[0].timeline
    if len(first) < 2:
        return None
    return Chart(title=f"{what} over time — process {result.pid}", x_label="seconds", y_label=f"{what} (bytes)",
                 x_kind="number", y_bytes=True, log_x=False, x_values=[p.seconds for p in first],
                 series={r.label: [getattr(p, figure) for p in r.timeline][:len(first)] for r in result.runs})


def write_trace_chart(result: Any, figure: str, what: str, path: str, force: bool = False) -> None:
    """--plot of a record: ``figure`` over time, to a file."""
    chart = trace_chart(result, figure, what)
    if chart is None:
        raise InputError(f"--plot {path}: the record is too short to chart")
    write(chart, path, force)
