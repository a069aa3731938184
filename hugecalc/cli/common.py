"""What every command shares: the size type, the options declared once (``--profile``,
``--kernel``, ``--json``, ``--explain``), error plumbing and the one output path.

Command modules import from here, never from each other's underscore names.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

import click
from rich.console import Console

from hugecalc.errors import HugecalcError, InputError
from hugecalc.profiles import DEFAULT_PROFILE, load_profile
from hugecalc.releases import NEWEST, parse_release
from hugecalc.units import parse_size


class UserError(click.ClickException):
    """A HugecalcError on its way out: message to stderr, its own exit code."""

    def __init__(self, error: HugecalcError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code


class Group(click.Group):
    """A command group whose HugecalcErrors become one-line messages with their exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HugecalcError as e:
            raise UserError(e) from e


class Size(click.ParamType):
    """A size spelled like the kernel's memparse (4096, 0x1000, 64K, 2M, 1G, 2MiB); as an
    address (``positive=False``) zero is allowed too."""

    def __init__(self, name: str = "SIZE", positive: bool = True) -> None:
        self.name, self.positive = name, positive

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        try:
            n = parse_size(value, param.opts[0] if param else self.name.lower())
        except InputError as e:
            self.fail(str(e), param, ctx)
        if self.positive and n <= 0:
            self.fail(f"{value!r} must be greater than zero", param, ctx)
        return n


class Real(click.FloatRange):
    """A finite number within a range: ``nan`` and ``inf`` are refused, not carried into a result."""

    name = "number"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        import math

        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


PID_MAX_LIMIT = 4 << 20  # include/linux/threads.h: the most processes a 64-bit kernel can have

SIZE = Size()
ADDR = Size("ADDR", positive=False)  # hex (0x7f0000000000), decimal, or a size spelling (1G)


def console() -> Console:
    """stdout: Rich on a terminal, plain text elsewhere (and with NO_COLOR)."""
    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 120))
    return Console(width=width, highlight=False)


def common_options(fn: Callable) -> Callable:
    """--profile, --kernel, --json, --explain: every command takes them."""

    @click.option("--profile", "profile_name", metavar="NAME|PATH", default=None,
                  help=f"Machine profile: a bundled name (default {DEFAULT_PROFILE}) or a YAML file.")
    @click.option("--kernel", "kernel", metavar="X.Y", default=None,
                  help=f"Kernel release whose rules apply (default {NEWEST[0]}.{NEWEST[1]}, the newest modelled).")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
    @click.option("--explain", is_flag=True, help="Show how each figure was derived and the kernel rule.")
    @functools.wraps(fn)
    def wrapper(profile_name: str | None, kernel: str | None, as_json: bool, explain: bool, **kw: Any) -> Any:
        profile = load_profile(profile_name)
        release = parse_release(kernel)
        return fn(profile=profile, release=release, as_json=as_json, explain=explain, **kw)

    return wrapper


def options(*decorators: Callable) -> Callable:
    """Several click options as one decorator, in the order given (as sqlite-utils shares them)."""

    def apply(fn: Callable) -> Callable:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


def emit(result: Any, as_json: bool, explain: bool, draw: Callable[[Console], None]) -> None:
    """The one output path: the JSON document, or the table ``draw`` prints, then notes and
    (with --explain) the derivations."""
    from hugecalc.render import print_explain, print_notes, to_json

    if as_json:
        click.echo(to_json(result, explain))
        return
    out = console()
    draw(out)
    print_notes(out, result)
    if explain:
        print_explain(out, result)


def given(param: str) -> bool:
    """Whether the user gave this option (rather than its default)."""
    source = click.get_current_context().get_parameter_source(param)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")

