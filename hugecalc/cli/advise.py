"""``hugecalc advise``: which THP settings serve a recorded workload best."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from hugecalc.calc.advise import AdviseResult, Candidate
from hugecalc.cli.command import Command, run
from hugecalc.cli.common import PID_MAX_LIMIT, SIZE, Text, common_options, process_from, record_context
from hugecalc.cli.spec import Params, Spec
from hugecalc.errors import InputError

if TYPE_CHECKING:
    from rich.console import Console


class Percent(click.ParamType):
    """A share as a percentage: 5, 5% or 0.5%; at least 0."""

    name = "PCT"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        import math

        if isinstance(value, float):
            return value
        text = str(value).strip().removesuffix("%")
        try:
            number = float(text) if text.isascii() else math.nan
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number < 0:
            self.fail(f"{value!r} is not a percentage (5, 5% or 0.5%)", param, ctx)
        return number / 100


@click.command(cls=Command)
@click.option("--trace", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="The record of the workload (hugecalc record): the exact answer.")
@click.option("--pid", type=click.IntRange(1, PID_MAX_LIMIT), default=None,
              help="With --trace: which recorded process (default: the command's). Without: a process replayed from "
                   "a snapshot of its present pages (live, or from --host FILE), within the bound it states.")
@click.option("--max-bloat", type=Percent(), default=None,
              help="Budget: memory populated at most this much over base pages (5 or 5%).")
@click.option("--max-memory", type=SIZE, default=None, help="Budget: memory populated at most SIZE.")
@click.option("--all", "show_all", is_flag=True, help="Every distinct outcome, not only the Pareto front.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, metavar="FILE.svg|png|pdf",
              help="Also draw bloat against TLB entries, the front marked, to a file.")
@click.option("--force", is_flag=True, help="Write --plot over a symbolic link or another user's file.")
@common_options
def advise(**values: Any) -> None:
    """Which THP settings serve a recorded workload best, and what each choice costs.

    Replays the record (or, less exactly, a snapshot of a process: --pid) under every subset of the
    anonymous THP sizes, all 'always' or all 'madvise' (before 6.8: the top-level switch), and gives
    for each the memory populated (bloat
    against base pages), page faults, TLB entries, page tables and the largest fault. Prints the
    Pareto front (no other setting better on every figure); within the budget, the setting with the
    fewest TLB entries is advised, with the sysfs writes that apply it and undo it.

    \b
    Examples:
      hugecalc advise --trace app.record
      hugecalc advise --trace app.record --max-bloat 5%
      hugecalc advise --trace app.record --profile arm64-4k --max-memory 2G --json
      hugecalc advise --trace app.record --explain --all
      hugecalc advise --host capture.json --pid 1234 --max-bloat 5%
    """
    if values["trace"] and values["host_file"]:
        raise InputError("is a capture, --trace a record: give one of them", field="host")
    if values["host_file"] and values["pid"] is None:
        raise InputError("advise replays one process of the capture: give --pid PID too", field="host")
    if not values["trace"] and values["pid"] is None:
        raise InputError("give --trace FILE (a record: the exact answer) or --pid PID (a snapshot of a process)")
    run(SPEC, values)


def compute(params: Params) -> AdviseResult:
    from hugecalc.calc.replay import settings_from_capture

    if params.trace:
        from hugecalc.calc.advise import compute_advise

        record, profile, release, now, notes = record_context(params)
        result = compute_advise(profile, release, record, now, params.pid, params.max_bloat, params.max_memory)
    else:
        from hugecalc.calc.advise_snapshot import compute_advise_snapshot

        capture, proc, profile, release = process_from(params, params.pid)
        now, notes = settings_from_capture(capture)
        result = compute_advise_snapshot(profile, release, params.pid, proc.comm, proc.present_vmas(capture.page_size),
                                         proc.thp_enabled is False, now, params.max_bloat, params.max_memory)
    result.notes[:0] = notes
    return result


def _draw(out: Console, result: AdviseResult, params: Params) -> None:
    from hugecalc.render import list_table, print_header

    source = (f"its record ({result.recorded_faults:,} recorded faults)" if result.recorded_faults
              else "a snapshot of its present pages")
    print_header(out, result, f"process {result.pid} replayed from {source} under {result.tried} THP settings")
    marked_out = [result.outcome(result.advised), result.outcome(result.now)]
    shown = [c for c in result.candidates if params.show_all or c.pareto or any(c is m for m in marked_out)]
    marked = [c.model_copy(update={"label": _mark(c, result)}) for c in sorted(shown, key=lambda c: c.bloat)]
    out.print(Text("every distinct outcome:" if params.show_all else
                   "the Pareto front (no other setting is better on every figure; --all for every outcome):",
                   style="bold"))
    out.print(list_table(marked, skip=("settings", "same_as", "folios", "pareto", "within_budget",
                                       "largest_fault_clear_seconds")))
    if result.advised is None:
        out.print(Text("no setting meets the budget: nothing advised", style="bold red"))
        return
    out.print(Text(f"advised: {result.advised}", style="bold"))
    if result.apply:  # copyable, and short enough for any terminal: the sysfs folder named once
        out.print(Text("to apply it (as root):\n  " + "\n  ".join(_short(result.apply))), soft_wrap=True)
        out.print(Text("(the switches that change nothing for this workload are left as they are)"))
        out.print(Text("to undo it:\n  " + "\n  ".join(_short(result.undo))), soft_wrap=True)
    else:
        out.print(Text("it is the setting at the time of the record: nothing to change"))


def _mark(c: Candidate, result: AdviseResult) -> str:
    tags = [t for t, on in (("advised", c is result.outcome(result.advised)), ("now", c is result.outcome(result.now)))
            if on]
    return c.label + (f" ({', '.join(tags)})" if tags else "")


def _plot(result: AdviseResult, params: Params) -> None:
    if not params.plot:
        return
    from hugecalc.plot import Chart, write

    points = sorted(result.candidates, key=lambda c: (c.bloat, c.tlb_entries))
    chart = Chart(title=f"hugecalc advise: process {result.pid} — profile {result.profile}, kernel {result.kernel}",
                  x_label="bloat against base pages (%)", y_label="last-level TLB entries", x_kind="number",
                  y_bytes=False, log_x=False, x_values=[round(c.bloat * 100, 3) for c in points],
                  series={"Pareto front": [c.tlb_entries if c.pareto else None for c in points],
                          "other settings": [None if c.pareto else c.tlb_entries for c in points]},
                  points_only=("other settings",))
    write(chart, params.plot, params.force)


SPEC = Spec(name="advise", rank=6, compute=compute, after=_plot, documents={AdviseResult: _draw})


def _short(writes: list[str]) -> list[str]:
    """The writes with the THP sysfs folder as $T, set on the first line (they stay one paste)."""
    from hugecalc.calc.switches import SYSFS

    return [f"T={SYSFS}", *(w.replace(SYSFS, "$T") for w in writes)]
