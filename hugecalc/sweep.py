"""``--sweep OPTION=START..STOP[:STEP | xFACTOR]`` and ``--sweep OPTION=a,b,c``: the points of a sweep.

Pure: parses a sweep into its option and values (sizes in the tool's notation, numbers, or kernel
releases) and says whether it is geometric, which the charts draw on log scales.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from hugecalc.errors import InputError
from hugecalc.result import Model, Result
from hugecalc.units import fmt_size, parse_size

MAX_POINTS = 200
_RANGE = re.compile(r"^(?P<start>[^.][^,]*?)\.\.(?P<stop>[^:x]+?)(?::(?P<step>.+)|x(?P<factor>[0-9.eE+-]+))?$")


@dataclass(frozen=True)
class Sweep:
    option: str  # without the dashes: touch-fraction
    values: tuple  # ints (sizes, counts), floats, or strings (kernel releases)
    kind: str  # size, number or text
    geometric: bool

    def label(self, value) -> str:
        return fmt_size(value) if self.kind == "size" else f"{value:g}" if self.kind == "number" else str(value)

    def arg(self, value) -> str:
        if self.kind == "size":  # with a unit: a bare number means a count to --pages
            return fmt_size(value) if value % 1024 == 0 else f"{value}B"
        return str(value) if self.kind != "number" else repr(value)


Doc = TypeVar("Doc")


class SweepAxis(Model):
    option: str
    values: list[Any]
    geometric: bool


class SweepPoint(Model, Generic[Doc]):
    values: dict[str, Any]  # option -> its value at this point
    result: Doc  # the command's own --json document at this point


class SweepResult(Result, Generic[Doc]):
    """``COMMAND --sweep ... --json``: the command's document at every point of the sweep."""

    sweep: bool = True
    sweeps: list[SweepAxis]
    points: list[SweepPoint[Doc]]


def _value(text: str, option: str) -> tuple[object, str]:
    text = text.strip()
    try:
        number = float(text)
        if not re.fullmatch(r"\d+", text):
            return number, "number"
    except ValueError:
        pass
    try:
        return parse_size(text, f"--sweep {option}"), "size"
    except InputError:
        return text, "text"


def parse_sweep(spec: str, allowed: set[str]) -> Sweep:
    option, sep, rest = spec.partition("=")
    option = option.strip().lstrip("-")
    if not sep or not rest.strip():
        raise InputError(f"--sweep {spec!r}: use OPTION=START..STOP[:STEP|xFACTOR] or OPTION=a,b,c")
    if option not in allowed:
        raise InputError(f"--sweep {spec!r}: {option!r} cannot be swept here (one of: {', '.join(sorted(allowed))})")
    match = _RANGE.match(rest.strip())
    if match is None:
        parts = [_value(p, option) for p in rest.split(",") if p.strip()]
        kinds = {k for _, k in parts}
        kind = "text" if "text" in kinds or option == "kernel" else "number" if "number" in kinds else "size"
        values = tuple(str(v) if kind == "text" else float(v) if kind == "number" else v for v, _ in parts)
        if option == "kernel":
            values = tuple(p.strip() for p in rest.split(",") if p.strip())
        positive = [v for v in values if isinstance(v, (int, float)) and v > 0]
        geometric = kind != "text" and len(positive) == len(values) > 2 and max(positive) / min(positive) >= 100
        return _checked(Sweep(option, values, kind, geometric), spec)
    (start, k1), (stop, k2) = _value(match["start"], option), _value(match["stop"], option)
    if "text" in (k1, k2):
        raise InputError(f"--sweep {spec!r}: a range needs numbers or sizes at both ends")
    kind = "number" if "number" in (k1, k2) else "size"
    if match["factor"] is not None:
        factor = float(match["factor"])
        if factor <= 1 or start <= 0:
            raise InputError(f"--sweep {spec!r}: xFACTOR needs a factor above 1 and a start above 0")
        values, v = [], float(start)
        while v <= stop * (1 + 1e-9) and len(values) <= MAX_POINTS:
            values.append(int(round(v)) if kind == "size" else float(f"{v:.12g}"))
            v *= factor
        return _checked(Sweep(option, tuple(values), kind, True), spec)
    step = _value(match["step"], option) if match["step"] else None
    if step is not None and step[1] == "text":
        raise InputError(f"--sweep {spec!r}: STEP {match['step']!r} is not a number or a size "
                         "(a geometric range is START..STOPxFACTOR)")
    step = step[0] if step else (stop - start) / 10 if kind == "number" else None
    if step is None:
        raise InputError(f"--sweep {spec!r}: a range of sizes needs :STEP or xFACTOR")
    if step <= 0 or stop < start:
        raise InputError(f"--sweep {spec!r}: the step must be positive and STOP at least START")
    count = int((stop - start) / step + 1e-9) + 1
    if count > MAX_POINTS:
        raise InputError(f"--sweep {spec!r}: {count} points, at most {MAX_POINTS}")
    values = tuple(int(start + i * step) if kind == "size" else float(f"{start + i * step:.12g}")
                   for i in range(count))
    return _checked(Sweep(option, values, kind, False), spec)


def _checked(sweep: Sweep, spec: str) -> Sweep:
    if not sweep.values:
        raise InputError(f"--sweep {spec!r}: no point")
    if len(sweep.values) > MAX_POINTS:
        raise InputError(f"--sweep {spec!r}: {len(sweep.values)} points, at most {MAX_POINTS}")
    return sweep


def grid(sweeps: list[Sweep]) -> list[tuple]:
    """Every combination of the sweeps' values, the first sweep varying slowest."""
    if len(sweeps) > 2:
        raise InputError("--sweep: at most two (a grid)")
    if len(sweeps) == 2 and sweeps[0].option == sweeps[1].option:
        raise InputError(f"--sweep {sweeps[0].option}: swept twice")
    return list(itertools.product(*(s.values for s in sweeps)))
