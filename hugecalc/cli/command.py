"""Running a declared command (:class:`hugecalc.cli.spec.Spec`): its options resolved into
:class:`Params`, its ``compute``, its output; the same ``compute`` for a batch line
(:func:`compute_argv`); input errors that name the option as typed (:class:`Command`).
"""

from __future__ import annotations

from typing import Any

import click

from hugecalc.cli.spec import Params, Spec
from hugecalc.errors import InputError
from hugecalc.result import Result


class Command(click.Command):
    """A command whose input errors name the option as the user typed it: the calculations raise
    ``InputError(message, field=NAME)`` about a value, and the option of that NAME is named here.
    A number is ASCII digits: ``１２`` or ``١٢`` (which Python's int() would take) is refused."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        numeric = {opt for p in self.params if isinstance(p, click.Option)
                   and isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType)) for opt in p.opts}
        for i, arg in enumerate(args):
            flag, eq, value = arg.partition("=")
            if eq and flag in numeric:
                name, raw = flag, value
            elif i and args[i - 1] in numeric:
                name, raw = args[i - 1], arg
            else:
                continue
            if not raw.isascii():
                raise click.UsageError(f"{name} {raw!r} is not a number: use ASCII digits", ctx)
        return super().parse_args(ctx, args)

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
    if host_file is not None and profile_name == "host":
        raise InputError("--profile host reads this machine, --host FILE a capture: give one of them")
    capture = None
    if host_file is not None:
        from hugecalc.machine.capture import load_capture

        capture = load_capture(host_file)
    elif profile_name == "host":
        from hugecalc.machine.snapshot import capture_machine

        capture = capture_machine()
    profile = capture.profile if capture is not None and profile_name in (None, "host") else load_profile(profile_name)
    if kernel is not None or capture is None:
        release = parse_release(kernel)
    else:
        from hugecalc.machine.capture import captured_release

        release = captured_release(capture)
    return Params(values=values, given=given, profile=profile, release=release, capture=capture)


def run(spec: Spec, values: dict[str, Any]) -> Any:
    """The click callback of a declared command: compute, then print the table or the JSON."""
    ctx = click.get_current_context()
    if values.get("plot"):  # before the work: a bad output path is refused now, not after it
        from hugecalc.files import check_output

        check_output(values["plot"], "--plot", values.get("force", False))
    params = resolve(values, given_params(ctx))
    if values.get("sweeps"):
        from hugecalc.cli.sweep import run_sweep

        return run_sweep(spec, ctx.command, params)
    result = spec.compute(params)
    emit(spec, result, params)
    spec.after(result, params)
    return None


def emit(spec: Spec, result: Any, params: Params) -> None:
    """A declared command's result through the one output path (``common.emit``), drawn by its spec."""
    from hugecalc.cli.common import emit as output

    output(result, params.values.get("as_json", False), params.values.get("explain", False),
           lambda out: spec.draw(out, result, params))


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
