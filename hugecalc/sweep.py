"""``--sweep OPTION=START..STOP[:STEP | xFACTOR]`` and ``--sweep OPTION=a,b,c``: the points of a sweep.

Pure: parses a sweep into its option and values (sizes in the tool's notation, numbers, or kernel
releases) and says whether it is geometric, which the charts draw on log scales.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from hugecalc.errors import InputError
from hugecalc.result import Model, Result
from hugecalc.units import fmt_size, parse_size

MAX_POINTS = 1000
_RANGE = re.compile(r"^(?P<start>[^.][^,]*?)\.\.(?P<stop>[^:x]+?|0[xX][0-9a-fA-F]+)(?::(?P<step>.+)|x(?P<factor>[0-9.eE+-]+))?$")


#: What an option's values are: sizes (64K), counts (whole numbers), numbers (1e-6), text
#: (kernel releases), or a pool (a size, or without a unit a count of hugepages).
KINDS = ("size", "count", "number", "text", "pool")


@dataclass(frozen=True)
class Sweep:
    option: str  # as typed, without the dashes: touch-fraction
    values: tuple  # ints (sizes, counts), floats, or strings (kernel releases)
    kind: str  # size, count, number or text
    geometric: bool

    def label(self, value) -> str:
        return (fmt_size(value) if self.kind == "size" else f"{value:g}" if self.kind == "number" else
                f"{value:,}" if self.kind == "count" else str(value))

    def arg(self, value) -> str:
        """The value as its option takes it on the command line."""
        if self.kind == "size":  # with a unit: a bare number means a count to --pages
            return fmt_size(value) if value % 1024 == 0 else f"{value}B"
        return repr(value) if self.kind == "number" else str(value)


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


def _value(text: str, option: str, kind: str) -> tuple[object, str]:
    """One value of ``option`` and its kind (a pool's value is a size or a count)."""
    text = text.strip()
    if kind == "text":
        return text, "text"
    if not text.isascii():
        raise InputError(f"--sweep {option}: {text!r} is not a number: use ASCII digits")
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            raise InputError(f"--sweep {option}: {text!r} is not a number") from None
        if not math.isfinite(number):
            raise InputError(f"--sweep {option}: {text!r} is not a finite number")
        return number, "number"
    if kind in ("count", "pool") and re.fullmatch(r"[0-9]+|0[xX][0-9a-fA-F]+", text):
        return int(text, 0), "count"
    if kind == "count":
        raise InputError(f"--sweep {option}: {text!r} is not a whole number")
    return parse_size(text, f"--sweep {option}"), "size"


def _one_kind(kinds: set[str], spec: str) -> str:
    if len(kinds) > 1:
        raise InputError(f"--sweep {spec!r}: mixes sizes and counts (a count has no unit)")
    return kinds.pop()


def parse_sweep(spec: str, kinds: dict[str, str]) -> Sweep:
    """``spec`` for one of the options ``kinds`` names (option as typed -> the kind of its values)."""
    option, sep, rest = spec.partition("=")
    option = option.strip().lstrip("-")
    if not sep or not rest.strip():
        raise InputError(f"--sweep {spec!r}: use OPTION=START..STOP[:STEP|xFACTOR] or OPTION=a,b,c")
    if option not in kinds:
        raise InputError(f"--sweep {spec!r}: {option!r} cannot be swept here (one of: {', '.join(sorted(kinds))})")
    kind = kinds[option]
    match = _RANGE.match(rest.strip()) if kind != "text" else None
    if match is None:
        parts = [_value(p, option, kind) for p in rest.split(",") if p.strip()]
        kind = _one_kind({k for _, k in parts}, spec) if parts else kind
        values = tuple(v for v, _ in parts)
        positive = [v for v in values if isinstance(v, (int, float)) and v > 0]
        geometric = kind != "text" and len(positive) == len(values) > 2 and max(positive) / min(positive) >= 100
        return _checked(Sweep(option, values, kind, geometric), spec)
    (start, k1), (stop, k2) = _value(match["start"], option, kind), _value(match["stop"], option, kind)
    kind = _one_kind({k1, k2}, spec)
    whole = kind in ("size", "count")
    if match["factor"] is not None or (kind == "size" and not match["step"]):  # sizes: x2 unless told
        factor = float(match["factor"]) if match["factor"] is not None else 2.0
        if not math.isfinite(factor) or factor <= 1 or start <= 0:
            raise InputError(f"--sweep {spec!r}: xFACTOR needs a factor above 1 and a start above 0")
        values, v = [], float(start)
        while v <= stop * (1 + 1e-9) and len(values) <= MAX_POINTS:
            values.append(int(round(v)) if whole else float(f"{v:.12g}"))
            v *= factor
        return _checked(Sweep(option, tuple(dict.fromkeys(values)), kind, True), spec)
    step = None
    if match["step"]:
        try:
            step, step_kind = _value(match["step"], option, "number" if kind == "number" else "pool")
        except InputError:
            step, step_kind = None, "text"
        if step_kind == "text" or kind == "count" and step_kind != "count":
            raise InputError(f"--sweep {spec!r}: STEP {match['step']!r} is not a {kind} "
                             "(a geometric range is START..STOPxFACTOR)")
    elif kind == "number":
        step = (stop - start) / 10
    elif kind == "count":
        step = max(1, round((stop - start) / 10))
    if step is None:
        raise InputError(f"--sweep {spec!r}: a range of {kind} values needs :STEP or xFACTOR")
    if step <= 0 or stop < start:
        raise InputError(f"--sweep {spec!r}: the step must be positive and STOP at least START")
    count = int((stop - start) / step + 1e-9) + 1
    if count > MAX_POINTS:
        raise InputError(f"--sweep {spec!r}: {count} points, at most {MAX_POINTS}")
    values = tuple(int(start + i * step) if whole else float(f"{start + i * step:.12g}") for i in range(count))
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
