"""``hugecalc schema [COMMAND]``: the JSON Schema of what ``--json`` prints, generated from the
result models that print it (one model feeds the table, the JSON and this schema)."""

from __future__ import annotations

import json
import re
from typing import Any, Union

import click

from hugecalc.cli.spec import Spec

def _one_of(types: list[Any]) -> Any:
    return types[0] if len(types) == 1 else Union[tuple(types)]  # noqa: UP007 - a runtime Union of classes


def document_type(command: str) -> Any:
    """The type of one document ``command --json`` prints (a Union over its modes), from the
    command's declaration; a command that sweeps prints a SweepResult of its documents too."""
    from hugecalc.cli import specs

    if command == "batch":
        from hugecalc.result import BatchError

        return _one_of([t for spec in specs() if spec.batch for t in spec.documents] + [BatchError])
    spec = next(spec for spec in specs() if spec.name == command)
    own = list(spec.documents)
    if spec.sweep:
        from hugecalc.sweep import SweepResult

        own.append(SweepResult[_one_of(own)])
    return _one_of(own)


def documented() -> list[str]:
    """The commands whose --json prints a document, in help order."""
    from hugecalc.cli import specs

    return [spec.name for spec in specs() if spec.documents]


def json_schema(command: str | None) -> dict[str, Any]:
    """The JSON Schema (2020-12) of ``command``'s --json output, or of any hugecalc document."""
    from pydantic import TypeAdapter

    from hugecalc import __version__

    commands = [command] if command else documented()
    schema = TypeAdapter(_one_of([document_type(c) for c in commands])).json_schema(mode="serialization")
    # pydantic names a generic by its arguments (SweepResult_Union_PgtableResult__WorstCaseResult__...);
    # name it by its command instead (PgtableSweepResult).
    renamed = {}
    for name in schema.get("$defs", {}):
        short = re.fullmatch(r"Sweep(Result|Point)_(?:Union_)?([A-Z][a-z]+)\w*", name)
        if short:
            renamed[name] = f"{short[2]}Sweep{short[1]}"
    schema = _renamed(schema, renamed)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"hugecalc {command or ''} --json".replace("  ", " "),
            "description": (f"hugecalc {__version__}: " +
                            ("one line of output (JSON Lines)" if command == "batch" else "the document --json prints")),
            **schema}


def _renamed(node: Any, names: dict[str, str]) -> Any:
    """``node`` with the $defs in ``names`` renamed, and every $ref to them."""
    if isinstance(node, list):
        return [_renamed(n, names) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "$ref" and value.removeprefix("#/$defs/") in names:
            value = "#/$defs/" + names[value.removeprefix("#/$defs/")]
        elif key == "$defs":
            value = {names.get(k, k): v for k, v in value.items()}
        out[key] = _renamed(value, names)
    return out


class _Documented(click.Choice):
    """The commands with a document, read from their declarations when first asked for."""

    def __init__(self) -> None:
        super().__init__([])

    @property
    def choices(self) -> list[str]:  # type: ignore[override]
        return [*documented(), "batch"]

    @choices.setter
    def choices(self, value: Any) -> None:
        pass


@click.command()
@click.argument("command", required=False, type=_Documented(), metavar="[COMMAND]")
def schema(command: str | None) -> None:
    """Print the JSON Schema of what --json prints: of COMMAND, or of every command.

    Generated from the same result models that print the tables and the JSON. `batch` gives the
    schema of one output line; a command's schema includes its --sweep document.

    \b
    Examples:
      hugecalc schema pgtable > pgtable.schema.json
      hugecalc pgtable --vma-size 1G --json | check-jsonschema --schemafile pgtable.schema.json -
    """
    click.echo(json.dumps(json_schema(command), indent=2))


SPEC = Spec(name="schema", rank=10, documents={})
