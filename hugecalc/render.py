"""Results to a Rich table or to JSON.  Formats by each field's ``unit``; knows no command."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

from hugecalc.result import Result
from hugecalc.units import fmt_bytes, fmt_size


#: Indentation of --json documents; ``hugecalc batch`` prints one per line (None).
JSON_INDENT: int | None = 2


def to_json(result: Result, explain: bool) -> str:
    """The one JSON document ``--json`` prints; ``explain`` only with ``--explain``."""
    return result.model_dump_json(indent=JSON_INDENT, exclude=None if explain else {"explain"})


def fmt_value(value: Any, unit: str | None) -> str:
    """A value for a table cell, by the field's unit."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if unit == "bytes":
        return fmt_bytes(value)
    if unit == "size":
        return fmt_size(value)
    if unit == "address":
        return f"{value:#x}"
    if unit == "share":
        return f"{value * 100:.2f}%"
    if unit == "seconds":
        if abs(value) >= 999.5:
            return f"{value:,.0f} s"
        for scale, name in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
            if abs(value) >= scale * 0.9995 or scale == 1e-9:  # 0.9998 s is "1 s", not "1e+03 ms"
                return f"{value / scale:.3g} {name}"
    if isinstance(value, float):
        return f"{value:,.4g}" if not value.is_integer() else f"{int(value):,}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _unit(model: type[BaseModel], name: str) -> str | None:
    extra = model.model_fields[name].json_schema_extra
    return extra.get("unit") if isinstance(extra, dict) else None


def _title(model: type[BaseModel], name: str) -> str:
    return model.model_fields[name].title or name


def transposed_table(rows: list[BaseModel], key: str, skip: tuple[str, ...] = (),
                     titles: dict[str, str] | None = None) -> Table:
    """One column per row (labelled by ``key``), one line per field: rows compared side by side;
    ``titles`` renames lines where the model's title would mislead (devdax is not HVO)."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    if not rows:
        return table
    model = type(rows[0])
    lines = []
    for name in model.model_fields:
        if name == key or name in skip:
            continue
        values = [getattr(r, name) for r in rows]
        if any(v is not None for v in values):
            lines.append(((titles or {}).get(name) or _title(model, name), [fmt_value(v, _unit(model, name)) for v in values]))
    table.add_column("", style="bold", overflow="fold")  # labels wrap; numbers are never cut
    for i, row in enumerate(rows):
        header = fmt_value(getattr(row, key), _unit(model, key))
        table.add_column(header, justify="right", min_width=max([len(header)] + [len(c[i]) for _, c in lines]))
    for title, cells in lines:
        table.add_row(title, *cells)
    return table


class Fitted:
    """A table where it fits the width, else its rows stacked: one block per row, one line per
    field, so no word or number is ever folded or cut."""

    def __init__(self, table: Table, rows: list[list[str]]) -> None:
        self.table, self.rows = table, rows  # rows: the cells as added to the table

    def __rich_console__(self, console: Console, options: Any) -> Any:
        from rich.table import Table
        from rich.text import Text

        columns = self.table.columns
        titles = [str(c.header) for c in columns]
        room = options.max_width - 3 * (len(columns) - 1)  # between columns: a divider and two pads
        least = [c.min_width or 1 for c in columns]
        if not self.rows or sum(least) <= room:
            # rich's own squeeze can fold a word or cut a column below its minimum: lay the widths out
            # here instead, each column at least its longest word or number, the spare room given to
            # the columns that would use it (their titles and texts wrap less)
            most = [max([len(t), *(len(r[i]) for r in self.rows)]) for i, t in enumerate(titles)]
            if self.rows and sum(most) > room:
                spare, want = room - sum(least), [m - n for m, n in zip(most, least)]
                for c, n, w in zip(columns, least, want):
                    c.width = n + spare * w // max(sum(want), 1)
            yield self.table
            return
        for row in self.rows:
            yield Text(f"{titles[0]}: {row[0]}", style="bold")
            grid = Table.grid(padding=(0, 2))
            grid.add_column(overflow="fold")
            grid.add_column(justify="right", no_wrap=True)
            for title, cell in zip(titles[1:], row[1:]):
                grid.add_row("  " + title, cell)
            yield grid


def list_table(rows: list[BaseModel], skip: tuple[str, ...] = ()) -> Fitted:
    """One line per row, one column per field; each row a block of its own where the table does not fit."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    if not rows:
        return Fitted(table, [])
    model = type(rows[0])
    names = [n for n in model.model_fields
             if n not in skip and any(getattr(r, n) is not None for r in rows)]
    lines = [[fmt_value(getattr(row, n), _unit(model, n)) for n in names] for row in rows]
    for i, name in enumerate(names):
        number = _unit(model, name) is not None
        cells = [line[i] for line in lines]
        # A number column is as wide as its widest cell, so no digit is ever cut; text and titles wrap
        # between words, never inside one (where that does not fit, Fitted stacks the rows).
        words = [w for c in cells for w in c.split()] if not number else cells
        table.add_column(_title(model, name), justify="right" if number else "left", overflow="fold",
                         min_width=max(len(w) for w in [*words, *_title(model, name).split()]))
    for line in lines:
        table.add_row(*line)
    return Fitted(table, lines)


def print_header(console: Console, result: Result, what: str) -> None:
    from rich.text import Text

    console.print(Text(f"{what} — profile {result.profile}, kernel {result.kernel}", style="bold"))


def print_wrapped(console: Console, text: str, indent: int, style: str = "", bold: int = 0) -> None:
    """``text`` wrapped to the console with a hanging indent (wrapped lines keep their place under the
    first), broken only at spaces, so a number is never split; the first ``bold`` characters in bold."""
    import textwrap

    from rich.text import Text

    lines = textwrap.wrap(text, width=max(console.width, 20), subsequent_indent=" " * indent,
                          break_long_words=False, break_on_hyphens=False) or [""]
    out = Text("\n".join(lines), style=style)
    if bold:
        out.stylize("bold", 0, bold)
    console.print(out, soft_wrap=True)


def print_notes(console: Console, result: Result) -> None:
    for note in result.notes:
        print_wrapped(console, f"note: {note}", 6, "yellow")


def print_explain(console: Console, result: Result, title: str = "How each figure was derived") -> None:
    """Each figure's derivation, grouped by what it applies to."""
    print_derivations(console, result.explain, title)


def print_derivations(console: Console, derivations: list[Any], title: str, source: str = "rule") -> None:
    """Each derivation: its figure and formula, then ``source`` (the kernel rule; for a capture, where
    the value was read)."""
    from rich.text import Text

    console.print()
    console.print(Text(title, style="bold underline"))
    scope = None
    for d in derivations:
        if d.scope != scope:
            scope = d.scope
            console.print(Text(f"\n{scope}", style="bold"))
        print_wrapped(console, f"  {d.figure}: {d.formula}", 4, bold=len(d.figure) + 3)
        print_wrapped(console, f"      {source}: {d.rule}", 12, "dim")


def transposed_summary(result: BaseModel) -> Table:
    """A result's scalar figures, one per line (lists and mappings are shown by their own tables)."""
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    model = type(result)
    for name, info in model.model_fields.items():
        value = getattr(result, name)
        if info.title is None or isinstance(value, (list, dict)) or value is None:
            continue
        table.add_row(info.title, fmt_value(value, _unit(model, name)))
    return table


def side_by_side(columns: list[tuple[str, BaseModel]]) -> Table:
    """Results of one model side by side: one line per scalar figure, one column per result."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    model = type(columns[0][1])
    lines = []
    for name, info in model.model_fields.items():
        values = [getattr(m, name) for _, m in columns]
        if info.title is None or any(isinstance(v, (list, dict)) for v in values) or all(v is None for v in values):
            continue
        lines.append((info.title, [fmt_value(v, _unit(model, name)) for v in values]))
    table.add_column("", style="bold", overflow="fold")
    for i, (label, _) in enumerate(columns):
        table.add_column(label, justify="right", min_width=max([len(label)] + [len(c[i]) for _, c in lines]))
    for title, cells in lines:
        table.add_row(title, *cells)
    return table


def folio_table(columns: list[tuple[str, list]]) -> Table:
    """Folios by size (rows) for each result (columns)."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("Folio size", justify="right")
    for label, _ in columns:
        table.add_column(label, justify="right")
    sizes = sorted({f.size_bytes for _, folios in columns for f in folios})
    for size in sizes:
        table.add_row(fmt_size(size), *(f"{sum(f.count for f in folios if f.size_bytes == size):,}"
                                         for _, folios in columns))
    return table
