"""A command declared once: :class:`Spec` says what the house knows about it, and the registry,
``schema``, ``batch``, ``--sweep`` and ``fleet`` read it from there.

Each command module ends with ``SPEC = Spec(...)``: its result models (one per mode, each with the
function that draws its table), the function that computes its result from the parsed options,
whether it runs in ``batch``, which of its options ``--sweep`` may vary, and what ``fleet`` asks
of each host.  Its click callback is :func:`run`: the command, a batch line and every point of a
sweep compute through the same ``compute``, never through argv and JSON text.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable

import click

from hugecalc.errors import HugecalcError, InputError

if TYPE_CHECKING:
    from rich.console import Console

    from hugecalc.profiles import Profile
    from hugecalc.releases import Release
    from hugecalc.result import Result


@dataclass(frozen=True)
class Params:
    """One run's options: click's converted values by parameter name, which of them were given,
    and the profile, release and capture they resolve to."""

    values: dict[str, Any]
    given: frozenset[str]
    profile: Profile
    release: Release
    capture: Any = None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def with_value(self, name: str, value: Any) -> Params:
        """These options with one more given: a point of a sweep (--kernel too)."""
        changed = replace(self, values={**self.values, name: value}, given=self.given | {name})
        if name == "kernel":
            from hugecalc.releases import parse_release

            changed = replace(changed, release=parse_release(value))
        return changed


@dataclass(frozen=True)
class Fleet:
    """What ``fleet COMMAND`` asks of each host: its figures, each with how one host's value is got."""

    row: Callable[[Any, Profile, Release, dict], dict]  # (capture, profile, release, what-if) -> figures
    figures: dict[str, str]  # figure -> how one host's value is derived
    rule: str  # the per-host calculation, as `COMMAND --host FILE` runs it
    what_if: Callable[[Params], dict]  # the fleet command's options -> the what-if every host gets
    options: Callable[[Callable], Callable]  # the fleet command's own options
    help: str  # fleet COMMAND --help


@dataclass(frozen=True)
class Spec:
    """Everything the house knows about one command."""

    name: str
    rank: int  # its place in --help
    #: Every document its --json prints (one per mode), each with the function that draws its table.
    documents: dict[type, Callable[[Console, Any, Params], None]]
    #: The parsed options -> the result: the command itself, batch lines and sweep points call it.
    compute: Callable[[Params], Result] | None = None
    batch: bool = False
    #: Parameter names --sweep may vary (their types are the click parameters').
    sweep: tuple[str, ...] = ()
    #: The figures a sweep charts (None: all of them).
    charted: tuple[str, ...] | None = None
    #: A sweep's table header, from its first result.
    sweep_title: str = ""
    fleet: Fleet | None = None
    after: Callable[[Any, Params], None] = field(default=lambda result, params: None)  # e.g. --plot, exit codes

    def draw(self, out: Console, result: Any, params: Params) -> None:
        self.documents[type(result)](out, result, params)


class Command(click.Command):
    """A command whose input errors name the option as the user typed it: the calculations raise
    ``InputError(message, field=NAME)`` about a value, and the option of that NAME is named here."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InputError as e:
            raise naming_option(self, e) from e


def naming_option(command: click.Command, error: InputError) -> InputError:
    """``error`` with its field named as ``command``'s option (``vma_size`` -> ``--vma-size``)."""
    if error.field is None:
        return error
    for param in command.params:
        if param.name == error.field and isinstance(param, click.Option):
            return error.naming(param.opts[0])
    return error.naming("--" + error.field.replace("_", "-"))


def given_params(ctx: click.Context) -> frozenset[str]:
    """The parameters the user gave (rather than their defaults)."""
    out = set()
    for name in ctx.params:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            out.add(name)
    return frozenset(out)


def resolve(values: dict[str, Any], given: frozenset[str]) -> Params:
    """--profile, --kernel and --host resolved: ``--profile host`` reads the running machine,
    ``--host FILE`` a capture made elsewhere; the profile, release and settings come from it, and
    any of --profile/--kernel given overrides them."""
    from hugecalc.profiles import load_profile
    from hugecalc.releases import parse_release

    profile_name, kernel, host_file = values.get("profile_name"), values.get("kernel"), values.get("host_file")
    capture = None
    if host_file is not None:
        from hugecalc.capture import load_capture

        capture = load_capture(host_file)
    elif profile_name == "host":
        from hugecalc.snapshot import capture_machine

        capture = capture_machine()
    profile = capture.profile if capture is not None and profile_name in (None, "host") else load_profile(profile_name)
    if kernel is not None or capture is None:
        release = parse_release(kernel)
    else:
        from hugecalc.capture import captured_release

        release = captured_release(capture)
    return Params(values=values, given=given, profile=profile, release=release, capture=capture)


def run(spec: Spec, values: dict[str, Any]) -> Any:
    """The click callback of a declared command: compute, then print the table or the JSON."""
    ctx = click.get_current_context()
    params = resolve(values, given_params(ctx))
    if values.get("sweeps"):
        from hugecalc.cli.sweep import run_sweep

        return run_sweep(spec, ctx.command, params)
    result = spec.compute(params)
    emit(spec, result, params)
    spec.after(result, params)
    return None


def emit(spec: Spec, result: Any, params: Params) -> None:
    """The one output path: the JSON document, or the table, then notes and (with --explain) the
    derivations."""
    from hugecalc.cli.common import console
    from hugecalc.render import print_explain, print_notes, to_json

    explain = params.values.get("explain", False)
    if params.values.get("as_json"):
        click.echo(to_json(result, explain))
        return
    out = console()
    spec.draw(out, result, params)
    print_notes(out, result)
    if explain:
        print_explain(out, result)


def compute_argv(spec: Spec, command: click.Command, argv: list[str]) -> Result:
    """One batch request: the command's own options parsed by click, then its ``compute``."""
    try:
        ctx = command.make_context(spec.name, list(argv), resilient_parsing=False)
    except click.exceptions.Exit as e:  # --help
        raise InputError(f"{spec.name}: --help prints no document") from e
    with ctx:
        try:
            return spec.compute(resolve(dict(ctx.params), given_params(ctx)))
        except InputError as e:
            raise naming_option(command, e) from e
        except HugecalcError:
            raise


def load(name: str) -> tuple[Spec, click.Command] | None:
    """The command ``name``: its declaration and its click command (its module imported now)."""
    import importlib

    if not name.isidentifier():
        return None
    try:
        module = importlib.import_module(f"hugecalc.cli.{name}")
    except ModuleNotFoundError:
        return None
    spec = getattr(module, "SPEC", None)
    return (spec, getattr(module, name)) if isinstance(spec, Spec) and spec.name == name else None
