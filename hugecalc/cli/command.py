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
            if "\x00" in arg:  # no path, number or name holds one (os.stat() would raise ValueError)
                from hugecalc.cli.common import UserError

                raise UserError(InputError(f"{arg!r} holds a NUL byte: no path, number or name can"))
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
    from hugecalc.calc import EXPLAINING

    wanted = EXPLAINING.set(bool(values.get("explain")))  # derivations are built only to be shown
    try:
        params = resolve(values, given_params(ctx))
        if values.get("sweeps"):
            from hugecalc.cli.sweep import run_sweep

            return run_sweep(spec, ctx.command, params)
        result = spec.compute(params)
        emit(spec, result, params)
        spec.after(result, params)
    finally:
        EXPLAINING.reset(wanted)
    return None


def emit(spec: Spec, result: Any, params: Params) -> None:
    """A declared command's result through the one output path (``common.emit``), drawn by its spec."""
    from hugecalc.cli.common import emit as output

    output(result, params.values.get("as_json", False), params.values.get("explain", False),
           lambda out: spec.draw(out, result, params))


def compute_argv(spec: Spec, command: click.Command, argv: list[str]) -> Result:
    """One batch request: the command's own options, then its ``compute``.  The options are read
    against the command's click parameters directly (:func:`quick_values`: a click context per
    request cost more than most computations); anything that reading does not take (an unknown or
    malformed option, --help) goes through click, which says what is wrong as the command would."""
    quick = quick_values(command, argv)
    if quick is not None:
        try:
            return spec.compute(resolve(*quick))
        except InputError as e:
            raise naming_option(command, e) from e
    try:
        ctx = command.make_context(spec.name, list(argv), resilient_parsing=False)
    except click.exceptions.Exit as e:  # --help
        raise InputError(f"{spec.name}: --help prints no document") from e
    with ctx:
        try:
            return spec.compute(resolve(dict(ctx.params), given_params(ctx)))
        except InputError as e:
            raise naming_option(command, e) from e


_PARAMS: dict[str, tuple[dict, dict, list]] = {}


def _parameters(command: click.Command) -> tuple[dict, dict, list]:
    """The command's options by every name, its defaults as click gives them (once per command),
    and its positional arguments."""
    if command.name not in _PARAMS:
        with command.make_context(command.name, [], resilient_parsing=True) as ctx:
            defaults = dict(ctx.params)
        names = {opt: p for p in command.params if isinstance(p, click.Option) for opt in p.opts}
        _PARAMS[command.name] = (names, defaults, [p for p in command.params if isinstance(p, click.Argument)])
    return _PARAMS[command.name]


def quick_values(command: click.Command, argv: list[str]) -> tuple[dict[str, Any], frozenset[str]] | None:
    """``argv`` read as click would read it, each value converted by its parameter's type: the
    values and the names given; None for anything but plain ``--option value``, ``--option=value``,
    flags and positional arguments (click then reads it, and says what is wrong)."""
    if any("\x00" in a for a in argv):
        return None  # click reads it, and parse_args says what is wrong
    names, defaults, arguments = _parameters(command)
    values, given, positional, i = dict(defaults), set(), [], 0
    numeric = (click.types.IntParamType, click.types.FloatParamType)
    try:
        while i < len(argv):
            arg = argv[i]
            i += 1
            if not arg.startswith("-") or arg == "-":
                positional.append(arg)
                continue
            name, eq, raw = arg.partition("=")
            param = names.get(name)
            if param is None or param.secondary_opts or (param.is_flag and eq):
                return None
            if param.is_flag:  # a boolean flag is True; another flag gives its flag_value
                value: Any = True if isinstance(param.type, click.types.BoolParamType) else param.flag_value
            else:
                if not eq:
                    if i >= len(argv):
                        return None
                    raw, i = argv[i], i + 1
                if isinstance(param.type, numeric) and not raw.isascii():
                    return None
                value = param.type.convert(raw, param, None)
            if param.multiple:
                value = (*(values[param.name] if param.name in given else ()), value)
            values[param.name] = value
            given.add(param.name)
        if len(positional) > len(arguments):
            return None
        for param, raw in zip(arguments, positional):
            values[param.name] = param.type.convert(raw, param, None)
            given.add(param.name)
        if any(p.required and p.name not in given for p in command.params):
            return None
    except click.ClickException:
        return None
    return values, frozenset(given)


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
