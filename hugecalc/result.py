"""The result models every command shares: one model feeds both the Rich table and ``--json``.

Units live once, on the field (``json_schema_extra={"unit": ...}``), so the renderer formats
``*_bytes`` as sizes and ``*_share`` as percentages without knowing the command.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


def field(title: str, unit: str | None = None, **kw: Any) -> Any:
    """A result field with its table title and unit (bytes, pages, share, count, size)."""
    extra = {"unit": unit} if unit else None
    return Field(title=title, json_schema_extra=extra, **kw)


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Derivation(Model):
    """How one figure was derived: the formula with the numbers in, and the kernel rule."""

    scope: str = field("Applies to")
    figure: str = field("Figure")
    formula: str = field("Formula")
    rule: str = field("Kernel rule")


class Figure(NamedTuple):
    """One figure of a result, as a sweep tabulates and charts it."""

    value: int | float | None
    unit: str = "count"  # count or bytes


class Result(Model):
    """The envelope every command's result carries: what was computed, for which profile and
    release, from which inputs, with its notes and (with --explain) its derivations."""

    schema_version: int = SCHEMA_VERSION
    command: str
    profile: str
    kernel: str
    inputs: dict[str, Any]
    notes: list[str] = Field(default_factory=list)
    explain: list[Derivation] = Field(default_factory=list)

    def figures(self) -> dict[str, Figure]:
        """The figures a sweep shows of this result, by name, in order."""
        raise NotImplementedError(f"{type(self).__name__} has no figures to sweep")


class BatchError(Model):
    """A ``hugecalc batch`` line for a request that failed."""

    error: str
    exit_code: int
    command: str | None = None
    line: int | None = None  # the input line it answers (1-based)
