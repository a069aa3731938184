"""A command declared once: :class:`Spec` says what the house knows about it, and the registry,
``schema``, ``batch``, ``--sweep`` and ``fleet`` read it from there.

Each command module ends with ``SPEC = Spec(...)``: its result models (one per mode, each with the
function that draws its table), the function that computes its result from the parsed options,
whether it runs in ``batch``, which of its options ``--sweep`` may vary, and what ``fleet`` asks
of each host.  A batch line and every point of a sweep compute through the same ``compute``,
never through argv and JSON text.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable

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
    walks: bool = False  # its rows run the numba fault walk: compile (or load) it once per task
    #: figure -> its name in the table: the single-host table's label (the JSON keeps the figure)
    labels: dict[str, str] = field(default_factory=dict)


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
